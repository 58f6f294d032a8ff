//! Moving instances between versions: step mappings, the request, the per-instance verdict of a
//! dry run, and the pure transformation of a record that a move commits.

use std::collections::HashMap;
use std::fmt;

use semver::Version;

use super::chain::{MigrationChains, MigrationFailure};
use crate::instance::{
    InstanceId, InstanceRecord, InstanceStatus, MoveCause, MoveStamp, Phase, VersionKey, RECORD_FORMAT,
};
use crate::version::VersionStatus;
use crate::workflow::VersionCode;

/// How the steps of one version map to the steps of another, for steps that were renamed.
/// Steps not named keep their name. The mapping also serves moves in the other direction, read
/// backwards.
#[derive(Debug, Clone)]
pub struct StepMapping {
    /// The workflow.
    pub workflow: String,
    /// The version whose step names are mapped.
    pub from: Version,
    /// The version they map to.
    pub to: Version,
    /// Old step name to new step name, for the steps that were renamed.
    pub steps: HashMap<String, String>,
}

impl StepMapping {
    /// A mapping from version `from` to version `to` of `workflow`.
    pub fn new(workflow: impl Into<String>, from: Version, to: Version) -> Self {
        StepMapping {
            workflow: workflow.into(),
            from,
            to,
            steps: HashMap::new(),
        }
    }

    /// Step `from_step` of the source version continues as `to_step` of the target.
    pub fn step(mut self, from_step: impl Into<String>, to_step: impl Into<String>) -> Self {
        self.steps.insert(from_step.into(), to_step.into());
        self
    }
}

/// The registered step mappings.
#[derive(Debug, Default, Clone)]
pub struct StepMappings {
    by_versions: HashMap<(String, Version, Version), HashMap<String, String>>,
}

impl StepMappings {
    /// Adds (or extends) the mapping between two versions.
    pub fn register(&mut self, mapping: StepMapping) {
        self.by_versions
            .entry((mapping.workflow, mapping.from, mapping.to))
            .or_default()
            .extend(mapping.steps);
    }

    /// The step of version `to` where an instance at `step` of version `from` continues: the
    /// request's own mapping, else a registered one (either direction), else the same name.
    pub fn resolve<'a>(
        &'a self,
        workflow: &str,
        from: &Version,
        to: &Version,
        step: &'a str,
        extra: &'a HashMap<String, String>,
    ) -> &'a str {
        if let Some(mapped) = extra.get(step) {
            return mapped;
        }
        let forward = self.by_versions.get(&(workflow.to_string(), from.clone(), to.clone()));
        if let Some(mapped) = forward.and_then(|steps| steps.get(step)) {
            return mapped;
        }
        let backward = self.by_versions.get(&(workflow.to_string(), to.clone(), from.clone()));
        if let Some((source, _)) = backward.and_then(|steps| steps.iter().find(|(_, target)| *target == step)) {
            return source;
        }
        step
    }
}

/// Which live instances to move, where to, and how.
#[derive(Debug, Clone)]
pub struct MoveRequest {
    /// The workflow.
    pub workflow: String,
    /// The version they move to.
    pub target: Version,
    /// Only instances pinned to this version.
    pub from_version: Option<Version>,
    /// Only instances with this status.
    pub status: Option<InstanceStatus>,
    /// Only these instances.
    pub ids: Option<Vec<InstanceId>>,
    /// Step renames for this move, on top of the registered mappings.
    pub steps: HashMap<String, String>,
    /// How many instances one commit moves (default 500).
    pub batch_size: usize,
}

impl MoveRequest {
    /// Moves live instances of `workflow` to version `target`.
    pub fn new(workflow: impl Into<String>, target: Version) -> Self {
        MoveRequest {
            workflow: workflow.into(),
            target,
            from_version: None,
            status: None,
            ids: None,
            steps: HashMap::new(),
            batch_size: 500,
        }
    }

    /// Only instances pinned to `version`.
    pub fn from_version(mut self, version: Version) -> Self {
        self.from_version = Some(version);
        self
    }

    /// Only instances with `status`.
    pub fn with_status(mut self, status: InstanceStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only these instances.
    pub fn ids(mut self, ids: impl IntoIterator<Item = InstanceId>) -> Self {
        self.ids = Some(ids.into_iter().collect());
        self
    }

    /// Step `from_step` continues as `to_step` on the target.
    pub fn map_step(mut self, from_step: impl Into<String>, to_step: impl Into<String>) -> Self {
        self.steps.insert(from_step.into(), to_step.into());
        self
    }

    /// How many instances one commit moves.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// The target as a version key.
    pub fn target_key(&self) -> VersionKey {
        VersionKey::new(self.workflow.clone(), self.target.clone())
    }
}

/// Why an instance cannot move (now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveRefusal {
    /// It is already on the target version.
    AlreadyOnTarget,
    /// It is a shadow instance: it runs the candidate it shadows, or nothing.
    Shadow,
    /// It has finished.
    Finished,
    /// A step of it is running; it can move at its next step boundary.
    MidStep,
    /// An operator asked to cancel or terminate it.
    CancelRequested,
    /// It was accepted for a worker with its version's code and has not begun there yet.
    NotBegun,
    /// It is quarantined.
    Quarantined {
        /// Why.
        reason: String,
    },
    /// Its own version's code is not registered (it is parked).
    SourceNotRegistered,
    /// The target version cannot take instances in its status.
    TargetNotAccepting {
        /// The target's status.
        status: VersionStatus,
    },
    /// Its current step has no counterpart in the target version.
    NoCounterpartStep {
        /// Its current step.
        step: String,
        /// The name looked for in the target.
        mapped: String,
    },
    /// Its state cannot be migrated to the target's schema.
    NoMigrationPath(MigrationFailure),
    /// The migration function failed on its state (the dry run runs it too).
    MigrationFailed(MigrationFailure),
}

impl fmt::Display for MoveRefusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoveRefusal::AlreadyOnTarget => write!(formatter, "already on the target version"),
            MoveRefusal::Shadow => write!(
                formatter,
                "it is a shadow instance: it runs the candidate it shadows to its end, and only that"
            ),
            MoveRefusal::Finished => write!(formatter, "it has finished"),
            MoveRefusal::MidStep => write!(
                formatter,
                "a step of it is running; it can move at its next step boundary, plan again"
            ),
            MoveRefusal::CancelRequested => write!(formatter, "it is being cancelled or terminated"),
            MoveRefusal::NotBegun => write!(
                formatter,
                "it has not begun: a worker with its version's code builds its state first; move it after its first step"
            ),
            MoveRefusal::Quarantined { reason } => write!(formatter, "it is quarantined: {reason}"),
            MoveRefusal::SourceNotRegistered => {
                write!(formatter, "its version's code is not registered (it is parked)")
            }
            MoveRefusal::TargetNotAccepting { status } => {
                write!(formatter, "the target version is {status:?} and takes no instances")
            }
            MoveRefusal::NoCounterpartStep { step, mapped } if step == mapped => write!(
                formatter,
                "its current step '{step}' has no counterpart in the target; map it with a StepMapping"
            ),
            MoveRefusal::NoCounterpartStep { step, mapped } => write!(
                formatter,
                "its current step '{step}' maps to '{mapped}', which the target does not define"
            ),
            MoveRefusal::NoMigrationPath(failure) | MoveRefusal::MigrationFailed(failure) => {
                write!(formatter, "{failure}")
            }
        }
    }
}

/// One instance's verdict in a move plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveCheck {
    /// The instance.
    pub id: InstanceId,
    /// The version it is on.
    pub from: VersionKey,
    /// Its current step.
    pub step: String,
    /// Where it would continue on the target, or why it cannot move.
    pub verdict: Result<String, MoveRefusal>,
}

/// A dry run of a move: for every selected instance, whether it can move and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovePlan {
    /// The target version.
    pub target: VersionKey,
    /// One verdict per selected instance, in id order.
    pub checks: Vec<MoveCheck>,
}

impl MovePlan {
    /// The instances that can move.
    pub fn movable(&self) -> impl Iterator<Item = &MoveCheck> {
        self.checks.iter().filter(|check| check.verdict.is_ok())
    }

    /// The instances that cannot, with their reasons.
    pub fn refused(&self) -> impl Iterator<Item = &MoveCheck> {
        self.checks.iter().filter(|check| check.verdict.is_err())
    }
}

/// What applying a move did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveReport {
    /// The instances that moved, in id order.
    pub moved: Vec<InstanceId>,
    /// The instances that did not, with the reason found when their turn came.
    pub refused: Vec<MoveCheck>,
}

/// What a move needs to know besides the record.
pub struct MoveContext<'a> {
    /// The code of the version the instance would move to.
    pub target: &'a dyn VersionCode,
    /// That version's status.
    pub target_status: VersionStatus,
    /// The state migrations registered for the workflow.
    pub chains: &'a MigrationChains,
    /// The step mappings registered for the workflow.
    pub mappings: &'a StepMappings,
    /// Step renames the move request adds to the registered mappings.
    pub extra_steps: &'a HashMap<String, String>,
}

impl MoveContext<'_> {
    /// The verdict for `record` at a step boundary: the target step, or why it cannot move. Runs
    /// no migration function.
    pub fn check(&self, record: &InstanceRecord) -> Result<String, MoveRefusal> {
        let target_version = &**self.target.version();
        if record.key.version == *target_version {
            return Err(MoveRefusal::AlreadyOnTarget);
        }
        if record.is_shadow() {
            return Err(MoveRefusal::Shadow);
        }
        match &record.phase {
            phase if phase.is_terminal() => return Err(MoveRefusal::Finished),
            Phase::Quarantined { reason } => return Err(MoveRefusal::Quarantined { reason: reason.clone() }),
            Phase::Accepted { .. } => return Err(MoveRefusal::NotBegun),
            _ => {}
        }
        if !matches!(self.target_status, VersionStatus::Active | VersionStatus::Draining) {
            return Err(MoveRefusal::TargetNotAccepting {
                status: self.target_status,
            });
        }
        self.target_step(record)
    }

    /// Where `record`'s cursor continues on the target (mapped by the request, a registered
    /// mapping, else the same name), once the target defines that step and its state has a
    /// migration path to the target's schema.
    pub(crate) fn target_step(&self, record: &InstanceRecord) -> Result<String, MoveRefusal> {
        let mapped = self.mappings.resolve(
            &record.key.workflow,
            &record.key.version,
            self.target.version(),
            &record.step,
            self.extra_steps,
        );
        if !self.target.has_step(mapped) {
            return Err(MoveRefusal::NoCounterpartStep {
                step: record.step.clone(),
                mapped: mapped.to_string(),
            });
        }
        self.chains
            .path_exists(&record.key.workflow, record.state.schema, self.target.state_schema())
            .map_err(MoveRefusal::NoMigrationPath)?;
        Ok(mapped.to_string())
    }

    /// `record` on the target at `to_step`: version, cursor and state migrated to the target's
    /// schema (runs the migration functions), at `now_ms`, in this build's format.
    pub(crate) fn retarget(
        &self,
        record: &InstanceRecord,
        to_step: String,
        now_ms: u64,
    ) -> Result<InstanceRecord, MoveRefusal> {
        let state = self
            .chains
            .migrate(
                &record.key.workflow,
                &record.state.bytes,
                record.state.schema,
                self.target.state_schema(),
            )
            .map_err(MoveRefusal::MigrationFailed)?;
        let mut moved = record.clone();
        moved.key.version = (**self.target.version()).clone();
        moved.step = to_step;
        moved.state.bytes = state;
        moved.state.schema = self.target.state_schema();
        moved.pinned_reason = None;
        moved.updated_at_ms = now_ms;
        moved.format = RECORD_FORMAT;
        Ok(moved)
    }

    /// The verdict and the moved record together: `check`, then `apply` at the step it names.
    pub fn move_record(
        &self,
        record: &InstanceRecord,
        cause: MoveCause,
        now_ms: u64,
    ) -> Result<InstanceRecord, MoveRefusal> {
        self.check(record)
            .and_then(|step| self.apply(record, step, cause, now_ms))
    }

    /// The record after moving it to the target at `to_step`: version, cursor and migrated state,
    /// stamped with the move.
    pub fn apply(
        &self,
        record: &InstanceRecord,
        to_step: String,
        cause: MoveCause,
        now_ms: u64,
    ) -> Result<InstanceRecord, MoveRefusal> {
        let mut moved = self.retarget(record, to_step, now_ms)?;
        moved.moves.push(MoveStamp {
            from: record.key.version.clone(),
            to: moved.key.version.clone(),
            from_step: record.step.clone(),
            to_step: moved.step.clone(),
            from_schema: record.state.schema,
            to_schema: moved.state.schema,
            cause,
            at_ms: now_ms,
        });
        Ok(moved)
    }
}
