//! The catalog's persistence, behind one small trait: [`CatalogStore`].
//!
//! The catalog (`crate::state`) decides what survives a restart ([`StoredInstance`]) and which
//! changes a command makes to it ([`StoreOp`]); a store only keeps them. Every backend
//! promises the same, and passes the same contract suite (`contract`, in tests):
//! - [`CatalogStore::write`] never blocks; its [`Durable`] answers `Ok` only once the batch is
//!   on disk (or, for a replicated backend, committed), so that an acknowledged change survives
//!   `kill -9`;
//! - a batch is kept whole or not at all, and batches take effect in the order they were
//!   queued, so a later write of a ServiceURL always wins;
//! - opening the store reads back every instance whose last acknowledged write was a put.
//!
//! [`RedbStore`] is the embedded backend: one redb file in the data directory, group-committed
//! by a writer thread (`group`). [`EtcdStore`] keeps the catalog in an etcd cluster
//! (`rollcall registry --etcd`), one transaction per group of batches, and feeds each node the
//! changes the others make and the echoes of its own, in etcd's order ([`Feed`]). [`repair`] is what `rollcall repair catalog` runs on a catalog
//! that no longer opens. [`ReleaseStore`] keeps the configuration releases the same way, in a
//! file of their own.

#[cfg(test)]
pub(crate) mod contract;
mod etcd;
mod group;
mod redb;
mod releases;
mod repair;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;

pub use self::etcd::{EtcdArgs, EtcdStore};
pub(crate) use self::etcd::{retry_delays, shared_key};
pub use self::redb::{DATABASE_FILE, RedbStore};
pub use self::releases::{RELEASES_FILE, ReleaseStore};
pub use self::repair::{Repair, repair, salvage};
pub use crate::state::{StoreOp, StoredInstance};

/// Why the catalog could not be read or written. The text is for the registry's log, never for
/// a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(Arc<str>);

impl StoreError {
    /// The error of a write made after the store was closed.
    pub fn closed() -> Self {
        Self::new("cannot write", "the catalog is closed")
    }

    /// An error while doing `context`.
    pub fn new(context: &str, error: impl std::fmt::Display) -> Self {
        Self(format!("{context}: {error}").into())
    }
}

/// A change to a shared catalog made by another registry node, for this node's catalog to take in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(clippy::large_enum_variant, reason = "short-lived, and almost every change is one")]
pub enum Change {
    /// One instance stored or removed.
    One(StoreOp),
    /// The whole catalog as it is now (after this node lost track of the changes).
    All(Vec<StoredInstance>),
    /// A configuration release published through another node.
    Release(Box<crate::releases::StoredRelease>),
    /// The state of a document's rollout, as another node moved it on (or as etcd holds it,
    /// after this node's own change of it was refused).
    Rollout(Box<crate::releases::rollout::DocRollout>),
    /// An instance's report on a release, made to another node.
    Ack(Box<crate::releases::acks::SharedAck>),
    /// A token issued (its JSON) or revoked (`None`) through another node, by id.
    Token(String, Option<Vec<u8>>),
    /// This node's own write of this key (under the prefix: `catalog/{url}`, `health/{url}`)
    /// came back through the watch: its revision is now the shared order's.
    Echo(String),
}

/// A change and the shared store's revision it was made at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fed {
    /// The revision.
    pub revision: u64,
    /// The change.
    pub change: Change,
}

/// The changes made to a shared catalog (by other nodes, and this node's own as they come
/// back), in the order they were made.
pub type Feed = tokio::sync::mpsc::Receiver<Fed>;

/// Where configuration releases are shared with the other nodes of a catalog (etcd): the
/// releases a publish keeps or purges, each acknowledged once the other nodes can read it.
pub trait ShareReleases: Send + Sync + std::fmt::Debug + 'static {
    /// Queues `ops` to be shared; the receiver answers once they are durable where shared.
    fn share(&self, ops: &[crate::releases::ReleaseOp]) -> Durable;

    /// Queues an instance's report on a release to be shared (the newest per instance and
    /// document is kept).
    fn share_ack(&self, ack: &crate::releases::acks::SharedAck) -> Durable;
}

/// Where the token list is shared with the other nodes of a catalog (etcd): each token as its
/// listing and the digest of its text (never the text), under its id.
pub trait ShareTokens: Send + Sync + std::fmt::Debug + 'static {
    /// Queues the token `id` to be shared as `value` (its JSON), or withdrawn (`None`); the
    /// receiver answers once that is durable where shared.
    fn share_token(&self, id: &str, value: Option<Vec<u8>>) -> Durable;
}

/// Waits for a queued batch to be durable.
pub type Durable = oneshot::Receiver<Result<(), StoreError>>;

/// A future a store answers with.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where the catalog is kept durably. See the module docs for what every backend promises.
pub trait CatalogStore: Send + Sync + std::fmt::Debug + 'static {
    /// Queues `ops` to be made durable as one batch, after every batch queued before; the
    /// receiver answers once they are. Never blocks.
    fn write(&self, ops: Vec<StoreOp>) -> Durable;

    /// Makes what is queued durable, then refuses further writes.
    fn close(&self) -> StoreFuture<'_>;
}
