//! A running background migration: what its runner shares with its handles, and the handle that
//! pauses, resumes and waits on it. The job's settings and records are `strata_core::migrate`.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use strata_core::migrate::{MigrationJobRecord, MigrationProgress, MigrationState};

/// What a running job shares with its handles.
pub(crate) struct JobControl {
    /// When the job started: with the workflow, its name.
    pub started_at_ms: u64,
    /// This process's progress (its share, with a store many processes share).
    pub progress: Mutex<MigrationProgress>,
    /// The whole job's progress summed over every worker's share, with a store many processes
    /// share (taken in at each heartbeat).
    pub cluster_progress: Mutex<Option<MigrationProgress>>,
    /// The job's own record as last written or read here, with a store many processes share.
    pub job_record: Mutex<Option<MigrationJobRecord>>,
    /// Whether the job should pause; the runner waits on changes.
    pub paused: watch::Sender<bool>,
    /// Turns true when the job's runner exits: the job finished, or the engine stopped.
    pub finished: watch::Sender<bool>,
    /// Told when this process claims instances while the job runs: its share looks again.
    pub more: tokio::sync::Notify,
}

impl JobControl {
    pub(crate) fn new(progress: MigrationProgress, started_at_ms: u64) -> Arc<JobControl> {
        let paused = progress.state == MigrationState::Paused;
        Arc::new(JobControl {
            started_at_ms,
            progress: Mutex::new(progress),
            cluster_progress: Mutex::new(None),
            job_record: Mutex::new(None),
            paused: watch::Sender::new(paused),
            finished: watch::Sender::new(false),
            more: tokio::sync::Notify::new(),
        })
    }
}

/// A handle on a background migration: progress, pause, resume, wait.
#[derive(Clone)]
pub struct MigrationHandle {
    pub(crate) control: Arc<JobControl>,
}

impl MigrationHandle {
    /// The job's progress now: with a store many processes share, summed over every worker's
    /// share as of the last heartbeat (this process's own share as of now).
    pub fn progress(&self) -> MigrationProgress {
        let own = self.control.progress.lock().clone();
        match self.control.cluster_progress.lock().clone() {
            Some(cluster) => MigrationProgress {
                rate_per_second: own.rate_per_second,
                failures: own.failures,
                ..cluster
            },
            None => own,
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
