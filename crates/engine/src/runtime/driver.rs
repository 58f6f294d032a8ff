//! The driver: runs the steps of one instance, one at a time, each ending in one commit.
//!
//! A driver owns an instance while its slot's `running` flag is set. It loops: decide what the
//! committed record allows now (a `Plan`), run that step of the pinned version, turn the step's
//! result into the next record and its writes (`transition`, a pure function), commit them, and
//! only then update memory.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tracing::Instrument;

use super::moves::AutoUpgrade;
use super::table::EndRequest;
use super::transition::{self, Attempt, CommitEntries};
use super::Runtime;
use crate::instance::Outcome;
use crate::observe::{deadline_after, Event};
use crate::store::Op;
use strata_core::history::{HistoryEntry, HistoryEvent};
use strata_core::instance::{IndexedAs, InstanceId, InstanceRecord, InstanceStatus, Phase};
use strata_core::measure::{MeasureRecorder, MeasureTotals};
use strata_core::workflow::{StepCtx, StepFailure, UpgradePolicy, VersionCode, WakeReason};

/// What an instance's committed record allows right now.
enum Plan {
    /// Nothing; look again at `due_ms` if given.
    Idle(Option<u64>),
    /// Run the cursor step.
    Run(Job),
    /// Commit the end (cancellation or termination) an operator asked for.
    End(InstanceRecord, EndRequest),
}

/// One step attempt to run.
struct Job {
    record: InstanceRecord,
    wake: WakeReason,
    /// The inbox signal this attempt consumes.
    consumed_signal: Option<u64>,
}

fn plan(slot: &super::table::Slot, now: u64) -> Plan {
    if let Some(request) = &slot.end_requested {
        return Plan::End(slot.record.clone(), request.clone());
    }
    if slot.parked {
        return Plan::Idle(None);
    }
    let run = |wake, consumed_signal| {
        Plan::Run(Job {
            record: slot.record.clone(),
            wake,
            consumed_signal,
        })
    };
    match &slot.record.phase {
        Phase::Ready { wake } => run(transition::wake_from_persisted(wake), None),
        Phase::Accepted { .. } => run(WakeReason::Started, None),
        Phase::Sleeping { until_ms } if now >= *until_ms => run(WakeReason::TimerFired, None),
        Phase::RetryBackoff { until_ms, wake } if now >= *until_ms => run(transition::wake_from_persisted(wake), None),
        Phase::WaitingSignal { name, timeout_at_ms } => {
            if let Some(signal) = slot.inbox.iter().find(|signal| signal.name == *name) {
                let wake = WakeReason::Signal {
                    name: name.clone(),
                    payload: signal.payload.clone(),
                };
                run(wake, Some(signal.seq))
            } else if timeout_at_ms.is_some_and(|at| now >= at) {
                run(WakeReason::SignalTimedOut { name: name.clone() }, None)
            } else {
                Plan::Idle(*timeout_at_ms)
            }
        }
        phase => Plan::Idle(phase.timer_due_ms()),
    }
}

/// What a driver's turn achieved.
enum Progress {
    /// A transition was committed; look again.
    Committed,
    /// Nothing to do now.
    Idle,
    /// The commit failed; the instance stays at its last committed step until a retry timer.
    Stalled,
}

impl Runtime {
    /// Runs steps of `id` until it has nothing to do now, then releases it.
    pub(super) async fn drive(self: Arc<Self>, id: InstanceId) {
        let permit = self.permits.clone().acquire_owned().await;
        loop {
            if permit.is_err() || self.is_stopping() {
                // Leave the instance as committed; recovery or the next schedule picks it up.
                self.table.with(id, |slot| {
                    slot.running = false;
                    slot.rerun = false;
                });
                break;
            }
            let now = self.now();
            let Some(next) = self.table.with(id, |slot| plan(slot, now)) else {
                break;
            };
            let progressed = match next {
                Plan::Run(job) => self.run_job(id, job).await,
                Plan::End(record, request) => self.commit_end(record, request, None).await,
                Plan::Idle(due) => {
                    if let Some(due) = due {
                        self.arm_timer(due, id);
                    }
                    Progress::Idle
                }
            };
            match progressed {
                Progress::Committed => continue,
                Progress::Idle => {}
                Progress::Stalled => {
                    // The commit failed; a timer retries after `commit_retry_delay`. Looking again
                    // now would retry at once, in a loop, against a failing store.
                    self.table.with(id, |slot| {
                        slot.running = false;
                        slot.rerun = false;
                    });
                    break;
                }
            }
            let again = self.table.with(id, |slot| {
                if slot.rerun {
                    slot.rerun = false;
                    true
                } else {
                    slot.running = false;
                    false
                }
            });
            if again != Some(true) {
                break;
            }
        }
        drop(permit);
    }

    async fn run_job(self: &Arc<Self>, id: InstanceId, mut job: Job) -> Progress {
        let Some((code, metrics)) = self.registry.code_and_metrics(&job.record.key) else {
            self.park(id);
            return Progress::Idle;
        };
        if let Err(failure) = super::initialize(&mut job.record, code.as_ref()) {
            // A start accepted elsewhere whose input builds no state here: it fails, for good.
            tracing::warn!(instance = %id, %failure, "an accepted start could not begin");
            let replaces = job.record.indexed_as();
            let mut failed = job.record;
            failed.updated_at_ms = self.now();
            let reason = format!("it could not begin on {}: {failure}", failed.key);
            let entry = HistoryEntry {
                at_ms: failed.updated_at_ms,
                event: HistoryEvent::BeginFailed { reason: reason.clone() },
            };
            failed.phase = Phase::Failed { reason };
            return self
                .commit_transition(replaces, failed, None, CommitEntries::only(entry))
                .await;
        }
        if code.upgrade_policy() == UpgradePolicy::AutoUpgrade {
            match self.auto_upgrade(&job.record) {
                AutoUpgrade::Stay => job.record.pinned_reason = None,
                AutoUpgrade::Move(moved) => return self.commit_auto_upgrade(job.record.key.clone(), *moved).await,
                AutoUpgrade::Pinned(reason) => {
                    if job.record.pinned_reason.as_ref() != Some(&reason) {
                        tracing::info!(instance = %id, %reason, "AutoUpgrade instance stays on its version");
                        self.events.emit(Event::InstancePinned {
                            id,
                            key: job.record.key.clone(),
                            reason: reason.clone(),
                        });
                        job.record.pinned_reason = Some(reason);
                    }
                }
            }
        }
        // Lazy migration: the step sees the state its version expects, and its commit stores it.
        let schema_before = job.record.state.schema;
        let migrated = self.migrate_for_step(&mut job.record, code.as_ref());
        let mut facts = transition::AttemptFacts {
            began_ms: self.now(),
            worker: self.store.cluster().worker_id(),
            migrated_from_schema: (job.record.state.schema != schema_before).then_some(schema_before),
            recorded: MeasureTotals::new(),
        };
        let began = std::time::Instant::now();
        let (attempt, recorded) = match migrated {
            Ok(()) => {
                tokio::select! {
                    biased;
                    attempt = self.attempt(code.as_ref(), &job) => attempt,
                    () = self.termination_of(id) => return self.abandon_for_termination(id, &job.record.step).await,
                }
            }
            Err(reason) => (Attempt::Damaged(reason), MeasureTotals::new()),
        };
        if self.options.metrics {
            let failed = !matches!(attempt, Attempt::Succeeded(_));
            metrics.record_attempt(self.now(), began.elapsed(), failed);
        }
        match &attempt {
            Attempt::Failed { message, .. } => {
                tracing::warn!(instance = %id, step = %job.record.step, attempt = job.record.attempt, error = %message, "step attempt failed");
            }
            Attempt::Damaged(reason) => tracing::error!(instance = %id, %reason, "quarantining instance"),
            Attempt::Succeeded(_) => {}
        }
        facts.recorded = recorded;
        // The record the attempt began from is the one committed last: the next replaces it.
        let replaces = job.record.indexed_as();
        let Job {
            record,
            wake,
            consumed_signal,
        } = job;
        let next = transition::after_attempt(record, wake, consumed_signal, attempt, code.as_ref(), self.now(), facts);
        self.commit_transition(replaces, next.record, next.consumed_signal, next.entries)
            .await
    }

    /// Resolves once an operator has asked to terminate `id` (at once, if asked already).
    async fn termination_of(&self, id: InstanceId) {
        let notified = self.terminations.notified();
        tokio::pin!(notified);
        loop {
            // Registered before the flag is read: a request made after the read wakes it.
            notified.as_mut().enable();
            let asked = self.table.with(id, |slot| {
                matches!(slot.end_requested, Some(EndRequest::Terminate { .. }))
            });
            if asked == Some(true) {
                return;
            }
            notified.as_mut().await;
            notified.set(self.terminations.notified());
        }
    }

    /// Commits the termination of `id`, whose attempt of `step` was running and is abandoned:
    /// from its last committed record, so that nothing of that attempt is kept.
    async fn abandon_for_termination(self: &Arc<Self>, id: InstanceId, step: &str) -> Progress {
        let Some((record, Some(request))) = self
            .table
            .with(id, |slot| (slot.record.clone(), slot.end_requested.clone()))
        else {
            return Progress::Idle;
        };
        tracing::info!(instance = %id, step, "terminated mid-step: the running attempt is abandoned");
        self.commit_end(record, request, Some(step.to_string())).await
    }

    /// Commits the end an operator asked for, from `record` (the last committed), and says a
    /// termination once it is committed.
    async fn commit_end(
        self: &Arc<Self>,
        record: InstanceRecord,
        request: EndRequest,
        abandoned_step: Option<String>,
    ) -> Progress {
        let (id, key) = (record.id, record.key.clone());
        let terminated = match &request {
            EndRequest::Terminate { reason } => Some(reason.to_string()),
            EndRequest::Cancel => None,
        };
        let replaces = record.indexed_as();
        let (record, entry) = transition::ended(record, self.now(), request, abandoned_step.clone());
        let progress = self
            .commit_transition(replaces, record, None, CommitEntries::only(entry))
            .await;
        if let (Progress::Committed, Some(reason)) = (&progress, terminated) {
            self.events.emit(Event::InstanceTerminated {
                id,
                key,
                reason,
                abandoned_step,
            });
        }
        progress
    }

    /// Migrates the record's state to the schema `code` expects, if it is another.
    fn migrate_for_step(&self, record: &mut InstanceRecord, code: &dyn VersionCode) -> Result<(), String> {
        let expected = code.state_schema();
        if record.state.schema == expected {
            return Ok(());
        }
        let chains = self.migrations.read();
        match chains.migrate(&record.key.workflow, &record.state.bytes, record.state.schema, expected) {
            Ok(bytes) => {
                record.state.bytes = bytes;
                record.state.schema = expected;
                Ok(())
            }
            Err(failure) => Err(format!(
                "its state cannot be migrated to the schema {} expects: {failure}",
                record.key
            )),
        }
    }

    /// After a commit that failed: the instance runs again from its last committed step once the
    /// retry delay has passed — longer with each failure in a row while the store is unavailable
    /// (unreachable, read-only), up to `UNAVAILABLE_RETRY_CAP`, so that an outage is not met
    /// with every step re-run at the retry delay, and the engine is back within that cap of the
    /// store. Said once per episode by the store, not per instance.
    fn retry_after_failed_commit(&self, id: InstanceId, unavailable: bool) -> Progress {
        let failures = self
            .table
            .with(id, |slot| {
                slot.commit_failures = slot.commit_failures.saturating_add(1);
                slot.commit_failures
            })
            .unwrap_or(1);
        let delay = if unavailable {
            unavailable_retry_delay(self.options.commit_retry_delay, failures)
        } else {
            self.options.commit_retry_delay
        };
        self.timers.arm(deadline_after(self.now(), delay), id);
        Progress::Stalled
    }

    /// Commits an `AutoUpgrade` move made by the instance's own driver, then lets it go on.
    async fn commit_auto_upgrade(
        self: &Arc<Self>,
        from: strata_core::instance::VersionKey,
        moved: InstanceRecord,
    ) -> Progress {
        let id = moved.id;
        let mut pair = [(from, moved)];
        let drained = match self.commit_moves(&mut pair).await {
            Ok(drained) => drained,
            Err(error) => {
                tracing::warn!(instance = %id, %error, "AutoUpgrade move did not commit; the instance stays where it was");
                let unavailable = matches!(&error, crate::error::EngineError::Store(error) if error.is_unavailable());
                return self.retry_after_failed_commit(id, unavailable);
            }
        };
        let [(_, moved)] = pair;
        self.table.with(id, |slot| slot.record = moved);
        self.announce(drained);
        Progress::Committed
    }

    /// Runs one attempt of the job's step; returns its result and the measures it recorded.
    async fn attempt(&self, code: &dyn VersionCode, job: &Job) -> (Attempt, MeasureTotals) {
        let record = &job.record;
        let mut ctx = StepCtx::new(
            record.id,
            code.workflow().clone(),
            code.version().clone(),
            Arc::from(record.step.as_str()),
        )
        .with_attempt(record.attempt, record.visits)
        .with_wake(job.wake.clone())
        .at(std::time::UNIX_EPOCH + Duration::from_millis(self.now()));
        if record.is_shadow() {
            ctx = ctx.as_shadow();
        }
        // Only a version that declares measures pays for a recorder.
        let recorder = (!code.measures().is_empty()).then(|| Arc::new(MeasureRecorder::new(code.measures().clone())));
        if let Some(recorder) = &recorder {
            ctx = ctx.with_recorder(recorder.clone());
        }
        let attempt = self.run_attempt(code, record, ctx).await;
        let recorded = recorder.map(|recorder| recorder.take()).unwrap_or_default();
        (attempt, recorded)
    }

    async fn run_attempt(&self, code: &dyn VersionCode, record: &InstanceRecord, ctx: StepCtx) -> Attempt {
        let policy = code.retry_policy(&record.step);
        let span = tracing::info_span!(
            "step",
            workflow = %record.key.workflow,
            version = %record.key.version,
            instance = %record.id,
            step = %record.step,
            attempt = record.attempt,
        );
        let guarded = AssertUnwindSafe(code.run_step(ctx, &record.state.bytes)).catch_unwind();
        let finished = match policy.attempt_timeout {
            Some(limit) => match tokio::time::timeout(limit, guarded).instrument(span).await {
                Ok(finished) => finished,
                Err(_) => {
                    return Attempt::Failed {
                        message: format!("timed out after {limit:?}"),
                        retryable: true,
                    };
                }
            },
            None => guarded.instrument(span).await,
        };
        match finished {
            Err(panic) => Attempt::Failed {
                message: format!("step panicked: {}", strata_core::workflow::panic_message(&panic)),
                retryable: true,
            },
            Ok(Ok(outcome)) => Attempt::Succeeded(outcome),
            Ok(Err(StepFailure::Step(error))) => Attempt::Failed {
                message: error.message().to_string(),
                retryable: error.is_retryable(),
            },
            Ok(Err(StepFailure::Unencodable(reason))) => Attempt::Failed {
                message: reason,
                retryable: false,
            },
            Ok(Err(StepFailure::StateUndecodable(reason))) => Attempt::Damaged(format!(
                "the stored state does not decode as {}'s state: {reason}",
                record.key
            )),
            Ok(Err(StepFailure::UnknownStep)) => Attempt::Damaged(format!(
                "the cursor names step '{}', which {} does not define",
                record.step, record.key
            )),
        }
    }

    /// Commits `record`, which consumes `consumed_signal` and replaces the record indexed as
    /// `replaces` (the last committed), with `entries` in its history; on success makes it the
    /// instance's state in memory, or, when it finishes the instance, tells its waiters.
    async fn commit_transition(
        self: &Arc<Self>,
        replaces: Option<IndexedAs>,
        mut record: InstanceRecord,
        consumed_signal: Option<u64>,
        entries: CommitEntries,
    ) -> Progress {
        let mut dropped_signals = None;
        let inbox = if record.phase.is_terminal() {
            let (seqs, dropped) = self
                .table
                .with(record.id, |slot| transition::inbox_at_end(&slot.inbox, consumed_signal))
                .unwrap_or_default();
            if !dropped.is_empty() {
                dropped_signals = Some(HistoryEntry {
                    at_ms: record.updated_at_ms,
                    event: HistoryEvent::SignalsDropped { signals: dropped },
                });
            }
            seqs
        } else {
            Vec::new()
        };
        let id = record.id;
        let terminal = record.phase.is_terminal();
        let due = record.phase.timer_due_ms();
        let quarantined = match &record.phase {
            Phase::Quarantined { reason } => Some(reason.clone()),
            _ => None,
        };
        let committed = match transition::commit_writes(
            &mut record,
            replaces,
            consumed_signal,
            &inbox,
            entries.iter().chain(dropped_signals.as_ref()),
            self.options.history_limit,
        ) {
            Ok(ops) => self.write_then_announce(ops).await,
            Err(error) => Err(error.into()),
        };
        if let Err(crate::store::StoreError::ClaimLost { .. }) = committed {
            // Another worker holds the instance now and runs the step again there.
            self.let_go(id);
            return Progress::Idle;
        }
        let drained = match committed {
            Ok(drained) => drained,
            Err(error) if error.is_unavailable() => {
                tracing::debug!(instance = %id, %error, "step commit failed: the store is unavailable");
                return self.retry_after_failed_commit(id, true);
            }
            Err(error) => {
                tracing::warn!(instance = %id, %error, "step commit failed; the instance stays at its last committed step");
                return self.retry_after_failed_commit(id, false);
            }
        };
        if terminal {
            let key = record.key.clone();
            let status = InstanceStatus::of_phase(&record.phase);
            // The write took the store's counters in, so whoever sees the instance gone, or is
            // woken below, sees them updated.
            if self.options.metrics {
                if let Some(metrics) = self.registry.metrics(&key) {
                    let took = Duration::from_millis(self.now().saturating_sub(record.created_at_ms));
                    metrics.record_finish(self.now(), status, took, &record.measures);
                }
            }
            self.rollouts_notice_finish(&key);
            if record.shadow_of.is_some() || record.shadowed_by.is_some() {
                let runtime = self.clone();
                let finished = record.clone();
                self.spawn_tracked(async move { runtime.compare_with_twin(finished).await });
            }
            let slot = self.table.remove(id);
            let (waiters, late_inbox) = slot.map(|slot| (slot.waiters, slot.inbox)).unwrap_or_default();
            if let Some(outcome) = Outcome::from_phase(&record.phase) {
                for waiter in waiters {
                    let _ = waiter.send(outcome.clone());
                }
            }
            let deleted: Vec<u64> = consumed_signal.into_iter().chain(inbox.iter().copied()).collect();
            self.delete_late_signals(id, late_inbox, &deleted).await;
            self.events.emit(Event::InstanceFinished { id, key, status });
            self.announce(drained);
            return Progress::Committed;
        }
        self.table.with(id, |slot| {
            slot.record = record;
            slot.commit_failures = 0;
            if let Some(seq) = consumed_signal {
                slot.inbox.retain(|signal| signal.seq != seq);
                slot.consumed.push(seq);
            }
        });
        if let Some(due) = due {
            self.arm_timer(due, id);
        }
        if let Some(reason) = quarantined {
            self.events.emit(Event::InstanceQuarantined { id, reason });
        }
        self.announce(drained);
        Progress::Committed
    }
}

impl Runtime {
    /// Compares a finished real instance with its shadow, or a shadow with its real twin, once
    /// both have finished: whichever of the two finishes second finds the other finished (each
    /// looks after its own finish is committed) and stores the pair; both may, and the second
    /// write replaces the first with the same comparison.
    async fn compare_with_twin(&self, finished: InstanceRecord) {
        let (real_id, shadow_id) = match (finished.shadow_of, finished.shadowed_by) {
            (Some(real), _) => (real, finished.id),
            (None, Some(shadow)) => (finished.id, shadow),
            (None, None) => return,
        };
        let twin_id = if finished.id == real_id { shadow_id } else { real_id };
        let twin = match self.store.load_instance(twin_id) {
            Ok(Some(twin)) if twin.phase.is_terminal() => twin,
            // Not finished yet: it compares when it finishes. Gone: removed by retention.
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(instance = %finished.id, twin = %twin_id, %error, "could not read a shadow pair's twin; the pair is not compared");
                return;
            }
        };
        let (real, shadow) = if finished.id == real_id {
            (finished, twin)
        } else {
            (twin, finished)
        };
        let workflow = real.key.workflow.clone();
        let Some(rollout) = self.shadowing_rollout(&workflow, &real.key.version, &shadow.key.version) else {
            tracing::warn!(instance = %real.id, shadow = %shadow.id, "no rollout of these versions is known here; the pair is not compared");
            return;
        };
        let code = self.registry.code(&shadow.key);
        let comparator = code.as_ref().and_then(|code| code.output_comparator());
        let pair = strata_core::shadow::compare(&rollout, &real, &shadow, comparator, self.now());
        if !pair.matched {
            tracing::info!(rollout = %rollout, real = %real.id, shadow = %shadow.id, diff = pair.diff.as_deref().unwrap_or_default(), "a shadow differs from its real run");
        }
        if let Err(error) = self.write(vec![Op::PutShadowPair(Box::new(pair))]).await {
            tracing::warn!(rollout = %rollout, real = %real.id, %error, "could not store a shadow pair");
            return;
        }
        self.rollouts_notice_finish(&shadow.key);
    }

    /// Deletes the signals that reached a finished instance's inbox after its finishing commit
    /// was built (a signal stored while the instance was finishing), so none is left behind in
    /// the store; like every unconsumed signal of a finished instance, they are dropped.
    async fn delete_late_signals(&self, id: InstanceId, inbox: Vec<crate::store::SignalRecord>, deleted: &[u64]) {
        let late: Vec<Op> = inbox
            .into_iter()
            .filter(|signal| !deleted.contains(&signal.seq))
            .map(|signal| Op::DeleteSignal {
                instance: id,
                seq: signal.seq,
            })
            .collect();
        if late.is_empty() {
            return;
        }
        if let Err(error) = self.write(late).await {
            // Harmless: the next open deletes signals of instances that are not live.
            tracing::warn!(instance = %id, %error, "could not delete signals that arrived while the instance finished");
        }
    }
}

/// The longest wait between attempts of a step whose commits fail because the store is
/// unavailable: how soon after the store is back the instance goes on.
const UNAVAILABLE_RETRY_CAP: Duration = Duration::from_secs(1);

/// The wait before the next attempt after `failures` commits in a row failed on an unavailable
/// store: the retry delay, doubled with each failure, up to `UNAVAILABLE_RETRY_CAP` (or the
/// retry delay, if longer) — a step's own backoff (`RetryPolicy::backoff_before`) with those
/// bounds.
fn unavailable_retry_delay(retry_delay: Duration, failures: u32) -> Duration {
    strata_core::workflow::RetryPolicy::exponential(u32::MAX, retry_delay)
        .with_max_backoff(UNAVAILABLE_RETRY_CAP.max(retry_delay))
        .backoff_before(failures.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_failing_on_an_unavailable_store_wait_longer_each_time_up_to_a_second() {
        let delays: Vec<u128> = (1..=6)
            .map(|failures| unavailable_retry_delay(Duration::from_millis(100), failures).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            unavailable_retry_delay(Duration::from_secs(3), 9),
            Duration::from_secs(3),
            "a retry delay longer than the cap is kept"
        );
        assert_eq!(
            unavailable_retry_delay(Duration::from_millis(500), u32::MAX),
            Duration::from_secs(1)
        );
    }
}
