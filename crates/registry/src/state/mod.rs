//! The catalog: every registered instance and its health, as a pure state machine.
//!
//! [`Catalog::apply`] takes a [`Command`] and returns the [`Event`]s it caused; it does no I/O
//! and reads no clock (times come in the commands), so every rule here is testable alone. The
//! I/O around it (HTTP handlers, probers, the notifier) reacts to the events after the lock
//! guarding the catalog is released.
//!
//! Five rooms and the tests: this one is the [`Catalog`] and its rules, which all touch the same
//! indexes (reading them side by side is how the invariants below are checked); `queries` what
//! it answers without changing (look-ups, providers, listings); `instance`
//! holds what the catalog keeps of one instance (its registrant and ownership rule, its view,
//! and its durable form, [`StoredInstance`] and [`StoreOp`]: the domain decides what survives a
//! restart, the stores (`crate::store`) only keep it); `command` the words it is spoken to in
//! and answers with ([`Command`], [`Event`], [`CommandError`]); `replica` a catalog shared
//! between registry nodes: what it shares, its indexes, and how the changes other nodes made to
//! the shared store are taken in.
//!
//! Invariants:
//! - an instance is identified by its ServiceURL; registering a URL again replaces its entry;
//! - every (re)registration gets a fresh [`InstanceId`], so results of work started for an older
//!   registration (a probe in flight) are recognised and ignored;
//! - an instance is *discoverable* (held by dependents) while it is passing or suspect, and a
//!   [`Event::ProvidersChanged`] is emitted exactly when a service's discoverable set changes;
//! - an instance is announced only once shown alive: a registration that proved it (the seed's
//!   callback) starts passing, any other starts pending (unless its address is already held),
//!   and a pending instance becomes passing by a passing probe, never suspect;
//! - a probe is any check's outcome: an HTTP or TCP probe, a TTL renewal (passing) or a TTL
//!   that ran out (failing); only the instance's owner renews it, and only a TTL-checked one;
//!   an instance is critical after its check's tries (the policy's when it gives none);
//! - what survives a restart is each registration, whether it was drained, and whether it was
//!   critical (so that a restart never takes for held an instance its dependents were told is
//!   gone); health is probed again (unless health is shared between nodes: then every state
//!   change is stored too);
//! - every [`Event::Registered`] says what the new subscriber already holds: what its
//!   registration delivered, or after a restore what the restored catalog offers it, so that
//!   a restart announces nothing by itself.

mod command;
mod instance;
mod queries;
mod replica;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use rollcall_wire::{CheckKind, InstanceState, PatchEntry, Registration};

use command::NewInstance;
pub use command::{Command, CommandError, Event};
pub use instance::{Actor, Instance, ProbeFailure, Registrant, SharedHealth, SharedHeld, StoreOp, StoredInstance};

/// Identifies one registration of an instance; a re-registration of the same URL gets a new one.
pub type InstanceId = u64;

/// A new public instance id for [`Command::Register`]: 128 random bits as 32 hex digits.
pub fn new_instance_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The rules that turn probe results into states.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    /// Consecutive failures that make an instance critical, unless its check says otherwise.
    pub tries: u32,
    /// How long an instance may stay critical before it is removed for good.
    pub deregister_critical_after: Duration,
}

/// How many instances the catalog admits: a registration of a new ServiceURL past either limit
/// is refused (re-registering a URL already held never is), so that anonymous registrations
/// cannot grow the catalog, and the probing it implies, without end.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Instances in all.
    pub instances: usize,
    /// Instances of one service.
    pub per_service: usize,
}

/// Every registered instance, indexed for the questions the registry asks.
#[derive(Debug)]
pub struct Catalog {
    policy: HealthPolicy,
    limits: Limits,
    instances: HashMap<String, Instance>,
    /// Public instance id → ServiceURL.
    by_instance_id: HashMap<String, String>,
    /// Service name → service URLs of its instances (every state).
    by_service: BTreeMap<String, BTreeSet<String>>,
    /// Required service name → service URLs of the instances that require it.
    dependents: BTreeMap<String, BTreeSet<String>>,
    next_id: InstanceId,
    /// Service name → its index: the catalog-wide change counter at its last change.
    indexes: HashMap<String, u64>,
    /// The catalog-wide change counter.
    last_index: u64,
    /// Service name → its version: a counter value taken whenever anything listed about the
    /// service changes, probe results included (an index moves only when its listing's
    /// instances or states do). Only services with instances have one: versions come from a
    /// counter that is never reused, so a service that comes back cannot meet an old version.
    versions: HashMap<String, u64>,
    /// The counter versions are taken from; never reused, so a version names one listing.
    last_version: u64,
    /// Services changed by the command being applied.
    touched: BTreeSet<String>,
    /// Whether health is stored, for the other nodes sharing the store (see [`Self::sharing_health`]).
    shares_health: bool,
}

impl Catalog {
    /// An empty catalog applying `policy`, whose change counter starts after `first_index` (the
    /// registry passes the time in microseconds, so that indexes keep growing across restarts).
    pub fn new(policy: HealthPolicy, limits: Limits, first_index: u64) -> Self {
        Self {
            policy,
            limits,
            instances: HashMap::new(),
            by_instance_id: HashMap::new(),
            by_service: BTreeMap::new(),
            dependents: BTreeMap::new(),
            next_id: 1,
            indexes: HashMap::new(),
            last_index: first_index,
            versions: HashMap::new(),
            last_version: 0,
            touched: BTreeSet::new(),
            shares_health: false,
        }
    }

    /// Applies `command`, returning what changed.
    pub fn apply(&mut self, command: Command) -> Result<Vec<Event>, CommandError> {
        let result = match command {
            Command::Register {
                registration,
                metadata,
                check,
                config_url,
                by,
                new_instance_id,
                delivered,
                proven,
                at,
            } => self.admits(&registration, &by).map(|()| {
                let new = NewInstance {
                    registration,
                    metadata,
                    check,
                    config_url,
                    registrant: by.registrant,
                    public_id: new_instance_id,
                    proven,
                };
                self.register(new, delivered, at)
            }),
            Command::Deregister { url, by } => match self.instances.get(&url) {
                None => Err(CommandError::UnknownInstance(url)),
                Some(instance) if !by.may_change(&instance.registrant) => Err(CommandError::NotOwner(url)),
                Some(_) => Ok(self.remove(&url, false).unwrap_or_default()),
            },
            Command::Drain { url, by, drain } => match self.instances.get(&url) {
                None => Err(CommandError::UnknownInstance(url)),
                Some(instance) if !by.may_change(&instance.registrant) => Err(CommandError::NotOwner(url)),
                Some(_) => Ok(self.drain(&url, drain)),
            },
            Command::Renew { url, by, at } => match self.instances.get(&url) {
                None => Err(CommandError::UnknownInstance(url)),
                Some(instance) if !by.may_change(&instance.registrant) => Err(CommandError::NotOwner(url)),
                Some(instance) if instance.check.kind != CheckKind::Ttl => Err(CommandError::NotTtl {
                    kind: instance.check.kind.as_str(),
                    url,
                }),
                Some(instance) => {
                    let id = instance.id;
                    let mut events = self.record_probe(&url, id, Ok(()), at);
                    events.push(Event::Renewed { url });
                    Ok(events)
                }
            },
            Command::Expire {
                url,
                id,
                seen,
                failure,
                at,
            } => Ok(match self.current(&url, id) {
                Some(instance) if instance.last_check_at == seen => self.record_probe(&url, id, Err(failure), at),
                _ => Vec::new(),
            }),
            Command::RecordProbe { url, id, outcome, at } => Ok(self.record_probe(&url, id, outcome, at)),
            Command::Replicate(change) => Ok(self.replicate(change)),
            Command::Resync(all) => Ok(self.resync(all)),
        };
        let touched = std::mem::take(&mut self.touched);
        result.map(|mut events| {
            events.extend(touched.into_iter().map(|service| {
                // Shared: 0 until the change's revision is known (`index_at`).
                let index = if self.shares_health { 0 } else { self.index_of(&service) };
                Event::IndexChanged { service, index }
            }));
            events
        })
    }

    /// Whether `registration` by `by` may be applied: a ServiceURL already held when `by` may
    /// change what its registrant registered, a new one while the catalog and the service are
    /// below their [`Limits`].
    pub fn admits(&self, registration: &Registration, by: &Actor) -> Result<(), CommandError> {
        if let Some(existing) = self.instances.get(&registration.service_url) {
            return if by.may_change(&existing.registrant) {
                Ok(())
            } else {
                Err(CommandError::NotOwner(registration.service_url.clone()))
            };
        }
        if self.instances.len() >= self.limits.instances {
            return Err(CommandError::TooManyInstances(self.limits.instances));
        }
        let of_service = self.by_service.get(&registration.service_name).map_or(0, BTreeSet::len);
        if of_service >= self.limits.per_service {
            return Err(CommandError::TooManyOfService {
                service: registration.service_name.clone(),
                limit: self.limits.per_service,
            });
        }
        Ok(())
    }

    fn touch(&mut self, service: &str) {
        // A shared catalog's indexes are the shared store's revisions, set by `index_at`.
        if !self.shares_health {
            self.last_index += 1;
            self.indexes.insert(service.to_owned(), self.last_index);
        }
        self.touched.insert(service.to_owned());
        self.changed(service);
    }

    /// Takes a new version for `service`'s listing.
    fn changed(&mut self, service: &str) {
        self.last_version += 1;
        match self.versions.get_mut(service) {
            Some(version) => *version = self.last_version,
            None => {
                self.versions.insert(service.to_owned(), self.last_version);
            }
        }
    }

    /// Puts instances read back from the store into an empty catalog, each as *passing* until it
    /// is probed (or *draining*, when it was drained), and returns their [`Event::Registered`] events. No provider change is
    /// announced: each subscriber is taken to hold what the restored catalog offers it, and the
    /// probes announce what changed.
    pub fn restore(&mut self, stored: Vec<StoredInstance>) -> Vec<Event> {
        let mut restored = Vec::with_capacity(stored.len());
        for instance in stored {
            let id = self.next_id();
            let url = instance.registration.service_url.clone();
            if self.shares_health {
                let service = [instance.registration.service_name.clone()];
                self.index_at(&service, instance.revision);
            }
            self.index(Instance {
                id,
                instance_id: instance.id,
                registration: instance.registration,
                metadata: instance.metadata,
                check: instance.check,
                config_url: instance.config_url,
                registrant: instance.registrant,
                state: match (instance.draining, instance.health) {
                    (true, _) => InstanceState::Draining,
                    (false, Some(state)) if self.shares_health => state,
                    (false, _) if instance.critical && !self.shares_health => InstanceState::Critical,
                    (false, _) => InstanceState::Passing,
                },
                registered_at: instance.registered_at,
                last_check_at: None,
                last_error: None,
                consecutive_failures: 0,
                critical_since: None,
            });
            restored.push((id, url));
        }
        self.touched.clear();
        restored
            .into_iter()
            .map(|(id, url)| {
                let holds = self.instances.get(&url).map_or_else(BTreeSet::new, |instance| {
                    self.providers_of(&instance.registration.required_services)
                });
                Event::Registered {
                    id,
                    url,
                    replaced: None,
                    holds,
                }
            })
            .collect()
    }

    /// The store operations that make the stored catalog match after `events`.
    pub fn store_ops(&self, events: &[Event]) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        for event in events {
            match event {
                Event::Registered { url, .. } => {
                    ops.extend(self.instances.get(url).map(|i| StoreOp::Put(i.stored())));
                    ops.extend(self.shared_health(url));
                }
                Event::StateChanged { url, from, to, .. } => {
                    // Drained or undrained: stored with the registration; so is critical, in the
                    // embedded store (over etcd the shared health says it), so that a restart
                    // does not take for held an instance its dependents were told is gone.
                    let kept = |state: &InstanceState| {
                        *state == InstanceState::Draining || (*state == InstanceState::Critical && !self.shares_health)
                    };
                    if kept(from) || kept(to) {
                        ops.extend(self.instances.get(url).map(|i| StoreOp::Put(i.stored())));
                    }
                    ops.extend(self.shared_health(url));
                }
                // Shared, so that the node timing the TTL sees renewals made through any node.
                Event::Renewed { url } => ops.extend(self.shared_health(url)),
                Event::Deregistered { url, .. } => ops.push(StoreOp::Delete(url.clone())),
                Event::ProvidersChanged { .. } | Event::IndexChanged { .. } => {}
            }
        }
        ops
    }

    fn next_id(&mut self) -> InstanceId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn register(&mut self, new: NewInstance, delivered: BTreeSet<PatchEntry>, at: SystemTime) -> Vec<Event> {
        let NewInstance {
            registration,
            metadata,
            check,
            config_url,
            registrant,
            public_id,
            proven,
        } = new;
        let url = registration.service_url.clone();
        let before = self.instances.get(&url).and_then(Instance::provides);
        let old = self.unindex(&url);
        let replaced = old.as_ref().map(|old| old.id);
        let instance_id = old.map_or(public_id, |old| old.instance_id);
        // Proven by its callback, or already held by dependents at this address (a re-registration
        // changing its metadata, say): announced as it is. Otherwise it waits for a probe.
        let state = if proven || before.is_some() {
            InstanceState::Passing
        } else {
            InstanceState::Pending
        };

        let id = self.next_id();
        let instance = Instance {
            id,
            instance_id,
            registration,
            metadata,
            check,
            config_url,
            registrant,
            state,
            registered_at: at,
            last_check_at: None,
            last_error: None,
            consecutive_failures: 0,
            critical_since: None,
        };
        let after = instance.provides();
        self.index(instance);

        let mut events = vec![Event::Registered {
            id,
            url,
            replaced,
            holds: delivered,
        }];
        events.extend(providers_changed(before, after));
        events
    }

    fn remove(&mut self, url: &str, reaped: bool) -> Option<Vec<Event>> {
        let old = self.unindex(url)?;
        let mut events = vec![Event::Deregistered {
            id: old.id,
            url: url.to_owned(),
            reaped,
            view: Box::new(old.view()),
        }];
        events.extend(providers_changed(old.provides(), None));
        Some(events)
    }

    /// Drains (or undrains) the instance at `url`: a drained instance is out of rotation whatever
    /// its probes say, until undrained; undraining makes it passing again (a failing instance
    /// shows it at its next probe).
    fn drain(&mut self, url: &str, drain: bool) -> Vec<Event> {
        let Some(instance) = self.instances.get_mut(url) else {
            return Vec::new();
        };
        let (from, before) = (instance.state, instance.provides());
        let to = match (drain, from) {
            (true, _) => InstanceState::Draining,
            (false, InstanceState::Draining) => InstanceState::Passing,
            (false, other) => other,
        };
        if to == from {
            return Vec::new();
        }
        instance.state = to;
        self.changed_events(url, from, before)
    }

    fn record_probe(
        &mut self,
        url: &str,
        id: InstanceId,
        outcome: Result<(), ProbeFailure>,
        at: SystemTime,
    ) -> Vec<Event> {
        let policy = self.policy;
        let Some(instance) = self.instances.get_mut(url).filter(|i| i.id == id) else {
            return Vec::new();
        };
        let tries = instance.check.tries.unwrap_or(policy.tries);
        let before = instance.provides();
        let from = instance.state;
        instance.last_check_at = Some(at);
        match outcome {
            // A drained instance stays out of rotation until it is undrained, whatever its probes
            // say (they are still listed).
            Ok(()) if instance.state == InstanceState::Draining => {
                instance.last_error = None;
                instance.consecutive_failures = 0;
            }
            Err(error) if instance.state == InstanceState::Draining => {
                instance.last_error = Some(error);
                instance.consecutive_failures = instance.consecutive_failures.saturating_add(1);
            }
            Ok(()) => {
                instance.state = InstanceState::Passing;
                instance.last_error = None;
                instance.consecutive_failures = 0;
                instance.critical_since = None;
            }
            Err(error) => {
                instance.last_error = Some(error);
                instance.consecutive_failures = instance.consecutive_failures.saturating_add(1);
                if instance.consecutive_failures >= tries {
                    instance.state = InstanceState::Critical;
                    let since = *instance.critical_since.get_or_insert(at);
                    let critical_for = at.duration_since(since).unwrap_or_default();
                    if critical_for >= policy.deregister_critical_after {
                        return self.remove(url, true).unwrap_or_default();
                    }
                } else if instance.state != InstanceState::Pending {
                    // A pending instance stays unannounced until a probe passes.
                    instance.state = InstanceState::Suspect;
                }
            }
        }
        self.changed_events(url, from, before)
    }

    /// What a change of the instance at `url` caused, from state `from`, held by dependents as
    /// `before`: its state change and its service's listing (a new index), or only a new listing
    /// when the state held (the probe time and failure count are listed too), and the provider
    /// change dependents need.
    fn changed_events(&mut self, url: &str, from: InstanceState, before: Option<PatchEntry>) -> Vec<Event> {
        let Some(instance) = self.instances.get(url) else {
            return Vec::new();
        };
        let (id, to, after) = (instance.id, instance.state, instance.provides());
        let service = instance.registration.service_name.clone();
        let mut events = Vec::new();
        if from == to {
            self.changed(&service);
        } else {
            self.touch(&service);
            events.push(Event::StateChanged {
                id,
                url: url.to_owned(),
                from,
                to,
            });
        }
        events.extend(providers_changed(before, after));
        events
    }

    fn index(&mut self, instance: Instance) {
        self.touch(&instance.registration.service_name.clone());
        let reg = &instance.registration;
        let url = reg.service_url.clone();
        self.by_service
            .entry(reg.service_name.clone())
            .or_default()
            .insert(url.clone());
        for required in &reg.required_services {
            self.dependents.entry(required.clone()).or_default().insert(url.clone());
        }
        self.by_instance_id.insert(instance.instance_id.clone(), url.clone());
        self.instances.insert(url, instance);
    }

    fn unindex(&mut self, url: &str) -> Option<Instance> {
        let old = self.instances.remove(url)?;
        self.touch(&old.registration.service_name.clone());
        self.by_instance_id.remove(&old.instance_id);
        let reg = &old.registration;
        remove_from_index(&mut self.by_service, &reg.service_name, url);
        if !self.by_service.contains_key(&reg.service_name) {
            self.versions.remove(&reg.service_name);
        }
        for required in &reg.required_services {
            remove_from_index(&mut self.dependents, required, url);
        }
        Some(old)
    }
}

/// Removes `url` from `index[key]`, dropping the key when its set empties.
fn remove_from_index(index: &mut BTreeMap<String, BTreeSet<String>>, key: &str, url: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(url);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// The services whose discoverable set changed when one instance went from providing `before`
/// to providing `after`.
fn providers_changed(before: Option<PatchEntry>, after: Option<PatchEntry>) -> Vec<Event> {
    if before == after {
        return Vec::new();
    }
    let mut services: Vec<String> = before.into_iter().chain(after).map(|e| e.name).collect();
    services.dedup();
    services
        .into_iter()
        .map(|service| Event::ProvidersChanged { service })
        .collect()
}
