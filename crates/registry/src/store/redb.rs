//! The embedded catalog store: every registration, in a redb database in the data directory.
//!
//! One table maps a ServiceURL to a [`StoredInstance`] (JSON). Health is not stored: after a
//! restart every instance is probed again.
//!
//! Writes are group-committed. [`RedbStore::write`] only queues a batch of operations and hands back
//! a receiver; one writer thread takes everything queued so far, applies it in one redb write
//! transaction and commits it with `Durability::Immediate` (fsync), then answers every waiting
//! receiver. While one commit is on disk the next batch piles up, so the number of fsyncs stays
//! bounded however many writers wait, and each acknowledgement means "on disk". Batches are
//! applied in the order they were queued.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread;

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{CatalogStore, Durable, StoreError, StoreFuture, StoreOp, StoredInstance};

/// ServiceURL → JSON of a [`StoredInstance`].
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");

/// Most batches one commit takes, so that one transaction stays small.
const MAX_BATCHES_PER_COMMIT: usize = 4096;

/// The name of the database file in the data directory.
pub const DATABASE_FILE: &str = "catalog.redb";

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

/// The catalog in one redb file.
#[derive(Debug)]
pub struct RedbStore {
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

impl RedbStore {
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

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CatalogStore for RedbStore {
    /// Queues `ops` to be committed with whatever else is queued.
    fn write(&self, ops: Vec<StoreOp>) -> Durable {
        let (done, durable) = oneshot::channel();
        if let Err(mpsc::SendError(Message::Write(batch))) = self.queue.send(Message::Write(Batch { ops, done })) {
            let _ = batch.done.send(Err(StoreError::closed()));
        }
        durable
    }

    /// Commits what is queued and closes the database file.
    fn close(&self) -> StoreFuture<'_> {
        Box::pin(async move {
            let _ = self.queue.send(Message::Stop);
            let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(writer) = writer {
                let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            }
        })
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
pub(super) mod tests {
    use super::*;
    use crate::store::contract::{self, Backend};

    /// The embedded store in a temporary directory.
    struct Redb(tempfile::TempDir);

    impl Redb {
        fn new() -> Self {
            Self(tempfile::tempdir().expect("dir"))
        }
    }

    impl Backend for Redb {
        const NAME: &'static str = "redb";

        async fn open(&self) -> (Box<dyn CatalogStore>, Vec<StoredInstance>) {
            let (store, stored) = RedbStore::open(self.0.path(), histogram()).expect("open");
            (Box::new(store), stored)
        }

        fn location(&self) -> String {
            self.0.path().display().to_string()
        }
    }

    fn histogram() -> Histogram {
        Histogram::new([1.0])
    }

    /// Opens the store at `location` for the crash test's child process.
    pub(crate) fn open_at(location: &str) -> Box<dyn CatalogStore> {
        Box::new(RedbStore::open(Path::new(location), histogram()).expect("open").0)
    }

    #[tokio::test]
    async fn what_was_acknowledged_is_read_back_after_reopening() {
        contract::what_was_acknowledged_is_read_back_after_reopening(&Redb::new()).await;
    }

    #[tokio::test]
    async fn batches_take_effect_whole_and_in_the_order_they_were_queued() {
        contract::batches_take_effect_whole_and_in_the_order_they_were_queued(&Redb::new()).await;
    }

    #[tokio::test]
    async fn writers_queued_together_are_all_acknowledged() {
        contract::writers_queued_together_are_all_acknowledged(&Redb::new()).await;
    }

    #[tokio::test]
    async fn a_kill_9_between_write_and_acknowledgement_loses_nothing_acknowledged_and_no_half_batch() {
        contract::a_kill_9_between_write_and_acknowledgement_loses_nothing_acknowledged_and_no_half_batch(&Redb::new())
            .await;
    }

    #[tokio::test]
    async fn a_second_registry_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().expect("dir");
        let (_store, _) = RedbStore::open(dir.path(), histogram()).expect("open");
        let error = RedbStore::open(dir.path(), histogram()).expect_err("already open");
        assert!(error.to_string().contains("catalog.redb"), "{error}");
    }
}
