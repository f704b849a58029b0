//! The etcd store's writer: one task that commits every batch queued so far as one etcd
//! transaction, comparing each key it writes with the revision this node knows it at
//! ([`Known`], shared with the feed), retrying while etcd cannot answer.
//!
//! A write that finds a key changed by another node is refused; the keys' current values are
//! handed to the feed as corrections, so that this node's catalog, which applied the refused
//! change already, comes back to what etcd holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::{REQUEST_TIMEOUT, decode};
use crate::store::{Change, StoreError, StoreOp};

/// Most keys one transaction writes: etcd's default `--max-txn-ops`.
const MAX_KEYS_PER_TXN: usize = 128;
/// How long a write is retried while etcd cannot be reached before it is refused.
pub(super) const RETRY_FOR: Duration = Duration::from_secs(3);

/// The last word on each ServiceURL: a value to put, or `None` to delete.
pub(super) type Folded = BTreeMap<String, Option<Vec<u8>>>;

/// A batch as the writer takes it, folded.
pub(super) struct Batch {
    pub(super) words: Folded,
    pub(super) done: oneshot::Sender<Result<(), StoreError>>,
}

/// What the writer task is sent.
pub(super) enum Message {
    Write(Batch),
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
    pub(super) corrections: mpsc::Sender<Change>,
    pub(super) commit_seconds: Histogram,
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
                None => match messages.recv().await {
                    Some(Message::Write(batch)) => batch,
                    Some(Message::Stop) | None => return,
                },
            };
            let mut folded = first.words;
            let mut waiting = vec![first.done];
            while !stopping {
                match messages.try_recv() {
                    Ok(Message::Write(batch)) => {
                        let more = batch.words.keys().filter(|url| !folded.contains_key(*url)).count();
                        if folded.len() + more > MAX_KEYS_PER_TXN {
                            next = Some(batch);
                            break;
                        }
                        // Each batch counted its keys as pending once: count what folding merges.
                        release(&self.known, batch.words.keys().filter(|url| folded.contains_key(*url)));
                        folded.extend(batch.words);
                        waiting.push(batch.done);
                    }
                    Ok(Message::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let result = self.commit(&folded).await;
            self.commit_seconds.observe(started.elapsed().as_secs_f64());
            release(&self.known, folded.keys());
            if let Err(error) = &result {
                tracing::error!(%error, "a catalog write to etcd failed");
            }
            for done in waiting {
                let _ = done.send(result.clone());
            }
        }
    }

    /// Commits `folded` as one transaction, retrying while etcd cannot answer.
    async fn commit(&mut self, folded: &Folded) -> Result<(), StoreError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_millis(500))
            .with_jitter()
            .without_max_times()
            .build();
        let started = Instant::now();
        loop {
            match self.try_commit(folded).await {
                Ok(result) => return result,
                Err(error) if started.elapsed() + REQUEST_TIMEOUT < RETRY_FOR => {
                    tracing::debug!(%error, "etcd did not answer a write; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_millis(500))).await;
                }
                Err(error) => return Err(StoreError::new("etcd did not commit the write", error)),
            }
        }
    }

    /// One attempt: `Err` when etcd did not answer, `Ok(result)` when it did.
    async fn try_commit(&mut self, folded: &Folded) -> Result<Result<(), StoreError>, etcd_client::Error> {
        let mut compares = Vec::with_capacity(folded.len());
        let mut ops = Vec::with_capacity(folded.len());
        {
            let known = lock(&self.known);
            for (url, value) in folded {
                let key = format!("{}{url}", self.prefix);
                compares.push(match known.revisions.get(url) {
                    Some(&Seen { revision, exists: true }) => {
                        Compare::mod_revision(key.clone(), CompareOp::Equal, revision)
                    }
                    _ => Compare::version(key.clone(), CompareOp::Equal, 0),
                });
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
                folded.iter().map(|(url, value)| {
                    (
                        url,
                        Seen {
                            revision,
                            exists: value.is_some(),
                        },
                    )
                }),
            );
            return Ok(Ok(()));
        }
        // Someone else's write, or our own whose answer was lost: see which.
        let mut current = Vec::with_capacity(folded.len());
        let mut seen = Vec::with_capacity(folded.len());
        let mut kv = self.client.kv_client();
        for url in folded.keys() {
            let found = kv.get(format!("{}{url}", self.prefix), None).await?;
            let now = found.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision()));
            seen.push(match &now {
                Some((_, revision)) => Seen {
                    revision: *revision,
                    exists: true,
                },
                None => Seen {
                    revision: found.header().map_or(0, etcd_client::ResponseHeader::revision),
                    exists: false,
                },
            });
            current.push(now);
        }
        learn(&self.known, folded.keys().zip(seen));
        let mut ours = true;
        for ((url, wanted), now) in folded.iter().zip(current) {
            let now = now.map(|(value, _)| value);
            if wanted.as_deref() == now.as_deref() {
                continue;
            }
            ours = false;
            let correction = match now {
                Some(value) => match decode(url, &value) {
                    Some(stored) => StoreOp::Put(stored),
                    None => continue,
                },
                None => StoreOp::Delete(url.clone()),
            };
            let _ = self.corrections.send(Change::One(correction)).await;
        }
        Ok(if ours {
            Ok(())
        } else {
            Err(StoreError::new(
                "cannot write",
                "another registry node changed the same instances in etcd",
            ))
        })
    }
}

/// Records what this node now knows of each key.
fn learn<'a>(known: &SharedKnown, revisions: impl Iterator<Item = (&'a String, Seen)>) {
    let mut known = lock(known);
    for (url, seen) in revisions {
        known.revisions.insert(url.clone(), seen);
    }
}

/// Counts one write of each of `urls` as no longer pending.
fn release<'a>(known: &SharedKnown, urls: impl Iterator<Item = &'a String>) {
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

/// The last word of `ops` on each ServiceURL they name (a later op replaces an earlier one).
/// Refuses a batch that names more instances than one transaction may write.
pub(super) fn fold(ops: &[StoreOp]) -> Result<Folded, StoreError> {
    let mut folded = Folded::new();
    for op in ops {
        let (url, value) = match op {
            StoreOp::Put(instance) => (
                instance.registration.service_url.clone(),
                Some(serde_json::to_vec(instance).map_err(|e| StoreError::new("cannot encode", e))?),
            ),
            StoreOp::Delete(url) => (url.clone(), None),
        };
        folded.insert(url, value);
    }
    if folded.len() > MAX_KEYS_PER_TXN {
        return Err(StoreError::new(
            "cannot write",
            format!("a batch of more than {MAX_KEYS_PER_TXN} instances does not fit one etcd transaction"),
        ));
    }
    Ok(folded)
}
