//! What makes the embedded store's writes durable and its tree recoverable: the commit log in
//! front of sled's tree, checkpoints of the tree, and the upkeep that keeps the log whole and
//! bounded.
//!
//! **Whole:** every record the tree holds is in the log, as the last write of its key there, so
//! replaying the log from its oldest segment onto an empty tree gives the tree. Every write goes
//! through the log. Compaction rewrites segments in place: a segment (or a run of two) is
//! replaced by a compacted segment holding, where they were in the log's order, each key's last
//! write there that is still live — a value the tree still holds, or a removal unless nothing
//! older is left for it to undo — so replaying the log gives what it gave before. It takes no
//! lock: a write that lands meanwhile is in a later segment and wins on replay. Before the
//! compacted segment takes its place, the log is synced, so every write that made a dropped one
//! dead is durable. A store that does not have a whole log (opened first by a build before this
//! one, its log deleted by an operator, or its tree ahead of its log after a machine crash lost
//! unsynced frames), or whose compaction finds a segment that does not read, has its tree copied
//! into the log and the segments before the copy deleted.
//!
//! **Bounded:** compaction runs while the log is over three times what the tree's records take as
//! log entries (counted as writes replace them) plus two segments. It goes round the segments a
//! checkpoint covers and rewrites the first whose compacted form (frames included) would take at
//! most half its length, with the compacted segment before it if both are small: segments of
//! records written once and kept (the finished instances) are read, not rewritten, and each byte
//! rewritten frees at least as much.
//!
//! **Rebuilt:** when sled's files are damaged — sled fails to recover them, or its tree is behind
//! what a checkpoint made durable — and the log is whole, sled's files are set aside in
//! `sled-damaged-<unix ms>/` and the tree is rebuilt from the log: nothing acknowledged is lost.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{backend, id_from_key, id_key, io_failed, log_failed, FINISHED, LIVE, READY, SIGNALS};
use crate::commit_log::{
    self, compacted_length, Changes, CheckpointRecord, CommitLog, DamagedValue, KeptWrite, LogError, Recovered,
    ReplayFrom, SegmentSpan, Value, APPLIED_THROUGH, ENTRY_OVERHEAD,
};
use crate::space::{SpaceGuard, DEFAULT_DISK_RESERVE};
use strata_core::periodic::PeriodicThread;
use strata_store::StoreError;

/// The log's segment being appended to is ended and the next begun at this size (by default).
/// Compaction rewrites ended segments; the log's slack beyond its bound is two segments.
pub(super) const DEFAULT_SEGMENT_LIMIT: u64 = 16 * 1024 * 1024;
/// A checkpoint is due when the log has frames the last one did not cover and it is this old (by
/// default).
pub(super) const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Compaction runs while the log is over this many times what the tree's records take as log
/// entries (plus two segments): then the segments it may take are on average two-thirds garbage,
/// so a round of them finds one at least half garbage.
const LIVE_FACTOR: u64 = 3;
/// How often the checkpoint thread looks.
const CHECKPOINT_LOOK_EVERY: Duration = Duration::from_millis(100);
/// A segment being compacted is merged with the compacted segment before it when both together
/// take at most this fraction of a segment: tiny compacted segments (a hot record's last value)
/// do not pile up one per segment written, and a merge rewrites at most an eighth of a segment.
/// Any two adjacent compacted segments then take over an eighth of a segment, which bounds their
/// number to sixteen per segment's worth of log. (Merging whenever both fit in one segment cost
/// 6 % of Sync throughput at 64 concurrent: each merge rewrote what the last one had.)
const SMALL_SEGMENTS_MERGED_BELOW: u64 = 8;
/// How many segments compaction looks at, at most, per look of the checkpoint thread.
const SEGMENTS_LOOKED_AT_PER_TURN: usize = 4;
/// Records copied from the tree into the log go in frames of about this many bytes, each under
/// the log's lock (a commit waits for one at most); compacted segments are written in frames of
/// this size too.
const COPY_BATCH_BYTES: usize = 256 * 1024;
/// The prefix of the directory sled's damaged files are moved into.
const SET_ASIDE_PREFIX: &str = "sled-damaged-";

/// The tree, its data file and the commit log, shared with the checkpoint thread.
pub(super) struct Durable {
    pub(super) db: sled::Db,
    /// sled's data file, `fdatasync`ed by every checkpoint.
    data_file: File,
    pub(super) log: CommitLog,
    /// Set by the first write the disk refused: from then on the tree in memory may hold what the
    /// log or sled's file does not, so every later write is refused until a restart recovers.
    failure: Mutex<Option<StoreError>>,
    /// One checkpoint at a time (the thread's, an explicit one, the last one at close); when the
    /// last began.
    checkpointing: Mutex<Instant>,
    /// How old the last checkpoint may get while the log has frames it did not cover, in
    /// milliseconds.
    pub(super) checkpoint_interval_ms: AtomicU64,
    /// The size at which the log's segment being appended to is ended.
    pub(super) segment_limit: AtomicU64,
    /// What the tree's records take as log entries (see [`ENTRY_OVERHEAD`]).
    live_bytes: AtomicI64,
    /// The log holds every record the tree holds.
    whole: AtomicBool,
    /// The last checkpoint's record.
    last_checkpoint: Mutex<CheckpointRecord>,
    /// Where compaction is in its round of the log (only the checkpoint thread compacts).
    compaction: Mutex<CompactionRound>,
    /// Refuses commits, and puts compaction off, while the disk is nearly full.
    pub(super) space: SpaceGuard,
}

/// What compacting some segments keeps (see [`Durable::kept_of`]).
struct Kept {
    /// The first and last frames the segments stand for (`None`: they hold no frame).
    frames: Option<(u64, u64)>,
    /// In the log's order.
    writes: Vec<KeptWrite>,
    /// What they take as log entries.
    bytes: u64,
}

/// Where compaction is in its round of the log's segments.
#[derive(Debug, Default)]
struct CompactionRound {
    /// The last segment looked at.
    after: u64,
    /// Bytes of segments looked at since one was last compacted.
    looked_at: u64,
    /// The log's length when a whole round found nothing worth compacting.
    fruitless_at: Option<u64>,
}

/// A segment compaction cannot read: logged; the caller copies the tree into the log instead.
fn unreadable(damage: &LogError) -> Option<Kept> {
    tracing::error!(%damage, "a commit-log segment being compacted does not read (damaged where its records cannot be named, or unreadable); copying the whole tree into the log instead");
    None
}

/// Why replaying the log stopped.
enum ReplayError {
    Log(LogError),
    Store(StoreError),
}

impl From<LogError> for ReplayError {
    fn from(error: LogError) -> ReplayError {
        ReplayError::Log(error)
    }
}

impl Durable {
    /// Opens the tree in `path` as its files and the commit log hold it — rebuilt from the log if
    /// sled's files are damaged and the log is whole — and the log to go on after it; copies the
    /// tree into the log if the log is not whole; checkpoints. `check_format` refuses a store a
    /// newer build wrote before anything is written to it; `damaged` answers damage that cannot
    /// be mended (and marks the directory).
    pub(super) fn open(
        path: &Path,
        check_format: &dyn Fn(&sled::Db) -> Result<(), StoreError>,
        damaged: &dyn Fn(String) -> StoreError,
    ) -> Result<Durable, StoreError> {
        let checkpoint = commit_log::last_checkpoint(path).map_err(|error| {
            damaged(format!(
                "{error}; delete the commit-log directory to open the store without it"
            ))
        })?;
        let whole = checkpoint.is_some_and(|record| record.whole);
        let sled_damage = match open_sled(path) {
            Ok(db) => {
                check_format(&db)?;
                match replay(&db, path, ReplayFrom::Checkpoint, damaged) {
                    Ok(recovered) => Ok((db, recovered)),
                    Err(ReplayError::Log(behind @ LogError::TreeBehind { .. })) => Err(behind.to_string()),
                    Err(error) => return Err(replay_failed(error, damaged)),
                }
            }
            Err(SledOpen::Damaged(reason)) => Err(reason),
            Err(SledOpen::Failed(error)) => return Err(error),
        };
        let (db, recovered) = match sled_damage {
            Ok(opened) => opened,
            Err(reason) if !whole => {
                return Err(damaged(format!(
                    "{reason}; the commit log does not hold every record (the store was last opened by a build before \
                     the log was kept whole, or its commit-log directory was deleted), so the tree cannot be rebuilt from it"
                )))
            }
            Err(reason) => {
                let (db, aside) = rebuild(path, &reason, damaged)?;
                check_format(&db)?;
                // Damage in the log too: say where sled's own files went, so that no one opens
                // the empty tree in their place for the store.
                let also_damaged = |detail: String| {
                    damaged(format!(
                        "sled's files are damaged ({reason}) and were moved to {}; rebuilding the tree from the \
                         commit log failed too: {detail}",
                        aside.display()
                    ))
                };
                let recovered = replay(&db, path, ReplayFrom::Start, &also_damaged)
                    .map_err(|error| replay_failed(error, &also_damaged))?;
                (db, recovered)
            }
        };
        let applied = applied_through(&db).map_err(|error| replay_failed(error, damaged))?;
        let next_seq = applied.max(recovered.last_seq.unwrap_or(0)) + 1;
        let log = CommitLog::open(path, next_seq, recovered.end).map_err(log_failed)?;
        let data_file = File::open(path.join("db")).map_err(|error| {
            StoreError::failed(
                "open",
                format!("cannot open sled's data file in {}: {error}", path.display()),
            )
        })?;
        // A tree ahead of the log holds writes whose frames a machine crash lost before they were
        // synced (never acknowledged, but in the tree): the log no longer holds them.
        let tree_ahead = recovered.last_seq.is_none_or(|last| last < applied);
        if recovered.lost_copies {
            tracing::warn!(
                "the commit log lost its copies of records sled's tree holds; copying the tree into the log"
            );
        }
        let durable = Durable {
            db,
            data_file,
            log,
            failure: Mutex::new(None),
            checkpointing: Mutex::new(Instant::now()),
            checkpoint_interval_ms: AtomicU64::new(DEFAULT_CHECKPOINT_INTERVAL.as_millis() as u64),
            segment_limit: AtomicU64::new(DEFAULT_SEGMENT_LIMIT),
            live_bytes: AtomicI64::new(checkpoint.map_or(0, |record| record.live_bytes as i64)),
            whole: AtomicBool::new(whole && !tree_ahead && !recovered.lost_copies),
            last_checkpoint: Mutex::new(checkpoint.unwrap_or_default()),
            compaction: Mutex::new(CompactionRound::default()),
            space: SpaceGuard::new(path, DEFAULT_DISK_RESERVE),
        };
        if durable.whole.load(Ordering::Relaxed) {
            durable.checkpoint()?;
        } else {
            durable.make_whole()?;
        }
        Ok(durable)
    }

    /// The failure that stopped writes, if one did.
    pub(super) fn stopped(&self) -> Result<(), StoreError> {
        match &*self.failure.lock() {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Stops writes for good after `error`, and returns it.
    fn stop(&self, error: StoreError) -> StoreError {
        tracing::error!(%error, "the embedded store refuses every further write until the engine restarts");
        self.failure.lock().get_or_insert(error).clone()
    }

    /// Appends `changes` to the log and applies them to the tree, in the same order for both.
    pub(super) fn write(&self, changes: &mut Changes, operation: &'static str) -> Result<(), StoreError> {
        self.stopped()?;
        let mut tail = self.log.lock();
        tail.append(changes)
            .map_err(|error| self.stop(io_failed("append to the commit log", &error)))?;
        // All or nothing for readers; across a crash the log makes it so.
        let replaced = self.db.apply_in_order(changes.writes()).map_err(|error| {
            // Part of the writes may be in the tree: nothing may build on that. The frame stays,
            // so the next open completes them.
            self.stop(backend(operation)(error))
        })?;
        drop(tail);
        let gone = replaced.bytes + replaced.records * ENTRY_OVERHEAD;
        self.live_bytes
            .fetch_add(changes.live_bytes() as i64 - gone as i64, Ordering::Relaxed);
        Ok(())
    }

    /// Makes every write so far durable: one `fdatasync` of the log.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.stopped()?;
        self.log
            .sync()
            .map_err(|error| self.stop(io_failed("fdatasync the commit log", &error)))
    }

    /// Whether the checkpoint thread should checkpoint now: the last checkpoint is older than
    /// the interval and did not cover every frame, or every ended segment (which compaction
    /// waits for).
    fn checkpoint_due(&self) -> bool {
        let interval = Duration::from_millis(self.checkpoint_interval_ms.load(Ordering::Relaxed));
        let last = *self.last_checkpoint.lock();
        let uncovered = self.log.last_seq() > last.through || self.log.tail_number() > last.segment;
        uncovered && self.checkpointing.lock().elapsed() >= interval
    }

    /// Makes the tree durable through every frame appended so far (the log first, so the log
    /// holds whatever the tree makes durable), and records how far.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        let mut last = self.checkpointing.lock();
        self.stopped()?;
        *last = Instant::now();
        let (through, segment) = self
            .log
            .sync_for_checkpoint()
            .map_err(|error| self.stop(log_failed(error)))?;
        self.db.flush().map_err(|error| self.stop(backend("flush")(error)))?;
        self.data_file
            .sync_data()
            .map_err(|error| self.stop(io_failed("fdatasync", &error)))?;
        let record = CheckpointRecord {
            through,
            segment,
            live_bytes: self.live_bytes.load(Ordering::Relaxed).max(0) as u64,
            whole: self.whole.load(Ordering::Relaxed),
        };
        self.log
            .record_checkpoint(&record)
            .map_err(|error| self.stop(log_failed(error)))?;
        *self.last_checkpoint.lock() = record;
        Ok(())
    }

    /// Ends the log's segment being appended to once it reaches the limit (the next checkpoint
    /// covers it, and compaction can then take it).
    fn roll_if_full(&self) -> Result<(), StoreError> {
        if self.log.tail_length() < self.segment_limit.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.log.roll().map_err(|error| self.stop(log_failed(error)))
    }

    /// Whether compaction should run now: the log is whole and over its bound, the disk has
    /// more free space than the reserve (compaction writes before it frees: a nearly full disk
    /// puts it off, as it refuses commits), and the last round of the log that found nothing worth
    /// compacting was a segment ago or more.
    fn compaction_due(&self) -> bool {
        if !self.whole.load(Ordering::Relaxed) || self.space.check().is_err() {
            return false;
        }
        let live = self.live_bytes.load(Ordering::Relaxed).max(0) as u64;
        let segment_limit = self.segment_limit.load(Ordering::Relaxed);
        let length = self.log.length();
        let fruitless = self
            .compaction
            .lock()
            .fruitless_at
            .is_some_and(|at| length < at + segment_limit);
        length > LIVE_FACTOR * live + 2 * segment_limit && !fruitless
    }

    /// Looks at the next few segments the last checkpoint covers, in a round of the log, and
    /// compacts the first whose compacted form would take at most half its length (with the
    /// compacted segment before it, if both are small: see [`SMALL_SEGMENTS_MERGED_BELOW`]). One
    /// that does not read (damaged where its records cannot be named) has the whole tree copied
    /// into the log in its place. A round that finds nothing worth compacting (the live records
    /// were counted low) puts compaction off until the log has grown a segment.
    pub(super) fn compact_next(&self) -> Result<(), StoreError> {
        let checkpointed = self.last_checkpoint.lock().segment;
        let ended = self.log.ended_segments();
        let oldest = ended.first().map(|segment| segment.number);
        let candidates: Vec<SegmentSpan> = ended
            .iter()
            .filter(|segment| segment.number < checkpointed)
            .copied()
            .collect();
        let covered: u64 = candidates.iter().map(|segment| segment.length).sum();
        let segment_limit = self.segment_limit.load(Ordering::Relaxed);
        let mut round = self.compaction.lock();
        for _ in 0..SEGMENTS_LOOKED_AT_PER_TURN.min(candidates.len()) {
            let index = candidates
                .iter()
                .position(|segment| segment.number > round.after)
                .unwrap_or(0);
            let victim = candidates[index];
            round.after = victim.number;
            let Some(kept) = self.kept_of(&[victim], oldest)? else {
                return self.make_whole();
            };
            // Worth it if what it frees is at least what it writes.
            if compacted_length(kept.bytes, COPY_BATCH_BYTES as u64) * 2 > victim.length {
                round.looked_at += victim.length;
                if round.looked_at >= covered {
                    round.looked_at = 0;
                    round.fruitless_at = Some(self.log.length());
                    tracing::debug!(covered, "a round of the commit log found no segment worth compacting");
                    return Ok(());
                }
                continue;
            }
            let previous = index
                .checked_sub(1)
                .map(|before| candidates[before])
                .filter(|previous| {
                    previous.compacted && previous.length + kept.bytes <= segment_limit / SMALL_SEGMENTS_MERGED_BELOW
                });
            let (unit, kept) = match previous {
                Some(previous) => match self.kept_of(&[previous, victim], oldest)? {
                    Some(kept) => (vec![previous.number, victim.number], kept),
                    None => return self.make_whole(),
                },
                None => (vec![victim.number], kept),
            };
            // The writes that made the dropped ones dead were appended before the tree showed
            // them: durable now, so the log never lacks a record the tree holds.
            self.sync()?;
            let nothing_to_stand_for = kept.writes.is_empty() && unit.first() == oldest.as_ref();
            match kept.frames {
                Some((first_seq, last_seq)) if !nothing_to_stand_for => {
                    self.log
                        .replace_with_compacted(&unit, first_seq, last_seq, &kept.writes, COPY_BATCH_BYTES)
                        .map_err(|error| self.stop(log_failed(error)))?;
                }
                // No frames, or nothing live at the log's start (no frame before for its frames'
                // numbers to follow on from): deleted.
                _ => {
                    for number in unit {
                        self.log.remove(number).map_err(|error| self.stop(log_failed(error)))?;
                    }
                }
            }
            round.looked_at = 0;
            round.fruitless_at = None;
            return Ok(());
        }
        Ok(())
    }

    /// What compacting `unit` (adjacent ended segments, in the log's order) keeps: each key's last
    /// write there, if it is still live — a value the tree still holds (the tree's value, for one
    /// whose log entry is damaged: it mends the log), or a removal unless the unit begins at the
    /// `oldest` segment (then nothing older is left for it to undo). `None` if a segment does not
    /// read.
    fn kept_of(&self, unit: &[SegmentSpan], oldest: Option<u64>) -> Result<Option<Kept>, StoreError> {
        let mut read = Vec::with_capacity(unit.len());
        for segment in unit {
            match self.log.read_ended(segment.number) {
                Ok(segment) => read.push(segment),
                Err(damage) => return Ok(unreadable(&damage)),
            }
        }
        let mut frames = Vec::with_capacity(read.len());
        for segment in &read {
            match segment.frames() {
                Ok(scanned) => frames.extend(scanned),
                Err(damage) => return Ok(unreadable(&damage)),
            }
        }
        let range = frames
            .first()
            .zip(frames.last())
            .map(|(first, last)| (first.seq(), last.seq()));
        // Only a key's last write in the unit can be its last write in the log: one read of the
        // tree per key, not per write (a record rewritten at every step is written hundreds of
        // times per segment).
        let mut last_writes: HashMap<&[u8], (usize, u64, Value<'_>)> = HashMap::new();
        let mut position = 0usize;
        for frame in &frames {
            let seq = frame.seq();
            for (key, value) in frame.entries() {
                if key != APPLIED_THROUGH {
                    last_writes.insert(key, (position, seq, value));
                }
                position += 1;
            }
        }
        let removals_undo_nothing = unit.first().map(|segment| segment.number) == oldest;
        let mut kept: Vec<(usize, KeptWrite)> = Vec::new();
        for (key, (position, seq, value)) in last_writes {
            let read_tree = || self.db.get(key).map_err(backend("read for compaction"));
            let value = match value {
                Value::Remove if removals_undo_nothing => continue,
                Value::Remove => None,
                Value::Put(value) => match read_tree()? {
                    Some(current) if current == value => Some(value.to_vec()),
                    _ => continue,
                },
                Value::Damaged(_) => match read_tree()? {
                    Some(current) => Some(current.to_vec()),
                    None => continue,
                },
            };
            let write = KeptWrite {
                seq,
                key: key.to_vec(),
                value,
            };
            kept.push((position, write));
        }
        kept.sort_unstable_by_key(|(position, _)| *position);
        let writes: Vec<KeptWrite> = kept.into_iter().map(|(_, write)| write).collect();
        let bytes = writes
            .iter()
            .map(|write| (write.key.len() + write.value.as_ref().map_or(0, Vec::len)) as u64 + ENTRY_OVERHEAD)
            .sum();
        Ok(Some(Kept {
            frames: range,
            writes,
            bytes,
        }))
    }

    /// Appends one frame of records copied from the tree, chosen by `fill` under the log's lock
    /// (so no commit comes between reading a value and its copy); the tree gets only the frame's
    /// number, as it holds the values already. Nothing is appended if `fill` chooses none. Ends
    /// the segment if it is full.
    fn copy_forward(
        &self,
        fill: impl FnOnce(&mut Changes, &sled::Db) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.stopped()?;
        let mut changes = Changes::default();
        let mut tail = self.log.lock();
        fill(&mut changes, &self.db)?;
        if changes.length() == 0 {
            return Ok(());
        }
        tail.append(&mut changes)
            .map_err(|error| self.stop(io_failed("append to the commit log", &error)))?;
        let applied = changes
            .last_write()
            .map(|(key, value)| (key.to_vec(), value.map(<[u8]>::to_vec)));
        self.db
            .apply_in_order(applied)
            .map_err(|error| self.stop(backend("copy records forward")(error)))?;
        drop(tail);
        // A copy of the whole tree (at open, before the checkpoint thread runs) ends segments as
        // it goes: a replay reads the checkpoint's segment whole.
        self.roll_if_full()
    }

    /// Copies every record of the tree into the log, in key order; returns what they take as log
    /// entries.
    fn copy_tree_into_log(&self) -> Result<u64, StoreError> {
        let mut after: Option<sled::IVec> = None;
        let mut live = 0u64;
        loop {
            let mut reached_end = true;
            self.copy_forward(|changes, db| {
                let from = after.clone().map_or(Bound::Unbounded, Bound::Excluded);
                for item in db.range::<sled::IVec, _>((from, Bound::Unbounded)) {
                    let (key, value) = item.map_err(backend("read the tree"))?;
                    after = Some(key.clone());
                    if key == APPLIED_THROUGH {
                        continue;
                    }
                    changes.insert(&key, &value);
                    if changes.length() >= COPY_BATCH_BYTES {
                        reached_end = false;
                        break;
                    }
                }
                live += changes.live_bytes();
                Ok(())
            })?;
            if reached_end {
                return Ok(live);
            }
        }
    }

    /// Copies the tree into the log, checkpoints with the log recorded whole, and deletes the
    /// segments from before the copy.
    fn make_whole(&self) -> Result<(), StoreError> {
        tracing::info!("copying every record of the store into its commit log, which does not hold them all");
        let first = self.log.tail_number();
        let live = self.copy_tree_into_log()?;
        // The frame number's own entry.
        let applied = (APPLIED_THROUGH.len() + 8) as u64 + ENTRY_OVERHEAD;
        self.live_bytes.store((live + applied) as i64, Ordering::Relaxed);
        self.whole.store(true, Ordering::Relaxed);
        self.checkpoint()?;
        for segment in self.log.ended_segments() {
            if segment.number < first {
                self.log
                    .remove(segment.number)
                    .map_err(|error| self.stop(log_failed(error)))?;
            }
        }
        Ok(())
    }
}

/// Starts the thread that, while the store is written to, ends full log segments, checkpoints the
/// tree every few seconds, compacts the log, and writes zeros ahead in it.
pub(super) fn start_checkpointer(durable: Arc<Durable>) -> std::io::Result<PeriodicThread> {
    let mut zeros_failing = false;
    PeriodicThread::start("strata-checkpoint", CHECKPOINT_LOOK_EVERY, move || {
        // A failure has stopped writes and said so; nothing is left to do.
        if durable.roll_if_full().is_err() || (durable.checkpoint_due() && durable.checkpoint().is_err()) {
            return false;
        }
        if durable.compaction_due() {
            if let Err(error) = durable.compact_next() {
                tracing::error!(%error, "compacting the commit log failed");
                if durable.stopped().is_err() {
                    return false;
                }
            }
        }
        // Only a cost if it fails: appends then grow the file as they go. Said once until it
        // works again (a full disk would fail it at every look).
        match durable
            .log
            .write_zeros_ahead(durable.segment_limit.load(Ordering::Relaxed))
        {
            Err(error) if !zeros_failing => {
                zeros_failing = true;
                tracing::warn!(%error, "could not write zeros ahead in the commit log; appends grow it instead");
            }
            Err(_) => {}
            Ok(()) => zeros_failing = false,
        }
        true
    })
}

/// Why sled's files could not be opened.
enum SledOpen {
    /// sled failed recovering them (damage).
    Damaged(String),
    /// Anything else (the directory locked by another process, I/O).
    Failed(StoreError),
}

/// Opens sled's database in `path`, catching the panic sled raises on some damaged files ("tried
/// to serialize Uninitialized", for a message that fails its checksum in a segment before its
/// last).
fn open_sled(path: &Path) -> Result<sled::Db, SledOpen> {
    let opened = std::panic::catch_unwind(|| open_db(path))
        .map_err(|panic| SledOpen::Damaged(strata_core::workflow::panic_message(&panic)))?;
    opened.map_err(|error| match error {
        sled::Error::Corruption { .. } => SledOpen::Damaged(error.to_string()),
        error => SledOpen::Failed(StoreError::failed(
            "open",
            format!(
                "{} ({error}); is another process using this data directory?",
                path.display()
            ),
        )),
    })
}

/// Opens sled's database. The file lock of a store closed a moment ago in this process may still
/// be held by sled's background threads while they wind down: a lock conflict (`WouldBlock`, a
/// kind the patched sled keeps, see `vendor/sled/STRATA-PATCH.md`) is retried for up to ten
/// seconds (a loaded machine has taken over two). Another process cannot be the holder: the
/// directory's own lock (`directory_lock`), taken first, refuses it at once.
fn open_db(path: &Path) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // No periodic flush of sled's own: the checkpoints write the tree, the log makes commits
        // durable in between.
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            Err(sled::Error::Io(error))
                if error.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Sets sled's damaged files aside (`sled-damaged-<unix ms>/` in the store's directory) and opens
/// an empty tree in their place, to be rebuilt from the log; returns it and where the files went.
fn rebuild(
    path: &Path,
    reason: &str,
    damaged: &dyn Fn(String) -> StoreError,
) -> Result<(sled::Db, PathBuf), StoreError> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let aside = path.join(format!("{SET_ASIDE_PREFIX}{millis}"));
    tracing::error!(directory = %path.display(), %reason, aside = %aside.display(), "sled's files are damaged; setting them aside and rebuilding the tree from the commit log, which holds every record");
    let moved = (|| -> std::io::Result<()> {
        std::fs::create_dir(&aside)?;
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if is_sled_file(&entry.file_name().to_string_lossy()) {
                std::fs::rename(entry.path(), aside.join(entry.file_name()))?;
            }
        }
        File::open(path)?.sync_all()
    })();
    moved.map_err(|error| {
        damaged(format!(
            "{reason}; setting sled's files aside in {} failed: {error}",
            aside.display()
        ))
    })?;
    let db = open_db(path).map_err(|error| {
        damaged(format!(
            "{reason}; a new tree could not be opened in their place: {error}"
        ))
    })?;
    Ok((db, aside))
}

/// Whether a file in the store's directory is sled's (its data, config, snapshots and blobs).
fn is_sled_file(name: &str) -> bool {
    name == "db" || name == "conf" || name == "blobs" || name.starts_with("snap.")
}

/// The last frame the tree holds (0 for none).
fn applied_through(db: &sled::Db) -> Result<u64, ReplayError> {
    Ok(db
        .get(APPLIED_THROUGH)
        .map_err(|error| ReplayError::Store(backend("read the commit log's place")(error)))?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Applies to the tree the log's frames it does not hold, from where `from` says.
fn replay(
    db: &sled::Db,
    path: &Path,
    from: ReplayFrom,
    damaged: &dyn Fn(String) -> StoreError,
) -> Result<Recovered, ReplayError> {
    let applied = applied_through(db)?;
    let mut frames = 0u64;
    let recovered = commit_log::recover(path, applied, from, |frame| -> Result<(), ReplayError> {
        frames += 1;
        db.apply_in_order(frame.writes)
            .map_err(|error| ReplayError::Store(backend("replay the commit log")(error)))?;
        for value in frame.damaged {
            set_damaged_apart(db, value).map_err(|reason| ReplayError::Store(damaged(reason)))?;
        }
        Ok(())
    })?;
    if frames > 0 {
        tracing::info!(frames, from = ?from, "replayed the commit log's frames that sled's tree did not hold");
    }
    Ok(recovered)
}

/// A replay that failed as a store error; damage is answered by `damaged`.
fn replay_failed(error: ReplayError, damaged: &dyn Fn(String) -> StoreError) -> StoreError {
    match error {
        ReplayError::Store(error) => error,
        ReplayError::Log(error @ (LogError::Damaged { .. } | LogError::TreeBehind { .. })) => damaged(format!(
            "{error}; to open the store without the log's frames, delete the commit-log directory as well"
        )),
        ReplayError::Log(error) => log_failed(error),
    }
}

/// Puts a record whose value in the log fails its checksum where the engine sees it as damaged:
/// an instance's record becomes a damaged-record mark with the reason (the engine quarantines a
/// live one; reading a finished one says why); a damaged signal is dropped and its instance's
/// record marked. Any other record is the store's own bookkeeping (counters, statuses, config
/// history ...), which it cannot go on without correctly: `Err` with why.
fn set_damaged_apart(db: &sled::Db, value: DamagedValue) -> Result<(), String> {
    let reason = format!(
        "its record in the commit log fails its checksum ({}); the value it had before that commit is not used",
        value.place
    );
    let key = &value.key;
    let (instance_key, mark) = if key.starts_with(LIVE) || key.starts_with(READY) || key.starts_with(FINISHED) {
        (key.clone(), strata_store::damaged_record(&reason, &value.raw))
    } else if let (true, Some(instance)) = (key.starts_with(SIGNALS), id_from_key(SIGNALS, key)) {
        let mut live = id_key(READY, instance);
        let mut record = db.get(&live).map_err(|error| error.to_string())?;
        if record.is_none() {
            live = id_key(LIVE, instance);
            record = db.get(&live).map_err(|error| error.to_string())?;
        }
        db.remove(key).map_err(|error| error.to_string())?;
        let Some(record) = record else {
            tracing::error!(key = %String::from_utf8_lossy(key), %reason, "dropped a damaged signal of an instance that is no longer live");
            return Ok(());
        };
        let reason = format!("a signal sent to it is damaged: {reason}");
        (live, strata_store::damaged_record(&reason, &record))
    } else {
        return Err(format!(
            "the store's record {} is damaged: {reason}",
            String::from_utf8_lossy(key)
        ));
    };
    tracing::error!(key = %String::from_utf8_lossy(key), %reason, "a record is damaged; its instance is set apart");
    // A ready record is read at every open; a waiting one is marked due at once, so that the
    // next open loads it and the engine quarantines it.
    if let (true, Some(instance)) = (instance_key.starts_with(LIVE), id_from_key(LIVE, &instance_key)) {
        db.insert(super::wake_key(strata_core::instance::WAKE_NOW, instance), &[] as &[u8])
            .map_err(|error| error.to_string())?;
    }
    db.insert(instance_key, mark).map_err(|error| error.to_string())?;
    Ok(())
}

/// The directories sled's damaged files were set aside in, oldest first.
pub(super) fn set_aside(path: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(SET_ASIDE_PREFIX))
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::codec::damaged_record_reason;
    use strata_core::instance::InstanceId;

    fn damaged(key: Vec<u8>) -> DamagedValue {
        DamagedValue {
            key,
            raw: b"bytes as read".to_vec(),
            place: "commit-log/00000000000000000001.log2 byte 99".to_string(),
        }
    }

    fn open_durable(path: &Path) -> Durable {
        let refuse = |reason: String| StoreError::failed("open", reason);
        Durable::open(path, &|_| Ok(()), &refuse).unwrap()
    }

    /// The tree's records, without the log's place in it.
    fn records_of(db: &sled::Db) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        db.iter()
            .map(Result::unwrap)
            .filter(|(key, _)| key != APPLIED_THROUGH)
            .map(|(key, value)| (key.to_vec(), value.to_vec()))
            .collect()
    }

    /// What replaying the whole log onto an empty tree gives.
    fn replayed_from_the_start(path: &Path) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        let mut records = std::collections::BTreeMap::new();
        commit_log::recover(path, 0, ReplayFrom::Start, |frame| -> Result<(), LogError> {
            for (key, value) in frame.writes {
                match value {
                    Some(value) => records.insert(key, value),
                    None => records.remove(&key),
                };
            }
            Ok(())
        })
        .unwrap();
        records.remove(APPLIED_THROUGH);
        records
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 48, ..Default::default() })]

        /// Whatever the writes and wherever compaction falls between them, the log alone replays
        /// to exactly what the tree holds.
        #[test]
        fn the_log_compacted_in_place_replays_to_the_tree(
            writes in proptest::collection::vec((0u8..12, proptest::option::weighted(0.8, 0usize..400)), 50..400),
            compact_every in 1usize..40,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let durable = open_durable(dir.path());
            durable.segment_limit.store(2048, Ordering::Relaxed);
            let mut compactions = 0;
            for (index, (key, value)) in writes.iter().enumerate() {
                let mut changes = Changes::default();
                let key = format!("key-{key}");
                match value {
                    Some(length) => changes.insert(&key, vec![index as u8; *length]),
                    None => changes.remove(&key),
                }
                durable.write(&mut changes, "write").unwrap();
                durable.roll_if_full().unwrap();
                if index % compact_every == 0 {
                    durable.checkpoint().unwrap();
                    let before = durable.log.ended_segments();
                    durable.compact_next().unwrap();
                    compactions += usize::from(durable.log.ended_segments() != before);
                }
            }
            durable.sync().unwrap();
            proptest::prop_assert_eq!(replayed_from_the_start(dir.path()), records_of(&durable.db), "after {} compactions", compactions);
        }
    }

    #[test]
    fn a_removal_compacted_in_place_still_undoes_the_older_write() {
        let dir = tempfile::tempdir().unwrap();
        let durable = open_durable(dir.path());
        durable.segment_limit.store(1024, Ordering::Relaxed);
        let write = |key: &str, value: Option<&[u8]>| {
            let mut changes = Changes::default();
            match value {
                Some(value) => changes.insert(key, value),
                None => changes.remove(key),
            }
            durable.write(&mut changes, "write").unwrap();
            durable.roll_if_full().unwrap();
        };
        // The oldest segment holds `gone` and a cold record; the next its removal among garbage.
        write("gone", Some(&[1; 300]));
        write("cold", Some(&[2; 900]));
        write("gone", None);
        for round in 0..40u8 {
            write("hot", Some(&[round; 300]));
        }
        durable.checkpoint().unwrap();
        let oldest = durable.log.ended_segments()[0];
        for _ in 0..8 {
            durable.compact_next().unwrap();
        }
        let spans = durable.log.ended_segments();
        assert_eq!(
            spans[0], oldest,
            "the oldest segment is half live: not worth compacting"
        );
        assert!(spans.iter().any(|span| span.compacted), "{spans:?}");
        let records = replayed_from_the_start(dir.path());
        assert_eq!(records, records_of(&durable.db));
        assert!(!records.contains_key(&b"gone"[..]));
    }

    #[test]
    fn a_segment_compaction_cannot_shrink_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let durable = open_durable(dir.path());
        durable.segment_limit.store(1024, Ordering::Relaxed);
        // Cold records, then one hot record rewritten: compacted segments end up holding their
        // first and last frames and little else.
        for index in 0..6u8 {
            let mut changes = Changes::default();
            changes.insert([b'c', index], [index; 500]);
            durable.write(&mut changes, "write").unwrap();
            durable.roll_if_full().unwrap();
        }
        for round in 0..60u8 {
            let mut changes = Changes::default();
            changes.insert(b"hot", [round; 200]);
            durable.write(&mut changes, "write").unwrap();
            durable.roll_if_full().unwrap();
        }
        durable.checkpoint().unwrap();
        let mut rewritten = 0;
        for _ in 0..100 {
            let before = durable.log.ended_segments();
            durable.compact_next().unwrap();
            if durable.compaction.lock().fruitless_at.is_some() {
                break;
            }
            rewritten += usize::from(durable.log.ended_segments() != before);
        }
        assert!(rewritten > 0, "the hot record's segments were compacted");
        assert!(
            durable.compaction.lock().fruitless_at.is_some(),
            "a round found nothing worth compacting: the compacted segments are not rewritten again and again"
        );
        assert_eq!(replayed_from_the_start(dir.path()), records_of(&durable.db));
    }

    #[test]
    fn a_damaged_record_is_set_apart_by_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let live = id_key(LIVE, InstanceId(7));
        db.insert(&live, &b"the instance's record"[..]).unwrap();

        // An instance's record: marked damaged in place, with the reason and the bytes.
        let finished = id_key(FINISHED, InstanceId(8));
        set_damaged_apart(&db, damaged(finished.clone())).unwrap();
        let mark = db.get(&finished).unwrap().unwrap();
        let reason = damaged_record_reason(&mark).unwrap();
        assert!(
            reason.contains("fails its checksum") && reason.contains("byte 99"),
            "{reason}"
        );
        assert!(mark.ends_with(b"bytes as read"));

        // A signal: gone, and its instance set apart, its record kept in the mark.
        let signal = crate::signal_key(InstanceId(7), 3);
        db.insert(&signal, &b"a signal"[..]).unwrap();
        set_damaged_apart(&db, damaged(signal.clone())).unwrap();
        assert!(db.get(&signal).unwrap().is_none());
        let mark = db.get(&live).unwrap().unwrap();
        assert!(damaged_record_reason(&mark)
            .unwrap()
            .contains("a signal sent to it is damaged"));
        assert!(mark.ends_with(b"the instance's record"));

        // The store's own bookkeeping: refused, naming the record.
        let error = set_damaged_apart(&db, damaged(b"c/order\x001.0.0".to_vec())).unwrap_err();
        assert!(error.contains("the store's record c/order"), "{error}");
    }

    /// A store closed a moment ago in this process can hold sled's file lock a little longer (its
    /// background threads let go of the file last): opening the directory again waits for it
    /// rather than calling it another process's.
    #[test]
    fn a_directory_whose_lock_is_let_go_a_moment_later_opens() {
        let dir = tempfile::tempdir().unwrap();
        let held = open_db(dir.path()).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let reopened = open_db(dir.path());
        letting_go.join().unwrap();
        assert!(reopened.is_ok(), "{:?}", reopened.err());
    }
}
