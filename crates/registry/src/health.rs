//! Health checks: one checker task per registered instance, each on its own jittered clock.
//!
//! An instance's check (`rollcall_wire::Check`) says how it shows it is alive:
//! - HTTP (the default): a `GET` of its HeartbeatURL; any 2xx answer passes;
//! - TCP: a connection to the HeartbeatURL's host and port; a connection made passes;
//! - TTL: the instance renews itself (`PUT /v1/instances/{id}/ttl`, applied by the HTTP layer
//!   as a passing check); here a timer counts a failure whenever a TTL passes without one.
//!
//! Interval, timeout and tries are the instance's own when its check gives them, the registry's
//! flags otherwise. Because each instance has its own task, a hung heartbeat delays only its
//! own next probe. The schedule follows the state the catalog assigns after each check:
//! - passing: the next probe after the interval (±10% jitter); a TTL after the last renewal;
//! - suspect: the next attempt after the retry delay;
//! - critical: probes continue with exponential backoff from the interval up to
//!   [`MAX_CRITICAL_BACKOFF`] (never past the moment the instance is due to be reaped), so that a
//!   recovered instance comes back by itself.
//!
//! A checker is stopped as soon as its registration leaves the catalog or is replaced (and ends
//! by itself if it finds so first), or on shutdown: a re-registered or deregistered instance
//! leaves no sleeping task behind, and an idle registry runs no timers at all. [`Probers`] keeps
//! their handles; each checker holds a guard that takes its own entry out however it ends.
//!
//! A check's result is applied through the core like any change, so its events reach the
//! reactions the same way a registration's do.
//!
//! When several registry nodes share the catalog, each instance is checked by one of them (see
//! `crate::nodes`): the others' checkers wait until the live set changes, and one that finds it
//! has taken the instance over checks it at once. The state changes the checking node finds are
//! stored, and the other nodes take them in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rollcall_wire::{CheckKind, InstanceState};
use tokio::task::AbortHandle;

use crate::config::RegistryConfig;
use crate::core::Core;
use crate::metrics::Metrics;
use crate::nodes::Changes;
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
    let Some((check, pending)) = core
        .catalog()
        .current(&url, id)
        .map(|i| (i.check, i.state == InstanceState::Pending))
    else {
        return;
    };
    if check.kind == CheckKind::Ttl {
        return ttl_loop(&core, &url, id).await;
    }
    let timeout = check.timeout.unwrap_or(core.config.health_timeout);
    // Parsed (and its client picked) when the first probe is due, then kept: an instance replaced
    // or removed before then costs no parse (nor a catalog read while registrations pour in), and
    // probing parses nothing per probe.
    let mut prepared = None;
    // A pending instance waits to be announced: its first probe comes at once.
    let mut delay = if pending {
        Duration::ZERO
    } else {
        first_probe_delay(check.interval.unwrap_or(core.config.health_interval))
    };
    loop {
        tokio::select! {
            () = core.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let mut changes = core.nodes.changes();
        if !core.nodes.owns(&url) {
            // Another node probes it. Should this one take it over, it probes at once.
            if !another_node_probes(&core, &url, &mut changes).await {
                return;
            }
            delay = Duration::ZERO;
            continue;
        }
        let (heartbeat, client, registrant) = {
            let catalog = core.catalog();
            // A deregistered instance is not probed again: its service may be gone, or may take
            // a probe as a sign that it is still registered.
            let Some(instance) = catalog.current(&url, id) else {
                return;
            };
            let registrant = instance.registrant.peer;
            match prepared {
                Some((ref parsed, ref client)) => (parsed, client, registrant),
                None => match url::Url::parse(&instance.registration.heartbeat_url) {
                    Ok(parsed) => {
                        let client = core.outbound.client(registrant);
                        let (parsed, client) = prepared.insert((parsed, client));
                        (&*parsed, &*client, registrant)
                    }
                    Err(_) => return, // validation rules this out
                },
            }
        };
        let probe = async {
            core.probe_budget.wait(heartbeat.host_str().unwrap_or_default()).await;
            match check.kind {
                CheckKind::Tcp => core.outbound.connect(registrant, heartbeat, timeout).await,
                CheckKind::Http | CheckKind::Ttl => client.get(heartbeat, timeout).await,
            }
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
        let command = Command::RecordProbe {
            url: url.clone(),
            id,
            outcome,
            at,
        };
        let Some(next) = record(&core, &url, id, command, at).await else {
            return; // deregistered, replaced or reaped
        };
        delay = next;
    }
}

/// Waits while another registry node does the checking of the instance at `url`, until the
/// live set `changes`; false when the registry stops meanwhile.
async fn another_node_probes(core: &Arc<Core>, url: &str, changes: &mut Changes) -> bool {
    tracing::trace!(%url, "probed by another node");
    tokio::select! {
        () = core.shutdown.cancelled() => false,
        () = changes.next() => true,
    }
}

/// Applies a check's outcome; returns how long to wait for the next check, `None` once the
/// registration is gone.
async fn record(core: &Arc<Core>, url: &str, id: InstanceId, command: Command, at: SystemTime) -> Option<Duration> {
    if let Err(error) = core.apply(command).await {
        tracing::warn!(%url, %error, "cannot record a check");
    }
    core.catalog()
        .current(url, id)
        .map(|i| next_probe_delay(&core.config, i, at))
}

/// The timer of a TTL-checked instance: sleeps until its TTL (or, while it fails, its retry
/// delay) runs out, and counts a failure when nothing was renewed meanwhile. Renewals move the
/// deadline without waking it: it reads the catalog when it wakes.
async fn ttl_loop(core: &Arc<Core>, url: &str, id: InstanceId) {
    // A restored or new instance gets one whole TTL from now (and so does one taken over).
    let mut since = SystemTime::now();
    loop {
        let mut changes = core.nodes.changes();
        if !core.nodes.owns(url) {
            if !another_node_probes(core, url, &mut changes).await {
                return;
            }
            since = SystemTime::now();
            continue;
        }
        let (due, seen, ttl) = {
            let catalog = core.catalog();
            let Some(instance) = catalog.current(url, id) else {
                return;
            };
            let ttl = instance.check.ttl.unwrap_or(core.config.health_interval);
            (ttl_due(&core.config, instance, ttl, since), instance.last_check_at, ttl)
        };
        let now = SystemTime::now();
        if let Ok(wait) = due.duration_since(now)
            && !wait.is_zero()
        {
            tokio::select! {
                () = core.shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => continue,
            }
        }
        core.metrics.probes_failed.inc();
        let failure = ProbeFailure {
            public: "not renewed within its TTL".to_owned(),
            detail: format!("no renewal within {}", humantime::format_duration(ttl)),
        };
        let command = Command::Expire {
            url: url.to_owned(),
            id,
            seen,
            failure,
            at: now,
        };
        if record(core, url, id, command, now).await.is_none() {
            return;
        }
    }
}

/// When TTL-checked `instance`, renewed within `ttl` and timed since `since`, is due to count a
/// failure: a TTL after its last renewal (or after `since`), and while it fails, its next
/// attempt after the last failure (the retry delay, or a critical instance's backoff).
fn ttl_due(config: &RegistryConfig, instance: &Instance, ttl: Duration, since: SystemTime) -> SystemTime {
    match instance.last_check_at {
        Some(at) if instance.consecutive_failures > 0 => at + next_probe_delay(config, instance, at),
        Some(at) => at.max(since) + ttl,
        None => since + ttl,
    }
}

/// How long to wait before the first probe: a random point of one `interval`, so that the
/// first probes of instances registered together (or restored together) are spread over it.
fn first_probe_delay(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// How long to wait before probing `instance` again, given its state after a probe at `now`.
fn next_probe_delay(config: &RegistryConfig, instance: &Instance, now: SystemTime) -> Duration {
    let interval = instance.check.interval.unwrap_or(config.health_interval);
    let tries = instance.check.tries.unwrap_or(config.health_tries);
    match instance.state {
        InstanceState::Passing | InstanceState::Draining => interval.mul_f64(rand::rng().random_range(0.9..=1.1)),
        // Not yet proven alive, or failing: soon again.
        InstanceState::Pending | InstanceState::Suspect => config.health_retry_delay,
        InstanceState::Critical => {
            let beyond_tries = instance.consecutive_failures.saturating_sub(tries).min(16);
            let backoff = interval
                .saturating_mul(1 << beyond_tries)
                .min(MAX_CRITICAL_BACKOFF.max(interval));
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

    use rollcall_wire::{Check, Registration};

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
            check: Check::default(),
            config_url: None,
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
        let delays: Vec<Duration> = (0..1_000).map(|_| first_probe_delay(config.health_interval)).collect();
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

    #[test]
    fn an_instance_with_its_own_check_is_probed_on_its_own_interval_and_tries() {
        let config = config(); // 3 s interval, 3 tries
        let mut passing = instance(InstanceState::Passing, 0, None);
        passing.check.interval = Some(Duration::from_millis(500));
        let delay = next_probe_delay(&config, &passing, NOW);
        assert!(
            delay >= Duration::from_millis(450) && delay <= Duration::from_millis(550),
            "{delay:?}"
        );
        let mut critical = instance(InstanceState::Critical, 6, Some(NOW));
        critical.check = Check {
            interval: Some(Duration::from_secs(1)),
            tries: Some(5),
            ..Check::default()
        };
        // One failure beyond its own 5 tries: twice its own interval.
        assert_eq!(next_probe_delay(&config, &critical, NOW), Duration::from_secs(2));
    }

    #[test]
    fn a_ttl_runs_from_the_last_renewal_or_from_when_the_timer_started() {
        let config = config();
        let ttl = Duration::from_secs(5);
        let since = NOW + Duration::from_secs(100);
        let mut renewed = instance(InstanceState::Passing, 0, None);
        assert_eq!(ttl_due(&config, &renewed, ttl, since), since + ttl, "never renewed");
        renewed.last_check_at = Some(since + Duration::from_secs(2));
        assert_eq!(ttl_due(&config, &renewed, ttl, since), since + Duration::from_secs(7));
        // Renewed before a restart restored it: the timer's start counts.
        renewed.last_check_at = Some(NOW);
        assert_eq!(ttl_due(&config, &renewed, ttl, since), since + ttl);
    }

    #[test]
    fn an_expired_ttl_counts_again_after_the_retry_delay() {
        let config = config();
        let mut suspect = instance(InstanceState::Suspect, 1, None);
        suspect.last_check_at = Some(NOW);
        let due = ttl_due(&config, &suspect, Duration::from_secs(30), NOW);
        assert_eq!(due, NOW + config.health_retry_delay);
    }
}
