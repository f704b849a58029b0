//! Durable storage: append-only segment files of checksummed blocks, written by one thread
//! that group-commits (one fsync per batch), with an in-memory index of every block.
//!
//! On disk, a segment `NNNNNNNNNNNNNNNNNNNN.seg` is a sequence of blocks:
//!
//! ```text
//! "RCB1" | header length u32 LE | payload length u32 LE | CRC-32 of header and payload u32 LE
//! header: JSON {first id, count, time range, level range, services}
//! payload: the records' stored lines, each ending in '\n'
//! ```
//!
//! Invariants:
//! - a record is acknowledged only after the block holding it was written and `fdatasync`ed;
//! - a block is written whole or cut off: when a write or sync fails (a full disk), the file is
//!   truncated back to the previous block, and the batch is answered with an error;
//! - the active segment's file runs ahead of its blocks by up to [`ZEROED_AHEAD`] bytes of
//!   zeros, written in one piece when the blocks reach them: a commit then overwrites space the
//!   file already has, so its `fdatasync` flushes the block alone, where appending past the end
//!   of the file would also make it journal the file's new size (measured here: 210 against
//!   380-450 µs per commit). A full segment is cut back to its last block when the next begins;
//! - on open, the newest segment is checked block by block and a torn tail (a block cut short by
//!   a crash, or whose checksum fails) is cut off and counted; a tail that begins with zeros is
//!   the unused zeroed space (a crash came before it was cut back) and is cut off without being
//!   counted; older segments were synced before the next one began, so only their headers are
//!   read;
//! - ids are consecutive across blocks and segments, in commit order;
//! - a commit waits, at most the commit window, until it holds as many appends as the previous
//!   commit held (or the configured minimum): one client sending one request at a time is never
//!   held, and under load commits grow with the load and fsyncs stay few (measured with 8 to 512
//!   connections in BENCHMARKS.md: a fixed window held each of 8 clients for all of it, 4-5 times
//!   slower; no window at all made 512 connections 10-20 % slower);
//! - records at error level or above are committed at once, never held;
//! - readers take the index's locks only to copy block metadata, never across I/O, so a query
//!   never holds up the writer.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rollcall_wire::Level;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

use crate::metrics::Metrics;
use crate::record::{Entry, unix_nanos};

const MAGIC: &[u8; 4] = b"RCB1";
const PREFIX_LEN: usize = 16;
/// How often the writer checks age-based retention when nothing is written.
const RETENTION_CHECK: Duration = Duration::from_secs(60);
/// How far the active segment's file is zero-filled ahead of its blocks (see the module docs).
const ZEROED_AHEAD: u64 = 1 << 20;

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
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Writing or syncing failed (the disk is full, say); nothing of the batch was kept.
    #[error("the log store could not write: {0}")]
    Write(String),
    /// Too much is waiting to be written: try again shortly.
    #[error("the log store is busy: {0} bytes are waiting to be written")]
    Busy(usize),
    /// The store is shutting down.
    #[error("the log store is closed")]
    Closed,
}

/// What a block's header says about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BlockHeader {
    pub first: u64,
    pub count: u32,
    pub min_time: i64,
    pub max_time: i64,
    pub min_level: Level,
    pub max_level: Level,
    /// Each service in the block with the most severe level it logged there, so that a query
    /// for one service's errors skips blocks where only other services erred.
    pub services: Vec<(Arc<str>, Level)>,
}

/// A block's header and where its payload is.
#[derive(Debug)]
pub(crate) struct BlockMeta {
    pub header: BlockHeader,
    pub payload_offset: u64,
    pub payload_len: u32,
}

impl BlockMeta {
    /// The id after the block's last record.
    pub(crate) fn end(&self) -> u64 {
        self.header.first + u64::from(self.header.count)
    }
}

/// One segment file and its blocks.
#[derive(Debug)]
pub(crate) struct Segment {
    pub number: u64,
    pub path: PathBuf,
    pub file: File,
    pub blocks: RwLock<Vec<Arc<BlockMeta>>>,
    pub size: AtomicU64,
}

impl Segment {
    /// The newest record's time, if the segment holds any.
    fn max_time(&self) -> Option<i64> {
        read(&self.blocks).iter().map(|b| b.header.max_time).max()
    }
}

/// Records just committed, for tails.
#[derive(Debug)]
pub(crate) struct Committed {
    pub first: u64,
    pub entries: Vec<Entry>,
}

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
}

/// What recovery found.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub torn_blocks: u64,
    pub torn_bytes: u64,
}

impl Store {
    /// Opens (or creates) the store in `config.dir`, cutting off a torn tail, and starts the
    /// writer thread.
    pub(crate) fn open(config: StoreConfig, metrics: Arc<Metrics>) -> std::io::Result<(Self, Recovery)> {
        fs::create_dir_all(&config.dir)?;
        let mut numbers: Vec<u64> = fs::read_dir(&config.dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut recovery = Recovery::default();
        let mut segments = Vec::new();
        for (i, number) in numbers.iter().enumerate() {
            let newest = i + 1 == numbers.len();
            segments.push(Arc::new(open_segment(&config.dir, *number, newest, &mut recovery)?));
        }
        if segments.is_empty() {
            segments.push(Arc::new(create_segment(&config.dir, 0)?));
        }
        let next_id = segments
            .iter()
            .rev()
            .find_map(|s| read(&s.blocks).last().map(|b| b.end()))
            .unwrap_or(0);
        metrics.torn_blocks.inc_by(recovery.torn_blocks);
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
        });
        let store = Self { shared };
        store.update_gauges();
        let zeroed_to = store.active_segment().size.load(Ordering::Relaxed);
        let writer = Writer {
            store: store.clone(),
            config,
            next_id,
            zeroed_to,
            previous_batch: 1,
        };
        let handle = std::thread::Builder::new()
            .name("log-store-writer".into())
            .spawn(move || writer.run(&receiver))?;
        let _ = store.shared.writer_thread.set(handle.thread().clone());
        *lock(&store.shared.writer) = Some(handle);
        Ok((store, recovery))
    }

    /// Stores `entries` durably; resolves with the first one's id once they are on disk.
    pub(crate) async fn append(&self, entries: Vec<Entry>) -> Result<u64, StoreError> {
        if entries.is_empty() {
            return Ok(self.next_id());
        }
        let bytes: usize = entries.iter().map(|e| e.line.len() + 1).sum();
        let queued = self.shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if queued > 0 && queued + bytes > self.shared.max_queued_bytes {
            self.dequeued(bytes);
            return Err(StoreError::Busy(queued));
        }
        self.shared.metrics.queued_bytes.set(gauge(queued + bytes));
        let urgent = entries.iter().any(|e| e.level >= Level::Error);
        let (ack, done) = oneshot::channel();
        // Counted before it is sent, so that the writer never takes an append not yet counted.
        let waiting = self.shared.waiting_appends.fetch_add(1, Ordering::SeqCst) + 1;
        let sent = read(&self.shared.sender).as_ref().map(|sender| {
            sender.send(Append {
                entries,
                bytes,
                urgent,
                ack,
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            self.shared.waiting_appends.fetch_sub(1, Ordering::SeqCst);
            self.dequeued(bytes);
            return Err(StoreError::Closed);
        }
        if (urgent || waiting >= self.shared.wake_at.load(Ordering::SeqCst))
            && let Some(writer) = self.shared.writer_thread.get()
        {
            writer.unpark();
        }
        done.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Every segment, oldest first.
    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        read(&self.shared.segments).clone()
    }

    /// The segment being written: there always is one.
    fn active_segment(&self) -> Arc<Segment> {
        read(&self.shared.segments)
            .last()
            .cloned()
            .expect("there is always an active segment")
    }

    /// The id the next record will get.
    pub(crate) fn next_id(&self) -> u64 {
        self.segments()
            .iter()
            .rev()
            .find_map(|s| read(&s.blocks).last().map(|b| b.end()))
            .unwrap_or(0)
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

    /// `bytes` are no longer waiting to be committed.
    fn dequeued(&self, bytes: usize) {
        let before = self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.shared.metrics.queued_bytes.set(gauge(before - bytes));
    }

    fn update_gauges(&self) {
        let segments = self.segments();
        let bytes: u64 = segments.iter().map(|s| s.size.load(Ordering::Relaxed)).sum();
        self.shared.metrics.segments.set(gauge(segments.len()));
        self.shared.metrics.disk_bytes.set(gauge(bytes));
    }
}

/// Reads a payload.
pub(crate) fn read_payload(segment: &Segment, block: &BlockMeta) -> std::io::Result<Vec<u8>> {
    let mut payload = vec![0; block.payload_len as usize];
    segment.file.read_exact_at(&mut payload, block.payload_offset)?;
    Ok(payload)
}

struct Writer {
    store: Store,
    config: StoreConfig,
    next_id: u64,
    /// Where the active segment's file ends: its blocks, then zeros.
    zeroed_to: u64,
    /// How many appends the previous commit took.
    previous_batch: usize,
}

impl Writer {
    fn run(mut self, receiver: &mpsc::Receiver<Append>) {
        loop {
            let first = match receiver.recv_timeout(RETENTION_CHECK) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    self.enforce_retention();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let shared = &self.store.shared;
            let mut batch = Vec::new();
            let mut urgent = take(shared, &mut batch, std::iter::once(first));
            let deadline = Instant::now() + self.config.commit_window;
            // Wait (within the window) for as many appends as the previous commit took: a client
            // alone is never held, while under load commits grow with it. Sleep instead of
            // waking for every append: the append that completes the batch, or an urgent one,
            // unparks this thread (see `Store::append`).
            let expected = self.previous_batch.max(self.config.commit_batch);
            loop {
                urgent |= take(shared, &mut batch, receiver.try_iter());
                let now = Instant::now();
                if urgent || batch.len() >= expected || now >= deadline {
                    break;
                }
                let missing = expected - batch.len();
                shared.wake_at.store(missing, Ordering::SeqCst);
                if shared.waiting_appends.load(Ordering::SeqCst) < missing {
                    std::thread::park_timeout(deadline - now);
                }
                shared.wake_at.store(usize::MAX, Ordering::SeqCst);
            }
            take(shared, &mut batch, receiver.try_iter());
            self.previous_batch = batch.len();
            self.commit(batch);
        }
        cut_zeroed_space(&self.store.active_segment());
    }

    fn commit(&mut self, batch: Vec<Append>) {
        let bytes: usize = batch.iter().map(|a| a.bytes).sum();
        let mut acks = Vec::with_capacity(batch.len());
        let mut entries = Vec::with_capacity(batch.iter().map(|a| a.entries.len()).sum());
        for append in batch {
            acks.push((append.entries.len() as u64, append.ack));
            entries.extend(append.entries);
        }
        let first = self.next_id;
        let outcome = self.write_block(first, &entries);
        self.store.dequeued(bytes);
        match outcome {
            Ok(()) => {
                let count = entries.len() as u64;
                self.next_id += count;
                let metrics = self.store.metrics();
                metrics.records_stored.inc_by(count);
                metrics.bytes_stored.inc_by(bytes as u64);
                let mut id = first;
                for (count, ack) in acks {
                    let _ = ack.send(Ok(id));
                    id += count;
                }
                let _ = self.store.shared.committed.send(Arc::new(Committed { first, entries }));
                self.rotate_if_full();
            }
            Err(error) => {
                tracing::error!(%error, "cannot write log records");
                for (_, ack) in acks {
                    let _ = ack.send(Err(StoreError::Write(error.to_string())));
                }
            }
        }
        self.store.update_gauges();
    }

    /// Appends one block and syncs it; on failure truncates the file back to where it was.
    fn write_block(&mut self, first: u64, entries: &[Entry]) -> std::io::Result<()> {
        let segment = self.store.active_segment();
        let header = BlockHeader {
            first,
            count: u32::try_from(entries.len()).expect("fewer than 4 billion records per commit"),
            min_time: entries.iter().map(|e| e.time).min().unwrap_or(0),
            max_time: entries.iter().map(|e| e.time).max().unwrap_or(0),
            min_level: entries.iter().map(|e| e.level).min().unwrap_or_default(),
            max_level: entries.iter().map(|e| e.level).max().unwrap_or_default(),
            services: distinct_services(entries),
        };
        let header_bytes = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let payload_len: usize = entries.iter().map(|e| e.line.len() + 1).sum();
        let mut block = Vec::with_capacity(PREFIX_LEN + header_bytes.len() + payload_len);
        block.extend_from_slice(MAGIC);
        block.extend_from_slice(&u32_len(header_bytes.len())?.to_le_bytes());
        block.extend_from_slice(&u32_len(payload_len)?.to_le_bytes());
        block.extend_from_slice(&[0; 4]);
        block.extend_from_slice(&header_bytes);
        for entry in entries {
            block.extend_from_slice(&entry.line);
            block.push(b'\n');
        }
        let crc = crc32fast::hash(&block[PREFIX_LEN..]);
        block[12..16].copy_from_slice(&crc.to_le_bytes());

        let offset = segment.size.load(Ordering::Relaxed);
        let end = offset + block.len() as u64;
        let started = Instant::now();
        let written = segment
            .file
            .write_all_at(&block, offset)
            .and_then(|()| self.zero_ahead(&segment, end))
            .and_then(|()| segment.file.sync_data());
        if let Err(error) = written {
            // Never leave half a block behind: the next block starts where this one did.
            let _ = segment.file.set_len(offset).and_then(|()| segment.file.sync_data());
            self.zeroed_to = offset;
            return Err(error);
        }
        self.store
            .metrics()
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        let meta = BlockMeta {
            header,
            payload_offset: offset + (PREFIX_LEN + header_bytes.len()) as u64,
            payload_len: u32_len(payload_len)?,
        };
        write(&segment.blocks).push(Arc::new(meta));
        segment.size.store(offset + block.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Once the active segment's blocks reach `end`, zero-fills its file [`ZEROED_AHEAD`] bytes
    /// further (never past the segment size, where the next segment begins).
    fn zero_ahead(&mut self, segment: &Segment, end: u64) -> std::io::Result<()> {
        if end < self.zeroed_to {
            return Ok(());
        }
        let to = (end + ZEROED_AHEAD).min(self.config.segment_bytes.max(end));
        let zeros = vec![0; usize::try_from(to - end).map_err(std::io::Error::other)?];
        segment.file.write_all_at(&zeros, end)?;
        self.zeroed_to = to;
        Ok(())
    }

    fn rotate_if_full(&mut self) {
        let active = self.store.active_segment();
        if active.size.load(Ordering::Relaxed) < self.config.segment_bytes {
            return;
        }
        match create_segment(&self.config.dir, active.number + 1) {
            Ok(segment) => {
                cut_zeroed_space(&active);
                self.zeroed_to = 0;
                write(&self.store.shared.segments).push(Arc::new(segment));
                self.enforce_retention();
            }
            Err(error) => tracing::error!(%error, "cannot start a new segment; the current one keeps growing"),
        }
    }

    /// Deletes the oldest closed segments while the store is over its size, and those whose
    /// newest record is older than the retention age.
    fn enforce_retention(&self) {
        let oldest_kept = unix_nanos(SystemTime::now() - self.config.retention_age).unwrap_or(0);
        loop {
            let segments = self.store.segments();
            let total: u64 = segments.iter().map(|s| s.size.load(Ordering::Relaxed)).sum();
            let Some(oldest) = segments.first().filter(|_| segments.len() > 1) else {
                break;
            };
            let too_old = oldest.max_time().is_none_or(|t| t < oldest_kept);
            if total <= self.config.retention_bytes && !too_old {
                break;
            }
            write(&self.store.shared.segments).remove(0);
            // Readers holding the segment keep reading the unlinked file until they let go.
            if let Err(error) = fs::remove_file(&oldest.path) {
                tracing::warn!(%error, path = %oldest.path.display(), "cannot delete an expired segment");
            }
            self.store.metrics().segments_deleted.inc();
        }
        self.store.update_gauges();
    }
}

/// Moves `appends` taken from the writer's channel into `batch`, counting them out of the waiting
/// ones; whether any of them is urgent.
fn take(shared: &Shared, batch: &mut Vec<Append>, appends: impl Iterator<Item = Append>) -> bool {
    let mut urgent = false;
    for append in appends {
        shared.waiting_appends.fetch_sub(1, Ordering::SeqCst);
        urgent |= append.urgent;
        batch.push(append);
    }
    urgent
}

/// Cuts a segment's file back to its last block. Not synced: if a crash undoes it, opening the
/// segment cuts the zeros off again.
fn cut_zeroed_space(segment: &Segment) {
    if let Err(error) = segment.file.set_len(segment.size.load(Ordering::Relaxed)) {
        tracing::warn!(%error, path = %segment.path.display(), "cannot cut a segment back to its last block");
    }
}

fn distinct_services(entries: &[Entry]) -> Vec<(Arc<str>, Level)> {
    let mut services: Vec<(Arc<str>, Level)> = Vec::new();
    for entry in entries {
        match services.iter_mut().find(|(service, _)| *service == entry.service) {
            Some((_, level)) => *level = (*level).max(entry.level),
            None => services.push((Arc::clone(&entry.service), entry.level)),
        }
    }
    services
}

fn gauge(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

fn u32_len(len: usize) -> std::io::Result<u32> {
    u32::try_from(len).map_err(|_| std::io::Error::other("block larger than 4 GiB"))
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.seg"))
}

fn create_segment(dir: &Path, number: u64) -> std::io::Result<Segment> {
    let path = segment_path(dir, number);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    File::open(dir)?.sync_all()?;
    Ok(Segment {
        number,
        path,
        file,
        blocks: RwLock::new(Vec::new()),
        size: AtomicU64::new(0),
    })
}

/// Opens a segment and reads its block headers; in the newest segment, verifies every block and
/// cuts off a torn tail.
fn open_segment(dir: &Path, number: u64, newest: bool, recovery: &mut Recovery) -> std::io::Result<Segment> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
    let length = file.metadata()?.len();
    let mut blocks = Vec::new();
    let mut offset = 0u64;
    while offset < length {
        if let Ok(Some(meta)) = read_block(&mut file, offset, length, newest) {
            offset = meta.payload_offset + u64::from(meta.payload_len);
            blocks.push(Arc::new(meta));
            continue;
        }
        if starts_with_zeros(&file, offset, length)? {
            // The zeroed space ahead of the blocks: nothing was ever written there.
            file.set_len(offset)?;
            file.sync_all()?;
            break;
        }
        recovery.torn_blocks += 1;
        recovery.torn_bytes += length - offset;
        tracing::warn!(
            path = %path.display(),
            offset,
            bytes = length - offset,
            "cut off a torn tail: records after this point were never acknowledged"
        );
        file.set_len(offset)?;
        file.sync_all()?;
        break;
    }
    Ok(Segment {
        number,
        path,
        file,
        blocks: RwLock::new(blocks),
        size: AtomicU64::new(offset),
    })
}

/// Whether the bytes at `offset` (a block prefix's worth, or up to `length`) are all zeros: the
/// start of the zeroed space, where no block prefix was written (a block's starts with "RCB1").
fn starts_with_zeros(file: &File, offset: u64, length: u64) -> std::io::Result<bool> {
    let mut prefix = [0u8; PREFIX_LEN];
    let len = usize::try_from((length - offset).min(PREFIX_LEN as u64)).unwrap_or(PREFIX_LEN);
    file.read_exact_at(&mut prefix[..len], offset)?;
    Ok(prefix[..len].iter().all(|&b| b == 0))
}

/// Reads the block at `offset`: `None` when it is incomplete or (if `verify`) its checksum fails.
fn read_block(file: &mut File, offset: u64, length: u64, verify: bool) -> std::io::Result<Option<BlockMeta>> {
    if length - offset < PREFIX_LEN as u64 {
        return Ok(None);
    }
    let mut prefix = [0u8; PREFIX_LEN];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut prefix)?;
    let word = |i: usize| u32::from_le_bytes([prefix[i], prefix[i + 1], prefix[i + 2], prefix[i + 3]]);
    let (header_len, payload_len, crc) = (word(4), word(8), word(12));
    let body_len = u64::from(header_len) + u64::from(payload_len);
    if &prefix[..4] != MAGIC || length - offset - (PREFIX_LEN as u64) < body_len {
        return Ok(None);
    }
    let mut header_bytes = vec![0; header_len as usize];
    file.read_exact(&mut header_bytes)?;
    if verify {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header_bytes);
        let mut payload = vec![0; payload_len as usize];
        file.read_exact(&mut payload)?;
        hasher.update(&payload);
        if hasher.finalize() != crc {
            return Ok(None);
        }
    }
    let Ok(header) = serde_json::from_slice::<BlockHeader>(&header_bytes) else {
        return Ok(None);
    };
    Ok(Some(BlockMeta {
        header,
        payload_offset: offset + PREFIX_LEN as u64 + u64::from(header_len),
        payload_len,
    }))
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
