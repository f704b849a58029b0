//! Health checks: one prober task per registered instance, each on its own jittered clock.
//!
//! Every probe is a `GET` of the instance's HeartbeatURL with the configured timeout; any 2xx
//! answer passes. Because each instance has its own task, a hung heartbeat delays only its own
//! next probe. The schedule follows the state the catalog assigns after each probe:
//! - passing: the next probe after the health interval (±10% jitter);
//! - suspect: the next attempt after the retry delay;
//! - critical: probes continue with exponential backoff from the interval up to
//!   [`MAX_CRITICAL_BACKOFF`] (never past the moment the instance is due to be reaped), so that a
//!   recovered instance comes back by itself.
//!
//! A prober is stopped as soon as its registration leaves the catalog or is replaced (and ends by
//! itself if it finds so first), or on shutdown: a re-registered or deregistered instance leaves
//! no sleeping task behind, and an idle registry runs no timers at all.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use rollcall_wire::InstanceState;
use tokio::task::AbortHandle;

use crate::RegistryConfig;
use crate::core::Core;
use crate::outbound::get;
use crate::state::{Command, Instance, InstanceId};

/// The longest wait between two probes of a critical instance (unless the interval is longer).
pub const MAX_CRITICAL_BACKOFF: Duration = Duration::from_secs(30);

/// Starts probing registration `id` of the instance at `url`; the handle stops it.
pub(crate) fn spawn_prober(core: &Arc<Core>, url: String, id: InstanceId) -> AbortHandle {
    let core = Arc::clone(core);
    core.tasks.clone().spawn(probe_loop(core, url, id)).abort_handle()
}

/// Counts a prober in the `probers` gauge for as long as it lives and, however it ends (by
/// itself, stopped or on shutdown), takes it out of the core's map of probers.
struct Running<'a> {
    core: &'a Core,
    id: InstanceId,
}

impl<'a> Running<'a> {
    fn start(core: &'a Core, id: InstanceId) -> Self {
        core.metrics.probers.inc();
        Self { core, id }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.core.metrics.probers.dec();
        self.core.forget_prober(self.id);
    }
}

async fn probe_loop(core: Arc<Core>, url: String, id: InstanceId) {
    let _running = Running::start(&core, id);
    // Parsed when the first probe is due, then kept: an instance replaced or removed before then
    // costs no parse (nor a catalog read while registrations pour in), and probing parses nothing
    // per probe.
    let mut heartbeat_url = None;
    // Spread the first probes of instances registered together over one interval.
    let mut delay = core.config.health_interval.mul_f64(rand::rng().random_range(0.0..1.0));
    loop {
        tokio::select! {
            () = core.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let heartbeat = {
            let catalog = core.catalog();
            // A deregistered instance is not probed again: its service may be gone, or may take
            // a probe as a sign that it is still registered.
            let Some(instance) = catalog.current(&url, id) else {
                return;
            };
            match heartbeat_url {
                Some(ref parsed) => parsed,
                None => match reqwest::Url::parse(&instance.registration.heartbeat_url) {
                    Ok(parsed) => heartbeat_url.insert(parsed),
                    Err(_) => return, // validation rules this out
                },
            }
        };
        let outcome = tokio::select! {
            () = core.shutdown.cancelled() => return,
            outcome = get(&core.http, &core.probes, heartbeat, core.config.health_timeout) => {
                outcome.map_err(|e| e.to_string())
            }
        };
        let at = SystemTime::now();
        if outcome.is_ok() {
            core.metrics.probes_passed.inc();
        } else {
            core.metrics.probes_failed.inc();
        }
        if let Err(error) = &outcome {
            tracing::debug!(%url, %error, "probe failed");
        }
        // A stale id is simply ignored; only reaping writes to disk, and a failed write is
        // retried by the next probe.
        if let Err(error) = core
            .apply(Command::RecordProbe {
                url: url.clone(),
                id,
                outcome,
                at,
            })
            .await
        {
            tracing::warn!(%url, %error, "cannot record a probe");
        }
        let Some(next) = core
            .catalog()
            .current(&url, id)
            .map(|i| next_probe_delay(&core.config, i, at))
        else {
            return; // deregistered, replaced or reaped
        };
        delay = next;
    }
}

/// How long to wait before probing `instance` again, given its state after a probe at `now`.
fn next_probe_delay(config: &RegistryConfig, instance: &Instance, now: SystemTime) -> Duration {
    match instance.state {
        InstanceState::Passing => config.health_interval.mul_f64(rand::rng().random_range(0.9..=1.1)),
        InstanceState::Suspect => config.health_retry_delay,
        InstanceState::Critical => {
            let beyond_tries = instance
                .consecutive_failures
                .saturating_sub(config.health_tries)
                .min(16);
            let backoff = config
                .health_interval
                .saturating_mul(1 << beyond_tries)
                .min(MAX_CRITICAL_BACKOFF.max(config.health_interval));
            let reap_at = instance
                .critical_since
                .map(|since| since + config.deregister_critical_after);
            let until_reap = reap_at.and_then(|at| at.duration_since(now).ok()).unwrap_or_default();
            backoff.min(until_reap.max(config.health_retry_delay))
        }
    }
}
