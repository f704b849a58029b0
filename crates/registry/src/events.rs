//! The catalog's event log: what `GET /v1/events` streams.
//!
//! Every registration, deregistration and state change becomes a [`CatalogEvent`] with an id,
//! appended while the catalog's write lock is held, so ids follow the catalog's order. The last
//! [`RETAINED_EVENTS`] are kept so that a client reconnecting with `Last-Event-ID` resumes
//! without a gap; a client whose id is no longer retained (or who has none) starts from a
//! `reset` carrying the whole catalog. Ids start at the time in microseconds, so ids from before
//! a restart are never mistaken for current ones: such a client gets a reset.
//!
//! Over etcd ([`EventLog::start_at`]) an id is the etcd revision of the change times
//! 1,024 plus the event's place among that revision's events, recorded in etcd's order
//! ([`EventLog::record_at`]), so that every node of one catalog numbers a change alike and a
//! client resumes on another node (from the start of the revision it was in). A node that had
//! to read the catalog whole again sends every stream a reset ([`EventLog::reset`]).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use rollcall_wire::CatalogEvent;
use tokio::sync::broadcast;

use crate::state::{Catalog, Event};

/// How many recent events are kept for clients that resume.
pub const RETAINED_EVENTS: usize = 4096;
/// How many events a live stream may fall behind before it is closed (the client then resumes
/// from the retained events).
const LIVE_BUFFER: usize = 1024;

/// An event and its id.
pub type Numbered = (u64, CatalogEvent);

/// The retained events and the live feed.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Numbered>,
}

#[derive(Debug)]
struct Inner {
    retained: VecDeque<Numbered>,
    /// The id of the newest event (the first event gets `last_id + 1`).
    last_id: u64,
    /// Every event up to this id is gone: a client that saw it (or later) can resume.
    evicted_up_to: u64,
    /// Ids are the shared store's revisions (see [`EventLog::start_at`]).
    shared: bool,
}

/// Events one revision of the shared store may number: an event's id is its revision times
/// this, plus its place among the revision's events.
const PER_REVISION: u64 = 1024;

impl EventLog {
    /// An empty log whose first event gets id `first_id + 1`.
    pub fn new(first_id: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                retained: VecDeque::with_capacity(RETAINED_EVENTS),
                last_id: first_id,
                evicted_up_to: first_id,
                shared: false,
            }),
            live: broadcast::Sender::new(LIVE_BUFFER),
        }
    }

    /// Numbers events by the shared store's revisions from now on, the catalog having been read
    /// at `revision`: every node of one catalog gives the events of one change the same ids,
    /// so that a client moving to another node resumes there. Call it before any event.
    pub fn start_at(&self, revision: u64) {
        let mut inner = self.lock();
        inner.shared = true;
        inner.last_id = revision.saturating_mul(PER_REVISION) + (PER_REVISION - 1);
        inner.evicted_up_to = inner.last_id;
    }

    /// What `events` mean for watchers, described while `catalog` is as they left it.
    pub fn describe(catalog: &Catalog, events: &[Event]) -> Vec<CatalogEvent> {
        events
            .iter()
            .filter_map(|event| to_catalog_event(catalog, event))
            .collect()
    }

    /// Appends `described`, the events of the change the shared store made at `revision`.
    pub fn record_at(&self, revision: u64, described: Vec<CatalogEvent>) {
        let mut inner = self.lock();
        let base = revision.saturating_mul(PER_REVISION);
        for (place, event) in (1..).zip(described) {
            // Never back: a correction may come after a later revision was recorded.
            let id = (base + place).max(inner.last_id + 1);
            self.append(&mut inner, (id, event));
        }
    }

    fn append(&self, inner: &mut Inner, numbered: Numbered) {
        inner.last_id = numbered.0;
        if inner.retained.len() == RETAINED_EVENTS
            && let Some((evicted, _)) = inner.retained.pop_front()
        {
            inner.evicted_up_to = evicted;
        }
        inner.retained.push_back(numbered.clone());
        let _ = self.live.send(numbered); // nobody listening is fine
    }

    /// Appends what `events` mean for watchers. Call it with the catalog's write lock held
    /// (`catalog` is the catalog after the change), so that ids follow the catalog's order.
    pub fn record(&self, catalog: &Catalog, events: &[Event]) {
        let mut recorded = events
            .iter()
            .filter_map(|event| to_catalog_event(catalog, event))
            .peekable();
        if recorded.peek().is_none() {
            return;
        }
        let mut inner = self.lock();
        for event in recorded {
            let id = inner.last_id + 1;
            self.append(&mut inner, (id, event));
        }
    }

    /// Starts over from `catalog` as it is now: a `reset` carrying the whole catalog, sent to
    /// every stream and retained alone, so that a client resuming from any older id gets it
    /// too. For a catalog that had to be read whole again (a node whose etcd watch fell behind
    /// etcd's compaction): the changes in between are not known one by one. Call it with the
    /// catalog's write lock held.
    pub fn reset(&self, catalog: &Catalog) {
        let mut inner = self.lock();
        inner.evicted_up_to = inner.last_id;
        inner.retained.clear();
        let id = inner.last_id + 1;
        let reset = CatalogEvent::Reset {
            services: catalog.services(false),
        };
        self.append(&mut inner, (id, reset));
    }

    /// The first events of a stream for a client that last saw `last_seen` (the retained ones
    /// after it, or a reset when it cannot resume), and the live feed from there on. Call it
    /// with the catalog's read lock held (`catalog`), so that a reset and the feed fit together
    /// with no gap.
    pub fn subscribe(
        &self,
        catalog: &Catalog,
        last_seen: Option<u64>,
    ) -> (Vec<Numbered>, broadcast::Receiver<Numbered>) {
        let inner = self.lock();
        let live = self.live.subscribe();
        let first = match last_seen {
            // Resumable: nothing after the client's id was dropped, and (alone) the id is this
            // registry's. An id of another node of a shared catalog resumes from the start of
            // its revision (the nodes may describe one change in different words).
            Some(seen) if seen >= inner.evicted_up_to && (inner.shared || seen <= inner.last_id) => {
                let after = if inner.shared {
                    seen / PER_REVISION * PER_REVISION
                } else {
                    seen
                };
                inner.retained.iter().filter(|(id, _)| *id > after).cloned().collect()
            }
            _ => vec![(
                inner.last_id,
                CatalogEvent::Reset {
                    services: catalog.services(false),
                },
            )],
        };
        (first, live)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn to_catalog_event(catalog: &Catalog, event: &Event) -> Option<CatalogEvent> {
    match event {
        Event::Registered { id, url, .. } => {
            let instance = catalog.current(url, *id)?.view();
            Some(CatalogEvent::Registered { instance })
        }
        Event::Deregistered { view, reaped, .. } => Some(CatalogEvent::Deregistered {
            instance: (**view).clone(),
            reaped: *reaped,
        }),
        Event::StateChanged { id, url, from, .. } => {
            let instance = catalog.current(url, *id)?.view();
            Some(CatalogEvent::StateChanged { instance, from: *from })
        }
        Event::IndexChanged { .. } | Event::ProvidersChanged { .. } | Event::Renewed { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{HealthPolicy, Limits};

    #[tokio::test]
    async fn a_reset_reaches_live_streams_and_every_client_resuming_from_before_it() {
        let catalog = catalog();
        let log = EventLog::new(1_000);
        let (_, mut live) = log.subscribe(&catalog, None);
        log.reset(&catalog);
        let (id, event) = live.recv().await.expect("the live stream gets it");
        assert!(matches!(event, CatalogEvent::Reset { .. }));
        let (resumed, _) = log.subscribe(&catalog, Some(id - 1));
        assert!(
            matches!(resumed.as_slice(), [(_, CatalogEvent::Reset { .. })]),
            "{resumed:?}"
        );
        let (current, _) = log.subscribe(&catalog, Some(id));
        assert!(current.is_empty(), "a client that saw the reset resumes after it");
    }

    fn catalog() -> Catalog {
        Catalog::new(
            HealthPolicy {
                tries: 3,
                deregister_critical_after: std::time::Duration::from_secs(60),
            },
            Limits {
                instances: 10,
                per_service: 10,
            },
            1_000,
        )
    }

    fn reset() -> CatalogEvent {
        CatalogEvent::Reset { services: Vec::new() }
    }

    #[test]
    fn shared_ids_follow_revisions_and_another_nodes_id_resumes_from_the_start_of_its_revision() {
        let (a, b) = (EventLog::new(0), EventLog::new(0));
        a.start_at(10);
        b.start_at(12);
        for log in [&a, &b] {
            log.record_at(13, vec![reset(), reset()]);
            log.record_at(14, vec![reset()]);
        }
        let ids = |log: &EventLog, seen| {
            let (first, _) = log.subscribe(&catalog(), Some(seen));
            first.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
        };
        assert_eq!(ids(&a, 13 * 1024 + 1), [13 * 1024 + 1, 13 * 1024 + 2, 14 * 1024 + 1]);
        assert_eq!(
            ids(&b, 13 * 1024 + 2),
            ids(&a, 13 * 1024 + 2),
            "the same ids on both nodes"
        );
        let (before_b_started, _) = b.subscribe(&catalog(), Some(11 * 1024));
        assert!(matches!(before_b_started.as_slice(), [(_, CatalogEvent::Reset { .. })]));
        // A correction of an older revision never numbers back.
        a.record_at(13, vec![reset()]);
        assert_eq!(ids(&a, 14 * 1024 + 1), [14 * 1024 + 1, 14 * 1024 + 2]);
    }
}
