//! The views of an instance the engine's facade returns: [`InstanceInfo`] (a record with the
//! status only the running engine knows), [`Outcome`] (how it ended, decoded on demand),
//! [`InstanceFilter`] (which instances a listing returns) and [`InstanceHistory`] (a page of what
//! happened to it, asked for with a [`HistoryRequest`]). The record itself is
//! `strata_core::instance`, re-exported here.

use semver::Version;
use serde::de::DeserializeOwned;

pub use strata_core::instance::{
    decode_stored, EncodedInstance, InstanceId, InstanceRecord, InstanceStatus, MoveCause, MoveStamp, PersistedWake,
    Phase, ScheduledFire, StateEnvelope, VersionKey, RECORD_FORMAT,
};

use crate::error::EngineError;

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Completed with an encoded output; decode it with [`Outcome::output`].
    Completed(Vec<u8>),
    /// Failed with a reason.
    Failed(String),
    /// Cancelled by an operator.
    Cancelled,
}

impl Outcome {
    /// The outcome of a finished record; `None` while it is live.
    pub fn from_record(record: &InstanceRecord) -> Option<Outcome> {
        Self::from_phase(&record.phase)
    }

    pub(crate) fn from_phase(phase: &Phase) -> Option<Outcome> {
        match phase {
            Phase::Completed { output } => Some(Outcome::Completed(output.clone())),
            Phase::Failed { reason } => Some(Outcome::Failed(reason.clone())),
            Phase::Cancelled => Some(Outcome::Cancelled),
            _ => None,
        }
    }

    /// How the instance ended: `Completed`, `Failed` or `Cancelled`.
    pub fn status(&self) -> InstanceStatus {
        match self {
            Outcome::Completed(_) => InstanceStatus::Completed,
            Outcome::Failed(_) => InstanceStatus::Failed,
            Outcome::Cancelled => InstanceStatus::Cancelled,
        }
    }

    /// The decoded output of a completed instance; an error if it failed, was cancelled, or the
    /// output does not decode as `O`.
    pub fn output<O: DeserializeOwned>(&self) -> Result<O, EngineError> {
        match self {
            Outcome::Completed(bytes) => strata_core::workflow::decode_user(bytes)
                .map_err(|reason| EngineError::Decode { what: "output", reason }),
            Outcome::Failed(reason) => Err(EngineError::InstanceFailed { reason: reason.clone() }),
            Outcome::Cancelled => Err(EngineError::InstanceCancelled),
        }
    }
}

/// What `Engine::instance` and `Engine::list` report about an instance.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    /// The last committed record.
    pub record: InstanceRecord,
    /// The status, including what only the running engine knows (running, parked).
    pub status: InstanceStatus,
}

impl InstanceInfo {
    /// The instance's id.
    pub fn id(&self) -> InstanceId {
        self.record.id
    }

    /// The workflow's name.
    pub fn workflow(&self) -> &str {
        &self.record.key.workflow
    }

    /// The version the instance is pinned to.
    pub fn version(&self) -> &Version {
        &self.record.key.version
    }

    /// The step that runs next (or, when finished, the last one that ran).
    pub fn step(&self) -> &str {
        &self.record.step
    }

    /// The schema number of the stored state (it may be older than the version expects until the
    /// instance's next step or a background migration rewrites it).
    pub fn state_schema(&self) -> u32 {
        self.record.state.schema
    }

    /// The state at the last step boundary, decoded as `S`.
    pub fn state<S: DeserializeOwned>(&self) -> Result<S, EngineError> {
        strata_core::workflow::decode_user(&self.record.state.bytes)
            .map_err(|reason| EngineError::Decode { what: "state", reason })
    }

    /// The state at the last step boundary as stored (MessagePack), for code that reads several
    /// schemas: decode it by [`InstanceInfo::state_schema`].
    pub fn state_bytes(&self) -> &[u8] {
        &self.record.state.bytes
    }

    /// The outcome, if finished.
    pub fn outcome(&self) -> Option<Outcome> {
        Outcome::from_phase(&self.record.phase)
    }
}

/// Which instances `Engine::list` returns; an empty filter matches all.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this version.
    pub version: Option<Version>,
    /// Only this status.
    pub status: Option<InstanceStatus>,
    /// Only instances past this id in the listing's order (a cursor: the last id of the
    /// previous page).
    pub after: Option<InstanceId>,
    /// The newest instances (highest ids) first.
    pub newest_first: bool,
}

impl InstanceFilter {
    /// Narrows to ids after `id` (the last one of the previous page).
    pub fn after(mut self, id: InstanceId) -> Self {
        self.after = Some(id);
        self
    }

    /// Lists the newest instances (highest ids) first; the cursor then means ids below it.
    pub fn newest_first(mut self) -> Self {
        self.newest_first = true;
        self
    }

    /// The store's scope of this filter: workflow, version, cursor and order.
    pub(crate) fn scope(&self) -> crate::store::ListScope {
        crate::store::ListScope {
            workflow: self.workflow.clone(),
            version: self.version.clone().filter(|_| self.workflow.is_some()),
            after: self.after,
            newest_first: self.newest_first,
            held_here: false,
        }
    }

    /// Instances of `workflow`.
    pub fn workflow(workflow: impl Into<String>) -> Self {
        InstanceFilter {
            workflow: Some(workflow.into()),
            ..InstanceFilter::default()
        }
    }

    /// Narrows to `version`.
    pub fn with_version(mut self, version: Version) -> Self {
        self.version = Some(version);
        self
    }

    /// Narrows to `status`.
    pub fn with_status(mut self, status: InstanceStatus) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn matches_key(&self, key: &VersionKey) -> bool {
        self.workflow.as_deref().is_none_or(|workflow| workflow == key.workflow)
            && self.version.as_ref().is_none_or(|version| *version == key.version)
    }

    /// Whether only finished instances can match.
    pub(crate) fn wants_only_terminal(&self) -> bool {
        self.status.is_some_and(InstanceStatus::is_terminal)
    }

    /// Whether finished instances can match.
    pub(crate) fn wants_terminal(&self) -> bool {
        self.status.is_none_or(InstanceStatus::is_terminal)
    }
}

/// Which page of an instance's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Only entries after this number (oldest first) or before it (newest first): the `next`
    /// of the previous page.
    pub from: Option<u64>,
    /// Newest first, else oldest first.
    pub newest_first: bool,
    /// At most this many entries (at least 1).
    pub limit: usize,
}

impl Default for HistoryRequest {
    /// The first 100 entries, oldest first.
    fn default() -> Self {
        HistoryRequest {
            from: None,
            newest_first: false,
            limit: 100,
        }
    }
}

/// One entry of an instance's history: its number and the entry, or why it does not decode.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryItem {
    /// The entry's number (0: the start).
    pub seq: u64,
    /// The entry, or why its stored bytes do not decode.
    pub entry: Result<strata_core::history::HistoryEntry, String>,
}

/// A page of an instance's history.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceHistory {
    /// The instance.
    pub id: InstanceId,
    /// The entries, in the order asked for.
    pub entries: Vec<HistoryItem>,
    /// How many entries the history keeps in all.
    pub kept: u64,
    /// How many old entries (after the first) were folded away to keep the bound.
    pub folded: u64,
    /// The `from` of the next page, if there may be one.
    pub next: Option<u64>,
}
