//! The JSON shapes of the admin API (version 1): kept apart from the engine's types so that the
//! API stays stable while those change.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{InstanceInfo, VersionInfo};
use strata_core::instance::Phase;

/// A unit variant's name as the API writes it: `RolledBack` → `rolled_back`.
pub(super) fn snake_case(name: &str) -> String {
    let mut snake = String::new();
    for (index, letter) in name.chars().enumerate() {
        if letter.is_uppercase() && index > 0 {
            snake.push('_');
        }
        snake.extend(letter.to_lowercase());
    }
    snake
}

/// An error answer.
#[derive(Serialize, ToSchema)]
pub(super) struct ErrorView {
    /// What went wrong and what to do.
    pub error: String,
}

/// A version with its residency.
#[derive(Serialize, ToSchema)]
pub(super) struct VersionView {
    workflow: String,
    version: String,
    /// `active`, `draining`, `drained` or `retired`.
    status: String,
    /// Whether this process has its code.
    registered: bool,
    /// Whether new instances may start on it now (active, and some live worker has its code).
    accepts_starts: bool,
    live: u64,
    started: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    moved_in: u64,
    moved_out: u64,
    /// The oldest live instance: its id and start time (ms since the Unix epoch).
    oldest_live: Option<OldestView>,
    /// Whether its code can be deleted: no live instance, and none can arrive.
    safe_to_remove: bool,
    /// The live workers that can run it.
    workers: Vec<String>,
}

#[derive(Serialize, ToSchema)]
struct OldestView {
    id: u64,
    started_at_ms: u64,
}

impl VersionView {
    pub(super) fn of(info: &VersionInfo) -> VersionView {
        VersionView {
            workflow: info.key.workflow.clone(),
            version: info.key.version.to_string(),
            status: snake_case(&format!("{:?}", info.status)),
            registered: info.registered,
            accepts_starts: info.accepts_starts,
            live: info.counters.live,
            started: info.counters.started,
            completed: info.counters.completed,
            failed: info.counters.failed,
            cancelled: info.counters.cancelled,
            moved_in: info.counters.moved_in,
            moved_out: info.counters.moved_out,
            oldest_live: info.oldest_live.map(|(id, started_at_ms)| OldestView {
                id: id.0,
                started_at_ms,
            }),
            safe_to_remove: info.safe_to_remove(),
            workers: info.workers.clone(),
        }
    }
}

/// One instance in a listing.
#[derive(Serialize, ToSchema)]
pub(super) struct InstanceSummary {
    id: u64,
    workflow: String,
    version: String,
    /// As `InstanceStatus::as_str` names it (`waiting_signal`, ...).
    #[schema(value_type = String)]
    status: &'static str,
    /// The step that runs next (the last one, once finished).
    step: String,
    started_at_ms: u64,
    updated_at_ms: u64,
}

impl InstanceSummary {
    pub(super) fn of(info: &InstanceInfo) -> InstanceSummary {
        InstanceSummary {
            id: info.id().0,
            workflow: info.workflow().to_string(),
            version: info.version().to_string(),
            status: info.status.as_str(),
            step: info.record.step.clone(),
            started_at_ms: info.record.created_at_ms,
            updated_at_ms: info.record.updated_at_ms,
        }
    }
}

/// A page of a listing.
#[derive(Serialize, ToSchema)]
pub(super) struct InstancePage {
    pub instances: Vec<InstanceSummary>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<u64>,
}

/// One instance in full.
#[derive(Serialize, ToSchema)]
pub(super) struct InstanceDetail {
    #[serde(flatten)]
    summary: InstanceSummary,
    /// The attempt number of the next run of `step`.
    attempt: u32,
    /// Step visits committed so far.
    visits: u64,
    /// Where it is between steps: its timer, the signal it waits for, why it is stuck.
    phase: Value,
    /// The state at the last step boundary as JSON, or why it cannot be shown.
    state: Value,
    state_schema: u32,
    routing_key: Option<String>,
    last_error: Option<String>,
    /// Moves to other versions, oldest first.
    moves: Vec<MoveView>,
    /// Signals delivered and not consumed yet, in the order it consumes them.
    pending_signals: Vec<PendingSignalView>,
}

/// A move of an instance to another version, at a step boundary.
#[derive(Serialize, ToSchema)]
struct MoveView {
    /// The version it left.
    from: String,
    /// The version it moved to.
    to: String,
    /// Its step before the move.
    from_step: String,
    /// Its step after the move.
    to_step: String,
    /// The state schema before the move.
    from_schema: u32,
    /// The state schema after the move.
    to_schema: u32,
    /// `operator` or `auto_upgrade`.
    cause: String,
    /// When (ms since the Unix epoch).
    at_ms: u64,
}

/// A signal waiting for its instance.
#[derive(Serialize, ToSchema)]
struct PendingSignalView {
    seq: u64,
    name: String,
    /// The payload as JSON.
    payload: Value,
}

impl InstanceDetail {
    pub(super) fn of(info: &InstanceInfo, signals: &[crate::store::SignalRecord]) -> InstanceDetail {
        let record = &info.record;
        let phase = match &record.phase {
            Phase::Ready { .. } => serde_json::json!({ "kind": "ready" }),
            Phase::Sleeping { until_ms } => serde_json::json!({ "kind": "sleeping", "until_ms": until_ms }),
            Phase::WaitingSignal { name, timeout_at_ms } => {
                serde_json::json!({ "kind": "waiting_signal", "signal": name, "timeout_at_ms": timeout_at_ms })
            }
            Phase::RetryBackoff { until_ms, .. } => {
                serde_json::json!({ "kind": "retry_backoff", "until_ms": until_ms })
            }
            Phase::Quarantined { reason } => serde_json::json!({ "kind": "quarantined", "reason": reason }),
            Phase::Completed { output } => serde_json::json!({
                "kind": "completed",
                "output": strata_core::workflow::decode_user::<Value>(output).unwrap_or(Value::Null),
            }),
            Phase::Failed { reason } => serde_json::json!({ "kind": "failed", "reason": reason }),
            Phase::Cancelled => serde_json::json!({ "kind": "cancelled" }),
            Phase::Accepted { input } => serde_json::json!({
                "kind": "accepted",
                "input": strata_core::workflow::decode_user::<Value>(input).unwrap_or(Value::Null),
            }),
        };
        // A start not begun has no state yet (its first step builds it from the input).
        let state = match &record.phase {
            Phase::Accepted { .. } => Value::Null,
            _ => info
                .state::<Value>()
                .unwrap_or_else(|error| serde_json::json!({ "undecodable": error.to_string() })),
        };
        InstanceDetail {
            summary: InstanceSummary::of(info),
            attempt: record.attempt,
            visits: record.visits,
            phase,
            state,
            state_schema: record.state.schema,
            routing_key: record.routing_key.clone(),
            last_error: record.last_error.clone(),
            moves: record
                .moves
                .iter()
                .map(|stamp| MoveView {
                    from: stamp.from.to_string(),
                    to: stamp.to.to_string(),
                    from_step: stamp.from_step.clone(),
                    to_step: stamp.to_step.clone(),
                    from_schema: stamp.from_schema,
                    to_schema: stamp.to_schema,
                    cause: snake_case(&format!("{:?}", stamp.cause)),
                    at_ms: stamp.at_ms,
                })
                .collect(),
            pending_signals: signals
                .iter()
                .map(|signal| PendingSignalView {
                    seq: signal.seq,
                    name: signal.name.clone(),
                    payload: strata_core::workflow::decode_user::<Value>(&signal.payload).unwrap_or(Value::Null),
                })
                .collect(),
        }
    }
}
