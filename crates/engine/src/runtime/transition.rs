//! The step transition: what one attempt's result makes of an instance's record, and the writes
//! that commit it. Pure — no clock, no store, no runtime memory: the driver runs the step, asks
//! this module for the next record and its writes, commits them, and only then updates memory.
//!
//! A succeeded attempt moves the cursor as the step said (`Next`), a failed one is retried by the
//! step's policy or fails the instance, and a record this version cannot run is quarantined with
//! its signal kept. A finishing write deletes the instance's unconsumed signals and counts the
//! finish in the version's counters, in the same commit as the record (invariant 1). Every
//! attempt leaves an entry in the instance's history, written in that same commit.

use std::time::Duration;

use strata_core::codec::EncodeError;
use strata_core::history::{
    Appended, AttemptOutcome, HistoryEntry, HistoryEvent, SignalNote, StepEntry, WokenBy, HISTORY_CHUNK,
};
use strata_core::instance::{IndexedAs, InstanceRecord, InstanceStatus, PersistedWake, Phase, RECORD_FORMAT};
use strata_core::measure::{add_totals, MeasureTotals};
use strata_core::time::deadline_after;
use strata_core::version::CounterDelta;
use strata_core::workflow::{Next, StepOutcome, VersionCode, WakeReason};
use strata_store::{Op, SignalRecord};

use super::table::EndRequest;
use super::table::RESERVED_SIGNAL_PREFIX;

/// The result of one attempt, before it becomes a record.
pub(super) enum Attempt {
    /// The step returned normally, its state and output encoded.
    Succeeded(StepOutcome),
    /// Failed; retried if `retryable` and the policy allows.
    Failed {
        /// What went wrong.
        message: String,
        /// Whether the step's retry policy applies.
        retryable: bool,
    },
    /// The record cannot be run by this version (its state or cursor): it is quarantined.
    Damaged(String),
}

/// What the driver knows of an attempt besides its result, for the instance's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AttemptFacts<'a> {
    /// When the attempt began (ms since the Unix epoch).
    pub began_ms: u64,
    /// The worker that ran it.
    pub worker: &'a str,
    /// The state's schema before the driver migrated it for the step, if it did.
    pub migrated_from_schema: Option<u32>,
    /// The measures the attempt recorded: kept in the record if its result is (it succeeded,
    /// or failed for good), dropped if it is retried or its record quarantined.
    pub recorded: MeasureTotals,
}

/// What one commit adds to an instance's history: its entry, after the claim of the worker that
/// wrote it when another worker wrote the entry before. Two fields rather than a list: a step's
/// commit allocates nothing to carry them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CommitEntries {
    /// This worker's claim, when the entry before was another's.
    pub claim: Option<HistoryEntry>,
    /// The change the commit records.
    pub entry: HistoryEntry,
}

impl CommitEntries {
    /// `entry` alone.
    pub(super) fn only(entry: HistoryEntry) -> Self {
        CommitEntries { claim: None, entry }
    }

    /// The entries, in the order they are written.
    pub(super) fn iter(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.claim.iter().chain(std::iter::once(&self.entry))
    }
}

/// The record an attempt leads to, the signal its commit consumes, and its history entries.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StepTransition {
    /// The next record.
    pub record: InstanceRecord,
    /// The inbox signal the commit deletes as consumed (kept when the instance is quarantined,
    /// so that it is there for whoever repairs it).
    pub consumed_signal: Option<u64>,
    /// What the attempt adds to the instance's history.
    pub entries: CommitEntries,
}

/// What attempt `record.attempt` of `record.step` on `code`, woken for `wake` and consuming
/// `consumed_signal`, makes of the record at `now` (ms since the Unix epoch).
pub(super) fn after_attempt(
    mut record: InstanceRecord,
    wake: WakeReason,
    consumed_signal: Option<u64>,
    attempt: Attempt,
    code: &dyn VersionCode,
    now: u64,
    facts: AttemptFacts<'_>,
) -> StepTransition {
    let attempt_number = record.attempt;
    let woken_by = woken_by(&wake, consumed_signal, attempt_number);
    record.updated_at_ms = now;
    let mut consumed_signal = consumed_signal;
    let step = match attempt {
        Attempt::Succeeded(outcome) => {
            record.visits += 1;
            record.attempt = 1;
            record.last_error = None;
            record.state.bytes = outcome.state;
            record.state.schema = code.state_schema();
            apply_next(&mut record, outcome.next, code, now)
        }
        Attempt::Failed { message, retryable } => {
            let policy = code.retry_policy(&record.step);
            if retryable && policy.allows_retry_after(record.attempt) {
                let wait = policy.backoff_before(record.attempt + 1);
                record.attempt += 1;
                record.phase = Phase::RetryBackoff {
                    until_ms: deadline_after(now, wait),
                    wake: persisted_from_wake(wake),
                };
            } else {
                record.phase = Phase::Failed {
                    reason: format!("step '{}' failed on attempt {}: {message}", record.step, record.attempt),
                };
            }
            record.last_error = Some(message);
            record.step.clone()
        }
        Attempt::Damaged(reason) => {
            record.phase = Phase::Quarantined { reason };
            consumed_signal = None;
            record.step.clone()
        }
    };
    let kept = matches!(
        record.phase,
        Phase::Ready { .. }
            | Phase::Sleeping { .. }
            | Phase::WaitingSignal { .. }
            | Phase::Completed { .. }
            | Phase::Failed { .. }
    );
    if kept && !facts.recorded.is_empty() {
        add_totals(&mut record.measures, &facts.recorded);
    }
    let claim = (*record.history.worker != *facts.worker).then(|| {
        record.history.worker = facts.worker.into();
        HistoryEntry {
            at_ms: facts.began_ms,
            event: HistoryEvent::Claimed {
                worker: facts.worker.to_string(),
            },
        }
    });
    let entry = HistoryEntry {
        at_ms: now,
        event: HistoryEvent::Step(StepEntry {
            step,
            attempt: attempt_number,
            took_ms: now.saturating_sub(facts.began_ms),
            woken_by,
            migrated_from_schema: facts.migrated_from_schema,
            outcome: outcome_of(&record),
        }),
    };
    StepTransition {
        record,
        consumed_signal,
        entries: CommitEntries { claim, entry },
    }
}

/// What woke attempt `attempt` of a step: a retry after the first, else its wake.
fn woken_by(wake: &WakeReason, consumed_signal: Option<u64>, attempt: u32) -> WokenBy {
    if attempt > 1 {
        return WokenBy::Retry;
    }
    match wake {
        WakeReason::Started => WokenBy::Start,
        WakeReason::Continued => WokenBy::Previous,
        WakeReason::TimerFired => WokenBy::Timer,
        WakeReason::Signal { name, payload } => WokenBy::Signal {
            name: name.clone(),
            seq: consumed_signal.unwrap_or_default(),
            bytes: payload.len() as u64,
        },
        WakeReason::SignalTimedOut { name } => WokenBy::Timeout { name: name.clone() },
    }
}

/// How an attempt ended, read from the record it led to.
fn outcome_of(record: &InstanceRecord) -> AttemptOutcome {
    let step = || record.step.clone();
    match &record.phase {
        Phase::Ready { .. } => AttemptOutcome::Next { step: step() },
        Phase::Sleeping { until_ms } => AttemptOutcome::Sleep {
            until_ms: *until_ms,
            step: step(),
        },
        Phase::WaitingSignal { name, timeout_at_ms } => AttemptOutcome::AwaitSignal {
            name: name.clone(),
            timeout_at_ms: *timeout_at_ms,
            step: step(),
        },
        Phase::RetryBackoff { until_ms, .. } => AttemptOutcome::Retrying {
            error: record.last_error.clone().unwrap_or_default(),
            at_ms: *until_ms,
        },
        Phase::Completed { output } => AttemptOutcome::Completed {
            output_bytes: output.len() as u64,
        },
        Phase::Failed { reason } => AttemptOutcome::Failed { reason: reason.clone() },
        Phase::Quarantined { reason } => AttemptOutcome::Quarantined { reason: reason.clone() },
        // An attempt leads to none of these; said as what they are.
        Phase::Cancelled => AttemptOutcome::Failed {
            reason: "cancelled".to_string(),
        },
        Phase::Accepted { .. } => AttemptOutcome::Next { step: step() },
    }
}

/// What a finishing commit does with the signals in an instance's inbox: deletes every one (the
/// numbers), and notes in the history those a step never consumed (the engine's own control
/// signals and the one this commit consumes are not dropped).
pub(super) fn inbox_at_end(inbox: &[SignalRecord], consumed_signal: Option<u64>) -> (Vec<u64>, Vec<SignalNote>) {
    let seqs = inbox.iter().map(|signal| signal.seq).collect();
    let dropped = inbox
        .iter()
        .filter(|signal| Some(signal.seq) != consumed_signal && !signal.name.starts_with(RESERVED_SIGNAL_PREFIX))
        .map(|signal| SignalNote {
            name: signal.name.clone(),
            seq: signal.seq,
            bytes: signal.payload.len() as u64,
        })
        .collect();
    (seqs, dropped)
}

/// `record` ended as an operator asked at `now` (cancelled; terminated is cancelled at once),
/// with the history entry that says so; `abandoned_step` names the step whose running attempt a
/// termination abandoned.
pub(super) fn ended(
    mut record: InstanceRecord,
    now: u64,
    request: EndRequest,
    abandoned_step: Option<String>,
) -> (InstanceRecord, HistoryEntry) {
    record.phase = Phase::Cancelled;
    record.updated_at_ms = now;
    let event = match request {
        EndRequest::Cancel => HistoryEvent::Cancelled,
        EndRequest::Terminate { reason } => HistoryEvent::Terminated {
            reason: reason.into(),
            abandoned_step,
        },
    };
    (record, HistoryEntry { at_ms: now, event })
}

/// Adds `entry` to `record`'s history, kept in the record until it fills a chunk; adds to `ops`
/// the write of a chunk it fills and the drops of the chunks the bound of `limit` entries
/// pushes out. Call before the record is encoded: the record carries the newest entries.
pub(super) fn append_history(
    record: &mut InstanceRecord,
    entry: &HistoryEntry,
    limit: u32,
    ops: &mut Vec<Op>,
) -> Result<(), EncodeError> {
    let Appended { chunk, dropped } = record.history.append(entry, limit)?;
    let instance = record.id;
    if let Some((first, entries)) = chunk {
        ops.push(Op::PutHistoryChunk {
            instance,
            first,
            entries,
        });
    }
    ops.extend(
        dropped
            .step_by(HISTORY_CHUNK as usize)
            .map(|first| Op::DropHistoryChunk { instance, first }),
    );
    Ok(())
}

/// The writes of one commit of `record`, in the current record format: the consumed signal
/// deleted; when the record finishes the instance, every other signal of `inbox` deleted too and
/// the finish counted; `entries` added to its history (bounded by `history_limit`); then the
/// record itself, replacing the live record indexed as `replaces`.
pub(super) fn commit_writes<'a>(
    record: &mut InstanceRecord,
    replaces: Option<IndexedAs>,
    consumed_signal: Option<u64>,
    inbox: &[u64],
    entries: impl IntoIterator<Item = &'a HistoryEntry>,
    history_limit: u32,
) -> Result<Vec<Op>, EncodeError> {
    // A record read in an older format is rewritten in the current one by its next commit.
    record.format = RECORD_FORMAT;
    let mut ops = Vec::with_capacity(3);
    let instance = record.id;
    for entry in entries {
        append_history(record, entry, history_limit, &mut ops)?;
    }
    if let Some(seq) = consumed_signal {
        ops.push(Op::DeleteSignal { instance, seq });
    }
    if record.phase.is_terminal() {
        let leftovers = inbox.iter().filter(|seq| Some(**seq) != consumed_signal);
        ops.extend(leftovers.map(|&seq| Op::DeleteSignal { instance, seq }));
        let status = InstanceStatus::of_phase(&record.phase);
        // What its steps recorded counts for the version it finished on, once: with the finish.
        // A shadow instance counts apart from the version's real instances.
        let delta = if record.is_shadow() {
            CounterDelta::shadow_finish(status, record.measures.clone())
        } else {
            CounterDelta {
                measures: record.measures.clone(),
                ..CounterDelta::finish(status)
            }
        };
        ops.push(Op::AdjustCounters {
            key: record.key.clone(),
            delta,
        });
    }
    let mut encoded = record.encode()?;
    encoded.replaces = replaces;
    ops.push(Op::PutInstance(encoded));
    Ok(ops)
}

/// The wake a persisted phase resumes with.
pub(super) fn wake_from_persisted(wake: &PersistedWake) -> WakeReason {
    match wake {
        PersistedWake::Started => WakeReason::Started,
        PersistedWake::Continued => WakeReason::Continued,
        PersistedWake::TimerFired => WakeReason::TimerFired,
        PersistedWake::Signal { name, payload } => WakeReason::Signal {
            name: name.clone(),
            payload: payload.clone(),
        },
        PersistedWake::SignalTimedOut { name } => WakeReason::SignalTimedOut { name: name.clone() },
    }
}

fn persisted_from_wake(wake: WakeReason) -> PersistedWake {
    match wake {
        WakeReason::Started => PersistedWake::Started,
        WakeReason::Continued => PersistedWake::Continued,
        WakeReason::TimerFired => PersistedWake::TimerFired,
        WakeReason::Signal { name, payload } => PersistedWake::Signal { name, payload },
        WakeReason::SignalTimedOut { name } => PersistedWake::SignalTimedOut { name },
    }
}

/// Applies what a step returned to the record: the new cursor and phase. Gives the step that ran:
/// the name the cursor held, moved out when the cursor moves on.
fn apply_next(record: &mut InstanceRecord, next: Next<Vec<u8>>, code: &dyn VersionCode, now: u64) -> String {
    let go = |record: &mut InstanceRecord, step: String, phase: Phase| {
        if code.has_step(&step) {
            record.phase = phase;
            std::mem::replace(&mut record.step, step)
        } else {
            record.phase = Phase::Failed {
                reason: format!(
                    "step '{}' asked for step '{step}', which {} does not define",
                    record.step, record.key
                ),
            };
            record.step.clone()
        }
    };
    let after = |duration: Duration| deadline_after(now, duration);
    match next {
        Next::Goto(step) => go(
            record,
            step,
            Phase::Ready {
                wake: PersistedWake::Continued,
            },
        ),
        Next::Sleep { duration, then } => go(
            record,
            then,
            Phase::Sleeping {
                until_ms: after(duration),
            },
        ),
        Next::WaitSignal { name, then, timeout } => go(
            record,
            then,
            Phase::WaitingSignal {
                name,
                timeout_at_ms: timeout.map(after),
            },
        ),
        Next::Complete(output) => {
            record.phase = Phase::Completed { output };
            record.step.clone()
        }
        Next::Fail(reason) => {
            record.phase = Phase::Failed { reason };
            record.step.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strata_core::instance::{InstanceId, StateEnvelope, VersionKey};
    use strata_core::workflow::{RetryPolicy, StepCtx, StepError, StepResult, WorkflowVersion};

    use super::*;

    const NOW: u64 = 1_000_000;

    async fn noop(_: StepCtx, state: &mut u32) -> StepResult<u32> {
        Ok(Next::complete(*state))
    }

    /// Version 1.0.0 of "w": steps `a` (3 attempts, 100 ms then doubling) and `b` (no retry).
    fn code() -> Arc<dyn VersionCode> {
        WorkflowVersion::<u32, u32, u32>::new("w", "1.0.0")
            .state_schema(2)
            .init(|input| input)
            .entry("a")
            .step_with_retry("a", noop, RetryPolicy::exponential(3, Duration::from_millis(100)))
            .step_with_retry("b", noop, RetryPolicy::no_retry())
            .into_code()
            .unwrap()
    }

    fn record_at(step: &str, attempt: u32) -> InstanceRecord {
        InstanceRecord {
            format: 1,
            step: step.to_string(),
            attempt,
            visits: 4,
            state: StateEnvelope {
                schema: 1,
                bytes: vec![1],
            },
            last_error: Some("earlier".to_string()),
            updated_at_ms: 6,
            ..InstanceRecord::new(
                InstanceId(7),
                VersionKey::new("w", semver::Version::new(1, 0, 0)),
                Phase::Ready {
                    wake: PersistedWake::Continued,
                },
                5,
            )
        }
    }

    /// Attempt `attempt` of `step` on [`code`] at `NOW`, woken for `wake`, consuming `consumed`.
    fn run(step: &str, attempt: u32, wake: WakeReason, consumed: Option<u64>, result: Attempt) -> StepTransition {
        run_recording(record_at(step, attempt), wake, consumed, result, MeasureTotals::new())
    }

    /// The same attempt from `record`, having recorded `recorded`.
    fn run_recording(
        record: InstanceRecord,
        wake: WakeReason,
        consumed: Option<u64>,
        result: Attempt,
        recorded: MeasureTotals,
    ) -> StepTransition {
        after_attempt(
            record,
            wake,
            consumed,
            result,
            code().as_ref(),
            NOW,
            AttemptFacts {
                began_ms: NOW - 40,
                worker: "local",
                migrated_from_schema: None,
                recorded,
            },
        )
    }

    fn cost(units: i64, count: u64) -> MeasureTotals {
        [(
            "cost".to_string(),
            strata_core::measure::MeasureTotal {
                sum_units: units,
                count,
            },
        )]
        .into()
    }

    /// A step's measures are kept only from the attempt whose result the instance keeps — one
    /// that succeeded or failed for good — and added to what earlier steps recorded; a retried
    /// or quarantined attempt's are dropped. The finish counts them for the version, once.
    #[test]
    fn measures_count_from_the_attempt_whose_result_is_kept_and_reach_the_version_with_the_finish() {
        let mut earlier = record_at("a", 1);
        earlier.measures = cost(100, 1);
        let retried = Attempt::Failed {
            message: "flaky".into(),
            retryable: true,
        };
        let next = run_recording(earlier.clone(), WakeReason::Continued, None, retried, cost(7, 1));
        assert!(matches!(next.record.phase, Phase::RetryBackoff { .. }));
        assert_eq!(
            next.record.measures,
            cost(100, 1),
            "a retried attempt's measures are dropped"
        );
        let damaged = Attempt::Damaged("bad state".into());
        let next = run_recording(earlier.clone(), WakeReason::Continued, None, damaged, cost(7, 1));
        assert_eq!(next.record.measures, cost(100, 1), "a quarantined attempt's too");
        let next = run_recording(
            earlier.clone(),
            WakeReason::Continued,
            None,
            succeeded(Next::goto("b")),
            cost(7, 1),
        );
        assert_eq!(next.record.measures, cost(107, 2));
        let mut live = next.record;
        assert!(counted(&commit_writes(&mut live, None, None, &[], &[], 100).unwrap()).is_empty());
        let last = Attempt::Failed {
            message: "gone".into(),
            retryable: false,
        };
        let mut failed = run_recording(earlier, WakeReason::Continued, None, last, cost(5, 1)).record;
        assert!(matches!(failed.phase, Phase::Failed { .. }));
        assert_eq!(
            failed.measures,
            cost(105, 2),
            "a step that failed for good did its work"
        );
        let mut finish = CounterDelta::finish(InstanceStatus::Failed);
        finish.measures = cost(105, 2);
        assert_eq!(
            counted(&commit_writes(&mut failed, None, None, &[], &[], 100).unwrap()),
            [finish]
        );
    }

    /// The step entry a transition adds to the history (after the claim of worker `local`, which
    /// no entry of the record named before).
    fn step_entry(next: &StepTransition) -> &StepEntry {
        assert_eq!(
            next.entries.claim.as_ref().map(|claim| &claim.event),
            Some(&HistoryEvent::Claimed {
                worker: "local".to_string()
            })
        );
        assert_eq!(&*next.record.history.worker, "local");
        assert_eq!(next.entries.entry.at_ms, NOW);
        match &next.entries.entry.event {
            HistoryEvent::Step(entry) => entry,
            other => panic!("not a step entry: {other:?}"),
        }
    }

    fn succeeded(next: Next<Vec<u8>>) -> Attempt {
        Attempt::Succeeded(StepOutcome { state: vec![9], next })
    }

    fn signal_wake() -> WakeReason {
        WakeReason::Signal {
            name: "go".to_string(),
            payload: vec![3],
        }
    }

    #[test]
    fn a_step_is_preceded_by_a_claim_only_when_another_worker_wrote_the_entry_before() {
        let next_from = |record: InstanceRecord| {
            run_recording(
                record,
                WakeReason::Continued,
                None,
                succeeded(Next::goto("b")),
                MeasureTotals::new(),
            )
        };
        let mut record = record_at("a", 1);
        record.history.worker = "local".into();
        let same_worker = next_from(record.clone());
        assert_eq!(same_worker.entries.claim, None);
        assert_eq!(same_worker.entries.iter().count(), 1);
        record.history.worker = "elsewhere".into();
        let taken_over = next_from(record);
        let written: Vec<&HistoryEvent> = taken_over.entries.iter().map(|entry| &entry.event).collect();
        assert!(
            matches!(written[..], [HistoryEvent::Claimed { worker }, HistoryEvent::Step(StepEntry { step, outcome: AttemptOutcome::Next { step: next }, .. })]
                if worker == "local" && step == "a" && next == "b"),
            "{written:?}"
        );
        assert_eq!(&*taken_over.record.history.worker, "local");
    }

    #[test]
    fn a_succeeded_step_moves_the_cursor_counts_the_visit_and_takes_the_new_state_in_the_version_s_schema() {
        let next = run("a", 2, signal_wake(), Some(11), succeeded(Next::goto("b")));
        let record = next.record.clone();
        assert_eq!((record.step.as_str(), record.attempt, record.visits), ("b", 1, 5));
        assert_eq!(
            record.phase,
            Phase::Ready {
                wake: PersistedWake::Continued
            }
        );
        assert_eq!((record.state.schema, record.state.bytes), (2, vec![9]));
        assert_eq!((record.last_error, record.updated_at_ms), (None, NOW));
        assert_eq!(
            next.consumed_signal,
            Some(11),
            "the signal that woke the step is consumed"
        );
        let entry = step_entry(&next);
        assert_eq!((entry.step.as_str(), entry.attempt, entry.took_ms), ("a", 2, 40));
        assert_eq!(entry.woken_by, WokenBy::Retry, "a second attempt is a retry");
        assert_eq!(entry.outcome, AttemptOutcome::Next { step: "b".to_string() });
        let first = run("a", 1, signal_wake(), Some(11), succeeded(Next::goto("b")));
        assert_eq!(
            step_entry(&first).woken_by,
            WokenBy::Signal {
                name: "go".to_string(),
                seq: 11,
                bytes: 1
            }
        );
    }

    #[test]
    fn sleeps_and_signal_timeouts_are_deadlines_from_now_that_saturate_instead_of_wrapping() {
        let sleep = Next::Sleep {
            duration: Duration::from_secs(3),
            then: "b".to_string(),
        };
        let record = run("a", 1, WakeReason::Continued, None, succeeded(sleep)).record;
        assert_eq!(record.phase, Phase::Sleeping { until_ms: NOW + 3_000 });
        let wait = Next::WaitSignal {
            name: "go".to_string(),
            then: "b".to_string(),
            timeout: Some(Duration::MAX),
        };
        let record = run("a", 1, WakeReason::Continued, None, succeeded(wait)).record;
        assert_eq!(
            record.phase,
            Phase::WaitingSignal {
                name: "go".to_string(),
                timeout_at_ms: Some(u64::MAX)
            }
        );
    }

    #[test]
    fn a_step_that_names_a_step_its_version_lacks_fails_the_instance_and_says_which() {
        let record = run("a", 1, WakeReason::Continued, None, succeeded(Next::goto("c"))).record;
        assert_eq!(record.step, "a", "the cursor stays on the step that asked");
        assert_eq!(
            record.phase,
            Phase::Failed {
                reason: "step 'a' asked for step 'c', which w@1.0.0 does not define".to_string()
            }
        );
    }

    #[test]
    fn a_retryable_failure_backs_off_by_the_step_s_policy_and_keeps_the_wake_until_the_attempts_run_out() {
        let failed = || Attempt::Failed {
            message: "down".to_string(),
            retryable: true,
        };
        let second = run("a", 1, signal_wake(), Some(11), failed());
        assert_eq!(second.record.attempt, 2);
        assert_eq!(
            second.record.phase,
            Phase::RetryBackoff {
                until_ms: NOW + 100,
                wake: PersistedWake::Signal {
                    name: "go".to_string(),
                    payload: vec![3]
                }
            }
        );
        assert_eq!(second.record.last_error.as_deref(), Some("down"));
        assert_eq!(second.record.visits, 4, "a failed attempt is no visit");
        let third = run("a", 2, WakeReason::Continued, None, failed());
        assert_eq!(
            third.record.phase,
            Phase::RetryBackoff {
                until_ms: NOW + 200,
                wake: PersistedWake::Continued
            }
        );
        let last = run("a", 3, WakeReason::Continued, None, failed());
        assert_eq!(
            last.record.phase,
            Phase::Failed {
                reason: "step 'a' failed on attempt 3: down".to_string()
            }
        );
        assert_eq!(
            step_entry(&second).outcome,
            AttemptOutcome::Retrying {
                error: "down".to_string(),
                at_ms: NOW + 100
            }
        );
        assert_eq!(
            step_entry(&last).outcome,
            AttemptOutcome::Failed {
                reason: "step 'a' failed on attempt 3: down".to_string()
            }
        );
    }

    #[test]
    fn a_permanent_failure_or_a_step_without_retries_fails_at_the_first_attempt() {
        let permanent = Attempt::Failed {
            message: StepError::permanent("no").message().to_string(),
            retryable: false,
        };
        let record = run("a", 1, WakeReason::Continued, None, permanent).record;
        assert_eq!(
            record.phase,
            Phase::Failed {
                reason: "step 'a' failed on attempt 1: no".to_string()
            }
        );
        let retryable = Attempt::Failed {
            message: "down".to_string(),
            retryable: true,
        };
        let record = run("b", 1, WakeReason::Continued, None, retryable).record;
        assert_eq!(
            record.phase,
            Phase::Failed {
                reason: "step 'b' failed on attempt 1: down".to_string()
            }
        );
    }

    #[test]
    fn a_record_the_version_cannot_run_is_quarantined_with_its_signal_kept() {
        let next = run(
            "a",
            1,
            signal_wake(),
            Some(11),
            Attempt::Damaged("bad state".to_string()),
        );
        assert_eq!(
            next.record.phase,
            Phase::Quarantined {
                reason: "bad state".to_string()
            }
        );
        assert_eq!(next.consumed_signal, None);
        assert_eq!(
            (next.record.step.as_str(), next.record.state.bytes.clone()),
            ("a", vec![1])
        );
        assert_eq!(
            step_entry(&next).outcome,
            AttemptOutcome::Quarantined {
                reason: "bad state".to_string()
            }
        );
    }

    fn deleted(ops: &[Op]) -> Vec<u64> {
        ops.iter()
            .filter_map(|op| match op {
                Op::DeleteSignal { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    fn counted(ops: &[Op]) -> Vec<CounterDelta> {
        ops.iter()
            .filter_map(|op| match op {
                Op::AdjustCounters { delta, .. } => Some(delta.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_commit_between_steps_deletes_only_the_consumed_signal_and_writes_the_record_in_the_current_format() {
        let mut record = record_at("b", 1);
        let ops = commit_writes(&mut record, None, Some(11), &[11, 12], &[], 100).unwrap();
        assert_eq!(deleted(&ops), [11]);
        assert!(counted(&ops).is_empty(), "a live instance changes no counter");
        assert_eq!(record.format, RECORD_FORMAT);
        let Some(Op::PutInstance(encoded)) = ops.last() else {
            panic!("the record is the last write")
        };
        assert_eq!(InstanceRecord::decode(&encoded.bytes).unwrap(), record);
    }

    #[test]
    fn a_finishing_commit_deletes_every_signal_left_and_counts_the_finish_in_the_same_writes() {
        for (phase, finish) in [
            (Phase::Completed { output: vec![] }, InstanceStatus::Completed),
            (
                Phase::Failed {
                    reason: "x".to_string(),
                },
                InstanceStatus::Failed,
            ),
            (Phase::Cancelled, InstanceStatus::Cancelled),
        ] {
            let mut record = record_at("b", 1);
            record.phase = phase;
            let ops = commit_writes(&mut record, None, Some(11), &[11, 12, 13], &[], 100).unwrap();
            assert_eq!(deleted(&ops), [11, 12, 13]);
            assert_eq!(counted(&ops), [CounterDelta::finish(finish)]);
            assert!(matches!(ops.last(), Some(Op::PutInstance(encoded)) if encoded.finished));
        }
    }

    #[test]
    fn a_cancel_finishes_the_record_where_it_stands_and_says_so_in_the_history() {
        let (record, entry) = ended(record_at("b", 2), NOW, EndRequest::Cancel, None);
        assert_eq!(
            (record.phase, record.step.as_str(), record.attempt, record.updated_at_ms),
            (Phase::Cancelled, "b", 2, NOW)
        );
        assert_eq!(
            entry,
            HistoryEntry {
                at_ms: NOW,
                event: HistoryEvent::Cancelled
            }
        );
    }

    #[test]
    fn an_end_deletes_every_pending_signal_and_notes_those_no_step_consumed() {
        let signal = |seq: u64, name: &str| SignalRecord {
            format: 2,
            instance: InstanceId(7),
            seq,
            name: name.to_string(),
            payload: vec![0; seq as usize],
        };
        let inbox = [
            signal(3, "aprove"),
            signal(4, "strata:cancel"),
            signal(5, "go"),
            signal(6, "go"),
        ];
        let (seqs, dropped) = inbox_at_end(&inbox, Some(5));
        assert_eq!(seqs, [3, 4, 5, 6]);
        let noted: Vec<(&str, u64, u64)> = dropped
            .iter()
            .map(|note| (note.name.as_str(), note.seq, note.bytes))
            .collect();
        assert_eq!(
            noted,
            [("aprove", 3, 3), ("go", 6, 6)],
            "neither the control signal nor the consumed one"
        );
    }

    #[test]
    fn a_termination_cancels_the_record_where_it_stands_and_names_the_abandoned_step() {
        let request = EndRequest::Terminate { reason: "stuck".into() };
        let (record, entry) = ended(record_at("b", 2), NOW, request, Some("b".to_string()));
        assert_eq!(
            (record.phase, record.step.as_str(), record.attempt),
            (Phase::Cancelled, "b", 2),
            "the cursor stays at the committed step: a revival resumes there"
        );
        assert_eq!(
            entry.event,
            HistoryEvent::Terminated {
                reason: "stuck".to_string(),
                abandoned_step: Some("b".to_string())
            }
        );
    }

    #[test]
    fn a_commit_keeps_its_history_entry_in_the_record_and_stores_a_chunk_it_fills() {
        let entry = HistoryEntry {
            at_ms: NOW,
            event: HistoryEvent::Cancelled,
        };
        let mut record = record_at("b", 1);
        let ops = commit_writes(&mut record, None, None, &[], std::slice::from_ref(&entry), 100).unwrap();
        assert_eq!(ops.len(), 1, "only the record: {ops:?}");
        let Some(Op::PutInstance(encoded)) = ops.last() else {
            panic!("the record is the last write")
        };
        let stored = InstanceRecord::decode(&encoded.bytes).unwrap();
        assert_eq!(
            stored.history.tail_entries().unwrap(),
            [(0, entry.clone())],
            "the record carries it"
        );

        let chunk = strata_core::history::HISTORY_CHUNK;
        for _ in 1..chunk - 1 {
            commit_writes(&mut record, None, None, &[], std::slice::from_ref(&entry), 100).unwrap();
        }
        let ops = commit_writes(&mut record, None, None, &[], std::slice::from_ref(&entry), 100).unwrap();
        assert!(
            matches!(&ops[0], Op::PutHistoryChunk { instance, first: 0, entries }
                if *instance == record.id
                    && strata_core::history::decode_entries(0, entries).unwrap().len() as u64 == chunk),
            "{ops:?}"
        );
        assert!(record.history.tail.is_empty());
    }
}
