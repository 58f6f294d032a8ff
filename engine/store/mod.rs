//! The `Store` trait — the seam between the engine and its persistence — and its backends.
//!
//! Owns the persisted records besides the instance record itself (signals, per-version counters
//! and statuses) and the contract every backend keeps: `apply` is all-or-nothing, `sync` makes all
//! applied work durable, `recover` returns everything a starting engine needs. The trait names no
//! backend concept (no trees, no files, no SQL), so a PostgreSQL backend can implement it.

mod postgres;
pub mod sled_format1;
mod sled_store;

pub use postgres::PostgresStore;
pub use sled_store::SledStore;

pub use crate::migrate::MigrationJobRecord;

use serde::{Deserialize, Serialize};

use crate::instance::{EncodedInstance, InstanceId, InstanceRecord, VersionKey};
use crate::registry::VersionStatus;

/// A store failure, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend failed an operation (I/O, disk full, lock held by another process).
    #[error("store {operation} failed: {message}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// The backend's message.
        message: String,
    },
    /// The store was written by a newer Strata.
    #[error("the store was written with record format {found}, but this build of Strata reads formats up to {supported}; upgrade Strata to open it")]
    NewerFormat {
        /// The store's format.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// The PostgreSQL database cannot be used: the URL does not parse, the server cannot be
    /// reached, it refused the credentials, or the database does not exist.
    #[error("cannot use the PostgreSQL database {target}: {reason}; {hint}")]
    Database {
        /// What was asked for: `user@host:port/database`, never the password.
        target: String,
        /// What went wrong.
        problem: DatabaseProblem,
        /// The server's or the client's words.
        reason: String,
        /// What to check.
        hint: &'static str,
    },
    /// The database's schema was written by a newer Strata.
    #[error("the PostgreSQL database has Strata schema {found}, but this build knows schemas up to {supported}; upgrade Strata to use it")]
    NewerSchema {
        /// The database's schema.
        found: u32,
        /// The newest schema this build knows.
        supported: u32,
    },
    /// A record could not be encoded.
    #[error("could not encode {what}: {message}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// Why it failed.
        message: String,
    },
}

/// Why a PostgreSQL database cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseProblem {
    /// The URL does not parse.
    InvalidUrl,
    /// No server answered at the host and port (refused, unreachable, timed out).
    Unreachable,
    /// The server refused the user or password.
    Authentication,
    /// The server has no database of that name.
    MissingDatabase,
    /// Anything else the server said.
    Other,
}

/// Decodes a live instance record stored under `id`, or says why it cannot be used (it does not
/// decode, names another instance, or has a format newer than this build's).
pub(crate) fn decode_live_record(id: InstanceId, bytes: &[u8]) -> Result<InstanceRecord, CorruptRecord> {
    let corrupt = |reason| CorruptRecord { id, reason };
    match InstanceRecord::decode(bytes) {
        Ok(record) if record.format > crate::instance::RECORD_FORMAT => Err(corrupt(format!(
            "record format {} is newer than this build's {}",
            record.format,
            crate::instance::RECORD_FORMAT
        ))),
        Ok(record) if record.id != id => Err(corrupt(format!(
            "record says it is instance {} but is stored as {id}",
            record.id
        ))),
        Ok(record) => Ok(record),
        Err(reason) => Err(corrupt(reason)),
    }
}

/// A signal delivered to an instance and not yet consumed by a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRecord {
    /// The record format (absent, hence 1, before format 2).
    #[serde(default = "crate::instance::first_format")]
    pub format: u32,
    /// The instance it was sent to.
    pub instance: InstanceId,
    /// Its sequence number, unique in the store; signals are consumed in this order.
    pub seq: u64,
    /// Its name.
    pub name: String,
    /// Its payload (MessagePack).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A config as applied, kept in the store's history so that any generation can be restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedConfig {
    /// Its generation: 1 for the first config applied to this store, then one more per change.
    pub generation: u64,
    /// Where it came from (a file name, or a restore of an earlier generation).
    pub source: String,
    /// Its full text.
    pub text: String,
    /// When it was applied (ms since the Unix epoch).
    pub applied_at_ms: u64,
}

/// Per-version counts, persisted in the same commit as the instance records they count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VersionCounters {
    /// Instances that have not finished (including parked and quarantined ones).
    pub live: u64,
    /// Instances ever started on the version.
    pub started: u64,
    /// Instances that completed.
    pub completed: u64,
    /// Instances that failed.
    pub failed: u64,
    /// Instances that were cancelled.
    pub cancelled: u64,
    /// Instances moved to this version from another (format 2).
    #[serde(default)]
    pub moved_in: u64,
    /// Instances moved from this version to another (format 2).
    #[serde(default)]
    pub moved_out: u64,
    /// When the first instance started (ms since the Unix epoch).
    pub first_start_ms: Option<u64>,
    /// When the last instance started (ms since the Unix epoch).
    pub last_start_ms: Option<u64>,
}

impl VersionCounters {
    /// Applies a change.
    pub fn apply(&mut self, delta: &CounterDelta) {
        self.live = self.live.saturating_add_signed(delta.live);
        self.started += delta.started;
        self.completed += delta.completed;
        self.failed += delta.failed;
        self.cancelled += delta.cancelled;
        self.moved_in += delta.moved_in;
        self.moved_out += delta.moved_out;
        if let Some(at) = delta.started_at_ms {
            self.first_start_ms = Some(self.first_start_ms.map_or(at, |first| first.min(at)));
            self.last_start_ms = Some(self.last_start_ms.map_or(at, |last| last.max(at)));
        }
    }
}

/// A change to a version's counters, applied inside a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterDelta {
    /// Change of the live count.
    pub live: i64,
    /// Instances started.
    pub started: u64,
    /// Instances completed.
    pub completed: u64,
    /// Instances failed.
    pub failed: u64,
    /// Instances cancelled.
    pub cancelled: u64,
    /// Instances moved in.
    pub moved_in: u64,
    /// Instances moved out.
    pub moved_out: u64,
    /// The start time of a started instance.
    pub started_at_ms: Option<u64>,
}

impl CounterDelta {
    /// The change for one instance starting at `at_ms`.
    pub fn start(at_ms: u64) -> Self {
        CounterDelta {
            live: 1,
            started: 1,
            started_at_ms: Some(at_ms),
            ..CounterDelta::default()
        }
    }

    /// The change for `count` instances moving in (`incoming`) or out of a version.
    pub fn moved(count: u64, incoming: bool) -> Self {
        if incoming {
            CounterDelta {
                live: count as i64,
                moved_in: count,
                ..CounterDelta::default()
            }
        } else {
            CounterDelta {
                live: -(count as i64),
                moved_out: count,
                ..CounterDelta::default()
            }
        }
    }

    /// The change for one instance finishing with `status` (completed, failed, else cancelled).
    pub fn finish(status: crate::instance::InstanceStatus) -> Self {
        use crate::instance::InstanceStatus;
        let mut delta = CounterDelta {
            live: -1,
            ..CounterDelta::default()
        };
        match status {
            InstanceStatus::Completed => delta.completed = 1,
            InstanceStatus::Failed => delta.failed = 1,
            _ => delta.cancelled = 1,
        }
        delta
    }
}

/// One write inside an atomic commit.
#[derive(Debug, Clone)]
pub enum Op {
    /// Writes an instance record; a finished one moves to the finished instances.
    PutInstance(EncodedInstance),
    /// Stores a delivered signal.
    PutSignal(SignalRecord),
    /// Removes a consumed signal.
    DeleteSignal {
        /// The instance.
        instance: InstanceId,
        /// The signal's sequence number.
        seq: u64,
    },
    /// Changes a version's counters.
    AdjustCounters {
        /// The version.
        key: VersionKey,
        /// The change.
        delta: CounterDelta,
    },
    /// Sets a version's lifecycle status.
    PutVersionStatus {
        /// The version.
        key: VersionKey,
        /// The status.
        status: VersionStatus,
    },
    /// Records a schedule's last handled fire time (in the commit of the start it caused).
    PutScheduleFire {
        /// The schedule's name.
        schedule: String,
        /// The fire time (ms since the Unix epoch).
        fire_ms: u64,
    },
    /// Adds an applied config to the history.
    PutConfig(AppliedConfig),
    /// Stores a background migration's job: its settings, cursor and counts.
    PutMigrationJob(MigrationJobRecord),
    /// Stores a rollout: its definition, status, stage and history.
    PutRollout(Box<crate::rollout::RolloutRecord>),
    /// Moves an undecodable live record aside, keeping its bytes and the reason.
    QuarantineRecord {
        /// The instance.
        id: InstanceId,
        /// Why it cannot be read.
        reason: String,
    },
}

/// A live record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// The instance, if its key could be read.
    pub id: InstanceId,
    /// Why it could not be decoded.
    pub reason: String,
}

/// Everything a starting engine loads from the store.
#[derive(Debug, Default)]
pub struct RecoveredState {
    /// Every instance that has not finished.
    pub live: Vec<InstanceRecord>,
    /// Live records that do not decode.
    pub corrupt: Vec<CorruptRecord>,
    /// Delivered, unconsumed signals.
    pub signals: Vec<SignalRecord>,
    /// Per-version counters.
    pub counters: Vec<(VersionKey, VersionCounters)>,
    /// Per-version lifecycle statuses.
    pub statuses: Vec<(VersionKey, VersionStatus)>,
    /// A number above every instance id in the store.
    pub next_instance_id: u64,
    /// A number above every signal sequence number in the store.
    pub next_signal_seq: u64,
}

/// Counts of what a store has done, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Calls of `apply` that succeeded.
    pub applies: u64,
    /// Syncs to stable storage.
    pub syncs: u64,
}

/// The persistence of an engine. Implementations must make `apply` atomic and `sync` durable.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` atomically: after a crash either all of them are visible or none.
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError>;
    /// Makes every applied op durable on stable storage.
    fn sync(&self) -> Result<(), StoreError>;
    /// Loads what a starting engine needs.
    fn recover(&self) -> Result<RecoveredState, StoreError>;
    /// Loads one instance, live or finished.
    fn load_instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError>;
    /// Finished instances that `keep` accepts, at most `limit`, in id order.
    fn finished_instances(
        &self,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Quarantined records: id and reason.
    fn quarantined(&self) -> Result<Vec<CorruptRecord>, StoreError>;
    /// Every applied config, oldest generation first.
    fn config_history(&self) -> Result<Vec<AppliedConfig>, StoreError>;
    /// Each schedule's last handled fire time (ms since the Unix epoch).
    fn schedule_fires(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Every background migration job, by workflow.
    fn migration_jobs(&self) -> Result<Vec<MigrationJobRecord>, StoreError>;
    /// Every rollout, by name.
    fn rollouts(&self) -> Result<Vec<crate::rollout::RolloutRecord>, StoreError>;
    /// What the store has done so far.
    fn stats(&self) -> StoreStats;
}
