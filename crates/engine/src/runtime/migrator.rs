//! The background migrator: walks a workflow's live instances in id order, in bounded batches,
//! rewriting each record whose state schema is older (or newer) than its version expects, or
//! whose record format is older than this build's.
//!
//! A job is done in shares, one per worker, by one mechanism for a store one process opens and
//! for one many processes share: the job's own record (worker id empty) says that it runs, is
//! paused or has finished; each worker walks the live instances it holds, and those it claims
//! while the job runs, under a share record of its own. The worker that evaluates rollouts (the
//! only worker, with a store one process opens) finishes the job once every live worker's share
//! has, and alone announces `MigrationFinished`.
//!
//! Each batch claims its instances at their step boundaries, migrates them, and commits their new
//! records together with the share's cursor and counts: one commit. A crash loses at most the
//! batch in flight, whose records are still as they were, so a resumed job never migrates a record
//! twice; the schema number in each envelope decides what still needs work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Runtime;
use crate::error::EngineError;
use crate::migrate::{
    JobControl, MigrationFailureReport, MigrationHandle, MigrationJob, MigrationJobRecord, MigrationProgress,
    MigrationState, ShareCounts,
};
use crate::observe::Event;
use crate::registry::RegistryError;
use crate::store::Op;
use strata_core::history::{HistoryEntry, HistoryEvent};
use strata_core::instance::{InstanceId, InstanceRecord, Phase, RECORD_FORMAT};

/// How many failures a job's progress keeps.
const FAILURES_KEPT: usize = 100;

impl Runtime {
    /// Starts a background migration of `job.workflow`, or returns the handle of the one that runs
    /// (wherever and whenever it was started).
    pub(crate) fn start_migration(self: &Arc<Self>, job: MigrationJob) -> Result<MigrationHandle, EngineError> {
        if self.is_stopping() {
            return Err(EngineError::ShuttingDown);
        }
        if !self.registry.knows_workflow(&job.workflow) {
            return Err(RegistryError::UnknownWorkflow {
                workflow: job.workflow.clone(),
            }
            .into());
        }
        // A job started before (elsewhere, or before a restart) that this worker has not
        // followed yet is the one that runs: join it rather than start a second.
        let records = self.store.migration_jobs()?;
        let running = records.iter().find(|record| {
            record.worker.is_empty() && record.workflow == job.workflow && record.state != MigrationState::Finished
        });
        if let Some(running) = running {
            if let Some(control) = self.follow_job(running, &records) {
                return Ok(MigrationHandle { control });
            }
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
            worker: String::new(),
            control: 0,
            remaining: 0,
            claims_covered: 0,
        };
        let control = self.spawn_job(record);
        jobs.insert(control.progress.lock().workflow.clone(), control.clone());
        Ok(MigrationHandle { control })
    }

    /// The handle of the latest migration job of `workflow` since open (a job resumed at open
    /// included).
    pub(crate) fn migration(&self, workflow: &str) -> Option<MigrationHandle> {
        self.jobs.lock().get(workflow).map(|control| MigrationHandle {
            control: control.clone(),
        })
    }

    fn spawn_job(self: &Arc<Self>, record: MigrationJobRecord) -> Arc<JobControl> {
        let control = JobControl::new(
            MigrationProgress {
                workflow: record.workflow.clone(),
                state: record.state,
                migrated: record.migrated,
                remaining: 0,
                failed: record.failed,
                rate_per_second: 0.0,
                failures: Vec::new(),
            },
            record.started_at_ms,
        );
        self.spawn_tracked(self.clone().run_job_to_end(record, control.clone()));
        control
    }

    /// At open, at every heartbeat and whenever a share here finishes: joins each running job with
    /// a share of this worker's, takes in pauses and resumes made elsewhere and the other
    /// workers' progress, and notices a job finished elsewhere. The worker that evaluates
    /// rollouts also finishes each job whose every live worker's share has finished, with no
    /// instance left waiting for a claim; it alone announces `MigrationFinished`.
    pub(super) async fn follow_migrations(self: &Arc<Self>) {
        // One look at a time: two could both finish a job, and announce it twice.
        let _one_look = self.following_migrations.lock().await;
        let lease = self.options.lease;
        let read = self
            .store_call(move |store| {
                let records = store.migration_jobs()?;
                let workers = if records.iter().any(|record| record.state != MigrationState::Finished) {
                    store.cluster().workers(lease)?
                } else {
                    Vec::new()
                };
                Ok((records, workers))
            })
            .await;
        let (records, workers) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, "could not read the background migrations; trying again at the next heartbeat");
                return;
            }
        };
        let me = self.store.cluster().worker_id().to_string();
        let leading = self.rollouts.leading.load(std::sync::atomic::Ordering::Acquire);
        for job in records.iter().filter(|record| record.worker.is_empty()) {
            let shares = shares_of(job, &records);
            let control = self.follow_job(job, &records);
            if let Some(control) = &control {
                *control.elsewhere.lock() =
                    sum_shares(shares.iter().copied().filter(|share| share.worker != me), &workers);
                if job.state == MigrationState::Finished {
                    control.finished.send_replace(true);
                }
            }
            if job.state == MigrationState::Finished || !leading {
                continue;
            }
            let mut needed: Vec<String> = workers
                .iter()
                .filter(|worker| worker.alive && worker.versions.iter().any(|key| key.workflow == job.workflow))
                .map(|worker| worker.id.clone())
                .collect();
            // This worker's own share runs here whatever its last heartbeat said.
            if control.is_some() && !needed.contains(&me) {
                needed.push(me.clone());
            }
            if every_share_done(job, &needed, &shares) {
                self.finish_job(job.clone(), needed, control).await;
            }
        }
    }

    /// The local control of `job`, joining it with a share of this worker's while it runs;
    /// takes in a pause or resume made elsewhere. `records` are the stored job and share records:
    /// a share of this worker's among them (stored before a restart, by a worker whose id the
    /// store hands out again) is resumed with its counts and cursor.
    fn follow_job(
        self: &Arc<Self>,
        job: &MigrationJobRecord,
        records: &[MigrationJobRecord],
    ) -> Option<Arc<JobControl>> {
        let mut jobs = self.jobs.lock();
        if let Some(control) = jobs.get(&job.workflow) {
            if control.started_at_ms == job.started_at_ms {
                // The record and the wish change together (the runner reads both under the lock).
                let mut known = control.job_record.lock();
                let seen = known.as_ref().map_or(0, |known| known.control);
                if job.control > seen {
                    control.paused.send_replace(job.state == MigrationState::Paused);
                }
                if job.control >= seen {
                    *known = Some(job.clone());
                }
                drop(known);
                return Some(control.clone());
            }
            if control.started_at_ms > job.started_at_ms {
                return None;
            }
        }
        if job.state == MigrationState::Finished {
            return None;
        }
        // Every worker joins, with the code or not: its share is what it holds (nothing, without
        // the code), and its handle shows the job's progress and takes a pause or resume.
        let me = self.store.cluster().worker_id();
        let stored = shares_of(job, records).into_iter().find(|share| share.worker == me);
        // A job with a cursor of its own was walked as one, before jobs had shares: its counts
        // and cursor become this worker's share's.
        let (cursor, migrated, failed) = match (stored, job.cursor) {
            (Some(share), _) => (share.cursor, share.migrated, share.failed),
            (None, Some(cursor)) => (Some(cursor), job.migrated, job.failed),
            (None, None) => (None, 0, 0),
        };
        tracing::info!(workflow = %job.workflow, migrated, "joining a background migration with the instances held here");
        let share = MigrationJobRecord {
            worker: me.to_string(),
            cursor,
            state: match job.state {
                MigrationState::Paused => MigrationState::Paused,
                _ => MigrationState::Running,
            },
            migrated,
            failed,
            control: 0,
            remaining: 0,
            claims_covered: 0,
            ..job.clone()
        };
        let control = self.spawn_job(share);
        *control.job_record.lock() = Some(job.clone());
        jobs.insert(job.workflow.clone(), control.clone());
        Some(control)
    }

    /// Finishes `job` in the store with the shares' totals, unless a share of the `needed`
    /// workers took more work meanwhile, or an instance of its workflow waits for a claim or was
    /// claimed after what its holder's share covered. The shares are read first: a claim that
    /// lands between the two reads is newer than what they say, so it can only hold the finish
    /// back, never let one through.
    async fn finish_job(
        self: &Arc<Self>,
        job: MigrationJobRecord,
        needed: Vec<String>,
        control: Option<Arc<JobControl>>,
    ) {
        let (workflow, started_at_ms) = (job.workflow.clone(), job.started_at_ms);
        let lease = self.options.lease;
        let looked = self
            .store_call(move |store| {
                let shares: Vec<MigrationJobRecord> = store
                    .migration_jobs()?
                    .into_iter()
                    .filter(|share| {
                        !share.worker.is_empty() && share.workflow == workflow && share.started_at_ms == started_at_ms
                    })
                    .collect();
                let covered: Vec<(String, u64)> = shares
                    .iter()
                    .map(|share| (share.worker.clone(), share.claims_covered))
                    .collect();
                let uncovered = store.cluster().uncovered_live(&workflow, lease, &covered)?;
                Ok((uncovered, shares))
            })
            .await;
        let shares = match looked {
            Ok((0, shares)) => shares,
            Ok((waiting, _)) => {
                tracing::debug!(workflow = %job.workflow, waiting, "a background migration waits for instances to be claimed or listed");
                return;
            }
            Err(error) => {
                tracing::warn!(workflow = %job.workflow, %error, "could not count the instances a background migration has not covered");
                return;
            }
        };
        let shares: Vec<&MigrationJobRecord> = shares.iter().collect();
        if !every_share_done(&job, &needed, &shares) {
            return;
        }
        let total = sum_shares(shares.iter().copied(), &[]);
        let finished = MigrationJobRecord {
            state: MigrationState::Finished,
            migrated: total.migrated,
            failed: total.failed,
            remaining: 0,
            ..job
        };
        if let Err(error) = self.write(vec![Op::PutMigrationJob(finished.clone())]).await {
            tracing::warn!(workflow = %finished.workflow, %error, "could not store a finished background migration; trying again");
            return;
        }
        tracing::info!(workflow = %finished.workflow, migrated = finished.migrated, failed = finished.failed, "background migration finished on every worker");
        self.events.emit(Event::MigrationFinished {
            workflow: finished.workflow.clone(),
            migrated: finished.migrated,
            failed: finished.failed,
        });
        if let Some(control) = control {
            let me = self.store.cluster().worker_id();
            *control.elsewhere.lock() = sum_shares(shares.iter().copied().filter(|share| share.worker != me), &[]);
            *control.job_record.lock() = Some(finished);
            control.finished.send_replace(true);
        }
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

    /// Whether a live record of `workflow` is one for its migration to look at.
    fn is_candidate(&self, workflow: &str, record: &InstanceRecord) -> bool {
        record.key.workflow == workflow
            && !matches!(record.phase, Phase::Quarantined { .. })
            && self.needs_migration(record)
    }

    /// The live instances of `workflow` after `cursor` this worker holds that need migration, in
    /// id order: those in the store only (read, not loaded), then the resident ones. The sweep
    /// evicts nothing meanwhile, so none is missed.
    fn migration_candidates(&self, workflow: &str, cursor: Option<InstanceId>) -> Result<Vec<InstanceId>, EngineError> {
        let _hold = self.hold_resident();
        let mut ids = Vec::new();
        let scope = crate::store::ListScope {
            workflow: Some(workflow.to_string()),
            after: cursor,
            ..Default::default()
        };
        self.for_each_held_in_store(
            scope,
            |record| self.is_candidate(workflow, record),
            |record| ids.push(record.id),
        )?;
        self.table.for_each(|slot| {
            let record = &slot.record;
            if cursor.is_none_or(|cursor| record.id > cursor) && self.is_candidate(workflow, record) {
                ids.push(record.id);
            }
        });
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Of `claimed`, the instances this worker claimed since its share last looked, those of
    /// `workflow` that need migration, in id order (a claim leaves instances due later in the store: they are
    /// read, not loaded).
    fn claimed_candidates(&self, workflow: &str, claimed: Vec<InstanceId>) -> Result<Vec<InstanceId>, EngineError> {
        let _hold = self.hold_resident();
        let in_store: Vec<InstanceId> = claimed.iter().copied().filter(|&id| !self.table.contains(id)).collect();
        let mut ids = Vec::new();
        for page in in_store.chunks(1_000) {
            let held = self.store.load_held(page)?.live;
            ids.extend(
                held.iter()
                    .filter(|record| self.is_candidate(workflow, record))
                    .map(|record| record.id),
            );
        }
        ids.extend(claimed.into_iter().filter(|&id| {
            self.table
                .with(id, |slot| self.is_candidate(workflow, &slot.record))
                .unwrap_or(false)
        }));
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    async fn run_job_to_end(self: Arc<Self>, record: MigrationJobRecord, control: Arc<JobControl>) {
        let workflow = record.workflow.clone();
        if let Err(error) = self.run_migration_job(record, &control).await {
            tracing::warn!(%workflow, %error, "background migration stopped; it resumes at the next open");
        }
        control.finished.send_replace(true);
    }

    /// Runs this worker's share of a job: the live instances it holds, and those it claims while
    /// the job runs. When its walk ends the share waits for more work until the job has finished
    /// everywhere (`follow_migrations`).
    async fn run_migration_job(
        self: &Arc<Self>,
        mut record: MigrationJobRecord,
        control: &JobControl,
    ) -> Result<(), EngineError> {
        if record.worker.is_empty() {
            // Started here: the job's own record tells the other workers to join.
            self.commit_job(&record, control).await?;
            *control.job_record.lock() = Some(record.clone());
            record.worker = self.store.cluster().worker_id().to_string();
        }
        record.claims_covered = self.claims_taken_in.load(std::sync::atomic::Ordering::Acquire);
        // Every instance of the workflow this worker holds is looked at, resident or not; a
        // batch loads those it migrates.
        let (workflow, cursor) = (record.workflow.clone(), record.cursor);
        let mut candidates = self
            .off_executor(move |runtime| runtime.migration_candidates(&workflow, cursor))
            .await?;
        let mut position = 0;
        let mut paused = control.paused.subscribe();
        let mut stop = self.stop_signal();
        let mut finished = control.finished.subscribe();
        // Set once the job has finished everywhere; one more look migrates what this worker
        // claimed in the meantime.
        let mut last_look = false;
        control.progress.lock().remaining = candidates.len() as u64;
        loop {
            if self.is_stopping() {
                return Ok(());
            }
            // Read together with the job's own record, which a heartbeat updates together with
            // the wish: a wish the record does not show yet was made here, and is announced.
            let (pause_wanted, unannounced) = {
                let known = control.job_record.lock();
                let pause_wanted = *paused.borrow_and_update();
                let unannounced = known.as_ref().is_some_and(|job| {
                    job.state != MigrationState::Finished && (job.state == MigrationState::Paused) != pause_wanted
                });
                (pause_wanted, unannounced)
            };
            if unannounced {
                let wanted = if pause_wanted {
                    MigrationState::Paused
                } else {
                    MigrationState::Running
                };
                self.announce_control(control, wanted).await?;
            }
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
                if record.state != MigrationState::Finished {
                    record.state = MigrationState::Finished;
                    record.remaining = 0;
                    self.commit_job(&record, control).await?;
                    tracing::info!(workflow = %record.workflow, migrated = record.migrated, failed = record.failed, "background migration finished here");
                    // The job may be finished now (here, if this worker leads).
                    self.follow_migrations().await;
                }
                if last_look {
                    return Ok(());
                }
                // Instances claimed from now on are this share's too, until the job has finished
                // on every worker.
                tokio::select! {
                    _ = control.more.notified() => {}
                    _ = paused.changed() => {}
                    _ = finished.wait_for(|done| *done) => last_look = true,
                    _ = stop.wait_for(|stopping| *stopping) => return Ok(()),
                }
                // Read before the listing: every instance claimed up to that number is listed.
                let covered = self.claims_taken_in.load(std::sync::atomic::Ordering::Acquire);
                let (workflow, claimed) = (record.workflow.clone(), std::mem::take(&mut *control.claimed.lock()));
                candidates = self
                    .off_executor(move |runtime| runtime.claimed_candidates(&workflow, claimed))
                    .await?;
                position = 0;
                // Running again until the share has migrated what it listed and stored what it
                // covered (even with nothing to migrate), so that the job cannot finish on a
                // share that has not looked at its newest claims.
                if !candidates.is_empty() || covered != record.claims_covered {
                    record.state = MigrationState::Running;
                    control.progress.lock().remaining = candidates.len() as u64;
                }
                record.claims_covered = covered;
                continue;
            };
            let began = Instant::now();
            let remaining = (candidates.len() - end) as u64;
            let migrated = self.migrate_batch(&mut record, batch, last, remaining, control).await;
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
                progress.remaining = remaining;
                progress.rate_per_second = rate;
                progress.state = record.state;
            }
            self.events.emit(Event::MigrationProgress {
                workflow: record.workflow.clone(),
                migrated: record.migrated,
                remaining,
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

    /// Stores an operator's pause or resume made here on the job's own record (unless it says so
    /// already), so that every worker's share follows it.
    async fn announce_control(&self, control: &JobControl, state: MigrationState) -> Result<(), EngineError> {
        let Some(mut job) = control.job_record.lock().clone() else {
            return Ok(());
        };
        if job.state == state || job.state == MigrationState::Finished {
            return Ok(());
        }
        job.state = state;
        job.control += 1;
        self.write(vec![Op::PutMigrationJob(job.clone())]).await?;
        *control.job_record.lock() = Some(job);
        Ok(())
    }

    /// Migrates one batch: claims, migrates, commits records and cursor together, releases.
    /// Returns how many records it rewrote.
    async fn migrate_batch(
        self: &Arc<Self>,
        job: &mut MigrationJobRecord,
        batch: &[InstanceId],
        last: InstanceId,
        remaining: u64,
        control: &JobControl,
    ) -> Result<u64, EngineError> {
        // Each rewritten record with its state's schema before.
        let mut rewritten: Vec<(InstanceRecord, u32)> = Vec::with_capacity(batch.len());
        let mut failures = Vec::new();
        let mut claimed = Vec::with_capacity(batch.len());
        // Kept resident until the batch is committed and released.
        let _hold = self.hold_resident();
        self.load_resident(batch).await?;
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
                let from_schema = record.state.schema;
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
                rewritten.push((next, from_schema));
            }
        }
        let mut next_job = job.clone();
        next_job.cursor = Some(last);
        next_job.remaining = remaining;
        next_job.migrated += rewritten.len() as u64;
        next_job.failed += failures.len() as u64;
        let mut ops = Vec::with_capacity(rewritten.len() * 2 + 1);
        let now = self.now();
        let encoded = rewritten.iter_mut().try_for_each(|(record, from_schema)| {
            if record.state.schema != *from_schema {
                let entry = HistoryEntry {
                    at_ms: now,
                    event: HistoryEvent::Migrated {
                        from_schema: *from_schema,
                        to_schema: record.state.schema,
                    },
                };
                super::transition::append_history(record, &entry, self.options.history_limit, &mut ops)?;
            }
            ops.push(Op::PutInstance(self.encode_replacing_resident(record)?));
            Ok::<(), strata_core::codec::EncodeError>(())
        });
        ops.push(Op::PutMigrationJob(next_job.clone()));
        let committed = match encoded {
            Ok(()) => self.write(ops).await,
            Err(error) => Err(error.into()),
        };
        let mut records = rewritten.into_iter().map(|(record, _)| record).peekable();
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

/// The stored shares of `job`: the records of each worker's part of it.
fn shares_of<'a>(job: &MigrationJobRecord, records: &'a [MigrationJobRecord]) -> Vec<&'a MigrationJobRecord> {
    records
        .iter()
        .filter(|share| {
            !share.worker.is_empty() && share.workflow == job.workflow && share.started_at_ms == job.started_at_ms
        })
        .collect()
}

/// The counts of `shares` summed (what remains only of live `workers`' shares: a dead worker's
/// instances are counted again by whoever claims them). A share's last look after the job
/// finished adds to them.
fn sum_shares<'a>(
    shares: impl Iterator<Item = &'a MigrationJobRecord>,
    workers: &[crate::store::WorkerInfo],
) -> ShareCounts {
    let alive = |id: &str| workers.iter().any(|worker| worker.alive && worker.id == id);
    shares.fold(ShareCounts::default(), |sum, share| ShareCounts {
        migrated: sum.migrated + share.migrated,
        failed: sum.failed + share.failed,
        remaining: sum.remaining + if alive(&share.worker) { share.remaining } else { 0 },
    })
}

/// Whether the share of each of the `needed` workers in `job` has finished.
fn every_share_done(job: &MigrationJobRecord, needed: &[String], shares: &[&MigrationJobRecord]) -> bool {
    needed.iter().all(|worker| {
        shares.iter().any(|share| {
            share.worker == *worker
                && share.started_at_ms == job.started_at_ms
                && share.state == MigrationState::Finished
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WorkerInfo;

    fn record(worker: &str, started_at_ms: u64, state: MigrationState, counts: (u64, u64, u64)) -> MigrationJobRecord {
        MigrationJobRecord {
            format: RECORD_FORMAT,
            workflow: "order".to_string(),
            job: MigrationJob::new("order"),
            cursor: None,
            state,
            migrated: counts.0,
            failed: counts.1,
            started_at_ms,
            worker: worker.to_string(),
            control: 0,
            remaining: counts.2,
            claims_covered: 0,
        }
    }

    fn worker(id: &str, alive: bool) -> WorkerInfo {
        WorkerInfo {
            id: id.to_string(),
            host: String::new(),
            pid: 1,
            started_at_ms: 0,
            heartbeat_ms: 0,
            versions: Vec::new(),
            alive,
        }
    }

    #[test]
    fn the_shares_of_a_job_are_its_workers_records_of_the_same_start() {
        let job = record("", 10, MigrationState::Running, (0, 0, 0));
        let records = vec![
            job.clone(),
            record("a", 10, MigrationState::Running, (1, 0, 0)),
            record("b", 9, MigrationState::Finished, (2, 0, 0)),
            MigrationJobRecord {
                workflow: "invoice".to_string(),
                ..record("c", 10, MigrationState::Running, (3, 0, 0))
            },
        ];
        let shares: Vec<&str> = shares_of(&job, &records)
            .iter()
            .map(|share| share.worker.as_str())
            .collect();
        assert_eq!(shares, ["a"]);
    }

    #[test]
    fn summed_shares_count_what_remains_only_for_live_workers() {
        let shares = [
            record("alive", 10, MigrationState::Running, (5, 1, 7)),
            record("dead", 10, MigrationState::Running, (3, 2, 11)),
        ];
        let workers = [worker("alive", true), worker("dead", false)];
        let summed = sum_shares(shares.iter(), &workers);
        assert_eq!(
            summed,
            ShareCounts {
                migrated: 8,
                failed: 3,
                remaining: 7
            }
        );
        assert_eq!(sum_shares(shares.iter(), &[]).remaining, 0);
    }

    #[test]
    fn a_job_is_done_when_every_needed_worker_has_a_finished_share_of_it() {
        let job = record("", 10, MigrationState::Running, (0, 0, 0));
        let done = record("a", 10, MigrationState::Finished, (1, 0, 0));
        let walking = record("b", 10, MigrationState::Running, (1, 0, 0));
        let older = record("b", 9, MigrationState::Finished, (1, 0, 0));
        let needed = ["a".to_string(), "b".to_string()];
        assert!(!every_share_done(&job, &needed, &[&done, &walking]));
        assert!(
            !every_share_done(&job, &needed, &[&done, &older]),
            "a share of an older job does not count"
        );
        assert!(
            !every_share_done(&job, &needed, &[&done]),
            "a needed worker without a share holds it back"
        );
        assert!(every_share_done(&job, &needed[..1], &[&done, &walking]));
        assert!(every_share_done(&job, &[], &[]));
    }
}
