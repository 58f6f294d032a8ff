//! Watched rollouts: a candidate version goes through stages of traffic share, each held for a
//! duration and a minimum number of finished instances, while gates compare it with the stable
//! version; a breached gate rolls it back at once, passing the last stage promotes it.
//!
//! Owns the rollout's definition, its persisted record (status, stage, the counters it measures
//! from, every transition) and the decision rule — a pure function of the record and both
//! versions' figures. The runtime feeds it figures, commits its transitions and routes by it.

use std::time::Duration;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::store::VersionCounters;

/// One stage of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// The candidate's share of new instances, in basis points (100 = 1 %).
    pub basis_points: u16,
    /// How long the stage lasts at least (ms of the engine's clock).
    pub hold_ms: u64,
    /// How many of the candidate's instances must finish in the stage before it can pass — and
    /// before any gate may decide.
    pub min_finished: u64,
}

impl Stage {
    /// A stage giving the candidate `percent` % of new instances for at least `hold` and until
    /// `min_finished` of its instances finished.
    pub fn new(percent: f64, hold: Duration, min_finished: u64) -> Self {
        Stage {
            basis_points: (percent * 100.0).round().clamp(0.0, 10_000.0) as u16,
            hold_ms: hold.as_millis() as u64,
            min_finished,
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
    /// Shares must rise and stay within (0, 100] %.
    #[error("rollout '{name}': stage {stage} gives {basis_points} basis points; shares must rise from stage to stage within 0 < share <= 100 %")]
    BadShare {
        /// The rollout.
        name: String,
        /// The stage's index (from 0).
        stage: usize,
        /// Its share.
        basis_points: u16,
    },
    /// Candidate and stable are the same version.
    #[error("rollout '{name}': candidate and stable are both {version}")]
    SameVersion {
        /// The rollout.
        name: String,
        /// The version.
        version: Version,
    },
    /// A rate gate outside [0, 1] or a multiplier below 1.
    #[error("rollout '{name}': gate {gate} = {value} is out of range ({range})")]
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
    /// The name is taken, or the workflow already has an active rollout.
    #[error("rollout '{name}': {reason}")]
    Conflict {
        /// The rollout.
        name: String,
        /// Why.
        reason: String,
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
        }
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
        let mut previous = 0;
        for (index, stage) in self.stages.iter().enumerate() {
            if stage.basis_points <= previous || stage.basis_points > 10_000 {
                return Err(RolloutError::BadShare {
                    name: name(),
                    stage: index,
                    basis_points: stage.basis_points,
                });
            }
            previous = stage.basis_points;
        }
        let rates = [
            ("max_error_rate_increase", self.gates.max_error_rate_increase),
            ("min_success_rate", self.gates.min_success_rate),
        ];
        for (gate, value) in rates {
            if let Some(value) = value.filter(|value| !(0.0..=1.0).contains(value)) {
                return Err(RolloutError::BadGate {
                    name: name(),
                    gate,
                    value,
                    range: "0 to 1",
                });
            }
        }
        if let Some(value) = self.gates.max_latency_multiplier.filter(|value| *value < 1.0) {
            return Err(RolloutError::BadGate {
                name: name(),
                gate: "max_latency_multiplier",
                value,
                range: "1 or more",
            });
        }
        Ok(())
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gate {
    /// `max_error_rate_increase`.
    ErrorRateIncrease,
    /// `max_latency_multiplier`.
    LatencyMultiplier,
    /// `min_success_rate`.
    SuccessRate,
    /// `max_consecutive_failures`.
    ConsecutiveFailures,
}

/// One version's figures in the current stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
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
        candidate: Figures,
        /// The stable version's figures then.
        stable: Figures,
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

    /// The candidate's share of new instances now, in basis points.
    pub fn candidate_share(&self) -> u16 {
        match self.status {
            RolloutStatus::Running | RolloutStatus::Paused => {
                self.current_stage().map_or(0, |stage| stage.basis_points)
            }
            RolloutStatus::Promoted => 10_000,
            RolloutStatus::RolledBack => 0,
        }
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
    if record.hold_elapsed(now_ms) >= Duration::from_millis(stage.hold_ms) {
        if record.stage + 1 >= record.spec.stages.len() {
            return Decision::Promote;
        }
        return Decision::Advance;
    }
    Decision::Hold
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
        }
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
}
