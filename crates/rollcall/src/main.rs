//! The `rollcall` binary: one executable, one subcommand per process of the system.
//!
//! `main` only parses the command line, sets up `logging` and hands over: the four services
//! start the same way (`serve`), the client commands (`services`, `logs query|tail`, `token`, `config`, `drain`) share `cli`, `up` runs the whole system.
//! Stdout carries only the lines scripts read (such as the address a server listens on).

mod cli;
mod config_cli;
mod drain_cli;
mod logging;
mod logs_cli;
mod repair;
mod serve;
mod services;
mod token_cli;
mod up;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::serve::serve;

/// mimalloc: glibc's malloc took a tenth of the registry's and log service's CPU (BENCHMARKS.md).
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
    Registry(rollcall_registry::RegistryConfig),
    /// Show what a registry holds, or follow its changes with --watch.
    Services(services::ServicesArgs),
    /// Run the log service (registers as LogService), or read it: `logs query`, `logs tail`.
    Logs(Box<LogsCommand>),
    /// Run the grading service (registers as GradingService).
    Grades(rollcall_grades::GradesConfig),
    /// Run the teacher portal (registers as Portal).
    Portal(rollcall_portal::PortalConfig),
    /// Take an instance out of rotation (dependents are sent Removed at once; it keeps serving).
    Drain(drain_cli::DrainArgs),
    /// Put a drained instance back into rotation.
    Undrain(drain_cli::DrainArgs),
    /// Repair a damaged catalog or grade book (the service stopped): what is readable is kept.
    Repair(repair::RepairCommand),
    /// Issue, list and revoke the registry's tokens (with an admin token).
    Token(token_cli::TokenCommand),
    /// Publish, read, diff and roll back configuration documents.
    Config(config_cli::ConfigCommand),
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
    // Every service keeps its own records in the log store: the grading service and the portal
    // ship them, the log service writes its own into its store, the registry ships its own
    // with its audit trail.
    let shipping = match &cli.command {
        Command::Grades(_) => Some(logging::shipping(rollcall_grades::SERVICE_NAME)),
        Command::Portal(_) => Some(logging::shipping(rollcall_portal::SERVICE_NAME)),
        Command::Logs(logs) if logs.action.is_none() => Some(logging::shipping(rollcall_logs::SERVICE_NAME)),
        Command::Registry(_) => Some(logging::shipping(rollcall_registry::AUDIT_SERVICE)),
        _ => None,
    };
    logging::init(shipping.as_ref());
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Registry(config) => {
                let own = shipping.as_ref().and_then(logging::own_records);
                serve("registry", |stop| rollcall_registry::start_with_logs(config, stop, own)).await
            }
            Command::Logs(logs) => match logs.action {
                Some(action) => logs_cli::run(action).await,
                None => serve("logs", |stop| rollcall_logs::start(logs.serve, stop, shipping)).await,
            },
            Command::Grades(config) => serve("grades", |stop| rollcall_grades::start(config, stop, shipping)).await,
            Command::Portal(config) => serve("portal", |stop| rollcall_portal::start(config, stop, shipping)).await,
            Command::Services(args) => services::run(args).await,
            Command::Token(command) => token_cli::run(command).await,
            Command::Config(command) => config_cli::run(command).await,
            Command::Repair(command) => repair::run(command).await,
            Command::Drain(args) => drain_cli::run(args, true).await,
            Command::Undrain(args) => drain_cli::run(args, false).await,
            Command::Up(args) => up::run(args).await,
        }
    })
}
