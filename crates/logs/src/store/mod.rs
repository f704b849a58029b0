//! Durable storage: append-only segment files of checksummed blocks, written by one thread
//! that group-commits (one fsync per batch), with an in-memory index of every block.
//!
//! The rooms: `block` is the on-disk format (encoding and decoding side by side); `segment` the
//! files and their recovery on open; `writer` the thread that commits, preallocates, rotates and
//! expires; this file the [`Store`] handle everything else holds: appends with backpressure,
//! the segment list readers walk, the broadcast of commits to tails, and the gauges.
//!
//! Invariants (each room's header has its own):
//! - a record is acknowledged only after the block holding it was written and `fdatasync`ed
//!   (the writer's);
//! - an append is refused with [`StoreError::Busy`] rather than queued once more than the
//!   configured bytes wait to be written, so memory stays bounded under any load;
//! - readers take the index's locks only to copy block metadata, never across I/O, so a query
//!   never holds up the writer.

mod block;
mod segment;
mod writer;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use rollcall_wire::Level;
use tokio::sync::{broadcast, oneshot};

pub(crate) use self::block::{BlockHeader, Payload, read_payload};

/// Walks `file` (holding `length` bytes) as recovery and reads do, for the fuzz targets: every
/// block decoded, verified or not, read, and resynchronised past what cannot be.
#[cfg(test)]
pub(crate) fn fuzz_decode(file: &fs::File, length: u64) {
    let mut offset = 0;
    while offset < length {
        let _ = block::decode(file, offset, length, false);
        match block::decode(file, offset, length, true) {
            Ok(block::Decoded::Block(meta)) => {
                let _ = read_payload(file, &meta);
                offset = meta.next_offset();
            }
            _ => match block::find_next(file, offset + 1, length) {
                Ok(Some((_, meta))) => offset = meta.next_offset(),
                _ => break,
            },
        }
    }
}
use self::segment::{Recovery, Segment};
use self::writer::Writer;
use crate::metrics::Metrics;
use crate::record::Entry;

/// Limits and timing of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where segments live.
    pub dir: PathBuf,
    /// A segment is closed and a new one begun once it reaches this size.
    pub segment_bytes: u64,
    /// The oldest segments are deleted while all segments together exceed this.
    pub retention_bytes: u64,
    /// Segments whose newest record is older than this are deleted.
    pub retention_age: Duration,
    /// The longest a commit waits for more appends before its fsync.
    pub commit_window: Duration,
    /// The fewest appends a commit waits for (within the window).
    pub commit_batch: usize,
    /// Bytes of records waiting to be committed beyond which ingest answers 429.
    pub max_queued_bytes: usize,
}

/// Why records were not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Writing or syncing failed (the disk is full, say); nothing of the batch was kept. The
    /// cause is logged by the writer.
    #[error("the log store could not write the records to disk")]
    Write,
    /// Too much is waiting to be written: try again shortly.
    #[error("the log store is busy: {0} bytes are waiting to be written")]
    Busy(usize),
    /// The store is shutting down.
    #[error("the log store is closed")]
    Closed,
}

/// Records just committed, for tails.
#[derive(Debug)]
pub(crate) struct Committed {
    pub first: u64,
    pub entries: Vec<Entry>,
}

/// One append on its way to the writer.
struct Append {
    entries: Vec<Entry>,
    bytes: usize,
    urgent: bool,
    ack: oneshot::Sender<Result<u64, StoreError>>,
}

/// The store: cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    shared: Arc<Shared>,
}

/// What the handles and the writer share.
struct Shared {
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Taken away by `close`; appends only read it, so they never wait for each other.
    sender: RwLock<Option<mpsc::Sender<Append>>>,
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    committed: broadcast::Sender<Arc<Committed>>,
    metrics: Arc<Metrics>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The writer thread, unparked by an urgent append so that it commits at once, and once
    /// `wake_at` appends wait.
    writer_thread: OnceLock<std::thread::Thread>,
    /// Appends sent to the writer and not yet taken by it.
    waiting_appends: AtomicUsize,
    /// How many waiting appends the parked writer wants to be woken for (`usize::MAX`: none).
    wake_at: AtomicUsize,
    /// Holds every sync of the writer while held (tests of "acknowledged means synced").
    #[cfg(test)]
    hold: OnceLock<Arc<writer::tests::Hold>>,
}

impl Store {
    /// Opens (or creates) the store in `config.dir`, cutting off a torn tail, and starts the
    /// writer thread. Returns what recovery found.
    pub(crate) fn open(config: StoreConfig, metrics: Arc<Metrics>) -> std::io::Result<(Self, Recovery)> {
        fs::create_dir_all(&config.dir)?;
        let numbers = segment::numbers(&config.dir)?;
        let mut recovery = Recovery::default();
        let mut segments = Vec::new();
        for (i, number) in numbers.iter().enumerate() {
            let newest = i + 1 == numbers.len();
            segments.push(Arc::new(Segment::open(&config.dir, *number, newest, &mut recovery)?));
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(&config.dir, 0)?));
        }
        metrics.torn_blocks.inc_by(recovery.torn_blocks);
        metrics.damaged_blocks.inc_by(recovery.damaged_ranges);
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            segments: RwLock::new(segments),
            sender: RwLock::new(Some(sender)),
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes: config.max_queued_bytes,
            committed: broadcast::channel(1024).0,
            metrics,
            writer: Mutex::new(None),
            writer_thread: OnceLock::new(),
            waiting_appends: AtomicUsize::new(0),
            wake_at: AtomicUsize::new(usize::MAX),
            #[cfg(test)]
            hold: OnceLock::new(),
        });
        shared.update_gauges();
        let writer = Writer {
            next_id: shared.next_id(),
            zeroed_to: shared.active_segment().size.load(Ordering::Relaxed),
            shared: Arc::clone(&shared),
            config,
            previous_batch: 1,
        };
        let handle = std::thread::Builder::new()
            .name("log-store-writer".into())
            .spawn(move || writer.run(&receiver))?;
        let _ = shared.writer_thread.set(handle.thread().clone());
        *lock(&shared.writer) = Some(handle);
        Ok((Self { shared }, recovery))
    }

    /// Stores `entries` durably; resolves with the first one's id once they are on disk.
    pub(crate) async fn append(&self, entries: Vec<Entry>) -> Result<u64, StoreError> {
        if entries.is_empty() {
            return Ok(self.next_id());
        }
        let shared = &self.shared;
        let bytes: usize = entries.iter().map(|e| e.line.len() + 1).sum();
        let queued = shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if queued > 0 && queued + bytes > shared.max_queued_bytes {
            shared.dequeued(bytes);
            return Err(StoreError::Busy(queued));
        }
        shared.metrics.queued_bytes.set(gauge(queued + bytes));
        let urgent = entries.iter().any(|e| e.level >= Level::Error);
        let (ack, done) = oneshot::channel();
        // Counted before it is sent, so that the writer never takes an append not yet counted.
        let waiting = shared.waiting_appends.fetch_add(1, Ordering::SeqCst) + 1;
        let sent = read(&shared.sender).as_ref().map(|sender| {
            sender.send(Append {
                entries,
                bytes,
                urgent,
                ack,
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            shared.waiting_appends.fetch_sub(1, Ordering::SeqCst);
            shared.dequeued(bytes);
            return Err(StoreError::Closed);
        }
        if (urgent || waiting >= shared.wake_at.load(Ordering::SeqCst))
            && let Some(writer) = shared.writer_thread.get()
        {
            writer.unpark();
        }
        done.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Every segment, oldest first.
    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        self.shared.segments()
    }

    /// The id the next record will get.
    pub(crate) fn next_id(&self) -> u64 {
        self.shared.next_id()
    }

    /// Follows commits from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.shared.committed.subscribe()
    }

    /// Stops the writer after it committed what was queued.
    pub(crate) fn close(&self) {
        write(&self.shared.sender).take();
        if let Some(handle) = lock(&self.shared.writer).take() {
            let _ = handle.join();
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

impl Shared {
    fn segments(&self) -> Vec<Arc<Segment>> {
        read(&self.segments).clone()
    }

    /// The segment being written: there always is one.
    fn active_segment(&self) -> Arc<Segment> {
        read(&self.segments)
            .last()
            .cloned()
            .expect("there is always an active segment")
    }

    fn next_id(&self) -> u64 {
        read(&self.segments).iter().rev().find_map(|s| s.end()).unwrap_or(0)
    }

    /// `bytes` are no longer waiting to be committed.
    fn dequeued(&self, bytes: usize) {
        let before = self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.metrics.queued_bytes.set(gauge(before - bytes));
    }

    fn update_gauges(&self) {
        let segments = self.segments();
        let bytes: u64 = segments.iter().map(|s| s.size.load(Ordering::Relaxed)).sum();
        self.metrics.segments.set(gauge(segments.len()));
        self.metrics.disk_bytes.set(gauge(bytes));
    }
}

fn gauge(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
