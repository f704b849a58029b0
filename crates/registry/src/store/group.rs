//! Group commit into one redb database, shared by the stores: [`GroupCommit::write`] only queues
//! a batch and hands back a receiver; one writer thread takes everything queued so far, applies
//! it in one redb write transaction and commits it with `Durability::Immediate` (fsync), then
//! answers every waiting receiver. While one commit is on disk the next batch piles up, so the
//! number of fsyncs stays bounded however many writers wait, and each acknowledgement means "on
//! disk". Batches are applied in the order they were queued, each whole or not at all.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, Key, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::{Durable, StoreError};

/// Most batches one commit takes, so that one transaction stays small.
const MAX_BATCHES_PER_COMMIT: usize = 4096;

/// An operation a store's writer applies inside a write transaction.
pub(crate) trait Commit: Send + Sized + 'static {
    /// Applies `ops`, in order, inside `transaction`.
    fn apply<'a>(transaction: &WriteTransaction, ops: impl Iterator<Item = &'a Self>) -> Result<(), StoreError>;
}

struct Batch<Op> {
    ops: Vec<Op>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// What the writer thread is sent.
enum Message<Op> {
    Write(Batch<Op>),
    /// Commit what came before, then stop.
    Stop,
}

/// One database's writer thread and its queue.
pub(crate) struct GroupCommit<Op> {
    queue: mpsc::Sender<Message<Op>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl<Op> std::fmt::Debug for GroupCommit<Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

impl<Op: Commit> GroupCommit<Op> {
    /// Starts the writer thread `name` for `database`, timing each commit in `commit_seconds`.
    pub(crate) fn start(name: &str, database: Arc<Database>, commit_seconds: Histogram) -> Result<Self, StoreError> {
        let (queue, messages) = mpsc::channel();
        let writer = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write_batches(&database, &messages, &commit_seconds))
            .map_err(|e| StoreError::new(&format!("cannot start {name}"), e))?;
        Ok(Self {
            queue,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues `ops` to be committed with whatever else is queued.
    pub(crate) fn write(&self, ops: Vec<Op>) -> Durable {
        let (done, durable) = oneshot::channel();
        if let Err(mpsc::SendError(Message::Write(batch))) = self.queue.send(Message::Write(Batch { ops, done })) {
            let _ = batch.done.send(Err(StoreError::closed()));
        }
        durable
    }

    /// Commits what is queued and stops the writer.
    pub(crate) async fn close(&self) {
        let _ = self.queue.send(Message::Stop);
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

/// The writer thread: commit everything queued, answer, repeat until stopped.
fn write_batches<Op: Commit>(database: &Database, messages: &mpsc::Receiver<Message<Op>>, commit_seconds: &Histogram) {
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
            tracing::error!(%error, "a store write failed");
        }
        for batch in group {
            let _ = batch.done.send(result.clone());
        }
    }
}

fn commit<Op: Commit>(database: &Database, group: &[Batch<Op>]) -> Result<(), StoreError> {
    let transaction = database
        .begin_write()
        .map_err(|e| StoreError::new("cannot start a transaction", e))?;
    Op::apply(&transaction, group.iter().flat_map(|batch| &batch.ops))?;
    transaction.commit().map_err(|e| StoreError::new("cannot commit", e))
}

/// Creates `table` when it is missing (so that a fresh database reads as empty), then hands
/// each of its entries to `each`, in key order.
pub(crate) fn read_table<K: Key + 'static>(
    database: &Database,
    table: TableDefinition<K, &[u8]>,
    mut each: impl FnMut(K::SelfType<'_>, &[u8]),
) -> Result<(), StoreError> {
    let create = database
        .begin_write()
        .map_err(|e| StoreError::new("cannot start a transaction", e))?;
    create
        .open_table(table)
        .map_err(|e| StoreError::new("cannot open the table", e))?;
    create.commit().map_err(|e| StoreError::new("cannot commit", e))?;

    let read = database
        .begin_read()
        .map_err(|e| StoreError::new("cannot start a read", e))?;
    let table = read
        .open_table(table)
        .map_err(|e| StoreError::new("cannot open the table", e))?;
    for entry in table.iter().map_err(|e| StoreError::new("cannot read", e))? {
        let (key, value) = entry.map_err(|e| StoreError::new("cannot read", e))?;
        each(key.value(), value.value());
    }
    Ok(())
}
