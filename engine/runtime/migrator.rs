//! The background migrator: walks a workflow's live instances in id order, in bounded batches,
//! rewriting each record whose state schema is older (or newer) than its version expects, or
//! whose record format is older than this build's.
//!
//! Each batch claims its instances at their step boundaries, migrates them, and commits their new
//! records together with the job's cursor and counts: one commit. A crash loses at most the batch
//! in flight, whose records are still as they were, so a resumed job never migrates a record
//! twice; the schema number in each envelope decides what still needs work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Runtime;
use crate::error::EngineError;
use crate::instance::{InstanceId, InstanceRecord, Phase, RECORD_FORMAT};
use crate::migrate::{
    JobControl, MigrationFailureReport, MigrationHandle, MigrationJob, MigrationJobRecord, MigrationProgress,
    MigrationState,
};
use crate::observe::Event;
use crate::registry::RegistryError;
use crate::store::Op;

/// How many failures a job's progress keeps.
const FAILURES_KEPT: usize = 100;

impl Runtime {
    /// Starts a background migration of `job.workflow`, or returns the handle of the one that runs.
    pub fn start_migration(self: &Arc<Self>, job: MigrationJob) -> Result<MigrationHandle, EngineError> {
        if self.is_stopping() {
            return Err(EngineError::ShuttingDown);
        }
        if !self.registry.knows_workflow(&job.workflow) {
            return Err(RegistryError::UnknownWorkflow {
                workflow: job.workflow.clone(),
            }
            .into());
        }
        let mut jobs = self.jobs.lock();
        if let Some(control) = jobs.get(&job.workflow) {
            if !*control.finished.borrow() {
                return Ok(MigrationHandle {
                    control: control.clone(),
                });
            }
        }
        let record = MigrationJobRecord {
            format: RECORD_FORMAT,
            workflow: job.workflow.clone(),
            job,
            cursor: None,
            state: MigrationState::Running,
            migrated: 0,
            failed: 0,
            started_at_ms: self.now(),
        };
        let control = self.spawn_job(record);
        jobs.insert(control.progress.lock().workflow.clone(), control.clone());
        Ok(MigrationHandle { control })
    }

    /// The handle of the latest migration job of `workflow` since open (a job resumed at open
    /// included).
    pub fn migration(&self, workflow: &str) -> Option<MigrationHandle> {
        self.jobs.lock().get(workflow).map(|control| MigrationHandle {
            control: control.clone(),
        })
    }

    /// Resumes at open the jobs a previous run left unfinished (paused ones stay paused).
    pub(super) fn resume_migrations(self: &Arc<Self>, records: Vec<MigrationJobRecord>) {
        let mut jobs = self.jobs.lock();
        for record in records {
            if record.state == MigrationState::Finished {
                continue;
            }
            tracing::info!(workflow = %record.workflow, migrated = record.migrated, "resuming a background migration");
            let workflow = record.workflow.clone();
            let control = self.spawn_job(record);
            jobs.insert(workflow, control);
        }
    }

    fn spawn_job(self: &Arc<Self>, record: MigrationJobRecord) -> Arc<JobControl> {
        let control = JobControl::new(MigrationProgress {
            workflow: record.workflow.clone(),
            state: record.state,
            migrated: record.migrated,
            remaining: 0,
            failed: record.failed,
            rate_per_second: 0.0,
            failures: Vec::new(),
        });
        self.spawn_tracked(self.clone().run_job_to_end(record, control.clone()));
        control
    }

    /// Whether a live record needs the migrator: its state schema differs from what its version
    /// expects, or its record format is older than this build's (a start not begun has no state).
    fn needs_migration(&self, record: &InstanceRecord) -> bool {
        if matches!(record.phase, Phase::Accepted { .. }) {
            // No state yet: its first step builds one of the schema its version expects.
            return false;
        }
        if record.format < RECORD_FORMAT {
            return true;
        }
        self.registry
            .code(&record.key)
            .is_some_and(|code| code.state_schema() != record.state.schema)
    }

    /// The live instances of `workflow` after `cursor` that need migration, in id order.
    fn migration_candidates(&self, workflow: &str, cursor: Option<InstanceId>) -> Vec<InstanceId> {
        let mut ids = Vec::new();
        self.table.for_each(|slot| {
            let record = &slot.record;
            if record.key.workflow == workflow
                && cursor.is_none_or(|cursor| record.id > cursor)
                && !matches!(record.phase, Phase::Quarantined { .. })
                && self.needs_migration(record)
            {
                ids.push(record.id);
            }
        });
        ids.sort_unstable();
        ids
    }

    async fn run_job_to_end(self: Arc<Self>, record: MigrationJobRecord, control: Arc<JobControl>) {
        let workflow = record.workflow.clone();
        if let Err(error) = self.run_migration_job(record, &control).await {
            tracing::warn!(%workflow, %error, "background migration stopped; it resumes at the next open");
        }
        control.finished.send_replace(true);
    }

    async fn run_migration_job(
        self: &Arc<Self>,
        mut record: MigrationJobRecord,
        control: &JobControl,
    ) -> Result<(), EngineError> {
        let candidates = self.migration_candidates(&record.workflow, record.cursor);
        let mut position = 0;
        let mut paused = control.paused.subscribe();
        let mut stop = self.stop_signal();
        control.progress.lock().remaining = candidates.len() as u64;
        loop {
            if self.is_stopping() {
                return Ok(());
            }
            let pause_wanted = *paused.borrow_and_update();
            if pause_wanted {
                if record.state != MigrationState::Paused {
                    record.state = MigrationState::Paused;
                    self.commit_job(&record, control).await?;
                    tracing::info!(workflow = %record.workflow, "background migration paused");
                }
                tokio::select! {
                    _ = paused.changed() => {}
                    _ = stop.wait_for(|stopping| *stopping) => return Ok(()),
                }
                continue;
            }
            if record.state == MigrationState::Paused {
                record.state = MigrationState::Running;
                self.commit_job(&record, control).await?;
                tracing::info!(workflow = %record.workflow, "background migration resumed");
            }
            let end = (position + record.job.batch_size.max(1)).min(candidates.len());
            let batch = &candidates[position..end];
            let Some(&last) = batch.last() else {
                record.state = MigrationState::Finished;
                self.commit_job(&record, control).await?;
                tracing::info!(workflow = %record.workflow, migrated = record.migrated, failed = record.failed, "background migration finished");
                self.events.emit(Event::MigrationFinished {
                    workflow: record.workflow.clone(),
                    migrated: record.migrated,
                    failed: record.failed,
                });
                return Ok(());
            };
            let began = Instant::now();
            let migrated = self.migrate_batch(&mut record, batch, last, control).await;
            let migrated = match migrated {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(workflow = %record.workflow, %error, "a migration batch did not commit; retrying it");
                    tokio::time::sleep(self.options.commit_retry_delay).await;
                    continue;
                }
            };
            position = end;
            let elapsed = began.elapsed();
            let rate = batch.len() as f64 / elapsed.as_secs_f64().max(1e-9);
            {
                let mut progress = control.progress.lock();
                progress.migrated = record.migrated;
                progress.failed = record.failed;
                progress.remaining = (candidates.len() - position) as u64;
                progress.rate_per_second = rate;
                progress.state = record.state;
            }
            self.events.emit(Event::MigrationProgress {
                workflow: record.workflow.clone(),
                migrated: record.migrated,
                remaining: (candidates.len() - position) as u64,
                failed: record.failed,
                rate_per_second: rate,
            });
            tracing::debug!(workflow = %record.workflow, migrated, batch = batch.len(), "migration batch committed");
            if let Some(limit) = record.job.max_per_second {
                let budget = Duration::from_secs_f64(batch.len() as f64 / f64::from(limit));
                if let Some(rest) = budget.checked_sub(elapsed) {
                    tokio::select! {
                        _ = tokio::time::sleep(rest) => {}
                        _ = stop.wait_for(|stopping| *stopping) => return Ok(()),
                    }
                }
            }
        }
    }

    /// Migrates one batch: claims, migrates, commits records and cursor together, releases.
    /// Returns how many records it rewrote.
    async fn migrate_batch(
        self: &Arc<Self>,
        job: &mut MigrationJobRecord,
        batch: &[InstanceId],
        last: InstanceId,
        control: &JobControl,
    ) -> Result<u64, EngineError> {
        let mut rewritten: Vec<InstanceRecord> = Vec::with_capacity(batch.len());
        let mut failures = Vec::new();
        let mut claimed = Vec::with_capacity(batch.len());
        {
            let chains = self.migrations.read();
            for &id in batch {
                // An instance mid-step is migrated by that step's own commit (lazy migration).
                let Ok(record) = self.claim(id) else { continue };
                claimed.push(id);
                let Some(code) = self.registry.code(&record.key) else {
                    continue;
                };
                if !self.needs_migration(&record) {
                    continue;
                }
                let target = code.state_schema();
                let mut next = record;
                if next.state.schema != target {
                    match chains.migrate(&next.key.workflow, &next.state.bytes, next.state.schema, target) {
                        Ok(bytes) => {
                            next.state.bytes = bytes;
                            next.state.schema = target;
                        }
                        Err(failure) => {
                            failures.push(MigrationFailureReport {
                                id,
                                reason: failure.to_string(),
                            });
                            continue;
                        }
                    }
                }
                next.format = RECORD_FORMAT;
                rewritten.push(next);
            }
        }
        let mut next_job = job.clone();
        next_job.cursor = Some(last);
        next_job.migrated += rewritten.len() as u64;
        next_job.failed += failures.len() as u64;
        let mut ops = Vec::with_capacity(rewritten.len() + 1);
        let mut encoded = Ok(());
        for record in &rewritten {
            match record.encode() {
                Ok(bytes) => ops.push(Op::PutInstance(bytes)),
                Err(error) => {
                    encoded = Err(error);
                    break;
                }
            }
        }
        ops.push(Op::PutMigrationJob(next_job.clone()));
        let committed = match encoded {
            Ok(()) => self.write(ops).await,
            Err(error) => Err(error),
        };
        let mut records = rewritten.into_iter().peekable();
        for id in claimed {
            let record = match committed {
                Ok(()) if records.peek().is_some_and(|record| record.id == id) => records.next(),
                _ => None,
            };
            self.release(id, record);
        }
        committed?;
        let count = next_job.migrated - job.migrated;
        *job = next_job;
        for failure in failures {
            tracing::warn!(workflow = %job.workflow, instance = %failure.id, reason = %failure.reason, "could not migrate a record; it is left as it was");
            self.events.emit(Event::MigrationRecordFailed {
                workflow: job.workflow.clone(),
                id: failure.id,
                reason: failure.reason.clone(),
            });
            let mut progress = control.progress.lock();
            if progress.failures.len() == FAILURES_KEPT {
                progress.failures.remove(0);
            }
            progress.failures.push(failure);
        }
        Ok(count)
    }

    /// Stores the job's record on its own (pause, resume, finish).
    async fn commit_job(&self, record: &MigrationJobRecord, control: &JobControl) -> Result<(), EngineError> {
        self.write(vec![Op::PutMigrationJob(record.clone())]).await?;
        control.progress.lock().state = record.state;
        Ok(())
    }
}
