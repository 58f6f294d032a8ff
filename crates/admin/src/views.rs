//! The admin API's views built from the engine's types. The shapes themselves (errors, versions,
//! instances) are `strata-admin-model`'s, which the CLI reads too.

use serde_json::Value;
use strata_admin_model::{
    AttemptOutcomeView, HistoryEntryView, HistoryEventView, HistoryPageView, InstanceDetail, InstanceMeasureView,
    InstanceSummary, MoveView, OldestView, PendingSignalView, PhaseView, SignalNoteView, VersionMeasureView,
    VersionView, WokenByView,
};

use strata_core::history::{AttemptOutcome, HistoryEvent, WokenBy};
use strata_core::instance::Phase;
use strata_engine::{InstanceInfo, MeasureKind, VersionInfo};

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

/// `info` as the API shows a version.
pub(super) fn version_view(info: &VersionInfo) -> VersionView {
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
        revived: info.counters.revived,
        oldest_live: info.oldest_live.map(|(id, started_at_ms)| OldestView {
            id: id.0,
            started_at_ms,
        }),
        safe_to_remove: info.safe_to_remove(),
        workers: info.workers.clone(),
        measures: version_measures(info),
    }
}

/// A version's measure totals: each it declares (in declared order), then any other its
/// totals hold (recorded under an earlier registration of its code, or in another worker).
fn version_measures(info: &VersionInfo) -> Vec<VersionMeasureView> {
    let finished = info.counters.completed + info.counters.failed + info.counters.cancelled;
    let view = |measure: &str, kind: Option<MeasureKind>| {
        let total = info.counters.measures.get(measure).copied().unwrap_or_default();
        VersionMeasureView {
            measure: measure.to_string(),
            kind: kind.map(|kind| kind.as_str().to_string()),
            sum: total.sum(),
            count: total.count,
            figure: kind.and_then(|kind| strata_core::measure::figure(kind, &total, finished).value),
        }
    };
    let mut views: Vec<VersionMeasureView> = info
        .declared_measures
        .iter()
        .map(|spec| view(&spec.name, Some(spec.kind)))
        .collect();
    for measure in info.counters.measures.keys() {
        if !info.declared_measures.iter().any(|spec| spec.name == *measure) {
            views.push(view(measure, None));
        }
    }
    views
}

/// `info` as a listing shows an instance.
pub(super) fn instance_summary(info: &InstanceInfo) -> InstanceSummary {
    InstanceSummary {
        id: info.id().0,
        workflow: info.workflow().to_string(),
        version: info.version().to_string(),
        status: info.status.as_str().to_string(),
        step: info.record.step.clone(),
        started_at_ms: info.record.created_at_ms,
        updated_at_ms: info.record.updated_at_ms,
        reason: match &info.record.phase {
            Phase::Failed { reason } | Phase::Quarantined { reason } => Some(reason.clone()),
            Phase::RetryBackoff { .. } => info.record.last_error.clone(),
            _ => None,
        },
    }
}

/// `info` in full, with its pending `signals`.
pub(super) fn instance_detail(info: &InstanceInfo, signals: &[strata_engine::store::SignalRecord]) -> InstanceDetail {
    let record = &info.record;
    let decoded = |bytes: &[u8]| strata_core::workflow::decode_user::<Value>(bytes).unwrap_or(Value::Null);
    let phase = match &record.phase {
        Phase::Ready { .. } => PhaseView::Ready,
        Phase::Sleeping { until_ms } => PhaseView::Sleeping { until_ms: *until_ms },
        Phase::WaitingSignal { name, timeout_at_ms } => PhaseView::WaitingSignal {
            signal: name.clone(),
            timeout_at_ms: *timeout_at_ms,
        },
        Phase::RetryBackoff { until_ms, .. } => PhaseView::RetryBackoff { until_ms: *until_ms },
        Phase::Quarantined { reason } => PhaseView::Quarantined { reason: reason.clone() },
        Phase::Completed { output } => PhaseView::Completed {
            output: decoded(output),
        },
        Phase::Failed { reason } => PhaseView::Failed { reason: reason.clone() },
        Phase::Cancelled => PhaseView::Cancelled,
        Phase::Accepted { input } => PhaseView::Accepted { input: decoded(input) },
    };
    // A start not begun has no state yet (its first step builds it from the input).
    let state = match &record.phase {
        Phase::Accepted { .. } => Value::Null,
        _ => info
            .state::<Value>()
            .unwrap_or_else(|error| serde_json::json!({ "undecodable": error.to_string() })),
    };
    InstanceDetail {
        summary: instance_summary(info),
        attempt: record.attempt,
        visits: record.visits,
        phase,
        state,
        state_schema: record.state.schema,
        routing_key: record.routing_key.clone(),
        last_error: record.last_error.clone(),
        moves: record.moves.iter().map(move_view).collect(),
        pending_signals: signals
            .iter()
            .map(|signal| PendingSignalView {
                seq: signal.seq,
                name: signal.name.clone(),
                payload: decoded(&signal.payload),
            })
            .collect(),
        measures: record
            .measures
            .iter()
            .map(|(measure, total)| InstanceMeasureView {
                measure: measure.clone(),
                sum: total.sum(),
                count: total.count,
            })
            .collect(),
    }
}

/// A move of an instance as the API shows it.
fn move_view(stamp: &strata_core::instance::MoveStamp) -> MoveView {
    MoveView {
        from: stamp.from.to_string(),
        to: stamp.to.to_string(),
        from_step: stamp.from_step.clone(),
        to_step: stamp.to_step.clone(),
        from_schema: stamp.from_schema,
        to_schema: stamp.to_schema,
        cause: snake_case(&format!("{:?}", stamp.cause)),
        at_ms: stamp.at_ms,
    }
}

/// A page of an instance's history as the API shows it.
pub(super) fn history_page(history: &strata_engine::instance::InstanceHistory) -> HistoryPageView {
    HistoryPageView {
        id: history.id.0,
        entries: history.entries.iter().map(history_entry).collect(),
        kept: history.kept,
        folded: history.folded,
        next: history.next,
    }
}

fn history_entry(item: &strata_engine::instance::HistoryItem) -> HistoryEntryView {
    let entry = match &item.entry {
        Ok(entry) => entry,
        Err(reason) => {
            return HistoryEntryView {
                seq: item.seq,
                at_ms: None,
                event: HistoryEventView::Unreadable { reason: reason.clone() },
            }
        }
    };
    let event = match &entry.event {
        HistoryEvent::Started {
            version,
            routed_by,
            routing_key,
            input_bytes,
            schedule,
        } => HistoryEventView::Started {
            version: version.to_string(),
            routed_by: routed_by.label(),
            routing_key: routing_key.clone(),
            input_bytes: *input_bytes,
            schedule: schedule.clone(),
        },
        HistoryEvent::Step(step) => HistoryEventView::Step {
            step: step.step.clone(),
            attempt: step.attempt,
            began_ms: entry.at_ms.saturating_sub(step.took_ms),
            duration_ms: step.took_ms,
            woken_by: woken_by_view(&step.woken_by),
            migrated_from_schema: step.migrated_from_schema,
            outcome: outcome_view(&step.outcome),
        },
        HistoryEvent::Claimed { worker } => HistoryEventView::Claimed { worker: worker.clone() },
        HistoryEvent::Cancelled => HistoryEventView::Cancelled,
        HistoryEvent::Migrated { from_schema, to_schema } => HistoryEventView::Migrated {
            from_schema: *from_schema,
            to_schema: *to_schema,
        },
        HistoryEvent::Moved(stamp) => HistoryEventView::Moved {
            moved: move_view(stamp),
        },
        HistoryEvent::Quarantined { reason } => HistoryEventView::Quarantined { reason: reason.clone() },
        HistoryEvent::Revived(stamp) => HistoryEventView::Revived {
            from: stamp.from.to_string(),
            to: stamp.to.to_string(),
            from_step: stamp.from_step.clone(),
            to_step: stamp.to_step.clone(),
            from_schema: stamp.from_schema,
            to_schema: stamp.to_schema,
            failure: stamp.failure.clone(),
        },
        HistoryEvent::BeginFailed { reason } => HistoryEventView::BeginFailed { reason: reason.clone() },
        HistoryEvent::SignalsDropped { signals } => HistoryEventView::SignalsDropped {
            signals: signals
                .iter()
                .map(|note| SignalNoteView {
                    name: note.name.clone(),
                    seq: note.seq,
                    bytes: note.bytes,
                })
                .collect(),
        },
        HistoryEvent::Terminated { reason, abandoned_step } => HistoryEventView::Terminated {
            reason: reason.clone(),
            abandoned_step: abandoned_step.clone(),
        },
        _ => HistoryEventView::Other,
    };
    HistoryEntryView {
        seq: item.seq,
        at_ms: Some(entry.at_ms),
        event,
    }
}

fn woken_by_view(woken_by: &WokenBy) -> WokenByView {
    match woken_by {
        WokenBy::Start => WokenByView::Start,
        WokenBy::Previous => WokenByView::Previous,
        WokenBy::Timer => WokenByView::Timer,
        WokenBy::Signal { name, seq, bytes } => WokenByView::Signal {
            name: name.clone(),
            seq: *seq,
            bytes: *bytes,
        },
        WokenBy::Timeout { name } => WokenByView::Timeout { name: name.clone() },
        WokenBy::Retry => WokenByView::Retry,
        WokenBy::Revival => WokenByView::Revival,
        _ => WokenByView::Other,
    }
}

fn outcome_view(outcome: &AttemptOutcome) -> AttemptOutcomeView {
    match outcome {
        AttemptOutcome::Next { step } => AttemptOutcomeView::Next { step: step.clone() },
        AttemptOutcome::Sleep { until_ms, step } => AttemptOutcomeView::Sleep {
            until_ms: *until_ms,
            step: step.clone(),
        },
        AttemptOutcome::AwaitSignal {
            name,
            timeout_at_ms,
            step,
        } => AttemptOutcomeView::AwaitSignal {
            signal: name.clone(),
            timeout_at_ms: *timeout_at_ms,
            step: step.clone(),
        },
        AttemptOutcome::Completed { output_bytes } => AttemptOutcomeView::Completed {
            output_bytes: *output_bytes,
        },
        AttemptOutcome::Failed { reason } => AttemptOutcomeView::Failed { reason: reason.clone() },
        AttemptOutcome::Retrying { error, at_ms } => AttemptOutcomeView::Retrying {
            error: error.clone(),
            at_ms: *at_ms,
        },
        AttemptOutcome::Quarantined { reason } => AttemptOutcomeView::Quarantined { reason: reason.clone() },
        _ => AttemptOutcomeView::Other,
    }
}
