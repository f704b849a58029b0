//! The writer thread: the adaptive group commit, zero-ahead preallocation, rotation and
//! retention.
//!
//! Invariants:
//! - a record is acknowledged only after the block holding it was written and `fdatasync`ed;
//! - a block is written whole or cut off: when a write or sync fails (a full disk), the file is
//!   truncated back to the previous block, and the batch is answered with an error;
//! - the active segment's file runs ahead of its blocks by up to [`ZEROED_AHEAD`] bytes of
//!   zeros, written in one piece when the blocks reach them: a commit then overwrites space the
//!   file already has, so its `fdatasync` flushes the block alone, where appending past the end
//!   of the file would also make it journal the file's new size (BENCHMARKS.md, "Log service":
//!   about half the time per commit on the disk measured). A full segment is cut back to its
//!   last block when the next begins;
//! - ids are consecutive across blocks and segments, in commit order;
//! - a commit waits, at most the commit window, until it holds as many appends as the previous
//!   commit held (or the configured minimum): one client sending one request at a time is never
//!   held, and under load commits grow with the load and fsyncs stay few (BENCHMARKS.md, the
//!   seed path at 8 to 512 connections: a fixed window held each of 8 clients for all of it;
//!   no window at all made 512 connections 10-20 % slower);
//! - records at error level or above are committed at once, never held.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use super::block;
use super::segment::Segment;
use super::{Append, Committed, Shared, StoreConfig, StoreError, write};
use crate::record::{Entry, unix_nanos};

/// How often the writer checks age-based retention when nothing is written.
const RETENTION_CHECK: Duration = Duration::from_secs(60);
/// How far the active segment's file is zero-filled ahead of its blocks (see the module docs).
const ZEROED_AHEAD: u64 = 1 << 20;

pub(super) struct Writer {
    pub shared: Arc<Shared>,
    pub config: StoreConfig,
    pub next_id: u64,
    /// Where the active segment's file ends: its blocks, then zeros.
    pub zeroed_to: u64,
    /// How many appends the previous commit took.
    pub previous_batch: usize,
}

impl Writer {
    pub(super) fn run(mut self, receiver: &mpsc::Receiver<Append>) {
        loop {
            let first = match receiver.recv_timeout(RETENTION_CHECK) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    self.enforce_retention();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let batch = self.gather(first, receiver);
            self.previous_batch = batch.len();
            self.commit(batch);
        }
        self.shared.active_segment().cut_zeroed_space();
    }

    /// The appends of one commit: `first`, then (within the window) as many as the previous
    /// commit took. A client alone is never held, while under load commits grow with it. The
    /// thread sleeps instead of waking for every append: the append that completes the batch,
    /// or an urgent one, unparks it (see `Store::append`).
    fn gather(&self, first: Append, receiver: &mpsc::Receiver<Append>) -> Vec<Append> {
        let shared = &self.shared;
        let mut batch = Vec::new();
        let mut urgent = take(shared, &mut batch, std::iter::once(first));
        let deadline = Instant::now() + self.config.commit_window;
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
        batch
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
        self.shared.dequeued(bytes);
        match outcome {
            Ok(()) => {
                let count = entries.len() as u64;
                self.next_id += count;
                let metrics = &self.shared.metrics;
                metrics.records_stored.inc_by(count);
                metrics.bytes_stored.inc_by(bytes as u64);
                let mut id = first;
                for (count, ack) in acks {
                    let _ = ack.send(Ok(id));
                    id += count;
                }
                let _ = self.shared.committed.send(Arc::new(Committed { first, entries }));
                self.rotate_if_full();
            }
            Err(error) => {
                tracing::error!(%error, records = entries.len(), "cannot write log records; none of the batch was kept");
                for (_, ack) in acks {
                    let _ = ack.send(Err(StoreError::Write));
                }
            }
        }
        self.shared.update_gauges();
    }

    /// Appends one block to the active segment and syncs it; on failure truncates the file back
    /// to where it was.
    fn write_block(&mut self, first: u64, entries: &[Entry]) -> io::Result<()> {
        let segment = self.shared.active_segment();
        let encoded = block::encode(first, entries)?;
        let offset = segment.size.load(Ordering::Relaxed);
        let end = offset + encoded.bytes.len() as u64;
        let started = Instant::now();
        let written = segment
            .file
            .write_all_at(&encoded.bytes, offset)
            .and_then(|()| self.zero_ahead(&segment, end))
            .and_then(|()| self.sync(&segment.file));
        if let Err(error) = written {
            // Never leave half a block behind: the next block starts where this one did.
            let _ = segment.file.set_len(offset).and_then(|()| segment.file.sync_data());
            self.zeroed_to = offset;
            return Err(error);
        }
        self.shared
            .metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        write(&segment.blocks).push(Arc::new(encoded.meta_at(offset)));
        segment.size.store(end, Ordering::Relaxed);
        Ok(())
    }

    /// Makes what was written to `file` durable. (`self` holds the test hook.)
    #[cfg_attr(not(test), allow(clippy::unused_self))]
    fn sync(&self, file: &File) -> io::Result<()> {
        #[cfg(test)]
        if let Some(hold) = self.shared.hold.get() {
            hold.pass();
        }
        file.sync_data()
    }

    /// Once the active segment's blocks reach `end`, zero-fills its file [`ZEROED_AHEAD`] bytes
    /// further (never past the segment size, where the next segment begins).
    fn zero_ahead(&mut self, segment: &Segment, end: u64) -> io::Result<()> {
        if end < self.zeroed_to {
            return Ok(());
        }
        let to = (end + ZEROED_AHEAD).min(self.config.segment_bytes.max(end));
        let zeros = vec![0; usize::try_from(to - end).map_err(io::Error::other)?];
        segment.file.write_all_at(&zeros, end)?;
        self.zeroed_to = to;
        Ok(())
    }

    fn rotate_if_full(&mut self) {
        let active = self.shared.active_segment();
        if active.size.load(Ordering::Relaxed) < self.config.segment_bytes {
            return;
        }
        match Segment::create(&self.config.dir, active.number + 1) {
            Ok(segment) => {
                active.cut_zeroed_space();
                self.zeroed_to = 0;
                write(&self.shared.segments).push(Arc::new(segment));
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
            let segments = self.shared.segments();
            let total: u64 = segments.iter().map(|s| s.size.load(Ordering::Relaxed)).sum();
            let Some(oldest) = segments.first().filter(|_| segments.len() > 1) else {
                break;
            };
            let too_old = oldest.max_time().is_none_or(|t| t < oldest_kept);
            if total <= self.config.retention_bytes && !too_old {
                break;
            }
            write(&self.shared.segments).remove(0);
            // Readers holding the segment keep reading the unlinked file until they let go.
            if let Err(error) = fs::remove_file(&oldest.path) {
                tracing::warn!(%error, path = %oldest.path.display(), "cannot delete an expired segment");
            }
            self.shared.metrics.segments_deleted.inc();
        }
        self.shared.update_gauges();
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

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Condvar, Mutex};

    use rollcall_wire::Level;

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Store;
    use crate::store::block::tests::entry;

    /// Holds the writer at its sync while held; counts the syncs that reached it.
    #[derive(Debug, Default)]
    pub(crate) struct Hold {
        state: Mutex<(bool, usize)>,
        changed: Condvar,
    }

    impl Hold {
        fn held() -> Arc<Self> {
            let hold = Self::default();
            hold.state.lock().expect("lock").0 = true;
            Arc::new(hold)
        }

        pub(super) fn pass(&self) {
            let mut state = self.state.lock().expect("lock");
            state.1 += 1;
            self.changed.notify_all();
            while state.0 {
                state = self.changed.wait(state).expect("lock");
            }
        }

        fn syncs_reached(&self) -> usize {
            self.state.lock().expect("lock").1
        }

        fn release(&self) {
            self.state.lock().expect("lock").0 = false;
            self.changed.notify_all();
        }
    }

    fn config(dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            dir: dir.to_owned(),
            segment_bytes: 1 << 20,
            retention_bytes: 1 << 30,
            retention_age: Duration::from_secs(3600),
            commit_window: Duration::from_millis(2),
            commit_batch: 1,
            max_queued_bytes: 1 << 20,
        }
    }

    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn no_record_is_acknowledged_before_its_block_is_synced() {
        let dir = tempfile::tempdir().expect("dir");
        let hold = Hold::held();
        let (store, _) = Store::open(config(dir.path()), Arc::new(Metrics::default())).expect("open");
        store.shared.hold.set(Arc::clone(&hold)).expect("no hold yet");
        let appending = tokio::spawn({
            let store = store.clone();
            async move { store.append(vec![entry("a", Level::Info, 1, "held")]).await }
        });
        eventually("the writer reached the sync", || hold.syncs_reached() == 1).await;
        // The writer is blocked in its sync: nothing may have been acknowledged or announced.
        tokio::task::yield_now().await;
        assert!(!appending.is_finished(), "acknowledged before the sync finished");
        assert_eq!(
            store.next_id(),
            0,
            "the block is visible to readers before it is synced"
        );

        hold.release();
        let id = appending.await.expect("joined").expect("stored");
        assert_eq!(id, 0);
        assert_eq!(store.next_id(), 1);
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("closed");
    }

    #[tokio::test]
    async fn a_failed_write_is_answered_without_its_cause_and_keeps_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, _) = Store::open(config(dir.path()), Arc::new(Metrics::default())).expect("open");
        store
            .append(vec![entry("a", Level::Info, 1, "kept")])
            .await
            .expect("stored");
        // Replace the segment's file by a read-only one under the writer: its next write fails.
        let segment = store.segments().pop().expect("active");
        let path = segment.path.clone();
        drop(segment);
        let read_only = File::open(&path).expect("open read-only");
        let replaced = Arc::new(Segment {
            number: 0,
            path,
            file: read_only,
            blocks: std::sync::RwLock::new(Vec::new()),
            size: std::sync::atomic::AtomicU64::new(0),
        });
        *write(&store.shared.segments) = vec![replaced];
        let error = store
            .append(vec![entry("a", Level::Error, 2, "lost")])
            .await
            .expect_err("a read-only file cannot be written");
        assert!(matches!(error, StoreError::Write));
        assert_eq!(error.to_string(), "the log store could not write the records to disk");
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("closed");
    }
}
