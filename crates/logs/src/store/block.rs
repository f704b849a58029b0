//! The on-disk block format, encoding and decoding side by side.
//!
//! ```text
//! "RCB1" | header length u32 LE | payload length u32 LE | CRC-32 of header and payload u32 LE
//! header: JSON {first id, count, time range, level range, services}
//! payload: the records' stored lines, each ending in '\n'
//! ```
//!
//! A block is the unit of a commit: the writer encodes a batch into one block, writes it whole
//! and syncs it. Decoding tells apart the four things a reader can find at an offset: a whole
//! block, a block cut short (a crash during its write), a block whose checksum fails (damaged
//! after it was written), and zeros (the preallocated space ahead of the blocks, where no block
//! ever began: every block starts with "RCB1"). After damage, [`find_next`] looks for the next
//! block whose checksum holds, so that damage costs the damaged block alone; and every read of a
//! payload checks the checksum again ([`read_payload`]), so a block damaged on disk after it
//! was opened is never served.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use memchr::memmem;

use rollcall_wire::Level;
use serde::{Deserialize, Serialize};

use crate::record::Entry;

const MAGIC: &[u8; 4] = b"RCB1";
/// Magic, two lengths and the checksum.
pub(crate) const PREFIX_LEN: usize = 16;

/// What a block's header says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A block's header, where its payload is, and what its checksum must be.
#[derive(Debug)]
pub(crate) struct BlockMeta {
    pub header: BlockHeader,
    pub payload_offset: u64,
    pub payload_len: u32,
    header_len: u32,
    crc: u32,
    /// Set once a read found the block damaged: later reads skip it without reading.
    damaged: AtomicBool,
}

impl BlockMeta {
    /// Whether a read already found the block damaged.
    pub(crate) fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// The id after the block's last record.
    pub(crate) fn end(&self) -> u64 {
        self.header.first + u64::from(self.header.count)
    }

    /// The offset just past the block.
    pub(crate) fn next_offset(&self) -> u64 {
        self.payload_offset + u64::from(self.payload_len)
    }
}

/// A batch of records encoded as one block, ready to be written at any offset.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub header: BlockHeader,
    pub bytes: Vec<u8>,
    header_len: u32,
    payload_len: u32,
    crc: u32,
}

impl Encoded {
    /// The block's metadata once it is written at `offset`.
    pub(crate) fn meta_at(self, offset: u64) -> BlockMeta {
        BlockMeta {
            header: self.header,
            payload_offset: offset + PREFIX_LEN as u64 + u64::from(self.header_len),
            payload_len: self.payload_len,
            header_len: self.header_len,
            crc: self.crc,
            damaged: AtomicBool::new(false),
        }
    }
}

/// Encodes `entries`, whose first record gets id `first`, as one block.
pub(crate) fn encode(first: u64, entries: &[Entry]) -> io::Result<Encoded> {
    let header = BlockHeader {
        first,
        count: u32::try_from(entries.len()).map_err(|_| io::Error::other("over 4 billion records in one block"))?,
        min_time: entries.iter().map(|e| e.time).min().unwrap_or(0),
        max_time: entries.iter().map(|e| e.time).max().unwrap_or(0),
        min_level: entries.iter().map(|e| e.level).min().unwrap_or_default(),
        max_level: entries.iter().map(|e| e.level).max().unwrap_or_default(),
        services: distinct_services(entries),
    };
    let header_bytes = serde_json::to_vec(&header).map_err(io::Error::other)?;
    let payload_len: usize = entries.iter().map(|e| e.line.len() + 1).sum();
    let mut bytes = Vec::with_capacity(PREFIX_LEN + header_bytes.len() + payload_len);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&u32_len(header_bytes.len())?.to_le_bytes());
    bytes.extend_from_slice(&u32_len(payload_len)?.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&header_bytes);
    for entry in entries {
        bytes.extend_from_slice(&entry.line);
        bytes.push(b'\n');
    }
    let crc = crc32fast::hash(&bytes[PREFIX_LEN..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    Ok(Encoded {
        header,
        header_len: u32_len(header_bytes.len())?,
        payload_len: u32_len(payload_len)?,
        crc,
        bytes,
    })
}

/// What a reader finds at an offset of a segment.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A whole block (checksum verified if asked).
    Block(BlockMeta),
    /// Less than the block announces, or no block prefix at all: cut short by a crash.
    Incomplete,
    /// The block is all there but its checksum or header is wrong: damaged after it was written.
    Corrupt,
    /// Zeros where a block would begin: the zeroed space ahead of the blocks.
    Zeros,
}

/// Decodes the block at `offset` of `file`, whose data ends at `length`. With `verify`, the
/// payload is read and the checksum checked; without, only the prefix and header are read.
pub(crate) fn decode(file: &File, offset: u64, length: u64, verify: bool) -> io::Result<Decoded> {
    let available = usize::try_from((length.saturating_sub(offset)).min(PREFIX_LEN as u64)).unwrap_or(PREFIX_LEN);
    let mut prefix = [0u8; PREFIX_LEN];
    file.read_exact_at(&mut prefix[..available], offset)?;
    if prefix[..available].iter().all(|&b| b == 0) {
        return Ok(Decoded::Zeros);
    }
    if available < PREFIX_LEN || &prefix[..4] != MAGIC {
        return Ok(Decoded::Incomplete);
    }
    let word = |i: usize| u32::from_le_bytes([prefix[i], prefix[i + 1], prefix[i + 2], prefix[i + 3]]);
    let (header_len, payload_len, crc) = (word(4), word(8), word(12));
    let body_offset = offset + PREFIX_LEN as u64;
    if length - body_offset < u64::from(header_len) + u64::from(payload_len) {
        return Ok(Decoded::Incomplete);
    }
    let mut header_bytes = vec![0; header_len as usize];
    file.read_exact_at(&mut header_bytes, body_offset)?;
    let payload_offset = body_offset + u64::from(header_len);
    if verify {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header_bytes);
        let mut payload = vec![0; payload_len as usize];
        file.read_exact_at(&mut payload, payload_offset)?;
        hasher.update(&payload);
        if hasher.finalize() != crc {
            return Ok(Decoded::Corrupt);
        }
    }
    let Ok(header) = serde_json::from_slice::<BlockHeader>(&header_bytes) else {
        return Ok(Decoded::Corrupt);
    };
    Ok(Decoded::Block(BlockMeta {
        header,
        payload_offset,
        payload_len,
        header_len,
        crc,
        damaged: AtomicBool::new(false),
    }))
}

/// How far [`find_next`] reads at a time.
const SCAN_CHUNK: usize = 1 << 20;

/// The first whole block with a valid checksum at or after `from` (and before `length`), and
/// where it starts: where reading resumes after damage. `None` when there is none.
pub(crate) fn find_next(file: &File, from: u64, length: u64) -> io::Result<Option<(u64, BlockMeta)>> {
    let finder = memmem::Finder::new(MAGIC);
    let mut chunk = vec![0u8; SCAN_CHUNK];
    let mut start = from;
    while start < length {
        let len = usize::try_from(length - start).unwrap_or(SCAN_CHUNK).min(SCAN_CHUNK);
        file.read_exact_at(&mut chunk[..len], start)?;
        for at in finder.find_iter(&chunk[..len]) {
            let offset = start + at as u64;
            if let Decoded::Block(meta) = decode(file, offset, length, true)? {
                return Ok(Some((offset, meta)));
            }
        }
        if len < SCAN_CHUNK {
            break;
        }
        // The next chunk overlaps by the magic's length less one, so no magic is split.
        start += (SCAN_CHUNK - (MAGIC.len() - 1)) as u64;
    }
    Ok(None)
}

/// A block's payload as read back.
#[derive(Debug)]
pub(crate) enum Payload {
    /// The records' stored lines, checksum verified.
    Intact(Vec<u8>),
    /// The checksum failed: the block was damaged on disk. Never to be served.
    Damaged,
}

/// Reads a block's payload and verifies the block's checksum (header and payload); a damaged
/// block is marked, so that later reads skip it at once.
pub(crate) fn read_payload(file: &File, block: &BlockMeta) -> io::Result<Payload> {
    if block.is_damaged() {
        return Ok(Payload::Damaged);
    }
    let mut header = vec![0; block.header_len as usize];
    file.read_exact_at(&mut header, block.payload_offset - u64::from(block.header_len))?;
    let mut payload = vec![0; block.payload_len as usize];
    file.read_exact_at(&mut payload, block.payload_offset)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(&payload);
    if hasher.finalize() == block.crc {
        Ok(Payload::Intact(payload))
    } else {
        block.damaged.store(true, Ordering::Relaxed);
        Ok(Payload::Damaged)
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

fn u32_len(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::other("block larger than 4 GiB"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A record of `service` at `level`, `time` nanoseconds after the epoch.
    pub(crate) fn entry(service: &str, level: Level, time: i64, message: &str) -> Entry {
        Entry::from_parts(time, service, level, message, &BTreeMap::new()).expect("a valid record")
    }

    /// Writes blocks of `batches` one after another from offset 0; their offsets and the end.
    fn write_blocks(file: &File, batches: &[Vec<Entry>]) -> (Vec<u64>, u64) {
        let (mut offsets, mut offset, mut first) = (Vec::new(), 0, 0);
        for entries in batches {
            let encoded = encode(first, entries).expect("encodes");
            file.write_all_at(&encoded.bytes, offset).expect("write");
            offsets.push(offset);
            offset += encoded.bytes.len() as u64;
            first += entries.len() as u64;
        }
        (offsets, offset)
    }

    fn three_batches() -> Vec<Vec<Entry>> {
        vec![
            vec![entry("a", Level::Info, 10, "one"), entry("b", Level::Error, 5, "two")],
            vec![entry("a", Level::Debug, 20, "three")],
            vec![entry("c", Level::Warn, 30, "four"), entry("c", Level::Info, 31, "five")],
        ]
    }

    fn block(decoded: Decoded) -> BlockMeta {
        match decoded {
            Decoded::Block(meta) => meta,
            other => panic!("expected a block, found {other:?}"),
        }
    }

    #[test]
    fn a_block_reads_back_as_it_was_written() {
        let file = tempfile::tempfile().expect("file");
        let batches = three_batches();
        let (offsets, end) = write_blocks(&file, &batches);
        let first = block(decode(&file, offsets[0], end, true).expect("read"));
        assert_eq!(first.header.first, 0);
        assert_eq!(first.header.count, 2);
        assert_eq!((first.header.min_time, first.header.max_time), (5, 10));
        assert_eq!(
            (first.header.min_level, first.header.max_level),
            (Level::Info, Level::Error)
        );
        assert_eq!(
            first.header.services,
            [(Arc::from("a"), Level::Info), (Arc::from("b"), Level::Error)]
        );
        let Payload::Intact(payload) = read_payload(&file, &first).expect("payload") else {
            panic!("an intact block read as damaged")
        };
        let lines: Vec<&[u8]> = payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines, [batches[0][0].line.as_slice(), batches[0][1].line.as_slice()]);
        assert_eq!(first.next_offset(), offsets[1], "the next block starts right after");
        let last = block(decode(&file, offsets[2], end, true).expect("read"));
        assert_eq!((last.header.first, last.end()), (3, 5));
        assert_eq!(last.next_offset(), end);
    }

    #[test]
    fn a_block_cut_short_is_incomplete_wherever_the_cut_falls() {
        let file = tempfile::tempfile().expect("file");
        let (offsets, end) = write_blocks(&file, &three_batches());
        for cut in [offsets[2] + 3, offsets[2] + PREFIX_LEN as u64, end - 1] {
            file.set_len(cut).expect("cut");
            assert!(
                matches!(decode(&file, offsets[2], cut, true).expect("read"), Decoded::Incomplete),
                "cut at {cut}"
            );
        }
        block(decode(&file, offsets[1], offsets[2], true).expect("read"));
    }

    #[test]
    fn zeros_after_the_last_block_are_the_zeroed_space_not_a_torn_block() {
        let file = tempfile::tempfile().expect("file");
        let (_, end) = write_blocks(&file, &three_batches());
        file.set_len(end + 4096).expect("zero-fill");
        assert!(matches!(
            decode(&file, end, end + 4096, true).expect("read"),
            Decoded::Zeros
        ));
        // Fewer zero bytes than a block prefix are still the zeroed space.
        assert!(matches!(
            decode(&file, end, end + 5, true).expect("read"),
            Decoded::Zeros
        ));
    }

    #[test]
    fn a_checksum_mismatch_in_the_middle_is_found_and_the_blocks_around_it_still_read() {
        let file = tempfile::tempfile().expect("file");
        let (offsets, end) = write_blocks(&file, &three_batches());
        let damaged = block(decode(&file, offsets[1], end, true).expect("read"));
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, damaged.payload_offset + 2).expect("read");
        file.write_all_at(&[byte[0] ^ 0x01], damaged.payload_offset + 2)
            .expect("flip a bit");

        assert!(matches!(
            decode(&file, offsets[1], end, true).expect("read"),
            Decoded::Corrupt
        ));
        block(decode(&file, offsets[0], end, true).expect("the block before"));
        block(decode(&file, offsets[2], end, true).expect("the block after"));
        // Without verification only the header is read: the damage goes unseen there, but a
        // read of the payload checks the checksum, says so, and remembers it.
        let unverified = block(decode(&file, offsets[1], end, false).expect("read"));
        assert!(matches!(
            read_payload(&file, &unverified).expect("read"),
            Payload::Damaged
        ));
        assert!(unverified.is_damaged());
    }

    #[test]
    fn after_damage_the_next_whole_block_is_found() {
        let file = tempfile::tempfile().expect("file");
        let (offsets, end) = write_blocks(&file, &three_batches());
        // Damage the second block's prefix (its magic) and the first's payload.
        file.write_all_at(b"XXXX", offsets[1]).expect("damage");
        file.write_all_at(b"X", offsets[1] - 2).expect("damage");
        let (at, next) = find_next(&file, offsets[0] + 1, end)
            .expect("scan")
            .expect("a block after");
        assert_eq!(at, offsets[2]);
        assert_eq!(next.header.first, 3);
        assert!(
            find_next(&file, offsets[2] + 1, end).expect("scan").is_none(),
            "nothing after the last"
        );
    }

    #[test]
    fn a_magic_inside_a_record_is_no_block() {
        let file = tempfile::tempfile().expect("file");
        let tricky = vec![vec![entry("a", Level::Info, 1, "RCB1 is how blocks begin")]];
        let (_, end) = write_blocks(&file, &tricky);
        // From just past the real block's magic, the only other "RCB1" is inside the message.
        assert!(find_next(&file, 1, end).expect("scan").is_none());
    }
}
