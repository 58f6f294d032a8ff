//! The embedded store's commit log: what makes a commit durable with one write and one
//! `fdatasync`, in front of sled's tree (issue #12; sled writes each batch as two IO buffers, each
//! written and waited for at the device, before a `fdatasync` of its own file could follow).
//!
//! Every write to the tree is also a frame here: a sequence number and the batch's key/value
//! writes as absolute values, with a CRC32 of the frame and, per entry, one over its kind, lengths
//! and key and one over its value (so a damaged value names the one record it damaged). The same
//! writes end with the sequence number into the tree ([`APPLIED_THROUGH`]), so the tree says how
//! far it got: they are applied in order, and a crash leaves sled's tree with a prefix of what it
//! was given, so a tree holding a frame's number holds all of that frame. A checkpoint syncs the
//! log, flushes the tree to stable storage and records how far (the checkpoint record); opening a
//! store replays the frames past the tree's number from the checkpoint's segment on, in order
//! (replaying a frame twice changes nothing: its values are absolute), and names a tree behind
//! the checkpoint record ([`LogError::TreeBehind`]). Segments are kept: the store keeps the log
//! whole and compacts it (`sled_store/durable.rs`), and can replay it from its oldest segment
//! onto an empty tree ([`ReplayFrom::Start`]).
//!
//! It owns the segment files (`commit-log/<number>.log2` in the store's directory, with zeros
//! written ahead of the frames so that appends overwrite; `.log` for the build before, whose
//! entries have no checksums of their own; `<first>-<last>.log2c` for a compacted segment, which
//! stands for segments `first..=last` and holds their first and last frames and, between, only
//! frames with writes still live), the checkpoint record (`commit-log/checkpoint`), the frames'
//! encoding, and reading them back. A compacted segment is written under another name, synced
//! and renamed into place before the segments it replaces are deleted; one found beside them
//! after a crash is the log, and they are deleted at open. A segment is appended to until it is
//! rolled; segments before the last were synced whole when the next began (compacted ones before
//! they took their place), so a frame that fails its checksum there is damage, as is one the last
//! checkpoint covered; in the last segment, past the checkpoint, it is the torn end of the log
//! unless a later frame says the log had been synced past it.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

/// The tree's key holding the sequence number of the last frame applied to it (big-endian u64).
pub(crate) const APPLIED_THROUGH: &[u8] = b"m/log-applied";

const DIRECTORY: &str = "commit-log";
/// The file in the log's directory naming the last frame a checkpoint made durable in the tree.
const CHECKPOINT: &str = "checkpoint";
/// Bytes before a frame's payload, little-endian: the payload's length (u32), a CRC32 of everything
/// after it (u32), the sequence number (u64), and how far the segment was synced when the frame
/// was written (u64).
const HEADER: usize = 24;
/// How far past the last good frame's number a frame found after a bad one may be numbered: a
/// cheap test that rules out almost every offset before its checksum is computed.
const RESYNC_SEQ_WINDOW: u64 = 1 << 24;
/// Zeros are written ahead of the frames, so that appending overwrites blocks the file already
/// has and an `fdatasync` has no size or extent to record: at least this many bytes ahead...
const ZEROED_AHEAD_MIN: u64 = 1024 * 1024;
/// ...at most this many (twice the segment's length in between)...
const ZEROED_AHEAD_MAX: u64 = 16 * 1024 * 1024;
/// ...written this many at a time under the tail's lock (an append waits for one piece at most).
const ZEROING_PIECE: usize = 256 * 1024;
const PUT: u8 = 1;
const REMOVE: u8 = 0;

/// One write of a batch: a key and its new value (`None` removes the key).
pub(crate) type Write = (Vec<u8>, Option<Vec<u8>>);

/// A batch's writes, in order, encoded in place as the frame the log will hold (its header is
/// filled in when it is appended): one copy of each key and value, in a buffer that can be
/// reused.
pub(crate) struct Changes {
    frame: Vec<u8>,
    /// What the values set take as log entries (see [`ENTRY_OVERHEAD`]).
    live_bytes: u64,
}

/// Bytes a record's entry takes in the log besides its key and value: its kind, two lengths and
/// two CRC32s. A record the tree holds takes its key, its value and this.
pub(crate) const ENTRY_OVERHEAD: u64 = 17;

/// Bytes a frame takes besides its writes: its header and its last entry, the tree's
/// applied-through number.
const FRAME_OVERHEAD: u64 = HEADER as u64 + ENTRY_OVERHEAD + APPLIED_THROUGH.len() as u64 + 8;

/// About what a compacted segment holding writes of `kept_bytes` (as log entries) takes, written
/// in frames of `frame_bytes` (see [`encode_compacted`]): its first and last frames always.
pub(crate) fn compacted_length(kept_bytes: u64, frame_bytes: u64) -> u64 {
    kept_bytes + (2 + kept_bytes / frame_bytes.max(1)) * FRAME_OVERHEAD
}

impl Default for Changes {
    fn default() -> Changes {
        Changes::in_buffer(Vec::new())
    }
}

impl Changes {
    /// No writes yet, encoded into `buffer` (emptied; its capacity is kept).
    pub(crate) fn in_buffer(mut buffer: Vec<u8>) -> Changes {
        buffer.clear();
        buffer.resize(HEADER, 0);
        Changes {
            frame: buffer,
            live_bytes: 0,
        }
    }

    /// The buffer, for the next batch.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.frame
    }

    /// Sets `key` to `value`.
    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        self.live_bytes += (key.as_ref().len() + value.len()) as u64 + ENTRY_OVERHEAD;
        self.push_head(PUT, key.as_ref(), Some(value));
        self.frame.extend_from_slice(value);
        self.frame.extend_from_slice(&crc32fast::hash(value).to_le_bytes());
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.push_head(REMOVE, key.as_ref(), None);
    }

    /// An entry's head: its kind, lengths and key, then their CRC32.
    fn push_head(&mut self, kind: u8, key: &[u8], value: Option<&[u8]>) {
        // Keys and values are far below 4 GiB (a record over it fails to encode long before).
        let start = self.frame.len();
        self.frame.push(kind);
        self.frame.extend_from_slice(&(key.len() as u32).to_le_bytes());
        if let Some(value) = value {
            self.frame.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        self.frame.extend_from_slice(key);
        let checksum = crc32fast::hash(&self.frame[start..]);
        self.frame.extend_from_slice(&checksum.to_le_bytes());
    }

    /// Ends the frame as number `seq` — the tree's applied-through number as its last write,
    /// then its header, with `synced` as how far its segment was synced — and returns it.
    fn seal(&mut self, seq: u64, synced: u64) -> &[u8] {
        self.insert(APPLIED_THROUGH, seq.to_be_bytes());
        let frame = &mut self.frame;
        let length = (frame.len() - HEADER) as u32;
        frame[0..4].copy_from_slice(&length.to_le_bytes());
        frame[8..16].copy_from_slice(&seq.to_le_bytes());
        frame[16..24].copy_from_slice(&synced.to_le_bytes());
        let checksum = crc32fast::hash(&frame[8..]);
        frame[4..8].copy_from_slice(&checksum.to_le_bytes());
        &self.frame
    }

    /// What the values set so far take as log entries (key, value and [`ENTRY_OVERHEAD`]).
    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes of the entries so far.
    pub(crate) fn length(&self) -> usize {
        self.frame.len() - HEADER
    }

    /// The last write (after [`Tail::append`], the tree's applied-through number).
    pub(crate) fn last_write(&self) -> Option<(&[u8], Option<&[u8]>)> {
        self.writes().last()
    }

    /// The writes, in order, borrowed from the frame.
    pub(crate) fn writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        // The frame was encoded here, so every entry reads.
        Entries::new(&self.frame[HEADER..], LogFormat::Checksummed, false).map_while(|entry| match entry {
            Ok(Entry {
                key,
                value: Value::Put(value),
                ..
            }) => Some((key, Some(value))),
            Ok(Entry {
                key,
                value: Value::Remove,
                ..
            }) => Some((key, None)),
            _ => None,
        })
    }
}

/// How a segment's entries are encoded, by its file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// `.log`, written by the builds of 2026-12-04 before this one: an entry is its kind, its
    /// key and its value with their lengths; only the frame has a checksum.
    Plain,
    /// `.log2`: besides the frame's checksum, each entry has one over its kind, lengths and key,
    /// and one over its value, so a damaged byte in a value names the one record it damaged.
    Checksummed,
}

impl LogFormat {
    fn extension(self) -> &'static str {
        match self {
            LogFormat::Plain => "log",
            LogFormat::Checksummed => "log2",
        }
    }
}

/// An entry's new value as read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Put(&'a [u8]),
    Remove,
    /// A value that fails its checksum (only when entries are verified).
    Damaged(&'a [u8]),
}

/// One entry of a frame's payload and where it begins in the payload.
struct Entry<'a> {
    key: &'a [u8],
    value: Value<'a>,
    offset: usize,
}

/// The entries of a frame's payload, in order. An entry that does not read (or, when verifying,
/// whose head fails its checksum) ends them with `Err`; past its end, `consumed` says how far
/// they reached.
struct Entries<'a> {
    payload: &'a [u8],
    consumed: usize,
    format: LogFormat,
    verify: bool,
    failed: bool,
}

impl<'a> Entries<'a> {
    fn new(payload: &'a [u8], format: LogFormat, verify: bool) -> Entries<'a> {
        Entries {
            payload,
            consumed: 0,
            format,
            verify,
            failed: false,
        }
    }

    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let taken = self.payload.get(self.consumed..self.consumed.checked_add(count)?)?;
        self.consumed += count;
        Some(taken)
    }

    fn take_u32(&mut self) -> Option<u32> {
        le_u32(self.take(4)?, 0)
    }

    fn read_entry(&mut self) -> Option<Entry<'a>> {
        let offset = self.consumed;
        let kind = self.take(1)?[0];
        if self.format == LogFormat::Plain {
            let key_length = self.take_u32()? as usize;
            let key = self.take(key_length)?;
            let value = match kind {
                PUT => {
                    let length = self.take_u32()? as usize;
                    Value::Put(self.take(length)?)
                }
                REMOVE => Value::Remove,
                _ => return None,
            };
            return Some(Entry { key, value, offset });
        }
        let key_length = self.take_u32()? as usize;
        let value_length = match kind {
            PUT => Some(self.take_u32()? as usize),
            REMOVE => None,
            _ => return None,
        };
        let key = self.take(key_length)?;
        let head = &self.payload[offset..self.consumed];
        let head_checksum = self.take_u32()?;
        if self.verify && crc32fast::hash(head) != head_checksum {
            return None;
        }
        let value = match value_length {
            Some(length) => {
                let value = self.take(length)?;
                let checksum = self.take_u32()?;
                if self.verify && crc32fast::hash(value) != checksum {
                    Value::Damaged(value)
                } else {
                    Value::Put(value)
                }
            }
            None => Value::Remove,
        };
        Some(Entry { key, value, offset })
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.consumed >= self.payload.len() || self.failed {
            return None;
        }
        let entry = self.read_entry();
        self.failed = entry.is_none();
        Some(entry.ok_or(()))
    }
}

/// A frame read back: its sequence number and writes, in order (the tree's applied-through
/// number last), less the values that fail their checksums, which are in `damaged`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub seq: u64,
    pub writes: Vec<Write>,
    pub damaged: Vec<DamagedValue>,
}

/// A value in the log that fails its checksum, with its key (whose own checksum holds).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DamagedValue {
    pub key: Vec<u8>,
    /// The value's bytes as they read.
    pub raw: Vec<u8>,
    /// The segment and the byte where the entry begins.
    pub place: String,
}
/// What reading the log found wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// A segment could not be listed, opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The system's words.
        source: std::io::Error,
    },
    /// sled's tree holds fewer frames than a checkpoint made durable in it: sled's files lost
    /// records they held.
    #[error("a checkpoint made sled's tree durable through commit {checkpointed}, but its files now hold commits only through {reached}: sled's files lost records they held")]
    TreeBehind {
        /// The checkpoint's frame.
        checkpointed: u64,
        /// The tree's.
        reached: u64,
    },
    /// A segment synced whole has a frame that fails its checksum, or the frames do not follow
    /// each other: records the store acknowledged are not all readable.
    #[error("commit log {path} is damaged at byte {offset}: {what}")]
    Damaged {
        /// The segment.
        path: String,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A segment file of the log.
#[derive(Debug, Clone)]
struct SegmentFile {
    /// Where it is in the log's order: the number it was appended as, or, for a compacted
    /// segment, the last number whose frames it holds.
    number: u64,
    /// The first segment number whose frames it holds (its own number unless compacted).
    first: u64,
    path: PathBuf,
    format: LogFormat,
    /// Written by compaction: it holds, of the frames of segments `first..=number`, the first and
    /// the last (their numbers mark the range it stands for) and those with writes still live.
    compacted: bool,
}

/// The extension of a compacted segment (`<first>-<last>.log2c`); its entries are
/// [`LogFormat::Checksummed`].
const COMPACTED_EXTENSION: &str = "log2c";
/// The extension a compacted segment is written under before it is renamed into place.
const BEING_WRITTEN_EXTENSION: &str = "new";

/// The segment files in `directory` that make up the log, in its order, and the files a crash
/// left behind: segments a compacted segment replaced (a compaction that died before it
/// deleted them) and compacted segments never renamed into place.
fn segment_files(directory: &Path) -> Result<(Vec<SegmentFile>, Vec<PathBuf>), LogError> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(error) => return Err(io_error(directory)(error)),
    };
    let mut found = Vec::new();
    let mut left_behind = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(directory))?.path();
        let extension = path
            .extension()
            .and_then(|extension| extension.to_str())
            .map(str::to_string);
        let stem = path.file_stem().and_then(|stem| stem.to_str()).map(str::to_string);
        let (Some(extension), Some(stem)) = (extension, stem) else {
            continue;
        };
        let extension = extension.as_str();
        let appended = [LogFormat::Plain, LogFormat::Checksummed]
            .into_iter()
            .find(|format| extension == format.extension());
        let file = match appended {
            Some(format) => stem.parse::<u64>().ok().map(|number| SegmentFile {
                number,
                first: number,
                path,
                format,
                compacted: false,
            }),
            None if extension == COMPACTED_EXTENSION => stem.split_once('-').and_then(|(first, last)| {
                Some(SegmentFile {
                    number: last.parse().ok()?,
                    first: first.parse().ok()?,
                    path,
                    format: LogFormat::Checksummed,
                    compacted: true,
                })
            }),
            None if extension == BEING_WRITTEN_EXTENSION => {
                left_behind.push(path);
                None
            }
            None => None,
        };
        found.extend(file);
    }
    // A compacted segment stands for every segment in its range: one it replaced is left over.
    let replaced = |file: &SegmentFile| {
        found.iter().any(|other: &SegmentFile| {
            other.compacted && other.path != file.path && other.first <= file.first && file.number <= other.number
        })
    };
    let (replaced, mut kept): (Vec<SegmentFile>, Vec<SegmentFile>) = found.iter().cloned().partition(replaced);
    left_behind.extend(replaced.into_iter().map(|file| file.path));
    kept.sort_by_key(|file| file.number);
    Ok((kept, left_behind))
}

/// The segment files that make up the log, in its order.
fn segments(directory: &Path) -> Result<Vec<SegmentFile>, LogError> {
    segment_files(directory).map(|(kept, _)| kept)
}

/// Where and why reading a segment stopped before its end.
struct Stop {
    offset: u64,
    what: String,
    /// A later frame records that the segment was synced past `offset`: what is there was
    /// durable once, so it is damage, not the torn end of a write a crash cut short.
    synced_past: bool,
}

/// A whole frame at `at`, if its header and checksum say so: its sequence number, synced-through
/// mark, payload and length.
fn frame_at(bytes: &[u8], at: usize) -> Option<(u64, u64, &[u8], usize)> {
    let length = le_u32(bytes, at)? as usize;
    let checksum = le_u32(bytes, at + 4)?;
    let covered = bytes.get(at + 8..(at + HEADER).checked_add(length)?)?;
    (crc32fast::hash(covered) == checksum)
        .then(|| {
            Some((
                le_u64(bytes, at + 8)?,
                le_u64(bytes, at + 16)?,
                &covered[HEADER - 8..],
                HEADER + length,
            ))
        })
        .flatten()
}

/// The little-endian u32 at `at`, if the bytes reach that far.
fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The little-endian u64 at `at`, if the bytes reach that far.
fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// A frame of a segment as scanned, before anything is copied out of the segment's bytes.
pub(crate) enum ScannedFrame<'a> {
    /// A frame that passed its checksum: its number and its entries, in the segment's bytes.
    Whole {
        seq: u64,
        payload: &'a [u8],
        format: LogFormat,
    },
    /// A frame read through its entries' own checksums, with its damaged values.
    Salvaged(Frame),
}

impl ScannedFrame<'_> {
    /// Its sequence number.
    pub(crate) fn seq(&self) -> u64 {
        match self {
            ScannedFrame::Whole { seq, .. } => *seq,
            ScannedFrame::Salvaged(frame) => frame.seq,
        }
    }

    /// Its writes, in order, and its damaged values, borrowed.
    pub(crate) fn entries(&self) -> Vec<(&[u8], Value<'_>)> {
        match self {
            ScannedFrame::Whole { payload, format, .. } => Entries::new(payload, *format, false)
                .map_while(Result::ok)
                .map(|entry| (entry.key, entry.value))
                .collect(),
            ScannedFrame::Salvaged(frame) => frame
                .writes
                .iter()
                .map(|(key, value)| (&key[..], value.as_deref().map_or(Value::Remove, Value::Put)))
                .chain(
                    frame
                        .damaged
                        .iter()
                        .map(|damaged| (&damaged.key[..], Value::Damaged(&damaged.raw[..]))),
                )
                .collect(),
        }
    }

    /// The frame, its writes copied out.
    fn into_frame(self) -> Frame {
        match self {
            ScannedFrame::Whole { seq, payload, format } => {
                let writes = Entries::new(payload, format, false)
                    .map_while(Result::ok)
                    .map(|entry| match entry.value {
                        Value::Put(value) => (entry.key.to_vec(), Some(value.to_vec())),
                        // A frame is whole only if its entries read and none is damaged.
                        Value::Remove | Value::Damaged(_) => (entry.key.to_vec(), None),
                    })
                    .collect();
                Frame {
                    seq,
                    writes,
                    damaged: Vec::new(),
                }
            }
            ScannedFrame::Salvaged(frame) => frame,
        }
    }
}

/// Decodes the frames of one segment, in order (see [`scan_segment`]).
fn read_segment(bytes: &[u8], path: &Path, format: LogFormat, whole: bool) -> (Vec<Frame>, usize, Option<Stop>) {
    let (frames, end, stop) = scan_segment(bytes, path, format, whole);
    (frames.into_iter().map(ScannedFrame::into_frame).collect(), end, stop)
}

/// Scans the frames of one segment, in order, up to the first that is incomplete, fails its
/// checksum or does not decode, unless that one is damage (`whole`: the segment was synced whole,
/// or a later frame says it was synced past it) that the entries' own checksums can still read:
/// then its values that fail theirs are set apart and reading goes on. Returns the frames and,
/// if it stopped early, where and why; and where the frames read end.
fn scan_segment<'a>(
    bytes: &'a [u8],
    path: &Path,
    format: LogFormat,
    whole: bool,
) -> (Vec<ScannedFrame<'a>>, usize, Option<Stop>) {
    let mut frames: Vec<ScannedFrame<'a>> = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let what = match frame_at(bytes, at) {
            Some((seq, _, payload, length)) => {
                let decodes = Entries::new(payload, format, false)
                    .all(|entry| entry.is_ok_and(|entry| !matches!(entry.value, Value::Damaged(_))));
                if decodes {
                    frames.push(ScannedFrame::Whole { seq, payload, format });
                    at += length;
                    continue;
                }
                "a frame whose writes do not decode"
            }
            // The zeros written ahead of the frames: the log ends here.
            None if bytes[at..].iter().all(|byte| *byte == 0) => break,
            None if bytes.len() - at < HEADER => "an incomplete frame header",
            None => "a frame that is incomplete or fails its checksum",
        };
        let last_seq = frames.last().map_or(0, ScannedFrame::seq);
        let synced_past = synced_past(bytes, at, last_seq);
        if whole || synced_past {
            if let Some((frame, length)) = salvage_frame(bytes, at, format, path) {
                tracing::error!(segment = %path.display(), offset = at, seq = frame.seq, damaged = frame.damaged.len(), "a commit-log frame fails its checksum; its entries' own checksums name the values that are damaged");
                frames.push(ScannedFrame::Salvaged(frame));
                at += length;
                continue;
            }
        }
        let stop = Stop {
            offset: at as u64,
            what: what.to_string(),
            synced_past,
        };
        return (frames, at, Some(stop));
    }
    (frames, at.min(bytes.len()), None)
}

/// Whether, past `at`, a whole frame numbered after `last_seq` has a synced-through mark beyond
/// `at`.
fn synced_past(bytes: &[u8], at: usize, last_seq: u64) -> bool {
    (at + 1..bytes.len()).any(|candidate| {
        le_u64(bytes, candidate + 8).is_some_and(|seq| seq > last_seq && seq - last_seq <= RESYNC_SEQ_WINDOW)
            && frame_at(bytes, candidate).is_some_and(|(_, synced, _, _)| synced > at as u64)
    })
}

/// Reads the frame at `at`, which fails its checksum, entry by entry through the entries' own
/// checksums, up to its last entry (the tree's applied-through number, which gives the frame's
/// number: the header may be what is damaged). Values that fail their checksums go to
/// `damaged`. `None` if an entry's head fails its checksum: then what the frame held cannot be
/// named.
fn salvage_frame(bytes: &[u8], at: usize, format: LogFormat, path: &Path) -> Option<(Frame, usize)> {
    if format != LogFormat::Checksummed {
        return None;
    }
    let mut entries = Entries::new(bytes.get(at + HEADER..)?, format, true);
    let mut writes = Vec::new();
    let mut damaged = Vec::new();
    while let Some(entry) = entries.next() {
        let Entry { key, value, offset } = entry.ok()?;
        match value {
            Value::Put(value) if key == APPLIED_THROUGH => {
                let seq = u64::from_be_bytes(value.try_into().ok()?);
                writes.push((key.to_vec(), Some(value.to_vec())));
                let frame = Frame { seq, writes, damaged };
                return Some((frame, HEADER + entries.consumed));
            }
            Value::Put(value) => writes.push((key.to_vec(), Some(value.to_vec()))),
            Value::Remove => writes.push((key.to_vec(), None)),
            Value::Damaged(_) if key == APPLIED_THROUGH => return None,
            Value::Damaged(raw) => damaged.push(DamagedValue {
                key: key.to_vec(),
                raw: raw.to_vec(),
                place: format!("{} byte {}", path.display(), at + HEADER + offset),
            }),
        }
    }
    None
}

/// Where replaying the log begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayFrom {
    /// At the segment the last checkpoint recorded, for a tree that holds everything before it.
    Checkpoint,
    /// At the oldest segment kept, for an empty tree: rebuilding it from the log.
    Start,
}

/// What reading the log back found, besides its frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// The last checkpoint's record, if one was taken.
    pub checkpoint: Option<CheckpointRecord>,
    /// The last segment read and how many of its bytes are whole frames: the rest is a torn
    /// end or zeros, cut off before the log goes on.
    pub end: Option<(u64, u64)>,
    /// The last frame the log holds (read or skipped), or `None` if it holds none.
    pub last_seq: Option<u64>,
    /// Frames the tree holds did not read: the log no longer holds every record.
    pub lost_copies: bool,
}

/// Gives `visit` the frames a store's log holds past `applied_through` (the tree's number), in
/// order, from where `from` says.
///
/// Stops at the torn end of the last segment. A frame that fails its checksum in an earlier
/// segment (unless its entries' checksums still read it), or frames that skip a number, are
/// [`LogError::Damaged`]: acknowledged commits are not all there. From the checkpoint, a tree
/// behind the checkpoint record is [`LogError::TreeBehind`].
pub(crate) fn recover<E: From<LogError>>(
    store_directory: &Path,
    applied_through: u64,
    from: ReplayFrom,
    mut visit: impl FnMut(Frame) -> Result<(), E>,
) -> Result<Recovered, E> {
    let directory = store_directory.join(DIRECTORY);
    let checkpoint = read_checkpoint(&directory.join(CHECKPOINT))?;
    let first_segment = match (from, checkpoint) {
        // The tree can only be behind the last checkpoint if its files lost what it had made
        // durable (sled takes a damaged record in its last segment for the torn end of its log,
        // and drops everything after it without a word).
        (ReplayFrom::Checkpoint, Some(record)) if record.through > applied_through => {
            return Err(LogError::TreeBehind {
                checkpointed: record.through,
                reached: applied_through,
            }
            .into())
        }
        (ReplayFrom::Checkpoint, Some(record)) => record.segment,
        _ => 0,
    };
    let segments: Vec<SegmentFile> = segments(&directory)?
        .into_iter()
        .filter(|segment| segment.number >= first_segment)
        .collect();
    let mut recovered = Recovered {
        checkpoint,
        ..Recovered::default()
    };
    // From the start, the first frame kept is the first expected.
    let mut expected = (from == ReplayFrom::Checkpoint).then_some(applied_through + 1);
    // A segment before the last that stops early: damage, unless the frames it could not give
    // are all ones the tree holds (the next frame read is the one expected).
    let mut unreadable: Option<LogError> = None;
    for (index, segment) in segments.iter().enumerate() {
        let path = &segment.path;
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(io_error(path))?;
        // Compaction writes a segment whole before it takes its place.
        let whole = index + 1 < segments.len() || segment.compacted;
        let (read, end, stopped) = read_segment(&bytes, path, segment.format, whole);
        for (position, frame) in read.into_iter().enumerate() {
            let wanted = *expected.get_or_insert(frame.seq);
            recovered.last_seq = Some(frame.seq);
            if frame.seq < wanted {
                continue;
            }
            // Between its first and last frames, a compacted segment holds only those with
            // writes still live: the numbers between are not missing.
            let compacted_away = segment.compacted && position > 0;
            if let Some(damage) = unreadable.take() {
                if frame.seq > wanted {
                    return Err(damage.into());
                }
                tracing::warn!(%damage, "the commit log is damaged where sled's tree holds what it held");
                recovered.lost_copies = true;
            }
            if frame.seq > wanted && !compacted_away {
                return Err(LogError::Damaged {
                    path: path.display().to_string(),
                    offset: 0,
                    what: format!(
                        "frame {} follows frame {} (the frames between are missing)",
                        frame.seq,
                        wanted - 1
                    ),
                }
                .into());
            }
            expected = Some(frame.seq + 1);
            visit(frame)?;
        }
        if let Some(Stop {
            offset,
            what,
            synced_past,
        }) = stopped
        {
            let damage = |what: String| LogError::Damaged {
                path: path.display().to_string(),
                offset,
                what,
            };
            if synced_past {
                return Err(damage(format!("{what}, where a later frame says the log had been synced")).into());
            }
            // A checkpoint synced the log through its frame before recording it: a frame up to
            // there that does not read is damage, not a write a crash cut short.
            let durable_through = checkpoint.map_or(0, |record| record.through);
            let checkpointed = durable_through > recovered.last_seq.unwrap_or(0);
            if whole || (checkpointed && durable_through > applied_through) {
                unreadable = Some(damage(what));
            } else if checkpointed {
                // Frames the tree holds: nothing is lost but the log's copies of them.
                tracing::warn!(segment = %path.display(), offset, %what, "the commit log is damaged where sled's tree holds what it held");
                recovered.lost_copies = true;
            } else {
                tracing::info!(segment = %path.display(), offset, %what, "the commit log ends in a write a crash cut short; it was never acknowledged");
            }
        }
        recovered.end = Some((segment.number, end as u64));
    }
    if let Some(damage) = unreadable {
        return Err(damage.into());
    }
    Ok(recovered)
}

/// What a checkpoint records (`commit-log/checkpoint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CheckpointRecord {
    /// sled's tree is durable through this frame.
    pub through: u64,
    /// The segment being appended to when it was taken: every frame past `through` is in it or
    /// a later one, and the segments before it hold only frames the tree holds.
    pub segment: u64,
    /// Bytes the tree's records take as log entries, as the store counted them then.
    pub live_bytes: u64,
    /// The log holds every record the tree holds (false before the store first seeded it).
    pub whole: bool,
}

const CHECKPOINT_RECORD_LENGTH: usize = 8 + 8 + 8 + 1 + 4;

impl CheckpointRecord {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CHECKPOINT_RECORD_LENGTH);
        bytes.extend_from_slice(&self.through.to_le_bytes());
        bytes.extend_from_slice(&self.segment.to_le_bytes());
        bytes.extend_from_slice(&self.live_bytes.to_le_bytes());
        bytes.push(u8::from(self.whole));
        let checksum = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// The record, from this build's encoding or the one before (its frame number only).
    fn decode(bytes: &[u8]) -> Option<CheckpointRecord> {
        let checked = |length: usize| {
            (bytes.len() == length && le_u32(bytes, length - 4)? == crc32fast::hash(&bytes[..length - 4])).then_some(())
        };
        if checked(12).is_some() {
            return Some(CheckpointRecord {
                through: le_u64(bytes, 0)?,
                ..CheckpointRecord::default()
            });
        }
        checked(CHECKPOINT_RECORD_LENGTH)?;
        Some(CheckpointRecord {
            through: le_u64(bytes, 0)?,
            segment: le_u64(bytes, 8)?,
            live_bytes: le_u64(bytes, 16)?,
            whole: bytes[24] == 1,
        })
    }
}

/// The last checkpoint's record of the store in `store_directory`, if one was taken.
pub(crate) fn last_checkpoint(store_directory: &Path) -> Result<Option<CheckpointRecord>, LogError> {
    read_checkpoint(&store_directory.join(DIRECTORY).join(CHECKPOINT))
}

/// The last checkpoint's record, if one was taken.
fn read_checkpoint(path: &Path) -> Result<Option<CheckpointRecord>, LogError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(path)(error)),
    };
    CheckpointRecord::decode(&bytes)
        .map(Some)
        .ok_or_else(|| LogError::Damaged {
            path: path.display().to_string(),
            offset: 0,
            what: "the checkpoint record fails its checksum".to_string(),
        })
}

/// The segment being appended to.
struct Segment {
    number: u64,
    file: Arc<File>,
    length: u64,
    /// How many of its bytes a finished `fdatasync` covered.
    synced: Arc<AtomicU64>,
    /// The file's length: frames, then zeros written ahead of them.
    allocated: u64,
}

/// The appending end of the log.
pub(crate) struct Tail {
    segment: Segment,
    next_seq: u64,
}

impl Tail {
    /// Appends `changes` as the next frame, with the tree's applied-through number as its last
    /// write; apply [`Changes::writes`] to the tree next, in that order. Nothing is synced.
    pub(crate) fn append(&mut self, changes: &mut Changes) -> std::io::Result<()> {
        let seq = self.next_seq;
        let frame = changes.seal(seq, self.segment.synced.load(Ordering::Acquire));
        // A part written fails its checksum: read back, it is the log's torn end.
        self.segment.file.write_all_at(frame, self.segment.length)?;
        self.segment.length += frame.len() as u64;
        self.segment.allocated = self.segment.allocated.max(self.segment.length);
        self.next_seq += 1;
        Ok(())
    }
}

/// The log: its appending end behind a lock that the store holds across append and tree write,
/// so frames are in the tree's order, and the segments before it.
pub(crate) struct CommitLog {
    directory: PathBuf,
    tail: Mutex<Tail>,
    /// The segments before the one being appended to, in the log's order.
    ended: Mutex<Vec<SegmentSpan>>,
}

/// An ended segment: where it is in the log, what it stands for, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSpan {
    /// Its place in the log's order (for a compacted segment, the last segment it stands for).
    pub number: u64,
    /// The first segment it stands for (its own number unless compacted).
    pub first: u64,
    /// Bytes of frames.
    pub length: u64,
    /// Written by compaction.
    pub compacted: bool,
}

/// A write compaction keeps, with the number of the frame it was in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeptWrite {
    pub seq: u64,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Encodes a compacted segment standing for frames `first_seq..=last_seq`: `writes` (in the
/// log's order, each from a frame in that range) in frames of about `frame_bytes`, each numbered
/// with the last frame it holds writes of and split only between frames, so replaying them gives
/// what replaying the originals gave for every key they hold. The first frame holds only the
/// writes of frame `first_seq` and is numbered so, the last is numbered `last_seq`, even if they
/// hold no writes: the numbers before and after the segment still follow on.
fn encode_compacted(first_seq: u64, last_seq: u64, writes: &[KeptWrite], frame_bytes: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut changes = Changes::default();
    let emit = |changes: &mut Changes, seq: u64, bytes: &mut Vec<u8>| {
        // Written whole before it is used: synced through its own end.
        let synced = (bytes.len() + HEADER + changes.length()) as u64;
        bytes.extend_from_slice(changes.seal(seq, synced));
        *changes = Changes::in_buffer(std::mem::take(&mut changes.frame));
    };
    let mut emitted = false;
    let mut previous_seq = first_seq;
    for write in writes {
        debug_assert!((previous_seq..=last_seq).contains(&write.seq));
        let cut = if emitted {
            write.seq != previous_seq && changes.length() >= frame_bytes
        } else {
            write.seq > first_seq
        };
        if cut {
            emit(&mut changes, if emitted { previous_seq } else { first_seq }, &mut bytes);
            emitted = true;
        }
        match &write.value {
            Some(value) => changes.insert(&write.key, value),
            None => changes.remove(&write.key),
        }
        previous_seq = write.seq;
    }
    if !emitted {
        emit(&mut changes, first_seq, &mut bytes);
        if last_seq == first_seq {
            return bytes;
        }
    }
    emit(&mut changes, last_seq, &mut bytes);
    bytes
}

impl CommitLog {
    /// Goes on with the log a store's open has read back with [`recover`]: cuts the torn end or
    /// the zeros off the last segment read (`end`: its number and the length of its whole
    /// frames), deletes segments without frames, and begins the next segment, whose first frame
    /// will be `next_seq`.
    pub(crate) fn open(store_directory: &Path, next_seq: u64, end: Option<(u64, u64)>) -> Result<CommitLog, LogError> {
        let directory = store_directory.join(DIRECTORY);
        std::fs::create_dir_all(&directory).map_err(io_error(&directory))?;
        let (existing, left_behind) = segment_files(&directory)?;
        for path in &left_behind {
            tracing::info!(file = %path.display(), "deleting what a compaction of the commit log left behind");
            std::fs::remove_file(path).map_err(io_error(path))?;
        }
        let mut ended = Vec::new();
        for segment in &existing {
            let path = &segment.path;
            let mut length = std::fs::metadata(path).map_err(io_error(path))?.len();
            let cut = end.filter(|(last, frames)| *last == segment.number && *frames != length && !segment.compacted);
            if let Some((_, frames)) = cut {
                let file = OpenOptions::new().write(true).open(path).map_err(io_error(path))?;
                file.set_len(frames)
                    .and_then(|()| file.sync_all())
                    .map_err(io_error(path))?;
                length = frames;
            }
            if length == 0 {
                std::fs::remove_file(path).map_err(io_error(path))?;
            } else {
                ended.push(SegmentSpan {
                    number: segment.number,
                    first: segment.first,
                    length,
                    compacted: segment.compacted,
                });
            }
        }
        let number = existing.last().map_or(1, |segment| segment.number + 1);
        let segment = create_segment(&directory, number)?;
        Ok(CommitLog {
            tail: Mutex::new(Tail { segment, next_seq }),
            ended: Mutex::new(ended),
            directory,
        })
    }

    /// The appending end, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock()
    }

    /// Makes every frame appended so far durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.sync_through().map(|_| ())
    }

    /// Makes every frame appended so far durable; returns the last one's number and the segment
    /// being appended to.
    fn sync_through(&self) -> std::io::Result<(u64, u64)> {
        // Earlier segments were synced when the next began; syncing outside the lock lets
        // appends go on meanwhile.
        let (file, length, synced, through, number) = {
            let tail = self.tail.lock();
            (
                tail.segment.file.clone(),
                tail.segment.length,
                tail.segment.synced.clone(),
                tail.next_seq - 1,
                tail.segment.number,
            )
        };
        file.sync_data()?;
        synced.fetch_max(length, Ordering::Release);
        Ok((through, number))
    }

    /// Writes zeros ahead of the frames of the segment being appended to (twice its length,
    /// within bounds, and not past `segment_limit`, where the segment is ended and cut to its
    /// frames), then syncs them, so that appends overwrite blocks the file has: an `fdatasync`
    /// after an append that grows a file also commits its new size to the filesystem's journal,
    /// one after an overwrite does not. Nothing is written for a segment without frames. Called
    /// by the checkpoint thread.
    pub(crate) fn write_zeros_ahead(&self, segment_limit: u64) -> std::io::Result<()> {
        let zeros = vec![0u8; ZEROING_PIECE];
        let mut file = None;
        loop {
            let mut tail = self.tail.lock();
            let segment = &mut tail.segment;
            // Past the limit, a piece for the frames appended before the segment is ended.
            let room = segment_limit
                .saturating_sub(segment.length)
                .saturating_add(ZEROING_PIECE as u64);
            let ahead = (segment.length * 2).clamp(ZEROED_AHEAD_MIN, ZEROED_AHEAD_MAX).min(room);
            if segment.length == 0 || segment.allocated >= segment.length + ahead {
                break;
            }
            // Under the lock: no frame lands where zeros go.
            segment.file.write_all_at(&zeros, segment.allocated)?;
            segment.allocated += ZEROING_PIECE as u64;
            file = Some(segment.file.clone());
        }
        match file {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }

    /// The segment being appended to.
    pub(crate) fn tail_number(&self) -> u64 {
        self.tail.lock().segment.number
    }

    /// The last frame appended (or the one before the first, if none was).
    pub(crate) fn last_seq(&self) -> u64 {
        self.tail.lock().next_seq - 1
    }

    /// Bytes in the segment being appended to.
    pub(crate) fn tail_length(&self) -> u64 {
        self.tail.lock().segment.length
    }

    /// Bytes in every segment.
    pub(crate) fn length(&self) -> u64 {
        let ended: u64 = self.ended.lock().iter().map(|segment| segment.length).sum();
        ended + self.tail_length()
    }

    /// Ends the segment being appended to, if it has frames — its zeros cut off, synced whole —
    /// and begins the next.
    pub(crate) fn roll(&self) -> Result<(), LogError> {
        let (number, file) = {
            let tail = self.tail.lock();
            if tail.segment.length == 0 {
                return Ok(());
            }
            (tail.segment.number, tail.segment.file.clone())
        };
        // Created (and the directory synced), and the segment synced, outside the lock: appends
        // go on meanwhile. The sync under the lock then has only what they added to write, and
        // no frame reaches the next segment before this one is synced whole.
        let next = create_segment(&self.directory, number + 1)?;
        let path = segment_path(&self.directory, number);
        file.sync_data().map_err(io_error(&path))?;
        let mut tail = self.tail.lock();
        let length = tail.segment.length;
        tail.segment
            .file
            .set_len(length)
            .and_then(|()| tail.segment.file.sync_data())
            .map_err(io_error(&path))?;
        tail.segment = next;
        self.ended.lock().push(SegmentSpan {
            number,
            first: number,
            length,
            compacted: false,
        });
        Ok(())
    }

    /// Makes every frame appended so far durable, for a checkpoint of the tree that follows;
    /// returns the last frame's number and the segment being appended to (the checkpoint
    /// record's).
    pub(crate) fn sync_for_checkpoint(&self) -> Result<(u64, u64), LogError> {
        self.sync_through().map_err(io_error(&self.directory))
    }

    /// Writes the checkpoint record in place of the last, atomically.
    pub(crate) fn record_checkpoint(&self, record: &CheckpointRecord) -> Result<(), LogError> {
        let directory = &self.directory;
        let path = directory.join(CHECKPOINT);
        let written = directory.join(format!("{CHECKPOINT}.new"));
        let mut file = File::create(&written).map_err(io_error(&written))?;
        std::io::Write::write_all(&mut file, &record.encode())
            .and_then(|()| file.sync_all())
            .map_err(io_error(&written))?;
        std::fs::rename(&written, &path).map_err(io_error(&path))?;
        sync_directory(directory)
    }

    /// The segments before the one being appended to, in the log's order.
    pub(crate) fn ended_segments(&self) -> Vec<SegmentSpan> {
        self.ended.lock().clone()
    }

    /// The bytes of an ended segment, to scan with [`EndedSegment::frames`] (synced whole, so a
    /// frame that fails its checksum there is damage).
    pub(crate) fn read_ended(&self, number: u64) -> Result<EndedSegment, LogError> {
        let segment = self.ended_file(number)?;
        let bytes = std::fs::read(&segment.path).map_err(io_error(&segment.path))?;
        Ok(EndedSegment {
            path: segment.path,
            format: segment.format,
            bytes,
        })
    }

    /// The file of the ended segment `number`.
    fn ended_file(&self, number: u64) -> Result<SegmentFile, LogError> {
        segments(&self.directory)?
            .into_iter()
            .find(|segment| segment.number == number)
            .ok_or_else(|| LogError::Damaged {
                path: segment_path(&self.directory, number).display().to_string(),
                offset: 0,
                what: "the segment is missing".to_string(),
            })
    }

    /// Deletes an ended segment, for good (the directory is synced: a segment back after a crash
    /// could bring back what later removals, since compacted away, had removed).
    pub(crate) fn remove(&self, number: u64) -> Result<(), LogError> {
        if let Ok(segment) = self.ended_file(number) {
            std::fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            sync_directory(&self.directory)?;
        }
        self.ended.lock().retain(|ended| ended.number != number);
        Ok(())
    }

    /// Puts a compacted segment in place of the ended segments `numbers` (adjacent in the log,
    /// in its order), standing for their frames `first_seq..=last_seq` and holding `writes`
    /// (see [`encode_compacted`]). Written under another name and synced, renamed into place, then
    /// the segments it replaces deleted: a crash in between leaves them, and the next open
    /// deletes them. Appends go on meanwhile; the caller makes sure every write that made one of
    /// the dropped writes dead is durable before this. Returns the new segment's length.
    pub(crate) fn replace_with_compacted(
        &self,
        numbers: &[u64],
        first_seq: u64,
        last_seq: u64,
        writes: &[KeptWrite],
        frame_bytes: usize,
    ) -> Result<u64, LogError> {
        let (Some(&oldest), Some(&last)) = (numbers.first(), numbers.last()) else {
            return Ok(0);
        };
        let first = self
            .ended
            .lock()
            .iter()
            .find(|segment| segment.number == oldest)
            .map_or(oldest, |segment| segment.first);
        let replaced: Vec<SegmentFile> = numbers
            .iter()
            .map(|number| self.ended_file(*number))
            .collect::<Result<_, _>>()?;
        let bytes = encode_compacted(first_seq, last_seq, writes, frame_bytes);
        let path = self
            .directory
            .join(format!("{first:020}-{last:020}.{COMPACTED_EXTENSION}"));
        let written = path.with_extension(format!("{COMPACTED_EXTENSION}.{BEING_WRITTEN_EXTENSION}"));
        let mut file = File::create(&written).map_err(io_error(&written))?;
        std::io::Write::write_all(&mut file, &bytes)
            .and_then(|()| file.sync_data())
            .map_err(io_error(&written))?;
        std::fs::rename(&written, &path).map_err(io_error(&path))?;
        sync_directory(&self.directory)?;
        for segment in replaced.iter().filter(|segment| segment.path != path) {
            std::fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
        }
        sync_directory(&self.directory)?;
        let mut ended = self.ended.lock();
        ended.retain(|segment| !numbers.contains(&segment.number));
        let at = ended.partition_point(|segment| segment.number < last);
        ended.insert(
            at,
            SegmentSpan {
                number: last,
                first,
                length: bytes.len() as u64,
                compacted: true,
            },
        );
        Ok(bytes.len() as u64)
    }
}

/// An ended segment's bytes, read whole.
pub(crate) struct EndedSegment {
    path: PathBuf,
    format: LogFormat,
    bytes: Vec<u8>,
}

impl EndedSegment {
    /// Its frames, borrowed from its bytes (those its entries' checksums still read come back
    /// with their damaged values set apart; the first frame that does not read is `Err`).
    pub(crate) fn frames(&self) -> Result<Vec<ScannedFrame<'_>>, LogError> {
        match scan_segment(&self.bytes, &self.path, self.format, true) {
            (frames, _, None) => Ok(frames),
            (_, _, Some(Stop { offset, what, .. })) => Err(LogError::Damaged {
                path: self.path.display().to_string(),
                offset,
                what,
            }),
        }
    }
}

fn sync_directory(directory: &Path) -> Result<(), LogError> {
    File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error(directory))
}

fn segment_path(directory: &Path, number: u64) -> PathBuf {
    directory.join(format!("{number:020}.{}", LogFormat::Checksummed.extension()))
}

/// Creates an empty segment and syncs the directory, so the file survives a crash.
fn create_segment(directory: &Path, number: u64) -> Result<Segment, LogError> {
    let path = segment_path(directory, number);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    sync_directory(directory)?;
    Ok(Segment {
        number,
        file: Arc::new(file),
        length: 0,
        synced: Arc::new(AtomicU64::new(0)),
        allocated: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(key: &str, value: &str) -> Changes {
        let mut changes = Changes::default();
        changes.insert(key, value);
        changes.remove(format!("{key}-old"));
        changes
    }

    fn expected(seq: u64, key: &str, value: &str) -> Frame {
        Frame {
            seq,
            writes: vec![
                (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec())),
                (format!("{key}-old").into_bytes(), None),
                (APPLIED_THROUGH.to_vec(), Some(seq.to_be_bytes().to_vec())),
            ],
            damaged: Vec::new(),
        }
    }

    /// A log in a new directory whose first frame is `first_seq`.
    fn fresh_log(first_seq: u64) -> (tempfile::TempDir, CommitLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), first_seq, None).unwrap();
        (dir, log)
    }

    /// The frames past `applied_through`, from the last checkpoint on.
    fn recover(dir: &Path, applied_through: u64) -> Result<Vec<Frame>, LogError> {
        recover_from(dir, applied_through, ReplayFrom::Checkpoint).map(|(frames, _)| frames)
    }

    fn recover_from(dir: &Path, applied_through: u64, from: ReplayFrom) -> Result<(Vec<Frame>, Recovered), LogError> {
        let mut frames = Vec::new();
        let recovered = super::recover(dir, applied_through, from, |frame| -> Result<(), LogError> {
            frames.push(frame);
            Ok(())
        })?;
        Ok((frames, recovered))
    }

    fn checkpoint(log: &CommitLog) {
        let (through, segment) = log.sync_for_checkpoint().unwrap();
        log.record_checkpoint(&CheckpointRecord {
            through,
            segment,
            ..CheckpointRecord::default()
        })
        .unwrap();
    }

    fn append(log: &CommitLog, key: &str, value: &str) {
        let mut changes = changes(key, value);
        log.lock().append(&mut changes).unwrap();
        let writes: Vec<Write> = changes
            .writes()
            .map(|(key, value)| (key.to_vec(), value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(writes, expected(log.lock().next_seq - 1, key, value).writes);
    }

    #[test]
    fn frames_past_the_trees_number_come_back_in_order() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        append(&log, "b", "2");
        log.roll().unwrap();
        append(&log, "c", "3");
        log.sync().unwrap();
        assert_eq!(
            recover(dir.path(), 0).unwrap(),
            vec![expected(1, "a", "1"), expected(2, "b", "2"), expected(3, "c", "3")]
        );
        assert_eq!(recover(dir.path(), 2).unwrap(), vec![expected(3, "c", "3")]);
        // After a checkpoint, only the segments from its own on are read.
        let (through, segment) = log.sync_for_checkpoint().unwrap();
        assert_eq!((through, segment), (3, 2));
        log.record_checkpoint(&CheckpointRecord {
            through: 2,
            segment: 2,
            ..CheckpointRecord::default()
        })
        .unwrap();
        std::fs::write(segment_path(&dir.path().join(DIRECTORY), 1), b"not read").unwrap();
        assert_eq!(recover(dir.path(), 2).unwrap(), vec![expected(3, "c", "3")]);
    }

    #[test]
    fn appends_overwrite_the_zeros_written_ahead_and_the_zeros_end_the_log() {
        let (dir, log) = fresh_log(1);
        log.write_zeros_ahead(u64::MAX).unwrap();
        let path = segment_path(&dir.path().join(DIRECTORY), 1);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "nothing ahead of an unused segment"
        );
        append(&log, "a", "1");
        log.write_zeros_ahead(u64::MAX).unwrap();
        let zeroed = std::fs::metadata(&path).unwrap().len();
        assert!(zeroed >= log.tail_length() + ZEROED_AHEAD_MIN, "{zeroed}");
        append(&log, "b", "2");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            zeroed,
            "the append overwrote zeros"
        );
        assert_eq!(
            recover(dir.path(), 0).unwrap(),
            vec![expected(1, "a", "1"), expected(2, "b", "2")]
        );
        // A frame cut short in the zeros is still the torn end.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0x55; 5], log.tail_length()).unwrap();
        assert_eq!(
            recover(dir.path(), 0).unwrap(),
            vec![expected(1, "a", "1"), expected(2, "b", "2")]
        );
    }

    #[test]
    fn no_zeros_are_written_far_past_where_the_segment_is_ended() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        let limit = log.tail_length() + 1000;
        log.write_zeros_ahead(limit).unwrap();
        let path = segment_path(&dir.path().join(DIRECTORY), 1);
        let zeroed = std::fs::metadata(&path).unwrap().len();
        // Whole pieces: the one that reaches past the limit, and no more.
        assert!(zeroed > limit && zeroed <= limit + 2 * ZEROING_PIECE as u64, "{zeroed}");
    }

    #[test]
    fn a_torn_end_of_the_last_segment_is_where_the_log_ends() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        let whole = log.tail_length();
        append(&log, "b", "2");
        let path = segment_path(&dir.path().join(DIRECTORY), 1);
        for cut in [whole + 3, whole + HEADER as u64 + 2, log.tail_length() - 1] {
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            let full = std::fs::read(&path).unwrap();
            file.set_len(cut).unwrap();
            assert_eq!(
                recover(dir.path(), 0).unwrap(),
                vec![expected(1, "a", "1")],
                "cut at {cut}"
            );
            file.set_len(0).unwrap();
            file.write_all_at(&full, 0).unwrap();
        }
        // A flipped byte in the last frame of the last segment: the same torn end.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(recover(dir.path(), 0).unwrap(), vec![expected(1, "a", "1")]);
    }

    /// Flips a byte inside the frame that begins at `offset` of the first segment.
    fn flip_byte_of_frame_at(dir: &Path, offset: u64) {
        let path = segment_path(&dir.join(DIRECTORY), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize + HEADER + 2] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
    }

    #[test]
    fn a_bad_frame_the_log_was_synced_past_is_damage_not_a_torn_end() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        log.sync().unwrap();
        let second = log.tail_length();
        append(&log, "b", "2");
        log.sync().unwrap();
        append(&log, "c", "3");
        flip_byte_of_frame_at(dir.path(), second);
        let error = recover(dir.path(), 0).unwrap_err();
        assert!(
            matches!(&error, LogError::Damaged { offset, what, .. } if *offset == second && what.contains("synced")),
            "{error}"
        );
    }

    #[test]
    fn a_bad_frame_no_later_frame_was_synced_past_is_the_torn_end() {
        // A crash can write a later page of the file and not an earlier one, when neither was
        // synced: frames after the bad one that do not say it was synced are not acknowledged.
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        log.sync().unwrap();
        let second = log.tail_length();
        append(&log, "b", "2");
        append(&log, "c", "3");
        flip_byte_of_frame_at(dir.path(), second);
        assert_eq!(recover(dir.path(), 0).unwrap(), vec![expected(1, "a", "1")]);
    }

    #[test]
    fn a_bad_frame_in_a_segment_synced_whole_is_damage_named_with_its_place() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        append(&log, "b", "2");
        log.roll().unwrap();
        append(&log, "c", "3");
        let path = segment_path(&dir.path().join(DIRECTORY), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let error = recover(dir.path(), 0).unwrap_err();
        assert!(
            matches!(&error, LogError::Damaged { path: named, offset, .. } if named.ends_with("00000000000000000001.log2") && *offset > 0),
            "{error}"
        );
        // Frames the tree already holds are not read for it.
        assert_eq!(recover(dir.path(), 2).unwrap(), vec![expected(3, "c", "3")]);
    }

    #[test]
    fn a_tree_behind_the_last_checkpoint_is_named_as_such() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        append(&log, "b", "2");
        log.roll().unwrap();
        checkpoint(&log);
        assert_eq!(recover(dir.path(), 2).unwrap(), vec![]);
        let error = recover(dir.path(), 1).unwrap_err();
        assert!(
            matches!(
                error,
                LogError::TreeBehind {
                    checkpointed: 2,
                    reached: 1
                }
            ),
            "{error}"
        );
        // From the start (an empty tree being rebuilt), every frame kept comes back.
        let (frames, _) = recover_from(dir.path(), 0, ReplayFrom::Start).unwrap();
        assert_eq!(frames, vec![expected(1, "a", "1"), expected(2, "b", "2")]);
    }

    #[test]
    fn missing_frames_are_damage() {
        let (dir, log) = fresh_log(5);
        append(&log, "a", "1");
        log.sync().unwrap();
        let error = recover(dir.path(), 2).unwrap_err();
        assert!(error.to_string().contains("frame 5 follows frame 2"), "{error}");
        assert_eq!(recover(dir.path(), 4).unwrap(), vec![expected(5, "a", "1")]);
    }

    #[test]
    fn opening_goes_on_after_the_segments_kept_without_their_torn_end() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        let whole = log.tail_length();
        append(&log, "b", "2");
        log.write_zeros_ahead(u64::MAX).unwrap();
        drop(log);
        // The second frame torn by a crash.
        let path = segment_path(&dir.path().join(DIRECTORY), 1);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff; 3], whole + 4).unwrap();
        let (frames, recovered) = recover_from(dir.path(), 0, ReplayFrom::Checkpoint).unwrap();
        assert_eq!(frames, vec![expected(1, "a", "1")]);
        assert_eq!(recovered.end, Some((1, whole)));
        assert_eq!(recovered.last_seq, Some(1));

        let log = CommitLog::open(dir.path(), 2, recovered.end).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            whole,
            "the torn end and the zeros are cut off"
        );
        append(&log, "c", "3");
        let span = SegmentSpan {
            number: 1,
            first: 1,
            length: whole,
            compacted: false,
        };
        assert_eq!(log.ended_segments(), vec![span]);
        // The first segment is now synced whole, and the frames follow each other.
        assert_eq!(
            recover(dir.path(), 0).unwrap(),
            vec![expected(1, "a", "1"), expected(2, "c", "3")]
        );
        log.remove(1).unwrap();
        assert_eq!(log.ended_segments(), vec![]);
        let (frames, _) = recover_from(dir.path(), 0, ReplayFrom::Start).unwrap();
        assert_eq!(frames, vec![expected(2, "c", "3")]);
    }

    #[test]
    fn checkpoint_records_of_the_build_before_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let directory = dir.path().join(DIRECTORY);
        std::fs::create_dir_all(&directory).unwrap();
        let mut old = 41u64.to_le_bytes().to_vec();
        old.extend_from_slice(&crc32fast::hash(&41u64.to_le_bytes()).to_le_bytes());
        std::fs::write(directory.join(CHECKPOINT), &old).unwrap();
        assert_eq!(
            last_checkpoint(dir.path()).unwrap(),
            Some(CheckpointRecord {
                through: 41,
                ..CheckpointRecord::default()
            })
        );
        let record = CheckpointRecord {
            through: 7,
            segment: 3,
            live_bytes: 1234,
            whole: true,
        };
        assert_eq!(CheckpointRecord::decode(&record.encode()), Some(record));
        let mut damaged = record.encode();
        damaged[9] ^= 1;
        assert_eq!(CheckpointRecord::decode(&damaged), None);
    }

    /// Where `needle` is in the first segment's bytes.
    fn find_in_first_segment(dir: &Path, needle: &[u8]) -> (PathBuf, usize) {
        let path = segment_path(&dir.join(DIRECTORY), 1);
        let bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(needle.len()).position(|window| window == needle).unwrap();
        (path, at)
    }

    #[test]
    fn a_damaged_value_is_named_with_its_key_and_the_rest_of_its_frame_is_read() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "first-value");
        log.sync().unwrap();
        append(&log, "b", "second-value");
        log.sync().unwrap();
        append(&log, "c", "third-value");
        let (path, at) = find_in_first_segment(dir.path(), b"second-value");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at + 3] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();

        let frames = recover(dir.path(), 0).unwrap();
        assert_eq!(frames.len(), 3, "every frame is read");
        assert_eq!(frames[0], expected(1, "a", "first-value"));
        assert_eq!(frames[2], expected(3, "c", "third-value"));
        let mut second = expected(2, "b", "second-value");
        second.writes.remove(0);
        assert_eq!(frames[1].writes, second.writes, "the frame's other writes");
        let [damaged] = &frames[1].damaged[..] else {
            panic!("one damaged value: {:?}", frames[1].damaged);
        };
        assert_eq!(damaged.key, b"b");
        assert_eq!(damaged.raw, b"secOnd-value");
        // The entry: its kind, two lengths, the key "b" and the head's checksum before the value.
        let entry = at - (1 + 4 + 4 + 1 + 4);
        assert_eq!(damaged.place, format!("{} byte {entry}", path.display()));
    }

    #[test]
    fn a_damaged_frame_header_loses_nothing_its_entries_vouch_for() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        log.sync().unwrap();
        let second = log.tail_length() as usize;
        append(&log, "b", "2");
        log.sync().unwrap();
        append(&log, "c", "3");
        let path = segment_path(&dir.path().join(DIRECTORY), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        // The frame's length, and its number.
        bytes[second] ^= 0x04;
        bytes[second + 9] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            recover(dir.path(), 0).unwrap(),
            vec![expected(1, "a", "1"), expected(2, "b", "2"), expected(3, "c", "3")]
        );
    }

    #[test]
    fn segments_written_before_entries_had_checksums_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let directory = dir.path().join(DIRECTORY);
        std::fs::create_dir_all(&directory).unwrap();
        // A frame as the builds before wrote it: kind, key and value with their lengths.
        let mut payload = Vec::new();
        for (key, value) in [(&b"a"[..], &b"1"[..]), (APPLIED_THROUGH, &7u64.to_be_bytes()[..])] {
            payload.push(PUT);
            payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
            payload.extend_from_slice(key);
            payload.extend_from_slice(&(value.len() as u32).to_le_bytes());
            payload.extend_from_slice(value);
        }
        let mut frame = vec![0u8; HEADER];
        frame[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        frame[8..16].copy_from_slice(&7u64.to_le_bytes());
        frame.extend_from_slice(&payload);
        let checksum = crc32fast::hash(&frame[8..]);
        frame[4..8].copy_from_slice(&checksum.to_le_bytes());
        std::fs::write(directory.join(format!("{:020}.log", 3)), &frame).unwrap();
        assert_eq!(
            recover(dir.path(), 6).unwrap(),
            vec![Frame {
                seq: 7,
                writes: vec![
                    (b"a".to_vec(), Some(b"1".to_vec())),
                    (APPLIED_THROUGH.to_vec(), Some(7u64.to_be_bytes().to_vec()))
                ],
                damaged: Vec::new(),
            }]
        );
        // The log goes on after them in the new format.
        let log = CommitLog::open(dir.path(), 8, None).unwrap();
        append(&log, "b", "2");
        let names: Vec<PathBuf> = segments(&directory)
            .unwrap()
            .into_iter()
            .map(|segment| segment.path)
            .collect();
        assert_eq!(
            names,
            vec![
                directory.join(format!("{:020}.log", 3)),
                directory.join(format!("{:020}.log2", 4))
            ]
        );
    }

    #[test]
    fn a_frame_a_checkpoint_covered_that_does_not_read_is_damage_unless_the_tree_holds_it() {
        let (dir, log) = fresh_log(1);
        append(&log, "a", "1");
        let second = log.tail_length() as usize;
        append(&log, "b", "2");
        append(&log, "c", "3");
        // Nothing synced between the appends: only the checkpoint says they were durable.
        checkpoint(&log);
        let path = segment_path(&dir.path().join(DIRECTORY), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second + HEADER + 2] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        // Rebuilding an empty tree: frames 2 and 3 are lost, and said so.
        let error = recover_from(dir.path(), 0, ReplayFrom::Start).unwrap_err();
        assert!(
            matches!(&error, LogError::Damaged { offset, .. } if *offset == second as u64),
            "{error}"
        );
        // A tree that holds them loses nothing but the log's copies.
        let (frames, recovered) = recover_from(dir.path(), 3, ReplayFrom::Checkpoint).unwrap();
        assert_eq!(frames, vec![]);
        assert!(recovered.lost_copies);
    }

    fn kept(seq: u64, key: &str, value: Option<&str>) -> KeptWrite {
        KeptWrite {
            seq,
            key: key.as_bytes().to_vec(),
            value: value.map(|value| value.as_bytes().to_vec()),
        }
    }

    /// A frame as compaction writes it: its writes, then its number.
    fn compacted_frame(seq: u64, writes: &[(&str, Option<&str>)]) -> Frame {
        let mut all: Vec<Write> = writes
            .iter()
            .map(|(key, value)| (key.as_bytes().to_vec(), value.map(|value| value.as_bytes().to_vec())))
            .collect();
        all.push((APPLIED_THROUGH.to_vec(), Some(seq.to_be_bytes().to_vec())));
        Frame {
            seq,
            writes: all,
            damaged: Vec::new(),
        }
    }

    /// Segment 1 holds frames 1–3, segment 2 frames 4–5, segment 3 (being appended to) frame 6.
    fn three_segments() -> (tempfile::TempDir, CommitLog) {
        let (dir, log) = fresh_log(1);
        for (key, value) in [("a", "1"), ("b", "1"), ("a", "2")] {
            append(&log, key, value);
        }
        log.roll().unwrap();
        for (key, value) in [("c", "1"), ("b", "2")] {
            append(&log, key, value);
        }
        log.roll().unwrap();
        append(&log, "a", "3");
        log.sync().unwrap();
        (dir, log)
    }

    #[test]
    fn a_compacted_segment_stands_for_the_frames_it_replaced() {
        let (dir, log) = three_segments();
        // Segment 1 alone: only `a` = 2 (frame 3) kept; frames 1 and 3 mark its range.
        log.replace_with_compacted(&[1], 1, 3, &[kept(3, "a", Some("2"))], 1)
            .unwrap();
        let compacted = dir.path().join(DIRECTORY).join(format!("{:020}-{:020}.log2c", 1, 1));
        assert!(compacted.exists());
        assert!(!segment_path(&dir.path().join(DIRECTORY), 1).exists());
        let (frames, _) = recover_from(dir.path(), 0, ReplayFrom::Start).unwrap();
        assert_eq!(
            frames,
            vec![
                compacted_frame(1, &[]),
                compacted_frame(3, &[("a", Some("2"))]),
                expected(4, "c", "1"),
                expected(5, "b", "2"),
                expected(6, "a", "3"),
            ],
            "frame 2 is not missing: the compacted segment stands for it"
        );
        assert_eq!(
            log.ended_segments().first().copied(),
            Some(SegmentSpan {
                number: 1,
                first: 1,
                length: std::fs::metadata(&compacted).unwrap().len(),
                compacted: true,
            })
        );

        // Merged with segment 2, in frames split only between the frames they came from.
        let writes = [kept(3, "a", Some("2")), kept(4, "c", Some("1")), kept(5, "b-old", None)];
        log.replace_with_compacted(&[1, 2], 1, 5, &writes, 1).unwrap();
        let (frames, _) = recover_from(dir.path(), 0, ReplayFrom::Start).unwrap();
        assert_eq!(
            frames,
            vec![
                compacted_frame(1, &[]),
                compacted_frame(3, &[("a", Some("2"))]),
                compacted_frame(4, &[("c", Some("1"))]),
                compacted_frame(5, &[("b-old", None)]),
                expected(6, "a", "3"),
            ]
        );
        let names: Vec<(u64, u64, bool)> = log
            .ended_segments()
            .iter()
            .map(|segment| (segment.first, segment.number, segment.compacted))
            .collect();
        assert_eq!(names, vec![(1, 2, true)]);

        // In large frames, the writes of frames 3–5 go in the last, numbered 5.
        log.replace_with_compacted(&[2], 1, 5, &writes, usize::MAX).unwrap();
        let (frames, _) = recover_from(dir.path(), 0, ReplayFrom::Start).unwrap();
        assert_eq!(
            frames[..2],
            [
                compacted_frame(1, &[]),
                compacted_frame(5, &[("a", Some("2")), ("c", Some("1")), ("b-old", None)]),
            ]
        );
    }

    #[test]
    fn segments_a_compaction_replaced_before_it_died_are_not_read_and_are_deleted_at_open() {
        let (dir, log) = three_segments();
        let directory = dir.path().join(DIRECTORY);
        let originals: Vec<(PathBuf, Vec<u8>)> = [1, 2]
            .iter()
            .map(|number| {
                let path = segment_path(&directory, *number);
                let bytes = std::fs::read(&path).unwrap();
                (path, bytes)
            })
            .collect();
        log.replace_with_compacted(&[1, 2], 1, 5, &[kept(5, "b", Some("2"))], 1)
            .unwrap();
        let (after, _) = recover_from(dir.path(), 0, ReplayFrom::Start).unwrap();
        drop(log);
        // As if the compaction died after renaming its segment into place, before deleting
        // those it replaced; and another died before its rename.
        for (path, bytes) in &originals {
            std::fs::write(path, bytes).unwrap();
        }
        let unfinished = directory.join(format!("{:020}-{:020}.log2c.new", 1, 2));
        std::fs::write(&unfinished, b"half a segment").unwrap();
        let (frames, recovered) = recover_from(dir.path(), 0, ReplayFrom::Start).unwrap();
        assert_eq!(frames, after, "the replaced segments are not read");
        let log = CommitLog::open(dir.path(), 7, recovered.end).unwrap();
        for (path, _) in &originals {
            assert!(!path.exists(), "{} is deleted at open", path.display());
        }
        assert!(!unfinished.exists());
        let spans: Vec<(u64, u64)> = log
            .ended_segments()
            .iter()
            .map(|segment| (segment.first, segment.number))
            .collect();
        assert_eq!(spans, vec![(1, 2), (3, 3)]);
    }

    #[test]
    fn a_missing_segment_after_a_compacted_one_is_damage() {
        let (dir, log) = three_segments();
        log.replace_with_compacted(&[1], 1, 3, &[], 1).unwrap();
        std::fs::remove_file(segment_path(&dir.path().join(DIRECTORY), 2)).unwrap();
        let error = recover_from(dir.path(), 0, ReplayFrom::Start).unwrap_err();
        assert!(error.to_string().contains("frame 6 follows frame 3"), "{error}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 512, ..Default::default() })]

        /// Damaged bytes anywhere in a segment give frames the log held (values that fail their
        /// checksums set apart, under keys it held) or `Damaged`: never a panic, never a write
        /// the log did not hold.
        #[test]
        fn damaged_segments_give_what_the_log_held_or_damage(
            flips in proptest::collection::vec((0usize..4096, 1u8..=255), 1..4),
        ) {
            let (dir, log) = fresh_log(1);
            let originals: Vec<Frame> = (0..5)
                .map(|index| {
                    let (key, value) = (format!("key-{index}"), format!("value-{index}-{}", "v".repeat(index * 7)));
                    append(&log, &key, &value);
                    log.sync().unwrap();
                    expected(index as u64 + 1, &key, &value)
                })
                .collect();
            let path = segment_path(&dir.path().join(DIRECTORY), 1);
            let mut bytes = std::fs::read(&path).unwrap();
            for (at, mask) in flips {
                let at = at % bytes.len();
                bytes[at] ^= mask;
            }
            std::fs::write(&path, &bytes).unwrap();
            match recover(dir.path(), 0) {
                Ok(frames) => {
                    for (index, frame) in frames.iter().enumerate() {
                        let original = &originals[index];
                        proptest::prop_assert_eq!(frame.seq, original.seq);
                        for write in &frame.writes {
                            proptest::prop_assert!(original.writes.contains(write), "{:?} not in {:?}", write, original);
                        }
                        for damaged in &frame.damaged {
                            proptest::prop_assert!(original.writes.iter().any(|(key, _)| *key == damaged.key));
                        }
                        proptest::prop_assert_eq!(frame.writes.len() + frame.damaged.len(), original.writes.len());
                    }
                }
                Err(LogError::Damaged { .. }) => {}
                Err(error) => proptest::prop_assert!(false, "{}", error),
            }
        }
    }
}
