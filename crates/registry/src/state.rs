//! The catalog: every registered instance and its health, as a pure state machine.
//!
//! [`Catalog::apply`] takes a [`Command`] and returns the [`Event`]s it caused; it does no I/O
//! and reads no clock (times come in the commands), so every rule here is testable alone. The
//! I/O around it (HTTP handlers, probers, the notifier) reacts to the events after the lock
//! guarding the catalog is released.
//!
//! One file on purpose (about 850 lines of code, with ownership, pending and draining; the rest
//! its tests): every rule of the catalog touches the same indexes, and reading them side by side
//! is how the invariants below are checked. Its durable form lives here too ([`StoredInstance`],
//! [`StoreOp`]): the domain decides what survives a restart, and the stores (`crate::store`)
//! only keep it.
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
//! - every [`Event::Registered`] says what the new subscriber already holds: what its
//!   registration delivered, or after a restore what the restored catalog offers it, so that
//!   a restart announces nothing by itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rollcall_wire::{InstanceState, InstanceView, PatchEntry, Registration, ServiceView};
use serde::{Deserialize, Serialize};

/// Identifies one registration of an instance; a re-registration of the same URL gets a new one.
pub type InstanceId = u64;

/// A new public instance id for [`Command::Register`]: 128 random bits as 32 hex digits.
pub fn new_instance_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Who registered an instance. Every call the registry makes for the instance is held to it
/// (the outbound address policy: a registration may only point at its own address), and only
/// it may replace or remove the instance (see [`Registrant::yields_to`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registrant {
    /// The address the registration came from; unknown for instances stored before it was
    /// recorded.
    pub peer: Option<IpAddr>,
    /// The id of the token it presented; none for an anonymous registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Registrant {
    /// True when a change asked by `by` may replace or remove what `self` registered: a
    /// registration made with a token yields only to the same token; an anonymous one to any
    /// request from the same address (the seed's Go services, restarting; or the same service
    /// now presenting a token); one whose registrant was never recorded to anyone.
    /// Administrators override it (see [`Actor`]).
    pub fn yields_to(&self, by: &Registrant) -> bool {
        match (&self.token, self.peer) {
            (Some(token), _) => by.token.as_ref() == Some(token),
            (None, Some(peer)) => by.peer == Some(peer),
            (None, None) => true,
        }
    }
}

/// Who asks for a registration or a deregistration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// What a registration by it records as its registrant.
    pub registrant: Registrant,
    /// An administrator: may replace or remove what anyone registered.
    pub admin: bool,
}

impl Actor {
    fn may_change(&self, owner: &Registrant) -> bool {
        self.admin || owner.yields_to(&self.registrant)
    }
}

/// What survives a restart of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInstance {
    /// The stable instance id.
    pub id: String,
    /// What the instance registered.
    pub registration: Registration,
    /// Labels given through `/v1/instances`.
    pub metadata: BTreeMap<String, String>,
    /// When it (last) registered.
    pub registered_at: SystemTime,
    /// Who registered it (absent in catalogs written before it was recorded).
    #[serde(default)]
    pub registrant: Registrant,
}

/// One change to the stored catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(clippy::large_enum_variant, reason = "short-lived, and most operations are puts")]
pub enum StoreOp {
    /// Insert or replace the instance at its ServiceURL.
    Put(StoredInstance),
    /// Remove the instance at this ServiceURL.
    Delete(String),
}

/// The rules that turn probe results into states.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    /// Consecutive failures that make an instance critical.
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

/// One registered instance and what the registry knows of its health.
#[derive(Debug, Clone)]
pub struct Instance {
    /// This registration's id (internal: a new one for every registration).
    pub id: InstanceId,
    /// The instance's public id: kept for as long as its ServiceURL stays registered.
    pub instance_id: String,
    /// What the instance registered.
    pub registration: Registration,
    /// Labels given at registration.
    pub metadata: BTreeMap<String, String>,
    /// Who registered it.
    pub registrant: Registrant,
    /// Its health.
    pub state: InstanceState,
    /// When it registered.
    pub registered_at: SystemTime,
    /// When its last probe finished.
    pub last_check_at: Option<SystemTime>,
    /// Why its last probe failed.
    pub last_error: Option<ProbeFailure>,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// When it became critical, while it is.
    pub critical_since: Option<SystemTime>,
}

impl Instance {
    fn provides(&self) -> Option<PatchEntry> {
        self.state.is_discoverable().then(|| PatchEntry {
            name: self.registration.service_name.clone(),
            url: self.registration.service_url.clone(),
        })
    }

    /// The instance as `GET /v1/services` lists it.
    pub fn view(&self) -> InstanceView {
        InstanceView {
            id: self.instance_id.clone(),
            service: self.registration.service_name.clone(),
            url: self.registration.service_url.clone(),
            state: self.state,
            heartbeat_url: self.registration.heartbeat_url.clone(),
            update_url: self.registration.service_update_url.clone(),
            required_services: self.registration.required_services.clone(),
            registered_at: rfc3339(self.registered_at),
            last_check_at: self.last_check_at.map(rfc3339),
            last_error: self.last_error.as_ref().map(|e| e.public.clone()),
            last_error_detail: None,
            consecutive_failures: self.consecutive_failures,
            metadata: self.metadata.clone(),
        }
    }

    /// The instance as an administrator sees it: with the details of its last failed probe.
    pub fn admin_view(&self) -> InstanceView {
        InstanceView {
            last_error_detail: self.last_error.as_ref().map(|e| e.detail.clone()),
            ..self.view()
        }
    }

    /// What of the instance survives a restart.
    pub fn stored(&self) -> StoredInstance {
        StoredInstance {
            id: self.instance_id.clone(),
            registration: self.registration.clone(),
            metadata: self.metadata.clone(),
            registered_at: self.registered_at,
            registrant: self.registrant.clone(),
        }
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Why a probe failed: what anyone may read, and the details for administrators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    /// One text for a refused, filtered and silent target (`no answer`), or the status.
    pub public: String,
    /// The error as it happened (`connection refused`, a timeout with its bound, ...).
    pub detail: String,
}

/// A registration's own parts, as [`Catalog::apply`] hands them on.
struct NewInstance {
    registration: Registration,
    metadata: BTreeMap<String, String>,
    registrant: Registrant,
    /// The public id it gets if its ServiceURL is new.
    public_id: String,
    proven: bool,
}

/// A change requested of the catalog.
#[derive(Debug, Clone)]
pub enum Command {
    /// Add an instance, or replace the entry with the same ServiceURL.
    Register {
        /// A validated registration.
        registration: Registration,
        /// Labels (empty for seed registrations).
        metadata: BTreeMap<String, String>,
        /// Who sent it.
        by: Actor,
        /// The public id to give the instance if its ServiceURL is new (a known URL keeps its id).
        new_instance_id: String,
        /// The providers its registration already delivered to it (the seed's callback); empty
        /// when nothing was delivered.
        delivered: BTreeSet<PatchEntry>,
        /// True when the registration itself showed the instance alive (the seed's callback
        /// was answered): it starts passing and is announced at once. Otherwise it starts
        /// [`InstanceState::Pending`] and is announced after its first passing probe.
        proven: bool,
        /// When the registration was accepted.
        at: SystemTime,
    },
    /// Remove the instance with this ServiceURL.
    Deregister {
        /// The ServiceURL.
        url: String,
        /// Who asks.
        by: Actor,
    },
    /// Take the instance with this ServiceURL out of rotation (`drain: true`), or put it back.
    Drain {
        /// The ServiceURL.
        url: String,
        /// Who asks (the owner or an admin may).
        by: Actor,
        /// True to drain, false to undrain.
        drain: bool,
    },
    /// Record the outcome of one probe of registration `id`.
    RecordProbe {
        /// The ServiceURL probed.
        url: String,
        /// The registration the probe was made for.
        id: InstanceId,
        /// `Err` holds why the probe failed.
        outcome: Result<(), ProbeFailure>,
        /// When the probe finished.
        at: SystemTime,
    },
}

/// Something that happened to the catalog, for the I/O around it to react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A registration was accepted (`replaced` holds the id it replaced, if any).
    Registered {
        /// The new registration's id.
        id: InstanceId,
        /// Its ServiceURL.
        url: String,
        /// The replaced registration's id.
        replaced: Option<InstanceId>,
        /// The providers the instance holds already; its delivery queue starts from them.
        holds: BTreeSet<PatchEntry>,
    },
    /// An instance left the catalog: deregistered, or critical for too long (`reaped`).
    Deregistered {
        /// The removed registration's id.
        id: InstanceId,
        /// Its ServiceURL.
        url: String,
        /// True when the registry removed it for staying critical.
        reaped: bool,
        /// The instance as it was last listed.
        view: Box<InstanceView>,
    },
    /// An instance's health state changed.
    StateChanged {
        /// The registration's id.
        id: InstanceId,
        /// Its ServiceURL.
        url: String,
        /// The state before.
        from: InstanceState,
        /// The state now.
        to: InstanceState,
    },
    /// What `GET /v1/services/{service}` answers changed (an instance came, went or changed
    /// state); `index` is the service's new index.
    IndexChanged {
        /// The service name.
        service: String,
        /// Its new index.
        index: u64,
    },
    /// The set of discoverable instances of `service` changed: its dependents need a patch.
    ProvidersChanged {
        /// The service name.
        service: String,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No instance has that ServiceURL.
    #[error("no instance is registered with ServiceURL {0:?}")]
    UnknownInstance(String),
    /// The catalog holds as many instances as it admits.
    #[error("the registry holds {0} instances, as many as it admits (--max-instances)")]
    TooManyInstances(usize),
    /// The instance was registered by someone else (another token, or another address).
    #[error("{0} was registered by another token or address; only it (or an admin token) may replace or remove it")]
    NotOwner(String),
    /// The service has as many instances as one service may.
    #[error("{service} has {limit} instances, as many as one service may have (--max-instances-per-service)")]
    TooManyOfService {
        /// The service.
        service: String,
        /// The limit.
        limit: usize,
    },
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
        }
    }

    /// Applies `command`, returning what changed.
    pub fn apply(&mut self, command: Command) -> Result<Vec<Event>, CommandError> {
        let result = match command {
            Command::Register {
                registration,
                metadata,
                by,
                new_instance_id,
                delivered,
                proven,
                at,
            } => self.admits(&registration, &by).map(|()| {
                let new = NewInstance {
                    registration,
                    metadata,
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
            Command::RecordProbe { url, id, outcome, at } => Ok(self.record_probe(&url, id, outcome, at)),
        };
        let touched = std::mem::take(&mut self.touched);
        result.map(|mut events| {
            events.extend(touched.into_iter().map(|service| {
                let index = self.index_of(&service);
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

    /// The index of `service`: it changes whenever its listing does (0 if it never had an
    /// instance).
    pub fn index_of(&self, service: &str) -> u64 {
        self.indexes.get(service).copied().unwrap_or(0)
    }

    /// The catalog-wide index: it changes whenever any service's does.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The version of `service`'s listing, while it has instances: it changes whenever anything
    /// `GET /v1/services/{name}` shows changes, so an answer encoded at one version can be served
    /// again for as long as the version stays the same.
    pub fn version_of(&self, service: &str) -> Option<u64> {
        self.versions.get(service).copied()
    }

    fn touch(&mut self, service: &str) {
        self.last_index += 1;
        self.indexes.insert(service.to_owned(), self.last_index);
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
    /// is probed, and returns their [`Event::Registered`] events. No provider change is
    /// announced: each subscriber is taken to hold what the restored catalog offers it, and the
    /// probes announce what changed.
    pub fn restore(&mut self, stored: Vec<StoredInstance>) -> Vec<Event> {
        let mut restored = Vec::with_capacity(stored.len());
        for instance in stored {
            let id = self.next_id();
            let url = instance.registration.service_url.clone();
            self.index(Instance {
                id,
                instance_id: instance.id,
                registration: instance.registration,
                metadata: instance.metadata,
                registrant: instance.registrant,
                state: InstanceState::Passing,
                registered_at: instance.registered_at,
                last_check_at: None,
                last_error: None,
                consecutive_failures: 0,
                critical_since: None,
            });
            restored.push((id, url));
        }
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
        events
            .iter()
            .filter_map(|event| match event {
                Event::Registered { url, .. } => self.instances.get(url).map(|i| StoreOp::Put(i.stored())),
                Event::Deregistered { url, .. } => Some(StoreOp::Delete(url.clone())),
                Event::StateChanged { .. } | Event::ProvidersChanged { .. } | Event::IndexChanged { .. } => None,
            })
            .collect()
    }

    /// The instance with public id `instance_id`.
    pub fn instance_by_id(&self, instance_id: &str) -> Option<&Instance> {
        self.instances.get(self.by_instance_id.get(instance_id)?)
    }

    /// The instance registered at `url`.
    pub fn instance(&self, url: &str) -> Option<&Instance> {
        self.instances.get(url)
    }

    /// Registration `id` of `url`, while it is the current one.
    pub fn current(&self, url: &str, id: InstanceId) -> Option<&Instance> {
        self.instances.get(url).filter(|i| i.id == id)
    }

    /// The discoverable providers of each service in `services`: what a dependent should hold.
    pub fn providers_of(&self, services: &[String]) -> BTreeSet<PatchEntry> {
        services
            .iter()
            .filter_map(|name| self.by_service.get(name))
            .flatten()
            .filter_map(|url| self.instances.get(url)?.provides())
            .collect()
    }

    /// service URLs of the instances that require `service`.
    pub fn dependents_of(&self, service: &str) -> impl Iterator<Item = &str> {
        self.dependents.get(service).into_iter().flatten().map(String::as_str)
    }

    /// Every service with its instances, ordered by name then URL; `passing_only` keeps only
    /// passing instances.
    pub fn services(&self, passing_only: bool) -> Vec<ServiceView> {
        self.by_service
            .keys()
            .map(|name| self.service(name, passing_only))
            .collect()
    }

    /// One service and its instances (none when nothing is registered under `name`).
    pub fn service(&self, name: &str, passing_only: bool) -> ServiceView {
        let instances = self
            .by_service
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|url| self.instances.get(url))
            .filter(|i| !passing_only || i.state == InstanceState::Passing)
            .map(Instance::view)
            .collect();
        ServiceView {
            name: name.to_owned(),
            instances,
        }
    }

    /// The state of every instance.
    pub fn states(&self) -> impl Iterator<Item = InstanceState> + '_ {
        self.instances.values().map(|i| i.state)
    }

    /// Number of registered instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
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
        let (id, after, service) = (
            instance.id,
            instance.provides(),
            instance.registration.service_name.clone(),
        );
        self.touch(&service);
        let mut events = vec![Event::StateChanged {
            id,
            url: url.to_owned(),
            from,
            to,
        }];
        events.extend(providers_changed(before, after));
        events
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
                if instance.consecutive_failures >= policy.tries {
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
        let to = instance.state;
        let after = instance.provides();
        let service = instance.registration.service_name.clone();
        let mut events = Vec::new();
        if from == to {
            // The probe time and failure count are listed even when the state holds.
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

#[cfg(test)]
mod tests {
    use super::*;

    const TRIES: u32 = 3;
    const REAP_AFTER: Duration = Duration::from_secs(60);

    fn catalog() -> Catalog {
        catalog_with(Limits {
            instances: 1_000,
            per_service: 1_000,
        })
    }

    fn catalog_with(limits: Limits) -> Catalog {
        Catalog::new(
            HealthPolicy {
                tries: TRIES,
                deregister_critical_after: REAP_AFTER,
            },
            limits,
            1_000,
        )
    }

    #[test]
    fn registrations_past_the_limits_are_refused_but_re_registrations_never_are() {
        let mut c = catalog_with(Limits {
            instances: 3,
            per_service: 2,
        });
        register(&mut c, "A", "http://a1");
        register(&mut c, "A", "http://a2");
        let third_a = c.apply(register_command(registration("A", "http://a3", &[])));
        assert_eq!(
            third_a,
            Err(CommandError::TooManyOfService {
                service: "A".to_owned(),
                limit: 2
            })
        );
        register(&mut c, "B", "http://b1");
        let fourth = c.apply(register_command(registration("C", "http://c1", &[])));
        assert_eq!(fourth, Err(CommandError::TooManyInstances(3)));
        assert_eq!(c.len(), 3, "nothing was added");
        // A URL already held may always register again (a restart of that instance).
        assert!(c.apply(register_command(registration("A", "http://a1", &[]))).is_ok());
        c.apply(Command::Deregister {
            url: "http://b1".to_owned(),
            by: Actor::default(),
        })
        .expect("deregister");
        assert!(
            c.apply(register_command(registration("C", "http://c1", &[]))).is_ok(),
            "room again"
        );
    }

    fn registration(name: &str, url: &str, required: &[&str]) -> Registration {
        Registration {
            service_name: name.to_owned(),
            service_url: url.to_owned(),
            required_services: required.iter().map(|s| (*s).to_owned()).collect(),
            service_update_url: format!("{url}/services"),
            heartbeat_url: format!("{url}/heartbeat"),
        }
    }

    fn register_command(registration: Registration) -> Command {
        Command::Register {
            new_instance_id: format!("id-{}", registration.service_url),
            registration,
            metadata: BTreeMap::new(),
            by: Actor::default(),
            delivered: BTreeSet::new(),
            proven: true,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    /// A `/v1/instances` registration: not proven alive by a callback.
    fn unproven(registration: Registration) -> Command {
        let mut command = register_command(registration);
        if let Command::Register { proven, .. } = &mut command {
            *proven = false;
        }
        command
    }

    fn providers_changes(events: &[Event]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, Event::ProvidersChanged { .. }))
            .count()
    }

    #[test]
    fn an_unproven_registration_is_pending_and_announced_by_its_first_passing_probe() {
        let mut c = catalog();
        let events = c.apply(unproven(registration("A", "http://a", &[]))).expect("register");
        assert_eq!(providers_changes(&events), 0, "nothing announced yet");
        let Some(Event::Registered { id, .. }) = events.first() else {
            panic!("{events:?}")
        };
        assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Pending));
        assert!(
            c.providers_of(&["A".to_owned()]).is_empty(),
            "dependents do not hold it"
        );
        let events = probe(&mut c, "http://a", *id, true, 1);
        assert_eq!(providers_changes(&events), 1, "announced now");
        assert_eq!(c.providers_of(&["A".to_owned()]).len(), 1);
    }

    #[test]
    fn a_pending_instance_that_never_answers_is_never_announced() {
        let mut c = catalog();
        let events = c
            .apply(unproven(registration("A", "http://dead", &[])))
            .expect("register");
        let Some(Event::Registered { id, .. }) = events.first() else {
            panic!("{events:?}")
        };
        for n in 0..5 {
            let events = probe(&mut c, "http://dead", *id, false, n);
            assert_eq!(providers_changes(&events), 0, "probe {n}: {events:?}");
            let state = c.instance("http://dead").map(|i| i.state);
            assert!(
                matches!(state, Some(InstanceState::Pending | InstanceState::Critical)),
                "never suspect (which dependents hold): {state:?}"
            );
        }
        assert_eq!(
            c.instance("http://dead").map(|i| i.state),
            Some(InstanceState::Critical)
        );
    }

    #[test]
    fn a_drained_instance_is_out_of_rotation_whatever_its_probes_say_until_undrained() {
        let mut c = catalog();
        let (id, _) = register(&mut c, "A", "http://a");
        let drain = |drain| Command::Drain {
            url: "http://a".to_owned(),
            by: Actor::default(),
            drain,
        };
        let events = c.apply(drain(true)).expect("drain");
        assert_eq!(providers_changes(&events), 1, "dependents are told at once");
        assert!(c.providers_of(&["A".to_owned()]).is_empty());
        assert!(
            probe(&mut c, "http://a", id, true, 1)
                .iter()
                .all(|e| !matches!(e, Event::StateChanged { .. }))
        );
        for n in 2..8 {
            probe(&mut c, "http://a", id, false, n);
        }
        assert_eq!(
            c.instance("http://a").map(|i| i.state),
            Some(InstanceState::Draining),
            "failures neither"
        );
        assert!(
            c.apply(drain(true)).expect("again").is_empty(),
            "draining twice changes nothing"
        );
        let events = c.apply(drain(false)).expect("undrain");
        assert_eq!(providers_changes(&events), 1, "back in rotation");
        assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Passing));
        let stranger = Command::Drain {
            url: "http://nowhere".to_owned(),
            by: Actor::default(),
            drain: true,
        };
        assert_eq!(
            c.apply(stranger),
            Err(CommandError::UnknownInstance("http://nowhere".to_owned()))
        );
    }

    #[test]
    fn re_registering_a_held_address_unproven_keeps_it_held() {
        let mut c = catalog();
        register(&mut c, "A", "http://a");
        let events = c.apply(unproven(registration("A", "http://a", &[]))).expect("register");
        assert_eq!(providers_changes(&events), 0, "no Removed, no Added: {events:?}");
        assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Passing));
    }

    fn register(c: &mut Catalog, name: &str, url: &str) -> (InstanceId, Vec<Event>) {
        let events = c
            .apply(register_command(registration(name, url, &[])))
            .expect("register");
        let Some(Event::Registered { id, .. }) = events.first() else {
            panic!("no Registered event: {events:?}")
        };
        (*id, events)
    }

    fn probe(c: &mut Catalog, url: &str, id: InstanceId, ok: bool, secs: u64) -> Vec<Event> {
        let outcome = if ok {
            Ok(())
        } else {
            Err(ProbeFailure {
                public: "answered HTTP 503".to_owned(),
                detail: "answered HTTP 503".to_owned(),
            })
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        c.apply(Command::RecordProbe {
            url: url.to_owned(),
            id,
            outcome,
            at,
        })
        .expect("probe")
    }

    fn changed(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::ProvidersChanged { service } => Some(service.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn registering_the_same_url_twice_keeps_one_entry_and_announces_once() {
        let mut c = catalog();
        let (_, first) = register(&mut c, "A", "http://a");
        let (_, again) = register(&mut c, "A", "http://a");
        assert_eq!(changed(&first), ["A"]);
        assert!(
            changed(&again).is_empty(),
            "identical re-registration changes no provider set"
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c.service("A", false).instances.len(), 1);
    }

    #[test]
    fn re_registering_a_url_under_another_name_moves_it() {
        let mut c = catalog();
        register(&mut c, "A", "http://x");
        let (_, events) = register(&mut c, "B", "http://x");
        assert_eq!(changed(&events), ["A", "B"]);
        assert!(c.service("A", false).instances.is_empty());
        assert_eq!(c.services(false).len(), 1, "an emptied service is no longer listed");
    }

    #[test]
    fn failures_below_tries_make_suspect_without_changing_providers() {
        let mut c = catalog();
        let (id, _) = register(&mut c, "A", "http://a");
        for n in 1..TRIES {
            let events = probe(&mut c, "http://a", id, false, u64::from(n));
            assert!(changed(&events).is_empty());
            assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Suspect));
        }
        let events = probe(&mut c, "http://a", id, true, 10);
        assert!(changed(&events).is_empty());
        assert_eq!(c.instance("http://a").map(|i| i.consecutive_failures), Some(0));
    }

    #[test]
    fn tries_failures_make_critical_and_recovery_restores() {
        let mut c = catalog();
        let (id, _) = register(&mut c, "A", "http://a");
        let mut events = Vec::new();
        for n in 1..=TRIES {
            events = probe(&mut c, "http://a", id, false, u64::from(n));
        }
        assert_eq!(changed(&events), ["A"]);
        assert!(c.providers_of(&["A".to_owned()]).is_empty());
        assert_eq!(c.service("A", false).instances[0].state, InstanceState::Critical);
        assert!(c.service("A", true).instances.is_empty(), "?passing hides it");

        let events = probe(&mut c, "http://a", id, true, 20);
        assert_eq!(changed(&events), ["A"]);
        assert_eq!(c.providers_of(&["A".to_owned()]).len(), 1);
    }

    #[test]
    fn critical_for_too_long_is_reaped() {
        let mut c = catalog();
        let (id, _) = register(&mut c, "A", "http://a");
        for n in 1..=TRIES {
            probe(&mut c, "http://a", id, false, u64::from(n));
        }
        assert!(
            probe(&mut c, "http://a", id, false, 30).is_empty(),
            "still within the grace"
        );
        let events = probe(&mut c, "http://a", id, false, u64::from(TRIES) + REAP_AFTER.as_secs());
        assert!(matches!(events.first(), Some(Event::Deregistered { reaped: true, .. })));
        assert!(c.is_empty());
    }

    #[test]
    fn results_for_a_replaced_registration_are_ignored() {
        let mut c = catalog();
        let (old, _) = register(&mut c, "A", "http://a");
        let (new, _) = register(&mut c, "A", "http://a");
        assert_ne!(old, new);
        for n in 0..5 {
            assert!(probe(&mut c, "http://a", old, false, n).is_empty());
        }
        assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Passing));
    }

    fn actor(peer: &str, token: Option<&str>, admin: bool) -> Actor {
        Actor {
            registrant: Registrant {
                peer: Some(peer.parse().expect("ip")),
                token: token.map(str::to_owned),
            },
            admin,
        }
    }

    fn register_as(c: &mut Catalog, url: &str, by: Actor) -> Result<Vec<Event>, CommandError> {
        let mut command = register_command(registration("A", url, &[]));
        if let Command::Register { by: who, .. } = &mut command {
            *who = by;
        }
        c.apply(command)
    }

    fn deregister_as(c: &mut Catalog, url: &str, by: Actor) -> Result<Vec<Event>, CommandError> {
        c.apply(Command::Deregister {
            url: url.to_owned(),
            by,
        })
    }

    #[test]
    fn a_registration_made_with_a_token_is_changed_only_by_that_token_or_an_admin() {
        let mut c = catalog();
        register_as(&mut c, "http://a", actor("10.0.0.1", Some("t1"), false)).expect("register");
        let not_owner = Err(CommandError::NotOwner("http://a".to_owned()));
        assert_eq!(
            register_as(&mut c, "http://a", actor("10.0.0.1", Some("t2"), false)),
            not_owner
        );
        assert_eq!(
            register_as(&mut c, "http://a", actor("10.0.0.1", None, false)),
            not_owner,
            "not even from its address"
        );
        assert_eq!(
            deregister_as(&mut c, "http://a", actor("10.0.0.1", Some("t2"), false)),
            not_owner
        );
        assert_eq!(c.len(), 1, "refusals change nothing");
        assert!(
            register_as(&mut c, "http://a", actor("10.0.0.9", Some("t1"), false)).is_ok(),
            "its token, from anywhere"
        );
        assert!(deregister_as(&mut c, "http://a", actor("10.0.0.2", Some("admin"), true)).is_ok());
        assert!(c.is_empty());
    }

    #[test]
    fn an_anonymous_registration_is_changed_only_from_its_address() {
        let mut c = catalog();
        register_as(&mut c, "http://a", actor("127.0.0.1", None, false)).expect("register");
        let not_owner = Err(CommandError::NotOwner("http://a".to_owned()));
        assert_eq!(
            deregister_as(&mut c, "http://a", actor("127.0.0.2", None, false)),
            not_owner
        );
        assert_eq!(
            register_as(&mut c, "http://a", actor("127.0.0.2", None, false)),
            not_owner
        );
        // The same service restarting, now with a token, takes its registration over.
        register_as(&mut c, "http://a", actor("127.0.0.1", Some("t1"), false)).expect("taken over");
        assert_eq!(
            deregister_as(&mut c, "http://a", actor("127.0.0.1", None, false)),
            not_owner
        );
        assert!(deregister_as(&mut c, "http://a", actor("127.0.0.1", Some("t1"), false)).is_ok());
    }

    #[test]
    fn an_instance_whose_registrant_was_never_recorded_yields_to_anyone() {
        let mut c = catalog();
        c.restore(vec![StoredInstance {
            id: "old".to_owned(),
            registration: registration("A", "http://a", &[]),
            metadata: BTreeMap::new(),
            registered_at: SystemTime::UNIX_EPOCH,
            registrant: Registrant::default(),
        }]);
        assert!(deregister_as(&mut c, "http://a", actor("10.0.0.1", None, false)).is_ok());
    }

    #[test]
    fn unknown_deregistration_is_refused_and_changes_nothing() {
        let mut c = catalog();
        register(&mut c, "A", "http://a");
        let result = c.apply(Command::Deregister {
            url: "http://b".to_owned(),
            by: Actor::default(),
        });
        assert_eq!(result, Err(CommandError::UnknownInstance("http://b".to_owned())));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_url_keeps_its_public_id_across_re_registrations_and_restores() {
        let mut c = catalog();
        register(&mut c, "A", "http://a");
        let mut again = register_command(registration("A", "http://a", &[]));
        if let Command::Register { new_instance_id, .. } = &mut again {
            *new_instance_id = "another".to_owned();
        }
        let events = c.apply(again).expect("register");
        let stored: Vec<StoredInstance> = c
            .store_ops(&events)
            .into_iter()
            .filter_map(|op| match op {
                StoreOp::Put(stored) => Some(stored),
                StoreOp::Delete(_) => None,
            })
            .collect();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].id, "id-http://a");

        let mut restored = catalog();
        let events = restored.restore(stored);
        assert_eq!(events.len(), 1);
        assert!(changed(&events).is_empty(), "a restore announces nothing");
        let instance = restored.instance_by_id("id-http://a").expect("found by id");
        assert_eq!(instance.registration.service_url, "http://a");
    }

    fn holds(events: &[Event]) -> Vec<(String, BTreeSet<PatchEntry>)> {
        events
            .iter()
            .filter_map(|event| match event {
                Event::Registered { url, holds, .. } => Some((url.clone(), holds.clone())),
                _ => None,
            })
            .collect()
    }

    fn entry(name: &str, url: &str) -> PatchEntry {
        PatchEntry {
            name: name.to_owned(),
            url: url.to_owned(),
        }
    }

    #[test]
    fn a_registration_holds_what_its_callback_delivered() {
        let mut c = catalog();
        let mut command = register_command(registration("P", "http://p", &["A"]));
        if let Command::Register { delivered, .. } = &mut command {
            delivered.insert(entry("A", "http://a"));
        }
        let events = c.apply(command).expect("register");
        assert_eq!(
            holds(&events),
            [("http://p".to_owned(), BTreeSet::from([entry("A", "http://a")]))]
        );
    }

    #[test]
    fn an_instance_stored_before_registrants_were_recorded_reads_back_without_one() {
        let mut c = catalog();
        register(&mut c, "A", "http://a");
        let stored = c.instances.get("http://a").expect("registered").stored();
        let mut json = serde_json::to_value(&stored).expect("encodes");
        json.as_object_mut().expect("an object").remove("registrant");
        let read: StoredInstance = serde_json::from_value(json).expect("an older record still reads");
        assert_eq!(read.registrant, Registrant::default());
        assert_eq!(read.registration, stored.registration);
    }

    #[test]
    fn a_restored_subscriber_holds_what_the_restored_catalog_offers_it() {
        let stored = |name: &str, url: &str, required: &[&str]| StoredInstance {
            id: format!("id-{url}"),
            registration: registration(name, url, required),
            metadata: BTreeMap::new(),
            registered_at: SystemTime::UNIX_EPOCH,
            registrant: Registrant::default(),
        };
        let mut c = catalog();
        // The dependent comes back before its providers: it still holds them all.
        let events = c.restore(vec![
            stored("P", "http://p", &["A"]),
            stored("A", "http://a1", &[]),
            stored("A", "http://a2", &[]),
        ]);
        let all = BTreeSet::from([entry("A", "http://a1"), entry("A", "http://a2")]);
        assert_eq!(
            holds(&events),
            [
                ("http://p".to_owned(), all),
                ("http://a1".to_owned(), BTreeSet::new()),
                ("http://a2".to_owned(), BTreeSet::new()),
            ]
        );
    }

    #[test]
    fn a_service_index_moves_only_when_its_listing_does() {
        let mut c = catalog();
        assert_eq!(c.index_of("A"), 0);
        let (id, events) = register(&mut c, "A", "http://a");
        let first = c.index_of("A");
        assert!(first > 1_000);
        assert!(events.contains(&Event::IndexChanged {
            service: "A".to_owned(),
            index: first
        }));

        register(&mut c, "B", "http://b");
        assert_eq!(c.index_of("A"), first, "another service's change leaves A alone");
        assert!(
            probe(&mut c, "http://a", id, true, 1).is_empty(),
            "a passing probe changes nothing"
        );
        assert_eq!(c.index_of("A"), first);

        probe(&mut c, "http://a", id, false, 2);
        assert!(c.index_of("A") > first, "passing -> suspect is a change");
        assert_eq!(c.last_index(), c.index_of("A"));
    }

    #[test]
    fn dependents_are_indexed_by_required_service() {
        let mut c = catalog();
        let reg = registration("Portal", "http://p", &["LogService", "GradingService"]);
        c.apply(register_command(reg)).expect("register");
        assert_eq!(c.dependents_of("GradingService").collect::<Vec<_>>(), ["http://p"]);
        c.apply(Command::Deregister {
            url: "http://p".to_owned(),
            by: Actor::default(),
        })
        .expect("deregister");
        assert_eq!(c.dependents_of("GradingService").count(), 0);
    }

    #[test]
    fn a_service_that_leaves_takes_its_version_along_and_comes_back_with_a_new_one() {
        let mut c = catalog();
        register(&mut c, "A", "http://a");
        let before = c.version_of("A").expect("A has instances");
        for n in 0..100 {
            let url = format!("http://churn/{n}");
            register(&mut c, &format!("Churn{n}"), &url);
            c.apply(Command::Deregister {
                url,
                by: Actor::default(),
            })
            .expect("deregister");
        }
        assert_eq!(
            c.versions.len(),
            1,
            "only A, which still has an instance, keeps a version"
        );
        c.apply(Command::Deregister {
            url: "http://a".to_owned(),
            by: Actor::default(),
        })
        .expect("deregister");
        assert_eq!(c.version_of("A"), None);
        register(&mut c, "A", "http://a");
        assert!(c.version_of("A").expect("A is back") > before, "never an old version");
    }
}
