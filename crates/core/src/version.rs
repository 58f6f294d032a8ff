//! A version's lifecycle status and its per-version counts: what the store persists for each
//! version and the registry, rollouts and metrics read.

use serde::{Deserialize, Serialize};

use crate::instance::InstanceStatus;
use crate::measure::{add_totals, MeasureTotals};

/// The lifecycle status of a workflow version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VersionStatus {
    /// May receive new instances.
    Active,
    /// Receives no new instances; some of its instances are still live.
    Draining,
    /// Receives no new instances and has no live instance: its code may be removed.
    Drained,
    /// Taken out of service for good; it had no live instance when retired.
    Retired,
}

impl VersionStatus {
    /// Its place in the lifecycle, which moves forward but for a drain undone.
    pub fn lifecycle_rank(self) -> u8 {
        match self {
            VersionStatus::Active => 0,
            VersionStatus::Draining => 1,
            VersionStatus::Drained => 2,
            VersionStatus::Retired => 3,
        }
    }
}

/// Per-version counts, persisted in the same commit as the instance records they count.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VersionCounters {
    /// Instances that have not finished (including parked and quarantined ones).
    pub live: u64,
    /// Instances ever started on the version.
    pub started: u64,
    /// Instances that completed.
    pub completed: u64,
    /// Instances that failed.
    pub failed: u64,
    /// Instances that were cancelled.
    pub cancelled: u64,
    /// Instances moved to this version from another (format 2).
    #[serde(default)]
    pub moved_in: u64,
    /// Instances moved from this version to another (format 2).
    #[serde(default)]
    pub moved_out: u64,
    /// Ended (failed or cancelled) instances revived on this version: live on it again. The
    /// counts of the version they ended on keep their ending.
    #[serde(default)]
    pub revived: u64,
    /// When the first instance started (ms since the Unix epoch).
    pub first_start_ms: Option<u64>,
    /// When the last instance started (ms since the Unix epoch).
    pub last_start_ms: Option<u64>,
    /// What the version's finished instances recorded of its measures, by measure: added by the
    /// commit that finishes each instance, on the version it finished on.
    #[serde(default, skip_serializing_if = "MeasureTotals::is_empty")]
    pub measures: MeasureTotals,
    /// Its shadow instances (a rollout's shadow stage): counted here, not above, but for `live`,
    /// which counts them too (their code must stay while they run).
    #[serde(default, skip_serializing_if = "ShadowCounters::is_empty")]
    pub shadow: ShadowCounters,
}

/// What a version's shadow instances did, or a change to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShadowCounters {
    /// Shadow instances started.
    pub started: u64,
    /// Of which completed.
    pub completed: u64,
    /// Of which failed.
    pub failed: u64,
    /// Of which cancelled.
    pub cancelled: u64,
    /// What the finished ones recorded of the version's measures.
    #[serde(default, skip_serializing_if = "MeasureTotals::is_empty")]
    pub measures: MeasureTotals,
}

impl ShadowCounters {
    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        *self == ShadowCounters::default()
    }

    /// Shadow instances that finished.
    pub fn finished(&self) -> u64 {
        self.completed + self.failed + self.cancelled
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &ShadowCounters) {
        self.started += other.started;
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        add_totals(&mut self.measures, &other.measures);
    }
}

impl VersionCounters {
    /// Applies a change.
    pub fn apply(&mut self, delta: &CounterDelta) {
        self.live = self.live.saturating_add_signed(delta.live);
        self.started += delta.started;
        self.completed += delta.completed;
        self.failed += delta.failed;
        self.cancelled += delta.cancelled;
        self.moved_in += delta.moved_in;
        self.moved_out += delta.moved_out;
        self.revived += delta.revived;
        if let Some(at) = delta.started_at_ms {
            self.first_start_ms = Some(self.first_start_ms.map_or(at, |first| first.min(at)));
            self.last_start_ms = Some(self.last_start_ms.map_or(at, |last| last.max(at)));
        }
        add_totals(&mut self.measures, &delta.measures);
        self.shadow.add(&delta.shadow);
    }
}

/// A change to a version's counters, applied inside a commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CounterDelta {
    /// Change of the live count.
    pub live: i64,
    /// Instances started.
    pub started: u64,
    /// Instances completed.
    pub completed: u64,
    /// Instances failed.
    pub failed: u64,
    /// Instances cancelled.
    pub cancelled: u64,
    /// Instances moved in.
    pub moved_in: u64,
    /// Instances moved out.
    pub moved_out: u64,
    /// Instances revived on the version.
    pub revived: u64,
    /// The start time of a started instance.
    pub started_at_ms: Option<u64>,
    /// Measure totals to add: what finishing instances recorded.
    pub measures: MeasureTotals,
    /// Changes to the shadow counts (a shadow instance's start and finish change `live` too).
    pub shadow: ShadowCounters,
}

impl CounterDelta {
    /// The change for one instance starting at `at_ms`.
    pub fn start(at_ms: u64) -> Self {
        CounterDelta {
            live: 1,
            started: 1,
            started_at_ms: Some(at_ms),
            ..CounterDelta::default()
        }
    }

    /// The change for `count` instances moving in (`incoming`) or out of a version.
    pub fn moved(count: u64, incoming: bool) -> Self {
        if incoming {
            CounterDelta {
                live: count as i64,
                moved_in: count,
                ..CounterDelta::default()
            }
        } else {
            CounterDelta {
                live: -(count as i64),
                moved_out: count,
                ..CounterDelta::default()
            }
        }
    }

    /// The change for `count` ended instances revived on a version: live on it again.
    pub fn revived(count: u64) -> Self {
        CounterDelta {
            live: count as i64,
            revived: count,
            ..CounterDelta::default()
        }
    }

    /// Adds another change (what a group of commits does to one version). Start times are not
    /// added up: a store that sums changes keeps the first and last start itself.
    pub fn add(&mut self, other: &CounterDelta) {
        self.live += other.live;
        self.started += other.started;
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.moved_in += other.moved_in;
        self.moved_out += other.moved_out;
        self.revived += other.revived;
        add_totals(&mut self.measures, &other.measures);
        self.shadow.add(&other.shadow);
    }

    /// The change for one shadow instance starting: live, but not started as a real one.
    pub fn shadow_start() -> Self {
        CounterDelta {
            live: 1,
            shadow: ShadowCounters {
                started: 1,
                ..ShadowCounters::default()
            },
            ..CounterDelta::default()
        }
    }

    /// The change for one shadow instance finishing with `status` (completed, failed, else
    /// cancelled), having recorded `measures`.
    pub fn shadow_finish(status: InstanceStatus, measures: MeasureTotals) -> Self {
        let (completed, failed, cancelled) = ended(status);
        CounterDelta {
            live: -1,
            shadow: ShadowCounters {
                completed,
                failed,
                cancelled,
                measures,
                ..ShadowCounters::default()
            },
            ..CounterDelta::default()
        }
    }

    /// The change for one instance finishing with `status` (completed, failed, else cancelled).
    pub fn finish(status: InstanceStatus) -> Self {
        let (completed, failed, cancelled) = ended(status);
        CounterDelta {
            live: -1,
            completed,
            failed,
            cancelled,
            ..CounterDelta::default()
        }
    }
}

/// One finish with `status`, as (completed, failed, cancelled) counts: completed, failed, else
/// cancelled.
fn ended(status: InstanceStatus) -> (u64, u64, u64) {
    match status {
        InstanceStatus::Completed => (1, 0, 0),
        InstanceStatus::Failed => (0, 1, 0),
        _ => (0, 0, 1),
    }
}
