//! Moving instances and migrating state through the admin API: a move's dry-run plan (which
//! instances can move, and why not) and the move itself; a background migration started, its
//! progress, and pause and resume.

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::whole::Whole;
use super::{blocking_read, json_body, parse_version, ApiError};
use strata_engine::migrate::{MigrationProgress, MoveCheck};
use strata_engine::{Engine, InstanceId, MigrationJob, MoveRequest};

/// A move as posted: the instances of `workflow` (on `from_version`, with `status`, or these
/// `ids`) to move to `target`, with `steps` naming where instances at a step without a
/// counterpart continue.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MoveBody {
    workflow: String,
    target: String,
    from_version: Option<String>,
    status: Option<String>,
    #[schema(value_type = Option<Vec<u64>>)]
    ids: Option<Vec<Whole>>,
    #[serde(default)]
    steps: HashMap<String, String>,
}

impl MoveBody {
    fn request(self) -> Result<MoveRequest, ApiError> {
        let mut request = MoveRequest::new(self.workflow, parse_version(&self.target)?);
        if let Some(from) = &self.from_version {
            request = request.from_version(parse_version(from)?);
        }
        if let Some(name) = &self.status {
            request = request.with_status(super::instances::status_named(name)?);
        }
        request.ids = self.ids.map(|ids| ids.into_iter().map(|id| InstanceId(id.0)).collect());
        request.steps = self.steps;
        Ok(request)
    }
}

/// One instance's verdict.
#[derive(Serialize, utoipa::ToSchema)]
struct CheckView {
    id: u64,
    from: String,
    step: String,
    /// Where it continues on the target, if it can move.
    continues_at: Option<String>,
    /// Why it cannot move, if it cannot.
    refused: Option<String>,
}

impl CheckView {
    fn of(check: &MoveCheck) -> CheckView {
        let (continues_at, refused) = match &check.verdict {
            Ok(step) => (Some(step.clone()), None),
            Err(refusal) => (None, Some(refusal.to_string())),
        };
        CheckView {
            id: check.id.0,
            from: check.from.to_string(),
            step: check.step.clone(),
            continues_at,
            refused,
        }
    }
}

/// `POST /v1/moves/plan`: which selected instances can move, and why the others cannot;
/// nothing changes.
#[utoipa::path(post, path = "/v1/moves/plan", tag = "moves and migrations", request_body = MoveBody,
    responses((status = 200, body = PlanView), (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn plan(
    State(engine): State<Engine>,
    body: Result<Json<MoveBody>, JsonRejection>,
) -> Result<Json<PlanView>, ApiError> {
    let request = json_body(body, "a move ({workflow, target, from_version, status, ids, steps})")?.request()?;
    let plan = blocking_read(engine, move |engine| engine.plan_moves(&request)).await??;
    let checks: Vec<CheckView> = plan.checks.iter().map(CheckView::of).collect();
    Ok(Json(PlanView {
        target: plan.target.to_string(),
        checks,
    }))
}

/// A move's dry run.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct PlanView {
    /// The target version.
    target: String,
    /// Each selected instance's verdict.
    checks: Vec<CheckView>,
}

/// What a move did.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct MoveReportView {
    /// The instances that moved.
    moved: Vec<u64>,
    /// Those that did not, with why.
    refused: Vec<CheckView>,
}

/// `POST /v1/moves`: moves the instances that can move, at their step boundaries.
#[utoipa::path(post, path = "/v1/moves", tag = "moves and migrations", request_body = MoveBody,
    responses((status = 200, body = MoveReportView), (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn apply(
    State(engine): State<Engine>,
    body: Result<Json<MoveBody>, JsonRejection>,
) -> Result<Json<MoveReportView>, ApiError> {
    let request = json_body(body, "a move ({workflow, target, from_version, status, ids, steps})")?.request()?;
    tracing::info!(workflow = %request.workflow, target = %request.target, "admin API: move instances");
    let report = engine.move_instances(&request).await?;
    let moved: Vec<u64> = report.moved.iter().map(|id| id.0).collect();
    let refused: Vec<CheckView> = report.refused.iter().map(CheckView::of).collect();
    Ok(Json(MoveReportView { moved, refused }))
}

/// A background migration to start.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MigrationBody {
    workflow: String,
    #[schema(value_type = Option<u64>, minimum = 1)]
    batch_size: Option<Whole>,
    #[schema(value_type = Option<u32>, minimum = 1)]
    max_per_second: Option<Whole>,
}

/// A migration job's progress.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ProgressView {
    workflow: String,
    /// `running`, `paused` or `finished`.
    state: String,
    migrated: u64,
    remaining: u64,
    failed: u64,
    rate_per_second: f64,
    failures: Vec<serde_json::Value>,
}

impl ProgressView {
    fn of(progress: MigrationProgress) -> ProgressView {
        ProgressView {
            workflow: progress.workflow,
            state: super::views::snake_case(&format!("{:?}", progress.state)),
            migrated: progress.migrated,
            remaining: progress.remaining,
            failed: progress.failed,
            rate_per_second: progress.rate_per_second,
            failures: progress
                .failures
                .iter()
                .map(|failure| serde_json::json!({ "id": failure.id.0, "reason": failure.reason }))
                .collect(),
        }
    }
}

/// `POST /v1/migrations`: starts the background migration of a workflow's live states (or
/// answers the one that runs).
#[utoipa::path(post, path = "/v1/migrations", tag = "moves and migrations", request_body = MigrationBody,
    responses((status = 200, description = "The job's progress (the running one's, if one runs)", body = ProgressView),
        (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn start_migration(
    State(engine): State<Engine>,
    body: Result<Json<MigrationBody>, JsonRejection>,
) -> Result<Json<ProgressView>, ApiError> {
    let body = json_body(body, "a migration ({workflow, batch_size, max_per_second})")?;
    let mut job = MigrationJob::new(body.workflow);
    for (field, value) in [("batch_size", body.batch_size), ("max_per_second", body.max_per_second)] {
        if value == Some(Whole(0)) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{field} must be at least 1"),
            ));
        }
    }
    if let Some(size) = body.batch_size {
        job = job.batch_size(usize::try_from(size.0).unwrap_or(usize::MAX));
    }
    if let Some(rate) = body.max_per_second {
        job = job.max_per_second(rate.to_u32("max_per_second")?);
    }
    tracing::info!(workflow = %job.workflow, "admin API: start a background migration");
    let handle = engine.migrate_states(job)?;
    Ok(Json(ProgressView::of(handle.progress())))
}

fn handle(engine: &Engine, workflow: &str) -> Result<strata_engine::migrate::MigrationHandle, ApiError> {
    engine.migration(workflow).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no background migration of '{workflow}' has run since this engine opened; start one first"),
        )
    })
}

/// `GET /v1/migrations/{workflow}`: the job's progress.
#[utoipa::path(get, path = "/v1/migrations/{workflow}", tag = "moves and migrations", params(("workflow" = String, Path)),
    responses((status = 200, body = ProgressView), (status = 404, description = "No job since this engine opened", body = strata_admin_model::ErrorView)))]
pub(super) async fn progress(
    State(engine): State<Engine>,
    Path(workflow): Path<String>,
) -> Result<Json<ProgressView>, ApiError> {
    Ok(Json(ProgressView::of(handle(&engine, &workflow)?.progress())))
}

/// `POST /v1/migrations/{workflow}/{action}`: `pause` or `resume`.
#[utoipa::path(post, path = "/v1/migrations/{workflow}/{action}", tag = "moves and migrations",
    params(("workflow" = String, Path), ("action" = inline(MigrationAction), Path)),
    responses((status = 200, body = ProgressView), (status = 400, body = strata_admin_model::ErrorView),
        (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn control(
    State(engine): State<Engine>,
    Path((workflow, action)): Path<(String, MigrationAction)>,
) -> Result<Json<ProgressView>, ApiError> {
    let job = handle(&engine, &workflow)?;
    match action {
        MigrationAction::Pause => job.pause(),
        MigrationAction::Resume => job.resume(),
    }
    Ok(Json(ProgressView::of(job.progress())))
}

/// What an operator does to a background migration.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum MigrationAction {
    /// Hold it after its batch in flight.
    Pause,
    /// Let a paused migration go on.
    Resume,
}
