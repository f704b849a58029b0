//! The supervisor: the runtime's background work once a service is registered. It keeps the
//! service registered (registering again when the registry's probes fall silent, see
//! `watchdog`), then on shutdown deregisters exactly once, stops the server and flushes the
//! logs, all within one deadline.

use std::sync::Arc;
use std::time::Duration;

use rollcall_wire::Registration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::watchdog::ProbeClock;
use crate::error::RegistryError;
use crate::providers::Providers;
use crate::registry_api::RegistryApi;

/// The runtime's background work: keeping the service registered, then stopping it.
pub(super) struct Supervisor {
    pub(super) registry: RegistryApi,
    pub(super) registration: Registration,
    pub(super) providers: Providers,
    pub(super) probes: Arc<ProbeClock>,
    pub(super) shutdown: CancellationToken,
    pub(super) deadline: Duration,
}

impl Supervisor {
    /// Registers (again), taking the registry's patch as the full list of providers.
    pub(super) async fn register(&self, fail_fast: bool) -> Result<(), RegistryError> {
        self.providers.expect_full_list(&self.registration.required_services);
        let registered = self
            .registry
            .register_until_done(&self.registration, fail_fast, &self.shutdown)
            .await;
        // A registration that failed after its patch arrived leaves the patch applied: it was
        // the registry's view either way.
        self.providers.cancel_full_list();
        if registered.is_ok() {
            self.probes.registered();
        }
        registered
    }

    pub(super) async fn run(
        self,
        server: JoinHandle<std::io::Result<()>>,
        stop_serving: CancellationToken,
        shipper: Option<crate::logs::Shipper>,
    ) {
        self.keep_registered().await;
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
    }

    /// Until shutdown: registers again whenever the registry's probes fall silent.
    async fn keep_registered(&self) {
        loop {
            let wait = self.probes.time_until_silent();
            if wait.is_zero() {
                tracing::warn!(
                    url = %self.registration.service_url,
                    "no health probe from the registry for too long: registering again"
                );
                self.probes.silence_confirmed();
                if self.register(false).await.is_err() {
                    return; // only a shutdown ends the retries
                }
                continue;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
