//! `rollcall config get|put|history|diff|rollback|list|status|rollout|watch`: central configuration from the
//! command line, over the registry's `/v1/config` API. A document is named
//! `namespace/service/name`.
//!
//! `get` and `diff` print the document (or diff) as it is, for files and pipes; everything that
//! comes from someone else's words (authors, messages) is made safe for a terminal.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rollcall_wire::{AckStatus, ConfigFormat, DocumentView, ReleaseView, RolloutStatus};

use crate::cli;

/// `rollcall config`.
#[derive(Debug, Args)]
pub struct ConfigCommand {
    #[command(subcommand)]
    action: ConfigAction,
}

/// Which registry, and the token it is asked with.
#[derive(Debug, Args)]
struct Target {
    /// The registry's base URL.
    #[arg(long, env = "ROLLCALL_REGISTRY", default_value = rollcall_client::DEFAULT_REGISTRY)]
    registry: String,
    /// The token presented (`read` to read, `config:PATTERN` or admin to publish) and the
    /// authorities trusted.
    #[command(flatten)]
    client: rollcall_client::ClientArgs,
}

/// What to do.
#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print a document (the latest release, or --revision).
    Get {
        /// `namespace/service/name`.
        path: String,
        /// An older release, while it is kept.
        #[arg(long)]
        revision: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Publish a file (or `-` for standard input) as the document's next release.
    Put {
        /// `namespace/service/name`.
        path: String,
        /// The file to publish; `-` reads standard input.
        file: String,
        /// json, yaml, toml, properties or text [default: from the file's extension].
        #[arg(long)]
        format: Option<ConfigFormat>,
        /// Why, kept with the release.
        #[arg(long, short, default_value = "")]
        message: String,
        /// Publish only over this revision (compare-and-set); 0: only if it does not exist.
        #[arg(long)]
        if_match: Option<u64>,
        /// Roll the release out in steps instead of to everyone at once: `10,50` (percentages),
        /// `instances:ID+ID`, `label:KEY=VALUE`.
        #[arg(long, value_name = "STEPS")]
        rollout: Option<String>,
        /// How long each rollout step bakes [default: 1m].
        #[arg(long, requires = "rollout")]
        bake: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Settle a document's running rollout by hand (start one with `put --rollout`).
    Rollout {
        /// `promote` (the candidate to every instance now) or `abort` (every instance back to the
        /// release in force).
        #[arg(value_parser = ["promote", "abort"])]
        action: String,
        /// `namespace/service/name`.
        path: String,
        #[command(flatten)]
        target: Target,
    },
    /// List a document's kept releases, newest first.
    History {
        /// `namespace/service/name`.
        path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the unified diff between two releases [default: the latest and the one before].
    Diff {
        /// `namespace/service/name`.
        path: String,
        /// The release to diff from.
        #[arg(long)]
        from: Option<u64>,
        /// The release to diff to.
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Publish an earlier release's content again, as a new release.
    Rollback {
        /// `namespace/service/name`.
        path: String,
        /// The revision whose content to publish again.
        #[arg(long)]
        to: u64,
        /// Why [default: "rollback to revision N"].
        #[arg(long, short)]
        message: Option<String>,
        /// Roll back only over this revision (compare-and-set).
        #[arg(long)]
        if_match: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// List every document (of --namespace) with its latest revision.
    List {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show how the latest release stands across the instances that read the document.
    Status {
        /// `namespace/service/name`.
        path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print each new release of a document as it is published, until interrupted.
    Watch {
        /// `namespace/service/name`.
        path: String,
        #[command(flatten)]
        target: Target,
    },
}

/// A document's URL on the registry, checked to have three segments.
async fn document_url(target: &Target, path: &str, suffix: &str) -> anyhow::Result<(reqwest::Url, String)> {
    let segments: Vec<&str> = path.split('/').collect();
    let [namespace, service, name] = segments.as_slice() else {
        bail!(
            "a document is named namespace/service/name, not {}",
            cli::printable(path)
        );
    };
    let base = cli::reachable_registry(&target.registry).await;
    let mut url = reqwest::Url::parse(&base).context("the registry URL")?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the registry URL cannot have a path"))?
        .extend(["v1", "config", namespace, service, name])
        .extend(suffix.split('/').filter(|s| !s.is_empty()));
    Ok((url, format!("the registry at {base}")))
}

/// Runs `rollcall config ...`.
pub async fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command.action {
        ConfigAction::Get { path, revision, target } => {
            let (mut url, who) = document_url(&target, &path, "").await?;
            if let Some(revision) = revision {
                url.query_pairs_mut().append_pair("revision", &revision.to_string());
            }
            let http = cli::http_client(&target.client)?;
            let body = cli::send(http.get(url).timeout(TIMEOUT), &who).await?.bytes().await?;
            cli::closed_pipe_is_success(write_out(&body))
        }
        ConfigAction::Put {
            path,
            file,
            format,
            message,
            if_match,
            rollout,
            bake,
            target,
        } => {
            let plan = rollout.map(|steps| (steps, bake));
            put(&path, &file, format, message, if_match, plan, &target).await
        }
        ConfigAction::Rollout { action, path, target } => settle(&path, &action, &target).await,
        ConfigAction::History { path, json, target } => {
            let (url, who) = document_url(&target, &path, "history").await?;
            let http = cli::http_client(&target.client)?;
            let answer: serde_json::Value = cli::send(http.get(url).timeout(TIMEOUT), &who).await?.json().await?;
            if json {
                return cli::closed_pipe_is_success(write_out(format!("{answer}\n").as_bytes()));
            }
            let releases: Vec<ReleaseView> =
                serde_json::from_value(answer["releases"].clone()).context("unreadable answer")?;
            let lines: String = releases.iter().map(history_line).collect();
            cli::closed_pipe_is_success(write_out(lines.as_bytes()))
        }
        ConfigAction::Diff { path, from, to, target } => {
            let (mut url, who) = document_url(&target, &path, "diff").await?;
            for (name, value) in [("from", from), ("to", to)] {
                if let Some(value) = value {
                    url.query_pairs_mut().append_pair(name, &value.to_string());
                }
            }
            let http = cli::http_client(&target.client)?;
            let diff = cli::send(http.get(url).timeout(TIMEOUT), &who).await?.bytes().await?;
            cli::closed_pipe_is_success(write_out(&diff))
        }
        ConfigAction::Rollback {
            path,
            to,
            message,
            if_match,
            target,
        } => {
            let (mut url, who) = document_url(&target, &path, "rollback").await?;
            url.query_pairs_mut().append_pair("to", &to.to_string());
            let mut request = cli::http_client(&target.client)?.post(url);
            if let Some(message) = message {
                request = request.header("x-rollcall-message", message);
            }
            if let Some(revision) = if_match {
                request = precondition(request, revision);
            }
            let release: ReleaseView = cli::send(request.timeout(TIMEOUT), &who).await?.json().await?;
            say_published(&path, &release);
            Ok(())
        }
        ConfigAction::List {
            namespace,
            json,
            target,
        } => list(namespace, json, &target).await,
        ConfigAction::Status { path, json, target } => status(&path, json, &target).await,
        ConfigAction::Watch { path, target } => watch(&path, &target).await,
    }
}

/// Publishes `file` (`-`: standard input) as `path`'s next release, to everyone or through a
/// rollout `plan` (steps, bake).
async fn put(
    path: &str,
    file: &str,
    format: Option<ConfigFormat>,
    message: String,
    if_match: Option<u64>,
    plan: Option<(String, Option<String>)>,
    target: &Target,
) -> anyhow::Result<()> {
    let content = read_document(file)?;
    let format = match format {
        Some(format) => format,
        None => format_of_file(file)?,
    };
    let (mut url, who) = document_url(target, path, "").await?;
    url.query_pairs_mut().append_pair("format", format.as_str());
    if let Some((steps, bake)) = plan {
        url.query_pairs_mut().append_pair("rollout", &steps);
        if let Some(bake) = bake {
            url.query_pairs_mut().append_pair("bake", &bake);
        }
    }
    let mut request = cli::http_client(&target.client)?
        .put(url)
        .header("content-type", format.media_type())
        .header("x-rollcall-message", message)
        .body(content);
    if let Some(revision) = if_match {
        request = precondition(request, revision);
    }
    let release: ReleaseView = cli::send(request.timeout(TIMEOUT), &who).await?.json().await?;
    say_published(path, &release);
    Ok(())
}

/// Promotes (`action`: `promote`) or aborts `path`'s running rollout and says where it stands.
async fn settle(path: &str, action: &str, target: &Target) -> anyhow::Result<()> {
    let (url, who) = document_url(target, path, &format!("rollout/{action}")).await?;
    let http = cli::http_client(&target.client)?;
    let status: RolloutStatus = cli::send(http.post(url).timeout(TIMEOUT), &who).await?.json().await?;
    let rollout = status.rollout.context("the registry answered no rollout")?;
    crate::serve::announce(&format!(
        "{path}: rollout of revision {} {}; revision {} in force",
        rollout.candidate,
        rollout.state.replace('_', " "),
        status.revision
    ));
    Ok(())
}

/// Lists every document (of `namespace`), as lines or as JSON.
async fn list(namespace: Option<String>, json: bool, target: &Target) -> anyhow::Result<()> {
    let base = cli::reachable_registry(&target.registry).await;
    let who = format!("the registry at {base}");
    let mut request = cli::http_client(&target.client)?.get(format!("{base}/v1/config"));
    if let Some(namespace) = namespace {
        request = request.query(&[("namespace", namespace)]);
    }
    let answer: serde_json::Value = cli::send(request.timeout(TIMEOUT), &who).await?.json().await?;
    if json {
        return cli::closed_pipe_is_success(write_out(format!("{answer}\n").as_bytes()));
    }
    let documents: Vec<DocumentView> =
        serde_json::from_value(answer["documents"].clone()).context("unreadable answer")?;
    let lines = documents.iter().fold(String::new(), |mut lines, document| {
        let r = &document.latest;
        let _ = writeln!(
            lines,
            "{}/{}/{}  r{}  {}  {}",
            r.namespace,
            r.service,
            r.name,
            r.revision,
            r.format.as_str(),
            r.published_at
        );
        lines
    });
    cli::closed_pipe_is_success(write_out(lines.as_bytes()))
}

/// Prints how `path`'s latest release stands: a summary line, then each instance that has not
/// applied it (rejected ones with their reason).
async fn status(path: &str, json: bool, target: &Target) -> anyhow::Result<()> {
    let (url, who) = document_url(target, path, "status").await?;
    let http = cli::http_client(&target.client)?;
    let answer = cli::send(http.get(url).timeout(TIMEOUT), &who).await?.bytes().await?;
    if json {
        return cli::closed_pipe_is_success(write_out(&answer));
    }
    let status: RolloutStatus = serde_json::from_slice(&answer).context("unreadable answer")?;
    let mut lines = format!(
        "r{}: {} of {} applied, {} rejected, {} unreachable, {} waiting\n",
        status.revision, status.applied, status.total, status.rejected, status.unreachable, status.waiting
    );
    if let Some(rollout) = &status.rollout {
        let why = rollout
            .reason
            .as_deref()
            .map(|r| format!(": {}", cli::printable(r)))
            .unwrap_or_default();
        let _ = writeln!(
            lines,
            "rollout of r{} over r{}: {} at step {} of {} ({}), each baking {}{why}",
            rollout.candidate,
            rollout.base,
            rollout.state.replace('_', " "),
            rollout.step + 1,
            rollout.steps.len(),
            rollout.steps.join(", "),
            rollout.bake
        );
    }
    for instance in status
        .instances
        .iter()
        .filter(|i| !(i.revision == Some(status.revision) && i.status == Some(AckStatus::Applied)))
    {
        let on = match (instance.revision, instance.status) {
            (Some(revision), Some(AckStatus::Rejected)) => {
                format!("rejected r{revision}: {}", cli::printable(&instance.reason))
            }
            (Some(revision), _) => format!("runs r{revision}"),
            (None, _) => "no report".to_owned(),
        };
        let _ = writeln!(
            lines,
            "  {} {} {}  {on}",
            instance.id,
            cli::printable(&instance.url),
            instance.state.as_str()
        );
    }
    cli::closed_pipe_is_success(write_out(lines.as_bytes()))
}

/// Follows `path` with blocking reads, printing a line per new release; reconnects with backoff
/// while the registry is away.
async fn watch(path: &str, target: &Target) -> anyhow::Result<()> {
    let (url, who) = document_url(target, path, "history").await?;
    let (content_url, _) = document_url(target, path, "").await?;
    let http = cli::http_client(&target.client)?;
    let mut seen = 0_u64;
    let mut delays = cli::retry_delays();
    loop {
        let waited = http
            .get(content_url.clone())
            .query(&[("index", seen.to_string()), ("wait", "5m".to_owned())])
            .timeout(Duration::from_secs(5 * 60 + 10))
            .send()
            .await;
        let revision = match waited {
            Ok(answer) if answer.status().is_success() => answer
                .headers()
                .get("x-rollcall-revision")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok()),
            Ok(answer) if answer.status() == reqwest::StatusCode::NOT_FOUND => {
                // Not published yet: wait for its first release.
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                continue;
            }
            Ok(answer) => {
                cli::succeeded(answer, &who).await?;
                None
            }
            Err(error) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(%error, retry_in = ?delay, "cannot reach {who}");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        delays = cli::retry_delays();
        let Some(revision) = revision.filter(|r| *r > seen) else {
            continue;
        };
        let history: serde_json::Value = cli::send(http.get(url.clone()).timeout(TIMEOUT), &who)
            .await?
            .json()
            .await?;
        let releases: Vec<ReleaseView> =
            serde_json::from_value(history["releases"].clone()).context("unreadable answer")?;
        let new: String = releases
            .iter()
            .rev()
            .filter(|r| r.revision > seen)
            .map(history_line)
            .collect();
        cli::closed_pipe_is_success(write_out(new.as_bytes()))?;
        seen = revision;
    }
}

/// `If-Match: "N"`, or for 0 `If-None-Match: *` (only a new document).
fn precondition(request: reqwest::RequestBuilder, revision: u64) -> reqwest::RequestBuilder {
    if revision == 0 {
        request.header("if-none-match", "*")
    } else {
        request.header("if-match", format!("\"{revision}\""))
    }
}

/// One release as a line: revision, time, author, message (made safe for a terminal).
fn history_line(release: &ReleaseView) -> String {
    let rollback = release
        .rolled_back_from
        .map(|from| format!(" (rollback to r{from})"))
        .unwrap_or_default();
    format!(
        "r{}  {}  {}  {}{rollback}\n",
        release.revision,
        release.published_at,
        cli::printable(&release.author),
        cli::printable(&release.message)
    )
}

fn say_published(path: &str, release: &ReleaseView) {
    crate::serve::announce(&format!(
        "published {path} revision {} ({} bytes, sha256 {})",
        release.revision, release.size, release.sha256
    ));
}

/// The file's content, or standard input's for `-`.
fn read_document(file: &str) -> anyhow::Result<Vec<u8>> {
    if file == "-" {
        let mut content = Vec::new();
        std::io::stdin()
            .read_to_end(&mut content)
            .context("cannot read standard input")?;
        return Ok(content);
    }
    std::fs::read(file).with_context(|| format!("cannot read {file}"))
}

/// The format a file's extension names.
fn format_of_file(file: &str) -> anyhow::Result<ConfigFormat> {
    let extension = std::path::Path::new(file)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    Ok(match extension.as_str() {
        "json" => ConfigFormat::Json,
        "yaml" | "yml" => ConfigFormat::Yaml,
        "toml" => ConfigFormat::Toml,
        "properties" => ConfigFormat::Properties,
        "txt" | "text" => ConfigFormat::Text,
        _ => bail!("cannot tell the format of {file} from its name: give --format json|yaml|toml|properties|text"),
    })
}

fn write_out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

const TIMEOUT: Duration = Duration::from_secs(10);
