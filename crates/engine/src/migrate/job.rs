//! A running background migration: what its runner shares with its handles, and the handle that
//! pauses, resumes and waits on it. The job's settings and records are `strata_core::migrate`.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use strata_core::instance::InstanceId;
use strata_core::migrate::{MigrationJobRecord, MigrationProgress, MigrationState};

/// What a running job shares with its handles.
pub(crate) struct JobControl {
    /// When the job started: with the workflow, its name.
    pub started_at_ms: u64,
    /// This worker's share of the job, as it walks.
    pub progress: Mutex<MigrationProgress>,
    /// The other workers' shares summed, as of the last look at the store (none with a store one
    /// process opens).
    pub elsewhere: Mutex<ShareCounts>,
    /// The job's own record as last written or read here (none only until a new job's runner
    /// has stored it).
    pub job_record: Mutex<Option<MigrationJobRecord>>,
    /// Whether the job should pause; the runner waits on changes.
    pub paused: watch::Sender<bool>,
    /// Turns true when the job's runner exits: the job finished, or the engine stopped.
    pub finished: watch::Sender<bool>,
    /// The instances this worker claimed while the job runs, not yet looked at by its share.
    pub claimed: Mutex<Vec<InstanceId>>,
    /// Told when this worker claims instances while the job runs: its share looks at them.
    pub more: tokio::sync::Notify,
}

impl JobControl {
    pub(crate) fn new(progress: MigrationProgress, started_at_ms: u64) -> Arc<JobControl> {
        let paused = progress.state == MigrationState::Paused;
        Arc::new(JobControl {
            started_at_ms,
            progress: Mutex::new(progress),
            elsewhere: Mutex::new(ShareCounts::default()),
            job_record: Mutex::new(None),
            paused: watch::Sender::new(paused),
            finished: watch::Sender::new(false),
            claimed: Mutex::new(Vec::new()),
            more: tokio::sync::Notify::new(),
        })
    }
}

/// Counts summed over some workers' shares of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ShareCounts {
    /// Records the shares rewrote.
    pub migrated: u64,
    /// Records they could not migrate.
    pub failed: u64,
    /// Records their live workers still have to look at.
    pub remaining: u64,
}

/// A handle on a background migration: progress, pause, resume, wait.
#[derive(Clone)]
pub struct MigrationHandle {
    pub(crate) control: Arc<JobControl>,
}

impl MigrationHandle {
    /// The job's progress now: this worker's share as of now plus the other workers' shares (with
    /// a store many processes share) as of the last heartbeat; the state is the whole job's.
    pub fn progress(&self) -> MigrationProgress {
        let own = self.control.progress.lock().clone();
        let elsewhere = *self.control.elsewhere.lock();
        let state = self
            .control
            .job_record
            .lock()
            .as_ref()
            .map_or(own.state, |job| job.state);
        MigrationProgress {
            state,
            migrated: own.migrated + elsewhere.migrated,
            failed: own.failed + elsewhere.failed,
            remaining: own.remaining + elsewhere.remaining,
            ..own
        }
    }

    /// Pauses the job after the batch in flight; the pause is stored and survives a restart
    /// (with a store many processes share, every worker pauses its share).
    pub fn pause(&self) {
        self.control.paused.send_replace(true);
    }

    /// Resumes a paused job.
    pub fn resume(&self) {
        self.control.paused.send_replace(false);
    }

    /// Waits until the job has finished (or the engine stops), and returns its progress. With a
    /// store many processes share, the job finishes when every live worker's share has.
    pub async fn finished(&self) -> MigrationProgress {
        let mut finished = self.control.finished.subscribe();
        // An error means the engine dropped the job: report where it was.
        let _ = finished.wait_for(|done| *done).await;
        self.progress()
    }

    /// Waits at most `limit` for the job to finish.
    pub async fn finished_within(&self, limit: Duration) -> Option<MigrationProgress> {
        tokio::time::timeout(limit, self.finished()).await.ok()
    }
}
