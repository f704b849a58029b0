//! The `rollcall` binary: one executable, one subcommand per process of the system.
//!
//! `main` stays thin: parse the command line, set up logging, bind, install signal handling and
//! hand over to the library that implements the subcommand. Logs go to stderr; stdout carries
//! only the lines scripts read (such as the address a server listens on).

mod logs_cli;
mod services;
mod up;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rollcall_registry::RegistryConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the system allocator: request handling allocates many small, short-lived
/// objects, and glibc's malloc took about a tenth of the registry's and the log service's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the grading service (registers as GradingService).
    Grades(rollcall_grades::GradesConfig),
    /// Run the teacher portal (registers as Portal).
    Portal(rollcall_portal::PortalConfig),
    /// Run the whole system: registry, log service, grading service and portal.
    Up(up::UpArgs),
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
    // The grading service and the portal also ship their records to the log service (they
    // already print them to stderr, so shipping's own stderr fallback stays off).
    let shipping = match &cli.command {
        Command::Grades(_) => Some(rollcall_client::LogShipping::new(rollcall_grades::SERVICE_NAME)),
        Command::Portal(_) => Some(rollcall_client::LogShipping::new(rollcall_portal::SERVICE_NAME)),
        _ => None,
    }
    .map(|logs| logs.fallback_to(std::io::sink()));
    init_tracing(shipping.as_ref());
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
            Command::Grades(config) => match rollcall_grades::start(config, signal_token(), shipping).await {
                Ok(running) => serve_until_stopped("grades", running).await,
                Err(error) => stopped_while_registering(error.into()),
            },
            Command::Portal(config) => match rollcall_portal::start(config, signal_token(), shipping).await {
                Ok(running) => serve_until_stopped("portal", running).await,
                Err(error) => stopped_while_registering(error.into()),
            },
            Command::Up(args) => up::run(args).await,
        }
    })
}

/// Logs to stderr (filtered by `RUST_LOG`, info by default), and to the log service when
/// `shipping` is given.
fn init_tracing(shipping: Option<&rollcall_client::LogShipping>) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(shipping.map(rollcall_client::LogShipping::layer))
        .init();
}

/// A shutdown token cancelled by SIGINT or SIGTERM.
fn signal_token() -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    shutdown
}

/// A service starts once registered, retrying while the registry is unreachable; SIGINT or
/// SIGTERM during that wait is a requested stop (exit status 0), not a failure to start.
fn stopped_while_registering(error: anyhow::Error) -> anyhow::Result<()> {
    let cancelled = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<rollcall_client::RegistryError>(),
            Some(rollcall_client::RegistryError::Cancelled)
        )
    });
    if cancelled {
        tracing::info!("stopped before the registry answered: the service never registered");
        return Ok(());
    }
    Err(error)
}

/// Announces a started service and waits until it has stopped.
async fn serve_until_stopped(name: &str, running: rollcall_client::RunningService) -> anyhow::Result<()> {
    announce(&format!("rollcall {name} listening on {}", running.url()));
    running.wait().await;
    tracing::info!("{name} stopped");
    Ok(())
}

async fn run_registry(config: RegistryConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr().context("cannot read the bound address")?;
    announce(&format!("rollcall registry listening on http://{address}"));
    rollcall_registry::run(listener, config, signal_token()).await?;
    tracing::info!("registry stopped");
    Ok(())
}

async fn run_logs(config: rollcall_logs::LogsConfig) -> anyhow::Result<()> {
    let logs = match rollcall_logs::start(config, signal_token()).await {
        Ok(logs) => logs,
        Err(error) => return stopped_while_registering(error.into()),
    };
    announce(&format!("rollcall logs listening on http://{}", logs.local_addr()));
    logs.wait().await;
    tracing::info!("log service stopped");
    Ok(())
}

/// The HTTP client of the reading commands (`services`, `logs query`, `logs tail`).
fn cli_http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")
}

/// A reading command whose output was cut short (`rollcall services | head`) succeeded.
fn closed_pipe_is_success(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
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
