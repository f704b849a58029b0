//! rollcall-grades: the grading service as a library.
//!
//! The seed's API exactly (`GET /students`, `GET /students/{id}`, `POST /students/{id}/grades`)
//! with the original's bugs fixed: wrong methods answer 405 and unknown paths 404, errors are JSON
//! (`application/json`), grades are validated, and a grade answered 201 is durably stored in
//! `SQLite`. Plus `POST /students` to add a student. The grade types and score bounds it accepts
//! are the shared configuration document `grading` ([`GradingRules`]; the seed's until one is
//! published), followed without a restart. It runs as a rollcall service named `GradingService`
//! that requires `LogService`.

mod db;
mod error;
mod http;
pub mod repair;

use std::net::SocketAddr;
use std::path::PathBuf;

use rollcall_client::{LogShipping, RunningService, Service, ServiceArgs, StartError};
use rollcall_wire::GradingRules;
use tokio_util::sync::CancellationToken;

/// The name the grading service registers under.
pub const SERVICE_NAME: &str = "GradingService";

/// Where the grading service listens unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6000);

/// Everything `rollcall grades` can be told.
#[derive(Debug, Clone, clap::Args)]
pub struct GradesConfig {
    /// Listen, advertise and registry flags shared by every rollcall service.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Where the SQLite database (`grades.db`) lives.
    #[arg(long, env = "ROLLCALL_GRADES_DATA_DIR", default_value = "./rollcall-data/grades")]
    pub data_dir: PathBuf,
}

impl GradesConfig {
    /// The defaults, with the data in `data_dir`, listening on `listen`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            service: ServiceArgs::new(listen),
            data_dir,
        }
    }
}

/// Why the grading service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened or created.
    #[error("cannot open the grade book in {dir}: {source}")]
    Database {
        /// The data directory.
        dir: String,
        /// What failed.
        source: rusqlite::Error,
    },
    /// The service runtime could not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Opens the grade book, starts serving and registers as `GradingService`; its records ship to
/// the log service through `logs` when given.
pub async fn start(
    config: GradesConfig,
    shutdown: CancellationToken,
    logs: Option<LogShipping>,
) -> Result<RunningService, Error> {
    let dir = config.data_dir.clone();
    let db = tokio::task::spawn_blocking(move || db::Db::open(&dir))
        .await
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        .and_then(|opened| opened)
        .map_err(|source| Error::Database {
            dir: config.data_dir.display().to_string(),
            source,
        })?;
    let mut service = Service::builder(SERVICE_NAME)
        .requires(["LogService"])
        .args(&config.service, DEFAULT_LISTEN)
        .handle_signals(false);
    // Grade types and score bounds come from the shared `grading` document (the defaults until
    // one is in force); the last good one is cached beside the grade book.
    let configuration = service.configuration(Some(config.data_dir.join("config-cache")))?;
    let rules = configuration.value::<GradingRules, _>(GradingRules::DOCUMENT, GradingRules::check);
    service = service.router(http::router(db, rules));
    if let Some(logs) = logs {
        service = service.ship_logs(logs);
    }
    Ok(service.start(shutdown).await?)
}
