//! What the catalog keeps of one instance: the [`Instance`] itself and how it is listed, who
//! registered it ([`Registrant`]) and who may change it ([`Actor`]), why its last probe failed
//! ([`ProbeFailure`]), and what of it survives a restart ([`StoredInstance`], [`StoreOp`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;

use rollcall_wire::{Check, InstanceState, InstanceView, PatchEntry, Registration};
use serde::{Deserialize, Serialize};

use super::InstanceId;

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
    pub(super) fn may_change(&self, owner: &Registrant) -> bool {
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
    /// How it is checked (absent for the default HTTP check, and in catalogs written before
    /// checks could be chosen).
    #[serde(default, skip_serializing_if = "is_default")]
    pub check: Check,
    /// Taken out of rotation (`drain`): it comes back draining after a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Critical when last stored: it comes back critical after a restart (its dependents were
    /// told it is gone) until a probe passes. Kept by the embedded store only: over etcd the
    /// shared health says it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
    /// Where it is sent configuration releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_url: Option<String>,
    /// Its health as the node probing it last found it, read back with it from a store shared
    /// between nodes ([`StoreOp::Health`]); never written as part of the instance.
    #[serde(skip)]
    pub health: Option<InstanceState>,
    /// When a TTL-checked instance was last checked, read back the same way.
    #[serde(skip)]
    pub checked_at: Option<SystemTime>,
    /// The shared store's revision of the instance's last change (its registration or its
    /// health, whichever is later), read back with it; 0 from the embedded store.
    #[serde(skip)]
    pub revision: u64,
}

impl StoredInstance {
    /// Instance `id` of `registration`, registered `at`, with nothing else chosen: no metadata,
    /// the default check, not drained, no registrant recorded, nothing read from a shared store.
    pub fn new(id: String, registration: Registration, at: SystemTime) -> Self {
        Self {
            id,
            registration,
            metadata: BTreeMap::new(),
            registered_at: at,
            registrant: Registrant::default(),
            check: Check::default(),
            draining: false,
            critical: false,
            config_url: None,
            health: None,
            checked_at: None,
            revision: 0,
        }
    }
}

fn is_default(check: &Check) -> bool {
    *check == Check::default()
}

/// One change to the stored catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(clippy::large_enum_variant, reason = "short-lived, and most operations are puts")]
pub enum StoreOp {
    /// Insert or replace the instance at its ServiceURL.
    Put(StoredInstance),
    /// Remove the instance at this ServiceURL.
    Delete(String),
    /// The health of the instance at this ServiceURL, as the node probing it found it: kept
    /// apart from the registration (only by stores shared between nodes; the embedded store
    /// keeps no health), so that the probing node's writes never race the writes callers make.
    Health(SharedHealth),
    /// What the subscriber at this ServiceURL acknowledged holding, as the node delivering to it
    /// last knew it (only by stores shared between nodes), so that a node taking its deliveries
    /// over resumes from there.
    Held(SharedHeld),
}

/// What a subscriber acknowledged holding, as shared between the nodes of one catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedHeld {
    /// The subscriber's ServiceURL.
    pub url: String,
    /// The providers it acknowledged.
    pub held: BTreeSet<PatchEntry>,
}

/// An instance's health as shared between the nodes of one catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedHealth {
    /// The ServiceURL.
    pub url: String,
    /// Its state.
    pub state: InstanceState,
    /// When a TTL-checked instance was last checked (renewed, or found expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<SystemTime>,
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
    /// How it is checked.
    pub check: Check,
    /// Where it is sent configuration releases.
    pub config_url: Option<String>,
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
    pub(super) fn provides(&self) -> Option<PatchEntry> {
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
            check: self.check.view(),
            config_update_url: self.config_url.clone(),
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
            metadata: self.metadata.clone(),
            registrant: self.registrant.clone(),
            check: self.check,
            draining: self.state == InstanceState::Draining,
            critical: self.state == InstanceState::Critical,
            config_url: self.config_url.clone(),
            ..StoredInstance::new(self.instance_id.clone(), self.registration.clone(), self.registered_at)
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
