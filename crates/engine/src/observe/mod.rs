//! The engine's typed event stream: what happened to instances and versions, for an embedding
//! application to subscribe to. A slow subscriber lags (and is told how many events it missed);
//! it never slows the engine.

mod clock;
mod metrics;

pub(crate) use clock::jumped;
pub(crate) use clock::{deadline_after, millis_saturating};
pub use clock::{Clock, ManualClock, SystemClock};
pub use metrics::{
    merged_window, window_series, ExportedBucket, MetricsPoint, MetricsSnapshot, PointMeasure, Quantiles,
    VersionMetrics, WindowExport, BUCKET_MS, WINDOW_BUCKETS,
};

use tokio::sync::broadcast;

use crate::store::VersionCounters;
use strata_core::instance::{InstanceId, InstanceStatus, MoveCause, VersionKey};

/// Something that happened in the engine.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Another worker claimed an instance this one held (this worker's lease had run out): it
    /// runs there now; the step this worker ran for it was not committed.
    InstanceClaimLost {
        /// The instance.
        id: InstanceId,
        /// Its version.
        key: VersionKey,
    },
    /// A version has live instances and no live worker has its code: they wait for one.
    NoWorkerForVersion {
        /// The version.
        key: VersionKey,
        /// Its live instances.
        live: u64,
    },
    /// A rollout started at its first stage.
    RolloutStarted {
        /// The rollout.
        name: String,
        /// The workflow.
        workflow: String,
        /// The version rolled out.
        candidate: semver::Version,
        /// The version compared with.
        stable: semver::Version,
    },
    /// A rollout passed a stage and gives the candidate a larger share.
    RolloutAdvanced {
        /// The rollout.
        name: String,
        /// The new stage's index.
        stage: usize,
        /// The candidate's share now, in basis points.
        basis_points: u16,
    },
    /// A rollout passed its last stage: the candidate is the default, the old stable drains.
    RolloutPromoted {
        /// The rollout.
        name: String,
        /// The promoted version.
        candidate: semver::Version,
    },
    /// A rollout was rolled back; new instances go to the stable version.
    RolloutRolledBack {
        /// The rollout.
        name: String,
        /// The gate that decided, or `None` for an operator's rollback.
        gate: Option<strata_core::rollout::Gate>,
        /// Why, with both versions' figures.
        reason: String,
    },
    /// An operator paused a rollout.
    RolloutPaused {
        /// The rollout.
        name: String,
    },
    /// An operator resumed a rollout.
    RolloutResumed {
        /// The rollout.
        name: String,
    },
    /// Instances moved from one version to another at a step boundary (one commit per batch).
    InstancesMoved {
        /// The version they left.
        from: VersionKey,
        /// The version they moved to.
        to: VersionKey,
        /// How many.
        count: u64,
        /// Operator or `AutoUpgrade`.
        cause: MoveCause,
    },
    /// Ended instances were revived: live again on a version (one commit per batch).
    InstancesRevived {
        /// The version they had ended on.
        from: VersionKey,
        /// The version they are live on again.
        to: VersionKey,
        /// How many.
        count: u64,
    },
    /// A drained version has live instances again (revived onto it): it is `Draining`, and its
    /// code must stay until they finish.
    VersionUndrained {
        /// The version.
        key: VersionKey,
        /// Its counts at that moment.
        counters: VersionCounters,
    },
    /// An `AutoUpgrade` instance stays on its version; the reason is also on its record.
    InstancePinned {
        /// The instance.
        id: InstanceId,
        /// Its version.
        key: VersionKey,
        /// Why it cannot move to the routing target.
        reason: String,
    },
    /// A background migration committed a batch.
    MigrationProgress {
        /// The workflow.
        workflow: String,
        /// Records migrated so far.
        migrated: u64,
        /// Records still to visit.
        remaining: u64,
        /// Records whose migration failed.
        failed: u64,
        /// Records per second over the last batch.
        rate_per_second: f64,
    },
    /// A background migration could not migrate a record; it is left as it was.
    MigrationRecordFailed {
        /// The workflow.
        workflow: String,
        /// The instance.
        id: InstanceId,
        /// Why.
        reason: String,
    },
    /// A background migration visited every record.
    MigrationFinished {
        /// The workflow.
        workflow: String,
        /// Records migrated.
        migrated: u64,
        /// Records whose migration failed.
        failed: u64,
    },
    /// A version's code was registered.
    VersionRegistered {
        /// The version.
        key: VersionKey,
    },
    /// An instance started on a version.
    InstanceStarted {
        /// The instance.
        id: InstanceId,
        /// The version it is pinned to.
        key: VersionKey,
    },
    /// An instance finished.
    InstanceFinished {
        /// The instance.
        id: InstanceId,
        /// Its version.
        key: VersionKey,
        /// Completed, failed or cancelled.
        status: InstanceStatus,
    },
    /// A version stopped taking new instances and has live ones.
    VersionDraining {
        /// The version.
        key: VersionKey,
        /// Its counts at that moment.
        counters: VersionCounters,
    },
    /// A drain was undone: the version takes new instances again.
    VersionActivated {
        /// The version.
        key: VersionKey,
        /// Its counts at that moment.
        counters: VersionCounters,
    },
    /// A version's last instance finished: its code can be removed.
    VersionDrained {
        /// The version.
        key: VersionKey,
        /// Its final counts.
        counters: VersionCounters,
    },
    /// A version was retired.
    VersionRetired {
        /// The version.
        key: VersionKey,
    },
    /// Live instances of a version whose code is not registered were parked at open.
    InstancesParked {
        /// The version.
        key: VersionKey,
        /// How many.
        count: u64,
    },
    /// Parked instances resumed because their version was registered.
    InstancesResumed {
        /// The version.
        key: VersionKey,
        /// How many.
        count: u64,
    },
    /// A config's routing rules took effect.
    ConfigApplied {
        /// Where the config came from (a file name).
        source: String,
        /// Its generation in the store's config history.
        generation: u64,
        /// What it changed for routing, one line per change (empty if nothing).
        changes: Vec<String>,
    },
    /// An earlier generation's config was applied again, as a new generation.
    ConfigRestored {
        /// The generation restored.
        restored: u64,
        /// The generation it was applied as.
        generation: u64,
    },
    /// A config was refused; the config in force is unchanged.
    ConfigRejected {
        /// Where the config came from.
        source: String,
        /// Why, naming the key.
        reason: String,
    },
    /// A schedule's fire time could not start an instance (the fire counts as handled).
    ScheduleFireFailed {
        /// The schedule.
        schedule: String,
        /// The fire time (ms since the Unix epoch).
        fire_ms: u64,
        /// Why.
        reason: String,
    },
    /// An instance was quarantined: it runs nothing until an operator cancels it.
    InstanceQuarantined {
        /// The instance.
        id: InstanceId,
        /// Why.
        reason: String,
    },
    /// An operator terminated an instance: it ended cancelled without running another step (said
    /// by the worker that committed it, after its `InstanceFinished`).
    InstanceTerminated {
        /// The instance.
        id: InstanceId,
        /// Its version.
        key: VersionKey,
        /// Why, as the operator said.
        reason: String,
        /// The step whose running attempt was abandoned, if one was running.
        abandoned_step: Option<String>,
    },
}

/// Fan-out of events to subscribers, bounded.
pub(crate) struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl EventBus {
    /// A bus keeping at most `capacity` events per lagging subscriber.
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        EventBus { sender }
    }

    /// Publishes an event; without subscribers it is dropped.
    pub(crate) fn emit(&self, event: Event) {
        tracing::debug!(?event, "event");
        let _ = self.sender.send(event);
    }

    /// A new subscription receiving events published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// How many subscribers there are now.
    pub(crate) fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}
