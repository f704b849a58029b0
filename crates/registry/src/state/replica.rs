//! A catalog shared between registry nodes ([`Catalog::sharing_health`]): what it shares of its
//! own changes (health, apart from registrations), its indexes (the shared store's revisions,
//! [`Catalog::index_at`]), and the changes other nodes made, taken in: [`Command::Replicate`]
//! (one change to the shared store, as its watch delivered it) and [`Command::Resync`] (the
//! whole shared catalog, after the watch lost its place).
//!
//! A replicated change is the registration as stored, not the request that made it, so the
//! catalog does here what the stored form says rather than what a request would have asked:
//! - a put equal to what the catalog holds is nothing (the echo of this node's own write);
//! - a put that differs from what is held only in its state (drained, or the shared health the
//!   node probing it found) puts it in that state;
//! - a put with another public id than the one held is a new registration at that ServiceURL:
//!   the old one leaves, the new one comes, with the stored id;
//! - any other put is a (re-)registration: in its stored state when health is shared, otherwise
//!   pending, like every registration not shown alive here, unless its address is already held
//!   by dependents;
//! - limits and ownership are not checked: the node that accepted the write checked them.
//!
//! [`Command::Replicate`]: super::Command::Replicate
//! [`Command::Resync`]: super::Command::Resync

use std::collections::{BTreeSet, HashSet};

use rollcall_wire::{CheckKind, InstanceState};

use super::{Catalog, Event, NewInstance, SharedHealth, StoreOp, StoredInstance};

impl Catalog {
    /// The catalog of a node that shares its store with other nodes, each probing its own share
    /// of the instances: every health state change is stored (with the state) for the others to
    /// take in, a restore starts each instance in its stored state, and the indexes are the
    /// shared store's revisions (set by [`Self::index_at`], the same on every node).
    #[must_use]
    pub fn sharing_health(mut self) -> Self {
        self.shares_health = true;
        self.last_index = 0;
        self
    }

    /// The health of the instance at `url` to share, when health is shared. Pending is not
    /// shared: it is what every node gives a registration it has no health for, by the same
    /// rule (so a `/v1` registration costs one write, and its first passing probe another).
    pub(super) fn shared_health(&self, url: &str) -> Option<StoreOp> {
        let instance = self
            .instances
            .get(url)
            .filter(|i| self.shares_health && i.state != InstanceState::Pending)?;
        let ttl = instance.check.kind == CheckKind::Ttl;
        Some(StoreOp::Health(SharedHealth {
            url: url.to_owned(),
            state: instance.state,
            checked_at: instance.last_check_at.filter(|_| ttl),
        }))
    }

    /// Moves the index of each of `services` to `revision`, the shared store's revision of the
    /// change that touched them (never back); the [`Event::IndexChanged`] of each that moved.
    pub fn index_at<'a>(&mut self, services: impl IntoIterator<Item = &'a String>, revision: u64) -> Vec<Event> {
        let mut moved = Vec::new();
        for service in services {
            if self.index_of(service) < revision {
                self.indexes.insert(service.clone(), revision);
                moved.push(Event::IndexChanged {
                    service: service.clone(),
                    index: revision,
                });
            }
        }
        self.last_index = self.last_index.max(revision);
        moved
    }

    /// Takes in one change made elsewhere.
    pub(super) fn replicate(&mut self, change: StoreOp) -> Vec<Event> {
        match change {
            StoreOp::Put(stored) => self.replicate_put(stored),
            StoreOp::Delete(url) => self.remove(&url, false).unwrap_or_default(),
            StoreOp::Health(health) => {
                let Some(instance) = self.instances.get_mut(&health.url) else {
                    return Vec::new();
                };
                if health.checked_at.is_some() {
                    instance.last_check_at = health.checked_at;
                }
                let draining = instance.state == InstanceState::Draining;
                self.take_state(&health.url, draining, Some(health.state))
            }
            // What a subscriber holds is the delivery queues' business (the core hands it over).
            StoreOp::Held(_) => Vec::new(),
        }
    }

    /// Makes the catalog hold exactly `all`: each put as [`Self::replicate`] would, and every
    /// instance not in it removed.
    pub(super) fn resync(&mut self, all: Vec<StoredInstance>) -> Vec<Event> {
        let kept: HashSet<String> = all.iter().map(|s| s.registration.service_url.clone()).collect();
        let gone: Vec<String> = self
            .instances
            .keys()
            .filter(|url| !kept.contains(*url))
            .cloned()
            .collect();
        let mut events: Vec<Event> = gone
            .iter()
            .flat_map(|url| self.remove(url, false).unwrap_or_default())
            .collect();
        for stored in all {
            events.extend(self.replicate_put(stored));
        }
        events
    }

    fn replicate_put(&mut self, stored: StoredInstance) -> Vec<Event> {
        let url = stored.registration.service_url.clone();
        let mut events = Vec::new();
        if let Some(held) = self.instances.get(&url).map(super::Instance::stored) {
            if (StoredInstance {
                draining: stored.draining,
                health: stored.health,
                checked_at: stored.checked_at,
                ..held.clone()
            }) == stored
            {
                if let Some(instance) = self.instances.get_mut(&url)
                    && stored.checked_at.is_some()
                {
                    instance.last_check_at = stored.checked_at;
                }
                // Equal (the echo of this node's own write), or another state.
                return self.take_state(&url, stored.draining, stored.health);
            }
            if held.id != stored.id {
                events.extend(self.remove(&url, false).unwrap_or_default());
            }
        }
        let (draining, health, checked_at) = (stored.draining, stored.health, stored.checked_at);
        let new = NewInstance {
            registration: stored.registration,
            metadata: stored.metadata,
            check: stored.check,
            config_url: stored.config_url,
            registrant: stored.registrant,
            public_id: stored.id,
            proven: false,
        };
        events.extend(self.register(new, BTreeSet::new(), stored.registered_at));
        if let Some(instance) = self.instances.get_mut(&url) {
            instance.last_check_at = checked_at;
        }
        events.extend(self.take_state(&url, draining, health));
        events
    }

    /// Puts the instance at `url` in the state stored for it: drained or not, and its shared
    /// health when it has one.
    fn take_state(&mut self, url: &str, draining: bool, health: Option<InstanceState>) -> Vec<Event> {
        let Some(health) = health else {
            return self.drain(url, draining);
        };
        let to = if draining { InstanceState::Draining } else { health };
        let Some(instance) = self.instances.get_mut(url) else {
            return Vec::new();
        };
        let (from, before) = (instance.state, instance.provides());
        if from == to {
            return Vec::new();
        }
        instance.state = to;
        self.changed_events(url, from, before)
    }
}
