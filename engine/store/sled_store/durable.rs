//! What makes the embedded store's writes durable and its tree recoverable: the commit log in
//! front of sled's tree, checkpoints of the tree, and the upkeep that keeps the log whole and
//! bounded.
//!
//! **Whole:** every record the tree holds is in the log, as the last write of its key there, so
//! replaying the log from its oldest segment onto an empty tree gives the tree. Every write goes
//! through the log; compaction deletes a segment only after copying forward, under the log's lock,
//! the current value of every key whose last write the segment might hold (the tree's value
//! equals the entry's, or the entry's value is damaged), and only the oldest segment, so removals
//! it drops have nothing older left to undo. A store that does not have a whole log (opened first
//! by a build before this one, its log deleted by an operator, or its tree ahead of its log after
//! a machine crash lost unsynced frames) has its tree copied into the log at open.
//!
//! **Bounded:** compaction runs while the log is over three times what the tree's records take as
//! log entries (counted as writes replace them) plus two segments.
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

use super::{backend, id_from_key, id_key, io_failed, log_failed, FINISHED, LIVE, SIGNALS};
use crate::periodic::PeriodicThread;
use crate::store::commit_log::{
    self, Changes, CheckpointRecord, CommitLog, DamagedValue, LogError, Recovered, ReplayFrom, ScannedFrame, Value,
    APPLIED_THROUGH, ENTRY_OVERHEAD,
};
use crate::store::space::{SpaceGuard, DEFAULT_DISK_RESERVE};
use crate::store::StoreError;

/// The log's segment being appended to is ended and the next begun at this size (by default).
/// Compaction deletes whole segments and leaves two segments of slack, so this is most of what
/// the log takes beyond its live records in a small store.
pub(super) const DEFAULT_SEGMENT_LIMIT: u64 = 16 * 1024 * 1024;
/// A checkpoint is due when the log has frames the last one did not cover and it is this old (by
/// default).
pub(super) const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Compaction runs while the log is over this many times what the tree's records take as log
/// entries (plus two segments). Compacting the oldest segment copies forward what it still
/// holds, so each byte written costs about `1 / (LIVE_FACTOR - 1)` bytes copied once the live
/// records dominate: 3 copies half a byte per byte written, and lets the log take three times the
/// live records.
const LIVE_FACTOR: u64 = 3;
/// How often the checkpoint thread looks.
const CHECKPOINT_LOOK_EVERY: Duration = Duration::from_millis(100);
/// Records copied forward in frames of about this many bytes, each under the log's lock (a
/// commit waits for one at most).
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
    /// Refuses commits, and puts compaction off, while the disk is nearly full.
    pub(super) space: SpaceGuard,
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
        let data_file = File::open(path.join("db")).map_err(|error| StoreError::Backend {
            operation: "open",
            message: format!("cannot open sled's data file in {}: {error}", path.display()),
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

    /// The oldest segment, if compaction should take it now: the log is whole, over its bound,
    /// the last checkpoint covers the segment (so no replay needs it), and the disk has more free
    /// space than the reserve (compaction writes before it frees: a nearly full disk puts it off,
    /// as it refuses commits).
    fn compaction_due(&self) -> Option<u64> {
        if !self.whole.load(Ordering::Relaxed) || self.space.check().is_err() {
            return None;
        }
        let (oldest, _) = *self.log.ended_segments().first()?;
        let live = self.live_bytes.load(Ordering::Relaxed).max(0) as u64;
        let bound = LIVE_FACTOR * live + 2 * self.segment_limit.load(Ordering::Relaxed);
        (oldest < self.last_checkpoint.lock().segment && self.log.length() > bound).then_some(oldest)
    }

    /// Compacts the log's oldest segment: copies forward the current value of every key whose
    /// last write it may hold, syncs the log, and deletes the segment. A frame there that does not
    /// read (its keys cannot be named) has the whole tree copied forward instead.
    pub(super) fn compact(&self, number: u64) -> Result<(), StoreError> {
        let segment = self.log.read_ended(number);
        let frames = segment
            .as_ref()
            .map_err(LogError::to_string)
            .and_then(|segment| segment.frames().map_err(|error| error.to_string()));
        match frames {
            Ok(frames) => {
                // Only a key's last write in the segment can be its last write in the log: one
                // read of the tree per key, not per write (a record rewritten at every step is
                // written hundreds of times per segment).
                let mut last_writes: HashMap<&[u8], Value<'_>> = HashMap::new();
                let entries: Vec<Vec<(&[u8], Value<'_>)>> = frames.iter().map(ScannedFrame::entries).collect();
                for (key, value) in entries.into_iter().flatten() {
                    last_writes.insert(key, value);
                }
                last_writes.remove(APPLIED_THROUGH);
                let mut keys = std::collections::BTreeSet::new();
                for (key, last) in last_writes {
                    let held = match last {
                        Value::Remove => false,
                        // The tree's value of a key whose log entry is damaged mends the log.
                        Value::Damaged(_) => true,
                        Value::Put(value) => self
                            .db
                            .get(key)
                            .map_err(backend("read for compaction"))?
                            .is_some_and(|current| current == value),
                    };
                    if held {
                        keys.insert(key.to_vec());
                    }
                }
                let mut keys = keys.into_iter().peekable();
                while keys.peek().is_some() {
                    self.copy_forward(|changes, db| {
                        for key in keys.by_ref() {
                            if let Some(value) = db.get(&key).map_err(backend("read for compaction"))? {
                                changes.insert(&key, &value);
                            }
                            if changes.length() >= COPY_BATCH_BYTES {
                                break;
                            }
                        }
                        Ok(())
                    })?;
                }
            }
            Err(damage) => {
                tracing::error!(%damage, "a commit-log segment being compacted does not read (damaged where its records cannot be named, or unreadable); copying the whole tree into the log instead");
                self.copy_tree_into_log()?;
            }
        }
        self.sync()?;
        self.log.remove(number).map_err(|error| self.stop(log_failed(error)))
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
        for (number, _) in self.log.ended_segments() {
            if number < first {
                self.log.remove(number).map_err(|error| self.stop(log_failed(error)))?;
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
        if let Some(oldest) = durable.compaction_due() {
            if let Err(error) = durable.compact(oldest) {
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
        .map_err(|panic| SledOpen::Damaged(crate::workflow::panic_message(&panic)))?;
    opened.map_err(|error| match error {
        sled::Error::Corruption { .. } => SledOpen::Damaged(error.to_string()),
        error => SledOpen::Failed(StoreError::Backend {
            operation: "open",
            message: format!(
                "{} ({error}); is another process using this data directory?",
                path.display()
            ),
        }),
    })
}

/// Opens sled's database. The file lock of a store closed a moment ago in this process may still
/// be held by sled's background threads while they wind down: a lock conflict is retried for up
/// to ten seconds before it counts as another process using the directory (a loaded machine has taken over two).
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
    let (instance_key, mark) = if key.starts_with(LIVE) || key.starts_with(FINISHED) {
        (key.clone(), crate::store::damaged_record(&reason, &value.raw))
    } else if let (true, Some(instance)) = (key.starts_with(SIGNALS), id_from_key(SIGNALS, key)) {
        let live = id_key(LIVE, instance);
        let record = db.get(&live).map_err(|error| error.to_string())?;
        db.remove(key).map_err(|error| error.to_string())?;
        let Some(record) = record else {
            tracing::error!(key = %String::from_utf8_lossy(key), %reason, "dropped a damaged signal of an instance that is no longer live");
            return Ok(());
        };
        let reason = format!("a signal sent to it is damaged: {reason}");
        (live, crate::store::damaged_record(&reason, &record))
    } else {
        return Err(format!(
            "the store's record {} is damaged: {reason}",
            String::from_utf8_lossy(key)
        ));
    };
    tracing::error!(key = %String::from_utf8_lossy(key), %reason, "a record is damaged; its instance is set apart");
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
    use crate::instance::InstanceId;
    use crate::store::damaged_record_reason;

    fn damaged(key: Vec<u8>) -> DamagedValue {
        DamagedValue {
            key,
            raw: b"bytes as read".to_vec(),
            place: "commit-log/00000000000000000001.log2 byte 99".to_string(),
        }
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
        let signal = super::super::signal_key(InstanceId(7), 3);
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
}
