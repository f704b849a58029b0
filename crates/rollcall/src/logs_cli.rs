//! `rollcall logs query` and `rollcall logs tail`: read the log service from the command line,
//! finding it through the registry (or taking `--logs URL`), with the API's filters.
//!
//! Records print as `TIME LEVEL SERVICE message key=value ...`, or with `--json` as the API's
//! JSON, one record per line. A tail reconnects by itself with `Last-Event-ID`, so a restart of
//! the log service loses nothing it kept.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rollcall_wire::{LogRecord, RecordPage, RecordTime, ServiceView};

use crate::cli;

/// The reading subcommands of `rollcall logs`.
#[derive(Debug, Subcommand)]
pub enum LogsAction {
    /// Print matching records, newest first.
    Query(QueryArgs),
    /// Print the last matching records, then every new one until interrupted.
    Tail(TailArgs),
}

/// Where the log service is.
#[derive(Debug, Args)]
pub struct Locate {
    /// The registry to find the log service through.
    #[arg(long, env = "ROLLCALL_REGISTRY", default_value = rollcall_client::DEFAULT_REGISTRY)]
    registry: String,
    /// The log service's URL, instead of asking the registry.
    #[arg(long, env = "ROLLCALL_LOGS")]
    logs: Option<String>,
    /// The token presented to both (`read` for the registry, `logs:read` for the log service),
    /// and the authorities trusted.
    #[command(flatten)]
    client: rollcall_client::ClientArgs,
}

/// The API's filters.
#[derive(Debug, Args)]
pub struct Filters {
    /// A LogQL log query, such as '{service="Portal"} |= "503"' (see docs/logs.md), instead
    /// of --service, --level and --contains.
    #[arg(value_name = "LOGQL", conflicts_with_all = ["service", "level", "contains"])]
    logql: Option<String>,
    /// Only these services (comma-separated).
    #[arg(long)]
    service: Option<String>,
    /// The minimum level (trace, debug, info, warn, error, fatal).
    #[arg(long)]
    level: Option<String>,
    /// From this time: RFC 3339 (any offset), a Unix epoch count (s, ms, us or ns), or a
    /// duration ago such as 15m.
    #[arg(long)]
    since: Option<String>,
    /// Until this time (same forms).
    #[arg(long)]
    until: Option<String>,
    /// Only messages containing this text.
    #[arg(long)]
    contains: Option<String>,
    /// One JSON record per line instead of text.
    #[arg(long)]
    json: bool,
}

/// `rollcall logs query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    locate: Locate,
    #[command(flatten)]
    filters: Filters,
    /// How many records to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Oldest first instead of newest first.
    #[arg(long)]
    oldest_first: bool,
}

/// `rollcall logs tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    locate: Locate,
    #[command(flatten)]
    filters: Filters,
    /// How many past records to start with.
    #[arg(long, default_value_t = 10)]
    last: usize,
}

impl Filters {
    fn query_string(&self) -> Vec<(&'static str, String)> {
        [
            ("query", &self.logql),
            ("service", &self.service),
            ("level", &self.level),
            ("since", &self.since),
            ("until", &self.until),
            ("contains", &self.contains),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
        .collect()
    }
}

/// Runs one reading subcommand.
pub async fn run(action: LogsAction) -> anyhow::Result<()> {
    let locate = match &action {
        LogsAction::Query(args) => &args.locate,
        LogsAction::Tail(args) => &args.locate,
    };
    let http = cli::http_client(&locate.client)?;
    let result = match action {
        LogsAction::Query(args) => query(&http, args).await,
        LogsAction::Tail(args) => tail(&http, args).await,
    };
    cli::closed_pipe_is_success(result)
}

/// The log service's base URL: `--logs`, or the first passing `LogService` in the registry.
async fn locate(http: &reqwest::Client, locate: &Locate) -> anyhow::Result<String> {
    if let Some(url) = &locate.logs {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let registry = cli::reachable_registry(&locate.registry).await;
    let url = format!("{registry}/v1/services/LogService?passing");
    let response = http
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach the registry at {registry} (or pass --logs URL)"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        bail!("the registry at {registry} knows no LogService (is `rollcall logs` running?)");
    }
    let response = cli::succeeded(response, &format!("the registry at {registry}")).await?;
    let service: ServiceView = response.json().await.context("the registry's answer is unreadable")?;
    service
        .instances
        .first()
        .map(|i| i.url.clone())
        .with_context(|| format!("the registry at {registry} has no passing LogService instance"))
}

async fn query(http: &reqwest::Client, args: QueryArgs) -> anyhow::Result<()> {
    let base = locate(http, &args.locate).await?;
    let mut params = args.filters.query_string();
    params.push(("order", if args.oldest_first { "oldest" } else { "newest" }.to_owned()));
    let mut remaining = args.limit;
    let mut cursor: Option<String> = None;
    let mut out = io::stdout().lock();
    while remaining > 0 {
        let mut page_params = params.clone();
        page_params.push(("limit", remaining.min(10_000).to_string()));
        page_params.extend(cursor.take().map(|c| ("cursor", c)));
        let request = http
            .get(format!("{base}/v1/records"))
            .query(&page_params)
            .timeout(Duration::from_secs(30));
        let response = cli::send(request, &format!("the log service at {base}")).await?;
        let page: RecordPage = response
            .json()
            .await
            .context("the log service's answer is unreadable")?;
        remaining -= page.records.len().min(remaining);
        for record in &page.records {
            print_record(&mut out, record, args.filters.json)?;
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(())
}

async fn tail(http: &reqwest::Client, args: TailArgs) -> anyhow::Result<()> {
    let base = locate(http, &args.locate).await?;
    let mut params = args.filters.query_string();
    params.push(("last", args.last.to_string()));
    let mut last_id: Option<String> = None;
    let mut retries = cli::retry_delays();
    loop {
        let mut request = http
            .get(format!("{base}/v1/records/tail"))
            .query(&params)
            .header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                retries = cli::retry_delays();
                let mut events = response.bytes_stream().eventsource();
                while let Some(Ok(event)) = events.next().await {
                    let mut out = io::stdout().lock();
                    match event.event.as_str() {
                        "record" => {
                            let record: LogRecord = serde_json::from_str(&event.data)
                                .with_context(|| format!("an unreadable record: {}", event.data))?;
                            print_record(&mut out, &record, args.filters.json)?;
                            last_id = Some(event.id);
                        }
                        "dropped" => eprintln!(
                            "-- this tail fell behind and skipped records: {}",
                            cli::printable(&event.data)
                        ),
                        _ => {}
                    }
                }
                eprintln!("-- the log service closed the tail; reconnecting");
            }
            Ok(response) => {
                cli::succeeded(response, &format!("the log service at {base}")).await?;
            }
            Err(error) => eprintln!("-- cannot reach the log service at {base}: {error}; retrying"),
        }
        tokio::time::sleep(retries.next().unwrap_or(Duration::from_secs(5))).await;
    }
}

fn print_record(out: &mut impl Write, record: &LogRecord, json: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, record)?;
        writeln!(out)?;
        return Ok(());
    }
    let time = match &record.time {
        Some(RecordTime::Text(text)) => cli::printable(text).into_owned(),
        Some(RecordTime::Epoch(count)) => count.to_string(),
        Some(RecordTime::Seconds(seconds)) => seconds.to_string(),
        None => "-".to_owned(),
    };
    write!(
        out,
        "{time} {:>5} {} {}",
        record.level.as_str().to_uppercase(),
        cli::printable(&record.service),
        cli::printable(&record.message)
    )?;
    for (name, value) in &record.fields {
        let name = cli::printable(name);
        match value {
            // Debug quotes the string and escapes its control characters and bidi overrides.
            serde_json::Value::String(text) => write!(out, " {name}={text:?}")?,
            // JSON escapes the control characters inside strings.
            other => write!(out, " {name}={other}")?,
        }
    }
    writeln!(out)?;
    Ok(())
}
