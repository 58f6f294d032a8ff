//! Reviving failed and cancelled instances: the revival the API takes, its dry run's verdicts
//! and what applying it did.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::Whole;

/// A revival as posted: the failed or cancelled instances of `workflow` it selects (ended on
/// `from_version`, with `status`, a failure reason containing `reason_contains`, ended in
/// `[ended_after_ms, ended_before_ms)`, or these `ids`), revived on `target` (absent: each on the
/// version it ended on) at the step it ended on, or where `steps` maps it. Unknown fields are
/// refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReviveBody {
    /// The workflow.
    pub workflow: String,
    /// The version to revive them on (a fix); absent: each on the version it ended on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Only instances that ended on this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// Only instances that ended so: `failed` or `cancelled` (absent: either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only failed instances whose failure reason contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_contains: Option<String>,
    /// Only instances that ended at or after this time (ms since the Unix epoch).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_after_ms: Option<Whole>,
    /// Only instances that ended before this time (ms since the Unix epoch).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_before_ms: Option<Whole>,
    /// Only these instances.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<u64>>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<Whole>>,
    /// Where instances are taken up instead of the step they ended on (`ended on` -> `taken up
    /// at`), also on their own version.
    #[serde(default)]
    pub steps: HashMap<String, String>,
    /// How many instances one commit revives (default 500).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<Whole>,
}

/// One instance's verdict in a revival.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviveCheckView {
    /// The instance.
    pub id: u64,
    /// The version it ended on.
    pub from: String,
    /// How it ended (`failed`, `cancelled`), or its status if it did not end so.
    pub status: String,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// The step it ended on.
    pub step: String,
    /// The version it would be revived on.
    pub target: String,
    /// The step it is taken up at, if it can be revived.
    pub resumes_at: Option<String>,
    /// Why it cannot be revived, if it cannot.
    pub refused: Option<String>,
}

/// A revival's dry run: nothing changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevivePlanView {
    /// How many selected instances can be revived.
    pub revivable: u64,
    /// How many cannot.
    pub refused: u64,
    /// Each selected instance's verdict, in id order.
    pub checks: Vec<ReviveCheckView>,
}

/// What a revival did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviveReportView {
    /// The instances revived, live again.
    pub revived: Vec<u64>,
    /// Those that were not, with why.
    pub refused: Vec<ReviveCheckView>,
    /// Versions that had drained and are draining again (`workflow@version`): a revived
    /// instance is live on them, so their code must stay.
    pub undrained: Vec<String>,
}
