//! Push notifications: one ordered, coalescing delivery queue per subscriber.
//!
//! A subscriber is a registered instance that requires other services. Its queue is a task that
//! holds what the subscriber is known to hold (`held`: the providers it acknowledged) and, when
//! woken, sends the difference between that and what it should hold now (computed from the
//! catalog). Because the patch is always computed from the current catalog:
//! - changes that pile up while a subscriber is slow are coalesced (an instance added then removed
//!   before delivery is never sent at all);
//! - a subscriber is never sent a patch that repeats what it already holds;
//! - a slow or dead subscriber only ever delays its own task, never another's.
//!
//! A failed delivery is retried with exponential backoff and jitter, at most
//! [`MAX_ATTEMPTS`] times in a row; after that the queue waits for the next change (or for the
//! subscriber to pass a health check again) and then sends everything it missed in one patch.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;
use rollcall_wire::{Patch, PatchEntry, Registration};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::outbound::{PatchConnection, patch_body};
use crate::state::InstanceId;

/// Delivery attempts in a row before a queue stops retrying until the next change.
pub const MAX_ATTEMPTS: u32 = 8;
/// Delay before the first retry; it doubles with each further failure.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between two retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// The delivery queues of every subscriber, keyed by the subscriber's ServiceURL.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    subscribers: Arc<Subscribers>,
}

type Subscribers = Mutex<HashMap<String, Arc<Subscriber>>>;

#[derive(Debug)]
struct Subscriber {
    /// The registration this queue serves; a newer registration of the URL replaces the queue.
    id: InstanceId,
    url: String,
    /// Parsed once: parsing on every delivery showed up in the fan-out profile.
    update_url: reqwest::Url,
    required: Vec<String>,
    /// The providers the subscriber acknowledged holding.
    held: Mutex<BTreeSet<PatchEntry>>,
    /// When the oldest change the subscriber does not hold yet happened; `None` when it is
    /// up to date (as far as the queue knows).
    behind_since: Mutex<Option<Instant>>,
    wake: Notify,
    cancel: CancellationToken,
}

impl Notifier {
    /// Starts the queue of registration `id`, whose subscriber already holds `held` (the patch
    /// its registration callback delivered). Replaces the queue of any older registration of the
    /// same URL; a registration that requires nothing gets no queue.
    pub fn subscribe(&self, core: &Arc<Core>, registration: &Registration, id: InstanceId, held: BTreeSet<PatchEntry>) {
        let url = &registration.service_url;
        let mut subscribers = lock(&self.subscribers);
        if subscribers.get(url).is_some_and(|s| s.id > id) {
            return; // a newer registration of this URL got here first
        }
        if let Some(old) = subscribers.remove(url) {
            old.cancel.cancel();
        }
        if registration.required_services.is_empty() {
            return;
        }
        let Ok(update_url) = reqwest::Url::parse(&registration.service_update_url) else {
            tracing::warn!(%url, "unparsable ServiceUpdateURL; no notifications"); // validated on registration
            return;
        };
        let subscriber = Arc::new(Subscriber {
            id,
            url: url.clone(),
            update_url,
            required: registration.required_services.clone(),
            held: Mutex::new(held),
            behind_since: Mutex::new(Some(Instant::now())),
            wake: Notify::new(),
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
    let mut connection = PatchConnection::new(subscriber.update_url.clone());
    loop {
        tokio::select! {
            () = subscriber.cancel.cancelled() => return,
            () = subscriber.wake.notified() => {}
        }
        if core.catalog().current(&subscriber.url, subscriber.id).is_none() {
            return;
        }
        deliver_until_current(&core, &subscriber, &mut connection).await;
    }
}

async fn deliver_until_current(core: &Core, subscriber: &Subscriber, connection: &mut PatchConnection) {
    let mut failures = 0;
    loop {
        let desired = core.catalog().providers_of(&subscriber.required);
        let patch = difference(&subscriber.held(), &desired);
        if patch.is_empty() {
            *subscriber.behind() = None;
            return;
        }
        let delivery = connection.post_json(&core.http, patch_body(&patch), core.config.notify_timeout);
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
                drop(held);
                failures = 0;
                core.metrics.deliveries_ok.inc();
                if let Some(since) = subscriber.behind().take() {
                    core.metrics.delivery_latency.observe(since.elapsed().as_secs_f64());
                }
            }
            Err(error) => {
                failures += 1;
                core.metrics.deliveries_failed.inc();
                if failures >= MAX_ATTEMPTS {
                    core.metrics.deliveries_given_up.inc();
                    tracing::warn!(url = %subscriber.url, %error, failures, "giving up on a patch until the next change");
                    return;
                }
                tracing::debug!(url = %subscriber.url, %error, failures, "patch delivery failed; retrying");
                tokio::select! {
                    () = subscriber.cancel.cancelled() => return,
                    () = tokio::time::sleep(retry_delay(failures)) => {}
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

/// Exponential backoff with "equal jitter": half the delay fixed, half random, so that queues
/// failing together do not retry in lockstep.
fn retry_delay(failures: u32) -> Duration {
    let exponential = FIRST_RETRY_DELAY.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let delay = exponential.min(MAX_RETRY_DELAY);
    delay / 2 + rand::rng().random_range(Duration::ZERO..=delay / 2)
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

    #[test]
    fn retry_delays_grow_and_stay_bounded() {
        for failures in 1..=MAX_ATTEMPTS * 4 {
            let delay = retry_delay(failures);
            let full = FIRST_RETRY_DELAY
                .saturating_mul(1 << (failures - 1).min(16))
                .min(MAX_RETRY_DELAY);
            assert!(
                delay >= full / 2 && delay <= full,
                "{failures}: {delay:?} not within [{:?}, {full:?}]",
                full / 2
            );
        }
    }
}
