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
//! no sleeping task behind, and an idle registry runs no timers at all. [`Probers`] keeps their
//! handles; each prober holds a guard that takes its own entry out however it ends.
//!
//! A probe's result is applied through the core like any change, so its events reach the
//! reactions the same way a registration's do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rollcall_wire::InstanceState;
use tokio::task::AbortHandle;

use crate::config::RegistryConfig;
use crate::core::Core;
use crate::metrics::Metrics;
use crate::state::{Command, Instance, InstanceId, ProbeFailure};

/// The longest wait between two probes of a critical instance (unless the interval is longer).
pub const MAX_CRITICAL_BACKOFF: Duration = Duration::from_secs(30);

/// The abort handle of each running prober, by registration.
type Handles = Arc<Mutex<HashMap<InstanceId, AbortHandle>>>;

/// The running probers.
#[derive(Debug, Default)]
pub(crate) struct Probers {
    handles: Handles,
}

impl Probers {
    /// Starts probing registration `id` of the instance at `url`.
    pub fn start(&self, core: &Arc<Core>, url: String, id: InstanceId) {
        // Spawned under the lock, so that a prober that ends at once (its registration already
        // gone) finds its entry to remove.
        let mut handles = lock(&self.handles);
        let guard = Running::start(&core.metrics, Arc::clone(&self.handles), id);
        let task = core.tasks.spawn(probe_loop(Arc::clone(core), url, id, guard));
        if let Some(older) = handles.insert(id, task.abort_handle()) {
            older.abort();
        }
    }

    /// Stops the prober of registration `id`, if it runs.
    pub fn stop(&self, id: InstanceId) {
        if let Some(prober) = lock(&self.handles).remove(&id) {
            prober.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a prober in the `probers` gauge for as long as it lives and, however it ends (by
/// itself, stopped or on shutdown), takes it out of the running probers.
struct Running {
    gauge: prometheus_client::metrics::gauge::Gauge,
    handles: Handles,
    id: InstanceId,
}

impl Running {
    fn start(metrics: &Metrics, handles: Handles, id: InstanceId) -> Self {
        metrics.probers.inc();
        Self {
            gauge: metrics.probers.clone(),
            handles,
            id,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.gauge.dec();
        lock(&self.handles).remove(&self.id);
    }
}

async fn probe_loop(core: Arc<Core>, url: String, id: InstanceId, _running: Running) {
    // Parsed (and its client picked) when the first probe is due, then kept: an instance replaced
    // or removed before then costs no parse (nor a catalog read while registrations pour in), and
    // probing parses nothing per probe.
    let mut prepared = None;
    // A pending instance waits to be announced: its first probe comes at once.
    let pending = core
        .catalog()
        .current(&url, id)
        .is_some_and(|i| i.state == InstanceState::Pending);
    let mut delay = if pending {
        Duration::ZERO
    } else {
        first_probe_delay(&core.config)
    };
    loop {
        tokio::select! {
            () = core.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let (heartbeat, client) = {
            let catalog = core.catalog();
            // A deregistered instance is not probed again: its service may be gone, or may take
            // a probe as a sign that it is still registered.
            let Some(instance) = catalog.current(&url, id) else {
                return;
            };
            match prepared {
                Some((ref parsed, ref client)) => (parsed, client),
                None => match url::Url::parse(&instance.registration.heartbeat_url) {
                    Ok(parsed) => {
                        let client = core.outbound.client(instance.registrant.peer);
                        let (parsed, client) = prepared.insert((parsed, client));
                        (&*parsed, &*client)
                    }
                    Err(_) => return, // validation rules this out
                },
            }
        };
        let probe = async {
            core.probe_budget.wait(heartbeat.host_str().unwrap_or_default()).await;
            client.get(heartbeat, core.config.health_timeout).await
        };
        let outcome = tokio::select! {
            () = core.shutdown.cancelled() => return,
            outcome = probe => outcome.map_err(|error| {
                tracing::debug!(%url, %error, "probe failed");
                ProbeFailure { public: error.public(), detail: error.to_string() }
            }),
        };
        let at = SystemTime::now();
        if outcome.is_ok() {
            core.metrics.probes_passed.inc();
        } else {
            core.metrics.probes_failed.inc();
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

/// How long to wait before the first probe: a random point of one interval, so that the first
/// probes of instances registered together (or restored together) are spread over it.
fn first_probe_delay(config: &RegistryConfig) -> Duration {
    config.health_interval.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// How long to wait before probing `instance` again, given its state after a probe at `now`.
fn next_probe_delay(config: &RegistryConfig, instance: &Instance, now: SystemTime) -> Duration {
    match instance.state {
        InstanceState::Passing | InstanceState::Draining => {
            config.health_interval.mul_f64(rand::rng().random_range(0.9..=1.1))
        }
        // Not yet proven alive, or failing: soon again.
        InstanceState::Pending | InstanceState::Suspect => config.health_retry_delay,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rollcall_wire::Registration;

    use super::*;

    fn config() -> RegistryConfig {
        RegistryConfig::new("127.0.0.1:0".parse().expect("address"), "unused".into())
    }

    fn instance(state: InstanceState, consecutive_failures: u32, critical_since: Option<SystemTime>) -> Instance {
        Instance {
            id: 1,
            instance_id: "i".to_owned(),
            registration: Registration::default(),
            metadata: BTreeMap::new(),
            registrant: crate::state::Registrant::default(),
            state,
            registered_at: SystemTime::UNIX_EPOCH,
            last_check_at: None,
            last_error: None,
            consecutive_failures,
            critical_since,
        }
    }

    const NOW: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn first_probes_are_spread_over_one_interval() {
        let config = config();
        let delays: Vec<Duration> = (0..1_000).map(|_| first_probe_delay(&config)).collect();
        assert!(delays.iter().all(|d| *d < config.health_interval));
        let early = delays.iter().filter(|d| **d < config.health_interval / 2).count();
        assert!((350..=650).contains(&early), "{early} of 1000 in the first half");
    }

    #[test]
    fn a_passing_instance_is_probed_every_interval_give_or_take_a_tenth() {
        let config = config();
        let passing = instance(InstanceState::Passing, 0, None);
        let delays: Vec<Duration> = (0..1_000).map(|_| next_probe_delay(&config, &passing, NOW)).collect();
        let (low, high) = (config.health_interval.mul_f64(0.9), config.health_interval.mul_f64(1.1));
        assert!(delays.iter().all(|d| *d >= low && *d <= high));
        assert!(delays.iter().any(|d| *d != delays[0]), "jittered, not fixed");
    }

    #[test]
    fn a_suspect_instance_is_tried_again_after_the_retry_delay() {
        let config = config();
        let suspect = instance(InstanceState::Suspect, 1, None);
        assert_eq!(next_probe_delay(&config, &suspect, NOW), config.health_retry_delay);
    }

    #[test]
    fn a_critical_instance_backs_off_doubling_up_to_the_cap() {
        let config = config(); // 3 s interval, 3 tries, reaped after 10 min
        let delays: Vec<u64> = (0..8)
            .map(|beyond| {
                let critical = instance(InstanceState::Critical, config.health_tries + beyond, Some(NOW));
                next_probe_delay(&config, &critical, NOW).as_secs()
            })
            .collect();
        assert_eq!(delays, [3, 6, 12, 24, 30, 30, 30, 30]);
    }

    #[test]
    fn a_critical_instance_is_probed_once_more_before_it_is_reaped() {
        let config = config();
        let reaped_at = NOW + Duration::from_secs(5);
        let since = reaped_at - config.deregister_critical_after;
        let critical = instance(InstanceState::Critical, config.health_tries + 4, Some(since));
        assert_eq!(next_probe_delay(&config, &critical, NOW), Duration::from_secs(5));
        // Closer to the reaping than the retry delay, or past it: the retry delay.
        let late = NOW + Duration::from_millis(4_800);
        assert_eq!(next_probe_delay(&config, &critical, late), config.health_retry_delay);
        let past = NOW + Duration::from_secs(60);
        assert_eq!(next_probe_delay(&config, &critical, past), config.health_retry_delay);
    }
}
