//! Background migration jobs as data: their settings, the record persisted with every batch
//! (cursor and counts) and the live progress an operator reads. The engine runs them.

use serde::{Deserialize, Serialize};

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
    /// When it started (ms since the Unix epoch); with `workflow`, it names the job.
    pub started_at_ms: u64,
    /// Whose record this is. Empty: the job's own record (its settings, the operator's pause or
    /// resume, and when finished its totals). A worker id: that worker's share of the job (the
    /// instances it holds), with its own cursor and counts; a store one process opens has one
    /// share, of worker `local`. (A job's own record with a cursor was stored before jobs had
    /// shares: its counts and cursor become the share of the first worker that joins it.)
    #[serde(default)]
    pub worker: String,
    /// How many times an operator paused or resumed the job (on the job's own record): a worker
    /// takes in a pause or resume it has not seen yet.
    #[serde(default)]
    pub control: u64,
    /// Records of this share still to visit when it was written.
    #[serde(default)]
    pub remaining: u64,
    /// On a share: the number of this worker's newest claim whose instances its walk had listed
    /// when it was written. The job is finished only when no worker holds an instance claimed
    /// after what its share covered.
    #[serde(default)]
    pub claims_covered: u64,
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
