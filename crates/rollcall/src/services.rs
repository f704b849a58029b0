//! `rollcall services`: what a registry holds, as a table for people or JSON for scripts, and
//! `--watch` to follow its changes as they happen.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rollcall_wire::{CatalogEvent, InstanceView, ServiceView, ServicesView};

use crate::cli;

/// How to reach the registry and what to print.
#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// The registry's base URL (a seed-style URL ending in /services is accepted too).
    #[arg(long, env = "ROLLCALL_REGISTRY", default_value = "http://127.0.0.1:3000")]
    registry: String,
    /// Follow the registry's event stream and print every change until interrupted.
    #[arg(long)]
    watch: bool,
    /// Print JSON: the catalog, or with --watch one event per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: rollcall_client::ClientArgs,
}

/// Lists the catalog or follows it, as `args` say.
pub async fn run(args: ServicesArgs) -> anyhow::Result<()> {
    let base = cli::reachable_registry(&args.registry).await;
    let http = cli::http_client(&args.client)?;
    let result = if args.watch {
        watch(&http, &base, args.json).await
    } else {
        list(&http, &base, args.json).await
    };
    cli::closed_pipe_is_success(result)
}

async fn list(http: &reqwest::Client, base: &str, json: bool) -> anyhow::Result<()> {
    let url = format!("{base}/v1/services");
    let request = http.get(&url).timeout(Duration::from_secs(10));
    let response = cli::send(request, &format!("the registry at {base}")).await?;
    let view: ServicesView = response
        .json()
        .await
        .with_context(|| format!("{url} did not answer a catalog"))?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &view)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &view.services)?;
    }
    Ok(())
}

/// Prints a table: one row per instance.
fn write_table(out: &mut impl Write, services: &[ServiceView]) -> io::Result<()> {
    if services.is_empty() {
        return writeln!(out, "no services registered");
    }
    let now = SystemTime::now();
    let mut rows = vec![["SERVICE", "STATE", "URL", "LAST CHECK", "ERROR"].map(str::to_owned)];
    for service in services {
        for instance in &service.instances {
            rows.push([
                cli::printable(&service.name).into_owned(),
                instance.state.as_str().to_owned(),
                cli::printable(&instance.url).into_owned(),
                last_check(instance, now),
                instance
                    .last_error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |e| cli::printable(e).into_owned()),
            ]);
        }
    }
    let mut widths = [0; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

/// "3s ago", or "-" before the first probe.
fn last_check(instance: &InstanceView, now: SystemTime) -> String {
    let Some(at) = instance
        .last_check_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
    else {
        return "-".to_owned();
    };
    let age = now.duration_since(at).unwrap_or_default();
    format!("{} ago", humantime::format_duration(Duration::from_secs(age.as_secs())))
}

/// Follows `/v1/events`, reconnecting (and resuming from the last event) when the stream ends.
async fn watch(http: &reqwest::Client, base: &str, json: bool) -> anyhow::Result<()> {
    let url = format!("{base}/v1/events");
    let mut last_id: Option<String> = None;
    loop {
        let mut request = http.get(&url).header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = cli::send(request, &format!("the registry at {base}")).await?;
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let Ok(event) = event else {
                break; // the connection broke: reconnect
            };
            if !event.id.is_empty() {
                last_id = Some(event.id.clone());
            }
            let mut out = io::stdout().lock();
            if json {
                writeln!(out, "{}", event.data)?;
                continue;
            }
            match serde_json::from_str::<CatalogEvent>(&event.data) {
                Ok(change) => write_change(&mut out, &change)?,
                Err(_) => writeln!(
                    out,
                    "({}: {})",
                    cli::printable(&event.event),
                    cli::printable(&event.data)
                )?,
            }
        }
        eprintln!("(the event stream ended; reconnecting)");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn write_change(out: &mut impl Write, change: &CatalogEvent) -> io::Result<()> {
    match change {
        CatalogEvent::Reset { services } => write_table(out, services),
        CatalogEvent::Registered { instance } => {
            writeln!(
                out,
                "+ {} {} registered ({})",
                cli::printable(&instance.service),
                cli::printable(&instance.url),
                instance.state.as_str()
            )
        }
        CatalogEvent::Deregistered { instance, reaped } => {
            let why = if *reaped {
                "reaped after staying critical"
            } else {
                "deregistered"
            };
            writeln!(
                out,
                "- {} {} {why}",
                cli::printable(&instance.service),
                cli::printable(&instance.url)
            )
        }
        CatalogEvent::StateChanged { instance, from } => {
            let error = instance
                .last_error
                .as_deref()
                .map(|e| format!(": {}", cli::printable(e)))
                .unwrap_or_default();
            writeln!(
                out,
                "~ {} {} {} -> {}{error}",
                cli::printable(&instance.service),
                cli::printable(&instance.url),
                from.as_str(),
                instance.state.as_str()
            )
        }
    }
}
