//! An instance's history as the API shows it: a page of entries, each tagged by `kind`, with
//! the step attempts' durations worked out.

use serde::{Deserialize, Serialize};

/// A page of an instance's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPageView {
    /// The instance.
    pub id: u64,
    /// The entries, in the order asked for.
    pub entries: Vec<HistoryEntryView>,
    /// How many entries the history keeps in all.
    pub kept: u64,
    /// How many old entries (after the first) were folded away to keep the bound.
    pub folded: u64,
    /// The cursor of the next page (pass it as `from`), if there may be one.
    pub next: Option<u64>,
}

/// One entry of an instance's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntryView {
    /// Its number (0: the start).
    pub seq: u64,
    /// When it happened (ms since the Unix epoch; for a step attempt, when it ended); absent
    /// for an entry whose stored bytes do not decode.
    pub at_ms: Option<u64>,
    /// What happened.
    pub event: HistoryEventView,
}

/// What an entry records, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEventView {
    /// The instance started.
    Started {
        /// The version it was pinned to.
        version: String,
        /// Why routing chose it: `requested`, `rollout_rule_N`, `default` or `newest`.
        routed_by: String,
        /// The routing key the caller gave, if any.
        routing_key: Option<String>,
        /// The size of its encoded input (bytes).
        input_bytes: u64,
        /// The schedule that started it, if one did.
        schedule: Option<String>,
    },
    /// A step ran once.
    Step {
        /// The step.
        step: String,
        /// The attempt, from 1.
        attempt: u32,
        /// When the attempt began (ms since the Unix epoch).
        began_ms: u64,
        /// How long it took (ms).
        duration_ms: u64,
        /// What woke the step.
        woken_by: WokenByView,
        /// The state's schema before the step's own migration of it, if it migrated it.
        migrated_from_schema: Option<u32>,
        /// How it ended.
        outcome: AttemptOutcomeView,
    },
    /// A worker took the instance over (a store many processes share): the steps after ran
    /// there.
    Claimed {
        /// The worker.
        worker: String,
    },
    /// An operator cancelled it.
    Cancelled,
    /// A background migration rewrote its state to another schema.
    Migrated {
        /// The schema before.
        from_schema: u32,
        /// The schema after.
        to_schema: u32,
    },
    /// It moved to another version at a step boundary.
    Moved {
        /// The move.
        moved: crate::MoveView,
    },
    /// It was quarantined.
    Quarantined {
        /// Why.
        reason: String,
    },
    /// An operator revived it after it had failed or been cancelled: it is live again.
    Revived {
        /// The version it had ended on.
        from: String,
        /// The version it is live on again.
        to: String,
        /// The step it had ended on.
        from_step: String,
        /// The step it runs next.
        to_step: String,
        /// Its state's schema when it ended.
        from_schema: u32,
        /// Its state's schema now.
        to_schema: u32,
        /// Why it had failed; absent: it had been cancelled.
        failure: Option<String>,
    },
    /// It was accepted through a process without its version's code, and its input built no
    /// state on the worker with the code: it failed before its first step.
    BeginFailed {
        /// Why.
        reason: String,
    },
    /// It ended with signals it had not consumed: they were deleted with its end.
    SignalsDropped {
        /// Each of them, in sequence order.
        signals: Vec<SignalNoteView>,
    },
    /// An operator terminated it: it ended at once, cancelled, without running another step.
    Terminated {
        /// Why, as the operator said.
        reason: String,
        /// The step whose running attempt was abandoned; absent: no step was running.
        abandoned_step: Option<String>,
    },
    /// The entry's stored bytes do not decode.
    Unreadable {
        /// Why.
        reason: String,
    },
    /// An entry a newer Strata wrote, which this build does not know.
    Other,
}

/// A signal a history entry names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalNoteView {
    /// Its name.
    pub name: String,
    /// Its sequence number.
    pub seq: u64,
    /// The size of its encoded payload.
    pub bytes: u64,
}

/// What woke a step, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WokenByView {
    /// The instance started: its entry step.
    Start,
    /// The previous step went on to this one.
    Previous,
    /// A durable sleep ended.
    Timer,
    /// A signal arrived and this step consumed it.
    Signal {
        /// Its name.
        name: String,
        /// Its sequence number.
        seq: u64,
        /// The size of its payload (bytes).
        bytes: u64,
    },
    /// An awaited signal did not arrive in time.
    Timeout {
        /// The signal's name.
        name: String,
    },
    /// The attempt before failed and the retry policy ran the step again.
    Retry,
    /// An operator revived the instance: the first step it ran again.
    Revival,
    /// A cause a newer Strata wrote, which this build does not know.
    Other,
}

/// How a step attempt ended, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttemptOutcomeView {
    /// It went on to another step.
    Next {
        /// The next step.
        step: String,
    },
    /// It went to sleep.
    Sleep {
        /// Until when (ms since the Unix epoch).
        until_ms: u64,
        /// The step after the sleep.
        step: String,
    },
    /// It waits for a signal.
    AwaitSignal {
        /// The signal.
        signal: String,
        /// When the wait times out (ms since the Unix epoch), if it does.
        timeout_at_ms: Option<u64>,
        /// The step the signal wakes.
        step: String,
    },
    /// The instance completed.
    Completed {
        /// The size of its output (bytes).
        output_bytes: u64,
    },
    /// The instance failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// The attempt failed and a retry is scheduled.
    Retrying {
        /// The error.
        error: String,
        /// When the next attempt runs (ms since the Unix epoch).
        at_ms: u64,
    },
    /// The record cannot be run by its version: the instance was quarantined.
    Quarantined {
        /// Why.
        reason: String,
    },
    /// An outcome a newer Strata wrote, which this build does not know.
    Other,
}
