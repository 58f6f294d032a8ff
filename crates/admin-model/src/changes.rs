//! Moves of instances between versions and background state migrations: the requests the API
//! takes and what it answers.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::Whole;

/// A move as posted: the instances of `workflow` (on `from_version`, with `status`, or these
/// `ids`) to move to `target`, with `steps` naming where instances at a step without a
/// counterpart continue. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    /// The workflow.
    pub workflow: String,
    /// The version to move to.
    pub target: String,
    /// Only instances on this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// Only instances with this status (as instances are listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only these instances.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<u64>>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<Whole>>,
    /// Where instances at a step the target lacks continue (`old step` -> `new step`).
    #[serde(default)]
    pub steps: HashMap<String, String>,
}

/// One instance's verdict in a move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MoveCheckView {
    /// The instance.
    pub id: u64,
    /// The version it is on.
    pub from: String,
    /// The step it is at.
    pub step: String,
    /// Where it continues on the target, if it can move.
    pub continues_at: Option<String>,
    /// Why it cannot move, if it cannot.
    pub refused: Option<String>,
}

/// A move's dry run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MovePlanView {
    /// The target version.
    pub target: String,
    /// Each selected instance's verdict.
    pub checks: Vec<MoveCheckView>,
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MoveReportView {
    /// The instances that moved.
    pub moved: Vec<u64>,
    /// Those that did not, with why.
    pub refused: Vec<MoveCheckView>,
}

/// A background migration to start. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MigrationBody {
    /// The workflow whose live states are migrated.
    pub workflow: String,
    /// Records per batch, each batch one commit (default 1 000).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<Whole>,
    /// At most this many records a second.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<Whole>,
}

/// A migration job's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationProgressView {
    /// The workflow.
    pub workflow: String,
    /// `running`, `paused` or `finished`.
    pub state: String,
    /// Records rewritten so far.
    pub migrated: u64,
    /// Records still to look at.
    pub remaining: u64,
    /// Records whose migration failed (left as they were).
    pub failed: u64,
    /// Records a second, lately.
    pub rate_per_second: f64,
    /// The failures, with why.
    pub failures: Vec<MigrationFailureView>,
}

/// A record a migration could not rewrite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationFailureView {
    /// The instance.
    pub id: u64,
    /// Why.
    pub reason: String,
}
