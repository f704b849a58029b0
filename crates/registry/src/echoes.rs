//! A node's own changes to a shared catalog, waiting for their place in the shared order.
//!
//! Over etcd, the events and indexes every node shows follow etcd's revisions, so that a client
//! moving from one node to another resumes its blocking query or event stream where it was. A
//! node applies its own change at once (it answers only once etcd committed it), but the change's
//! revision is known only when etcd's watch brings the write back, in order with every other
//! node's changes. Until then the change's events wait here, under each key the write names
//! (`crate::store::shared_key`); the first of its keys to come back takes them, with its
//! revision. A write etcd refused takes its events back ([`Echoes::forget`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rollcall_wire::CatalogEvent;

use crate::state::StoreOp;

/// One change's events, waiting for its revision.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// Its events, described when it was applied.
    pub described: Vec<CatalogEvent>,
    /// The services whose listing it changed.
    pub services: Vec<String>,
    /// Its keys, to take it back from.
    keys: Vec<String>,
    taken: AtomicBool,
}

/// The changes waiting, by key, in the order they were written.
#[derive(Debug, Default)]
pub(crate) struct Echoes {
    waiting: Mutex<HashMap<String, VecDeque<Arc<Waiting>>>>,
}

impl Echoes {
    /// Keeps `described` and `services` until one of the keys `ops` write comes back; `None`
    /// when they write none that comes back.
    pub fn wait(&self, ops: &[StoreOp], described: Vec<CatalogEvent>, services: Vec<String>) -> Option<Arc<Waiting>> {
        let keys: Vec<String> = ops.iter().filter_map(crate::store::shared_key).collect();
        if keys.is_empty() {
            return None;
        }
        let waiting = Arc::new(Waiting {
            described,
            services,
            keys,
            taken: AtomicBool::new(false),
        });
        let mut by_key = self.lock();
        for key in &waiting.keys {
            by_key.entry(key.clone()).or_default().push_back(Arc::clone(&waiting));
        }
        Some(waiting)
    }

    /// The change whose write of `key` came back, unless another of its keys came back first.
    pub fn echoed(&self, key: &str) -> Option<Arc<Waiting>> {
        let mut by_key = self.lock();
        let queue = by_key.get_mut(key)?;
        let first = queue.pop_front();
        if queue.is_empty() {
            by_key.remove(key);
        }
        first.filter(|waiting| !waiting.taken.swap(true, Ordering::AcqRel))
    }

    /// Takes back the change `waiting`, whose write etcd did not commit.
    pub fn forget(&self, waiting: &Arc<Waiting>) {
        waiting.taken.store(true, Ordering::Release);
        let mut by_key = self.lock();
        for key in &waiting.keys {
            if let Some(queue) = by_key.get_mut(key) {
                queue.retain(|other| !Arc::ptr_eq(other, waiting));
                if queue.is_empty() {
                    by_key.remove(key);
                }
            }
        }
    }

    /// Forgets every change waiting: the catalog was read whole again, and event streams
    /// start over from it (their echoes may never come: etcd compacted them away).
    pub fn clear(&self) {
        for waiting in self.lock().drain().flat_map(|(_, queue)| queue) {
            waiting.taken.store(true, Ordering::Release);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Arc<Waiting>>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SharedHealth;

    fn health(url: &str) -> StoreOp {
        StoreOp::Health(SharedHealth {
            url: url.to_owned(),
            state: rollcall_wire::InstanceState::Passing,
            checked_at: None,
        })
    }

    fn services(waiting: Option<Arc<Waiting>>) -> Option<Vec<String>> {
        waiting.map(|w| w.services.clone())
    }

    #[test]
    fn a_change_is_taken_once_by_the_first_of_its_keys_to_come_back_in_write_order() {
        let echoes = Echoes::default();
        let both = vec![StoreOp::Delete("http://a".to_owned()), health("http://a")];
        echoes.wait(&both, Vec::new(), vec!["first".to_owned()]).expect("waits");
        echoes
            .wait(&[health("http://a")], Vec::new(), vec!["second".to_owned()])
            .expect("waits");
        assert_eq!(
            services(echoes.echoed("health/http://a")),
            Some(vec!["first".to_owned()])
        );
        assert_eq!(services(echoes.echoed("catalog/http://a")), None, "taken already");
        assert_eq!(
            services(echoes.echoed("health/http://a")),
            Some(vec!["second".to_owned()])
        );
        assert!(echoes.echoed("health/http://a").is_none());
    }

    #[test]
    fn a_refused_write_takes_its_change_back_and_a_write_of_holdings_alone_waits_for_nothing() {
        let echoes = Echoes::default();
        let refused = echoes
            .wait(&[health("http://a")], Vec::new(), Vec::new())
            .expect("waits");
        echoes.forget(&refused);
        assert!(echoes.echoed("health/http://a").is_none());
        let held = StoreOp::Held(crate::state::SharedHeld {
            url: "http://a".to_owned(),
            held: std::collections::BTreeSet::new(),
        });
        assert!(echoes.wait(&[held], Vec::new(), Vec::new()).is_none());
    }

    #[test]
    fn a_catalog_read_whole_again_forgets_every_change_waiting() {
        let echoes = Echoes::default();
        echoes
            .wait(&[health("http://a")], Vec::new(), Vec::new())
            .expect("waits");
        echoes.clear();
        assert!(echoes.echoed("health/http://a").is_none());
        assert!(echoes.lock().is_empty());
    }
}
