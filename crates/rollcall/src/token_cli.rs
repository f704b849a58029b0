//! `rollcall token create|list|revoke`: managing the registry's tokens with an admin token.
//!
//! Without `--token-file` or `ROLLCALL_TOKEN`, the admin token the registry wrote in its default
//! data directory (`./rollcall-data/registry/admin.token`) is used when it is there, so that the
//! quick start's registry is managed from the same directory without ceremony.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use rollcall_wire::{CreatedToken, NewToken, Scope, TokenView};

use crate::cli;

/// The admin token of a registry started with the default data directory.
const DEFAULT_ADMIN_TOKEN: &str = "./rollcall-data/registry/admin.token";

/// `rollcall token`.
#[derive(Debug, Args)]
pub struct TokenCommand {
    #[command(subcommand)]
    action: TokenAction,
}

/// Which registry, and the admin token it is asked with.
#[derive(Debug, Args)]
struct Target {
    /// The registry's base URL.
    #[arg(long, env = "ROLLCALL_REGISTRY", default_value = rollcall_client::DEFAULT_REGISTRY)]
    registry: String,
    /// An admin token [default: ./rollcall-data/registry/admin.token when it exists].
    #[command(flatten)]
    client: rollcall_client::ClientArgs,
}

/// What to do with tokens.
#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Issue a token and print it (shown this once: the registry keeps only a digest).
    Create {
        /// Who or what holds it: `grades`, `ci`, `alice`.
        name: String,
        /// What it may do: admin, read, register:PATTERN (`*` matches anything), logs:write,
        /// logs:read. Repeat for several.
        #[arg(long = "scope", required = true, value_name = "SCOPE")]
        scopes: Vec<Scope>,
        /// Print the token and its listing as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List every token (never their text).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token by id: requests presenting it are refused from now on.
    Revoke {
        /// The token's id, as listed.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs one `rollcall token` subcommand.
pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    let (TokenAction::Create { target, .. } | TokenAction::List { target, .. } | TokenAction::Revoke { target, .. }) =
        &command.action;
    let mut client = target.client.clone();
    if client.token_file.is_none() && client.token.is_none() && Path::new(DEFAULT_ADMIN_TOKEN).exists() {
        client.token_file = Some(DEFAULT_ADMIN_TOKEN.into());
    }
    let http = cli::http_client(&client)?;
    let base = cli::reachable_registry(&target.registry).await;
    let who = format!("the registry at {base}");
    let url = format!("{base}/v1/tokens");
    let mut out = std::io::stdout().lock();
    match command.action {
        TokenAction::Create { name, scopes, json, .. } => {
            let request = http.post(&url).json(&NewToken { name, scopes }).timeout(TIMEOUT);
            let created: CreatedToken = cli::send(request, &who)
                .await?
                .json()
                .await
                .context("unreadable answer")?;
            if json {
                serde_json::to_writer(&mut out, &created)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", created.token)?;
                tracing::info!(id = %created.view.id, "token created; it is shown this once");
            }
        }
        TokenAction::List { json, .. } => {
            let tokens: Vec<TokenView> = cli::send(http.get(&url).timeout(TIMEOUT), &who)
                .await?
                .json()
                .await
                .context("unreadable answer")?;
            if json {
                serde_json::to_writer_pretty(&mut out, &tokens)?;
                writeln!(out)?;
            } else {
                for token in &tokens {
                    let scopes: Vec<String> = token.scopes.iter().map(ToString::to_string).collect();
                    writeln!(
                        out,
                        "{}  {:<20}  {}  {}",
                        token.id,
                        cli::printable(&token.name),
                        token.created_at,
                        cli::printable(&scopes.join(","))
                    )?;
                }
            }
        }
        TokenAction::Revoke { id, .. } => {
            let mut one = reqwest::Url::parse(&url).context("the registry URL")?;
            one.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("the registry URL cannot have a path"))?
                .push(&id);
            cli::send(http.delete(one).timeout(TIMEOUT), &who).await?;
        }
    }
    Ok(())
}

const TIMEOUT: Duration = Duration::from_secs(10);
