//! strata-admin-model: the JSON shapes of Strata's admin API (version 1), shared by the server that
//! writes them (`strata-admin` builds them from the engine's types) and the `strata` CLI that
//! reads them typed: every answer and every request body. Kept apart from the engine's types so
//! that the API stays stable while those change; it depends on no other Strata crate.

#![warn(missing_docs)]

mod changes;
mod config;
mod history;
mod operation;
mod revivals;
mod rollouts;
mod whole;

pub use changes::{
    MigrationBody, MigrationFailureView, MigrationProgressView, MoveBody, MoveCheckView, MovePlanView, MoveReportView,
};
pub use config::{ConfigCheckView, GenerationView, RestoredView};
pub use history::{
    AttemptOutcomeView, HistoryEntryView, HistoryEventView, HistoryPageView, SignalNoteView, WokenByView,
};
pub use operation::{
    FlagView, QuarantinedView, RolloutRuleView, RoutedStartsView, RoutingView, ScheduleView, WorkerView,
    WorkflowRoutingView,
};
pub use revivals::{ReviveBody, ReviveCheckView, RevivePlanView, ReviveReportView};
pub use rollouts::{
    FiguresView, GatesRequest, GatesView, MeasureFigureView, MeasureGateView, OnRollbackChoice, PairMeasureView,
    RolloutFiguresView, RolloutStartRequest, RolloutView, ShadowPairView, StageView, TransitionKind, TransitionView,
};
pub use whole::Whole;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorView {
    /// What went wrong and what to do.
    pub error: String,
}

/// A version with its residency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionView {
    /// The workflow.
    pub workflow: String,
    /// The version.
    pub version: String,
    /// `active`, `draining`, `drained` or `retired`.
    pub status: String,
    /// Whether this process has its code.
    pub registered: bool,
    /// Whether new instances may start on it now (active, and some live worker has its code).
    pub accepts_starts: bool,
    /// Instances not finished.
    pub live: u64,
    /// Instances ever started on it.
    pub started: u64,
    /// Instances that completed.
    pub completed: u64,
    /// Instances that failed.
    pub failed: u64,
    /// Instances that were cancelled.
    pub cancelled: u64,
    /// Instances moved to it from another version.
    pub moved_in: u64,
    /// Instances moved from it to another version.
    pub moved_out: u64,
    /// Failed or cancelled instances revived on it (live on it again; the version they ended
    /// on keeps their ending in its counts).
    #[serde(default)]
    pub revived: u64,
    /// The oldest live instance: its id and start time (ms since the Unix epoch).
    pub oldest_live: Option<OldestView>,
    /// Whether its code can be deleted: no live instance, and none can arrive.
    pub safe_to_remove: bool,
    /// The live workers that can run it.
    pub workers: Vec<String>,
    /// What its finished instances recorded of each measure: those it declares (when its code
    /// is registered here) and any its totals hold.
    #[serde(default)]
    pub measures: Vec<VersionMeasureView>,
}

/// A version's total of one measure over its finished instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionMeasureView {
    /// The measure.
    pub measure: String,
    /// `summed` or `averaged`, as the version declares it; absent when its code is not
    /// registered in this process.
    pub kind: Option<String>,
    /// The sum of every value recorded.
    pub sum: f64,
    /// How many values were recorded.
    pub count: u64,
    /// Its figure: per finished instance (summed), or the mean value (averaged); absent without
    /// a sample or a known kind.
    pub figure: Option<f64>,
}

/// A version's oldest live instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OldestView {
    /// The instance.
    pub id: u64,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: u64,
}

/// One instance in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceSummary {
    /// The instance.
    pub id: u64,
    /// Its workflow.
    pub workflow: String,
    /// The version it is pinned to.
    pub version: String,
    /// `ready`, `running`, `sleeping`, `waiting_signal`, `retry_backoff`, `parked`,
    /// `quarantined`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The step that runs next (the last one, once finished).
    pub step: String,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// When its record was last committed (ms since the Unix epoch).
    pub updated_at_ms: u64,
    /// Why it failed or is quarantined, or the error its retry follows; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstancePage {
    /// The instances of this page, in the listing's order (ids up, or newest first).
    pub instances: Vec<InstanceSummary>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<u64>,
}

/// One instance in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceDetail {
    /// What a listing shows of it.
    #[serde(flatten)]
    pub summary: InstanceSummary,
    /// The attempt number of the next run of `step`.
    pub attempt: u32,
    /// Step visits committed so far.
    pub visits: u64,
    /// Where it is between steps: its timer, the signal it waits for, why it is stuck.
    pub phase: PhaseView,
    /// The state at the last step boundary as JSON, or why it cannot be shown.
    pub state: Value,
    /// The schema number of that state.
    pub state_schema: u32,
    /// The key sticky routing used, if the caller gave one.
    pub routing_key: Option<String>,
    /// The error of the last failed attempt, if any.
    pub last_error: Option<String>,
    /// Moves to other versions, oldest first.
    pub moves: Vec<MoveView>,
    /// Signals delivered and not consumed yet, in the order it consumes them.
    pub pending_signals: Vec<PendingSignalView>,
    /// What its steps recorded so far of the version's measures (attempts whose result was
    /// kept), by measure; its version's totals take them in when it finishes.
    #[serde(default)]
    pub measures: Vec<InstanceMeasureView>,
}

/// What an instance's steps recorded of one measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceMeasureView {
    /// The measure.
    pub measure: String,
    /// The sum of the values recorded.
    pub sum: f64,
    /// How many values were recorded.
    pub count: u64,
}

/// A move of an instance to another version, at a step boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MoveView {
    /// The version it left.
    pub from: String,
    /// The version it moved to.
    pub to: String,
    /// Its step before the move.
    pub from_step: String,
    /// Its step after the move.
    pub to_step: String,
    /// The state schema before the move.
    pub from_schema: u32,
    /// The state schema after the move.
    pub to_schema: u32,
    /// `operator` or `auto_upgrade`.
    pub cause: String,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// A signal waiting for its instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingSignalView {
    /// Its sequence number: signals are consumed in this order.
    pub seq: u64,
    /// Its name.
    pub name: String,
    /// The payload as JSON.
    pub payload: Value,
}

/// Where an instance is between steps, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PhaseView {
    /// Accepted, its first step not begun: the input as JSON (`null` if it does not decode).
    Accepted {
        /// The start's input.
        input: Value,
    },
    /// Its next step runs as soon as a slot is free.
    Ready,
    /// In a durable sleep.
    Sleeping {
        /// When it wakes (ms since the Unix epoch).
        until_ms: u64,
    },
    /// Waiting for a signal.
    WaitingSignal {
        /// The signal's name.
        signal: String,
        /// When the wait times out (ms since the Unix epoch), if it does.
        timeout_at_ms: Option<u64>,
    },
    /// Waiting to retry a failed attempt.
    RetryBackoff {
        /// When it retries (ms since the Unix epoch).
        until_ms: u64,
    },
    /// Set apart: its record or state cannot be run.
    Quarantined {
        /// Why.
        reason: String,
    },
    /// Completed: the output as JSON (`null` if it does not decode).
    Completed {
        /// The workflow's output.
        output: Value,
    },
    /// Failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// Cancelled.
    Cancelled,
}

/// A signal was stored for its instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalDeliveredView {
    /// Always `true`: stored durably, consumed when the instance waits for it.
    pub delivered: bool,
}

/// An instance to start, as posted. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The workflow.
    pub workflow: String,
    /// Its input as JSON, as the workflow's input type reads it (`null` if absent).
    #[serde(default)]
    pub input: Value,
    /// The key sticky routing hashes (a customer id, say); recorded on the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// A semver requirement the version must meet (`=1.0.0` for an exact one); absent: routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// An instance started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartedView {
    /// Its id.
    pub id: u64,
    /// Its workflow.
    pub workflow: String,
    /// The version it is pinned to.
    pub version: String,
}

/// An instance was cancelled (or terminated, which ends it cancelled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelledView {
    /// Always `cancelled`.
    pub status: String,
}

/// A termination, as posted. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TerminateBody {
    /// Why: kept in the instance's history. Required, not blank.
    pub reason: String,
}
