//! `rollcall drain TARGET` and `rollcall undrain TARGET`: take an instance out of rotation (its
//! dependents are sent `Removed` at once while it keeps serving) or put it back. TARGET is an
//! instance id or a ServiceURL, as `rollcall services` shows them.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rollcall_wire::{InstanceView, ServicesView};

use crate::cli;
use crate::serve::announce;

/// Which instance, and which registry.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The instance: its id, or its ServiceURL.
    target: String,
    /// The registry's base URL.
    #[arg(long, env = "ROLLCALL_REGISTRY", default_value = rollcall_client::DEFAULT_REGISTRY)]
    registry: String,
    /// The token presented (register for the instance's service, or admin) and the authorities
    /// trusted.
    #[command(flatten)]
    client: rollcall_client::ClientArgs,
}

/// Drains (`drain: true`) or undrains the instance and says what it is now.
pub async fn run(args: DrainArgs, drain: bool) -> anyhow::Result<()> {
    let http = cli::http_client(&args.client)?;
    let base = cli::reachable_registry(&args.registry).await;
    let who = format!("the registry at {base}");
    let id = if args.target.contains("://") {
        let listing = cli::send(http.get(format!("{base}/v1/services")).timeout(TIMEOUT), &who).await?;
        let view: ServicesView = listing.json().await.context("unreadable answer")?;
        let found = view
            .services
            .iter()
            .flat_map(|s| &s.instances)
            .find(|i| i.url.trim_end_matches('/') == args.target.trim_end_matches('/'));
        match found {
            Some(instance) => instance.id.clone(),
            None => bail!("{who} lists no instance at {}", cli::printable(&args.target)),
        }
    } else {
        args.target.clone()
    };
    let mut url = reqwest::Url::parse(&base).context("the registry URL")?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the registry URL cannot have a path"))?
        .extend(["v1", "instances", &id, if drain { "drain" } else { "undrain" }]);
    let answer = cli::send(http.post(url).timeout(TIMEOUT), &who).await?;
    let view: InstanceView = answer.json().await.context("unreadable answer")?;
    announce(&format!(
        "{} {} is {}",
        cli::printable(&view.service),
        cli::printable(&view.url),
        view.state.as_str()
    ));
    Ok(())
}

const TIMEOUT: Duration = Duration::from_secs(10);
