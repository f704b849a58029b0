//! The words the catalog is spoken to in ([`Command`]) and answers with ([`Event`],
//! [`CommandError`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use rollcall_wire::{Check, InstanceState, InstanceView, PatchEntry, Registration};

use super::{Actor, InstanceId, ProbeFailure, Registrant, StoreOp, StoredInstance};

/// A registration's own parts, as [`Catalog::apply`](super::Catalog::apply) hands them on.
pub(super) struct NewInstance {
    pub(super) registration: Registration,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) check: Check,
    pub(super) config_url: Option<String>,
    pub(super) registrant: Registrant,
    /// The public id it gets if its ServiceURL is new.
    pub(super) public_id: String,
    pub(super) proven: bool,
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
        /// How it is checked (the default, an HTTP check, for seed registrations).
        check: Check,
        /// Where it is sent configuration releases (`/v1` registrations only).
        config_url: Option<String>,
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
    /// Record a renewal of the TTL-checked instance with this ServiceURL: a passing check.
    Renew {
        /// The ServiceURL.
        url: String,
        /// Who renews (the owner or an admin may).
        by: Actor,
        /// When the renewal arrived.
        at: SystemTime,
    },
    /// Record that TTL-checked registration `id` was not renewed in time (a failed check),
    /// unless a check was recorded after `seen`, the last one its timer saw: a renewal that
    /// raced the timer wins.
    Expire {
        /// The ServiceURL.
        url: String,
        /// The registration the timer runs for.
        id: InstanceId,
        /// The instance's `last_check_at` when the timer ran out.
        seen: Option<SystemTime>,
        /// What to list as the failure.
        failure: ProbeFailure,
        /// When the timer ran out.
        at: SystemTime,
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
    /// Take in a change another registry node made to the shared store (see `state::replica`).
    Replicate(StoreOp),
    /// Hold exactly what the shared store holds (after this node lost track of its changes).
    Resync(Vec<StoredInstance>),
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
    /// A TTL-checked instance renewed itself (a passing check, whatever its state was).
    Renewed {
        /// Its ServiceURL.
        url: String,
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
    /// A renewal for an instance that is not TTL-checked.
    #[error("{url} is checked by {kind}, not by TTL: only TTL-checked instances renew")]
    NotTtl {
        /// The ServiceURL.
        url: String,
        /// How it is checked.
        kind: &'static str,
    },
    /// The service has as many instances as one service may.
    #[error("{service} has {limit} instances, as many as one service may have (--max-instances-per-service)")]
    TooManyOfService {
        /// The service.
        service: String,
        /// The limit.
        limit: usize,
    },
}
