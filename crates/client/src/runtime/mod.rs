//! The service runtime: the Rust form of the original's `service.Start`, without its bugs.
//!
//! Order of events, and why:
//! 1. listen (bind, or take the given listener) and serve at once, so that the registry's
//!    callback during registration finds the service up;
//! 2. register, retrying with backoff while the registry is unreachable (or fail fast);
//! 3. keep registered: a blocking query on its own listing, or where there is none the
//!    registry's heartbeat probes stopping for one and a half times the longest recent gap
//!    between them, tells that the registry has forgotten the service (restarted without its
//!    data, or reaped it), so register again; with TTL liveness, renew every third of the TTL
//!    instead (and register again when a renewal finds it unknown);
//! 4. on SIGINT, SIGTERM or the shutdown token: deregister exactly once (so dependents stop
//!    calling), stop accepting requests and finish those in flight, flush the log buffer, all
//!    within one deadline.
//!
//! The service's own router serves every path but `/heartbeat` and `/services`, which belong
//! to the runtime (`routes`). This file is the builder and the started handle; `supervisor`
//! owns the life after registration, `watchdog` the clock that tells the registry forgot us.

mod routes;
mod supervisor;
mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rollcall_http::{Defences, Guard, ServerLimits, WriteLimits};
use rollcall_wire::Registration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::supervisor::Supervisor;
use self::watchdog::ProbeClock;
use crate::args::{ServiceArgs, advertised_url};
use crate::client_args::ClientArgs;
use crate::config::ConfigClient;
use crate::error::StartError;
use crate::logs::LogShipping;
use crate::providers::{Policy, Providers};
use crate::registry_api::Liveness;
use crate::registry_api::RegistryApi;
use crate::signals::cancel_on_signals;

/// How long a registry call may take.
const REGISTRY_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to anything may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Refuses to start a service without a token beyond loopback unless `allow_anonymous`, and
/// says at every start that it runs without one there.
fn anonymous_allowed(token: Option<&str>, listening: SocketAddr, allow_anonymous: bool) -> Result<(), StartError> {
    if token.is_some() || listening.ip().is_loopback() {
        return Ok(());
    }
    if !allow_anonymous {
        return Err(StartError::TokenRequired(listening));
    }
    tracing::warn!(%listening, "--allow-anonymous: listening beyond loopback without a token");
    Ok(())
}

/// Namespace for [`Service::builder`].
#[derive(Debug)]
pub struct Service;

impl Service {
    /// Starts describing a service registered under `name` (e.g. `GradingService`).
    pub fn builder(name: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder::new(name)
    }
}

/// Everything the runtime needs to run a service; [`start`](Self::start) runs it.
#[derive(Debug)]
pub struct ServiceBuilder {
    name: String,
    required: Vec<String>,
    router: Router,
    listen: SocketAddr,
    listener: Option<TcpListener>,
    advertise: Option<String>,
    allowed_hosts: Vec<String>,
    registry: String,
    fail_fast: bool,
    handle_signals: bool,
    shutdown_deadline: Duration,
    expected_health_interval: Duration,
    providers: Providers,
    logs: Option<LogShipping>,
    client: ClientArgs,
    tls: rollcall_http::TlsArgs,
    allow_anonymous: bool,
    drain_timeout: Duration,
    liveness: Liveness,
    config_namespace: String,
    /// The configuration client, and what stops it with the service.
    config: Option<(ConfigClient, CancellationToken)>,
    /// Who serves `/metrics`.
    metrics: MetricsServed,
}

/// Who serves a service's `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricsServed {
    /// The runtime, with what every rollcall service shows.
    ByRuntime,
    /// The service itself (`ServiceBuilder::own_metrics`).
    ByService,
}

impl ServiceBuilder {
    /// A service named `name` that requires nothing, serves an empty router on a free loopback
    /// port, and registers with the registry at `http://127.0.0.1:3000`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            required: Vec::new(),
            router: Router::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: None,
            advertise: None,
            allowed_hosts: Vec::new(),
            registry: crate::args::DEFAULT_REGISTRY.to_owned(),
            fail_fast: false,
            handle_signals: true,
            shutdown_deadline: Duration::from_secs(10),
            expected_health_interval: Duration::from_secs(3),
            providers: Providers::default(),
            logs: None,
            client: ClientArgs::default(),
            tls: rollcall_http::TlsArgs::default(),
            allow_anonymous: false,
            drain_timeout: Duration::from_secs(10),
            liveness: Liveness::Probed,
            config_namespace: "default".to_owned(),
            config: None,
            metrics: MetricsServed::ByRuntime,
        }
    }

    /// The services this one calls: the registry sends their providers.
    #[must_use]
    pub fn requires<I, S>(mut self, services: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required = services.into_iter().map(Into::into).collect();
        self
    }

    /// The service's own routes. `/heartbeat` and `/services` belong to the runtime and shadow
    /// any route of the same path here.
    #[must_use]
    pub fn router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// The service serves `/metrics` itself (registering `rollcall_http::observe` in its own
    /// registry): the runtime mounts none. Without it the runtime serves `/metrics` with what
    /// every rollcall service shows, every route timed.
    #[must_use]
    pub fn own_metrics(mut self) -> Self {
        self.metrics = MetricsServed::ByService;
        self
    }

    /// Takes `--listen` (or `default_listen`), `--advertise`, `--registry`,
    /// `--allowed-hosts`, the token and `--allow-anonymous` from the shared command-line flags.
    #[must_use]
    pub fn args(mut self, args: &ServiceArgs, default_listen: SocketAddr) -> Self {
        self.listen = args.listen_or(default_listen);
        self.advertise.clone_from(&args.advertise);
        self.allowed_hosts.clone_from(&args.allowed_hosts);
        self.registry.clone_from(&args.registry);
        self.client.clone_from(&args.client);
        self.tls.clone_from(&args.tls);
        self.allow_anonymous = args.allow_anonymous;
        self.drain_timeout = args.drain_timeout;
        self.liveness = args.ttl.map_or(Liveness::Probed, Liveness::Ttl);
        self.config_namespace.clone_from(&args.config_namespace);
        self
    }

    /// The service's central configuration: a [`ConfigClient`] for its documents in its
    /// namespace (`--config-namespace`; set the registry and the token first), started now so
    /// that values from `cache_dir` are there before the service registers. The service reports
    /// what becomes of each release as its instance once it knows its id, and stops the client
    /// when it stops.
    pub fn configuration(&mut self, cache_dir: Option<std::path::PathBuf>) -> Result<ConfigClient, StartError> {
        if let Some((client, _)) = &self.config {
            return Ok(client.clone());
        }
        let http = self
            .client
            .http_client()?
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(StartError::HttpClient)?;
        let stop = CancellationToken::new();
        let client = ConfigClient::start(
            http,
            &self.registry,
            &self.config_namespace,
            &self.name,
            cache_dir,
            stop.clone(),
        );
        self.config = Some((client.clone(), stop));
        Ok(client)
    }

    /// Presents the token in the file at `path` to the registry and the log service (read when
    /// the service starts).
    #[must_use]
    pub fn token_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.client.token_file = Some(path.into());
        self
    }

    /// Presents `token` to the registry and the log service.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.client.token = Some(token.into());
        self
    }

    /// Trusts only the authorities in the PEM file at `path` for an `https://` registry and log
    /// service.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.client.ca_file = Some(path.into());
        self
    }

    /// Serves HTTPS with the certificate chain and key in these PEM files (reloaded when they
    /// change), and advertises an `https://` URL.
    #[must_use]
    pub fn tls(mut self, cert: impl Into<std::path::PathBuf>, key: impl Into<std::path::PathBuf>) -> Self {
        self.tls = rollcall_http::TlsArgs {
            tls_cert: Some(cert.into()),
            tls_key: Some(key.into()),
        };
        self
    }

    /// How long a stop waits, still serving, for the registry's dependents to let go of the
    /// instance (taken out of rotation first; 10 s by default; zero skips draining).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How the registry tells that the service is alive: probed (the default, and the seed
    /// protocol), or renewed by the service itself within a TTL, for a service the registry
    /// cannot reach ([`Liveness::Ttl`]: the rollcall registry only). Dependents still learn of
    /// this service from the registry; its own providers are still pushed to its
    /// `/services`.
    #[must_use]
    pub fn liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = liveness;
        self
    }

    /// Starts without a token even when listening beyond loopback (by default such a service
    /// refuses to start: a registry reachable from there asks for one).
    #[must_use]
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// Listens on `address` (port 0 picks a free port).
    #[must_use]
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.listen = address;
        self
    }

    /// Serves on a listener the caller already bound (instead of binding one).
    #[must_use]
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The URL others reach this service at; by default `http://` and the bound address.
    #[must_use]
    pub fn advertise(mut self, url: impl Into<String>) -> Self {
        self.advertise = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Host names the service answers for besides IP addresses, `localhost` and its advertised
    /// host: requests for any other `Host` are refused (against DNS rebinding).
    #[must_use]
    pub fn allowed_hosts<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_hosts = names.into_iter().map(Into::into).collect();
        self
    }

    /// The registry: its base URL, or its seed-style `.../services` URL.
    #[must_use]
    pub fn registry(mut self, url: &str) -> Self {
        self.registry = crate::args::registry_base_urls(url).join(",");
        self
    }

    /// Fail [`start`](Self::start) on the first failed registration instead of retrying with
    /// backoff until the registry answers.
    #[must_use]
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// Whether SIGINT and SIGTERM stop the service (on by default; tests and embedders that
    /// handle signals themselves turn it off and use the shutdown token).
    #[must_use]
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.handle_signals = handle;
        self
    }

    /// How long stopping may take in all: deregistering, finishing requests in flight and
    /// flushing logs (10 s by default).
    #[must_use]
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// The registry's health interval as far as this service can guess (3 s, the seed's, by
    /// default). It only matters until the first two probes arrive: from then on the runtime
    /// measures the interval.
    #[must_use]
    pub fn expected_health_interval(mut self, interval: Duration) -> Self {
        self.expected_health_interval = interval;
        self
    }

    /// How [`Providers::get`] picks among instances (round robin by default).
    #[must_use]
    pub fn load_balancing(self, policy: Policy) -> Self {
        self.providers.set_policy(policy);
        self
    }

    /// Runs this log shipping while the service runs, and flushes it on shutdown.
    #[must_use]
    pub fn ship_logs(mut self, logs: LogShipping) -> Self {
        self.logs = Some(logs);
        self
    }

    /// The providers this service will know: hand them to the router's state before starting.
    pub fn providers(&self) -> Providers {
        self.providers.clone()
    }

    /// Listens, serves, and registers; returns once registered, with the running service.
    /// Cancelling `shutdown` (or a signal) stops it; [`RunningService::wait`] waits for that.
    pub async fn start(self, shutdown: CancellationToken) -> Result<RunningService, StartError> {
        // Checked before binding: a service that may not start beyond loopback never listens there.
        let token = self.client.read()?;
        let listening = match &self.listener {
            Some(listener) => listener.local_addr().map_err(StartError::LocalAddress)?,
            None => self.listen,
        };
        anonymous_allowed(token.as_deref(), listening, self.allow_anonymous)?;
        let listener = match self.listener {
            Some(listener) => listener,
            None => rollcall_http::bind(self.listen).map_err(|source| StartError::Bind {
                address: self.listen,
                source,
            })?,
        };
        let local_addr = listener.local_addr().map_err(StartError::LocalAddress)?;
        let url = self
            .advertise
            .unwrap_or_else(|| advertised_url(self.tls.scheme(), local_addr));
        let registration = Registration {
            service_name: self.name,
            service_url: url.clone(),
            required_services: self.required,
            service_update_url: format!("{url}/services"),
            heartbeat_url: format!("{url}/heartbeat"),
        };
        // The registry and the log service are its only destinations: both get the token.
        let http = self
            .client
            .http_client()?
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REGISTRY_CALL_TIMEOUT)
            .build()
            .map_err(StartError::HttpClient)?;

        let probes = Arc::new(ProbeClock::new(self.expected_health_interval));
        let advertised_host = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        let guard = Guard::new(self.allowed_hosts.iter().cloned().chain(advertised_host));
        let metrics_of = (self.metrics == MetricsServed::ByRuntime).then_some(registration.service_name.as_str());
        let app = routes::router(self.providers.clone(), Arc::clone(&probes), self.router, metrics_of)
            .layer(Defences::new(guard, WriteLimits::default()));
        let stop_serving = CancellationToken::new();
        let tls = match self.tls.files() {
            Some((cert, key)) => Some(rollcall_http::Tls::load(cert, key, stop_serving.clone())?),
            None => None,
        };
        let server = tokio::spawn(rollcall_http::serve(
            listener,
            app,
            ServerLimits::for_this_process(),
            tls,
            stop_serving.clone(),
        ));
        if self.handle_signals {
            cancel_on_signals(&shutdown);
        }
        let shipper = self
            .logs
            .as_ref()
            .and_then(|logs| logs.start(self.providers.clone(), http.clone()));

        let registry = RegistryApi::new(http, &self.registry);
        let supervisor = Supervisor {
            registry,
            registration,
            liveness: self.liveness,
            config: self.config,
            providers: self.providers.clone(),
            probes,
            shutdown: shutdown.clone(),
            deadline: self.shutdown_deadline,
            drain_timeout: self.drain_timeout,
        };
        let id = match supervisor.register(self.fail_fast).await {
            Ok(id) => id,
            Err(error) => {
                stop_serving.cancel();
                supervisor.stop_config();
                let _ = server.await;
                if let Some(shipper) = shipper {
                    shipper.finish(Instant::now() + self.shutdown_deadline).await;
                }
                return Err(StartError::Register(error));
            }
        };
        tracing::info!(service = %supervisor.registration.service_name, %url, "registered");

        let task = tokio::spawn(supervisor.run(id, server, stop_serving, shipper));
        Ok(RunningService {
            url,
            local_addr,
            providers: self.providers,
            shutdown,
            task,
        })
    }

    /// [`start`](Self::start), then [`RunningService::wait`].
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StartError> {
        self.start(shutdown).await?.wait().await;
        Ok(())
    }
}

/// A started service.
#[derive(Debug)]
pub struct RunningService {
    url: String,
    local_addr: SocketAddr,
    providers: Providers,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningService {
    /// The URL the service registered (its ServiceURL).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The providers of its required services.
    pub fn providers(&self) -> Providers {
        self.providers.clone()
    }

    /// Asks the service to stop (as a signal would).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the service has stopped: deregistered, drained and flushed.
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "service runtime task failed");
        }
    }

    /// Stops the service and waits until it has stopped.
    pub async fn stop(self) {
        self.shutdown();
        self.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_a_service_needs_a_token_or_allow_anonymous() {
        let public = SocketAddr::from(([0, 0, 0, 0], 4000));
        let local = SocketAddr::from(([127, 0, 0, 1], 4000));
        assert!(matches!(
            anonymous_allowed(None, public, false),
            Err(StartError::TokenRequired(_))
        ));
        assert!(anonymous_allowed(None, public, true).is_ok());
        assert!(anonymous_allowed(Some("rc_x"), public, false).is_ok());
        assert!(anonymous_allowed(None, local, false).is_ok());
    }
}
