//! The `rollcall` binary: one executable, one subcommand per process of the system.
//!
//! `main` stays thin: parse the command line, set up logging, bind, install signal handling and
//! hand over to the library that implements the subcommand. Logs go to stderr; stdout carries
//! only the lines scripts read (such as the address a server listens on).

mod logs_cli;
mod services;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rollcall_registry::RegistryConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// rollcall: a service registry with health checks and push-based discovery.
#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service registry (seed protocol on /services, API on /v1).
    Registry(RegistryConfig),
    /// Show what a registry holds, or follow its changes with --watch.
    Services(services::ServicesArgs),
    /// Run the log service (registers as LogService), or read it: `logs query`, `logs tail`.
    Logs(Box<LogsCommand>),
}

/// `rollcall logs`: serve with no subcommand, or read with `query` / `tail`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct LogsCommand {
    #[command(subcommand)]
    action: Option<logs_cli::LogsAction>,
    #[command(flatten)]
    serve: rollcall_logs::LogsConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Registry(config) => run_registry(config).await,
            Command::Services(args) => services::run(args).await,
            Command::Logs(logs) => match *logs {
                LogsCommand {
                    action: Some(action), ..
                } => logs_cli::run(action).await,
                LogsCommand { action: None, serve } => run_logs(serve).await,
            },
        }
    })
}

async fn run_registry(config: RegistryConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr().context("cannot read the bound address")?;
    announce(&format!("rollcall registry listening on http://{address}"));
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    rollcall_registry::run(listener, config, shutdown).await?;
    tracing::info!("registry stopped");
    Ok(())
}

async fn run_logs(config: rollcall_logs::LogsConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let logs = rollcall_logs::start(config, shutdown).await?;
    announce(&format!("rollcall logs listening on http://{}", logs.local_addr()));
    logs.wait().await;
    tracing::info!("log service stopped");
    Ok(())
}

/// Writes one line to stdout: the binary's contract with scripts and tests that start it.
#[allow(clippy::print_stdout)]
fn announce(line: &str) {
    println!("{line}");
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received; stopping"),
        () = terminate => tracing::info!("SIGTERM received; stopping"),
    }
    shutdown.cancel();
}
