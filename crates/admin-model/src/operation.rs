//! What an engine runs with, as the API shows it: the workers sharing its store, the routing
//! rules that route starts now and how many starts each version got, the schedules with their
//! fires, and the records set apart as quarantined.

use serde::{Deserialize, Serialize};

/// A worker sharing the store (just this process with the embedded store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerView {
    /// Its id, unique in the store.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it joined (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// Its last heartbeat (ms since the Unix epoch).
    pub heartbeat_ms: u64,
    /// The versions it has code for (`workflow@version`).
    pub versions: Vec<String>,
    /// Whether its lease is current.
    pub alive: bool,
}

/// The routing rules that route starts now, and the starts routed since the engine opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutingView {
    /// Each workflow's rules, by name.
    pub workflows: Vec<WorkflowRoutingView>,
    /// The flags rules may name.
    pub flags: Vec<FlagView>,
    /// Starts per version and reason since this engine opened.
    pub starts: Vec<RoutedStartsView>,
}

/// One workflow's rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowRoutingView {
    /// The workflow.
    pub workflow: String,
    /// The default version's requirement; absent: the newest active version.
    pub default: Option<String>,
    /// Rollout rules, tried in order (`rollout_rule_N` in `starts` is rule N).
    pub rules: Vec<RolloutRuleView>,
}

/// A rollout rule: a share of the matching starts to a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutRuleView {
    /// The version the rule sends starts to.
    pub candidate: String,
    /// The share of routing keys sent to it (percent).
    pub percent: f64,
    /// The flag that must be on, if any.
    pub flag: Option<String>,
    /// Segments the start must match (`attribute in [values]`).
    pub segments: Vec<String>,
}

/// A flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlagView {
    /// Its name.
    pub name: String,
    /// Whether it is on at all.
    pub enabled: bool,
    /// Whom it is on for (`attribute in [values]`; none: everyone).
    pub segments: Vec<String>,
}

/// How many starts a version got for one reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutedStartsView {
    /// The workflow.
    pub workflow: String,
    /// The version.
    pub version: String,
    /// `requested`, `rollout_rule_N`, `default` or `newest`.
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// A schedule of the config in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleView {
    /// Its name.
    pub name: String,
    /// The workflow it starts.
    pub workflow: String,
    /// Its cron expression, as written.
    pub expression: String,
    /// What is done about fires missed while no engine ran: `skip`, `fire_once` or
    /// `fire_each (at most N)`.
    pub missed: String,
    /// The last fire handled (ms since the Unix epoch), if any.
    pub last_fire_ms: Option<u64>,
    /// The next fire (ms since the Unix epoch), if there is one.
    pub next_fire_ms: Option<u64>,
}

/// A live record set apart because it does not decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuarantinedView {
    /// The instance.
    pub id: u64,
    /// Why it cannot be read.
    pub reason: String,
}
