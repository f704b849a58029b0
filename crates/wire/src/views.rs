//! rollcall's own JSON views: what `GET /v1/services` answers, and the error body every
//! rollcall endpoint uses.
//!
//! Field names are `snake_case`; times are RFC 3339 strings in UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The health of one instance, as the registry's probes last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Registered through `/v1/instances` and not yet proven alive: no probe has passed yet, so
    /// dependents do not hold it. Its first probe comes at once.
    Pending,
    /// Its last probe answered; dependents hold it.
    Passing,
    /// Its recent probes failed, but fewer than the configured tries; dependents still hold it.
    Suspect,
    /// Enough consecutive probes failed: removed from discovery until it answers again.
    Critical,
    /// Taken out of rotation by its owner or an operator (`POST /v1/instances/{id}/drain`):
    /// dependents were sent `Removed`, while it keeps serving what it has in flight. Probes go
    /// on; enough failures in a row make it critical.
    Draining,
}

impl InstanceState {
    /// True when dependents should hold the instance (passing or suspect).
    pub fn is_discoverable(self) -> bool {
        matches!(self, InstanceState::Passing | InstanceState::Suspect)
    }

    /// The lower-case word used on the wire and in docs.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Passing => "passing",
            InstanceState::Suspect => "suspect",
            InstanceState::Critical => "critical",
            InstanceState::Draining => "draining",
        }
    }
}

/// One registered instance, as listed by `GET /v1/services` and answered by
/// `GET /v1/instances/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The instance's id: stable for as long as its ServiceURL stays registered, across
    /// re-registrations and registry restarts.
    pub id: String,
    /// The service it provides.
    pub service: String,
    /// The instance's ServiceURL: its identity.
    pub url: String,
    /// Its health.
    pub state: InstanceState,
    /// Where it is probed.
    pub heartbeat_url: String,
    /// Where it is sent patches.
    pub update_url: String,
    /// The services it requires.
    pub required_services: Vec<String>,
    /// When it (last) registered.
    pub registered_at: String,
    /// When its last probe finished; `None` before the first probe.
    pub last_check_at: Option<String>,
    /// Why its last probe failed; `None` when it passed or none ran yet.
    pub last_error: Option<String>,
    /// The details of the last failed probe (the connection error, the timeout), shown to
    /// admin tokens only (`GET /v1/instances/{id}`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_detail: Option<String>,
    /// Failed probes in a row (0 when passing).
    pub consecutive_failures: u32,
    /// Free-form labels given at registration through `/v1/instances` (empty for seed ones).
    pub metadata: BTreeMap<String, String>,
    /// How it is checked (`{"kind":"http"}` with the registry's defaults unless the
    /// registration chose otherwise).
    #[serde(default)]
    pub check: crate::CheckView,
    /// Where it is sent configuration releases, when it asked (`/v1` registrations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_update_url: Option<String>,
}

/// One service and its instances, as answered by `GET /v1/services/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// The service name.
    pub name: String,
    /// Its instances, ordered by URL.
    pub instances: Vec<InstanceView>,
}

/// Every service, as answered by `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServicesView {
    /// Services ordered by name.
    pub services: Vec<ServiceView>,
}

impl ServicesView {
    /// The instances of `name`, if it is listed.
    pub fn service(&self, name: &str) -> Option<&ServiceView> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// The registry nodes sharing one catalog, as answered by `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesView {
    /// The id of the node that answered.
    #[serde(rename = "self")]
    pub this: String,
    /// Whether the answering node holds its place among the live nodes (false while it cannot
    /// reach etcd: it then probes and pushes nothing).
    pub live: bool,
    /// The live nodes as the answering node sees them, ordered by id.
    pub nodes: Vec<NodeView>,
}

/// One live registry node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Its id, new at every start.
    pub id: String,
    /// The base URL it serves at.
    pub url: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its share: the instances of the catalog it probes.
    pub instances: usize,
}

/// One change in the catalog, as `GET /v1/events` streams it (the SSE `event:` field is the
/// `type`; the `id:` field is its position in the stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CatalogEvent {
    /// The whole catalog: sent first when a stream cannot resume where the client left off.
    Reset {
        /// Every service with its instances.
        services: Vec<ServiceView>,
    },
    /// An instance registered (or re-registered).
    Registered {
        /// The instance as registered.
        instance: InstanceView,
    },
    /// An instance left the catalog.
    Deregistered {
        /// The instance as it was last listed.
        instance: InstanceView,
        /// True when the registry removed it for staying critical too long.
        reaped: bool,
    },
    /// An instance's health state changed.
    StateChanged {
        /// The instance after the change.
        instance: InstanceView,
        /// The state before.
        from: InstanceState,
    },
}

impl CatalogEvent {
    /// The `type` word, used as the SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            CatalogEvent::Reset { .. } => "reset",
            CatalogEvent::Registered { .. } => "registered",
            CatalogEvent::Deregistered { .. } => "deregistered",
            CatalogEvent::StateChanged { .. } => "state_changed",
        }
    }
}

/// The body of every rollcall error answer: a stable machine-readable `error` code and a
/// sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code such as `invalid_json` or `not_found`.
    pub error: String,
    /// What is wrong, in words.
    pub message: String,
}
