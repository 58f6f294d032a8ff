//! strata-store: the `Store` trait — the seam between the engine and its persistence — with the
//! ops a commit is made of, what a store answers, its errors and the one residency rule every
//! backend applies.
//!
//! Owns the persisted records besides the instance record itself (signals, per-version counters
//! and statuses) and the contract every backend keeps: `apply` is all-or-nothing, `sync` makes all
//! applied work durable, `recover` returns everything a starting engine needs. The trait names no
//! backend concept (no trees, no files, no SQL).
//!
//! Every store has a [`Cluster`]: each process is a worker that claims the live instances of the
//! versions it has code for, under a claim with a fencing token that every write of the instance
//! checks. A store many processes share (PostgreSQL) implements it over its tables; a store only
//! one process opens (sled) has a [`SoloCluster`], a cluster of one whose worker holds every
//! claim.

#![warn(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod residency;
mod solo;

pub use solo::{SoloCluster, SOLO_WORKER_ID};

pub use strata_core::migrate::MigrationJobRecord;

use serde::{Deserialize, Serialize};

use strata_core::instance::{EncodedInstance, InstanceId, InstanceRecord, VersionKey};
pub use strata_core::version::{CounterDelta, VersionCounters};

pub use strata_core::codec::damaged_record;
use strata_core::version::VersionStatus;

/// A store failure, with what to do about it: an outcome of the store's own rules that the
/// engine acts on (a claim lost, a start refused by residency, a write another process made
/// first), or a failure of the backend, of one [`BackendFailure`] kind, in the backend's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend failed: `kind` says which sort of failure (what the engine and its user do
    /// about it), `message` what happened and what to do, in the backend's words.
    #[error("{}", describe_backend(*.kind, .message))]
    Backend {
        /// Which sort of failure.
        kind: BackendFailure,
        /// What happened and what to do.
        message: String,
    },
    /// Another worker claimed these instances (this one's lease ran out): their writes were not
    /// applied, and this worker must let them go.
    #[error("instances {} are claimed by another worker now; their step was not committed here and runs there", describe_ids(.ids))]
    ClaimLost {
        /// The instances.
        ids: Vec<InstanceId>,
    },
    /// A revival found instances no longer ended in the store (revived by another process,
    /// or removed by retention): nothing of the write was applied.
    #[error("instances {} are no longer ended in the store (revived by another process, or removed by retention); nothing was revived — plan the revival again", describe_ids(.ids))]
    NoLongerEnded {
        /// The instances.
        ids: Vec<InstanceId>,
    },
    /// A start was committed for a version that no longer takes new instances in the store
    /// (another process drained or retired it a moment before).
    #[error("{key} is {status:?} in the store and takes no new instances; nothing was started — start again to route to an active version")]
    VersionNotAccepting {
        /// The version.
        key: VersionKey,
        /// Its status in the store.
        status: VersionStatus,
    },
    /// A retired version was to be made active again (another process retired it a moment before).
    #[error("{key} is retired for good and cannot take new instances again; register a new version instead")]
    VersionRetired {
        /// The version.
        key: VersionKey,
    },
    /// A version was to be retired while instances of it still live (in this or another process).
    #[error(
        "{key} still has {live} live instances in the store; drain it and wait until it is Drained before retiring it"
    )]
    LiveInstances {
        /// The version.
        key: VersionKey,
        /// Its live instances in the store.
        live: u64,
    },
    /// A schedule's fire was already handled (by another process sharing the store, or a later
    /// fire was): the write that would handle it again was not applied.
    #[error("schedule '{schedule}' has handled fire time {fire_ms} or a later one already")]
    FireTaken {
        /// The schedule.
        schedule: String,
        /// The fire time (ms since the Unix epoch).
        fire_ms: u64,
    },
    /// A config generation was written already (by another process sharing the store).
    #[error("config generation {generation} was applied already (by another process sharing the store)")]
    ConfigTaken {
        /// The generation.
        generation: u64,
    },
    /// A rollout changed meanwhile (through another process sharing the store): the write,
    /// made from an older copy of it, was not applied.
    #[error("rollout '{name}' changed meanwhile (another process decided or an operator acted); look at it again")]
    RolloutChanged {
        /// The rollout.
        name: String,
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

/// Which sort of failure a backend had: what the engine does about it and what its user must.
/// The backend's message says the rest (which directory, which server, what the system said).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendFailure {
    /// An operation failed for a reason of the backend's own (an I/O error, a query refused).
    Failed,
    /// Another process holds the store (another engine has the data directory open).
    InUse,
    /// Less free space than the store keeps in reserve: nothing was written; commits are retried
    /// and the engine continues by itself once space returns.
    NoSpace,
    /// The storage refused a write (full, over a size limit or a quota): everything acknowledged
    /// before is kept; free space, then restart the engine.
    WriteRefused,
    /// The store's files or records are damaged; restore from a backup.
    Damaged,
    /// The store was written by a newer Strata (record format or schema); upgrade Strata.
    Newer,
    /// The store cannot be used as configured (its URL, server, credentials or database).
    Unusable(DatabaseProblem),
    /// The store could not be reached (its connection broke) for `retried_for`; nothing was lost,
    /// and the engine goes on retrying.
    Unreachable {
        /// How long the backend retried before this call gave up.
        retried_for: std::time::Duration,
    },
    /// The store takes no writes now (a read-only replica, a failover in progress) and none
    /// that does answered within `retried_for`; nothing was lost, and the engine goes on retrying.
    ReadOnly {
        /// How long the backend retried before this call gave up.
        retried_for: std::time::Duration,
    },
    /// A write this engine was told had failed turned out to have landed, so its memory may be
    /// behind the store: it refuses further writes; restart it.
    Diverged,
}

impl StoreError {
    /// A backend failure of `kind`, in the backend's words.
    pub fn backend(kind: BackendFailure, message: impl Into<String>) -> StoreError {
        StoreError::Backend {
            kind,
            message: message.into(),
        }
    }

    /// An operation of the backend failed (`kind` [`BackendFailure::Failed`]).
    pub fn failed(operation: &str, message: impl std::fmt::Display) -> StoreError {
        StoreError::backend(BackendFailure::Failed, format!("store {operation} failed: {message}"))
    }

    /// The store was written with a record format newer than this build reads.
    pub fn newer_format(found: u32, supported: u32) -> StoreError {
        StoreError::backend(
            BackendFailure::Newer,
            format!("the store was written with record format {found}, but this build of Strata reads formats up to {supported}; upgrade Strata to open it"),
        )
    }

    /// Whether the store could not be reached or written at all ([`BackendFailure::Unreachable`],
    /// [`BackendFailure::ReadOnly`]): no fault of the call's, and the same call may work once it
    /// is back.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.backend_failure(),
            Some(BackendFailure::Unreachable { .. } | BackendFailure::ReadOnly { .. })
        )
    }

    /// The kind of backend failure, if this is one.
    pub fn backend_failure(&self) -> Option<BackendFailure> {
        match self {
            StoreError::Backend { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// A backend failure as shown: the backend's message, and for a store that could not be reached
/// or written, how long it was retried.
fn describe_backend(kind: BackendFailure, message: &str) -> String {
    match kind {
        BackendFailure::Unreachable { retried_for } | BackendFailure::ReadOnly { retried_for } => {
            format!("{message} (retried for {retried_for:?}; the engine goes on retrying)")
        }
        _ => message.to_string(),
    }
}

impl From<strata_core::codec::EncodeError> for StoreError {
    fn from(error: strata_core::codec::EncodeError) -> Self {
        StoreError::Encode {
            what: error.what,
            message: error.message,
        }
    }
}

fn describe_ids(ids: &[InstanceId]) -> String {
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
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
pub fn decode_live_record(id: InstanceId, bytes: &[u8]) -> Result<InstanceRecord, CorruptRecord> {
    let corrupt = |reason| CorruptRecord { id, reason };
    match InstanceRecord::decode(bytes) {
        Ok(record) if record.format > strata_core::instance::RECORD_FORMAT => Err(corrupt(format!(
            "record format {} is newer than this build's {}",
            record.format,
            strata_core::instance::RECORD_FORMAT
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
    #[serde(default = "strata_core::instance::first_format")]
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

/// One write inside an atomic commit.
#[derive(Debug, Clone)]
pub enum Op {
    /// Writes an instance record; a finished one moves to the finished instances.
    PutInstance(EncodedInstance),
    /// Writes the live record of an instance that had ended (failed or cancelled), taking it
    /// out of the finished instances: it is live again, held by this process (the record's
    /// claim is its previous one plus one). If the store no longer holds it ended (a store many
    /// processes share: ended under the claim before), the whole write fails with
    /// [`StoreError::NoLongerEnded`].
    ReviveInstance(EncodedInstance),
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
    /// Sets a version's lifecycle status (counted in its `status_changes`). Setting a retired
    /// version `Active` fails the whole write with [`StoreError::VersionRetired`].
    PutVersionStatus {
        /// The version.
        key: VersionKey,
        /// The status.
        status: VersionStatus,
    },
    /// Records a schedule's last handled fire time (in the commit of the start it caused). Only
    /// a later time than the one stored is written; otherwise the whole write fails with
    /// [`StoreError::FireTaken`], so a fire starts one instance however many processes run the
    /// schedule.
    PutScheduleFire {
        /// The schedule's name.
        schedule: String,
        /// The fire time (ms since the Unix epoch).
        fire_ms: u64,
    },
    /// Adds an applied config to the history; a generation is written once, else the write
    /// fails with [`StoreError::ConfigTaken`].
    PutConfig(AppliedConfig),
    /// Stores a background migration's job: its settings, cursor and counts.
    PutMigrationJob(MigrationJobRecord),
    /// Stores a rollout: its definition, status, stage and history. Each write adds one
    /// transition to the history; a write whose history is not longer than the stored one's was
    /// made from an older copy and fails with [`StoreError::RolloutChanged`].
    PutRollout(Box<strata_core::rollout::RolloutRecord>),
    /// Stores a chunk of an instance's history: entries the instance's record held until the
    /// chunk filled (written in the commit that filled it).
    PutHistoryChunk {
        /// The instance.
        instance: InstanceId,
        /// The number of the chunk's first entry.
        first: u64,
        /// The chunk's entries, encoded one after another (`strata_core::history`).
        entries: Vec<u8>,
    },
    /// Drops a chunk of an instance's history (one the bound folds away).
    DropHistoryChunk {
        /// The instance.
        instance: InstanceId,
        /// The number of the chunk's first entry.
        first: u64,
    },
    /// Stores a compared shadow pair, by rollout and real instance (written again, it replaces
    /// the one stored: both workers that finish a pair may compare it). Retention removes it
    /// with its real instance.
    PutShadowPair(Box<strata_core::shadow::ShadowPair>),
    /// Moves an undecodable live record aside, keeping its bytes and the reason.
    QuarantineRecord {
        /// The instance.
        id: InstanceId,
        /// Why it cannot be read.
        reason: String,
    },
}

/// A version as a write left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The version.
    pub key: VersionKey,
    /// Its counters after the write.
    pub counters: VersionCounters,
    /// Its status after the write (`None`: never set, which counts as `Active`).
    pub status: Option<VersionStatus>,
    /// How many times its status was written, this write included: a status may go back (a
    /// drain undone), so of two reports of one version the one with more changes is newer.
    pub status_changes: u64,
}

/// What a write did to the versions whose counters or status it changed. The store decides
/// residency in the write itself: a `Draining` version whose live count the write brings to 0
/// becomes `Drained` in the same atomic write, and is listed in `drained` by that write only, so
/// it is announced once however many processes share the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Every version whose counters or status the write changed, as it left them.
    pub versions: Vec<StoredVersion>,
    /// The versions this write drained.
    pub drained: Vec<VersionKey>,
}

impl Applied {
    /// The part of a group's result that belongs to one of its commits: the versions `ops`
    /// touched, and those of them the group drained.
    pub fn share(&self, ops: &[Op]) -> Applied {
        let touched = |key: &VersionKey| Op::touch(ops, key);
        Applied {
            versions: self
                .versions
                .iter()
                .filter(|stored| touched(&stored.key))
                .cloned()
                .collect(),
            drained: self.drained.iter().filter(|key| touched(key)).cloned().collect(),
        }
    }
}

impl Op {
    /// The version whose counters or status this op changes, if any.
    pub fn version(&self) -> Option<&VersionKey> {
        match self {
            Op::AdjustCounters { key, .. } | Op::PutVersionStatus { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Whether any of `ops` changes `key`'s counters or status.
    pub fn touch(ops: &[Op], key: &VersionKey) -> bool {
        ops.iter().any(|op| op.version() == Some(key))
    }
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
    /// The live instances this worker holds from the start that are due by the time `recover`
    /// was given (their wake time, [`strata_core::instance::Phase::wake_ms`], at or before it).
    pub live: Vec<InstanceRecord>,
    /// The live instances this worker holds from the start that were left in the store (due
    /// later), counted by version: the engine loads each when it comes due or is asked for.
    pub unloaded: Vec<(VersionKey, u64)>,
    /// Live records that do not decode.
    pub corrupt: Vec<CorruptRecord>,
    /// Delivered, unconsumed signals.
    pub signals: Vec<SignalRecord>,
    /// Every version the store holds, with counters and status.
    pub versions: Vec<StoredVersion>,
}

/// What a store numbers: each kind is unique across every process sharing the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// Instance ids.
    Instance,
    /// Signal sequence numbers.
    Signal,
}

/// A worker: one engine process on a shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its id, unique in the store.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it joined (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// Its last heartbeat (ms since the Unix epoch, the database's clock).
    pub heartbeat_ms: u64,
    /// The versions it has code for.
    pub versions: Vec<VersionKey>,
    /// Whether its lease is current (it heartbeat within the lease and has not left).
    pub alive: bool,
}

/// Instances a worker just claimed, with their pending signals.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The claim's number, from a sequence of this worker's that only grows: every record it
    /// took carries it in the store (see [`Cluster::uncovered_live`]).
    pub number: u64,
    /// The claimed records, each with its new claim token in `InstanceRecord::claim`.
    pub live: Vec<InstanceRecord>,
    /// Claimed records that do not decode (the caller quarantines them).
    pub corrupt: Vec<CorruptRecord>,
    /// Instances claimed and left in the store, unread: due after the time the claim loaded
    /// through.
    pub left: Vec<InstanceId>,
    /// Their delivered, unconsumed signals.
    pub signals: Vec<SignalRecord>,
    /// Of the instances [`Store::load_held`] was asked for, the live ones another worker holds,
    /// as stored (so that a caller delivering to them needs no second read); a claim leaves it
    /// empty.
    pub elsewhere: Vec<InstanceRecord>,
}

/// The many-process side of a shared store: workers, their leases and their claims. Every
/// instance is claimed by at most one worker at a time; a claim lasts while its worker's lease
/// does (renewed by `heartbeat`), and each new claim of an instance gets a higher fencing token
/// that the store checks on every write of it, so a worker that lost its claim never commits.
pub trait Cluster: Send + Sync {
    /// This process's worker id.
    fn worker_id(&self) -> &str;
    /// Renews this worker's lease, and with it every claim it holds, and records the versions it
    /// has code for and its lease, by which every other worker judges whether it is alive (a
    /// worker joins with its first heartbeat).
    fn heartbeat(&self, versions: &[VersionKey], lease: std::time::Duration) -> Result<(), StoreError>;
    /// Claims up to `limit` live instances of `versions` that no worker with a current lease
    /// holds (never one of another version); `lease` is the one assumed of a worker that has
    /// not recorded its own. Those whose wake time is at or before `load_through_ms` are handed
    /// over loaded, with their signals; the rest are claimed without being read
    /// ([`Claimed::left`]): the worker loads each as it comes due ([`Store::due_held`]).
    fn claim(
        &self,
        versions: &[VersionKey],
        lease: std::time::Duration,
        limit: usize,
        load_through_ms: u64,
    ) -> Result<Claimed, StoreError>;
    /// Hands every claim of this worker back at once and marks it stopped.
    fn leave(&self) -> Result<(), StoreError>;
    /// Every worker the store knows, with whether its lease (its own, else `lease`) is current.
    fn workers(&self, lease: std::time::Duration) -> Result<Vec<WorkerInfo>, StoreError>;
    /// Takes or renews the lease of `role` (something one worker at a time does, such as
    /// evaluating rollouts) for `lease`; `true` if this worker holds it now.
    fn lead(&self, role: &str, lease: std::time::Duration) -> Result<bool, StoreError>;
    /// Each version's oldest live instance that other workers may hold, with its start time (ms
    /// since the Unix epoch); the engine knows its own (a shared store may list them too).
    fn oldest_live(&self) -> Result<Vec<(VersionKey, InstanceId, u64)>, StoreError>;
    /// Live instances in `scope` other workers may hold that `keep` accepts, at most `limit`, in
    /// the scope's id order (a shared store may list this worker's too; the engine lists its own
    /// from memory).
    fn live_held_elsewhere(
        &self,
        scope: &ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Publishes this worker's metrics window of each version it runs (encoded
    /// metrics windows, as the engine exports them), so that the worker evaluating rollouts sees every
    /// worker's steps.
    fn publish_metrics(&self, windows: &[(VersionKey, Vec<u8>)]) -> Result<(), StoreError>;
    /// The metrics windows of `key` that the other live workers published last (judged alive by
    /// their own lease, else `lease`).
    fn metrics_of(&self, key: &VersionKey, lease: std::time::Duration) -> Result<Vec<Vec<u8>>, StoreError>;
    /// How many live instances of `workflow` a background migration's shares have not covered:
    /// those no live worker holds although some live worker has their version's code (about to
    /// be claimed: a dead worker's, an accepted start), and those a live worker took with a claim
    /// numbered above what its share covered. `covered` lists worker ids with the number of the
    /// newest claim their share had taken in; a worker not listed covered no claim. Workers are
    /// judged alive by their own lease, else `lease`.
    fn uncovered_live(
        &self,
        workflow: &str,
        lease: std::time::Duration,
        covered: &[(String, u64)],
    ) -> Result<u64, StoreError>;
    /// Marks `Drained` of these versions, which a commit of this worker recorded, as announced.
    fn drained_announced(&self, keys: &[VersionKey]) -> Result<(), StoreError>;
    /// Takes the `Drained` versions whose draining worker is no longer alive and never marked them
    /// announced (it stopped between its commit and the event), to be announced by the caller:
    /// each is handed to one caller only. Workers are judged alive by their own lease, else
    /// `lease`.
    fn take_unannounced_drained(&self, lease: std::time::Duration) -> Result<Vec<VersionKey>, StoreError>;
    /// Stores a signal for an instance some worker may hold, if the instance is live (checked in
    /// the same statement), and wakes whoever holds it; `false` if the instance is not live.
    fn deliver_signal(&self, signal: &SignalRecord) -> Result<bool, StoreError>;
    /// The pending signals of the instances this worker holds: what wake-ups may have missed.
    fn held_signals(&self) -> Result<Vec<SignalRecord>, StoreError>;
    /// The pending signals of one instance.
    fn signals_of(&self, instance: InstanceId) -> Result<Vec<SignalRecord>, StoreError>;
    /// What other processes announce, as they announce it (taken once; the announcements may
    /// miss some, so poll `held_signals` and claim at each heartbeat too).
    fn wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Wakeup>>;
}

/// Which instances a listing reads, and in which order (see [`Store::finished_instances`] and
/// [`Cluster::live_held_elsewhere`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListScope {
    /// Only this workflow's.
    pub workflow: Option<String>,
    /// Only this version's (of `workflow`).
    pub version: Option<semver::Version>,
    /// Only ids past this one in the listing's order: above it, or below it newest first (the
    /// last id of the previous page).
    pub after: Option<InstanceId>,
    /// Highest ids (the newest instances) first.
    pub newest_first: bool,
    /// Only live instances this worker holds (a store one process opens: every one); a listing
    /// of finished instances ignores it.
    pub held_here: bool,
}

impl ListScope {
    /// Whether an instance of version `key` is in the scope's workflow and version.
    pub fn holds(&self, key: &VersionKey) -> bool {
        self.workflow.as_ref().is_none_or(|workflow| *workflow == key.workflow)
            && self.version.as_ref().is_none_or(|version| *version == key.version)
    }

    /// Whether `id` is past the scope's cursor, in its order.
    pub fn past_cursor(&self, id: InstanceId) -> bool {
        match (self.after, self.newest_first) {
            (None, _) => true,
            (Some(after), false) => id > after,
            (Some(after), true) => id < after,
        }
    }
}

/// A chunk of an instance's history as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHistoryChunk {
    /// The number of its first entry.
    pub first: u64,
    /// Its entries, encoded one after another.
    pub entries: Vec<u8>,
}

/// An announcement from another process sharing the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// A signal was delivered to this instance.
    Signal(InstanceId),
    /// Instances nobody holds were written (starts accepted for a worker with their code).
    Claimable,
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
    /// Applies `ops` atomically: after a crash either all of them are visible or none. The
    /// store keeps residency exact in the same write: it refuses a start on a version the write
    /// leaves not `Active`, whatever the order of its ops ([`StoreError::VersionNotAccepting`]), retiring a version with live
    /// instances ([`StoreError::LiveInstances`]) and making a retired one active again
    /// ([`StoreError::VersionRetired`]); it makes a `Draining` version left with no live instance
    /// `Drained`, counts every status it writes in the version's `status_changes`, and returns
    /// what it did to the versions touched.
    fn apply(&self, ops: &[Op]) -> Result<Applied, StoreError>;
    /// Every version the store holds, with counters and status.
    fn versions(&self) -> Result<Vec<StoredVersion>, StoreError>;
    /// Makes every applied op durable on stable storage.
    fn sync(&self) -> Result<(), StoreError>;
    /// Loads what a starting engine needs: the live instances this worker holds from the start
    /// whose wake time is at or before `through_ms` (the rest are counted in
    /// [`RecoveredState::unloaded`]) — with a shared store none but those it claims (call
    /// [`Cluster::heartbeat`] first, then claim), with a [`SoloCluster`] every live instance
    /// due by then.
    fn recover(&self, through_ms: u64) -> Result<RecoveredState, StoreError>;
    /// The live instances this worker holds whose wake time
    /// ([`strata_core::instance::Phase::wake_ms`]) is past `after` (a wake time and id, exclusive)
    /// and at or before `through_ms`, at most `limit`, by wake time then id: what an engine that
    /// keeps idle instances in the store loads as they come due. Read from an index, so the call
    /// costs what it returns, not what the store holds.
    fn due_held(
        &self,
        after: Option<(u64, InstanceId)>,
        through_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InstanceId)>, StoreError>;
    /// Loads the live instances among `ids` that this worker holds, with their pending signals,
    /// as a claim hands them over (each record with the claim this worker holds it under; the
    /// claim's `number` is 0); those another worker holds come in `elsewhere`, without signals;
    /// an id not live is left out.
    fn load_held(&self, ids: &[InstanceId]) -> Result<Claimed, StoreError>;
    /// Reserves numbers of `kind` no other process sharing the store will use: a range of at
    /// least one.
    fn reserve_ids(&self, kind: IdKind) -> Result<std::ops::Range<u64>, StoreError>;
    /// The workers sharing the store: a [`SoloCluster`] for a store one process opens.
    fn cluster(&self) -> &dyn Cluster;
    /// Loads one instance, live or finished. Here and in listings a record's `claim` is the
    /// claim it was last written under (0 with a store one process opens).
    fn load_instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError>;
    /// Live instances that `keep` accepts, at most `limit`, in id order, whichever worker holds
    /// them.
    fn live_instances(
        &self,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Removes up to `limit` finished instances that finished before `finished_before_ms` (ms
    /// since the Unix epoch), in one atomic write; returns how many (fewer than `limit`: none is
    /// left due, as far as this call looked; call again while it returns `limit`), with their
    /// histories. Counters, statuses and live instances are untouched; ids are never issued again.
    fn expire_finished(&self, finished_before_ms: u64, limit: usize) -> Result<u64, StoreError>;
    /// The highest id `expire_finished` ever removed (0 if none): an id at or below it that is
    /// not in the store was, most likely, removed.
    fn highest_removed_id(&self) -> Result<u64, StoreError>;
    /// Finished instances in `scope` that `keep` accepts, at most `limit`, in the scope's id
    /// order; the store narrows by the scope with an index, so a listing reads only what it may
    /// return.
    fn finished_instances(
        &self,
        scope: &ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError>;
    /// The stored chunks of an instance's history, oldest first (a history is bounded, so it is
    /// read whole). An instance with no chunk (or removed by retention) has none; its newest
    /// entries are in its record until they fill a chunk.
    fn history(&self, instance: InstanceId) -> Result<Vec<StoredHistoryChunk>, StoreError>;
    /// Quarantined records: id and reason.
    fn quarantined(&self) -> Result<Vec<CorruptRecord>, StoreError>;
    /// Every applied config, oldest generation first.
    fn config_history(&self) -> Result<Vec<AppliedConfig>, StoreError>;
    /// The newest applied config: the one in force.
    fn latest_config(&self) -> Result<Option<AppliedConfig>, StoreError> {
        Ok(self.config_history()?.pop())
    }
    /// Each schedule's last handled fire time (ms since the Unix epoch).
    fn schedule_fires(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Every background migration job, by workflow.
    fn migration_jobs(&self) -> Result<Vec<MigrationJobRecord>, StoreError>;
    /// Every rollout, by name.
    fn rollouts(&self) -> Result<Vec<strata_core::rollout::RolloutRecord>, StoreError>;
    /// The compared shadow pairs of rollout `rollout`, in the order of their real instances.
    fn shadow_pairs(&self, rollout: &str) -> Result<Vec<strata_core::shadow::ShadowPair>, StoreError>;
    /// What the store has done so far.
    fn stats(&self) -> StoreStats;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_failure_shows_the_backends_words_and_how_long_it_was_retried() {
        let full = StoreError::backend(BackendFailure::NoSpace, "the disk holding /data has 10 bytes free");
        assert_eq!(full.to_string(), "the disk holding /data has 10 bytes free");
        assert_eq!(full.backend_failure(), Some(BackendFailure::NoSpace));
        assert!(!full.is_unavailable());

        let lost = StoreError::backend(
            BackendFailure::Unreachable {
                retried_for: std::time::Duration::from_secs(15),
            },
            "lost the connection to the database while trying to commit (connection refused)",
        );
        assert_eq!(
            lost.to_string(),
            "lost the connection to the database while trying to commit (connection refused) \
             (retried for 15s; the engine goes on retrying)"
        );
        assert!(lost.is_unavailable());
        let read_only = StoreError::backend(
            BackendFailure::ReadOnly {
                retried_for: std::time::Duration::ZERO,
            },
            "read-only",
        );
        assert!(read_only.is_unavailable());
    }

    #[test]
    fn the_stores_own_outcomes_are_no_backend_failure() {
        let taken = StoreError::ConfigTaken { generation: 3 };
        assert_eq!(taken.backend_failure(), None);
        assert!(!taken.is_unavailable());
        let failed = StoreError::failed("fdatasync", "EIO");
        assert_eq!(failed.to_string(), "store fdatasync failed: EIO");
        assert_eq!(failed.backend_failure(), Some(BackendFailure::Failed));
        let newer = StoreError::newer_format(9, 2);
        assert_eq!(newer.backend_failure(), Some(BackendFailure::Newer));
        assert!(newer.to_string().contains("record format 9") && newer.to_string().contains("upgrade Strata"));
    }
}
