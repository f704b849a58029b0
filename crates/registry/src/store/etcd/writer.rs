//! The etcd store's writer: one task that commits every batch queued so far as one etcd
//! transaction, comparing each key it writes with the revision this node knows it at
//! ([`Known`], shared with the feed), retrying while etcd cannot answer.
//!
//! A write etcd does not answer within [`RETRY_FOR`] is refused, and its instances are read
//! again after the next write etcd answers (or every second, while nothing is written), so that this node's catalog, which applied the
//! change, comes back to what etcd holds. A write that finds an instance changed by another
//! node is refused, and only it: the other
//! batches of its transaction are committed again without it; the instance's current value is
//! handed to the feed as a correction, so that this node's catalog, which applied the refused
//! change already, comes back to what etcd holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::{CATALOG, HEALTH, HELD, RELEASES, REQUEST_TIMEOUT, ROLLOUTS, change_of, retry_delays};
use crate::releases::{DocKey, ReleaseOp};
use crate::state::{SharedHealth, SharedHeld};
use crate::store::{Change, Fed, StoreError, StoreOp, StoredInstance};

/// Most keys one transaction writes: etcd's default `--max-txn-ops`.
const MAX_KEYS_PER_TXN: usize = 128;
/// Most bytes of values one transaction writes when it folds several batches (etcd refuses
/// requests over 1.5 MiB by default); a larger batch goes alone.
const MAX_BYTES_PER_TXN: usize = 1024 * 1024;
/// How long a write is retried while etcd cannot be reached before it is refused.
pub(super) const RETRY_FOR: Duration = Duration::from_secs(3);

/// The last word on each key (under the prefix): a value to put, or `None` to delete.
pub(super) type Folded = BTreeMap<String, Option<Vec<u8>>>;

/// A batch as the writer takes it, folded.
pub(super) struct Batch {
    pub(super) words: Folded,
    pub(super) done: oneshot::Sender<Result<(), StoreError>>,
}

/// A batch as it is queued: the catalog's operations are encoded by the writer, not by the
/// caller, who holds the catalog's lock; its keys are counted as pending already.
pub(super) struct Queued {
    pub(super) words: Words,
    /// The keys it writes (counted as pending when it was queued).
    pub(super) keys: Vec<String>,
    pub(super) done: oneshot::Sender<Result<(), StoreError>>,
}

/// What a queued batch writes.
pub(super) enum Words {
    /// The catalog's operations, to fold.
    Ops(Vec<StoreOp>),
    /// Keys and values folded already (releases, tokens, reports).
    Folded(Folded),
}

/// What the writer task is sent.
pub(super) enum Message {
    Write(Queued),
    /// Commit what came before, then stop.
    Stop,
}

/// What this node knows of each key, shared by the writer and the feed.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// The revision each key was last written at, as far as this node knows: by its own
    /// commits, or from the watch.
    pub(super) revisions: HashMap<String, Seen>,
    /// Keys with a write of this node queued or in flight: the feed leaves them to the writer.
    pub(super) pending: HashMap<String, u32>,
}

/// A key's last write this node knows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    /// The revision of the write.
    pub(super) revision: i64,
    /// False for a deletion of this node's (a tombstone, until the watch has passed it, so
    /// that the echo of an older write of the key is not taken for news).
    pub(super) exists: bool,
}

/// [`Known`] behind its lock.
pub(super) type SharedKnown = Arc<Mutex<Known>>;

pub(super) fn lock(known: &SharedKnown) -> std::sync::MutexGuard<'_, Known> {
    known.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer task's state.
pub(super) struct Writer {
    pub(super) client: Client,
    pub(super) prefix: String,
    pub(super) known: SharedKnown,
    /// Where corrections go: the feed's queue to the catalog.
    pub(super) corrections: mpsc::Sender<Fed>,
    pub(super) commit_seconds: Histogram,
    /// Instances whose write etcd did not answer: this node's catalog applied a change etcd may
    /// not hold. Read again, and corrected, after the next write etcd answers.
    pub(super) doubtful: BTreeSet<String>,
}

/// How etcd answered one transaction.
enum Answer {
    /// Committed (or found committed by an earlier attempt whose answer was lost).
    Committed,
    /// Refused: another node changed these instances' keys since this node last saw them.
    Conflict(HashSet<String>),
}

impl Writer {
    /// Commits everything queued, answers, repeats until stopped.
    pub(super) async fn run(mut self, mut messages: mpsc::UnboundedReceiver<Message>) {
        let mut next: Option<Batch> = None;
        let mut stopping = false;
        loop {
            let first = match next.take() {
                Some(batch) => batch,
                None if stopping => return,
                None => {
                    // Doubts are resolved after the next answered write, or once a second
                    // while nothing is written.
                    let waited = if self.doubtful.is_empty() {
                        Ok(messages.recv().await)
                    } else {
                        tokio::time::timeout(Duration::from_secs(1), messages.recv()).await
                    };
                    match waited {
                        Ok(Some(Message::Write(queued))) => match self.fold(queued) {
                            Some(batch) => batch,
                            None => continue,
                        },
                        Ok(Some(Message::Stop) | None) => return,
                        Err(_) => {
                            self.resolve_doubts().await;
                            continue;
                        }
                    }
                }
            };
            let mut keys: HashSet<String> = first.words.keys().cloned().collect();
            let mut bytes = size(&first.words);
            let mut group = vec![first];
            while !stopping {
                match messages.try_recv() {
                    Ok(Message::Write(queued)) => {
                        let Some(batch) = self.fold(queued) else { continue };
                        let more = batch.words.keys().filter(|key| !keys.contains(*key)).count();
                        if keys.len() + more > MAX_KEYS_PER_TXN || bytes + size(&batch.words) > MAX_BYTES_PER_TXN {
                            next = Some(batch);
                            break;
                        }
                        keys.extend(batch.words.keys().cloned());
                        bytes += size(&batch.words);
                        group.push(batch);
                    }
                    Ok(Message::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            self.commit_group(group).await;
        }
    }

    /// The batch `queued` folded, or `None` (and the batch answered) when it cannot be.
    fn fold(&self, queued: Queued) -> Option<Batch> {
        let folded = match queued.words {
            Words::Ops(ops) => fold(&ops),
            Words::Folded(folded) => Ok(folded),
        };
        match folded {
            Ok(words) => Some(Batch {
                words,
                done: queued.done,
            }),
            Err(error) => {
                release(&self.known, queued.keys.iter());
                let _ = queued.done.send(Err(error));
                None
            }
        }
    }

    /// Commits `group` as one transaction. When some of its instances were changed by another
    /// node, the batches that write them are refused and the others committed without them.
    async fn commit_group(&mut self, mut group: Vec<Batch>) {
        while !group.is_empty() {
            let mut folded = Folded::new();
            for batch in &group {
                folded.extend(batch.words.iter().map(|(key, word)| (key.clone(), word.clone())));
            }
            let started = Instant::now();
            let answer = self.commit(&folded).await;
            self.commit_seconds.observe(started.elapsed().as_secs_f64());
            let conflicts = match answer {
                Ok(Answer::Committed) => HashSet::new(),
                Ok(Answer::Conflict(keys)) => keys,
                Err(error) => {
                    tracing::error!(%error, "a catalog write to etcd failed");
                    let doubtful = folded.iter().filter(|(key, value)| compared(key, value.as_ref()));
                    self.doubtful.extend(doubtful.map(|(key, _)| key.clone()));
                    return self.answer(group, &Err(error));
                }
            };
            self.resolve_doubts().await;
            let (refused, rest) = group
                .into_iter()
                .partition::<Vec<_>, _>(|batch| batch.words.keys().any(|key| conflicts.contains(key)));
            let committed = conflicts.is_empty();
            if !refused.is_empty() {
                let error = StoreError::new(
                    "cannot write",
                    "another registry node changed the same instances in etcd",
                );
                tracing::warn!(%error, "a catalog write lost a race");
                self.answer(refused, &Err(error));
            }
            if committed {
                return self.answer(rest, &Ok(()));
            }
            group = rest;
        }
    }

    /// Reads the instances and rollouts whose write etcd did not answer, and hands what etcd
    /// holds of each to this node; those it cannot read stay doubtful.
    async fn resolve_doubts(&mut self) {
        let mut kv = self.client.kv_client();
        for suffix in std::mem::take(&mut self.doubtful) {
            let Ok(found) = kv.get(format!("{}{suffix}", self.prefix), None).await else {
                self.doubtful.insert(suffix);
                continue;
            };
            let revision = found.header().map_or(0, etcd_client::ResponseHeader::revision);
            if let Some(correction) = change_of(&suffix, found.kvs().first().map(etcd_client::KeyValue::value)) {
                self.correct(revision, correction).await;
            }
        }
    }

    /// Hands this node what etcd holds of a key, as of `revision`.
    async fn correct(&self, revision: i64, correction: Change) {
        let fed = Fed {
            revision: u64::try_from(revision).unwrap_or(0),
            change: correction,
        };
        let _ = self.corrections.send(fed).await;
    }

    fn answer(&self, group: Vec<Batch>, result: &Result<(), StoreError>) {
        for batch in group {
            release(&self.known, batch.words.keys());
            let _ = batch.done.send(result.clone());
        }
    }

    /// Commits `folded` as one transaction, retrying while etcd cannot answer.
    async fn commit(&mut self, folded: &Folded) -> Result<Answer, StoreError> {
        let mut delays = retry_delays();
        let started = Instant::now();
        loop {
            match self.try_commit(folded).await {
                Ok(answer) => return Ok(answer),
                Err(error) if started.elapsed() + REQUEST_TIMEOUT < RETRY_FOR => {
                    tracing::debug!(%error, "etcd did not answer a write; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_millis(500))).await;
                }
                Err(error) => return Err(StoreError::new("etcd did not commit the write", error)),
            }
        }
    }

    /// One attempt: `Err` when etcd did not answer.
    async fn try_commit(&mut self, folded: &Folded) -> Result<Answer, etcd_client::Error> {
        let mut compares = Vec::with_capacity(folded.len());
        let mut ops = Vec::with_capacity(folded.len());
        {
            let known = lock(&self.known);
            for (suffix, value) in folded {
                let key = format!("{}{suffix}", self.prefix);
                // Health is written by the one node probing the instance: no comparison. A
                // release is written once: it must not exist yet (purges compare nothing). A
                // rollout's state is compared like an instance: two nodes moving it on at once
                // (a step and an abort) cannot both win.
                if compared(suffix, value.as_ref()) {
                    compares.push(match known.revisions.get(suffix) {
                        Some(&Seen { revision, exists: true }) => {
                            Compare::mod_revision(key.clone(), CompareOp::Equal, revision)
                        }
                        _ => Compare::version(key.clone(), CompareOp::Equal, 0),
                    });
                } else if suffix.starts_with(RELEASES) && value.is_some() {
                    if known.revisions.get(suffix).is_some_and(|seen| seen.exists) {
                        continue; // written already (an earlier attempt whose answer was lost)
                    }
                    compares.push(Compare::version(key.clone(), CompareOp::Equal, 0));
                }
                ops.push(match value {
                    Some(value) => TxnOp::put(key, value.clone(), None),
                    None => TxnOp::delete(key, None),
                });
            }
        }
        let answer = self
            .client
            .kv_client()
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        if answer.succeeded() {
            let revision = answer.header().map_or(0, etcd_client::ResponseHeader::revision);
            learn(
                &self.known,
                folded.iter().map(|(key, value)| {
                    let seen = Seen {
                        revision,
                        exists: value.is_some(),
                    };
                    (key, seen)
                }),
            );
            return Ok(Answer::Committed);
        }
        // Another node's write, or this node's own whose answer was lost: see which, for each
        // instance.
        let mut conflicts = HashSet::new();
        let mut kv = self.client.kv_client();
        // The keys the transaction compared: instances, rollouts, and the releases it put.
        let checked = |(key, value): &(&String, &Option<Vec<u8>>)| {
            compared(key, value.as_ref()) || (key.starts_with(RELEASES) && value.is_some())
        };
        for (suffix, wanted) in folded.iter().filter(checked) {
            let found = kv.get(format!("{}{suffix}", self.prefix), None).await?;
            let now = found.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision()));
            let seen = match &now {
                Some((_, revision)) => Seen {
                    revision: *revision,
                    exists: true,
                },
                None => Seen {
                    revision: found.header().map_or(0, etcd_client::ResponseHeader::revision),
                    exists: false,
                },
            };
            learn(&self.known, std::iter::once((suffix, seen)));
            let now = now.map(|(value, _)| value);
            if wanted.as_deref() == now.as_deref() {
                continue;
            }
            conflicts.insert(suffix.clone());
            // This node applied the refused change already: tell it what etcd holds.
            if let Some(correction) = change_of(suffix, now.as_deref()) {
                self.correct(seen.revision, correction).await;
            }
        }
        if conflicts.is_empty() {
            // Every instance is as this node wanted: its own earlier attempt went through, but
            // not necessarily the health in it. Write again, compared with what it now knows.
            return Box::pin(self.try_commit(folded)).await;
        }
        Ok(Answer::Conflict(conflicts))
    }
}

/// True for the keys a write compares with the revision this node knows them at (or with
/// absence): instances, and the rollouts' states it puts.
fn compared(suffix: &str, value: Option<&Vec<u8>>) -> bool {
    suffix.starts_with(CATALOG) || (suffix.starts_with(ROLLOUTS) && value.is_some())
}

/// The bytes of values `words` writes.
fn size(words: &Folded) -> usize {
    words.values().map(|value| value.as_ref().map_or(0, Vec::len)).sum()
}

/// Records what this node now knows of each key.
fn learn<'a>(known: &SharedKnown, revisions: impl Iterator<Item = (&'a String, Seen)>) {
    let mut known = lock(known);
    for (url, seen) in revisions {
        known.revisions.insert(url.clone(), seen);
    }
}

/// Counts one write of each of `urls` as no longer pending.
pub(super) fn release<'a>(known: &SharedKnown, urls: impl Iterator<Item = &'a String>) {
    let mut known = lock(known);
    for url in urls {
        if let Some(count) = known.pending.get_mut(url) {
            *count -= 1;
            if *count == 0 {
                known.pending.remove(url);
            }
        }
    }
}

/// The keys and values of `ops` on configuration releases: each release at
/// `releases/{namespace}/{service}/{name}/{revision, 20 digits}` (so that a document's releases
/// sort by revision), written once; the state of the rollout of each candidate at
/// `rollouts/{namespace}/{service}/{name}/{candidate, 20 digits}` (a promotion is said there:
/// the release's own key is not written again); a purge deleting both.
pub(super) fn fold_releases(ops: &[ReleaseOp]) -> Result<Folded, StoreError> {
    let encode = |e| StoreError::new("cannot encode", e);
    let mut folded = Folded::new();
    for op in ops {
        match op {
            ReleaseOp::Put(release) => {
                let value = serde_json::to_vec(&**release).map_err(encode)?;
                folded.insert(doc_key(RELEASES, &release.key, release.meta.revision), Some(value));
            }
            ReleaseOp::Promote(_) => {}
            ReleaseOp::Rollout(kept) => {
                let value = serde_json::to_vec(kept).map_err(encode)?;
                folded.insert(doc_key(ROLLOUTS, &kept.key, kept.rollout.candidate), Some(value));
            }
            ReleaseOp::Purge { key, revision } => {
                folded.insert(doc_key(RELEASES, key, *revision), None);
                folded.insert(doc_key(ROLLOUTS, key, *revision), None);
            }
        }
    }
    Ok(folded)
}

/// `{part}{namespace}/{service}/{name}/{revision, 20 digits}`.
fn doc_key(part: &str, key: &DocKey, revision: u64) -> String {
    format!("{part}{}/{revision:020}", key.path())
}

/// What one catalog operation writes at one key (under the prefix).
enum Value<'a> {
    Instance(&'a StoredInstance),
    Health(&'a SharedHealth),
    Held(&'a SharedHeld),
    /// Nothing: the key is deleted.
    Gone,
}

/// Each key `op` writes, with what it writes there: an instance's `catalog/` key, its
/// `health/` key and its subscriber's `held/` key (a deletion removes all three).
fn words_of(op: &StoreOp) -> Vec<(String, Value<'_>)> {
    match op {
        StoreOp::Put(instance) => vec![(
            format!("{CATALOG}{}", instance.registration.service_url),
            Value::Instance(instance),
        )],
        StoreOp::Delete(url) => [CATALOG, HEALTH, HELD]
            .iter()
            .map(|part| (format!("{part}{url}"), Value::Gone))
            .collect(),
        StoreOp::Health(health) => vec![(format!("{HEALTH}{}", health.url), Value::Health(health))],
        StoreOp::Held(held) => vec![(format!("{HELD}{}", held.url), Value::Held(held))],
    }
}

/// The keys `ops` write: what is pending while they are queued.
pub(super) fn keys_of(ops: &[StoreOp]) -> Vec<String> {
    ops.iter().flat_map(words_of).map(|(key, _)| key).collect()
}

/// The last word of `ops` on each key they name (a later op replaces an earlier one).
/// Refuses a batch that names more keys than one transaction may write.
pub(super) fn fold(ops: &[StoreOp]) -> Result<Folded, StoreError> {
    let encoded = |value: Result<Vec<u8>, serde_json::Error>| value.map_err(|e| StoreError::new("cannot encode", e));
    let mut folded = Folded::new();
    for (key, value) in ops.iter().flat_map(words_of) {
        let value = match value {
            Value::Instance(instance) => Some(encoded(serde_json::to_vec(instance))?),
            Value::Health(health) => Some(encoded(serde_json::to_vec(health))?),
            Value::Held(held) => Some(encoded(serde_json::to_vec(held))?),
            Value::Gone => None,
        };
        folded.insert(key, value);
    }
    if folded.len() > MAX_KEYS_PER_TXN {
        return Err(StoreError::new(
            "cannot write",
            format!("a batch of more than {MAX_KEYS_PER_TXN} keys does not fit one etcd transaction"),
        ));
    }
    Ok(folded)
}
