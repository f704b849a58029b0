//! The published configuration: the [`Documents`] behind their lock, the store that keeps their
//! releases, the blocking queries waiting on a document, the feed of changes the streams and
//! webhook queues follow, and what instances reported.
//!
//! Every change (a publish, a rollout's step, a promotion) goes through one path shaped like
//! `Core::apply`: under the write lock the documents change and their store operations are
//! queued (so the disk sees a document's releases in their order); the lock is released; the
//! caller waits until they are durable; only then are the document's watchers woken, its change
//! sent to the feed, and the change acknowledged. So no reader is shown a release a crash could
//! still take back, and no lock is held across I/O. Older releases' contents are read from the
//! store, off the async workers.
//!
//! Over etcd every release is also shared (`ShareReleases`) before the answer, and a release
//! published through another node is taken in ([`Published::take_in`]): kept in this node's
//! file and told to its readers like one published here. So is a rollout's state: written by
//! the node that moved it on, taken in by the others ([`Published::take_rollout`]), so that
//! every node sends the instances attached to it what they are to run. Instances' reports are shared too
//! (without waiting: they are kept in memory only), and taken in ([`Published::take_ack`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::releases::acks::{Acks, Reader, SharedAck};
use crate::releases::rollout::{DocRollout, GrayInstance, Phase, Transition};
use crate::releases::{DocKey, Documents, Draft, ReleaseError, ReleaseOp, StoredRelease};
use crate::store::{ReleaseStore, ShareReleases, StoreError};

/// Why a release was not made, found, or made durable.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The documents refused it, or have no such release.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The store failed: a publish is not acknowledged, a read not answered.
    #[error("the configuration store failed: {0}")]
    Storage(StoreError),
}

/// Past this many watched documents, entries nobody waits on are swept before adding one.
const SWEEP_WATCHES_AT: usize = 1024;

/// The published documents and where they are kept.
#[derive(Debug)]
pub(crate) struct Published {
    documents: RwLock<Documents>,
    store: Arc<ReleaseStore>,
    /// Where releases are shared with the other nodes of a catalog in etcd, if it is.
    shared: Option<Arc<dyn ShareReleases>>,
    /// Blocking queries waiting on one document: its revision in force.
    watches: Mutex<HashMap<DocKey, watch::Sender<u64>>>,
    /// A document whose releases changed (a new one, or a rollout's step), once durable, for
    /// the services' streams.
    live: broadcast::Sender<DocKey>,
    /// True while the rollouts' timer runs.
    pub(crate) rollout_timer: std::sync::atomic::AtomicBool,
    /// What instances reported doing with releases.
    acks: Mutex<Acks>,
}

/// Releases a stream may fall behind by before it is told it lagged (and resynchronises).
const LIVE_CAPACITY: usize = 1024;

impl Published {
    /// The documents read back from `store`, sharing releases through `shared` when given.
    pub fn new(store: ReleaseStore, documents: Documents, shared: Option<Arc<dyn ShareReleases>>) -> Self {
        Self {
            documents: RwLock::new(documents),
            store: Arc::new(store),
            shared,
            watches: Mutex::new(HashMap::new()),
            live: broadcast::Sender::new(LIVE_CAPACITY),
            rollout_timer: std::sync::atomic::AtomicBool::new(false),
            acks: Mutex::new(Acks::default()),
        }
    }

    /// Reads the documents. The guard must be dropped before any `.await`.
    pub fn documents(&self) -> RwLockReadGuard<'_, Documents> {
        // `Documents::publish` checks everything before it changes anything, so a poisoned lock
        // still guards whole documents.
        self.documents.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `draft` as the next release of `key`, and answers once it is on disk.
    pub async fn publish(&self, key: &DocKey, draft: Draft) -> Result<Arc<StoredRelease>, PublishError> {
        self.change(key, |documents| documents.publish(key, draft)).await
    }

    /// Applies `change` to the documents under the write lock, queues the store operations it
    /// returns, and once they are durable tells the document's readers; returns what `change`
    /// returned.
    async fn change<T>(
        &self,
        key: &DocKey,
        change: impl FnOnce(&mut Documents) -> Result<(T, Vec<ReleaseOp>), ReleaseError>,
    ) -> Result<T, PublishError> {
        let (answer, shared, durable) = {
            let mut documents = self.documents_mut();
            let (answer, ops) = change(&mut documents)?;
            let shared = self.shared.as_ref().filter(|_| !ops.is_empty()).map(|s| s.share(&ops));
            (answer, shared, (!ops.is_empty()).then(|| self.store.write(ops)))
        };
        // Shared (etcd: a release another node published at the same revision refuses it)
        // and on this node's disk, both before the answer.
        for durable in shared.into_iter().chain(durable) {
            match durable.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(PublishError::Storage(error)),
                Err(_) => return Err(PublishError::Storage(StoreError::closed())),
            }
        }
        self.tell(key);
        Ok(answer)
    }

    /// Wakes `key`'s blocking reads with its revision in force, and tells the streams and
    /// webhook queues it changed.
    fn tell(&self, key: &DocKey) {
        let in_force = self.documents().in_force(key).map_or(0, |r| r.meta.revision);
        let watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(watch) = watches.get(key) {
            watch.send_replace(in_force);
        }
        // Nobody listening is fine.
        let _ = self.live.send(key.clone());
    }

    /// Takes in a release another node published (read from the shared store): kept here too
    /// (older contents are read from this node's file), and its readers told, as for a publish
    /// here. One this node holds already in the same words is nothing; in other words (this
    /// node's file is older than the shared store), it is taken as the shared store has it.
    pub async fn take_in(&self, release: StoredRelease) {
        let key = release.key.clone();
        let held = self.documents().meta(&key, release.meta.revision).ok().cloned();
        if let Some(held) = held {
            if held == release.meta {
                return;
            }
            let base = self.base_for(&key, release.meta.revision, release.meta.staged).await;
            let ops = self.documents_mut().retake(Arc::new(release), base);
            return self.keep_taken(&key, ops).await;
        }
        let ops = {
            let mut documents = self.documents_mut();
            let revision = release.meta.revision;
            if documents.meta(&key, revision).is_ok() {
                return; // published here meanwhile: the shared store settles which stands
            }
            let kept = Arc::new(release.clone());
            let purged = documents.restore(release);
            if purged.contains(&revision) {
                return; // older than everything retained
            }
            let forget = purged.into_iter().map(|revision| ReleaseOp::Purge {
                key: key.clone(),
                revision,
            });
            std::iter::once(ReleaseOp::Put(kept)).chain(forget).collect()
        };
        self.keep_taken(&key, ops).await;
    }

    /// Takes in the state of a document's rollout another node moved on (see
    /// [`Documents::take_rollout`]): kept in this node's file, and the document's readers told,
    /// since what each instance is to run may have changed.
    pub async fn take_rollout(&self, kept: DocRollout) {
        let DocRollout { key, rollout } = kept;
        let base = self
            .base_for(&key, rollout.candidate, rollout.phase != Phase::Promoted)
            .await;
        let ops = self.documents_mut().take_rollout(&key, rollout, base);
        self.keep_taken(&key, ops).await;
    }

    /// The release that goes back in force when release `revision` of `key` is `staged`
    /// (again), read from this node's file; `None` when none does.
    async fn base_for(&self, key: &DocKey, revision: u64, staged: bool) -> Option<Arc<StoredRelease>> {
        let back = staged
            .then(|| self.documents().falls_back_to(key, revision))
            .flatten()?;
        match self.release(key, back).await {
            Ok(base) => Some(base),
            Err(error) => {
                tracing::error!(%error, document = %key.path(), "cannot read the release to put back in force");
                None
            }
        }
    }

    /// Keeps `ops`, what another node changed of `key`, in this node's file, then tells the
    /// document's readers.
    async fn keep_taken(&self, key: &DocKey, ops: Vec<ReleaseOp>) {
        if ops.is_empty() {
            return;
        }
        match self.store.write(ops).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "a release published through another node is not on this node's disk");
            }
            Err(_) => return,
        }
        self.tell(key);
    }

    fn documents_mut(&self) -> std::sync::RwLockWriteGuard<'_, Documents> {
        self.documents.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves `key`'s running rollout on at `now` given its gray instances; what happened.
    pub async fn advance(
        &self,
        key: &DocKey,
        now: std::time::SystemTime,
        gray: &[GrayInstance],
    ) -> Result<Option<Transition>, PublishError> {
        self.change(key, |documents| {
            Ok(documents
                .advance(key, now, gray)
                .map_or((None, Vec::new()), |(transition, ops)| (Some(transition), ops)))
        })
        .await
    }

    /// Promotes `key`'s running rollout now, or rolls it back saying `why`.
    pub async fn settle(&self, key: &DocKey, promote: bool, why: String) -> Result<Transition, PublishError> {
        self.change(key, |documents| documents.settle(key, promote, why)).await
    }

    /// Records instance `id`'s report on `revision` of `key` (a webhook's answer, from its
    /// delivery queue).
    pub fn record(&self, key: &DocKey, id: &str, revision: u64, status: rollcall_wire::AckStatus, reason: String) {
        let ack = rollcall_wire::Ack {
            instance: id.to_owned(),
            revision,
            status,
            reason,
            missed_push: false,
        };
        self.keep_ack(key, &ack);
    }

    /// Keeps `ack` and shares it with the other nodes, if any (without waiting: a report is
    /// kept in memory only, and an instance reports again).
    fn keep_ack(&self, key: &DocKey, ack: &rollcall_wire::Ack) {
        self.take_ack(key, ack);
        if let Some(shared) = &self.shared {
            let shared_ack = SharedAck {
                key: key.clone(),
                ack: ack.clone(),
            };
            drop(shared.share_ack(&shared_ack));
        }
    }

    /// Takes in an instance's report on a release of `key`, made here or to another node.
    pub fn take_ack(&self, key: &DocKey, ack: &rollcall_wire::Ack) {
        let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        acks.record(key, &ack.instance, ack.revision, ack.status, ack.reason.clone());
    }

    /// Each document whose releases change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DocKey> {
        self.live.subscribe()
    }

    /// The newest report of instance `id` on `key`.
    pub fn report(&self, key: &DocKey, id: &str) -> Option<(u64, rollcall_wire::AckStatus, String)> {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner).report(key, id)
    }

    /// Release `revision` of `key` (the latest from memory, an older one from disk), while it
    /// is retained.
    pub async fn release(&self, key: &DocKey, revision: u64) -> Result<Arc<StoredRelease>, PublishError> {
        {
            let documents = self.documents();
            for held in [documents.latest(key)?, documents.in_force(key)?] {
                if held.meta.revision == revision {
                    return Ok(Arc::clone(held));
                }
            }
            documents.meta(key, revision)?;
        }
        let (store, wanted) = (Arc::clone(&self.store), key.clone());
        let read = tokio::task::spawn_blocking(move || store.read(&wanted, revision))
            .await
            .map_err(|e| PublishError::Storage(StoreError::new("cannot read a release", e)))?;
        match read.map_err(PublishError::Storage)? {
            Some(release) => Ok(Arc::new(release)),
            // Purged between the check and the read.
            None => Err(self.documents().meta(key, revision).err().map_or_else(
                || PublishError::Storage(StoreError::new("cannot read a release", "it is missing")),
                PublishError::Release,
            )),
        }
    }

    /// The unified diff from release `from` (0: nothing) to release `to` of `key`, while both
    /// are kept.
    pub async fn diff(&self, key: &DocKey, from: u64, to: u64) -> Result<String, PublishError> {
        let after = self.release(key, to).await?;
        let before = match from {
            0 => String::new(),
            from => self.release(key, from).await?.content.clone(),
        };
        Ok(similar::TextDiff::from_lines(&before, &after.content)
            .unified_diff()
            .header(&format!("{}@{from}", key.path()), &format!("{}@{to}", key.path()))
            .to_string())
    }

    /// Publishes release `to`'s content again as the next release of `key`, by `author`, saying
    /// `message`, over revision `expected` when given: a rollback never rewrites history.
    pub async fn rollback(
        &self,
        key: &DocKey,
        to: u64,
        author: &str,
        message: String,
        expected: Option<u64>,
    ) -> Result<Arc<StoredRelease>, PublishError> {
        let old = self.release(key, to).await?;
        let draft = Draft {
            format: old.meta.format,
            content: old.content.clone(),
            author: author.to_owned(),
            message,
            expected,
            rolled_back_from: Some(to),
            rollout: None,
            at: std::time::SystemTime::now(),
        };
        self.publish(key, draft).await
    }

    /// Waits until the revision in force of `key` is past `revision`, at most `wait` (and no longer
    /// than until `shutdown`); returns the latest revision then (0 if there is none).
    pub async fn wait_past(&self, key: &DocKey, revision: u64, wait: Duration, shutdown: &CancellationToken) -> u64 {
        let current = || self.documents().in_force(key).map_or(0, |r| r.meta.revision);
        let mut receiver = {
            let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
            if watches.len() >= SWEEP_WATCHES_AT && !watches.contains_key(key) {
                watches.retain(|_, watch| watch.receiver_count() > 0);
            }
            watches
                .entry(key.clone())
                .or_insert_with(|| watch::Sender::new(0))
                .subscribe()
        };
        // Read after subscribing: a publish in between is seen by one or the other.
        let now = current();
        if now > revision {
            return now;
        }
        let changed = async {
            while receiver.changed().await.is_ok() {
                if *receiver.borrow_and_update() > revision {
                    return;
                }
            }
        };
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => {}
        }
        current()
    }

    /// The documents `service` reads in `namespace` now (its own and the shared ones), and each
    /// document whose releases change from now on: subscribed first, so that a change made in
    /// between is in one or the other.
    pub fn stream(&self, namespace: &str, service: &str) -> (Vec<DocKey>, broadcast::Receiver<DocKey>) {
        let live = self.live.subscribe();
        (self.documents().read_by(namespace, service), live)
    }

    /// Records `ack`, an instance's report on a release of `key` that exists.
    pub fn ack(&self, key: &DocKey, ack: &rollcall_wire::Ack) -> Result<(), ReleaseError> {
        {
            // Any revision made so far may be reported on, a purged one too.
            let documents = self.documents();
            let latest = documents.latest(key)?.meta.revision;
            if ack.revision == 0 || ack.revision > latest {
                documents.meta(key, ack.revision)?;
            }
        }
        self.keep_ack(key, ack);
        Ok(())
    }

    /// How `key`'s release in force stands across `readers`.
    pub fn progress(&self, key: &DocKey, readers: Vec<Reader>) -> Result<rollcall_wire::RolloutStatus, ReleaseError> {
        let latest = self.documents().in_force(key)?.meta.revision;
        let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(acks.progress(key, latest, readers))
    }

    /// Makes what is queued durable and closes the store.
    pub async fn close(&self) {
        self.store.close().await;
    }
}
