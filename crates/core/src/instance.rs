//! Instance records: ids, the persisted phase of an instance between two steps, its state
//! envelope and its status. The record is the step-commit format.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use semver::Version;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::EncodeError;

/// The format number of the records this build writes. A store holding a larger number was
/// written by a newer Strata and is refused; records of an older format are read as they are and
/// rewritten in this format by their next commit (or by a background migration).
///
/// Format 2 added [`InstanceRecord::moves`] and [`InstanceRecord::pinned_reason`], and a format
/// number on signal, counter and version-status records. The format-1 layout is kept, frozen, in
/// `store::sled_format1`. Format 3 writes an instance record compact, its fields by position (a
/// MessagePack array) instead of by name: the names took more than half of a record that every
/// step commit writes. Records of formats 1 and 2 (by name) are read as they are: serde reads a
/// struct from either form. A field added to the record goes at its end, with a default.
pub const RECORD_FORMAT: u32 = 3;

/// The format of records that predate format numbers on them (signals, counters, statuses).
pub fn first_format() -> u32 {
    1
}

/// The identity of one workflow instance, unique within a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId(pub u64);

impl fmt::Display for InstanceId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

impl FromStr for InstanceId {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(InstanceId)
    }
}

/// A workflow name and one of its versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VersionKey {
    /// The workflow's name.
    pub workflow: String,
    /// The version.
    pub version: Version,
}

impl VersionKey {
    /// The key of `version` of `workflow`.
    pub fn new(workflow: impl Into<String>, version: Version) -> Self {
        VersionKey {
            workflow: workflow.into(),
            version,
        }
    }
}

impl FromStr for VersionKey {
    type Err = String;

    /// Parses `workflow@version`, as `Display` writes it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (workflow, version) = text
            .rsplit_once('@')
            .ok_or_else(|| format!("'{text}' is not workflow@version"))?;
        let version = Version::parse(version).map_err(|error| format!("'{text}': {error}"))?;
        Ok(VersionKey::new(workflow, version))
    }
}

impl fmt::Display for VersionKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}@{}", self.workflow, self.version)
    }
}

/// A schedule's fire: which schedule, and the fire time it started an instance for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledFire {
    /// The schedule's name.
    pub schedule: String,
    /// The fire time (ms since the Unix epoch).
    pub fire_ms: u64,
}

/// Stored state: the schema number it was written with and its MessagePack bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEnvelope {
    /// The state schema number.
    pub schema: u32,
    /// The encoded state.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Why the step at the cursor runs next, as persisted. Signal payloads are carried only while a
/// retry needs them; a first delivery comes from the instance's signal inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PersistedWake {
    /// The entry step of a new instance.
    Started,
    /// The previous step returned `Goto`.
    Continued,
    /// A durable sleep ended.
    TimerFired,
    /// A signal woke the step.
    Signal {
        /// Its name.
        name: String,
        /// Its payload.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// An awaited signal timed out.
    SignalTimedOut {
        /// Its name.
        name: String,
    },
}

/// Where an instance is between two steps: the persisted part of its state machine.
///
/// Transitions: `Ready` runs the cursor step; its commit leads to `Ready` (Goto), `Sleeping`,
/// `WaitingSignal`, `RetryBackoff` (a failed attempt with attempts left), or a terminal phase.
/// `Sleeping`, `WaitingSignal` and `RetryBackoff` run the cursor step when their timer fires or
/// their signal arrives. `Quarantined` runs nothing until an operator cancels it. `Accepted`
/// becomes `Ready` at the entry step (or `Failed`, when its input does not build a state) in the
/// commit of its first step, on a worker with its version's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The cursor step runs as soon as a worker is free.
    Ready {
        /// Why.
        wake: PersistedWake,
    },
    /// Sleeping until a wall-clock time (milliseconds since the Unix epoch).
    Sleeping {
        /// When the sleep ends.
        until_ms: u64,
    },
    /// Waiting for a signal, optionally until a timeout.
    WaitingSignal {
        /// The awaited signal.
        name: String,
        /// When the wait times out, if it does.
        timeout_at_ms: Option<u64>,
    },
    /// The last attempt failed; the next attempt runs at `until_ms`.
    RetryBackoff {
        /// When the next attempt runs.
        until_ms: u64,
        /// Why the step runs (kept for the retry).
        wake: PersistedWake,
    },
    /// The instance cannot run: its record or state is damaged. It is still live.
    Quarantined {
        /// What is wrong.
        reason: String,
    },
    /// Finished with an output.
    Completed {
        /// The encoded output.
        #[serde(with = "serde_bytes")]
        output: Vec<u8>,
    },
    /// Finished with a failure.
    Failed {
        /// Why.
        reason: String,
    },
    /// Cancelled by an operator.
    Cancelled,
    /// Started through a process without its version's code (with a store many processes
    /// share): the first worker with the code that claims it builds the initial state from
    /// `input` and runs the entry step. The cursor and state are empty until then.
    Accepted {
        /// The encoded input.
        #[serde(with = "serde_bytes")]
        input: Vec<u8>,
    },
}

impl Phase {
    /// Whether the instance has finished.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Completed { .. } | Phase::Failed { .. } | Phase::Cancelled)
    }

    /// The wall-clock time (ms) at which a timer must look at the instance, if any.
    pub fn timer_due_ms(&self) -> Option<u64> {
        match self {
            Phase::Sleeping { until_ms } | Phase::RetryBackoff { until_ms, .. } => Some(*until_ms),
            Phase::WaitingSignal { timeout_at_ms, .. } => *timeout_at_ms,
            _ => None,
        }
    }

    /// When the engine must next look at a live instance by itself (ms since the Unix epoch):
    /// at once ([`WAKE_NOW`]) for one ready to run, at its timer for one sleeping, backing off or
    /// waiting with a timeout, never ([`WAKE_NEVER`]) for one that only a signal or an operator
    /// moves on; `None` for a finished one. Stores index live instances by it, so that an engine
    /// loads an idle instance only when it comes due.
    pub fn wake_ms(&self) -> Option<u64> {
        match self {
            Phase::Ready { .. } | Phase::Accepted { .. } => Some(WAKE_NOW),
            Phase::Sleeping { until_ms } | Phase::RetryBackoff { until_ms, .. } => Some(*until_ms),
            Phase::WaitingSignal { timeout_at_ms, .. } => Some(timeout_at_ms.unwrap_or(WAKE_NEVER)),
            Phase::Quarantined { .. } => Some(WAKE_NEVER),
            Phase::Completed { .. } | Phase::Failed { .. } | Phase::Cancelled => None,
        }
    }
}

/// The wake time of an instance ready to run: before any other.
pub const WAKE_NOW: u64 = 0;
/// The wake time of an instance no timer wakes: after any other.
pub const WAKE_NEVER: u64 = u64::MAX;

/// How a live record was indexed when it was last written: what a store that indexes live
/// records by version and by wake time must take out when the record is written again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedAs {
    /// Its version.
    pub key: VersionKey,
    /// Its start time (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Its wake time ([`Phase::wake_ms`]).
    pub wake_ms: u64,
}

/// One instance as stored: the record every step commit writes (written through
/// [`StoredRecord`], which leaves out the trailing fields that are not set).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceRecord {
    /// The record format ([`RECORD_FORMAT`] when written by this build).
    pub format: u32,
    /// The instance's id.
    pub id: InstanceId,
    /// The workflow and the version the instance is pinned to.
    pub key: VersionKey,
    /// The cursor: the step that runs next (or, when terminal, the last step that ran).
    pub step: String,
    /// The attempt number of the next run of `step`, from 1.
    pub attempt: u32,
    /// How many step visits have been committed; part of the idempotency key.
    pub visits: u64,
    /// Where the instance is between steps.
    pub phase: Phase,
    /// The state at the last committed step boundary.
    pub state: StateEnvelope,
    /// The key sticky routing used, if the caller gave one.
    pub routing_key: Option<String>,
    /// The schedule fire that started the instance, if a schedule did.
    #[serde(default)]
    pub scheduled: Option<ScheduledFire>,
    /// The error of the last failed attempt, if any.
    pub last_error: Option<String>,
    /// When the instance started (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// When the record was last committed (ms since the Unix epoch).
    pub updated_at_ms: u64,
    /// Every move of the instance to another version, oldest first (format 2).
    #[serde(default)]
    pub moves: Vec<MoveStamp>,
    /// Why an `AutoUpgrade` instance stayed on its version at its last step boundary (format 2).
    #[serde(default)]
    pub pinned_reason: Option<String>,
    /// Where its history stands: the next entry's number and how many were folded away (none
    /// in a record written before instances kept a history).
    #[serde(default)]
    pub history: HistoryBook,
    /// What its steps recorded of the version's measures so far (attempts whose result was
    /// kept), added to the version's totals when it finishes.
    #[serde(default)]
    pub measures: crate::measure::MeasureTotals,
    /// For a shadow instance (a candidate run beside a real one in a rollout's shadow stage,
    /// never seen by the caller and not counted as the version's outcome): the real instance.
    #[serde(default)]
    pub shadow_of: Option<InstanceId>,
    /// For a real instance a rollout's shadow stage shadowed: its shadow instance.
    #[serde(default)]
    pub shadowed_by: Option<InstanceId>,
    /// The claim (fencing token) under which this process holds the instance in a store shared
    /// by many processes: a commit of the record lands only while the claim is still the
    /// instance's. Not part of the stored record (the store keeps claims itself); 0 with sled,
    /// and 0 in a record written for whichever worker claims it first (an `Accepted` start).
    #[serde(skip)]
    pub claim: u64,
}

/// Where an instance's history stands, kept in its record. Entries are numbered from 0 (the
/// start); chunk `c` holds entries from `c * HISTORY_CHUNK` up to the next chunk; the entries
/// after the last full chunk are in `tail`. What adds to it and reads it is
/// `crate::history` (`HistoryBook::append`, `tail_entries`).
///
/// Its stored field names are short (every record carries them).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HistoryBook {
    /// The number the next entry gets.
    #[serde(rename = "n")]
    pub next: u64,
    /// How many entries (whole chunks after the first) were dropped to keep the bound.
    #[serde(rename = "f", default)]
    pub folded: u64,
    /// The entries not in a chunk yet, encoded one after another.
    #[serde(rename = "t", with = "serde_bytes", default)]
    pub tail: Vec<u8>,
    /// The worker that wrote the newest entry: a step by another is preceded by its claim.
    /// Shared, not copied, by the copies of a record a step's commit makes.
    #[serde(rename = "w", default)]
    pub worker: Arc<str>,
    /// When this process appended the tail's last entry and that entry's outcome names the
    /// next step, the length of that name, which ends `tail`: a step entry for that step then
    /// leaves its name out. Not stored (`None` in a record just read: the next entry is written
    /// with its name).
    #[serde(skip)]
    pub(crate) named_step_len: Option<u32>,
}

/// How many bytes a book's tail has room for beyond its entries when it is copied or added to:
/// a step's commit copies the record and adds an entry (a compact step entry takes 12 to 20
/// bytes, a start about 35), which then fits without moving the tail.
pub(crate) const TAIL_ROOM: usize = 48;

impl Clone for HistoryBook {
    fn clone(&self) -> Self {
        let mut tail = Vec::with_capacity(self.tail.len() + TAIL_ROOM);
        tail.extend_from_slice(&self.tail);
        HistoryBook {
            next: self.next,
            folded: self.folded,
            tail,
            worker: self.worker.clone(),
            named_step_len: self.named_step_len,
        }
    }
}

/// Books are equal when what they store is (`named_step_len` is this process's note).
impl PartialEq for HistoryBook {
    fn eq(&self, other: &Self) -> bool {
        (self.next, self.folded, &self.tail, &self.worker) == (other.next, other.folded, &other.tail, &other.worker)
    }
}

impl Eq for HistoryBook {}

/// Why an instance moved to another version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveCause {
    /// An operator's move (`Engine::move_instances`).
    Operator,
    /// Its version's `AutoUpgrade` policy moved it to the routing target.
    AutoUpgrade,
}

/// A recorded move of an instance from one version to another, made at a step boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveStamp {
    /// The version it left.
    pub from: Version,
    /// The version it moved to.
    pub to: Version,
    /// Its cursor before the move.
    pub from_step: String,
    /// Its cursor after the move.
    pub to_step: String,
    /// The state schema before the move.
    pub from_schema: u32,
    /// The state schema after the move.
    pub to_schema: u32,
    /// Why it moved.
    pub cause: MoveCause,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// An instance record as written: its fields borrowed, in order, the trailing ones (from
/// `measures` on) only up to the last one set. A record that sets none of them is the bytes
/// builds before them wrote, so those builds read it; a field is left out only when every one
/// after it is too (positions must not shift). A field added to the record goes at its end, here
/// and in [`InstanceRecord`], with its own test of what is left out.
#[derive(Serialize)]
#[serde(rename = "InstanceRecord")]
pub struct StoredRecord<'a> {
    format: u32,
    id: InstanceId,
    key: &'a VersionKey,
    step: &'a str,
    attempt: u32,
    visits: u64,
    phase: &'a Phase,
    state: &'a StateEnvelope,
    routing_key: &'a Option<String>,
    scheduled: &'a Option<ScheduledFire>,
    last_error: &'a Option<String>,
    created_at_ms: u64,
    updated_at_ms: u64,
    moves: &'a [MoveStamp],
    pinned_reason: &'a Option<String>,
    history: &'a HistoryBook,
    #[serde(skip_serializing_if = "Option::is_none")]
    measures: Option<&'a crate::measure::MeasureTotals>,
    /// Outer `None`: left out; `Some(None)`: written as nil, because a later field is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_of: Option<Option<InstanceId>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadowed_by: Option<InstanceId>,
}

impl<'a> From<&'a InstanceRecord> for StoredRecord<'a> {
    fn from(record: &'a InstanceRecord) -> Self {
        // Each trailing field is written when it or one after it is set.
        let shadowed_by = record.shadowed_by;
        let shadow_of = (record.shadow_of.is_some() || shadowed_by.is_some()).then_some(record.shadow_of);
        let measures = (!record.measures.is_empty() || shadow_of.is_some()).then_some(&record.measures);
        StoredRecord {
            format: record.format,
            id: record.id,
            key: &record.key,
            step: &record.step,
            attempt: record.attempt,
            visits: record.visits,
            phase: &record.phase,
            state: &record.state,
            routing_key: &record.routing_key,
            scheduled: &record.scheduled,
            last_error: &record.last_error,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            moves: &record.moves,
            pinned_reason: &record.pinned_reason,
            history: &record.history,
            measures,
            shadow_of,
            shadowed_by,
        }
    }
}

impl Serialize for InstanceRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredRecord::from(self).serialize(serializer)
    }
}

impl InstanceRecord {
    /// A record of instance `id` of version `key` in `phase`, started and written at `now_ms`,
    /// in the current format: at its first attempt of no step yet, with an empty state (schema
    /// 0), no history, and nothing else set; unclaimed.
    pub fn new(id: InstanceId, key: VersionKey, phase: Phase, now_ms: u64) -> InstanceRecord {
        InstanceRecord {
            format: RECORD_FORMAT,
            id,
            key,
            step: String::new(),
            attempt: 1,
            visits: 0,
            phase,
            state: StateEnvelope {
                schema: 0,
                bytes: Vec::new(),
            },
            routing_key: None,
            scheduled: None,
            last_error: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            moves: Vec::new(),
            pinned_reason: None,
            history: Default::default(),
            measures: Default::default(),
            shadow_of: None,
            shadowed_by: None,
            claim: 0,
        }
    }

    /// Whether it is a shadow instance (see [`InstanceRecord::shadow_of`]).
    pub fn is_shadow(&self) -> bool {
        self.shadow_of.is_some()
    }

    /// How this record, if live, is indexed by a store (see [`IndexedAs`]).
    pub fn indexed_as(&self) -> Option<IndexedAs> {
        self.phase.wake_ms().map(|wake_ms| IndexedAs {
            key: self.key.clone(),
            created_at_ms: self.created_at_ms,
            wake_ms,
        })
    }

    /// Encodes the record to replace `previous`, the live record last committed for it (`None`
    /// for a new instance, or one that had finished): the store takes `previous`'s index entries
    /// out where they change.
    pub fn encode_replacing(&self, previous: Option<&InstanceRecord>) -> Result<EncodedInstance, EncodeError> {
        let mut encoded = self.encode()?;
        encoded.replaces = previous.and_then(InstanceRecord::indexed_as);
        Ok(encoded)
    }

    /// Encodes the record in the stored format (compact MessagePack: fields by position), as a
    /// new instance's (see [`InstanceRecord::encode_replacing`]).
    pub fn encode(&self) -> Result<EncodedInstance, EncodeError> {
        // Sized up front: growing the buffer field by field showed up in step-path profiles.
        let mut bytes = Vec::with_capacity(
            96 + self.state.bytes.len() + self.step.len() + self.key.workflow.len() + self.history.tail.len(),
        );
        rmp_serde::encode::write(&mut bytes, self).map_err(|error| EncodeError {
            what: "instance record",
            message: error.to_string(),
        })?;
        Ok(EncodedInstance {
            id: self.id,
            finished: self.phase.is_terminal(),
            key: self.key.clone(),
            status: InstanceStatus::of_phase(&self.phase),
            due_ms: self.phase.timer_due_ms(),
            wake_ms: self.phase.wake_ms(),
            replaces: None,
            claim: self.claim,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            bytes,
        })
    }

    /// Decodes a stored record; one the store found damaged gives why.
    pub fn decode(bytes: &[u8]) -> Result<InstanceRecord, String> {
        if let Some(reason) = crate::codec::damaged_record_reason(bytes) {
            return Err(reason);
        }
        decode_stored::<crate::codec::AllowTrailing<InstanceRecord>>(bytes)
            .map(|read| read.0)
            .map_err(|error| error.to_string())
    }
}

/// How deep stored MessagePack may nest. rmp-serde's own limit (1 024) lets damaged bytes (a run
/// of one-element array markers) recurse deep enough to overflow a 2 MiB thread stack and abort
/// the process (found by tests/fuzz.rs); records nest a few levels, and user states well under
/// this.
pub const MAX_STORED_DEPTH: usize = 128;

/// Decodes stored MessagePack (a record, a state, a payload) with nesting bounded by
/// [`MAX_STORED_DEPTH`]: damaged bytes give an error, never a stack overflow.
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    deserializer.set_max_depth(MAX_STORED_DEPTH);
    T::deserialize(&mut deserializer)
}

/// An instance record encoded for a commit, with what a store needs to place it. Encoding happens
/// on the thread that ran the step, so the commit thread only writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedInstance {
    /// The instance.
    pub id: InstanceId,
    /// Whether it has finished (finished records are kept apart from live ones).
    pub finished: bool,
    /// Its version (a column a database can query by).
    pub key: VersionKey,
    /// Its status as committed.
    pub status: InstanceStatus,
    /// When its timer is due, if it waits for one (ms since the Unix epoch).
    pub due_ms: Option<u64>,
    /// When the engine must next look at it by itself, if live ([`Phase::wake_ms`]).
    pub wake_ms: Option<u64>,
    /// How the live record it replaces was indexed (`None`: a new instance, or one that had
    /// finished).
    pub replaces: Option<IndexedAs>,
    /// The claim it was written under (see [`InstanceRecord::claim`]).
    pub claim: u64,
    /// When it started (ms since the Unix epoch; a column, to find the oldest live instance).
    pub created_at_ms: u64,
    /// When this record was committed (for a finished instance: when it finished, which its
    /// retention counts from).
    pub updated_at_ms: u64,
    /// The encoded record.
    pub bytes: Vec<u8>,
}

/// The status of an instance as an operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Its next step is queued to run.
    Ready,
    /// A step of it runs now.
    Running,
    /// In a durable sleep.
    Sleeping,
    /// Waiting for a signal.
    WaitingSignal,
    /// Waiting before retrying a failed attempt.
    RetryBackoff,
    /// Its version's code is not registered; it runs once it is.
    Parked,
    /// Damaged; it runs nothing until cancelled.
    Quarantined,
    /// Completed.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl InstanceStatus {
    /// The status a committed record has, before what only a running engine knows (running,
    /// parked).
    pub fn of_phase(phase: &Phase) -> InstanceStatus {
        match phase {
            Phase::Ready { .. } | Phase::Accepted { .. } => InstanceStatus::Ready,
            Phase::Sleeping { .. } => InstanceStatus::Sleeping,
            Phase::WaitingSignal { .. } => InstanceStatus::WaitingSignal,
            Phase::RetryBackoff { .. } => InstanceStatus::RetryBackoff,
            Phase::Quarantined { .. } => InstanceStatus::Quarantined,
            Phase::Completed { .. } => InstanceStatus::Completed,
            Phase::Failed { .. } => InstanceStatus::Failed,
            Phase::Cancelled => InstanceStatus::Cancelled,
        }
    }

    /// The status's name in snake case (`waiting_signal`), as stored in a database column.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Ready => "ready",
            InstanceStatus::Running => "running",
            InstanceStatus::Sleeping => "sleeping",
            InstanceStatus::WaitingSignal => "waiting_signal",
            InstanceStatus::RetryBackoff => "retry_backoff",
            InstanceStatus::Parked => "parked",
            InstanceStatus::Quarantined => "quarantined",
            InstanceStatus::Completed => "completed",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the instance has finished.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            InstanceStatus::Completed | InstanceStatus::Failed | InstanceStatus::Cancelled
        )
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    /// `depth` one-element arrays around a zero, as MessagePack.
    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = vec![0x91; depth];
        bytes.push(0x00);
        bytes
    }

    #[test]
    fn nesting_up_to_the_bound_decodes_on_a_small_stack_and_deeper_is_an_error() {
        // A 2 MiB stack, as tokio's and std's threads have, in the debug build's large frames.
        let decoded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let within = decode_stored::<serde_json::Value>(&nested(MAX_STORED_DEPTH - 1)).is_ok();
                let beyond = decode_stored::<serde_json::Value>(&nested(100_000)).is_err();
                let record = InstanceRecord::decode(&nested(100_000)).is_err();
                (within, beyond, record)
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(decoded, (true, true, true));
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    fn sample() -> InstanceRecord {
        InstanceRecord {
            format: 2,
            id: InstanceId(42),
            key: VersionKey::new("ledger", Version::new(1, 2, 0)),
            step: "post".to_string(),
            attempt: 2,
            visits: 17,
            phase: Phase::RetryBackoff {
                until_ms: 1_700_000_000_500,
                wake: PersistedWake::Signal {
                    name: "payment".to_string(),
                    payload: vec![0x92, 0x01, 0x02],
                },
            },
            state: StateEnvelope {
                schema: 3,
                bytes: vec![0x81, 0xa1, 0x61, 0x07],
            },
            routing_key: Some("customer-7".to_string()),
            scheduled: Some(ScheduledFire {
                schedule: "nightly".to_string(),
                fire_ms: 1_700_000_000_000,
            }),
            last_error: Some("printer jam".to_string()),
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_400,
            moves: vec![MoveStamp {
                from: Version::new(1, 1, 0),
                to: Version::new(1, 2, 0),
                from_step: "charge".to_string(),
                to_step: "post".to_string(),
                from_schema: 2,
                to_schema: 3,
                cause: MoveCause::Operator,
                at_ms: 1_700_000_000_200,
            }],
            pinned_reason: None,
            history: HistoryBook {
                next: 11,
                folded: 0,
                tail: vec![0x93, 0x01, 0x02, 0x03],
                worker: "local".into(),
                named_step_len: None,
            },
            measures: Default::default(),
            shadow_of: None,
            shadowed_by: None,
            claim: 0,
        }
    }

    /// Measures are the last stored field and left out while empty: a record without any is the
    /// array builds before measures wrote, and one with them round-trips.
    #[test]
    fn measures_are_stored_only_when_recorded_and_read_back() {
        let mut record = sample();
        let without = record.encode().unwrap().bytes;
        // An array of 16 stored fields: the fields before measures.
        assert_eq!(without[0], 0xdc);
        assert_eq!(u16::from_be_bytes([without[1], without[2]]), 16);
        record.measures.insert(
            "cost".to_string(),
            crate::measure::MeasureTotal {
                sum_units: 3_100,
                count: 2,
            },
        );
        let with = record.encode().unwrap().bytes;
        assert_eq!(u16::from_be_bytes([with[1], with[2]]), 17);
        assert_eq!(InstanceRecord::decode(&with).unwrap(), record);
        assert_eq!(InstanceRecord::decode(&without).unwrap().measures, Default::default());
        // A shadow instance without measures writes them (empty) so its marker keeps position 17.
        record.measures.clear();
        record.shadow_of = Some(InstanceId(7));
        let shadow = record.encode().unwrap().bytes;
        assert_eq!(u16::from_be_bytes([shadow[1], shadow[2]]), 18);
        assert_eq!(InstanceRecord::decode(&shadow).unwrap(), record);
        let named = rmp_serde::to_vec_named(&record).unwrap();
        assert_eq!(
            InstanceRecord::decode(&named).unwrap(),
            record,
            "written by name, it reads the same"
        );
        // A shadowed real instance writes measures and an empty shadow_of before its shadow.
        record.shadow_of = None;
        record.shadowed_by = Some(InstanceId(8));
        let shadowed = record.encode().unwrap().bytes;
        assert_eq!(u16::from_be_bytes([shadowed[1], shadowed[2]]), 19);
        assert_eq!(InstanceRecord::decode(&shadowed).unwrap(), record);
    }

    #[test]
    fn a_live_record_wakes_now_at_its_timer_or_never_and_a_finished_one_is_not_indexed() {
        let at = |phase: Phase| InstanceRecord { phase, ..sample() };
        let ready = at(Phase::Ready {
            wake: PersistedWake::Started,
        });
        assert_eq!(ready.phase.wake_ms(), Some(WAKE_NOW));
        assert_eq!(at(Phase::Sleeping { until_ms: 9 }).phase.wake_ms(), Some(9));
        assert_eq!(
            sample().phase.wake_ms(),
            Some(1_700_000_000_500),
            "a backoff wakes at its end"
        );
        let waiting = |timeout_at_ms| {
            at(Phase::WaitingSignal {
                name: "go".to_string(),
                timeout_at_ms,
            })
        };
        assert_eq!(waiting(Some(7)).phase.wake_ms(), Some(7));
        assert_eq!(waiting(None).phase.wake_ms(), Some(WAKE_NEVER));
        assert_eq!(at(Phase::Cancelled).phase.wake_ms(), None);
        assert_eq!(at(Phase::Cancelled).indexed_as(), None);
        // A write names what the record it replaces was indexed as.
        let encoded = waiting(None).encode_replacing(Some(&ready)).unwrap();
        assert_eq!(
            (encoded.wake_ms, encoded.replaces),
            (Some(WAKE_NEVER), ready.indexed_as())
        );
        assert_eq!(
            ready.encode().unwrap().replaces,
            None,
            "a new instance replaces nothing"
        );
    }

    #[test]
    fn a_record_is_written_by_position_and_one_written_by_name_reads_the_same() {
        let record = sample();
        let compact = record.encode().unwrap().bytes;
        let named = rmp_serde::to_vec_named(&record).unwrap();
        assert!(
            compact.len() * 3 < named.len() * 2,
            "by position: {} bytes, by name: {}",
            compact.len(),
            named.len()
        );
        assert_eq!(InstanceRecord::decode(&compact).unwrap(), record);
        assert_eq!(
            InstanceRecord::decode(&named).unwrap(),
            record,
            "a format-2 record still reads"
        );
    }

    #[test]
    fn a_record_a_newer_build_wrote_with_fields_at_its_end_reads_here() {
        let mut record = sample();
        // A newer build writes its fields after the last one here, so every one here is in its
        // record.
        record
            .measures
            .insert("cost".to_string(), crate::measure::MeasureTotal::default());
        record.shadow_of = Some(InstanceId(7));
        record.shadowed_by = Some(InstanceId(9));
        let own = record.encode().unwrap().bytes;
        // The record's array, two elements longer: its fields, then two a newer build added.
        let (fields, body) = match own[0] {
            0xdc => (u16::from_be_bytes([own[1], own[2]]), &own[3..]),
            fixed @ 0x90..=0x9f => (u16::from(fixed & 0x0f), &own[1..]),
            other => panic!("a record is an array, not {other:#x}"),
        };
        let mut newer = vec![0xdc];
        newer.extend_from_slice(&(fields + 2).to_be_bytes());
        newer.extend_from_slice(body);
        rmp_serde::encode::write(&mut newer, &("measures", 3u32)).unwrap();
        rmp_serde::encode::write(&mut newer, &vec![1u8, 2]).unwrap();
        assert_eq!(InstanceRecord::decode(&newer).unwrap(), record);
    }
}
