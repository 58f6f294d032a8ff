//! strata-store-sled: the embedded default backend on sled 0.34, for a store one process opens.
//! It depends on `strata-store` (the seam it implements) and `strata-core` only.
//!
//! One tree, keys by prefix, and in front of it the
//! commit log (`commit_log.rs`). A commit appends one frame to the log and applies the same
//! writes to sled's tree in memory; `sync` is one `fdatasync` of the log. A checkpoint thread
//! flushes the tree and `fdatasync`s sled's data file (sled's own `flush()` ends in
//! `sync_file_range`, which does not reach stable storage: sled issue #1452) and keeps the log
//! whole and compacted; opening the store replays the frames the tree does not hold, or rebuilds
//! a damaged tree from the log (`durable.rs`). This file owns the key layout and the
//! `Store` operations on it.
//!
//! Key layout (all integers big-endian, so keys sort by number):
//! `m/format` record format · `d/<id>` finished instance (live ones: `r/`, `i/`, below) ·
//! `q/<id>` quarantined raw record · `s/<id><seq>` pending signal ·
//! `c/<workflow>\0<version>` counters · `v/<workflow>\0<version>` version status ·
//! `g/<generation>` applied config · `f/<schedule name>` last handled fire time ·
//! `u/<workflow>` background migration job · `o/<name>` rollout ·
//! `w/<workflow>\0<id>` → when it finished: a finished instance by workflow (listings read only
//! the workflow's; retention sweeps it for what is due) · `m/finished-index` set once every
//! finished instance is in `w/` · `m/highest-id` the highest instance id ever removed (so no id
//! is issued twice) · `m/log-applied` the last commit-log frame the tree holds ·
//! `r/<id>` a live instance ready to run (indexed by nothing: an open reads them all) ·
//! `i/<id>` a live instance that waits, indexed by `t/<wake ms><id>` (`Phase::wake_ms`: an engine
//! loads an idle instance as it comes due) and `l/<workflow>\0<version>\0<start ms><id>` (a
//! version's oldest, and a listing of a few versions' instances among many others finds their
//! waiting ones there) · `m/live-index` set once every live instance is kept and indexed so.
//!
//! sled's cost is per key written: one index key per finished instance (a second index, by
//! finish time, cost a quarter of the throughput at 1 024 concurrent instances), and none for a
//! step of a ready instance, which writes its `r/` key alone; going to wait moves the record to
//! `i/` with its two index keys, and waking moves it back (every live record indexed cost 12–25 %
//! at 1 024). The engine names what the record a write replaces was placed as
//! (`EncodedInstance::replaces`).
//!
//! `m/format` holds the newest record format written to the store. Opening a store of an older
//! format raises it (older builds then refuse the store, as it will hold newer records) and reads
//! the older records as they are; each is rewritten in the current format by its next commit.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod commit_log;
mod directory_lock;
mod durable;
mod failures;
pub mod format1;
mod history_segments;
mod space;

pub use space::DEFAULT_DISK_RESERVE;

use durable::{start_checkpointer, Durable};

use crate::commit_log::{Changes, LogError};
use crate::space::refused_for_room;
use strata_core::instance::{IndexedAs, InstanceId, InstanceRecord, VersionKey, RECORD_FORMAT};
use strata_core::periodic::PeriodicThread;
use strata_core::version::VersionStatus;
use strata_store::residency::VersionWrite;
use strata_store::{
    Applied, AppliedConfig, CorruptRecord, CounterDelta, IdKind, MigrationJobRecord, Op, RecoveredState, SignalRecord,
    Store, StoreError, StoreStats, StoredHistoryChunk, StoredVersion, VersionCounters,
};

const FORMAT_KEY: &[u8] = b"m/format";
/// A live instance that waits (asleep, backing off, waiting for a signal, quarantined): indexed
/// by wake time and by version.
const LIVE: &[u8] = b"i/";
/// A live instance ready to run (its wake time is now): indexed by nothing, read whole at open.
const READY: &[u8] = b"r/";
const FINISHED: &[u8] = b"d/";
const QUARANTINED: &[u8] = b"q/";
const SIGNALS: &[u8] = b"s/";
const HISTORY: &[u8] = b"h/";
const COUNTERS: &[u8] = b"c/";
const STATUSES: &[u8] = b"v/";
const CONFIGS: &[u8] = b"g/";
const SCHEDULE_FIRES: &[u8] = b"f/";
const MIGRATION_JOBS: &[u8] = b"u/";
const ROLLOUTS: &[u8] = b"o/";
const SHADOW_PAIRS: &[u8] = b"p/";
/// A compared pair's rollout, by its real instance: retention removes the pair with it.
const PAIR_OF_REAL: &[u8] = b"x/";
const BY_WORKFLOW: &[u8] = b"w/";
const FINISHED_INDEX_BUILT: &[u8] = b"m/finished-index";
/// A live instance by wake time: what an engine loads as it comes due.
const BY_WAKE: &[u8] = b"t/";
/// A live instance by version and start time: a version's oldest live instance.
const LIVE_BY_VERSION: &[u8] = b"l/";
const LIVE_INDEX_BUILT: &[u8] = b"m/live-index";
const HIGHEST_REMOVED_ID: &[u8] = b"m/highest-id";

/// A listing of live instances finds the waiting ones of its versions through their `l/` keys
/// when those versions hold at most one live instance in this many (reading every waiting record
/// in id order costs the same whatever the scope).
const SELECTIVE_SHARE: u64 = 8;

/// The by-workflow prefix of a workflow's finished instances.
/// The file that marks a store directory sled could not recover (see [`BackendFailure::Damaged`](strata_store::BackendFailure::Damaged)).
const DAMAGE_MARK: &str = "strata-damaged.txt";

fn workflow_prefix(workflow: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(BY_WORKFLOW.len() + workflow.len() + 1);
    key.extend_from_slice(BY_WORKFLOW);
    key.extend_from_slice(workflow.as_bytes());
    key.push(0);
    key
}

/// The by-workflow index key of a finished instance.
fn workflow_key(workflow: &str, id: InstanceId) -> Vec<u8> {
    let mut key = workflow_prefix(workflow);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

#[derive(Serialize, Deserialize)]
struct CounterEntry {
    #[serde(default = "strata_core::instance::first_format")]
    format: u32,
    key: VersionKey,
    counters: VersionCounters,
}

#[derive(Serialize, Deserialize)]
struct StatusEntry {
    #[serde(default = "strata_core::instance::first_format")]
    format: u32,
    key: VersionKey,
    status: VersionStatus,
    /// How many times the status was written (0 in records older than the count).
    #[serde(default)]
    changes: u64,
}

/// A version's stored status and how many times it was written.
#[derive(Debug, Clone, Copy)]
struct StatusStamp {
    status: VersionStatus,
    changes: u64,
}

#[derive(Serialize, Deserialize)]
struct QuarantineEntry {
    reason: String,
    #[serde(with = "serde_bytes")]
    raw: Vec<u8>,
}

/// Counters and statuses of every version in the store.
#[derive(Default)]
struct Residency {
    counters: HashMap<VersionKey, VersionCounters>,
    statuses: HashMap<VersionKey, StatusStamp>,
}

impl Residency {
    /// A version as stored: counters and status.
    fn stored(&self, key: &VersionKey) -> StoredVersion {
        let stamp = self.statuses.get(key);
        StoredVersion {
            key: key.clone(),
            counters: self.counters.get(key).cloned().unwrap_or_default(),
            status: stamp.map(|stamp| stamp.status),
            status_changes: stamp.map_or(0, |stamp| stamp.changes),
        }
    }

    /// Every version as stored, sorted.
    fn all(&self) -> Vec<StoredVersion> {
        let mut keys: Vec<&VersionKey> = self.counters.keys().chain(self.statuses.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().map(|key| self.stored(key)).collect()
    }
}

/// The largest frame buffer kept for the next commit.
const SPARE_FRAME_LIMIT: usize = 16 * 1024 * 1024;

/// The sled-backed store: single process, embedded, durable with `sync`.
pub struct SledStore {
    path: PathBuf,
    /// The tree, its data file and the commit log, shared with the checkpoint thread.
    durable: Arc<Durable>,
    checkpointer: Option<PeriodicThread>,
    /// Every version's counters and status, as stored: what `apply` decides residency on.
    versions: Mutex<Residency>,
    /// Where retention's sweep of the finished index goes on (its last key), until it reaches
    /// the end and starts over.
    sweep_from: Mutex<Option<Vec<u8>>>,
    /// The next instance id and signal sequence number to hand out.
    next_instance_id: AtomicU64,
    next_signal_seq: AtomicU64,
    applies: AtomicU64,
    syncs: AtomicU64,
    /// The buffer the last commit's frame was encoded in, kept for the next.
    spare_frame: Mutex<Vec<u8>>,
    /// The history segment each instance is filling, as the tree holds it.
    filled_segments: Mutex<history_segments::FilledSegments>,
    /// The one worker of the one process that opens the store.
    solo: strata_store::SoloCluster,
    /// The data directory's lock, let go of last (after the final checkpoint).
    _lock: directory_lock::DirectoryLock,
}

impl Drop for SledStore {
    /// Checkpoints once more, so a closed store's tree holds everything and its log is empty.
    fn drop(&mut self) {
        self.checkpointer.take();
        if self.durable.stopped().is_ok() {
            if let Err(error) = self.durable.checkpoint() {
                tracing::error!(%error, directory = %self.path.display(), "the last checkpoint failed; the commit log keeps what it holds and the next open replays it");
            }
        }
    }
}

/// A failure reading or writing the commit log as a store error.
fn log_failed(error: LogError) -> StoreError {
    match error {
        LogError::Io { path, source } => {
            let message = format!("{path}: {source}");
            if refused_for_room(&source) {
                failures::write_refused("write the commit log", &message)
            } else {
                StoreError::failed("commit log", message)
            }
        }
        damaged @ (LogError::Damaged { .. } | LogError::TreeBehind { .. }) => {
            StoreError::failed("read the commit log", damaged)
        }
    }
}

/// A sled failure as a store error: the disk refusing a write for want of room is named as such.
fn backend(operation: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |error| match &error {
        sled::Error::Io(io) => io_failed(operation, io),
        _ => StoreError::failed(operation, error),
    }
}

/// An I/O failure of the store's files as a store error.
fn io_failed(operation: &'static str, error: &std::io::Error) -> StoreError {
    let message = error.to_string();
    if refused_for_room(error) {
        failures::write_refused(operation, &message)
    } else {
        StoreError::failed(operation, message)
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(value).map_err(|error| StoreError::Encode {
        what,
        message: error.to_string(),
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    strata_core::instance::decode_stored(bytes).map_err(|error| error.to_string())
}

fn id_key(prefix: &[u8], id: InstanceId) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

fn wake_key(wake_ms: u64, id: InstanceId) -> Vec<u8> {
    let mut key = Vec::with_capacity(BY_WAKE.len() + 16);
    key.extend_from_slice(BY_WAKE);
    key.extend_from_slice(&wake_ms.to_be_bytes());
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// The wake time and id of a `t/` key.
fn wake_of_key(key: &[u8]) -> Option<(u64, InstanceId)> {
    let wake: [u8; 8] = key.get(BY_WAKE.len()..BY_WAKE.len() + 8)?.try_into().ok()?;
    let id: [u8; 8] = key.get(BY_WAKE.len() + 8..BY_WAKE.len() + 16)?.try_into().ok()?;
    Some((u64::from_be_bytes(wake), InstanceId(u64::from_be_bytes(id))))
}

/// The prefix of a version's live instances by start time.
fn live_version_prefix(key: &VersionKey) -> Vec<u8> {
    let mut prefix = version_key(LIVE_BY_VERSION, key);
    prefix.push(0);
    prefix
}

/// The start time and id of an `l/` entry under a version's `prefix` (`live_version_key`).
fn started_and_id(prefix: &[u8], entry: &[u8]) -> Option<(u64, InstanceId)> {
    let started = entry.get(prefix.len()..prefix.len() + 8)?;
    let id = entry.get(prefix.len() + 8..)?;
    Some((
        u64::from_be_bytes(started.try_into().ok()?),
        InstanceId(u64::from_be_bytes(id.try_into().ok()?)),
    ))
}

fn live_version_key(key: &VersionKey, created_at_ms: u64, id: InstanceId) -> Vec<u8> {
    let mut bytes = live_version_prefix(key);
    bytes.extend_from_slice(&created_at_ms.to_be_bytes());
    bytes.extend_from_slice(&id.0.to_be_bytes());
    bytes
}

/// Where a live record is kept and how it is indexed, borrowed from what a write names.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Placed<'a> {
    key: &'a VersionKey,
    created_at_ms: u64,
    wake_ms: u64,
}

impl<'a> Placed<'a> {
    fn of(indexed: &'a IndexedAs) -> Placed<'a> {
        Placed {
            key: &indexed.key,
            created_at_ms: indexed.created_at_ms,
            wake_ms: indexed.wake_ms,
        }
    }

    /// How a record a write puts is placed (`None`: finished).
    fn written(record: &'a strata_core::instance::EncodedInstance) -> Option<Placed<'a>> {
        record.wake_ms.map(|wake_ms| Placed {
            key: &record.key,
            created_at_ms: record.created_at_ms,
            wake_ms,
        })
    }

    /// The prefix its record is kept under.
    fn prefix(self) -> &'static [u8] {
        live_prefix(self.wake_ms)
    }

    /// Itself if it has index entries: only a waiting record does.
    fn indexed(self) -> Option<Placed<'a>> {
        (self.wake_ms != strata_core::instance::WAKE_NOW).then_some(self)
    }
}

/// The prefix a live record with wake time `wake_ms` is kept under.
fn live_prefix(wake_ms: u64) -> &'static [u8] {
    if wake_ms == strata_core::instance::WAKE_NOW {
        READY
    } else {
        LIVE
    }
}

/// Writes a live record placed `after`, replacing the live record placed `before` (`None`: a new
/// instance, or one that had finished), with the index entries that change: a step of a ready
/// instance writes its record alone.
fn put_live(batch: &mut Changes, id: InstanceId, bytes: &[u8], before: Option<Placed<'_>>, after: Placed<'_>) {
    if let Some(moved_from) = before.filter(|before| before.prefix() != after.prefix()) {
        batch.remove(id_key(moved_from.prefix(), id));
    }
    batch.insert(id_key(after.prefix(), id), bytes);
    reindex(batch, id, before.and_then(Placed::indexed), after.indexed());
}

/// Takes out a live record placed `before` (`None`: not named by the writer, so under either
/// prefix) and its index entries.
fn remove_live(batch: &mut Changes, id: InstanceId, before: Option<Placed<'_>>) {
    match before {
        Some(before) => batch.remove(id_key(before.prefix(), id)),
        None => {
            batch.remove(id_key(READY, id));
            batch.remove(id_key(LIVE, id));
        }
    }
    reindex(batch, id, before.and_then(Placed::indexed), None);
}

/// The index entries of a waiting record, as `batch` changes: those of `before` taken out where
/// they differ from `after`'s, `after`'s put in (either may be absent).
fn reindex(batch: &mut Changes, id: InstanceId, before: Option<Placed<'_>>, after: Option<Placed<'_>>) {
    let wake = |placed: Option<Placed<'_>>| placed.map(|placed| placed.wake_ms);
    if wake(before) != wake(after) {
        if let Some(before) = before {
            batch.remove(wake_key(before.wake_ms, id));
        }
        if let Some(after) = after {
            batch.insert(wake_key(after.wake_ms, id), &[] as &[u8]);
        }
    }
    fn place(placed: Option<Placed<'_>>) -> Option<(&VersionKey, u64)> {
        placed.map(|placed| (placed.key, placed.created_at_ms))
    }
    if place(before) != place(after) {
        if let Some(before) = before {
            batch.remove(live_version_key(before.key, before.created_at_ms, id));
        }
        if let Some(after) = after {
            batch.insert(live_version_key(after.key, after.created_at_ms, id), &[] as &[u8]);
        }
    }
}

fn signal_key(instance: InstanceId, seq: u64) -> Vec<u8> {
    let mut key = id_key(SIGNALS, instance);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn history_key(instance: InstanceId, seq: u64) -> Vec<u8> {
    let mut key = id_key(HISTORY, instance);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn version_key(prefix: &[u8], key: &VersionKey) -> Vec<u8> {
    let version = key.version.to_string();
    let mut bytes = Vec::with_capacity(prefix.len() + key.workflow.len() + 1 + version.len());
    bytes.extend_from_slice(prefix);
    bytes.extend_from_slice(key.workflow.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(version.as_bytes());
    bytes
}

/// The prefix of rollout `rollout`'s shadow pairs (its name is ended by a 0 byte, so that one
/// rollout's name is never a prefix of another's keys).
fn shadow_pairs_prefix(rollout: &str) -> Vec<u8> {
    let mut key = SHADOW_PAIRS.to_vec();
    key.extend_from_slice(rollout.as_bytes());
    key.push(0);
    key
}

fn id_from_key(prefix: &[u8], key: &[u8]) -> Option<InstanceId> {
    let bytes: [u8; 8] = key.get(prefix.len()..prefix.len() + 8)?.try_into().ok()?;
    Some(InstanceId(u64::from_be_bytes(bytes)))
}

impl SledStore {
    /// Opens (or creates) the store in `directory`. Fails if another process has it open or if it
    /// was written by a newer Strata.
    pub fn open(directory: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        let path = directory.as_ref().to_path_buf();
        let lock = directory_lock::DirectoryLock::acquire(&path)?;
        let damage_mark = path.join(DAMAGE_MARK);
        if damage_mark.exists() {
            let reason = std::fs::read_to_string(&damage_mark)
                .map(|reason| reason.trim().to_string())
                .unwrap_or_else(|error| format!("marked damaged earlier; the mark does not read: {error}"));
            return Err(failures::damaged(&path.display().to_string(), &reason));
        }
        // sled panics on some damaged files while recovering them (a message that fails its
        // checksum in a segment before the last: "tried to serialize Uninitialized"), and has
        // rewritten part of the file by then: the mark keeps a second open from succeeding on
        // what is left without a word.
        let damaged = |reason: String| {
            if let Err(error) = std::fs::write(&damage_mark, format!("{reason}\n")) {
                tracing::error!(%error, mark = %damage_mark.display(), "could not mark the damaged store");
            }
            tracing::error!(directory = %path.display(), %reason, "the store's files are damaged");
            failures::damaged(&path.display().to_string(), &reason)
        };
        // A newer build's store is refused before anything is written to it, its log included.
        let found_format = Mutex::new(None);
        let check_format = |db: &sled::Db| -> Result<(), StoreError> {
            let Some(bytes) = db.get(FORMAT_KEY).map_err(backend("read format"))? else {
                return Ok(());
            };
            let found: u32 = decode(&bytes).map_err(|message| {
                StoreError::failed("read format", format!("the format marker does not decode: {message}"))
            })?;
            if found > RECORD_FORMAT {
                return Err(StoreError::newer_format(found, RECORD_FORMAT));
            }
            *found_format.lock() = Some(found);
            Ok(())
        };
        let durable = Arc::new(Durable::open(&path, &check_format, &damaged)?);
        let found_format = *found_format.lock();
        if found_format != Some(RECORD_FORMAT) {
            if let Some(from) = found_format {
                tracing::info!(
                    from,
                    to = RECORD_FORMAT,
                    "upgrading the store's record format; older records are read as they are and rewritten as they are next committed"
                );
            }
            let mut batch = Changes::default();
            batch.insert(FORMAT_KEY, encode("format", &RECORD_FORMAT)?);
            durable.write(&mut batch, "write format")?;
        }
        let db = &durable.db;
        let mut residency = Residency::default();
        for item in db.scan_prefix(COUNTERS) {
            let (_, value) = item.map_err(backend("read counters"))?;
            let entry: CounterEntry = decode(&value).map_err(|message| {
                StoreError::failed("read counters", format!("a counter record does not decode: {message}"))
            })?;
            residency.counters.insert(entry.key, entry.counters);
        }
        for item in db.scan_prefix(STATUSES) {
            let (_, value) = item.map_err(backend("read statuses"))?;
            let entry: StatusEntry = decode(&value).map_err(|message| {
                StoreError::failed(
                    "read statuses",
                    format!("a version status record does not decode: {message}"),
                )
            })?;
            let stamp = StatusStamp {
                status: entry.status,
                changes: entry.changes,
            };
            residency.statuses.insert(entry.key, stamp);
        }
        let checkpointer = start_checkpointer(durable.clone())
            .map_err(|error| StoreError::failed("open", format!("cannot start the checkpoint thread: {error}")))?;
        let mut store = SledStore {
            path,
            durable,
            checkpointer: Some(checkpointer),
            versions: Mutex::new(residency),
            sweep_from: Mutex::new(None),
            next_instance_id: AtomicU64::new(1),
            next_signal_seq: AtomicU64::new(1),
            applies: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            spare_frame: Mutex::new(Vec::new()),
            filled_segments: Mutex::new(history_segments::FilledSegments::default()),
            solo: strata_store::SoloCluster::new(),
            _lock: lock,
        };
        store.build_expiry_index()?;
        store.build_live_index()?;
        let removed = store.highest_removed_id()?;
        let highest = store
            .max_id(LIVE)?
            .max(store.max_id(READY)?)
            .max(store.max_id(FINISHED)?)
            .max(store.max_id(QUARANTINED)?)
            .max(removed);
        let signals = store.collect::<SignalRecord>(SIGNALS, "signal")?;
        store.next_instance_id = AtomicU64::new(highest + 1);
        store.next_signal_seq = AtomicU64::new(signals.iter().map(|signal| signal.seq + 1).max().unwrap_or(1));
        Ok(store)
    }

    /// Makes sled's tree durable through every commit so far (the checkpoint thread does this
    /// every few seconds while the store is written to).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.durable.checkpoint()
    }

    /// How often, while it is written to, the store checkpoints: makes sled's tree durable
    /// (default 5 s). Longer means fewer writes of the tree and a longer replay when the store is
    /// next opened after a crash.
    pub fn with_checkpoint_interval(self, interval: Duration) -> SledStore {
        let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.durable.checkpoint_interval_ms.store(millis, Ordering::Relaxed);
        self
    }

    /// The size at which the commit log's segment being appended to is ended and the next begun
    /// (default 16 MiB). Compaction rewrites whole segments: smaller ones let it reclaim garbage
    /// sooner, at the cost of more files and more segments read back.
    pub fn with_log_segment_size(self, bytes: u64) -> SledStore {
        self.durable.segment_limit.store(bytes.max(1), Ordering::Relaxed);
        self
    }

    /// The directories where sled's damaged files were set aside when the store rebuilt its tree
    /// from the commit log, oldest first (`sled-damaged-<unix ms>` in the store's directory):
    /// kept for inspection; delete them once looked at.
    pub fn damaged_files_set_aside(&self) -> Vec<PathBuf> {
        durable::set_aside(&self.path)
    }

    /// Keeps `bytes` free on the store's disk: a write that finds less is refused with
    /// a [`BackendFailure::NoSpace`](strata_store::BackendFailure::NoSpace) error before it reaches sled (default [`DEFAULT_DISK_RESERVE`]; 0: never).
    pub fn with_disk_reserve(self, bytes: u64) -> SledStore {
        self.durable.space.set_reserve(bytes);
        self
    }

    /// Puts every finished instance written before the finished indexes existed into them, once.
    fn build_expiry_index(&self) -> Result<(), StoreError> {
        let mut indexed = 0u64;
        let built = self.index_once(
            FINISHED_INDEX_BUILT,
            FINISHED,
            "index finished instances",
            |batch, id, value| {
                // A record that does not decode is kept, unindexed, for an operator to look at.
                if let Ok(record) = InstanceRecord::decode(value) {
                    batch.insert(
                        workflow_key(&record.key.workflow, id),
                        &record.updated_at_ms.to_be_bytes() as &[u8],
                    );
                    indexed += 1;
                }
            },
        )?;
        if built && indexed > 0 {
            tracing::info!(indexed, "indexed the finished instances by finish time, for retention");
        }
        Ok(())
    }

    /// Puts every live instance written before the live indexes existed into them, once, and
    /// makes each version's live counter the number of its live records that decode, where it
    /// disagrees (a store written by a build with a counting bug, or edited by hand: the one
    /// process that opens the store holds every live instance, so the records are the truth).
    /// From then on every write keeps both, so an open reads neither whole.
    fn build_live_index(&self) -> Result<(), StoreError> {
        let mut live = Vec::new();
        // Every live record was kept under `i/`: a ready one moves to `r/`, a waiting one is
        // indexed.
        let built = self.index_once(LIVE_INDEX_BUILT, LIVE, "index live instances", |batch, id, value| {
            match strata_store::decode_live_record(id, value) {
                Ok(record) => {
                    if let Some(indexed) = record.indexed_as() {
                        let placed = Placed::of(&indexed);
                        if placed.prefix() != LIVE {
                            batch.remove(id_key(LIVE, id));
                            batch.insert(id_key(placed.prefix(), id), value);
                        }
                        reindex(batch, id, None, placed.indexed());
                    }
                    live.push(record);
                }
                // Due at once: the engine loads it at open and quarantines it.
                Err(_) => batch.insert(wake_key(strata_core::instance::WAKE_NOW, id), &[] as &[u8]),
            }
        })?;
        if !built {
            return Ok(());
        }
        if !live.is_empty() {
            tracing::info!(
                indexed = live.len(),
                "indexed the live instances by wake time and version"
            );
        }
        self.reconcile_live_counters(&live)
    }

    /// Unless `marker` is set: writes, in one batch with `marker`, the index entries `index`
    /// makes of each record under `prefix` (its id and bytes). `true` if it ran.
    fn index_once(
        &self,
        marker: &[u8],
        prefix: &[u8],
        operation: &'static str,
        mut index: impl FnMut(&mut Changes, InstanceId, &[u8]),
    ) -> Result<bool, StoreError> {
        if self.durable.db.contains_key(marker).map_err(backend(operation))? {
            return Ok(false);
        }
        let mut batch = Changes::default();
        for item in self.durable.db.scan_prefix(prefix) {
            let (key, value) = item.map_err(backend(operation))?;
            if let Some(id) = id_from_key(prefix, &key) {
                index(&mut batch, id, &value);
            }
        }
        batch.insert(marker, &[] as &[u8]);
        self.durable.write(&mut batch, operation)?;
        Ok(true)
    }

    /// The live record of `id`, decoded, or why it does not decode; `None` if it is not live.
    fn read_live(&self, id: InstanceId) -> Result<Option<Result<InstanceRecord, CorruptRecord>>, StoreError> {
        let value = self.live_value(id)?;
        Ok(value.map(|value| strata_store::decode_live_record(id, &value)))
    }

    /// The stored bytes of `id`'s live record, under whichever prefix it is kept.
    fn live_value(&self, id: InstanceId) -> Result<Option<sled::IVec>, StoreError> {
        for prefix in [READY, LIVE] {
            if let Some(value) = self
                .durable
                .db
                .get(id_key(prefix, id))
                .map_err(backend("load instance"))?
            {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// The live records in `scope` (its workflow and version) that `keep` accepts, at most
    /// `limit`, in the scope's id order: ready ones and waiting ones, kept under two prefixes,
    /// merged.
    fn scan_live(
        &self,
        scope: &strata_store::ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut keep = |record: &InstanceRecord| scope.holds(&record.key) && keep(record);
        let mut found = self.scan_instances(READY, scope, &mut keep, limit)?;
        match self.selective_versions(scope) {
            Some(versions) => found.extend(self.scan_waiting_of(&versions, scope, &mut keep, limit)?),
            None => found.extend(self.scan_instances(LIVE, scope, &mut keep, limit)?),
        }
        if scope.newest_first {
            found.sort_by_key(|record| std::cmp::Reverse(record.id));
        } else {
            found.sort_by_key(|record| record.id);
        }
        found.truncate(limit);
        Ok(found)
    }

    /// The versions `scope` holds, if their live instances are few among all live ones (at most
    /// one in `SELECTIVE_SHARE`): then the waiting ones are found through their versions' `l/`
    /// keys, not by reading every waiting record in id order.
    fn selective_versions(&self, scope: &strata_store::ListScope) -> Option<Vec<VersionKey>> {
        scope.workflow.as_ref()?;
        let versions = self.versions.lock().all();
        let total: u64 = versions.iter().map(|version| version.counters.live).sum();
        let held: Vec<StoredVersion> = versions
            .into_iter()
            .filter(|version| version.counters.live > 0 && scope.holds(&version.key))
            .collect();
        let in_scope: u64 = held.iter().map(|version| version.counters.live).sum();
        (in_scope.saturating_mul(SELECTIVE_SHARE) <= total)
            .then(|| held.into_iter().map(|version| version.key).collect())
    }

    /// The waiting records of `versions` past `scope`'s cursor, in its order, that `keep`
    /// accepts, at most `limit`: their ids read from the versions' `l/` keys and sorted, then
    /// their records read one by one.
    fn scan_waiting_of(
        &self,
        versions: &[VersionKey],
        scope: &strata_store::ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut ids = Vec::new();
        for key in versions {
            let prefix = live_version_prefix(key);
            for item in self.durable.db.scan_prefix(&prefix) {
                let (entry, _) = item.map_err(backend("read the live index"))?;
                if let Some((_, id)) = started_and_id(&prefix, &entry) {
                    if scope.past_cursor(id) {
                        ids.push(id);
                    }
                }
            }
        }
        if scope.newest_first {
            ids.sort_unstable_by_key(|id| std::cmp::Reverse(*id));
        } else {
            ids.sort_unstable();
        }
        // An entry of a record quarantined since has no live record behind it.
        self.records_by_id(LIVE, ids.into_iter().map(Ok), keep, limit)
    }

    /// The records under `prefix` of `ids`, in their order, that `keep` accepts, at most
    /// `limit`; an id without a record there is passed over.
    fn records_by_id(
        &self,
        prefix: &[u8],
        ids: impl Iterator<Item = Result<InstanceId, StoreError>>,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut found = Vec::new();
        for id in ids {
            if found.len() >= limit {
                break;
            }
            let Some(bytes) = self
                .durable
                .db
                .get(id_key(prefix, id?))
                .map_err(backend("load an instance"))?
            else {
                continue;
            };
            keep_decoded(&mut found, &bytes, keep);
        }
        Ok(found)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn max_id(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        match self.durable.db.scan_prefix(prefix).next_back() {
            Some(item) => {
                let (key, _) = item.map_err(backend("scan ids"))?;
                Ok(id_from_key(prefix, &key).map_or(0, |id| id.0))
            }
            None => Ok(0),
        }
    }

    /// The records under `prefix` (keyed by id) past `scope`'s cursor, in its order, that
    /// `keep` accepts, at most `limit`.
    fn scan_instances(
        &self,
        prefix: &[u8],
        scope: &strata_store::ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut found = Vec::new();
        for item in self.ids_under(prefix, scope) {
            if found.len() >= limit {
                break;
            }
            let (_, value) = item.map_err(backend("scan instances"))?;
            keep_decoded(&mut found, &value, keep);
        }
        Ok(found)
    }

    /// The keys under `prefix` (a prefix and a big-endian id) past `scope`'s cursor, in its
    /// order.
    fn ids_under(
        &self,
        prefix: &[u8],
        scope: &strata_store::ListScope,
    ) -> Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> {
        let key = |id: u64| {
            let mut key = prefix.to_vec();
            key.extend_from_slice(&id.to_be_bytes());
            key
        };
        // Every key under the prefix sorts below the prefix with its last byte raised.
        let mut end = prefix.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        if scope.newest_first {
            let below = scope.after.map_or(end, |after| key(after.0));
            Box::new(self.durable.db.range(key(0)..below).rev())
        } else {
            let first = scope.after.map_or(0, |after| after.0.saturating_add(1));
            Box::new(self.durable.db.range(key(first)..end))
        }
    }

    fn collect<T: DeserializeOwned>(&self, prefix: &[u8], what: &'static str) -> Result<Vec<T>, StoreError> {
        let mut values = Vec::new();
        for item in self.durable.db.scan_prefix(prefix) {
            let (_, value) = item.map_err(backend("scan"))?;
            values.push(decode(&value).map_err(|message| {
                StoreError::failed("scan", format!("a {what} record does not decode: {message}"))
            })?);
        }
        Ok(values)
    }
}

/// Adds the record in `bytes` to `found` if `keep` accepts it; one that does not decode is passed
/// over with a warning.
fn keep_decoded(found: &mut Vec<InstanceRecord>, bytes: &[u8], keep: &mut dyn FnMut(&InstanceRecord) -> bool) {
    match InstanceRecord::decode(bytes) {
        Ok(record) if keep(&record) => found.push(record),
        Ok(_) => {}
        Err(reason) => tracing::warn!(%reason, "skipping an instance record that does not decode"),
    }
}

impl SledStore {
    /// Makes each version's live counter the number of its live records that decode (`live`),
    /// where it disagrees (a store written by a build with a counting bug, or edited by hand): the
    /// one process that opens the store holds every live instance, so the records are the truth.
    fn reconcile_live_counters(&self, live: &[InstanceRecord]) -> Result<(), StoreError> {
        let mut actual: HashMap<VersionKey, u64> = HashMap::new();
        for record in live {
            *actual.entry(record.key.clone()).or_default() += 1;
        }
        let stored: HashMap<VersionKey, u64> = self
            .versions
            .lock()
            .all()
            .into_iter()
            .map(|version| (version.key, version.counters.live))
            .collect();
        let keys: std::collections::BTreeSet<&VersionKey> = actual.keys().chain(stored.keys()).collect();
        let mut fixes = Vec::new();
        for key in keys {
            let (stored, actual) = (
                stored.get(key).copied().unwrap_or(0),
                actual.get(key).copied().unwrap_or(0),
            );
            if stored != actual {
                tracing::error!(version = %key, stored, actual, "live counter disagrees with the live records; correcting it");
                fixes.push(Op::AdjustCounters {
                    key: key.clone(),
                    delta: CounterDelta {
                        live: actual as i64 - stored as i64,
                        ..CounterDelta::default()
                    },
                });
            }
        }
        if !fixes.is_empty() {
            self.apply(&fixes)?;
            self.sync()?;
        }
        Ok(())
    }
}

impl Store for SledStore {
    #[tracing::instrument(level = "trace", skip_all, fields(ops = ops.len()))]
    fn apply(&self, ops: &[Op]) -> Result<Applied, StoreError> {
        self.durable.space.check()?;
        let mut residency = self.versions.lock();
        let mut counters: HashMap<&VersionKey, VersionCounters> = HashMap::new();
        let mut statuses: HashMap<&VersionKey, VersionStatus> = HashMap::new();
        // Versions this write starts instances on, and brings instances onto (the residency
        // rule checks them).
        let mut starting: Vec<&VersionKey> = Vec::new();
        let mut arriving: Vec<&VersionKey> = Vec::new();
        // Instances a revival found no longer ended.
        let mut no_longer_ended: Vec<InstanceId> = Vec::new();
        // The last commit's buffer, so a group's frame does not grow a fresh allocation.
        let mut batch = Changes::in_buffer(std::mem::take(&mut *self.spare_frame.lock()));
        // The history segments this write changes (several chunks to a key), each as held since
        // the write before, or read from the tree.
        let mut history = history_segments::SegmentWrites::default();
        let mut read_history_key = |instance: InstanceId, number: u64| {
            if let Some(value) = self.filled_segments.lock().take(instance, number) {
                return Ok(Some(value));
            }
            self.durable
                .db
                .get(history_key(instance, number))
                .map(|value| value.map(|value| value.to_vec()))
                .map_err(backend("read history"))
        };
        // Instances this write finishes: their segments are let go.
        let mut finishing: Vec<InstanceId> = Vec::new();
        for op in ops {
            match op {
                Op::PutInstance(record) => {
                    let before = record.replaces.as_ref().map(Placed::of);
                    match Placed::written(record) {
                        Some(after) => put_live(&mut batch, record.id, &record.bytes, before, after),
                        None => {
                            finishing.push(record.id);
                            remove_live(&mut batch, record.id, before);
                            batch.insert(id_key(FINISHED, record.id), record.bytes.as_slice());
                            batch.insert(
                                workflow_key(&record.key.workflow, record.id),
                                &record.updated_at_ms.to_be_bytes() as &[u8],
                            );
                        }
                    }
                }
                Op::ReviveInstance(record) => {
                    if !self
                        .durable
                        .db
                        .contains_key(id_key(FINISHED, record.id))
                        .map_err(backend("read a finished instance"))?
                    {
                        no_longer_ended.push(record.id);
                    }
                    batch.remove(id_key(FINISHED, record.id));
                    batch.remove(workflow_key(&record.key.workflow, record.id));
                    if let Some(after) = Placed::written(record) {
                        put_live(&mut batch, record.id, &record.bytes, None, after);
                    }
                }
                Op::PutSignal(signal) => {
                    batch.insert(signal_key(signal.instance, signal.seq), encode("signal", signal)?);
                }
                Op::DeleteSignal { instance, seq } => batch.remove(signal_key(*instance, *seq)),
                Op::PutHistoryChunk {
                    instance,
                    first,
                    entries,
                } => history.put(&mut read_history_key, *instance, *first, entries)?,
                Op::DropHistoryChunk { instance, first } => {
                    history.drop_chunk(&mut read_history_key, *instance, *first)?
                }
                Op::AdjustCounters { key, delta } => {
                    if delta.started > 0 && !starting.contains(&key) {
                        starting.push(key);
                    }
                    if (delta.moved_in > 0 || delta.revived > 0) && !arriving.contains(&key) {
                        arriving.push(key);
                    }
                    counters
                        .entry(key)
                        .or_insert_with(|| residency.counters.get(key).cloned().unwrap_or_default())
                        .apply(delta);
                }
                Op::PutVersionStatus { key, status } => {
                    statuses.insert(key, *status);
                }
                Op::PutScheduleFire { schedule, fire_ms } => {
                    let mut key = SCHEDULE_FIRES.to_vec();
                    key.extend_from_slice(schedule.as_bytes());
                    if let Some(stored) = self.durable.db.get(&key).map_err(backend("read schedule fire"))? {
                        let (_, handled): (String, u64) =
                            decode(&stored).map_err(|message| StoreError::failed("read schedule fire", message))?;
                        if handled >= *fire_ms {
                            return Err(StoreError::FireTaken {
                                schedule: schedule.clone(),
                                fire_ms: *fire_ms,
                            });
                        }
                    }
                    batch.insert(key, encode("schedule fire", &(schedule, fire_ms))?);
                }
                Op::PutConfig(config) => {
                    let mut key = CONFIGS.to_vec();
                    key.extend_from_slice(&config.generation.to_be_bytes());
                    if self.durable.db.contains_key(&key).map_err(backend("read config"))? {
                        return Err(StoreError::ConfigTaken {
                            generation: config.generation,
                        });
                    }
                    batch.insert(key, encode("applied config", config)?);
                }
                Op::PutMigrationJob(job) => {
                    let mut key = MIGRATION_JOBS.to_vec();
                    key.extend_from_slice(job.workflow.as_bytes());
                    if !job.worker.is_empty() {
                        // A worker's share (only a store many processes share has those).
                        key.push(0);
                        key.extend_from_slice(job.worker.as_bytes());
                    }
                    batch.insert(key, encode("migration job", job)?);
                }
                Op::PutRollout(rollout) => {
                    let mut key = ROLLOUTS.to_vec();
                    key.extend_from_slice(rollout.spec.name.as_bytes());
                    if let Some(stored) = self.durable.db.get(&key).map_err(backend("read rollout"))? {
                        let stored: strata_core::rollout::RolloutRecord =
                            decode(&stored).map_err(|message| StoreError::failed("read rollout", message))?;
                        if stored.history.len() >= rollout.history.len() {
                            return Err(StoreError::RolloutChanged {
                                name: rollout.spec.name.clone(),
                            });
                        }
                    }
                    batch.insert(key, encode("rollout", rollout)?);
                }
                Op::PutShadowPair(pair) => {
                    let mut key = shadow_pairs_prefix(&pair.rollout);
                    key.extend_from_slice(&pair.real.0.to_be_bytes());
                    batch.insert(key, encode("shadow pair", pair)?);
                    batch.insert(id_key(PAIR_OF_REAL, pair.real), pair.rollout.as_bytes());
                }
                Op::QuarantineRecord { id, reason } => {
                    let raw = self.live_value(*id)?;
                    let entry = QuarantineEntry {
                        reason: reason.clone(),
                        raw: raw.map(|raw| raw.to_vec()).unwrap_or_default(),
                    };
                    batch.remove(id_key(READY, *id));
                    batch.remove(id_key(LIVE, *id));
                    // Its index entries are left: a reader finds no live record behind them.
                    batch.insert(id_key(QUARANTINED, *id), encode("quarantine entry", &entry)?);
                }
            }
        }
        let segment_writes: Vec<(InstanceId, u64, Option<Vec<u8>>)> = history.into_writes().collect();
        for (instance, number, value) in &segment_writes {
            match value {
                Some(value) => batch.insert(history_key(*instance, *number), value.as_slice()),
                None => batch.remove(history_key(*instance, *number)),
            }
        }
        if !no_longer_ended.is_empty() {
            return Err(StoreError::NoLongerEnded { ids: no_longer_ended });
        }
        let live_of = |key: &VersionKey| {
            counters
                .get(key)
                .or(residency.counters.get(key))
                .map_or(0, |counters| counters.live)
        };
        // The residency rule, for every version the write touches.
        let mut touched: Vec<&VersionKey> = counters.keys().chain(statuses.keys()).copied().collect();
        touched.sort();
        touched.dedup();
        let mut drained: Vec<&VersionKey> = Vec::new();
        for key in touched {
            let write = VersionWrite {
                before: residency.statuses.get(key).map(|stamp| stamp.status),
                set: statuses.get(key).copied(),
                starts: starting.contains(&key),
                arrivals: arriving.contains(&key),
                live_after: live_of(key),
            };
            let decision = strata_store::residency::decide(key, write)?;
            if decision.drains {
                drained.push(key);
            }
            if decision.undrains {
                statuses.insert(key, VersionStatus::Draining);
            }
        }
        for key in &drained {
            statuses.insert(key, VersionStatus::Drained);
        }
        let drained: Vec<VersionKey> = drained.into_iter().cloned().collect();
        for (key, value) in &counters {
            let entry = CounterEntry {
                format: RECORD_FORMAT,
                key: (*key).clone(),
                counters: value.clone(),
            };
            batch.insert(version_key(COUNTERS, key), encode("counters", &entry)?);
        }
        let stamps: Vec<(&VersionKey, StatusStamp)> = statuses
            .iter()
            .map(|(key, status)| {
                let changes = residency.statuses.get(*key).map_or(0, |stamp| stamp.changes) + 1;
                let stamp = StatusStamp {
                    status: *status,
                    changes,
                };
                (*key, stamp)
            })
            .collect();
        for (key, stamp) in &stamps {
            let entry = StatusEntry {
                format: RECORD_FORMAT,
                key: (*key).clone(),
                status: stamp.status,
                changes: stamp.changes,
            };
            batch.insert(version_key(STATUSES, key), encode("version status", &entry)?);
        }
        let written = self.durable.write(&mut batch, "apply");
        let buffer = batch.into_buffer();
        if buffer.capacity() <= SPARE_FRAME_LIMIT {
            *self.spare_frame.lock() = buffer;
        }
        written?;
        if !segment_writes.is_empty() || !finishing.is_empty() {
            let mut filled_segments = self.filled_segments.lock();
            for (instance, number, value) in segment_writes {
                filled_segments.keep(instance, number, value);
            }
            for instance in finishing {
                filled_segments.forget(instance);
            }
        }
        let mut applied = Applied {
            versions: Vec::with_capacity(counters.len() + statuses.len()),
            drained,
        };
        for (key, value) in counters {
            residency.counters.insert(key.clone(), value);
        }
        for (key, stamp) in stamps {
            residency.statuses.insert(key.clone(), stamp);
        }
        let mut keys: Vec<&VersionKey> = Vec::new();
        for op in ops {
            if let Op::AdjustCounters { key, .. } | Op::PutVersionStatus { key, .. } = op {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        for key in keys {
            applied.versions.push(residency.stored(key));
        }
        self.applies.fetch_add(1, Ordering::Relaxed);
        Ok(applied)
    }

    fn versions(&self) -> Result<Vec<StoredVersion>, StoreError> {
        Ok(self.versions.lock().all())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.durable.sync()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn recover(&self, through_ms: u64) -> Result<RecoveredState, StoreError> {
        let mut state = RecoveredState::default();
        // Entries whose instance is no longer live (quarantined since) are taken out.
        let mut dangling = Changes::default();
        for (wake, id) in self.due_held(None, through_ms, usize::MAX)? {
            match self.read_live(id)? {
                None => dangling.remove(wake_key(wake, id)),
                Some(Ok(record)) => state.live.push(record),
                Some(Err(corrupt)) => state.corrupt.push(corrupt),
            }
        }
        if dangling.length() > 0 {
            self.durable.write(&mut dangling, "clean the wake index")?;
        }
        state.signals = self.collect::<SignalRecord>(SIGNALS, "signal")?;
        state.versions = self.versions.lock().all();
        let mut loaded: HashMap<&VersionKey, u64> = HashMap::new();
        for record in &state.live {
            *loaded.entry(&record.key).or_default() += 1;
        }
        state.unloaded = state
            .versions
            .iter()
            .filter_map(|version| {
                let left = version
                    .counters
                    .live
                    .saturating_sub(loaded.get(&version.key).copied().unwrap_or(0));
                (left > 0).then(|| (version.key.clone(), left))
            })
            .collect();
        Ok(state)
    }

    fn due_held(
        &self,
        after: Option<(u64, InstanceId)>,
        through_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InstanceId)>, StoreError> {
        let from = match after {
            None => wake_key(0, InstanceId(0)),
            Some((wake, id)) => match id.0.checked_add(1) {
                Some(next) => wake_key(wake, InstanceId(next)),
                None => match wake.checked_add(1) {
                    Some(wake) => wake_key(wake, InstanceId(0)),
                    None => return Ok(Vec::new()),
                },
            },
        };
        let mut found = Vec::new();
        // Ready instances wake now: every one under `r/` (past the cursor's id, if it is at 0).
        if after.is_none_or(|(wake, _)| wake == strata_core::instance::WAKE_NOW) {
            let first = after.map_or(0, |(_, id)| id.0.saturating_add(1));
            let end = id_key(READY, InstanceId(u64::MAX));
            for item in self.durable.db.range(id_key(READY, InstanceId(first))..=end) {
                if found.len() >= limit {
                    break;
                }
                let (key, _) = item.map_err(backend("read the ready instances"))?;
                if let Some(id) = id_from_key(READY, &key) {
                    found.push((strata_core::instance::WAKE_NOW, id));
                }
            }
        }
        let ready = found.len();
        for item in self.durable.db.range(from..) {
            if found.len() >= ready.saturating_add(limit) {
                break;
            }
            let (key, _) = item.map_err(backend("read the wake index"))?;
            if !key.starts_with(BY_WAKE) {
                break;
            }
            let Some((wake, id)) = wake_of_key(&key) else {
                continue;
            };
            if wake > through_ms {
                break;
            }
            found.push((wake, id));
        }
        // Both in one order (a damaged record is marked due now in the index too).
        found.sort_unstable();
        found.dedup();
        found.truncate(limit);
        Ok(found)
    }

    fn load_held(&self, ids: &[InstanceId]) -> Result<strata_store::Claimed, StoreError> {
        let mut claimed = strata_store::Claimed::default();
        for &id in ids {
            match self.read_live(id)? {
                None => continue,
                Some(Ok(record)) => claimed.live.push(record),
                Some(Err(corrupt)) => claimed.corrupt.push(corrupt),
            }
            claimed
                .signals
                .extend(self.collect::<SignalRecord>(&id_key(SIGNALS, id), "signal")?);
        }
        Ok(claimed)
    }

    /// One process opens a sled store, so its numbers come from counters set at open.
    fn reserve_ids(&self, kind: IdKind) -> Result<std::ops::Range<u64>, StoreError> {
        const BLOCK: u64 = 1024;
        let next = match kind {
            IdKind::Instance => &self.next_instance_id,
            IdKind::Signal => &self.next_signal_seq,
        };
        let first = next.fetch_add(BLOCK, Ordering::Relaxed);
        Ok(first..first + BLOCK)
    }

    fn load_instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        for prefix in [READY, LIVE, FINISHED] {
            if let Some(bytes) = self
                .durable
                .db
                .get(id_key(prefix, id))
                .map_err(backend("load instance"))?
            {
                return decode(&bytes)
                    .map(Some)
                    .map_err(|message| StoreError::failed("load instance", message));
            }
        }
        Ok(None)
    }

    fn live_instances(
        &self,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.scan_live(&strata_store::ListScope::default(), keep, limit)
    }

    fn cluster(&self) -> &dyn strata_store::Cluster {
        self
    }

    fn finished_instances(
        &self,
        scope: &strata_store::ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut keep = |record: &InstanceRecord| scope.holds(&record.key) && keep(record);
        let Some(workflow) = &scope.workflow else {
            return self.scan_instances(FINISHED, scope, &mut keep, limit);
        };
        // The workflow's finished instances only, from its index, each loaded by id.
        let prefix = workflow_prefix(workflow);
        let ids = self.ids_under(&prefix, scope).filter_map(|item| match item {
            Ok((key, _)) => id_from_key(&prefix, &key).map(Ok),
            Err(error) => Some(Err(backend("scan finished instances")(error))),
        });
        self.records_by_id(FINISHED, ids, &mut keep, limit)
    }

    fn highest_removed_id(&self) -> Result<u64, StoreError> {
        match self
            .durable
            .db
            .get(HIGHEST_REMOVED_ID)
            .map_err(backend("read the highest removed id"))?
        {
            Some(bytes) => {
                decode::<u64>(&bytes).map_err(|message| StoreError::failed("read the highest removed id", message))
            }
            None => Ok(0),
        }
    }

    fn expire_finished(&self, finished_before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        // A sweep of the finished index from where the last call stopped: up to `limit` due
        // instances per call; a call that reaches the end returns fewer and starts over next time.
        let mut sweep_from = self.sweep_from.lock();
        let start = sweep_from.clone().unwrap_or_else(|| BY_WORKFLOW.to_vec());
        let mut end = BY_WORKFLOW.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut batch = Changes::default();
        // The instances removed: their history segments are let go once the write is made.
        let mut removed: Vec<InstanceId> = Vec::new();
        let mut highest = 0u64;
        let mut reached_end = true;
        for item in self.durable.db.range(start..end) {
            let (key, finished_ms) = item.map_err(backend("read the finished index"))?;
            if removed.len() >= limit {
                *sweep_from = Some(key.to_vec());
                reached_end = false;
                break;
            }
            let Some(finished_ms) = <[u8; 8]>::try_from(finished_ms.as_ref()).ok().map(u64::from_be_bytes) else {
                continue;
            };
            if finished_ms >= finished_before_ms {
                continue;
            }
            let Some(id) = key
                .len()
                .checked_sub(8)
                .and_then(|at| key.get(at..))
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            else {
                continue;
            };
            let id = InstanceId(u64::from_be_bytes(id));
            batch.remove(&key);
            batch.remove(id_key(FINISHED, id));
            for entry in self.durable.db.scan_prefix(id_key(HISTORY, id)).keys() {
                batch.remove(entry.map_err(backend("read a removed instance's history"))?);
            }
            if let Some(rollout) = self
                .durable
                .db
                .get(id_key(PAIR_OF_REAL, id))
                .map_err(backend("read a removed instance's shadow pair"))?
            {
                let mut pair = shadow_pairs_prefix(&String::from_utf8_lossy(&rollout));
                pair.extend_from_slice(&id.0.to_be_bytes());
                batch.remove(pair);
                batch.remove(id_key(PAIR_OF_REAL, id));
            }
            highest = highest.max(id.0);
            removed.push(id);
        }
        if reached_end {
            *sweep_from = None;
        }
        if removed.is_empty() {
            return Ok(0);
        }
        let known = self.highest_removed_id()?;
        batch.insert(HIGHEST_REMOVED_ID, encode("highest removed id", &highest.max(known))?);
        self.durable.write(&mut batch, "remove expired instances")?;
        let mut filled_segments = self.filled_segments.lock();
        for id in &removed {
            filled_segments.forget(*id);
        }
        Ok(removed.len() as u64)
    }

    fn history(&self, instance: InstanceId) -> Result<Vec<StoredHistoryChunk>, StoreError> {
        let prefix = id_key(HISTORY, instance);
        let mut chunks = Vec::new();
        for item in self.durable.db.scan_prefix(&prefix) {
            let (key, value) = item.map_err(backend("read history"))?;
            let Some(number) = key
                .get(prefix.len()..)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            chunks.extend(history_segments::chunks_of(number, &value));
        }
        // Chunks a build before wrote under their own keys may sit between a segment's.
        chunks.sort_by_key(|chunk| chunk.first);
        Ok(chunks)
    }

    fn quarantined(&self) -> Result<Vec<CorruptRecord>, StoreError> {
        let mut found = Vec::new();
        for item in self.durable.db.scan_prefix(QUARANTINED) {
            let (key, value) = item.map_err(backend("scan quarantine"))?;
            let Some(id) = id_from_key(QUARANTINED, &key) else {
                continue;
            };
            let reason = decode::<QuarantineEntry>(&value).map_or_else(|reason| reason, |entry| entry.reason);
            found.push(CorruptRecord { id, reason });
        }
        Ok(found)
    }

    fn config_history(&self) -> Result<Vec<AppliedConfig>, StoreError> {
        self.collect(CONFIGS, "applied config")
    }

    fn schedule_fires(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.collect(SCHEDULE_FIRES, "schedule fire")
    }

    fn migration_jobs(&self) -> Result<Vec<MigrationJobRecord>, StoreError> {
        self.collect(MIGRATION_JOBS, "migration job")
    }

    fn rollouts(&self) -> Result<Vec<strata_core::rollout::RolloutRecord>, StoreError> {
        self.collect(ROLLOUTS, "rollout")
    }

    fn shadow_pairs(&self, rollout: &str) -> Result<Vec<strata_core::shadow::ShadowPair>, StoreError> {
        self.collect(&shadow_pairs_prefix(rollout), "shadow pair")
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            applies: self.applies.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }
}

/// The cluster of one: the worker of the one process that opens the store ([`SoloCluster`]'s
/// answers), which holds every live instance. What the engine does not keep in memory it reads
/// here: live instances for listings, a version's oldest, an instance's signals.
///
/// [`SoloCluster`]: strata_store::SoloCluster
impl strata_store::Cluster for SledStore {
    fn worker_id(&self) -> &str {
        self.solo.worker_id()
    }

    fn heartbeat(&self, versions: &[VersionKey], lease: Duration) -> Result<(), StoreError> {
        self.solo.heartbeat(versions, lease)
    }

    fn claim(
        &self,
        versions: &[VersionKey],
        lease: Duration,
        limit: usize,
        load_through_ms: u64,
    ) -> Result<strata_store::Claimed, StoreError> {
        self.solo.claim(versions, lease, limit, load_through_ms)
    }

    fn leave(&self) -> Result<(), StoreError> {
        self.solo.leave()
    }

    fn workers(&self, lease: Duration) -> Result<Vec<strata_store::WorkerInfo>, StoreError> {
        self.solo.workers(lease)
    }

    fn lead(&self, role: &str, lease: Duration) -> Result<bool, StoreError> {
        self.solo.lead(role, lease)
    }

    /// Each version's earliest started waiting instance, from the by-version index (a ready one
    /// is always in the engine's memory, which knows its own).
    fn oldest_live(&self) -> Result<Vec<(VersionKey, InstanceId, u64)>, StoreError> {
        let keys: Vec<VersionKey> = self
            .versions
            .lock()
            .all()
            .into_iter()
            .filter(|version| version.counters.live > 0)
            .map(|version| version.key)
            .collect();
        let mut oldest = Vec::new();
        for key in keys {
            let prefix = live_version_prefix(&key);
            for item in self.durable.db.scan_prefix(&prefix) {
                let (entry, _) = item.map_err(backend("read the live index"))?;
                let Some((created, id)) = started_and_id(&prefix, &entry) else {
                    continue;
                };
                // An entry of a record quarantined since has no live record behind it.
                if self
                    .durable
                    .db
                    .contains_key(id_key(LIVE, id))
                    .map_err(backend("read the live index"))?
                {
                    oldest.push((key, id, created));
                    break;
                }
            }
        }
        Ok(oldest)
    }

    /// Every live instance in `scope`: the engine leaves out those it holds in memory.
    fn live_held_elsewhere(
        &self,
        scope: &strata_store::ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.scan_live(scope, keep, limit)
    }

    fn publish_metrics(&self, windows: &[(VersionKey, Vec<u8>)]) -> Result<(), StoreError> {
        self.solo.publish_metrics(windows)
    }

    fn metrics_of(&self, key: &VersionKey, lease: Duration) -> Result<Vec<Vec<u8>>, StoreError> {
        self.solo.metrics_of(key, lease)
    }

    fn uncovered_live(&self, workflow: &str, lease: Duration, covered: &[(String, u64)]) -> Result<u64, StoreError> {
        self.solo.uncovered_live(workflow, lease, covered)
    }

    fn drained_announced(&self, keys: &[VersionKey]) -> Result<(), StoreError> {
        self.solo.drained_announced(keys)
    }

    fn take_unannounced_drained(&self, lease: Duration) -> Result<Vec<VersionKey>, StoreError> {
        self.solo.take_unannounced_drained(lease)
    }

    fn deliver_signal(&self, signal: &SignalRecord) -> Result<bool, StoreError> {
        self.solo.deliver_signal(signal)
    }

    fn held_signals(&self) -> Result<Vec<SignalRecord>, StoreError> {
        self.solo.held_signals()
    }

    fn signals_of(&self, instance: InstanceId) -> Result<Vec<SignalRecord>, StoreError> {
        self.collect(&id_key(SIGNALS, instance), "signal")
    }

    fn wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<strata_store::Wakeup>> {
        self.solo.wakeups()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status record as builds before the count of status changes wrote it.
    #[derive(Serialize)]
    struct StatusEntryBeforeChanges {
        format: u32,
        key: VersionKey,
        status: VersionStatus,
    }

    #[test]
    fn history_chunks_share_a_key_per_segment_and_chunks_under_their_own_keys_still_read_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let id = InstanceId(5);
        let chunk = |first: u64| vec![0x91, (first / 8) as u8];
        let put = |first: u64| Op::PutHistoryChunk {
            instance: id,
            first,
            entries: chunk(first),
        };
        let firsts = |store: &SledStore| -> Vec<u64> {
            let chunks = store.history(id).unwrap();
            for stored in &chunks {
                assert_eq!(stored.entries, chunk(stored.first));
            }
            chunks.iter().map(|stored| stored.first).collect()
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            // As builds before wrote them: each chunk under its own key.
            for first in [0, 8, 16] {
                store.durable.db.insert(history_key(id, first), chunk(first)).unwrap();
            }
            store.apply(&[put(24)]).unwrap();
            store.apply(&[put(32), put(40)]).unwrap();
            assert_eq!(firsts(&store), [0, 8, 16, 24, 32, 40]);
            store
                .apply(&[
                    Op::DropHistoryChunk { instance: id, first: 8 },
                    Op::DropHistoryChunk {
                        instance: id,
                        first: 16,
                    },
                ])
                .unwrap();
            assert_eq!(firsts(&store), [0, 24, 32, 40]);
            store.apply(&[put(72)]).unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(firsts(&store), [0, 24, 32, 40, 72], "read back after a restart");
        let keys: Vec<u64> = store
            .durable
            .db
            .scan_prefix(id_key(HISTORY, id))
            .keys()
            .map(|key| u64::from_be_bytes(key.unwrap()[10..].try_into().unwrap()))
            .collect();
        assert_eq!(
            keys,
            [0, 8, 72],
            "the first chunk, the segment from 8 (16's own key removed), the one from 72"
        );
    }

    #[test]
    fn the_segment_an_instance_fills_is_held_until_it_finishes() {
        use strata_core::instance::Phase;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let key = VersionKey::new("w", semver::Version::new(1, 0, 0));
        let id = InstanceId(3);
        let record = InstanceRecord::new(id, key.clone(), Phase::Sleeping { until_ms: 5_000 }, 1_000);
        let chunk = |first: u64| Op::PutHistoryChunk {
            instance: id,
            first,
            entries: vec![0x91, first as u8],
        };
        let counted = |delta: CounterDelta| Op::AdjustCounters {
            key: key.clone(),
            delta,
        };
        let start = CounterDelta {
            started: 1,
            live: 1,
            ..CounterDelta::default()
        };
        let put = |record: &InstanceRecord| Op::PutInstance(record.encode().unwrap());
        store
            .apply(&[put(&record), counted(start), chunk(0), chunk(8)])
            .unwrap();
        let held = || store.filled_segments.lock().held_of(id);
        assert_eq!(held(), Some((8, 1)), "the newest segment, not the first chunk's key");
        store.apply(&[put(&record), chunk(16)]).unwrap();
        assert_eq!(held(), Some((8, 2)));
        let finished = InstanceRecord {
            phase: Phase::Completed { output: vec![0xc0] },
            ..record.clone()
        };
        let finish = CounterDelta {
            live: -1,
            completed: 1,
            ..CounterDelta::default()
        };
        store.apply(&[put(&finished), counted(finish), chunk(24)]).unwrap();
        assert_eq!(held(), None, "let go when it finishes");
        let firsts: Vec<u64> = store.history(id).unwrap().iter().map(|chunk| chunk.first).collect();
        assert_eq!(firsts, [0, 8, 16, 24]);
    }

    #[test]
    fn a_store_written_before_the_live_indexes_is_indexed_once_at_open_and_its_counters_mended() {
        use strata_core::instance::Phase;
        use strata_store::Cluster;
        let dir = tempfile::tempdir().unwrap();
        let key = VersionKey::new("w", semver::Version::new(1, 0, 0));
        let record = InstanceRecord {
            step: "wait".to_string(),
            ..InstanceRecord::new(InstanceId(7), key.clone(), Phase::Sleeping { until_ms: 5_000 }, 1_000)
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            // Two starts counted for one record: a counting bug of an older build.
            let start = || Op::AdjustCounters {
                key: key.clone(),
                delta: CounterDelta::start(1_000),
            };
            // Before the ready prefix, a ready record was kept under `i/` too.
            let ready = InstanceRecord {
                id: InstanceId(9),
                phase: Phase::Ready {
                    wake: strata_core::instance::PersistedWake::Started,
                },
                ..record.clone()
            };
            store
                .apply(&[Op::PutInstance(record.encode().unwrap()), start(), start()])
                .unwrap();
            store.checkpoint().unwrap();
            let db = &store.durable.db;
            db.insert(id_key(LIVE, ready.id), ready.encode().unwrap().bytes)
                .unwrap();
            // What an older build left: no live index and no marker.
            for prefix in [BY_WAKE, LIVE_BY_VERSION] {
                for item in db.scan_prefix(prefix) {
                    db.remove(item.unwrap().0).unwrap();
                }
            }
            db.remove(LIVE_INDEX_BUILT).unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.due_held(None, u64::MAX, 10).unwrap(),
            [(0, InstanceId(9)), (5_000, InstanceId(7))]
        );
        assert!(store.durable.db.contains_key(id_key(READY, InstanceId(9))).unwrap());
        assert!(!store.durable.db.contains_key(id_key(LIVE, InstanceId(9))).unwrap());
        assert_eq!(store.oldest_live().unwrap(), [(key.clone(), InstanceId(7), 1_000)]);
        assert_eq!(store.versions().unwrap()[0].counters.live, 2, "mended from the records");
        let recovered = store.recover(4_999).unwrap();
        let loaded: Vec<InstanceId> = recovered.live.iter().map(|record| record.id).collect();
        assert_eq!(loaded, [InstanceId(9)], "the ready one; the other is not due yet");
        assert_eq!(recovered.unloaded, [(key, 1)]);
    }

    #[test]
    fn a_live_index_entry_reads_back_its_start_and_id_and_a_cut_one_reads_as_nothing() {
        let key = VersionKey::new("w", semver::Version::new(1, 0, 0));
        let prefix = live_version_prefix(&key);
        let entry = live_version_key(&key, 1_234, InstanceId(7));
        assert_eq!(started_and_id(&prefix, &entry), Some((1_234, InstanceId(7))));
        for cut in [prefix.len() + 3, prefix.len() + 8, entry.len() - 1] {
            assert_eq!(started_and_id(&prefix, &entry[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn a_listing_of_few_among_many_live_instances_finds_its_waiting_ones_by_version_and_pages_alike() {
        use strata_core::instance::{PersistedWake, Phase};
        use strata_store::{Cluster, ListScope};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let version = |workflow: &str, major: u64| VersionKey::new(workflow, semver::Version::new(major, 0, 0));
        // Every tenth of a hundred is a "small" one, on 1.0.0 or 2.0.0, ready or waiting.
        let place = |id: u64| match id % 20 {
            0 => (version("small", 1), true),
            10 => (version("small", 2), id % 40 == 10),
            _ => (version("big", 1), true),
        };
        let mut ops = Vec::new();
        for id in 1..=100 {
            let (key, waits) = place(id);
            let phase = if waits {
                Phase::Sleeping { until_ms: 10_000 + id }
            } else {
                Phase::Ready {
                    wake: PersistedWake::Started,
                }
            };
            ops.push(Op::PutInstance(
                InstanceRecord::new(InstanceId(id), key.clone(), phase, 1_000 + id)
                    .encode()
                    .unwrap(),
            ));
            ops.push(Op::AdjustCounters {
                key,
                delta: CounterDelta::start(1_000 + id),
            });
        }
        store.apply(&ops).unwrap();
        let small = |version: Option<u64>| ListScope {
            workflow: Some("small".to_string()),
            version: version.map(|major| semver::Version::new(major, 0, 0)),
            ..ListScope::default()
        };
        assert!(
            store.selective_versions(&small(None)).is_some(),
            "10 of 100: through the index"
        );
        assert!(store.selective_versions(&ListScope::default()).is_none());
        let big = ListScope {
            workflow: Some("big".to_string()),
            ..ListScope::default()
        };
        assert!(store.selective_versions(&big).is_none(), "90 of 100: read in id order");
        // Pages of two, both ways, against what a filter over every id gives.
        let page_through = |mut scope: ListScope, keep: &dyn Fn(&InstanceRecord) -> bool| {
            let mut ids = Vec::new();
            loop {
                let page = store
                    .live_held_elsewhere(&scope, &mut |record| keep(record), 2)
                    .unwrap();
                ids.extend(page.iter().map(|record| record.id.0));
                match page.last() {
                    Some(last) if page.len() == 2 => scope.after = Some(last.id),
                    _ => return ids,
                }
            }
        };
        let expected = |wanted: &dyn Fn(u64) -> bool| (1..=100).filter(|&id| wanted(id)).collect::<Vec<u64>>();
        let everything = |_: &InstanceRecord| true;
        assert_eq!(page_through(small(None), &everything), expected(&|id| id % 10 == 0));
        let newest_first = ListScope {
            newest_first: true,
            ..small(None)
        };
        let mut descending = expected(&|id| id % 10 == 0);
        descending.reverse();
        assert_eq!(page_through(newest_first, &everything), descending);
        assert_eq!(page_through(small(Some(2)), &everything), expected(&|id| id % 20 == 10));
        let waiting = |record: &InstanceRecord| matches!(record.phase, Phase::Sleeping { .. });
        assert_eq!(
            page_through(small(Some(2)), &waiting),
            expected(&|id| id % 40 == 10),
            "the keep filter applies to records found either way"
        );
    }

    #[test]
    fn a_status_record_written_before_status_changes_were_counted_reads_as_zero_changes() {
        let key = VersionKey::new("w", semver::Version::new(1, 0, 0));
        let older = StatusEntryBeforeChanges {
            format: RECORD_FORMAT,
            key: key.clone(),
            status: VersionStatus::Draining,
        };
        let bytes = encode("version status", &older).unwrap();
        let read: StatusEntry = decode(&bytes).unwrap();
        assert_eq!((read.key, read.status, read.changes), (key, VersionStatus::Draining, 0));
    }
}
