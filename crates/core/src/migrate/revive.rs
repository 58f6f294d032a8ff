//! Reviving ended instances: which failed or cancelled instances a revival selects, the
//! per-instance verdict of its dry run, and the pure transformation of a record that a revival
//! commits (on its own version or another, at the step it ended on or a mapped one, its state
//! migrated along the chain).

use std::collections::HashMap;
use std::fmt;

use semver::Version;

use super::moves::{MoveContext, MoveRefusal};
use crate::history::ReviveStamp;
use crate::instance::{InstanceId, InstanceRecord, InstanceStatus, PersistedWake, Phase, VersionKey};
use crate::version::VersionStatus;

/// Which ended instances to revive, where, and how.
#[derive(Debug, Clone)]
pub struct ReviveRequest {
    /// The workflow.
    pub workflow: String,
    /// The version they are revived on; `None`: each on the version it ended on.
    pub target: Option<Version>,
    /// Only instances that ended on this version.
    pub from_version: Option<Version>,
    /// Only instances that ended so: `Failed` or `Cancelled` (`None`: either).
    pub status: Option<InstanceStatus>,
    /// Only failed instances whose failure reason contains this text.
    pub reason_contains: Option<String>,
    /// Only instances that ended at or after this time (ms since the Unix epoch).
    pub ended_after_ms: Option<u64>,
    /// Only instances that ended before this time (ms since the Unix epoch).
    pub ended_before_ms: Option<u64>,
    /// Only these instances.
    pub ids: Option<Vec<InstanceId>>,
    /// Step renames on top of the registered mappings: the step an instance ended on (key) is
    /// taken up at another (value), also on its own version.
    pub steps: HashMap<String, String>,
    /// How many instances one commit revives (default 500).
    pub batch_size: usize,
}

impl ReviveRequest {
    /// Revives failed and cancelled instances of `workflow`, each on the version it ended on.
    pub fn new(workflow: impl Into<String>) -> Self {
        ReviveRequest {
            workflow: workflow.into(),
            target: None,
            from_version: None,
            status: None,
            reason_contains: None,
            ended_after_ms: None,
            ended_before_ms: None,
            ids: None,
            steps: HashMap::new(),
            batch_size: 500,
        }
    }

    /// Revives them on `version` (a version that fixes what failed them).
    pub fn on_version(mut self, version: Version) -> Self {
        self.target = Some(version);
        self
    }

    /// Only instances that ended on `version`.
    pub fn from_version(mut self, version: Version) -> Self {
        self.from_version = Some(version);
        self
    }

    /// Only instances that ended with `status` (`Failed` or `Cancelled`).
    pub fn with_status(mut self, status: InstanceStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only failed instances whose failure reason contains `text`.
    pub fn reason_contains(mut self, text: impl Into<String>) -> Self {
        self.reason_contains = Some(text.into());
        self
    }

    /// Only instances that ended in `[after_ms, before_ms)` (ms since the Unix epoch; `None`:
    /// unbounded on that side).
    pub fn ended_between(mut self, after_ms: Option<u64>, before_ms: Option<u64>) -> Self {
        self.ended_after_ms = after_ms;
        self.ended_before_ms = before_ms;
        self
    }

    /// Only these instances.
    pub fn ids(mut self, ids: impl IntoIterator<Item = InstanceId>) -> Self {
        self.ids = Some(ids.into_iter().collect());
        self
    }

    /// An instance that ended on `from_step` is taken up at `to_step`.
    pub fn map_step(mut self, from_step: impl Into<String>, to_step: impl Into<String>) -> Self {
        self.steps.insert(from_step.into(), to_step.into());
        self
    }

    /// How many instances one commit revives.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// Where `record` is revived: the request's target, else the version it ended on.
    pub fn target_of(&self, record: &InstanceRecord) -> VersionKey {
        match &self.target {
            Some(version) => VersionKey::new(self.workflow.clone(), version.clone()),
            None => record.key.clone(),
        }
    }

    /// Whether the request selects `record` (an instance of its workflow, live or ended: one
    /// that has not ended is selected by id only, and refused with why).
    pub fn selects(&self, record: &InstanceRecord) -> bool {
        let ended_at = record.updated_at_ms;
        record.key.workflow == self.workflow
            && self
                .from_version
                .as_ref()
                .is_none_or(|version| *version == record.key.version)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&record.id))
            && (self.ids.is_some() || ended_as(&record.phase).is_some())
            && self
                .status
                .is_none_or(|status| status == InstanceStatus::of_phase(&record.phase))
            && self
                .reason_contains
                .as_deref()
                .is_none_or(|text| matches!(&record.phase, Phase::Failed { reason } if reason.contains(text)))
            && self.ended_after_ms.is_none_or(|after| ended_at >= after)
            && self.ended_before_ms.is_none_or(|before| ended_at < before)
    }
}

/// How a revivable instance ended: `Some(None)` cancelled, `Some(Some(reason))` failed, `None`
/// not revivable (live or completed).
fn ended_as(phase: &Phase) -> Option<Option<&str>> {
    match phase {
        Phase::Failed { reason } => Some(Some(reason)),
        Phase::Cancelled => Some(None),
        _ => None,
    }
}

/// Why an instance cannot be revived (now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviveRefusal {
    /// It did not fail and was not cancelled: it is live, or it completed.
    NotEnded {
        /// Its status.
        status: InstanceStatus,
    },
    /// It failed before its first step (its input did not build a state): there is nothing to
    /// take up; start it again.
    NeverBegan,
    /// It is a shadow instance: its run was a comparison, not work to finish.
    Shadow,
    /// The target version takes no instances any more.
    TargetRetired,
    /// The target version's code is not registered in the process reviving it.
    TargetNotRegistered,
    /// The target has no step to take it up at, or its state cannot be migrated there.
    Step(MoveRefusal),
    /// It changed since it was selected (revived by another process, or removed by retention).
    Changed,
}

impl fmt::Display for ReviveRefusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReviveRefusal::NotEnded { status } => write!(
                formatter,
                "it is {}; only failed and cancelled instances are revived",
                status.as_str()
            ),
            ReviveRefusal::Shadow => write!(
                formatter,
                "it is a shadow instance: its run was a comparison with a real one, not work to finish"
            ),
            ReviveRefusal::NeverBegan => write!(
                formatter,
                "it failed before its first step (its input did not build a state); start it again"
            ),
            ReviveRefusal::TargetRetired => write!(
                formatter,
                "the target version is retired and takes no instances; revive it on another version"
            ),
            ReviveRefusal::TargetNotRegistered => write!(
                formatter,
                "the target version's code is not registered here; register it, or revive on a version that is"
            ),
            ReviveRefusal::Step(refusal) => write!(formatter, "{refusal}"),
            ReviveRefusal::Changed => write!(
                formatter,
                "it changed since it was selected (revived elsewhere, or removed by retention); plan again"
            ),
        }
    }
}

/// One instance's verdict in a revival plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviveCheck {
    /// The instance.
    pub id: InstanceId,
    /// The version it ended on.
    pub from: VersionKey,
    /// How it ended: `Failed` or `Cancelled` (or its status, when it did not end so).
    pub status: InstanceStatus,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// The step it ended on.
    pub step: String,
    /// The version it would be revived on.
    pub target: VersionKey,
    /// The step it would be taken up at, or why it cannot be revived.
    pub verdict: Result<String, ReviveRefusal>,
}

/// A dry run of a revival: for every selected instance, where it would be taken up and why not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevivePlan {
    /// One verdict per selected instance, in id order.
    pub checks: Vec<ReviveCheck>,
}

impl RevivePlan {
    /// The instances that can be revived.
    pub fn revivable(&self) -> impl Iterator<Item = &ReviveCheck> {
        self.checks.iter().filter(|check| check.verdict.is_ok())
    }

    /// The instances that cannot, with their reasons.
    pub fn refused(&self) -> impl Iterator<Item = &ReviveCheck> {
        self.checks.iter().filter(|check| check.verdict.is_err())
    }
}

/// What applying a revival did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviveReport {
    /// The instances revived, in id order.
    pub revived: Vec<InstanceId>,
    /// The instances that were not, with the reason found when their turn came.
    pub refused: Vec<ReviveCheck>,
    /// Versions that had drained and are not any more: a revived instance is live on them, so
    /// their code must stay.
    pub undrained: Vec<VersionKey>,
}

impl ReviveCheck {
    /// The check of `record` against its `target`, with `verdict`.
    pub fn of(record: &InstanceRecord, target: VersionKey, verdict: Result<String, ReviveRefusal>) -> Self {
        ReviveCheck {
            id: record.id,
            from: record.key.clone(),
            status: InstanceStatus::of_phase(&record.phase),
            failure: match &record.phase {
                Phase::Failed { reason } => Some(reason.clone()),
                _ => None,
            },
            step: record.step.clone(),
            target,
            verdict,
        }
    }
}

impl MoveContext<'_> {
    /// `record` revived on the target: live again at the step it ended on (or the one the
    /// request maps it to), attempt 1, its state migrated to the target's schema (the migration
    /// functions run), with the stamp its history records. Or why it cannot be.
    ///
    /// The revived step runs as if the step before had gone on to it: a signal that woke the
    /// attempt that failed is not delivered again.
    pub fn revive_record(
        &self,
        record: &InstanceRecord,
        now_ms: u64,
    ) -> Result<(InstanceRecord, ReviveStamp), ReviveRefusal> {
        let Some(failure) = ended_as(&record.phase) else {
            return Err(ReviveRefusal::NotEnded {
                status: InstanceStatus::of_phase(&record.phase),
            });
        };
        if record.step.is_empty() {
            return Err(ReviveRefusal::NeverBegan);
        }
        if record.is_shadow() {
            return Err(ReviveRefusal::Shadow);
        }
        if self.target_status == VersionStatus::Retired {
            return Err(ReviveRefusal::TargetRetired);
        }
        let to_step = self.target_step(record).map_err(ReviveRefusal::Step)?;
        let mut revived = self.retarget(record, to_step, now_ms).map_err(ReviveRefusal::Step)?;
        revived.attempt = 1;
        revived.phase = Phase::Ready {
            wake: PersistedWake::Continued,
        };
        revived.last_error = None;
        // What it recorded before it ended counted for the version it ended on, with that end:
        // it starts counting again, so nothing counts twice.
        revived.measures.clear();
        let stamp = ReviveStamp {
            from: record.key.version.clone(),
            to: revived.key.version.clone(),
            from_step: record.step.clone(),
            to_step: revived.step.clone(),
            from_schema: record.state.schema,
            to_schema: revived.state.schema,
            failure: failure.map(str::to_string),
        };
        Ok((revived, stamp))
    }
}
