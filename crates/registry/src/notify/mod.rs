//! Push notifications: one ordered, coalescing delivery queue per subscriber.
//!
//! A subscriber is a registered instance that requires other services, or that asked for its
//! configuration by webhook (a `ConfigUpdateURL`), or both. Its queue is a task that holds what
//! the subscriber is known to hold (`held`: the providers it acknowledged; and the configuration
//! releases it was sent) and, when woken, sends the difference between that and what it should
//! hold now (computed from the catalog, and from the published documents: what the instance is
//! to run of each document its service reads, rollouts included). Patches go first, then each
//! configuration release the subscriber lacks, as a `release` event's JSON; a 2xx answer to one
//! counts as applied, 422 as rejected (both are recorded as the instance's report). The queues
//! with a configuration feed are woken by a listener of the published documents, started with
//! the first of them. Because what is sent is always computed from the current state:
//! - changes that pile up while a subscriber is slow are coalesced (an instance added then removed
//!   before delivery is never sent at all);
//! - a subscriber is never sent a patch that repeats what it already holds;
//! - a slow or dead subscriber only ever delays its own task, never another's.
//!
//! When several registry nodes share the catalog, each subscriber's queue delivers from one of
//! them (the node that owns its ServiceURL, see `crate::nodes`); the queues on the other nodes
//! keep what the subscriber holds as the delivering node shares it after each acknowledged
//! patch, and the queue of a node that takes the subscriber over resumes from there (a patch
//! delivered but not yet shared is sent again: at least once, never lost).
//!
//! A failed delivery is retried with exponential backoff and jitter ([`Retries`]), at most
//! [`MAX_ATTEMPTS`] attempts in a row; after that the queue waits for the next change (or for the
//! subscriber to pass a health check again) and then sends everything it missed in one patch.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rollcall_wire::{Patch, PatchEntry, Registration};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::outbound::{PatchConnection, patch_body};
use crate::state::InstanceId;

mod config;

pub(crate) use config::{ConfigFeed, NAMESPACE_LABEL};
use config::{Delivered, deliver_config, wake_on_releases};

/// Delivery attempts in a row before a queue stops retrying until the next change.
pub const MAX_ATTEMPTS: u32 = 8;
/// The first retry waits between this and twice this; each further one doubles the step.
const FIRST_RETRY_STEP: Duration = Duration::from_millis(50);
/// The largest step: no wait between two retries is longer than twice it.
const MAX_RETRY_STEP: Duration = Duration::from_millis(2_500);

/// The delivery queues of every subscriber, keyed by the subscriber's ServiceURL.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    subscribers: Arc<Subscribers>,
    /// True once the listener that wakes configuration feeds runs.
    listening: std::sync::atomic::AtomicBool,
    /// Notified whenever a subscriber acknowledged a patch.
    acknowledged: Arc<Notify>,
}

type Subscribers = Mutex<HashMap<String, Arc<Subscriber>>>;

#[derive(Debug)]
struct Subscriber {
    /// The registration this queue serves; a newer registration of the URL replaces the queue.
    id: InstanceId,
    url: String,
    /// Parsed once: parsing on every delivery showed up in the fan-out profile.
    update_url: url::Url,
    /// Where its registration came from: deliveries are held to it.
    registrant: Option<IpAddr>,
    required: Vec<String>,
    /// Its configuration by webhook, if it asked for it.
    config: Option<ConfigFeed>,
    /// The providers the subscriber acknowledged holding.
    held: Mutex<BTreeSet<PatchEntry>>,
    /// When the oldest change the subscriber does not hold yet happened; `None` when it is
    /// up to date (as far as the queue knows).
    behind_since: Mutex<Option<Instant>>,
    wake: Notify,
    /// The notifier's: told after each acknowledged patch.
    acknowledged: Arc<Notify>,
    cancel: CancellationToken,
}

impl Notifier {
    /// Starts the queue of registration `id` (sent from `registrant`), whose subscriber already
    /// holds `held` (the patch its registration callback delivered). Replaces the queue of any
    /// older registration of the same URL; a registration that requires nothing gets no queue.
    pub fn subscribe(
        &self,
        core: &Arc<Core>,
        registration: &Registration,
        registrant: Option<IpAddr>,
        id: InstanceId,
        held: BTreeSet<PatchEntry>,
        config: Option<ConfigFeed>,
    ) {
        let url = &registration.service_url;
        let mut subscribers = lock(&self.subscribers);
        if subscribers.get(url).is_some_and(|s| s.id > id) {
            return; // a newer registration of this URL got here first
        }
        if let Some(old) = subscribers.remove(url) {
            old.cancel.cancel();
        }
        if registration.required_services.is_empty() && config.is_none() {
            return;
        }
        if config.is_some() && !self.listening.swap(true, std::sync::atomic::Ordering::AcqRel) {
            core.tasks
                .spawn(wake_on_releases(Arc::clone(core), Arc::clone(&self.subscribers)));
        }
        let Ok(update_url) = url::Url::parse(&registration.service_update_url) else {
            tracing::warn!(%url, "unparsable ServiceUpdateURL; no notifications"); // validated on registration
            return;
        };
        let subscriber = Arc::new(Subscriber {
            id,
            url: url.clone(),
            update_url,
            registrant,
            required: registration.required_services.clone(),
            config,
            held: Mutex::new(held),
            behind_since: Mutex::new(Some(Instant::now())),
            wake: Notify::new(),
            acknowledged: Arc::clone(&self.acknowledged),
            cancel: core.shutdown.child_token(),
        });
        // Catch up with whatever changed between the callback and the catalog update.
        subscriber.wake.notify_one();
        subscribers.insert(url.clone(), Arc::clone(&subscriber));
        drop(subscribers);
        let leave = Leave {
            subscribers: Arc::clone(&self.subscribers),
            subscriber: Arc::clone(&subscriber),
        };
        core.tasks.spawn(run_queue(Arc::clone(core), subscriber, leave));
    }

    /// Stops the queue of registration `id` of `url`, if it is still the current one.
    pub fn remove(&self, url: &str, id: InstanceId) {
        if let Some(old) = take_if_current(&self.subscribers, url, id) {
            old.cancel.cancel();
        }
    }

    /// Wakes the queues of the subscribers at `urls` so that they bring their subscriber up to date.
    pub fn wake<'a>(&self, urls: impl IntoIterator<Item = &'a str>) {
        let subscribers = lock(&self.subscribers);
        for url in urls {
            if let Some(subscriber) = subscribers.get(url) {
                subscriber.behind().get_or_insert_with(Instant::now);
                subscriber.wake.notify_one();
            }
        }
    }

    /// The number of queues, and of those with changes their subscriber does not hold yet.
    /// The subscribers (their service URLs) that still hold `entry`: have not acknowledged its
    /// removal.
    pub fn holders(&self, entry: &PatchEntry) -> Vec<String> {
        lock(&self.subscribers)
            .values()
            .filter(|s| s.held().contains(entry))
            .map(|s| s.url.clone())
            .collect()
    }

    /// Takes in what the subscriber at `url` acknowledged holding, as the node delivering to
    /// it shared it: this node's queue resumes from there if it takes the deliveries over.
    pub fn take_held(&self, url: &str, held: BTreeSet<PatchEntry>) {
        if let Some(subscriber) = lock(&self.subscribers).get(url) {
            *subscriber.held() = held;
        }
        self.acknowledged.notify_waiters();
    }

    /// Notified whenever a subscriber acknowledged a patch (for a drain's wait).
    pub fn acknowledged(&self) -> &Notify {
        &self.acknowledged
    }

    pub fn counts(&self) -> (usize, usize) {
        let subscribers = lock(&self.subscribers);
        let behind = subscribers.values().filter(|s| s.behind().is_some()).count();
        (subscribers.len(), behind)
    }
}

fn lock(subscribers: &Subscribers) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Subscriber>>> {
    subscribers.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the subscriber of `url` out of `subscribers` if it is registration `id`'s.
fn take_if_current(subscribers: &Subscribers, url: &str, id: InstanceId) -> Option<Arc<Subscriber>> {
    let mut subscribers = lock(subscribers);
    if subscribers.get(url).is_some_and(|s| s.id == id) {
        subscribers.remove(url)
    } else {
        None
    }
}

/// Held by a queue's task: however the task ends, its subscriber leaves the map (unless a newer
/// registration's queue has taken its place).
struct Leave {
    subscribers: Arc<Subscribers>,
    subscriber: Arc<Subscriber>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        take_if_current(&self.subscribers, &self.subscriber.url, self.subscriber.id);
    }
}

impl Subscriber {
    fn held(&self) -> std::sync::MutexGuard<'_, BTreeSet<PatchEntry>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn behind(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.behind_since.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The queue's task: sleep until woken, then deliver until the subscriber holds what it should.
/// It ends when cancelled or once its registration is no longer current.
async fn run_queue(core: Arc<Core>, subscriber: Arc<Subscriber>, _leave: Leave) {
    let mut connection = PatchConnection::new(subscriber.update_url.clone(), subscriber.registrant);
    // Taken once: a change of the live set while a delivery runs is seen at the next wait.
    let mut changes = core.nodes.changes();
    loop {
        tokio::select! {
            () = subscriber.cancel.cancelled() => return,
            () = subscriber.wake.notified() => {}
            // Another node may have left: this one may have to take the deliveries over.
            () = changes.next() => {}
        }
        if core.catalog().current(&subscriber.url, subscriber.id).is_none() {
            return;
        }
        if core.nodes.owns(&subscriber.url) {
            deliver_until_current(&core, &subscriber, &mut connection).await;
        }
    }
}

async fn deliver_until_current(core: &Core, subscriber: &Subscriber, connection: &mut PatchConnection) {
    let mut retries = Retries::new();
    loop {
        // Deliveries to one subscriber come from one node at a time.
        if !core.nodes.owns(&subscriber.url) {
            return;
        }
        let desired = core.catalog().providers_of(&subscriber.required);
        let patch = difference(&subscriber.held(), &desired);
        if patch.is_empty() {
            match deliver_config(core, subscriber).await {
                Delivered::Current => {
                    *subscriber.behind() = None;
                    return;
                }
                Delivered::One => {
                    retries = Retries::new();
                    continue;
                }
                Delivered::Cancelled => return,
                Delivered::Failed(error) => match retries.after_failure(&subscriber.cancel).await {
                    Retry::Again => continue,
                    Retry::Cancelled => return,
                    Retry::GiveUp => {
                        tracing::warn!(url = %subscriber.url, %error, "giving up on a configuration release until the next change");
                        return;
                    }
                },
            }
        }
        let delivery = connection.post_json(&core.outbound, patch_body(&patch), core.config.notify_timeout);
        let result = tokio::select! {
            () = subscriber.cancel.cancelled() => return,
            result = delivery => result,
        };
        match result {
            Ok(()) => {
                let mut held = subscriber.held();
                for removed in &patch.removed {
                    held.remove(removed);
                }
                held.extend(patch.added);
                core.share_held(&subscriber.url, &held);
                drop(held);
                subscriber.acknowledged.notify_waiters();
                retries = Retries::new();
                core.metrics.deliveries_ok.inc();
                if let Some(since) = subscriber.behind().take() {
                    core.metrics.delivery_latency.observe(since.elapsed().as_secs_f64());
                }
            }
            Err(error) => {
                core.metrics.deliveries_failed.inc();
                let failures = retries.failures + 1;
                tracing::debug!(url = %subscriber.url, %error, failures, "patch delivery failed");
                match retries.after_failure(&subscriber.cancel).await {
                    Retry::Again => {}
                    Retry::Cancelled => return,
                    Retry::GiveUp => {
                        core.metrics.deliveries_given_up.inc();
                        tracing::warn!(url = %subscriber.url, %error, failures, "giving up on a patch until the next change");
                        return;
                    }
                }
            }
        }
    }
}

/// The patch that takes a subscriber from holding `held` to holding `desired`.
fn difference(held: &BTreeSet<PatchEntry>, desired: &BTreeSet<PatchEntry>) -> Patch {
    Patch {
        added: desired.difference(held).cloned().collect(),
        removed: held.difference(desired).cloned().collect(),
    }
}

/// What a queue does after a failed delivery.
#[derive(Debug, PartialEq, Eq)]
enum Retry {
    /// Try again: the wait is over.
    Again,
    /// [`MAX_ATTEMPTS`] failed in a row: wait for the next change.
    GiveUp,
    /// The queue was stopped while waiting.
    Cancelled,
}

/// A queue's failures in a row, and its backoff: backon's exponential schedule with jitter
/// (each wait is its step plus up to as much again, so queues failing together do not retry in
/// lockstep), from 50 ms doubling to 2.5 s.
struct Retries {
    failures: u32,
    delays: ExponentialBackoff,
}

impl Retries {
    fn new() -> Self {
        let delays = ExponentialBuilder::new()
            .with_min_delay(FIRST_RETRY_STEP)
            .with_max_delay(MAX_RETRY_STEP)
            .with_jitter()
            .with_max_times(MAX_ATTEMPTS as usize - 1)
            .build();
        Self { failures: 0, delays }
    }

    /// Counts a failure, then waits before the next attempt (or says to give up).
    async fn after_failure(&mut self, cancel: &CancellationToken) -> Retry {
        self.failures += 1;
        let Some(delay) = self.delays.next() else {
            return Retry::GiveUp;
        };
        tokio::select! {
            () = cancel.cancelled() => Retry::Cancelled,
            () = tokio::time::sleep(delay) => Retry::Again,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, url: &str) -> PatchEntry {
        PatchEntry {
            name: name.to_owned(),
            url: url.to_owned(),
        }
    }

    #[test]
    fn difference_adds_missing_and_removes_stale() {
        let held = BTreeSet::from([entry("A", "http://1"), entry("A", "http://2")]);
        let desired = BTreeSet::from([entry("A", "http://2"), entry("B", "http://3")]);
        let patch = difference(&held, &desired);
        assert_eq!(patch.added, [entry("B", "http://3")]);
        assert_eq!(patch.removed, [entry("A", "http://1")]);
        assert!(difference(&desired, &desired).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_queue_backs_off_doubling_then_gives_up_after_the_last_attempt() {
        let cancel = CancellationToken::new();
        let mut retries = Retries::new();
        let mut step = FIRST_RETRY_STEP;
        for attempt in 1..MAX_ATTEMPTS {
            let started = tokio::time::Instant::now();
            assert_eq!(retries.after_failure(&cancel).await, Retry::Again, "attempt {attempt}");
            let waited = started.elapsed();
            // Jitter adds less than a step; tokio's timer rounds a wait up to its millisecond, so
            // a step plus 99.9 % of another is 2 steps to the clock.
            assert!(
                waited >= step && waited <= step * 2,
                "after failure {attempt}: waited {waited:?}, not in [{step:?}, {:?}]",
                step * 2
            );
            step = (step * 2).min(MAX_RETRY_STEP);
        }
        let started = tokio::time::Instant::now();
        assert_eq!(retries.after_failure(&cancel).await, Retry::GiveUp);
        assert_eq!(started.elapsed(), Duration::ZERO, "giving up does not wait");
        assert_eq!(retries.failures, MAX_ATTEMPTS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_queue_stops_waiting_at_once() {
        let cancel = CancellationToken::new();
        let mut retries = Retries::new();
        let waiting = tokio::spawn({
            let cancel = cancel.clone();
            async move { retries.after_failure(&cancel).await }
        });
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        cancel.cancel();
        assert_eq!(waiting.await.expect("joined"), Retry::Cancelled);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
