//! strata-config: the config file (`strata.toml`) parsed and validated into routing rules,
//! rollouts and schedules.
//!
//! Owns the file format and its error messages (which name the file, the key and the reason) and
//! cron expressions (`schedule`). It reads no file and runs nothing: the engine watches the file,
//! runs the schedules and keeps the history of applied configs; the CLI checks a file with it
//! without a server. It depends on `strata-core` only.
//!
//! ```toml
//! [flags.payment-first]
//! enabled = true
//! segments = [{ attribute = "tenant", values = ["acme"] }]
//!
//! [workflows.order]
//! default = "^1"                 # newest active 1.x; "=1.1.0" pins one version
//!
//! [[workflows.order.rollouts]]
//! candidate = "2.0.0"
//! percent = 12.5                 # basis-point precision: at most two decimals
//! flag = "payment-first"         # optional
//! segments = [{ attribute = "tenant", values = ["acme", "globex"] }]   # optional
//! ```

#![warn(missing_docs)]

mod schedule;

pub use schedule::CronSchedule;

use std::collections::BTreeMap;

use semver::{Version, VersionReq};
use serde::Deserialize;

use strata_core::routing::{Flag, RolloutRule, RoutingError, RoutingSpec, Segment, WorkflowRouting};

/// Why a config file cannot take effect. The message names the file, the key and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config file: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// `retention` is not a duration.
    #[error("{file}: retention: {reason}; write how long finished instances are kept, like retention = \"30d\" (\"0\" keeps them forever)")]
    Retention {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML, or has a key or value of the wrong kind.
    #[error("{file}: {reason}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// A version or version requirement does not parse.
    #[error("{file}: {key}: '{value}' is not a valid {expected}: {reason}")]
    InvalidVersion {
        /// The file.
        file: String,
        /// The key, such as `workflows.order.rollouts[0].candidate`.
        key: String,
        /// The text given.
        value: String,
        /// `version (like 2.0.0)` or `version requirement (like ^1 or =1.2.0)`.
        expected: &'static str,
        /// The parser's reason.
        reason: String,
    },
    /// A percentage out of range or finer than a basis point.
    #[error("{file}: {key}: {value} is not a percentage from 0 to 100 with at most two decimals")]
    InvalidPercent {
        /// The file.
        file: String,
        /// The key.
        key: String,
        /// The value given.
        value: f64,
    },
    /// A schedule entry is invalid (cron expression, zone, input, duplicate name, workflow).
    #[error("{file}: {key}: {reason}")]
    Schedule {
        /// The file.
        file: String,
        /// The key, such as `schedules[0].cron`.
        key: String,
        /// Why.
        reason: String,
    },
    /// A `[[rollouts]]` entry is invalid (stages, hold, gates, versions, duplicate name).
    #[error("{file}: {key}: {reason}")]
    Rollout {
        /// The file.
        file: String,
        /// The key, such as `rollouts[0].hold`.
        key: String,
        /// Why.
        reason: String,
    },
    /// No applied config has this generation.
    #[error("no config of generation {generation} is in the history of applied configs; the history lists the generations kept")]
    UnknownGeneration {
        /// The generation asked for.
        generation: u64,
    },
    /// The rules do not fit what is registered (unknown workflow or version, inactive candidate,
    /// unknown flag, unmatched default).
    #[error("{file}: {source}")]
    Rules {
        /// The file.
        file: String,
        /// What does not fit; its message starts with the key.
        source: RoutingError,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    flags: BTreeMap<String, FlagEntry>,
    #[serde(default)]
    workflows: BTreeMap<String, WorkflowEntry>,
    #[serde(default)]
    schedules: Vec<ScheduleEntry>,
    #[serde(default, rename = "rollouts")]
    watched_rollouts: Vec<WatchedRolloutEntry>,
    /// How long finished instances are kept (`"30d"`; `"0"` keeps them forever).
    retention: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchedRolloutEntry {
    name: Option<String>,
    workflow: String,
    candidate: String,
    stable: String,
    /// The candidate's share per stage, in percent.
    stages: Vec<f64>,
    /// Shadow stages before `stages`: the share of the stable version's starts that also run a
    /// shadow instance of the candidate, in percent, per stage.
    #[serde(default)]
    shadow_stages: Vec<f64>,
    /// How long each stage is held at least: `30s`, `10m`, `1h`, `500ms`.
    hold: String,
    /// Finished candidate instances each stage needs.
    min_finished: u64,
    #[serde(default)]
    on_rollback: OnRollbackEntry,
    #[serde(default)]
    gates: GatesEntry,
    /// No gate, on purpose: the rollout watches nothing.
    #[serde(default)]
    unwatched: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum OnRollbackEntry {
    #[default]
    KeepRunning,
    MoveBack,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GatesEntry {
    max_error_rate_increase: Option<f64>,
    max_latency_multiplier: Option<f64>,
    min_success_rate: Option<f64>,
    max_consecutive_failures: Option<u64>,
    max_shadow_mismatch: Option<f64>,
    /// `[[rollouts.gates.measures]]`: gates on measures the versions declare.
    #[serde(default)]
    measures: Vec<MeasureGateEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeasureGateEntry {
    measure: String,
    max_increase: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    min_sample: Option<u64>,
}

/// Parses a duration as the config file writes it: `500ms`, `30s`, `10m`, `2h`, `7d` (and `0`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let wrong = || format!("'{text}' is not a duration like 30s, 10m, 1h, 7d or 500ms");
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| wrong())?;
    let millis: u64 = match unit.trim() {
        "" if number == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(wrong()),
    };
    let total = number
        .checked_mul(millis)
        .ok_or_else(|| format!("'{text}' is longer than any duration this engine can wait"))?;
    Ok(std::time::Duration::from_millis(total))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleEntry {
    name: String,
    workflow: String,
    cron: String,
    zone: Option<String>,
    input: Option<toml::Value>,
    routing_key: Option<String>,
    #[serde(default)]
    missed: MissedEntry,
    max_missed: Option<u32>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum MissedEntry {
    Skip,
    #[default]
    FireOnce,
    FireEach,
}

/// What a schedule does about fire times that passed while the engine was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedFires {
    /// Start nothing for them.
    Skip,
    /// Start one instance, for the latest of them.
    FireOnce,
    /// Start one instance for each of them, at most `max` (the latest ones).
    FireEach {
        /// The bound.
        max: u32,
    },
}

/// A schedule from the config file: a cron expression that starts instances of a workflow.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// The schedule's name, unique in the file; its fires are tracked under it.
    pub name: String,
    /// The workflow it starts.
    pub workflow: String,
    /// The expression as written.
    pub expression: String,
    /// The input of each instance (MessagePack).
    pub input: Vec<u8>,
    /// The routing key of each instance, if any.
    pub routing_key: Option<String>,
    /// What to do about fires missed during downtime.
    pub missed: MissedFires,
    /// The parsed expression.
    pub cron: CronSchedule,
}

/// A parsed config file: routing rules and schedules.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Flags, defaults and rollouts.
    pub routing: RoutingSpec,
    /// Cron schedules.
    pub schedules: Vec<ScheduleSpec>,
    /// Watched rollouts (`[[rollouts]]`); each starts when a config naming it is applied.
    pub rollouts: Vec<strata_core::rollout::RolloutSpec>,
    /// How long finished instances are kept, if the file says (`retention = "30d"`; zero keeps
    /// them forever); otherwise the builder's setting holds.
    pub retention: Option<std::time::Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagEntry {
    enabled: bool,
    #[serde(default)]
    segments: Vec<SegmentEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentEntry {
    attribute: String,
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowEntry {
    default: Option<String>,
    #[serde(default)]
    rollouts: Vec<RolloutEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutEntry {
    candidate: String,
    percent: f64,
    flag: Option<String>,
    #[serde(default)]
    segments: Vec<SegmentEntry>,
}

fn segments(entries: Vec<SegmentEntry>) -> Vec<Segment> {
    entries
        .into_iter()
        .map(|entry| Segment {
            attribute: entry.attribute,
            values: entry.values,
        })
        .collect()
}

fn basis_points(file: &str, key: String, percent: f64) -> Result<u16, ConfigError> {
    strata_core::routing::percent_to_basis_points(percent).ok_or_else(|| ConfigError::InvalidPercent {
        file: file.to_string(),
        key,
        value: percent,
    })
}

/// Parses config text into routing rules and schedules. `file` names the source in error
/// messages. Checks the format only; `Engine::apply_config` also checks the rules against the
/// registered versions.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let parsed: ConfigFile = toml::from_str(text).map_err(|error| ConfigError::Syntax {
        file: file.to_string(),
        reason: strata_core::suggest::explain_unknown(&error.to_string()),
    })?;
    let flags = parsed
        .flags
        .into_iter()
        .map(|(name, entry)| {
            let flag = Flag {
                name: name.clone(),
                enabled: entry.enabled,
                segments: segments(entry.segments),
            };
            (name, flag)
        })
        .collect();
    let mut workflows = BTreeMap::new();
    for (workflow, entry) in parsed.workflows {
        let default = match entry.default {
            None => None,
            Some(text) => Some(VersionReq::parse(&text).map_err(|error| ConfigError::InvalidVersion {
                file: file.to_string(),
                key: format!("workflows.{workflow}.default"),
                value: text.clone(),
                expected: "version requirement (like ^1 or =1.2.0)",
                reason: error.to_string(),
            })?),
        };
        let mut rollouts = Vec::with_capacity(entry.rollouts.len());
        for (index, rule) in entry.rollouts.into_iter().enumerate() {
            let key = |field: &str| format!("workflows.{workflow}.rollouts[{index}].{field}");
            let candidate = Version::parse(&rule.candidate).map_err(|error| ConfigError::InvalidVersion {
                file: file.to_string(),
                key: key("candidate"),
                value: rule.candidate.clone(),
                expected: "version (like 2.0.0)",
                reason: error.to_string(),
            })?;
            rollouts.push(RolloutRule {
                candidate,
                basis_points: basis_points(file, key("percent"), rule.percent)?,
                flag: rule.flag,
                segments: segments(rule.segments),
            });
        }
        workflows.insert(workflow, WorkflowRouting { default, rollouts });
    }
    let mut schedules: Vec<ScheduleSpec> = Vec::with_capacity(parsed.schedules.len());
    for (index, entry) in parsed.schedules.into_iter().enumerate() {
        let invalid = |field: &str, reason: String| ConfigError::Schedule {
            file: file.to_string(),
            key: format!("schedules[{index}].{field}"),
            reason,
        };
        if schedules.iter().any(|earlier| earlier.name == entry.name) {
            return Err(invalid(
                "name",
                format!("'{}' names two schedules; names must be unique", entry.name),
            ));
        }
        let cron = schedule::CronSchedule::parse(&entry.cron, entry.zone.as_deref()).map_err(|reason| {
            let field = if reason.contains("time zone") { "zone" } else { "cron" };
            invalid(field, reason)
        })?;
        let input = rmp_serde::to_vec_named(&entry.input.unwrap_or(toml::Value::Table(Default::default())))
            .map_err(|error| invalid("input", error.to_string()))?;
        let missed = match entry.missed {
            MissedEntry::Skip => MissedFires::Skip,
            MissedEntry::FireOnce => MissedFires::FireOnce,
            MissedEntry::FireEach => MissedFires::FireEach {
                max: entry.max_missed.unwrap_or(100),
            },
        };
        schedules.push(ScheduleSpec {
            name: entry.name,
            workflow: entry.workflow,
            expression: entry.cron,
            input,
            routing_key: entry.routing_key,
            missed,
            cron,
        });
    }
    let mut rollouts = Vec::with_capacity(parsed.watched_rollouts.len());
    for (index, entry) in parsed.watched_rollouts.into_iter().enumerate() {
        let invalid = |field: &str, reason: String| ConfigError::Rollout {
            file: file.to_string(),
            key: format!("rollouts[{index}].{field}"),
            reason,
        };
        let version = |field: &str, text: &str| {
            Version::parse(text).map_err(|error| ConfigError::InvalidVersion {
                file: file.to_string(),
                key: format!("rollouts[{index}].{field}"),
                value: text.to_string(),
                expected: "version (like 2.0.0)",
                reason: error.to_string(),
            })
        };
        let hold = parse_duration(&entry.hold).map_err(|reason| invalid("hold", reason))?;
        let mut spec = strata_core::rollout::RolloutSpec::new(
            entry.workflow,
            version("candidate", &entry.candidate)?,
            version("stable", &entry.stable)?,
        );
        if let Some(name) = entry.name {
            spec = spec.named(name);
        }
        if entry.unwatched {
            spec = spec.unwatched();
        }
        for (stage, percent) in entry.shadow_stages.into_iter().enumerate() {
            basis_points(file, format!("rollouts[{index}].shadow_stages[{stage}]"), percent)?;
            spec = spec.stage(strata_core::rollout::Stage::shadow(percent, hold, entry.min_finished));
        }
        let shadows = spec.stages.len();
        for (stage, percent) in entry.stages.into_iter().enumerate() {
            basis_points(file, format!("rollouts[{index}].stages[{stage}]"), percent)?;
            spec = spec.stage(strata_core::rollout::Stage::new(percent, hold, entry.min_finished));
        }
        spec = spec
            .gates(strata_core::rollout::Gates {
                max_error_rate_increase: entry.gates.max_error_rate_increase,
                max_latency_multiplier: entry.gates.max_latency_multiplier,
                min_success_rate: entry.gates.min_success_rate,
                max_consecutive_failures: entry.gates.max_consecutive_failures,
                max_shadow_mismatch: entry.gates.max_shadow_mismatch,
                measures: entry
                    .gates
                    .measures
                    .into_iter()
                    .map(|gate| strata_core::rollout::MeasureGate {
                        measure: gate.measure,
                        max_increase: gate.max_increase,
                        min: gate.min,
                        max: gate.max,
                        min_sample: gate.min_sample.unwrap_or(1),
                    })
                    .collect(),
            })
            .on_rollback(match entry.on_rollback {
                OnRollbackEntry::KeepRunning => strata_core::rollout::OnRollback::KeepRunning,
                OnRollbackEntry::MoveBack => strata_core::rollout::OnRollback::MoveBack,
            });
        spec.validate().map_err(|error| {
            // The spec numbers shadow and real stages together; the file lists them apart.
            let field = match &error {
                strata_core::rollout::RolloutError::BadShare { stage, .. } if *stage < shadows => {
                    format!("shadow_stages[{stage}]")
                }
                strata_core::rollout::RolloutError::BadShare { stage, .. } => format!("stages[{}]", stage - shadows),
                other => other.field(),
            };
            invalid(&field, error.to_string())
        })?;
        if rollouts
            .iter()
            .any(|earlier: &strata_core::rollout::RolloutSpec| earlier.name == spec.name)
        {
            return Err(invalid(
                "name",
                format!("'{}' names two rollouts; names must be unique", spec.name),
            ));
        }
        rollouts.push(spec);
    }
    let retention = match parsed.retention {
        None => None,
        Some(text) => Some(parse_duration(&text).map_err(|reason| ConfigError::Retention {
            file: file.to_string(),
            reason,
        })?),
    };
    Ok(Config {
        routing: RoutingSpec { flags, workflows },
        schedules,
        rollouts,
        retention,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_days_and_zero_and_refuse_what_overflows() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            std::time::Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("0").unwrap(), std::time::Duration::ZERO);
        assert_eq!(parse_duration("90m").unwrap(), std::time::Duration::from_secs(5_400));
        assert!(parse_duration("18446744073709551615d")
            .unwrap_err()
            .contains("longer than"));
        assert!(parse_duration("5").unwrap_err().contains("like 30s"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn retention_is_read_from_the_file_and_a_bad_one_is_named() {
        let config = parse("strata.toml", "retention = \"30d\"\n").unwrap();
        assert_eq!(config.retention, Some(std::time::Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("strata.toml", "").unwrap().retention, None);
        let error = parse("strata.toml", "retention = \"a while\"\n").unwrap_err();
        assert!(matches!(error, ConfigError::Retention { .. }), "{error}");
    }

    const EXAMPLE: &str = r#"
[flags.payment-first]
enabled = true
segments = [{ attribute = "tenant", values = ["acme"] }]

[workflows.order]
default = "^1"

[[workflows.order.rollouts]]
candidate = "2.0.0"
percent = 12.5
flag = "payment-first"
"#;

    #[test]
    fn the_documented_example_parses() {
        let spec = parse("strata.toml", EXAMPLE).unwrap().routing;
        let order = &spec.workflows["order"];
        assert_eq!(order.default.as_ref().unwrap().to_string(), "^1");
        assert_eq!(order.rollouts[0].basis_points, 1_250);
        assert_eq!(order.rollouts[0].flag.as_deref(), Some("payment-first"));
        assert!(spec.flags["payment-first"].enabled);
    }

    #[test]
    fn each_format_error_names_the_file_and_key() {
        let cases = [
            ("[workflows.order\n", "strata.toml: TOML parse error at line 1"),
            ("[workflows.order]\ndefualt = \"^1\"\n", "unknown field `defualt`"),
            (
                "[workflows.order]\ndefault = \"one\"\n",
                "workflows.order.default: 'one' is not a valid version requirement",
            ),
            (
                "[[workflows.order.rollouts]]\ncandidate = \"2\"\npercent = 5\n",
                "workflows.order.rollouts[0].candidate: '2' is not a valid version",
            ),
            (
                "[[workflows.order.rollouts]]\ncandidate = \"2.0.0\"\npercent = 100.5\n",
                "workflows.order.rollouts[0].percent: 100.5 is not a percentage",
            ),
            (
                "[[workflows.order.rollouts]]\ncandidate = \"2.0.0\"\npercent = 0.125\n",
                "at most two decimals",
            ),
        ];
        for (text, expected) in cases {
            let error = parse("strata.toml", text).unwrap_err().to_string();
            assert!(error.contains(expected), "'{error}' does not contain '{expected}'");
            assert!(error.starts_with("strata.toml: "), "{error}");
        }
    }
}
