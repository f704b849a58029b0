//! rollcall-logs: the log service as a library.
//!
//! It takes records in four formats (the seed's `POST /log` line, rollcall's native batch,
//! OTLP/HTTP JSON, Loki push JSON), acknowledges each only once it is durably written to an
//! append-only segment (group-committed: one fsync per batch window; error records never wait),
//! and serves them back by query (filters, newest first, paging) and by tail (server-sent
//! events). It runs as a rollcall service named `LogService` through rollcall-client.
//!
//! Inside, a record travels down the list:
//! - `http`: the routes; ingest handlers answer only after the store acknowledged;
//! - `access`: who may write and read: tokens, verified by the registry, or nobody where
//!   anonymous requests are served;
//! - `ingest`: the four formats into validated records, each refusal with its reason (pure);
//! - `record`: a validated record, its stored line encoded once;
//! - `store`: durable segments of checksummed blocks, group-committed by one writer thread;
//! - `query`: filters and pages over the blocks, skipping what their headers rule out;
//! - `error`: the one error type and how each error is answered; `metrics`, `config`.
//!
//! [`start`] opens the store and returns a running [`LogService`]; [`run`] also waits for it.

mod access;
mod config;
mod error;
#[cfg(test)]
mod fuzz;
mod http;
mod ingest;
mod logql;
mod metrics;
mod query;
mod record;
mod store;
mod timestamp;

use std::net::SocketAddr;
use std::sync::Arc;

use rollcall_client::{LogShipping, RunningService, Service, StartError};
use tokio_util::sync::CancellationToken;

pub use config::{DEFAULT_LISTEN, LogsConfig};
pub use ingest::loki::proto as loki_push;
pub use metrics::Metrics;
pub use store::{StoreConfig, StoreError};

use crate::store::Store;

/// The name the log service registers under.
pub const SERVICE_NAME: &str = "LogService";

/// Why the log service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory could not be opened or recovered.
    #[error("cannot open the log store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The service runtime could not start (bind, registry).
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A running log service.
#[derive(Debug)]
pub struct LogService {
    running: RunningService,
    store: StoreHandle,
}

/// Keeps the store's writer thread out of `Debug`.
struct StoreHandle(Store);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl LogService {
    /// The URL it registered.
    pub fn url(&self) -> &str {
        self.running.url()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    /// Waits until it has stopped (after the shutdown token fired): deregistered, requests
    /// drained, every queued record committed.
    pub async fn wait(self) {
        self.running.wait().await;
        let store = self.store.0;
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
}

/// Opens the store (recovering it), starts serving, and registers as `LogService`; its own
/// records (those `logs` takes, when given) are written into its own store, not through HTTP.
pub async fn start(
    config: LogsConfig,
    shutdown: CancellationToken,
    logs: Option<LogShipping>,
) -> Result<LogService, Error> {
    // Before the store opens: a client setting that cannot be used stops nothing half-started.
    let access = Arc::new(
        access::Access::new(
            config.anonymous(),
            &rollcall_client::first_registry(&config.service.registry),
            &config.service.client,
        )
        .map_err(|e| Error::Start(StartError::ClientArgs(e)))?,
    );
    let metrics = Arc::new(Metrics::default());
    let store_config = config.store();
    let opened = tokio::task::spawn_blocking(move || Store::open(store_config, metrics))
        .await
        .map_err(std::io::Error::other)
        .and_then(|opened| opened);
    let (store, recovery) = opened.map_err(|source| Error::Store {
        dir: config.data_dir.display().to_string(),
        source,
    })?;
    if recovery.torn_blocks > 0 {
        tracing::warn!(
            blocks = recovery.torn_blocks,
            bytes = recovery.torn_bytes,
            "cut off a torn tail at start-up"
        );
    }
    if recovery.damaged_ranges > 0 {
        tracing::error!(
            ranges = recovery.damaged_ranges,
            bytes = recovery.damaged_bytes,
            "skipped damaged ranges at start-up; the blocks after them are kept"
        );
    }
    let state = http::AppState {
        store: store.clone(),
        tails: Arc::new(tokio::sync::Semaphore::new(config.max_tails)),
        max_body: usize::try_from(config.max_body.as_u64()).unwrap_or(usize::MAX),
        shutdown: Arc::new(shutdown.clone()),
        access,
    };
    let service = Service::builder(SERVICE_NAME)
        .args(&config.service, DEFAULT_LISTEN)
        .router(http::router(state))
        .own_metrics()
        .handle_signals(false);
    if let Some(own) = logs.as_ref().and_then(LogShipping::take_records) {
        tokio::spawn(keep_own(own, store.clone(), shutdown.clone()));
    }
    let started = service.start(shutdown).await;
    match started {
        Ok(running) => Ok(LogService {
            running,
            store: StoreHandle(store),
        }),
        Err(error) => {
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
            Err(error.into())
        }
    }
}

/// Writes the service's own records into its store, as they come, until it stops: without a
/// loop through HTTP. A batch the store refuses is not retried nor logged (the store logs its
/// own failures, which would come back here).
async fn keep_own(mut own: rollcall_client::OwnRecords, store: Store, shutdown: CancellationToken) {
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => return,
            batch = own.next_batch(500) => batch,
        };
        if batch.is_empty() {
            return;
        }
        let now = std::time::SystemTime::now();
        let entries: Vec<_> = batch
            .iter()
            .filter_map(|record| record::Entry::new(record, now).ok())
            .collect();
        if let Err(StoreError::Closed) = store.append(entries).await {
            return;
        }
    }
}

/// [`start`], then [`LogService::wait`].
pub async fn run(config: LogsConfig, shutdown: CancellationToken, logs: Option<LogShipping>) -> Result<(), Error> {
    start(config, shutdown, logs).await?.wait().await;
    Ok(())
}
