//! The catalog's event log: what `GET /v1/events` streams.
//!
//! Every registration, deregistration and state change becomes a [`CatalogEvent`] with an id,
//! appended while the catalog's write lock is held, so ids follow the catalog's order. The last
//! [`RETAINED_EVENTS`] are kept so that a client reconnecting with `Last-Event-ID` resumes
//! without a gap; a client whose id is no longer retained (or who has none) starts from a
//! `reset` carrying the whole catalog. Ids start at the time in microseconds, so ids from before
//! a restart are never mistaken for current ones: such a client gets a reset. A node over etcd
//! that had to read the catalog whole again sends every stream a reset ([`EventLog::reset`]).

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
}

impl EventLog {
    /// An empty log whose first event gets id `first_id + 1`.
    pub fn new(first_id: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                retained: VecDeque::with_capacity(RETAINED_EVENTS),
                last_id: first_id,
            }),
            live: broadcast::Sender::new(LIVE_BUFFER),
        }
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
            inner.last_id += 1;
            let numbered = (inner.last_id, event);
            if inner.retained.len() == RETAINED_EVENTS {
                inner.retained.pop_front();
            }
            inner.retained.push_back(numbered.clone());
            let _ = self.live.send(numbered); // nobody listening is fine
        }
    }

    /// Starts over from `catalog` as it is now: a `reset` carrying the whole catalog, sent to
    /// every stream and retained alone, so that a client resuming from any older id gets it
    /// too. For a catalog that had to be read whole again (a node whose etcd watch fell behind
    /// etcd's compaction): the changes in between are not known one by one. Call it with the
    /// catalog's write lock held.
    pub fn reset(&self, catalog: &Catalog) {
        let mut inner = self.lock();
        inner.last_id += 1;
        let numbered = (
            inner.last_id,
            CatalogEvent::Reset {
                services: catalog.services(false),
            },
        );
        inner.retained.clear();
        inner.retained.push_back(numbered.clone());
        let _ = self.live.send(numbered); // nobody listening is fine
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
        let oldest = inner.retained.front().map_or(inner.last_id + 1, |(id, _)| *id);
        let first = match last_seen {
            // Resumable: nothing between the client's id and the oldest retained one was dropped.
            Some(seen) if seen + 1 >= oldest && seen <= inner.last_id => {
                inner.retained.iter().filter(|(id, _)| *id > seen).cloned().collect()
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
        let catalog = Catalog::new(
            HealthPolicy {
                tries: 3,
                deregister_critical_after: std::time::Duration::from_secs(60),
            },
            Limits {
                instances: 10,
                per_service: 10,
            },
            1_000,
        );
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
}
