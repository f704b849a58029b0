//! Segment files: naming, creating, and opening with crash recovery.
//!
//! A segment `NNNNNNNNNNNNNNNNNNNN.seg` holds blocks back to back (see `block`), and while it is
//! the newest, zeros after them (see the writer's zero-ahead). Recovery, on open:
//! - the newest segment is checked block by block (checksums included); older segments were
//!   synced before the next one began, so only their headers are read (their payloads' checksums
//!   are checked on every read instead);
//! - where a block cannot be read (cut short, damaged, or zeros), the rest of the file is searched
//!   for the next whole block with a valid checksum. If there is one, what lies between is
//!   *damage*: it is skipped (left on disk), counted and logged with its range, and every block
//!   after it is kept. If there is none, it is the tail: zeros are the unused zeroed space (a
//!   crash came before it was cut back) and are cut off silently; anything else is a torn tail
//!   (a block a crash cut short, never acknowledged), cut off and counted.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::block::{self, BlockMeta, Decoded};
use super::read;

/// One segment file and its blocks.
#[derive(Debug)]
pub(crate) struct Segment {
    pub number: u64,
    pub path: PathBuf,
    pub file: File,
    pub blocks: RwLock<Vec<Arc<BlockMeta>>>,
    /// Where its last block ends (the file may run further, with zeros).
    pub size: AtomicU64,
}

/// What recovery found.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Torn tails cut off (one at most per segment).
    pub torn_blocks: u64,
    pub torn_bytes: u64,
    /// Damaged ranges skipped, with blocks kept after them.
    pub damaged_ranges: u64,
    pub damaged_bytes: u64,
}

impl Segment {
    /// The newest record's time, if the segment holds any.
    pub(crate) fn max_time(&self) -> Option<i64> {
        read(&self.blocks).iter().map(|b| b.header.max_time).max()
    }

    /// The id after its last record, if it holds any.
    pub(crate) fn end(&self) -> Option<u64> {
        read(&self.blocks).last().map(|b| b.end())
    }

    /// Creates segment `number` in `dir` (empty) and makes its name durable.
    pub(crate) fn create(dir: &Path, number: u64) -> io::Result<Self> {
        let path = path(dir, number);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        File::open(dir)?.sync_all()?;
        Ok(Self {
            number,
            path,
            file,
            blocks: RwLock::new(Vec::new()),
            size: AtomicU64::new(0),
        })
    }

    /// Opens segment `number` and reads its block headers; if it is the `newest`, verifies
    /// every block and cuts off a torn tail or leftover zeros (see the module docs).
    pub(crate) fn open(dir: &Path, number: u64, newest: bool, recovery: &mut Recovery) -> io::Result<Self> {
        let path = path(dir, number);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let length = file.metadata()?.len();
        let mut blocks = Vec::new();
        let mut offset = 0u64;
        while offset < length {
            let decoded = block::decode(&file, offset, length, newest)?;
            if let Decoded::Block(meta) = decoded {
                offset = meta.next_offset();
                blocks.push(Arc::new(meta));
                continue;
            }
            if let Some((next, meta)) = block::find_next(&file, offset + 1, length)? {
                recovery.damaged_ranges += 1;
                recovery.damaged_bytes += next - offset;
                tracing::error!(
                    path = %path.display(),
                    from = offset,
                    to = next,
                    "skipped a damaged range: the records stored there are lost, the blocks after it are kept"
                );
                offset = meta.next_offset();
                blocks.push(Arc::new(meta));
                continue;
            }
            if !matches!(decoded, Decoded::Zeros) {
                // The zeroed space ahead of the blocks is not counted: nothing was written there.
                recovery.torn_blocks += 1;
                recovery.torn_bytes += length - offset;
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    bytes = length - offset,
                    "cut off a torn tail: records after this point were never acknowledged"
                );
            }
            file.set_len(offset)?;
            file.sync_all()?;
            break;
        }
        Ok(Self {
            number,
            path,
            file,
            blocks: RwLock::new(blocks),
            size: AtomicU64::new(offset),
        })
    }

    /// Cuts the file back to its last block. Not synced: if a crash undoes it, opening the
    /// segment cuts the zeros off again.
    pub(crate) fn cut_zeroed_space(&self) {
        if let Err(error) = self.file.set_len(self.size.load(Ordering::Relaxed)) {
            tracing::warn!(%error, path = %self.path.display(), "cannot cut a segment back to its last block");
        }
    }
}

/// The numbers of the segments in `dir`, oldest first.
pub(crate) fn numbers(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers: Vec<u64> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

fn path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.seg"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use rollcall_wire::Level;

    use super::*;
    use crate::store::block::tests::entry;

    /// Writes segment 0 in `dir` with three blocks of one record each; the blocks' offsets and
    /// the end of the last.
    fn three_blocks(dir: &Path) -> (Vec<u64>, u64) {
        let file = File::create(path(dir, 0)).expect("create");
        let mut offsets = Vec::new();
        let mut offset = 0;
        for id in 0..3 {
            let encoded = block::encode(id, &[entry("a", Level::Info, 1, "m")]).expect("encode");
            file.write_all_at(&encoded.bytes, offset).expect("write");
            offsets.push(offset);
            offset += encoded.bytes.len() as u64;
        }
        (offsets, offset)
    }

    fn reopen(dir: &Path, newest: bool) -> (Segment, Recovery) {
        let mut recovery = Recovery::default();
        let segment = Segment::open(dir, 0, newest, &mut recovery).expect("open");
        (segment, recovery)
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let (offsets, end) = three_blocks(dir.path());
        File::options()
            .write(true)
            .open(path(dir.path(), 0))
            .and_then(|f| f.set_len(end - 3))
            .expect("tear");
        let (segment, recovery) = reopen(dir.path(), true);
        assert_eq!(read(&segment.blocks).len(), 2);
        assert_eq!(segment.end(), Some(2));
        assert_eq!(recovery.torn_blocks, 1);
        assert_eq!(recovery.torn_bytes, end - 3 - offsets[2]);
        assert_eq!(
            segment.file.metadata().expect("meta").len(),
            offsets[2],
            "the file is cut back"
        );
    }

    #[test]
    fn zeroed_space_is_cut_off_without_being_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, end) = three_blocks(dir.path());
        File::options()
            .write(true)
            .open(path(dir.path(), 0))
            .and_then(|f| f.set_len(end + (1 << 20)))
            .expect("zero-fill");
        let (segment, recovery) = reopen(dir.path(), true);
        assert_eq!(read(&segment.blocks).len(), 3);
        assert_eq!((recovery.torn_blocks, recovery.torn_bytes), (0, 0));
        assert_eq!(segment.size.load(Ordering::Relaxed), end);
        assert_eq!(segment.file.metadata().expect("meta").len(), end);
    }

    #[test]
    fn a_checksum_mismatch_in_the_newest_segment_loses_that_block_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let (offsets, end) = three_blocks(dir.path());
        let file = File::options().write(true).open(path(dir.path(), 0)).expect("open");
        file.write_all_at(b"X", offsets[2] - 2)
            .expect("damage the second block's payload");
        let (segment, recovery) = reopen(dir.path(), true);
        let kept: Vec<u64> = read(&segment.blocks).iter().map(|b| b.header.first).collect();
        assert_eq!(kept, [0, 2], "the blocks before and after the damage are kept");
        assert_eq!(
            (recovery.damaged_ranges, recovery.damaged_bytes),
            (1, offsets[2] - offsets[1])
        );
        assert_eq!(recovery.torn_blocks, 0, "damage is not a torn tail");
        assert_eq!(segment.size.load(Ordering::Relaxed), end);
        assert_eq!(segment.file.metadata().expect("meta").len(), end, "nothing is cut off");
    }

    #[test]
    fn a_damaged_block_prefix_in_an_older_segment_loses_that_block_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let (offsets, _) = three_blocks(dir.path());
        let file = File::options().write(true).open(path(dir.path(), 0)).expect("open");
        file.write_all_at(&[0xff; 8], offsets[1] + 4)
            .expect("damage the second block's lengths");
        let (segment, recovery) = reopen(dir.path(), false);
        let kept: Vec<u64> = read(&segment.blocks).iter().map(|b| b.header.first).collect();
        assert_eq!(kept, [0, 2]);
        assert_eq!(recovery.damaged_ranges, 1);
    }

    #[test]
    fn an_older_segment_is_read_by_its_headers_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let (offsets, _) = three_blocks(dir.path());
        let file = File::options().write(true).open(path(dir.path(), 0)).expect("open");
        file.write_all_at(b"X", offsets[2] - 2)
            .expect("damage the second block's payload");
        let (segment, recovery) = reopen(dir.path(), false);
        assert_eq!(read(&segment.blocks).len(), 3);
        assert_eq!(recovery.torn_blocks, 0);
    }

    #[test]
    fn segments_are_listed_oldest_first_and_other_files_are_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        for number in [10, 2, 7] {
            Segment::create(dir.path(), number).expect("create");
        }
        fs::write(dir.path().join("notes.txt"), "x").expect("write");
        assert_eq!(numbers(dir.path()).expect("list"), [2, 7, 10]);
    }
}
