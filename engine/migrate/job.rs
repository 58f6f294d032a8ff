//! Background migration jobs: their settings, the record persisted with every batch (cursor and
//! counts), the live progress an operator reads, and the handle that pauses and resumes a job.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::instance::InstanceId;

/// How a background migration runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationJob {
    /// The workflow whose live instances it walks.
    pub workflow: String,
    /// Records per batch; each batch is one commit (default 1 000).
    pub batch_size: usize,
    /// At most this many records per second (`None`: as fast as the store allows).
    pub max_per_second: Option<u32>,
}

impl MigrationJob {
    /// A migration of `workflow`'s live instances, 1 000 per batch, without rate limit.
    pub fn new(workflow: impl Into<String>) -> Self {
        MigrationJob {
            workflow: workflow.into(),
            batch_size: 1_000,
            max_per_second: None,
        }
    }

    /// Records per batch (each batch is one commit).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// At most `rate` records per second.
    pub fn max_per_second(mut self, rate: u32) -> Self {
        self.max_per_second = Some(rate.max(1));
        self
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationState {
    /// Walking batches.
    Running,
    /// Paused by an operator; resumes on `resume` (also after a restart).
    Paused,
    /// Every record it walked is migrated or reported as failed.
    Finished,
}

/// A job as stored, written in the commit of every batch it migrates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationJobRecord {
    /// The record format.
    pub format: u32,
    /// The workflow (one job per workflow).
    pub workflow: String,
    /// Its settings.
    pub job: MigrationJob,
    /// The highest instance id its committed batches covered.
    pub cursor: Option<InstanceId>,
    /// Its state.
    pub state: MigrationState,
    /// Records migrated so far.
    pub migrated: u64,
    /// Records whose migration failed (left as they were).
    pub failed: u64,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: u64,
}

/// A record the job could not migrate, and why. The record is left untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFailureReport {
    /// The instance.
    pub id: InstanceId,
    /// Why.
    pub reason: String,
}

/// A job's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationProgress {
    /// The workflow.
    pub workflow: String,
    /// Its state.
    pub state: MigrationState,
    /// Records migrated (since the job started, across restarts).
    pub migrated: u64,
    /// Records still to visit.
    pub remaining: u64,
    /// Records whose migration failed.
    pub failed: u64,
    /// Records per second over the last batch.
    pub rate_per_second: f64,
    /// The failures seen since open (the most recent 100).
    pub failures: Vec<MigrationFailureReport>,
}

/// What a running job shares with its handles.
pub(crate) struct JobControl {
    pub progress: Mutex<MigrationProgress>,
    /// Whether the job should pause; the runner waits on changes.
    pub paused: watch::Sender<bool>,
    /// Turns true when the job's runner exits: the job finished, or the engine stopped.
    pub finished: watch::Sender<bool>,
}

impl JobControl {
    pub fn new(progress: MigrationProgress) -> Arc<JobControl> {
        let paused = progress.state == MigrationState::Paused;
        Arc::new(JobControl {
            progress: Mutex::new(progress),
            paused: watch::Sender::new(paused),
            finished: watch::Sender::new(false),
        })
    }
}

/// A handle on a background migration: progress, pause, resume, wait.
#[derive(Clone)]
pub struct MigrationHandle {
    pub(crate) control: Arc<JobControl>,
}

impl MigrationHandle {
    /// The job's progress now.
    pub fn progress(&self) -> MigrationProgress {
        self.control.progress.lock().clone()
    }

    /// Pauses the job after the batch in flight; the pause is stored and survives a restart.
    pub fn pause(&self) {
        self.control.paused.send_replace(true);
    }

    /// Resumes a paused job.
    pub fn resume(&self) {
        self.control.paused.send_replace(false);
    }

    /// Waits until the job has finished (or the engine stops), and returns its progress.
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
