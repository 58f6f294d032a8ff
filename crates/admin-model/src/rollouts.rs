//! Rollouts as the API shows them (stage, the figures the gates compare, history) and as it
//! takes a new one.

use serde::{Deserialize, Serialize};

use crate::Whole;

/// A rollout as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutView {
    /// Its name (`workflow@candidate` unless named).
    pub name: String,
    /// The workflow.
    pub workflow: String,
    /// The version rolled out.
    pub candidate: String,
    /// The version it is compared with and falls back to.
    pub stable: String,
    /// `running`, `paused`, `promoted` or `rolled_back`.
    pub status: String,
    /// The index of the current stage.
    pub stage: usize,
    /// Its stages, in order of rising share.
    pub stages: Vec<StageView>,
    /// The share of new instances the candidate gets now (%).
    pub candidate_percent: f64,
    /// The share of the stable version's starts that also run a shadow instance of the
    /// candidate now (%): the stage's, in a shadow stage.
    #[serde(default)]
    pub shadow_percent: f64,
    /// When the current stage started (ms of the engine's clock).
    pub stage_started_ms: u64,
    /// How much longer the current stage holds at least (ms; pauses do not count), while the
    /// rollout is active.
    #[serde(default)]
    pub hold_remaining_ms: Option<u64>,
    /// The gates checked as instances finish.
    pub gates: GatesView,
    /// What a rollback does to the candidate's in-flight instances.
    pub on_rollback: OnRollbackChoice,
    /// Started with no gate on purpose.
    pub unwatched: bool,
    /// What the gates compare now, while the rollout is active.
    pub figures: Option<RolloutFiguresView>,
    /// Every transition, oldest first; a rollback names its gate, reason and figures.
    pub history: Vec<TransitionView>,
}

/// A stage as the API shows and takes it: the candidate's share in percent (at most two
/// decimals), how long it holds at least, and how many candidate instances must finish in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StageView {
    /// The candidate's share of new instances (%).
    #[cfg_attr(
        feature = "openapi",
        schema(exclusive_minimum = 0, maximum = 100, multiple_of = 0.01)
    )]
    pub percent: f64,
    /// How long the stage holds at least (ms).
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub hold_ms: Whole,
    /// How many candidate instances must finish in it (in a shadow stage, shadow instances).
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub min_finished: Whole,
    /// A shadow stage: no real start goes to the candidate; `percent` % of the stable's starts
    /// also run a shadow instance of it, on which the gates judge it. Shadow stages come first.
    #[serde(default)]
    pub shadow: bool,
}

/// What makes the candidate worse than the stable version; unset gates are not checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatesView {
    /// The candidate's error rate may exceed the stable's by at most this much (0.05 = 5 points).
    pub max_error_rate_increase: Option<f64>,
    /// The candidate's p95 step latency may be at most this multiple of the stable's.
    pub max_latency_multiplier: Option<f64>,
    /// The candidate's success rate must be at least this.
    pub min_success_rate: Option<f64>,
    /// This many failed candidate instances in a row roll back.
    pub max_consecutive_failures: Option<u64>,
    /// In a shadow stage, the share of compared shadow pairs that may differ.
    #[serde(default)]
    pub max_shadow_mismatch: Option<f64>,
    /// Gates on measures the versions declare.
    #[serde(default)]
    pub measures: Vec<MeasureGateView>,
}

/// A gate on a measure: bounds on the candidate's figure (a summed measure's mean per finished
/// instance, an averaged one's mean value), as shown and as posted. At least one bound is set;
/// unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MeasureGateView {
    /// The measure, declared by both versions.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]+$")
    )]
    pub measure: String,
    /// The candidate's figure may exceed the stable's by at most this fraction (0.2 = +20 %).
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// The candidate's figure must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The candidate's figure must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The sample each compared figure needs before the gate decides: finished instances for a
    /// summed measure, recorded values for an averaged one (default 1).
    #[cfg_attr(feature = "openapi", schema(value_type = u64, minimum = 1))]
    #[serde(default = "one")]
    pub min_sample: Whole,
}

fn one() -> Whole {
    Whole(1)
}

/// A measure's figure over the instances that finished in the stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeasureFigureView {
    /// The figure (a summed measure's mean per finished instance, an averaged one's mean value);
    /// absent without a sample.
    pub value: Option<f64>,
    /// How many instances (summed) or values (averaged) it stands on.
    pub sample: u64,
}

/// One version's figures in the current stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FiguresView {
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
    /// Each measure the version declares, by name.
    #[serde(default)]
    pub measures: std::collections::BTreeMap<String, MeasureFigureView>,
    /// In a shadow stage, the candidate's: shadow pairs compared in the stage.
    #[serde(default)]
    pub pairs: u64,
    /// Of which mismatched.
    #[serde(default)]
    pub mismatches: u64,
}

/// The figures the gates compare: the candidate's and the stable version's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutFiguresView {
    /// The candidate's.
    pub candidate: FiguresView,
    /// The stable version's.
    pub stable: FiguresView,
}

/// One transition of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransitionView {
    /// When (ms of the engine's clock).
    pub at_ms: u64,
    /// The stage it happened in (the new stage, for `advanced`).
    pub stage: usize,
    /// What happened.
    pub kind: TransitionKind,
    /// For `rolled_back`: the gate that fired (named as in `gates`), absent when an operator
    /// rolled it back.
    pub gate: Option<String>,
    /// For `rolled_back`: why, with the figures compared.
    pub reason: Option<String>,
    /// The candidate's figures over the stage it left (advanced, paused, resumed, promoted,
    /// rolled back).
    pub candidate: Option<FiguresView>,
    /// The stable version's figures over that stage.
    pub stable: Option<FiguresView>,
}

/// What a transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// It started at stage 0.
    Started,
    /// It moved to the next stage.
    Advanced,
    /// An operator paused it.
    Paused,
    /// An operator resumed it.
    Resumed,
    /// It passed the last stage.
    Promoted,
    /// A gate or an operator rolled it back.
    RolledBack,
}

/// What a rollback does to the candidate's in-flight instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnRollbackChoice {
    /// They finish on the candidate.
    #[default]
    KeepRunning,
    /// They move back to the stable version where a move plan allows.
    MoveBack,
}

/// A rollout to start, as posted: every field of its definition. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RolloutStartRequest {
    /// The workflow.
    pub workflow: String,
    /// The version to roll out.
    pub candidate: String,
    /// The version to compare it with and fall back to.
    pub stable: String,
    /// In order of rising share.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub stages: Vec<StageView>,
    /// At least one gate, unless `unwatched`.
    #[serde(default)]
    pub gates: GatesRequest,
    /// Its name; default `workflow@candidate` (`workflow@candidate~2`, ... when an earlier
    /// rollout of the candidate ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What a rollback does to the candidate's in-flight instances (default `keep_running`).
    #[serde(default)]
    pub on_rollback: OnRollbackChoice,
    /// `true` runs it with no gate at all, on purpose.
    #[serde(default)]
    pub unwatched: bool,
}

/// The gates as posted; unset ones are not checked. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GatesRequest {
    /// The candidate's error rate may exceed the stable's by at most this much (0.05 = 5 points).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_increase: Option<f64>,
    /// The candidate's p95 step latency may be at most this multiple of the stable's.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_multiplier: Option<f64>,
    /// The candidate's success rate must be at least this.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success_rate: Option<f64>,
    /// This many failed candidate instances in a row roll back.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_consecutive_failures: Option<Whole>,
    /// In a shadow stage, the share of compared shadow pairs that may differ (0.02 = 2 %).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shadow_mismatch: Option<f64>,
    /// Gates on measures both versions declare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<MeasureGateView>,
}

/// A shadow pair as the API shows it: a real instance of the stable version and the shadow of
/// the candidate that ran beside it with the same input, compared once both finished. Each id
/// opens its instance and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShadowPairView {
    /// The real instance (the stable version's).
    pub real: u64,
    /// The shadow instance (the candidate's).
    pub shadow: u64,
    /// The stable version.
    pub stable: String,
    /// The candidate.
    pub candidate: String,
    /// When they were compared (ms of the engine's clock).
    pub compared_ms: u64,
    /// Whether they agree.
    pub matched: bool,
    /// For a mismatch, what differs.
    pub diff: Option<String>,
    /// How the real instance ended: `completed`, `failed` or `cancelled`.
    pub real_status: String,
    /// How the shadow ended.
    pub shadow_status: String,
    /// The real instance's start to finish (ms).
    pub real_took_ms: u64,
    /// The shadow's start to finish (ms).
    pub shadow_took_ms: u64,
    /// What the real instance's steps recorded, by measure.
    pub real_measures: std::collections::BTreeMap<String, PairMeasureView>,
    /// What the shadow's steps recorded, by measure.
    pub shadow_measures: std::collections::BTreeMap<String, PairMeasureView>,
}

/// What one side of a shadow pair recorded of a measure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairMeasureView {
    /// The sum of the values.
    pub sum: f64,
    /// How many values.
    pub count: u64,
}
