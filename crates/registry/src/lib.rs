//! The rollcall service registry, as a library.
//!
//! [`start`] (or [`run`] on a listener of the caller's) serves the seed protocol's `/services` endpoint (so unchanged Go services register
//! here) and the `/v1` API (instances, listings with blocking queries, the event stream,
//! metrics) on a listener it is given, keeps the catalog durably in its data directory, probes
//! every registered instance's heartbeat, and pushes provider changes to dependents through
//! per-subscriber delivery queues. It stops when the given token is cancelled. It never binds
//! sockets of its own and never installs signal handlers: that is the binary's job.
//!
//! Inside, the catalog decides and the tasks act:
//! - `auth`: the tokens the registry issues and verifies, and who a request speaks for;
//! - `audit`: every write asked for, shipped to the log service;
//! - [`state`]: the catalog as a pure state machine, and what of it survives a restart;
//! - [`store`]: its durable copy behind the [`store::CatalogStore`] trait (embedded: redb);
//! - `core`: applies commands under a lock, waits until they are durable, then hands the events
//!   to the reactions through a port it defines;
//! - `reactions`: what the tasks do about each event, in one place; it owns
//! - `health`: one prober task per instance, and `notify`: one delivery queue per subscriber;
//! - `outbound`: the calls to services; `events` and `metrics` feed `/v1/events` and `/metrics`;
//!   `lookups` keeps encoded service listings while they are current; `http` and `ui` are the
//!   HTTP surface, which only translates requests into commands and reads.
//!
//! `state` and `store` are public so that the catalog's rules and the persistence contract can
//! be read, and a store backend written, against them alone.

mod audit;
mod auth;
mod config;
mod core;
mod echoes;
mod error;
mod events;
mod health;
mod http;
mod lookups;
mod metrics;
mod nodes;
mod notify;
mod outbound;
mod published;
mod reactions;
pub mod releases;
mod rollouts;
pub mod state;
pub mod store;
#[cfg(test)]
mod tests;
mod ui;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rollcall_http::ServerLimits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use audit::AUDIT_SERVICE;
pub use config::{RegistryConfig, parse_duration};
pub use error::ApiError;
pub use health::MAX_CRITICAL_BACKOFF;
pub use http::MAX_BODY_BYTES;
pub use notify::MAX_ATTEMPTS as MAX_DELIVERY_ATTEMPTS;

/// How long a stopping registry waits for in-flight requests and background tasks.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the registry could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: std::net::SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The catalog in the data directory could not be opened or read.
    #[error("cannot open the catalog: {0}")]
    Store(#[from] store::StoreError),
    /// The token list could not be read or written.
    #[error("cannot open the token list: {0}")]
    Tokens(#[from] auth::TokenFileError),
    /// TLS for outbound calls could not be set up (no usable certificate roots, for instance).
    #[error("cannot set up TLS for calls to services: {0}")]
    Tls(#[from] outbound::OutboundTlsError),
    /// The certificate to serve HTTPS with could not be loaded.
    #[error("cannot serve HTTPS: {0}")]
    ServerTls(#[from] rollcall_http::TlsError),
    /// Serving failed.
    #[error("serving HTTP failed: {0}")]
    Serve(#[source] io::Error),
}

/// A started registry: serving, its catalog restored.
#[derive(Debug)]
pub struct RunningRegistry {
    local_addr: std::net::SocketAddr,
    url: String,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl RunningRegistry {
    /// Its base URL, `http://` (or `https://`) and the bound address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Waits until it has stopped (after the shutdown token fired): requests finished, tasks
    /// stopped, the catalog closed.
    pub async fn wait(self) -> Result<(), RunError> {
        self.task
            .await
            .unwrap_or_else(|join_error| Err(RunError::Serve(io::Error::other(join_error))))
    }
}

/// Binds `config.listen`, opens and restores the catalog in `config.data_dir`, and serves until
/// `shutdown` is cancelled; returns once it serves.
pub async fn start(config: RegistryConfig, shutdown: CancellationToken) -> Result<RunningRegistry, RunError> {
    start_with_logs(config, shutdown, None).await
}

/// [`start`], also shipping the registry's own log records from `own` (its `tracing` events,
/// as the binary takes them) to the log service, with the audit trail and under its bound.
pub async fn start_with_logs(
    config: RegistryConfig,
    shutdown: CancellationToken,
    own: Option<tokio::sync::mpsc::Receiver<rollcall_wire::LogRecord>>,
) -> Result<RunningRegistry, RunError> {
    let listener = rollcall_http::bind(config.listen).map_err(|source| RunError::Bind {
        address: config.listen,
        source,
    })?;
    start_on(listener, config, shutdown, own).await
}

/// Runs the registry on `listener` until `shutdown` is cancelled: [`start`] on a listener the
/// caller bound, then [`RunningRegistry::wait`].
///
/// It first opens the catalog in `config.data_dir` (refusing to start if another registry holds
/// it) and restores what it holds. On shutdown new connections are refused, in-flight requests
/// get up to [`SHUTDOWN_GRACE`] to finish, every background task (probers, delivery queues) is
/// stopped, and the catalog is closed.
pub async fn run(listener: TcpListener, config: RegistryConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    start_on(listener, config, shutdown, None).await?.wait().await
}

async fn start_on(
    listener: TcpListener,
    mut config: RegistryConfig,
    shutdown: CancellationToken,
    own: Option<tokio::sync::mpsc::Receiver<rollcall_wire::LogRecord>>,
) -> Result<RunningRegistry, RunError> {
    let local_addr = listener.local_addr().map_err(RunError::Serve)?;
    // Who is served without a token depends on where it really listens.
    config.listen = local_addr;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let tokens = open_tokens(&config)?;
    let scheme = config.tls.scheme();
    let metrics = metrics::Metrics::default();
    let stores = open_stores(&config, &metrics).await?;
    let me = nodes::NodeInfo::new(&format!("{scheme}://{local_addr}"));
    let nodes = if config.etcd.is_set() {
        nodes::join(&config.etcd, me, config.etcd.node_ttl, shutdown.child_token()).await?
    } else {
        nodes::Nodes::alone(me)
    };
    tracing::info!(node = %nodes.me().id, "registry node started");
    let resolver = Arc::new(outbound::SystemResolver);
    let task = tokio::spawn(serve(
        listener,
        config,
        stores,
        nodes,
        tokens,
        metrics,
        resolver,
        (shutdown, own),
    ));
    Ok(RunningRegistry {
        local_addr,
        url: format!("{scheme}://{local_addr}"),
        task,
    })
}

/// Opens the catalog (in etcd with `--etcd`, in the data directory otherwise) and the
/// configuration releases (in the data directory), and reads back what they hold; a catalog
/// in etcd also feeds the changes other registry nodes make.
async fn open_stores(config: &RegistryConfig, metrics: &metrics::Metrics) -> Result<Stores, RunError> {
    let data_dir = config.data_dir.clone();
    let (commit_seconds, config_commit_seconds) =
        (metrics.commit_seconds.clone(), metrics.config_commit_seconds.clone());
    let in_etcd = config.etcd.is_set();
    let opened = tokio::task::spawn_blocking(move || {
        let catalog = if in_etcd {
            None
        } else {
            Some(store::RedbStore::open(&data_dir, commit_seconds.clone())?)
        };
        let releases = store::ReleaseStore::open(&data_dir, config_commit_seconds)?;
        Ok::<_, store::StoreError>((catalog, releases))
    });
    let (catalog, (releases, documents)) = opened
        .await
        .map_err(|join_error| RunError::Serve(io::Error::other(join_error)))??;
    if let Some((store, stored)) = catalog {
        return Ok(Stores {
            catalog: Arc::new(store),
            stored,
            feed: None,
            published: published::Published::new(releases, documents, None),
            tokens_shared: None,
        });
    }
    let (store, stored, feed) = store::EtcdStore::open(&config.etcd, metrics.commit_seconds.clone()).await?;
    tracing::info!(at = %config.etcd.describe(), instances = stored.len(), "the catalog is kept in etcd");
    let store = Arc::new(store);
    let read_at = store.read_at();
    Ok(Stores {
        catalog: Arc::clone(&store) as _,
        stored,
        feed: Some((feed, read_at)),
        published: published::Published::new(releases, documents, Some(Arc::clone(&store) as _)),
        tokens_shared: Some(store),
    })
}

/// The registry's stores, open, and what they held.
struct Stores {
    /// Where the catalog is kept.
    catalog: Arc<dyn store::CatalogStore>,
    /// What it held at start.
    stored: Vec<store::StoredInstance>,
    /// The changes made to it, when it is shared (in etcd), and the revision it was read at.
    feed: Option<(store::Feed, u64)>,
    /// The configuration releases.
    published: published::Published,
    /// Where the token list is shared, when the catalog is (in etcd).
    tokens_shared: Option<Arc<dyn store::ShareTokens>>,
}

/// Opens the token list in the data directory, and says at every start who is served without
/// a token.
fn open_tokens(config: &RegistryConfig) -> Result<auth::Tokens, RunError> {
    let (tokens, admin_file) = auth::Tokens::open(&config.data_dir)?;
    if let Some(path) = admin_file {
        tracing::info!(path = %path.display(), "first start: an admin token was written to this file (mode 0600)");
    }
    let anonymous = config.anonymous();
    if config.allow_anonymous {
        tracing::warn!(
            listen = %config.listen,
            "--allow-anonymous: requests without a token are served from anywhere; anyone who can reach this address can register and deregister"
        );
    } else if !anonymous.is_open() {
        tracing::info!(listen = %config.listen, "listening beyond loopback: every request needs a token");
    }
    Ok(tokens)
}

/// Serves the registry on `listener` over `stores`,
/// verifying `tokens`, resolving services' names through `resolver`, until `shutdown` is
/// cancelled (see [`run`]).
#[allow(clippy::too_many_arguments)]
async fn serve(
    listener: TcpListener,
    config: RegistryConfig,
    stores: Stores,
    nodes: nodes::Nodes,
    tokens: auth::Tokens,
    metrics: metrics::Metrics,
    resolver: Arc<dyn outbound::Resolve>,
    (shutdown, own_logs): (
        CancellationToken,
        Option<tokio::sync::mpsc::Receiver<rollcall_wire::LogRecord>>,
    ),
) -> Result<(), RunError> {
    let own = vec![listener.local_addr().map_err(RunError::Serve)?];
    let policy = outbound::AddressPolicy::new(config.callback_allow.clone(), own);
    let connect_timeout = config.health_timeout.min(config.notify_timeout);
    let outbound = outbound::Outbound::new(policy, resolver, connect_timeout, config.ca_file.as_deref())?;
    let tls = match config.tls.files() {
        Some((cert, key)) => Some(rollcall_http::Tls::load(cert, key, shutdown.clone())?),
        None => None,
    };
    let reactor = Box::new(reactions::Reactor::default());
    let Stores {
        catalog,
        stored,
        feed,
        published,
        tokens_shared,
    } = stores;
    if let Some(shared) = tokens_shared {
        tokens.share_through(shared);
    }
    let core = core::Core::new(
        config,
        catalog,
        nodes,
        published,
        reactor,
        outbound,
        tokens,
        metrics,
        shutdown.child_token(),
    );
    core.restore(stored);
    rollouts::follow(&core);
    if let Some((feed, read_at)) = feed {
        core.follow(feed, read_at);
    }
    if core.config.audit_shipping {
        let shipping = core.tokens.ephemeral(&rollcall_wire::NewToken {
            name: AUDIT_SERVICE.to_owned(),
            scopes: vec![rollcall_wire::Scope::LogsWrite],
        });
        match shipping {
            Ok(token) => core.audit.start_shipping(core.clone(), &core.tasks, &token),
            Err(error) => tracing::error!(%error, "no token to ship the audit trail with: it stays in this log"),
        }
        if let Some(records) = own_logs {
            core.audit
                .take_own(records, core.metrics.audit_dropped.clone(), &core.tasks);
        }
    }
    let app = http::router(core.clone());
    let serve = rollcall_http::serve(listener, app, ServerLimits::for_this_process(), tls, shutdown.clone());
    let mut http_task = tokio::spawn(serve);

    let ended_early = tokio::select! {
        result = &mut http_task => Some(result),
        () = shutdown.cancelled() => None,
    };
    core.shutdown.cancel();
    core.tasks.close();
    let stopped = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let result = match ended_early {
            Some(result) => result,
            None => (&mut http_task).await,
        };
        core.tasks.wait().await;
        result
    })
    .await;
    core.close_store().await;
    match stopped {
        Ok(Ok(result)) => result.map_err(RunError::Serve),
        Ok(Err(join_error)) => Err(RunError::Serve(io::Error::other(join_error))),
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown grace expired; dropping what is left");
            http_task.abort();
            Ok(())
        }
    }
}
