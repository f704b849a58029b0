//! The supervisor: the runtime's background work once a service is registered. It keeps the
//! service registered, then on shutdown drains it (dependents let go of it while it still
//! serves), deregisters exactly once, stops the server and flushes the logs.
//!
//! Two things tell a probed service that the registry forgot it: a blocking query on its own
//! service's listing (`/v1`), answered as soon as the listing changes, and retried every 100 to
//! 800 ms while the registry is away, so that a registry back empty is noticed within a second
//! of answering; and, where there is no listing to read (the Go registry, a token without the
//! read scope), the silence of the registry's probes (`watchdog`). A service on TTL liveness
//! renews itself every third of its TTL instead, and registers again when a renewal finds it
//! unknown.

use std::sync::Arc;
use std::time::Duration;

use rollcall_wire::Registration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::watchdog::ProbeClock;
use crate::error::RegistryError;
use crate::providers::Providers;
use crate::registry_api::{Listed, Liveness, RegistryApi};

/// Waits between two attempts to read the listing while the registry does not answer: 100 to
/// 200 ms doubling to 400 to 800 ms (backon, with jitter), so that a registry back is noticed
/// within a second of answering.
fn retry_while_away() -> backon::ExponentialBackoff {
    crate::backoff::delays_between(Duration::from_millis(100), Duration::from_millis(400))
}

/// The runtime's background work: keeping the service registered, then stopping it.
pub(super) struct Supervisor {
    pub(super) registry: RegistryApi,
    pub(super) registration: Registration,
    pub(super) liveness: Liveness,
    /// The service's configuration client (told the instance id whenever it is learned), and
    /// what stops it with the service.
    pub(super) config: Option<(crate::config::ConfigClient, CancellationToken)>,
    pub(super) providers: Providers,
    pub(super) probes: Arc<ProbeClock>,
    pub(super) shutdown: CancellationToken,
    pub(super) deadline: Duration,
    /// How long a stop waits for dependents to let go of the instance.
    pub(super) drain_timeout: Duration,
}

impl Supervisor {
    /// Registers (again), taking the registry's patch as the full list of providers. The
    /// answer is the instance's id when the registration gave one (TTL liveness).
    pub(super) async fn register(&self, fail_fast: bool) -> Result<Option<String>, RegistryError> {
        self.providers.expect_full_list(&self.registration.required_services);
        let registered = self
            .registry
            .register_until_done(&self.registration, self.liveness, fail_fast, &self.shutdown)
            .await;
        // Through the seed protocol the registry answers once its patch arrived, so an
        // expectation left is one no patch fulfilled (a registration that failed after its
        // patch arrived leaves the patch applied: it was the registry's view either way). A
        // TTL registration's patch follows its answer.
        if self.liveness == Liveness::Probed || registered.is_err() {
            self.providers.cancel_full_list();
        }
        if let Ok(id) = &registered {
            self.probes.registered();
            if let Some(id) = id {
                self.report_as(id);
            }
        }
        registered
    }

    /// Tells the configuration client which instance it reports as.
    fn report_as(&self, id: &str) {
        if let Some((config, _)) = &self.config {
            config.report_as(id);
        }
    }

    /// Stops the configuration client.
    pub(super) fn stop_config(&self) {
        if let Some((_, stop)) = &self.config {
            stop.cancel();
        }
    }

    /// Keeps the service registered (`id`: what its registration answered), then stops it.
    pub(super) async fn run(
        self,
        id: Option<String>,
        server: JoinHandle<std::io::Result<()>>,
        stop_serving: CancellationToken,
        shipper: Option<crate::logs::Shipper>,
    ) {
        let id = match (self.liveness, id) {
            (Liveness::Ttl(ttl), Some(id)) => self.keep_renewed(ttl, id).await,
            _ => self.keep_registered().await,
        };
        self.drain(id).await;
        let deadline = Instant::now() + self.deadline;

        // Exactly one deregistration, before the server stops: dependents stop calling first.
        let url = &self.registration.service_url;
        match tokio::time::timeout_at(deadline, self.registry.deregister(url)).await {
            Ok(Ok(())) => tracing::info!(%url, "deregistered"),
            Ok(Err(error)) => tracing::warn!(%url, %error, "deregistration failed"),
            Err(_) => tracing::warn!(%url, "deregistration timed out"),
        }

        stop_serving.cancel();
        let abort = server.abort_handle();
        match tokio::time::timeout_at(deadline, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::error!(%error, "server failed"),
            Ok(Err(error)) => tracing::error!(%error, "server task failed"),
            Err(_) => {
                tracing::warn!("requests still in flight at the shutdown deadline were cut off");
                abort.abort();
            }
        }
        if let Some(shipper) = shipper {
            shipper.finish(deadline).await;
        }
        self.stop_config();
    }

    /// Before it stops: takes the instance out of rotation and keeps serving until every
    /// dependent acknowledged its removal, or the drain timeout ran out. A registry that cannot
    /// drain (the Go registry) or does not list the instance skips it.
    async fn drain(&self, id: Option<String>) {
        if self.drain_timeout.is_zero() {
            return;
        }
        let (service, url) = (&self.registration.service_name, &self.registration.service_url);
        let id = match id {
            Some(id) => id,
            None => match self.registry.listed(service, url, None).await {
                Listed::Present(_, id) => id,
                _ => return,
            },
        };
        let started = Instant::now();
        while started.elapsed() < self.drain_timeout {
            match self.registry.drain(&id).await {
                Some(0) => {
                    tracing::info!(%url, drained_in = ?started.elapsed(), "every dependent let go of this instance");
                    return;
                }
                Some(holders) => tracing::info!(%url, holders, "draining: dependents still hold this instance"),
                None => return,
            }
        }
        tracing::warn!(%url, timeout = ?self.drain_timeout, "drain timed out: stopping anyway");
    }

    /// Until shutdown: renews the TTL-checked instance `id` every third of `ttl` (the first
    /// renewal at once: it announces the instance), retrying every 100 to 800 ms while the
    /// registry does not answer, and registers again when the registry does not know it (or
    /// no longer as TTL-checked). Returns the instance's id.
    async fn keep_renewed(&self, ttl: Duration, mut id: String) -> Option<String> {
        let url = &self.registration.service_url;
        let mut away = retry_while_away();
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Some(id),
                () = tokio::time::sleep(wait) => {}
            }
            match self.registry.renew(&id).await {
                Ok(()) => {
                    wait = ttl / 3;
                    away = retry_while_away();
                }
                Err(RegistryError::Refused { status: 404 | 409, .. }) => {
                    tracing::warn!(%url, "the registry no longer knows this TTL instance: registering again");
                    match self.register(false).await {
                        Ok(Some(new)) => (id, wait) = (new, Duration::ZERO),
                        _ => return None, // only a shutdown ends the retries
                    }
                }
                Err(error) => {
                    wait = away.next().unwrap_or(Duration::from_millis(400));
                    tracing::debug!(%url, %error, retry_in = ?wait, "renewal failed");
                }
            }
        }
    }

    /// Until shutdown: registers again whenever the registry forgot the service. Returns the
    /// instance's id, when the registry's listing showed it.
    async fn keep_registered(&self) -> Option<String> {
        let (service, url) = (&self.registration.service_name, &self.registration.service_url);
        let mut index = None;
        let mut id = None;
        let mut listing = true;
        let mut away = retry_while_away();
        loop {
            let wait = self.probes.time_until_silent();
            if wait.is_zero() {
                tracing::warn!(%url, "no health probe from the registry for too long: registering again");
                self.probes.silence_confirmed();
                if self.register(false).await.is_err() {
                    return id; // only a shutdown ends the retries
                }
                continue;
            }
            let watch = async {
                if listing {
                    self.registry.listed(service, url, index).await
                } else {
                    std::future::pending().await
                }
            };
            let listed = tokio::select! {
                () = self.shutdown.cancelled() => return id,
                () = tokio::time::sleep(wait) => continue,
                listed = watch => listed,
            };
            match listed {
                Listed::Present(now, listed_as) => {
                    index = Some(now);
                    self.report_as(&listed_as);
                    id = Some(listed_as);
                    away = retry_while_away();
                }
                Listed::Absent => {
                    tracing::warn!(%url, "the registry no longer lists this service: registering again");
                    (index, id) = (None, None);
                    if self.register(false).await.is_err() {
                        return None;
                    }
                }
                Listed::Unsupported => listing = false,
                Listed::Unreachable => {
                    index = None;
                    let pause = away.next().unwrap_or(Duration::from_millis(400));
                    tokio::select! {
                        () = self.shutdown.cancelled() => return id,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}
