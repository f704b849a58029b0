//! The durable catalog: every registration, in a redb database in the data directory.
//!
//! One table maps a ServiceURL to a [`StoredInstance`] (JSON). Health is not stored: after a
//! restart every instance is probed again.
//!
//! Writes are group-committed. [`Store::write`] only queues a batch of operations and hands back
//! a receiver; one writer thread takes everything queued so far, applies it in one redb write
//! transaction and commits it with `Durability::Immediate` (fsync), then answers every waiting
//! receiver. While one commit is on disk the next batch piles up, so the number of fsyncs stays
//! bounded however many writers wait, and each acknowledgement means "on disk". Batches are
//! applied in the order they were queued.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::SystemTime;

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rollcall_wire::Registration;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// ServiceURL → JSON of a [`StoredInstance`].
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");

/// Most batches one commit takes, so that one transaction stays small.
const MAX_BATCHES_PER_COMMIT: usize = 4096;

/// The name of the database file in the data directory.
pub const DATABASE_FILE: &str = "catalog.redb";

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
}

/// One change to the stored catalog.
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// Insert or replace the instance at its ServiceURL.
    Put(StoredInstance),
    /// Remove the instance at this ServiceURL.
    Delete(String),
}

/// Why the catalog could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(Arc<str>);

impl StoreError {
    /// The error of a write made after the store was closed.
    pub fn closed() -> Self {
        Self::new("cannot write", "the catalog is closed")
    }

    fn new(context: &str, error: impl std::fmt::Display) -> Self {
        Self(format!("{context}: {error}").into())
    }
}

/// Waits for a queued batch to be on disk.
pub type Durable = oneshot::Receiver<Result<(), StoreError>>;

struct Batch {
    ops: Vec<StoreOp>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// What the writer thread is sent.
enum Message {
    Write(Batch),
    /// Commit what came before, then close the database.
    Stop,
}

/// The handle through which the registry writes its catalog.
#[derive(Debug)]
pub struct Store {
    queue: mpsc::Sender<Message>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    path: PathBuf,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Write(batch) => f.debug_struct("Write").field("ops", &batch.ops.len()).finish(),
            Message::Stop => f.write_str("Stop"),
        }
    }
}

impl Store {
    /// Opens (creating if needed) the catalog in `data_dir` and reads every stored instance.
    /// Fails if another registry holds the same data directory.
    pub fn open(data_dir: &Path, commit_seconds: Histogram) -> Result<(Self, Vec<StoredInstance>), StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let database =
            Database::create(&path).map_err(|e| StoreError::new(&format!("cannot open {}", path.display()), e))?;
        let stored = read_all(&database)?;
        let (queue, messages) = mpsc::channel();
        let writer = thread::Builder::new()
            .name("catalog-writer".to_owned())
            .spawn(move || write_batches(&database, &messages, &commit_seconds))
            .map_err(|e| StoreError::new("cannot start the catalog writer", e))?;
        let writer = Mutex::new(Some(writer));
        Ok((Self { queue, writer, path }, stored))
    }

    /// Queues `ops` to be committed with whatever else is queued; the receiver answers once they
    /// are on disk. Never blocks.
    pub fn write(&self, ops: Vec<StoreOp>) -> Durable {
        let (done, durable) = oneshot::channel();
        if let Err(mpsc::SendError(Message::Write(batch))) = self.queue.send(Message::Write(Batch { ops, done })) {
            let _ = batch.done.send(Err(StoreError::closed()));
        }
        durable
    }

    /// Commits what is queued and closes the database file; later writes fail.
    pub async fn close(&self) {
        let _ = self.queue.send(Message::Stop);
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_all(database: &Database) -> Result<Vec<StoredInstance>, StoreError> {
    // Make sure the table exists, so that a fresh database reads as empty.
    let create = database
        .begin_write()
        .map_err(|e| StoreError::new("cannot start a transaction", e))?;
    create
        .open_table(INSTANCES)
        .map_err(|e| StoreError::new("cannot open the table", e))?;
    create.commit().map_err(|e| StoreError::new("cannot commit", e))?;

    let read = database
        .begin_read()
        .map_err(|e| StoreError::new("cannot start a read", e))?;
    let table = read
        .open_table(INSTANCES)
        .map_err(|e| StoreError::new("cannot open the table", e))?;
    let mut stored = Vec::new();
    for entry in table.iter().map_err(|e| StoreError::new("cannot read", e))? {
        let (url, value) = entry.map_err(|e| StoreError::new("cannot read", e))?;
        match serde_json::from_slice::<StoredInstance>(value.value()) {
            Ok(instance) => stored.push(instance),
            // A record this version cannot read is skipped, not fatal: the instance will register again.
            Err(error) => tracing::warn!(url = url.value(), %error, "skipping an unreadable stored instance"),
        }
    }
    Ok(stored)
}

/// The writer thread: commit everything queued, answer, repeat until stopped.
fn write_batches(database: &Database, messages: &mpsc::Receiver<Message>, commit_seconds: &Histogram) {
    let mut stopping = false;
    while !stopping {
        let Ok(Message::Write(first)) = messages.recv() else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_BATCHES_PER_COMMIT {
            match messages.try_recv() {
                Ok(Message::Write(batch)) => group.push(batch),
                Ok(Message::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result = commit(database, &group);
        commit_seconds.observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            tracing::error!(%error, "catalog write failed");
        }
        for batch in group {
            let _ = batch.done.send(result.clone());
        }
    }
}

fn commit(database: &Database, group: &[Batch]) -> Result<(), StoreError> {
    let transaction = database
        .begin_write()
        .map_err(|e| StoreError::new("cannot start a transaction", e))?;
    {
        let mut table = transaction
            .open_table(INSTANCES)
            .map_err(|e| StoreError::new("cannot open the table", e))?;
        for op in group.iter().flat_map(|batch| &batch.ops) {
            match op {
                StoreOp::Put(instance) => {
                    let value = serde_json::to_vec(instance).map_err(|e| StoreError::new("cannot encode", e))?;
                    table
                        .insert(instance.registration.service_url.as_str(), value.as_slice())
                        .map_err(|e| StoreError::new("cannot write", e))?;
                }
                StoreOp::Delete(url) => {
                    table
                        .remove(url.as_str())
                        .map_err(|e| StoreError::new("cannot delete", e))?;
                }
            }
        }
    }
    transaction.commit().map_err(|e| StoreError::new("cannot commit", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(url: &str) -> StoredInstance {
        StoredInstance {
            id: format!("id-{url}"),
            registration: Registration {
                service_name: "A".to_owned(),
                service_url: url.to_owned(),
                required_services: vec!["B".to_owned()],
                service_update_url: format!("{url}/services"),
                heartbeat_url: format!("{url}/heartbeat"),
            },
            metadata: BTreeMap::from([("zone".to_owned(), "eu".to_owned())]),
            registered_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn what_was_acknowledged_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let (store, stored) = Store::open(dir.path(), Histogram::new([1.0].into_iter())).expect("open");
            assert!(stored.is_empty());
            let writes: Vec<Durable> = (0..100)
                .map(|n| store.write(vec![StoreOp::Put(instance(&format!("http://{n}")))]))
                .collect();
            for write in writes {
                write.await.expect("answered").expect("durable");
            }
            store
                .write(vec![StoreOp::Delete("http://7".to_owned())])
                .await
                .expect("answered")
                .expect("durable");
            store
                .write(vec![StoreOp::Put(instance("http://1"))])
                .await
                .expect("answered")
                .expect("durable");
            store.close().await;
            let late = store
                .write(vec![StoreOp::Delete("http://1".to_owned())])
                .await
                .expect("answered");
            assert!(late.is_err(), "a closed store refuses writes");
        }
        let (_, stored) = Store::open(dir.path(), Histogram::new([1.0].into_iter())).expect("reopen");
        assert_eq!(stored.len(), 99);
        assert!(stored.iter().all(|s| s.registration.service_url != "http://7"));
        assert!(stored.contains(&instance("http://1")));
    }

    #[tokio::test]
    async fn a_second_registry_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().expect("dir");
        let (_store, _) = Store::open(dir.path(), Histogram::new([1.0].into_iter())).expect("open");
        let error = Store::open(dir.path(), Histogram::new([1.0].into_iter())).expect_err("already open");
        assert!(error.to_string().contains("catalog.redb"), "{error}");
    }
}
