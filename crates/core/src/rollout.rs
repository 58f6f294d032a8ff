//! Watched rollouts: a candidate version goes through stages of traffic share, each held for a
//! duration and a minimum number of finished instances, while gates compare it with the stable
//! version; a breached gate rolls it back at once, passing the last stage promotes it.
//!
//! Owns the rollout's definition, its persisted record (status, stage, the counters it measures
//! from, every transition) and the decision rule — a pure function of the record and both
//! versions' figures. The runtime feeds it figures, commits its transitions and routes by it.

use std::collections::BTreeMap;
use std::time::Duration;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::measure::MeasureFigure;
use crate::version::VersionCounters;

/// One stage of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredStage", into = "StoredStage")]
pub struct Stage {
    /// The candidate's share of new instances in percent, as given: valid from over 0 to 100,
    /// with at most two decimals (a basis point), checked by [`RolloutSpec::validate`].
    pub percent: f64,
    /// How long the stage lasts at least (ms of the engine's clock).
    pub hold_ms: u64,
    /// How many of the candidate's instances must finish in the stage before it can pass — and
    /// before any gate may decide (in a shadow stage, its shadow instances).
    pub min_finished: u64,
    /// A shadow stage: no real start goes to the candidate; for `percent` % of the starts that
    /// go to the stable version, a shadow instance of the candidate runs beside the real one
    /// with the same input, and the gates judge the candidate on its shadow instances.
    pub shadow: bool,
}

impl Stage {
    /// A stage giving the candidate `percent` % of new instances for at least `hold` and until
    /// `min_finished` of its instances finished.
    pub fn new(percent: f64, hold: Duration, min_finished: u64) -> Self {
        Stage {
            percent,
            hold_ms: crate::time::millis_saturating(hold),
            min_finished,
            shadow: false,
        }
    }

    /// A shadow stage: for `percent` % of the stable version's starts a shadow instance of the
    /// candidate runs beside the real one, for at least `hold` and until `min_finished` shadow
    /// instances finished; no real start goes to the candidate. Shadow stages come first.
    pub fn shadow(percent: f64, hold: Duration, min_finished: u64) -> Self {
        Stage {
            shadow: true,
            ..Stage::new(percent, hold, min_finished)
        }
    }

    /// The candidate's share in basis points (100 = 1 %); exact for a validated stage.
    pub fn basis_points(&self) -> u16 {
        crate::routing::percent_to_basis_points(self.percent).unwrap_or(0)
    }
}

/// A stage as the store keeps it: only validated stages are stored, so basis points hold the
/// share exactly, as they have since the first record format.
#[derive(Serialize, Deserialize)]
struct StoredStage {
    basis_points: u16,
    hold_ms: u64,
    min_finished: u64,
    /// Absent in stages written before shadow stages, and in real ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shadow: bool,
}

impl From<StoredStage> for Stage {
    fn from(stored: StoredStage) -> Self {
        Stage {
            percent: f64::from(stored.basis_points) / 100.0,
            hold_ms: stored.hold_ms,
            min_finished: stored.min_finished,
            shadow: stored.shadow,
        }
    }
}

impl From<Stage> for StoredStage {
    fn from(stage: Stage) -> Self {
        StoredStage {
            basis_points: stage.basis_points(),
            hold_ms: stage.hold_ms,
            min_finished: stage.min_finished,
            shadow: stage.shadow,
        }
    }
}

/// What makes a candidate worse than the stable version. Unset gates are not checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// The candidate's error rate may exceed the stable's by at most this much (0.05 = 5 points).
    pub max_error_rate_increase: Option<f64>,
    /// The candidate's p95 step latency may be at most this multiple of the stable's.
    pub max_latency_multiplier: Option<f64>,
    /// The candidate's success rate (completed among completed and failed) must be at least this.
    pub min_success_rate: Option<f64>,
    /// This many failed candidate instances in a row roll back (that run is its own sample).
    pub max_consecutive_failures: Option<u64>,
    /// Gates on measures the versions declare (cost, quality), each with its own sample.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<MeasureGate>,
    /// In a shadow stage: the share of compared shadow pairs whose outputs (or ends) differ may
    /// be at most this (0.02 = 2 %), once the stage's `min_finished` pairs are compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shadow_mismatch: Option<f64>,
}

/// A gate on a measure both versions declare: bounds on the candidate's figure (for a summed
/// measure its mean per finished instance, for an averaged one its mean value), in the stage.
/// At least one bound is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureGate {
    /// The measure.
    pub measure: String,
    /// The candidate's figure may exceed the stable's by at most this fraction (0.2 = +20 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// The candidate's figure must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The candidate's figure must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// How large a sample each figure needs before the gate decides: finished instances for a
    /// summed measure, recorded values for an averaged one (at least 1).
    #[serde(default = "one")]
    pub min_sample: u64,
}

fn one() -> u64 {
    1
}

impl MeasureGate {
    /// A gate on `measure` without bounds yet, deciding from a sample of 1.
    pub fn new(measure: impl Into<String>) -> MeasureGate {
        MeasureGate {
            measure: measure.into(),
            max_increase: None,
            min: None,
            max: None,
            min_sample: 1,
        }
    }

    /// The candidate's figure may be at most `fraction` above the stable's (0.2 = +20 %).
    pub fn max_increase(mut self, fraction: f64) -> MeasureGate {
        self.max_increase = Some(fraction);
        self
    }

    /// The candidate's figure must be at least `minimum`.
    pub fn min(mut self, minimum: f64) -> MeasureGate {
        self.min = Some(minimum);
        self
    }

    /// The candidate's figure must be at most `maximum`.
    pub fn max(mut self, maximum: f64) -> MeasureGate {
        self.max = Some(maximum);
        self
    }

    /// The gate decides once each figure it compares stands on `sample` instances or values.
    pub fn min_sample(mut self, sample: u64) -> MeasureGate {
        self.min_sample = sample;
        self
    }
}

/// What happens to the candidate's in-flight instances when it is rolled back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnRollback {
    /// They finish on the candidate (the default).
    #[default]
    KeepRunning,
    /// They are moved back to the stable version where a move plan allows (state migration
    /// issue's machinery); the others finish on the candidate.
    MoveBack,
}

/// A rollout's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// Its name, unique in the store.
    pub name: String,
    /// The workflow.
    pub workflow: String,
    /// The version rolled out.
    pub candidate: Version,
    /// The version it is compared with and falls back to.
    pub stable: Version,
    /// The stages, in order of rising share.
    pub stages: Vec<Stage>,
    /// The gates.
    pub gates: Gates,
    /// What a rollback does to the candidate's in-flight instances.
    pub on_rollback: OnRollback,
    /// Asked for without any gate: it passes its stages on time and finished instances alone,
    /// watching nothing. A rollout without gates is refused unless this says so.
    #[serde(default)]
    pub unwatched: bool,
}

/// A rollout definition that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutError {
    /// No stage.
    #[error("rollout '{name}': give at least one stage")]
    NoStages {
        /// The rollout.
        name: String,
    },
    /// A stage's share is not a number over 0 and at most 100 with at most two decimals, or
    /// does not rise over the stage before.
    #[error("rollout '{name}': stages[{stage}] = {percent} %: {reason}")]
    BadShare {
        /// The rollout.
        name: String,
        /// The stage's index (from 0).
        stage: usize,
        /// The share given, in percent.
        percent: f64,
        /// What is wrong with it.
        reason: String,
    },
    /// Candidate and stable are the same version.
    #[error("rollout '{name}': candidate and stable are both {version}")]
    SameVersion {
        /// The rollout.
        name: String,
        /// The version.
        version: Version,
    },
    /// A rate gate outside [0, 1], a multiplier below 1, a count of 0, or a value not finite.
    #[error("rollout '{name}': gates.{gate} = {value} is out of range: it must be {range}")]
    BadGate {
        /// The rollout.
        name: String,
        /// The gate.
        gate: &'static str,
        /// The value given.
        value: f64,
        /// What is allowed.
        range: &'static str,
    },
    /// A gate on a measure that cannot run: a bound out of range, no bound, a bad sample, a
    /// measure gated twice, or a measure a version does not declare.
    #[error("rollout '{name}': gates.measures[{index}] ('{measure}'): {problem}")]
    BadMeasureGate {
        /// The rollout.
        name: String,
        /// The gate's index in `gates.measures`.
        index: usize,
        /// The measure it names.
        measure: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong, with the value given.
        problem: String,
    },
    /// The name is taken, or the workflow already has an active rollout.
    #[error("rollout '{name}': {reason}")]
    Conflict {
        /// The rollout.
        name: String,
        /// Why.
        reason: String,
    },
    /// No gate set, and no word that the rollout is meant to watch nothing.
    #[error("rollout '{name}' has no gate, so it would watch nothing and promote the candidate however it does; set at least one gate (max_error_rate_increase, max_latency_multiplier, min_success_rate, max_consecutive_failures, max_shadow_mismatch, measures), or ask for an unwatched rollout (unwatched = true in the config, \"unwatched\": true in the API, --unwatched in the CLI)")]
    NoGates {
        /// The rollout.
        name: String,
    },
    /// A version an active rollout compares or routes to cannot be drained under it.
    #[error("{workflow} {version} is the {role} of rollout '{name}', which is still active; draining it would strand the rollout. Finish it, or roll it back first (strata rollout rollback {name}), then drain")]
    VersionInRollout {
        /// The rollout.
        name: String,
        /// The workflow.
        workflow: String,
        /// The version asked to drain.
        version: Version,
        /// `candidate` or `stable`.
        role: &'static str,
    },
    /// No rollout of that name.
    #[error("no rollout named '{name}'")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// The operation does not apply in the rollout's status.
    #[error("rollout '{name}' is {status:?}; {operation} applies to a running or paused rollout")]
    Finished {
        /// The rollout.
        name: String,
        /// Its status.
        status: RolloutStatus,
        /// What was asked.
        operation: &'static str,
    },
}

impl RolloutError {
    /// The field of the rollout's definition the error is about (`stages[1]`,
    /// `gates.min_success_rate`), for naming the key of a config file's `[[rollouts]]` entry.
    pub fn field(&self) -> String {
        match self {
            RolloutError::NoStages { .. } => "stages".to_string(),
            RolloutError::BadShare { stage, .. } => format!("stages[{stage}]"),
            RolloutError::SameVersion { .. } => "candidate".to_string(),
            RolloutError::BadGate { gate, .. } => format!("gates.{gate}"),
            RolloutError::BadMeasureGate { index, field, .. } => format!("gates.measures[{index}].{field}"),
            RolloutError::NoGates { .. } => "gates".to_string(),
            RolloutError::Conflict { .. }
            | RolloutError::Unknown { .. }
            | RolloutError::Finished { .. }
            | RolloutError::VersionInRollout { .. } => "name".to_string(),
        }
    }
}

impl RolloutSpec {
    /// A rollout of `candidate` over `stable` of `workflow`, named `<workflow>@<candidate>`,
    /// without stages or gates yet.
    pub fn new(workflow: impl Into<String>, candidate: Version, stable: Version) -> Self {
        let workflow = workflow.into();
        RolloutSpec {
            name: format!("{workflow}@{candidate}"),
            workflow,
            candidate,
            stable,
            stages: Vec::new(),
            gates: Gates::default(),
            on_rollback: OnRollback::KeepRunning,
            unwatched: false,
        }
    }

    /// Runs it without any gate: stages pass on time and finished instances alone. Without
    /// this, a rollout with no gate is refused ([`RolloutError::NoGates`]).
    pub fn unwatched(mut self) -> Self {
        self.unwatched = true;
        self
    }

    /// Renames it.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a stage.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stages.push(stage);
        self
    }

    /// Sets the gates.
    pub fn gates(mut self, gates: Gates) -> Self {
        self.gates = gates;
        self
    }

    /// Sets what a rollback does to in-flight candidate instances.
    pub fn on_rollback(mut self, on_rollback: OnRollback) -> Self {
        self.on_rollback = on_rollback;
        self
    }

    /// Checks the definition on its own (the engine checks the versions).
    pub fn validate(&self) -> Result<(), RolloutError> {
        let name = || self.name.clone();
        if self.stages.is_empty() {
            return Err(RolloutError::NoStages { name: name() });
        }
        if self.candidate == self.stable {
            return Err(RolloutError::SameVersion {
                name: name(),
                version: self.candidate.clone(),
            });
        }
        if let Some(index) = self
            .stages
            .windows(2)
            .position(|pair| !pair[0].shadow && pair[1].shadow)
        {
            let stage = &self.stages[index + 1];
            return Err(RolloutError::BadShare {
                name: name(),
                stage: index + 1,
                percent: stage.percent,
                reason: "shadow stages come first, before the candidate serves real starts".into(),
            });
        }
        if self.stages.iter().all(|stage| stage.shadow) {
            let last = self.stages.len() - 1;
            return Err(RolloutError::BadShare {
                name: name(),
                stage: last,
                percent: self.stages[last].percent,
                reason: "a rollout ends by serving real starts: give a stage that is not shadow after the shadow ones"
                    .into(),
            });
        }
        let mut previous: Option<&Stage> = None;
        for (index, stage) in self.stages.iter().enumerate() {
            // Shares rise among shadow stages, then afresh among real ones.
            if previous.is_some_and(|previous| previous.shadow && !stage.shadow) {
                previous = None;
            }
            let refuse = |reason: String| RolloutError::BadShare {
                name: name(),
                stage: index,
                percent: stage.percent,
                reason,
            };
            let basis_points = crate::routing::percent_to_basis_points(stage.percent)
                .filter(|basis_points| *basis_points > 0)
                .ok_or_else(|| {
                    refuse("a share must be a number over 0 and at most 100, with at most two decimals".into())
                })?;
            if let Some(previous) = previous.filter(|previous| basis_points <= previous.basis_points()) {
                return Err(refuse(format!(
                    "shares must rise from stage to stage, and stages[{}] gives {} %",
                    index - 1,
                    previous.percent
                )));
            }
            previous = Some(stage);
        }
        if self.gates == Gates::default() && !self.unwatched {
            return Err(RolloutError::NoGates { name: name() });
        }
        let gate = |gate: &'static str, value: Option<f64>, valid: fn(f64) -> bool, range: &'static str| match value {
            Some(value) if !(value.is_finite() && valid(value)) => Err(RolloutError::BadGate {
                name: name(),
                gate,
                value,
                range,
            }),
            _ => Ok(()),
        };
        let rate = |value: f64| (0.0..=1.0).contains(&value);
        let rate_range = "a number from 0 to 1 (0.05 = 5 %)";
        gate(
            "max_error_rate_increase",
            self.gates.max_error_rate_increase,
            rate,
            rate_range,
        )?;
        gate("min_success_rate", self.gates.min_success_rate, rate, rate_range)?;
        gate("max_shadow_mismatch", self.gates.max_shadow_mismatch, rate, rate_range)?;
        if self.gates.max_shadow_mismatch.is_some() && !self.stages.iter().any(|stage| stage.shadow) {
            return Err(RolloutError::BadGate {
                name: name(),
                gate: "max_shadow_mismatch",
                value: self.gates.max_shadow_mismatch.unwrap_or_default(),
                range: "set only with a shadow stage (Stage::shadow, shadow_stages = [..]), whose pairs it judges",
            });
        }
        gate(
            "max_latency_multiplier",
            self.gates.max_latency_multiplier,
            |value| value >= 1.0,
            "a number of 1 or more (1.5 = 50 % slower than the stable)",
        )?;
        gate(
            "max_consecutive_failures",
            self.gates.max_consecutive_failures.map(|count| count as f64),
            |count| count >= 1.0,
            "a whole number of 1 or more",
        )?;
        for (index, measure_gate) in self.gates.measures.iter().enumerate() {
            let refuse = |field: &'static str, value: f64, problem: &str| RolloutError::BadMeasureGate {
                name: name(),
                index,
                measure: measure_gate.measure.clone(),
                field,
                problem: format!("{field} = {value}: {problem}"),
            };
            if !crate::workflow::valid_measure_name(&measure_gate.measure) {
                return Err(RolloutError::BadMeasureGate {
                    name: name(),
                    index,
                    measure: measure_gate.measure.clone(),
                    field: "measure",
                    problem: "name a measure the versions declare (1 to 64 letters, digits, '_', '-' or '.')".into(),
                });
            }
            if measure_gate.max_increase.is_none() && measure_gate.min.is_none() && measure_gate.max.is_none() {
                return Err(RolloutError::BadMeasureGate {
                    name: name(),
                    index,
                    measure: measure_gate.measure.clone(),
                    field: "max_increase",
                    problem: "set at least one bound: max_increase, min or max".into(),
                });
            }
            if let Some(value) = measure_gate
                .max_increase
                .filter(|value| !(value.is_finite() && *value >= 0.0))
            {
                return Err(refuse(
                    "max_increase",
                    value,
                    "it must be a number of 0 or more (0.2 = +20 %)",
                ));
            }
            for (field, bound) in [("min", measure_gate.min), ("max", measure_gate.max)] {
                if let Some(value) = bound.filter(|value| !value.is_finite()) {
                    return Err(refuse(field, value, "it must be a finite number"));
                }
            }
            if let (Some(min), Some(max)) = (measure_gate.min, measure_gate.max) {
                if min > max {
                    return Err(refuse(
                        "min",
                        min,
                        &format!("it is above max = {max}, so no figure could pass"),
                    ));
                }
            }
            if measure_gate.min_sample == 0 {
                return Err(refuse("min_sample", 0.0, "it must be a whole number of 1 or more"));
            }
            if self.gates.measures[..index]
                .iter()
                .any(|earlier| earlier.measure == measure_gate.measure)
            {
                return Err(RolloutError::BadMeasureGate {
                    name: name(),
                    index,
                    measure: measure_gate.measure.clone(),
                    field: "measure",
                    problem: "the measure has a gate already; put all its bounds in one".into(),
                });
            }
        }
        Ok(())
    }

    /// The measures the gates watch, and whether the stable version's figure is compared too
    /// (a `max_increase` bound).
    pub fn gated_measures(&self) -> impl Iterator<Item = (&str, bool)> {
        self.gates
            .measures
            .iter()
            .map(|gate| (gate.measure.as_str(), gate.max_increase.is_some()))
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutStatus {
    /// Watching the current stage.
    Running,
    /// Held by an operator: routing stays at the stage, nothing is decided, the hold clock stops.
    Paused,
    /// The candidate passed every stage and is the default; the old stable drains.
    Promoted,
    /// The candidate was rolled back; new instances go to the stable version.
    RolledBack,
}

impl RolloutStatus {
    /// Whether the rollout still routes a share to the candidate.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutStatus::Running | RolloutStatus::Paused)
    }
}

/// A gate that decided a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gate {
    /// `max_error_rate_increase`.
    ErrorRateIncrease,
    /// `max_latency_multiplier`.
    LatencyMultiplier,
    /// `min_success_rate`.
    SuccessRate,
    /// `max_consecutive_failures`.
    ConsecutiveFailures,
    /// `max_shadow_mismatch`.
    ShadowMismatch,
    /// A bound of a gate in `measures`.
    Measure {
        /// The measure.
        measure: String,
        /// Which bound.
        bound: MeasureBound,
    },
}

/// Which bound of a [`MeasureGate`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeasureBound {
    /// `max_increase`.
    MaxIncrease,
    /// `min`.
    Min,
    /// `max`.
    Max,
}

impl MeasureBound {
    /// The bound's field in [`MeasureGate`].
    pub fn field(self) -> &'static str {
        match self {
            MeasureBound::MaxIncrease => "max_increase",
            MeasureBound::Min => "min",
            MeasureBound::Max => "max",
        }
    }
}

impl Gate {
    /// The gate's field in [`Gates`] (and in the config file and the API): `min_success_rate`,
    /// or for a measure's gate `measures[quality].min`.
    pub fn field(&self) -> String {
        match self {
            Gate::ErrorRateIncrease => "max_error_rate_increase".to_string(),
            Gate::LatencyMultiplier => "max_latency_multiplier".to_string(),
            Gate::SuccessRate => "min_success_rate".to_string(),
            Gate::ConsecutiveFailures => "max_consecutive_failures".to_string(),
            Gate::ShadowMismatch => "max_shadow_mismatch".to_string(),
            Gate::Measure { measure, bound } => format!("measures[{measure}].{}", bound.field()),
        }
    }
}

/// One version's figures in the current stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Instances that finished in the stage.
    pub finished: u64,
    /// Of which completed.
    pub completed: u64,
    /// Of which failed.
    pub failed: u64,
    /// Step attempts in the window since the stage started.
    pub attempts: u64,
    /// p95 step latency in that window (µs).
    pub p95_step_micros: Option<u64>,
    /// Instances failed in a row up to now.
    pub consecutive_failures: u64,
    /// The figure of each measure the version declares, over the instances that finished in the
    /// stage (absent in records written before measures).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub measures: BTreeMap<String, MeasureFigure>,
    /// In a shadow stage, the candidate's: shadow pairs compared in the stage.
    #[serde(default)]
    pub pairs: u64,
    /// Of which mismatched.
    #[serde(default)]
    pub mismatches: u64,
}

impl Figures {
    /// Mismatched among compared shadow pairs; `None` without a pair.
    pub fn mismatch_rate(&self) -> Option<f64> {
        (self.pairs > 0).then(|| self.mismatches as f64 / self.pairs as f64)
    }
}

impl Figures {
    /// Failed among completed and failed.
    pub fn error_rate(&self) -> Option<f64> {
        let decided = self.completed + self.failed;
        (decided > 0).then(|| self.failed as f64 / decided as f64)
    }
}

/// What happened to a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Transition {
    /// It started at stage 0.
    Started,
    /// It moved to `stage`.
    Advanced {
        /// The new stage's index.
        stage: usize,
    },
    /// An operator paused it.
    Paused,
    /// An operator resumed it.
    Resumed,
    /// It passed the last stage.
    Promoted,
    /// It was rolled back: by a gate, or by an operator (`gate` is `None`).
    RolledBack {
        /// The gate that decided, if one did.
        gate: Option<Gate>,
        /// The reason, with the figures compared.
        reason: String,
        /// The candidate's figures then.
        candidate: Box<Figures>,
        /// The stable version's figures then.
        stable: Box<Figures>,
    },
}

/// A transition with its time and stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionRecord {
    /// When (ms of the engine's clock).
    pub at_ms: u64,
    /// The stage it happened in.
    pub stage: usize,
    /// What happened.
    pub transition: Transition,
    /// The stage's figures when it happened (the candidate's and the stable version's), for a
    /// transition out of a running or paused stage: what an advance or a promotion passed on,
    /// kept after the rollout ends. A rollback's are in its transition too. Absent in records
    /// written before transitions kept them.
    #[serde(default)]
    pub figures: Option<StageFigures>,
}

/// Both versions' figures over a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageFigures {
    /// The candidate's.
    pub candidate: Figures,
    /// The stable version's.
    pub stable: Figures,
}

/// A rollout as stored: definition, where it is, and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The record format.
    pub format: u32,
    /// The definition.
    pub spec: RolloutSpec,
    /// Its status.
    pub status: RolloutStatus,
    /// The current stage's index.
    pub stage: usize,
    /// When the current stage started.
    pub stage_started_ms: u64,
    /// Time spent paused in the current stage (not counted as hold).
    pub paused_ms: u64,
    /// When it was paused, while it is.
    pub paused_at_ms: Option<u64>,
    /// The candidate's counters when the stage started; the stage's figures are measured from them.
    pub candidate_baseline: VersionCounters,
    /// The stable version's counters when the stage started.
    pub stable_baseline: VersionCounters,
    /// Every transition, oldest first.
    pub history: Vec<TransitionRecord>,
}

impl RolloutRecord {
    /// How long the current stage has been held (pauses excluded).
    pub fn hold_elapsed(&self, now_ms: u64) -> Duration {
        let paused_now = self.paused_at_ms.map_or(0, |at| now_ms.saturating_sub(at));
        Duration::from_millis(
            now_ms
                .saturating_sub(self.stage_started_ms)
                .saturating_sub(self.paused_ms + paused_now),
        )
    }

    /// The current stage.
    pub fn current_stage(&self) -> Option<&Stage> {
        self.spec.stages.get(self.stage)
    }

    /// The candidate's share of new instances now, in basis points (none in a shadow stage).
    pub fn candidate_share(&self) -> u16 {
        match self.status {
            RolloutStatus::Running | RolloutStatus::Paused => self
                .current_stage()
                .filter(|stage| !stage.shadow)
                .map_or(0, Stage::basis_points),
            RolloutStatus::Promoted => 10_000,
            RolloutStatus::RolledBack => 0,
        }
    }

    /// The share of the stable version's starts that get a shadow instance of the candidate
    /// now, in basis points: the stage's, in a shadow stage of a running rollout.
    pub fn shadow_share(&self) -> u16 {
        match self.status {
            RolloutStatus::Running => self
                .current_stage()
                .filter(|stage| stage.shadow)
                .map_or(0, Stage::basis_points),
            _ => 0,
        }
    }

    /// Whether the current stage is a shadow stage.
    pub fn in_shadow_stage(&self) -> bool {
        self.current_stage().is_some_and(|stage| stage.shadow)
    }
}

/// What the decision rule says now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keep watching.
    Hold,
    /// Go to the next stage.
    Advance,
    /// The last stage passed: promote.
    Promote,
    /// A gate is breached: roll back.
    RollBack {
        /// The gate.
        gate: Gate,
        /// Why, with the figures.
        reason: String,
    },
}

/// The decision rule. Gates are checked on every evaluation, not only at stage ends, but only
/// with the stage's minimum sample of finished candidate instances (the consecutive-failures gate
/// is its own sample); the stage passes when the sample is there, its hold has elapsed and no
/// gate is breached.
pub fn decide(record: &RolloutRecord, candidate: &Figures, stable: &Figures, now_ms: u64) -> Decision {
    if record.status != RolloutStatus::Running {
        return Decision::Hold;
    }
    let Some(stage) = record.current_stage() else {
        return Decision::Hold;
    };
    let gates = &record.spec.gates;
    if let Some(limit) = gates.max_consecutive_failures {
        if candidate.consecutive_failures >= limit {
            return Decision::RollBack {
                gate: Gate::ConsecutiveFailures,
                reason: format!(
                    "{} candidate instances failed in a row (limit {limit})",
                    candidate.consecutive_failures
                ),
            };
        }
    }
    if candidate.finished < stage.min_finished.max(1) {
        return Decision::Hold;
    }
    let candidate_errors = candidate.error_rate().unwrap_or(0.0);
    if let Some(minimum) = gates.min_success_rate {
        let success = 1.0 - candidate_errors;
        if success < minimum {
            return Decision::RollBack {
                gate: Gate::SuccessRate,
                reason: format!(
                    "candidate success rate {:.1} % is below {:.1} % ({} of {} finished failed)",
                    success * 100.0,
                    minimum * 100.0,
                    candidate.failed,
                    candidate.finished
                ),
            };
        }
    }
    if let Some(limit) = gates.max_error_rate_increase {
        // A stable version without its own sample is held to no errors at all.
        let stable_errors = if stable.finished >= stage.min_finished {
            stable.error_rate().unwrap_or(0.0)
        } else {
            0.0
        };
        if candidate_errors - stable_errors > limit {
            return Decision::RollBack {
                gate: Gate::ErrorRateIncrease,
                reason: format!(
                    "candidate error rate {:.1} % exceeds the stable's {:.1} % by more than {:.1} points",
                    candidate_errors * 100.0,
                    stable_errors * 100.0,
                    limit * 100.0
                ),
            };
        }
    }
    if let Some(limit) = gates.max_latency_multiplier {
        let sampled = candidate.attempts >= stage.min_finished && stable.attempts >= stage.min_finished;
        if let (true, Some(ours), Some(theirs)) = (sampled, candidate.p95_step_micros, stable.p95_step_micros) {
            if ours as f64 > limit * theirs.max(1) as f64 {
                return Decision::RollBack {
                    gate: Gate::LatencyMultiplier,
                    reason: format!(
                        "candidate p95 step latency {:.1} ms is more than {limit}× the stable's {:.1} ms",
                        ours as f64 / 1000.0,
                        theirs as f64 / 1000.0
                    ),
                };
            }
        }
    }
    if let (Some(limit), Some(rate)) = (gates.max_shadow_mismatch, candidate.mismatch_rate()) {
        if candidate.pairs >= stage.min_finished.max(1) && rate > limit {
            return Decision::RollBack {
                gate: Gate::ShadowMismatch,
                reason: format!(
                    "{} of {} shadow pairs ({:.1} %) differ from the stable's runs, above {:.1} %",
                    candidate.mismatches,
                    candidate.pairs,
                    rate * 100.0,
                    limit * 100.0
                ),
            };
        }
    }
    for measure_gate in &gates.measures {
        if let Some(breach) = measure_breach(measure_gate, candidate, stable) {
            return breach;
        }
    }
    if record.hold_elapsed(now_ms) >= Duration::from_millis(stage.hold_ms) {
        if record.stage + 1 >= record.spec.stages.len() {
            return Decision::Promote;
        }
        return Decision::Advance;
    }
    Decision::Hold
}

/// The rollback `gate` decides on the candidate's and the stable's figures of its measure, if
/// either figure it compares has its sample and a bound is crossed.
fn measure_breach(gate: &MeasureGate, candidate: &Figures, stable: &Figures) -> Option<Decision> {
    let measure = gate.measure.as_str();
    let sampled = |figures: &Figures| {
        figures
            .measures
            .get(measure)
            .filter(|figure| figure.sample >= gate.min_sample)
            .and_then(|figure| figure.value)
    };
    let ours = sampled(candidate)?;
    let theirs = sampled(stable);
    // Shown whatever its sample (only `max_increase` compares with it, and needs the sample).
    let stable_text = match stable.measures.get(measure) {
        Some(MeasureFigure {
            value: Some(value),
            sample,
        }) => format!("the stable's is {} (sample {sample})", number(*value)),
        _ => "the stable has no figure yet".to_string(),
    };
    let rolled_back = |bound: MeasureBound, breach: String| {
        Some(Decision::RollBack {
            gate: Gate::Measure {
                measure: measure.to_string(),
                bound,
            },
            reason: format!("{breach}; {stable_text}"),
        })
    };
    if let Some(minimum) = gate.min.filter(|minimum| ours < *minimum) {
        return rolled_back(
            MeasureBound::Min,
            format!(
                "candidate {measure} {} is below the minimum {}",
                number(ours),
                number(minimum)
            ),
        );
    }
    if let Some(maximum) = gate.max.filter(|maximum| ours > *maximum) {
        return rolled_back(
            MeasureBound::Max,
            format!(
                "candidate {measure} {} is above the maximum {}",
                number(ours),
                number(maximum)
            ),
        );
    }
    if let (Some(limit), Some(theirs)) = (gate.max_increase, theirs) {
        if ours > theirs + theirs.abs() * limit {
            let increase = if theirs == 0.0 {
                "above the stable's 0".to_string()
            } else {
                format!("{:.1} % above the stable's", (ours - theirs) / theirs.abs() * 100.0)
            };
            return rolled_back(
                MeasureBound::MaxIncrease,
                format!(
                    "candidate {measure} {} is {increase} (at most +{:.1} % allowed)",
                    number(ours),
                    limit * 100.0
                ),
            );
        }
    }
    None
}

/// A figure as a rollback's reason shows it: up to six decimals, no trailing zeros.
fn number(value: f64) -> String {
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(gates: Gates) -> RolloutRecord {
        let spec = RolloutSpec::new("w", Version::new(2, 0, 0), Version::new(1, 0, 0))
            .stage(Stage::new(5.0, Duration::from_secs(60), 20))
            .stage(Stage::new(100.0, Duration::from_secs(60), 20))
            .gates(gates);
        RolloutRecord {
            format: 1,
            spec,
            status: RolloutStatus::Running,
            stage: 0,
            stage_started_ms: 0,
            paused_ms: 0,
            paused_at_ms: None,
            candidate_baseline: VersionCounters::default(),
            stable_baseline: VersionCounters::default(),
            history: Vec::new(),
        }
    }

    fn figures(completed: u64, failed: u64) -> Figures {
        Figures {
            finished: completed + failed,
            completed,
            failed,
            attempts: completed + failed,
            p95_step_micros: Some(1_000),
            consecutive_failures: 0,
            measures: BTreeMap::new(),
            pairs: 0,
            mismatches: 0,
        }
    }

    fn with_measure(mut figures: Figures, measure: &str, value: f64, sample: u64) -> Figures {
        figures.measures.insert(
            measure.to_string(),
            MeasureFigure {
                value: Some(value),
                sample,
            },
        );
        figures
    }

    #[test]
    fn measure_gates_roll_back_naming_the_measure_and_both_figures_and_wait_for_their_sample() {
        let record = record(Gates {
            measures: vec![
                MeasureGate::new("cost").max_increase(0.2).min_sample(20),
                MeasureGate::new("quality").min(0.85).max(1.0).min_sample(30),
            ],
            ..Gates::default()
        });
        let stable = with_measure(with_measure(figures(100, 0), "cost", 1.0, 100), "quality", 0.9, 100);
        // Within bounds: +20 % exactly, quality 0.85 exactly.
        let within = with_measure(with_measure(figures(20, 0), "cost", 1.2, 20), "quality", 0.85, 30);
        assert_eq!(decide(&record, &within, &stable, 1), Decision::Hold);
        let costly = with_measure(within.clone(), "cost", 1.25, 20);
        match decide(&record, &costly, &stable, 1) {
            Decision::RollBack { gate, reason } => {
                assert_eq!(
                    gate,
                    Gate::Measure {
                        measure: "cost".into(),
                        bound: MeasureBound::MaxIncrease
                    }
                );
                assert_eq!(gate.field(), "measures[cost].max_increase");
                assert_eq!(
                    reason,
                    "candidate cost 1.25 is 25.0 % above the stable's (at most +20.0 % allowed); the stable's is 1 (sample 100)"
                );
            }
            other => panic!("{other:?}"),
        }
        // Below its own sample the gate does not decide, though the stage's sample is there.
        let early = with_measure(within.clone(), "cost", 9.0, 19);
        assert_eq!(decide(&record, &early, &stable, 1), Decision::Hold);
        // A max_increase needs the stable's sample too.
        let thin_stable = with_measure(stable.clone(), "cost", 0.1, 19);
        assert_eq!(decide(&record, &costly, &thin_stable, 1), Decision::Hold);
        let poor = with_measure(within.clone(), "quality", 0.8, 30);
        match decide(&record, &poor, &stable, 1) {
            Decision::RollBack { gate, reason } => {
                assert_eq!(gate.field(), "measures[quality].min");
                assert_eq!(
                    reason,
                    "candidate quality 0.8 is below the minimum 0.85; the stable's is 0.9 (sample 100)"
                );
            }
            other => panic!("{other:?}"),
        }
        let over = with_measure(within, "quality", 1.5, 30);
        assert!(matches!(
            decide(&record, &over, &figures(0, 0), 1),
            Decision::RollBack { gate: Gate::Measure { bound: MeasureBound::Max, .. }, reason }
                if reason.ends_with("the stable has no figure yet")
        ));
    }

    #[test]
    fn measure_gates_are_checked_naming_the_gate_and_field() {
        let spec = |gate: MeasureGate| {
            RolloutSpec::new("w", Version::new(2, 0, 0), Version::new(1, 0, 0))
                .stage(Stage::new(50.0, Duration::ZERO, 1))
                .gates(Gates {
                    measures: vec![MeasureGate::new("cost").max(1.0), gate],
                    ..Gates::default()
                })
                .validate()
        };
        for (gate, field, shown) in [
            (MeasureGate::new("quality"), "max_increase", "set at least one bound"),
            (
                MeasureGate::new("quality").max_increase(-0.1),
                "max_increase",
                "max_increase = -0.1",
            ),
            (MeasureGate::new("quality").min(f64::NAN), "min", "min = NaN"),
            (MeasureGate::new("quality").max(f64::INFINITY), "max", "max = inf"),
            (MeasureGate::new("quality").min(2.0).max(1.0), "min", "above max = 1"),
            (
                MeasureGate::new("quality").min(0.5).min_sample(0),
                "min_sample",
                "min_sample = 0",
            ),
            (MeasureGate::new("cost").min(0.5), "measure", "has a gate already"),
            (MeasureGate::new("bad name").min(0.5), "measure", "name a measure"),
        ] {
            let error = spec(gate).unwrap_err();
            assert_eq!(error.field(), format!("gates.measures[1].{field}"), "{error}");
            let message = error.to_string();
            assert!(message.contains(shown), "{message}");
            assert!(message.contains("gates.measures[1]"), "{message}");
        }
        spec(MeasureGate::new("quality").min(0.5).max(0.5).min_sample(3)).unwrap();
        // A measure gate alone is a gate: the rollout watches something.
        RolloutSpec::new("w", Version::new(2, 0, 0), Version::new(1, 0, 0))
            .stage(Stage::new(50.0, Duration::ZERO, 1))
            .gates(Gates {
                measures: vec![MeasureGate::new("cost").max_increase(0.0)],
                ..Gates::default()
            })
            .validate()
            .unwrap();
    }

    #[test]
    fn no_decision_without_the_minimum_sample() {
        let record = record(Gates {
            min_success_rate: Some(0.9),
            ..Gates::default()
        });
        // 19 finished, all failed: below the sample of 20, even after the hold.
        assert_eq!(
            decide(&record, &figures(0, 19), &figures(100, 0), 120_000),
            Decision::Hold
        );
        assert!(matches!(
            decide(&record, &figures(0, 20), &figures(100, 0), 1),
            Decision::RollBack {
                gate: Gate::SuccessRate,
                ..
            }
        ));
    }

    #[test]
    fn gates_compare_with_the_stable_version() {
        let record = record(Gates {
            max_error_rate_increase: Some(0.05),
            max_latency_multiplier: Some(2.0),
            ..Gates::default()
        });
        // 10 % errors against a stable 8 %: within 5 points.
        assert_eq!(decide(&record, &figures(90, 10), &figures(92, 8), 1), Decision::Hold);
        assert!(matches!(
            decide(&record, &figures(80, 20), &figures(92, 8), 1),
            Decision::RollBack { gate: Gate::ErrorRateIncrease, reason } if reason.contains("20.0 %")
        ));
        let mut slow = figures(100, 0);
        slow.p95_step_micros = Some(2_500);
        assert!(matches!(
            decide(&record, &slow, &figures(100, 0), 1),
            Decision::RollBack {
                gate: Gate::LatencyMultiplier,
                ..
            }
        ));
    }

    #[test]
    fn a_stage_passes_after_its_hold_and_the_last_one_promotes() {
        let mut record = record(Gates::default());
        assert_eq!(decide(&record, &figures(20, 0), &figures(0, 0), 59_999), Decision::Hold);
        assert_eq!(
            decide(&record, &figures(20, 0), &figures(0, 0), 60_000),
            Decision::Advance
        );
        record.paused_ms = 30_000;
        assert_eq!(decide(&record, &figures(20, 0), &figures(0, 0), 60_000), Decision::Hold);
        record.stage = 1;
        assert_eq!(
            decide(&record, &figures(20, 0), &figures(0, 0), 90_000),
            Decision::Promote
        );
        record.status = RolloutStatus::Paused;
        assert_eq!(decide(&record, &figures(0, 50), &figures(0, 0), 90_000), Decision::Hold);
    }

    #[test]
    fn consecutive_failures_need_no_other_sample() {
        let record = record(Gates {
            max_consecutive_failures: Some(3),
            ..Gates::default()
        });
        let mut failing = figures(0, 3);
        failing.consecutive_failures = 3;
        assert!(matches!(
            decide(&record, &failing, &figures(0, 0), 1),
            Decision::RollBack {
                gate: Gate::ConsecutiveFailures,
                ..
            }
        ));
    }

    #[test]
    fn definitions_are_checked() {
        let base = RolloutSpec::new("w", Version::new(2, 0, 0), Version::new(1, 0, 0));
        assert!(matches!(base.validate(), Err(RolloutError::NoStages { .. })));
        let falling = base
            .clone()
            .stage(Stage::new(50.0, Duration::ZERO, 1))
            .stage(Stage::new(10.0, Duration::ZERO, 1));
        assert!(matches!(
            falling.validate(),
            Err(RolloutError::BadShare { stage: 1, .. })
        ));
        let bad_gate = base.clone().stage(Stage::new(50.0, Duration::ZERO, 1)).gates(Gates {
            min_success_rate: Some(1.5),
            ..Gates::default()
        });
        assert!(bad_gate
            .validate()
            .unwrap_err()
            .to_string()
            .contains("min_success_rate"));
    }

    /// Every number a definition takes is checked, and the message names the field and value.
    #[test]
    fn impossible_numbers_are_refused_naming_the_field_and_value() {
        let one_stage = |percent: f64| {
            RolloutSpec::new("w", Version::new(2, 0, 0), Version::new(1, 0, 0))
                .stage(Stage::new(percent, Duration::ZERO, 1))
                .unwatched()
        };
        for (percent, shown) in [
            (150.0, "stages[0] = 150 %"),
            (100.01, "stages[0] = 100.01 %"),
            (0.0, "stages[0] = 0 %"),
            (-5.0, "stages[0] = -5 %"),
            (f64::NAN, "stages[0] = NaN %"),
            (f64::INFINITY, "stages[0] = inf %"),
            (12.345, "stages[0] = 12.345 %"),
        ] {
            let error = one_stage(percent).validate().unwrap_err();
            assert_eq!(error.field(), "stages[0]", "{percent}");
            let message = error.to_string();
            assert!(message.contains(shown), "{percent}: {message}");
            assert!(message.contains("over 0 and at most 100"), "{percent}: {message}");
        }
        for percent in [0.01, 12.5, 99.99, 100.0] {
            one_stage(percent).validate().unwrap();
        }
        let flat = one_stage(20.0).stage(Stage::new(20.0, Duration::ZERO, 1));
        let message = flat.validate().unwrap_err().to_string();
        assert!(
            message.contains("stages[1] = 20 %") && message.contains("must rise"),
            "{message}"
        );

        let gates = |gates: Gates| one_stage(50.0).gates(gates).validate();
        let refused = [
            (
                Gates {
                    max_latency_multiplier: Some(f64::NAN),
                    ..Gates::default()
                },
                "gates.max_latency_multiplier = NaN",
            ),
            (
                Gates {
                    max_latency_multiplier: Some(f64::INFINITY),
                    ..Gates::default()
                },
                "gates.max_latency_multiplier = inf",
            ),
            (
                Gates {
                    max_latency_multiplier: Some(0.5),
                    ..Gates::default()
                },
                "gates.max_latency_multiplier = 0.5",
            ),
            (
                Gates {
                    max_error_rate_increase: Some(-0.1),
                    ..Gates::default()
                },
                "gates.max_error_rate_increase = -0.1",
            ),
            (
                Gates {
                    max_error_rate_increase: Some(f64::NAN),
                    ..Gates::default()
                },
                "gates.max_error_rate_increase = NaN",
            ),
            (
                Gates {
                    min_success_rate: Some(1.01),
                    ..Gates::default()
                },
                "gates.min_success_rate = 1.01",
            ),
            (
                Gates {
                    max_consecutive_failures: Some(0),
                    ..Gates::default()
                },
                "gates.max_consecutive_failures = 0",
            ),
        ];
        for (bad, shown) in refused {
            let error = gates(bad).unwrap_err();
            assert!(error.to_string().contains(shown), "{error}");
            assert!(shown.starts_with(&format!("{} =", error.field())), "{error}");
        }
        gates(Gates {
            max_error_rate_increase: Some(0.0),
            max_latency_multiplier: Some(1.0),
            min_success_rate: Some(1.0),
            max_consecutive_failures: Some(1),
            measures: Vec::new(),
            max_shadow_mismatch: None,
        })
        .unwrap();
    }

    #[test]
    fn stages_are_stored_as_basis_points_as_in_every_earlier_record() {
        let stage = Stage::new(12.5, Duration::from_secs(3), 7);
        let bytes = rmp_serde::to_vec_named(&stage).unwrap();
        #[derive(Deserialize)]
        struct Earlier {
            basis_points: u16,
            hold_ms: u64,
            min_finished: u64,
        }
        let earlier: Earlier = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            (earlier.basis_points, earlier.hold_ms, earlier.min_finished),
            (1_250, 3_000, 7)
        );
        let back: Stage = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, stage);
    }
}
