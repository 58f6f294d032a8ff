//! Moving instances and migrating state through the admin API: a move's dry-run plan (which
//! instances can move, and why not) and the move itself; a background migration started, its
//! progress, and pause and resume.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{blocking_read, json_body, parse_version, ApiError};
use strata_admin_model::{
    MigrationBody, MigrationFailureView, MigrationProgressView, MoveBody, MoveCheckView, MovePlanView, MoveReportView,
    Whole,
};
use strata_engine::migrate::{MigrationProgress, MoveCheck};
use strata_engine::{Engine, InstanceId, MigrationJob, MoveRequest};

/// The engine's move request for a posted move.
fn move_request(body: MoveBody) -> Result<MoveRequest, ApiError> {
    let mut request = MoveRequest::new(body.workflow, parse_version(&body.target)?);
    if let Some(from) = &body.from_version {
        request = request.from_version(parse_version(from)?);
    }
    if let Some(name) = &body.status {
        request = request.with_status(super::instances::status_named(name)?);
    }
    request.ids = body.ids.map(|ids| ids.into_iter().map(|id| InstanceId(id.0)).collect());
    request.steps = body.steps;
    Ok(request)
}

fn check_view(check: &MoveCheck) -> MoveCheckView {
    let (continues_at, refused) = match &check.verdict {
        Ok(step) => (Some(step.clone()), None),
        Err(refusal) => (None, Some(refusal.to_string())),
    };
    MoveCheckView {
        id: check.id.0,
        from: check.from.to_string(),
        step: check.step.clone(),
        continues_at,
        refused,
    }
}

/// `POST /v1/moves/plan`: which selected instances can move, and why the others cannot;
/// nothing changes.
#[utoipa::path(post, path = "/v1/moves/plan", tag = "moves and migrations", request_body = MoveBody,
    responses((status = 200, body = MovePlanView), (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn plan(
    State(engine): State<Engine>,
    body: Result<Json<MoveBody>, JsonRejection>,
) -> Result<Json<MovePlanView>, ApiError> {
    let request = json_body(body, "a move ({workflow, target, from_version, status, ids, steps})")?;
    let request = move_request(request)?;
    let plan = blocking_read(engine, move |engine| engine.plan_moves(&request)).await??;
    let checks: Vec<MoveCheckView> = plan.checks.iter().map(check_view).collect();
    Ok(Json(MovePlanView {
        target: plan.target.to_string(),
        checks,
    }))
}

/// `POST /v1/moves`: moves the instances that can move, at their step boundaries.
#[utoipa::path(post, path = "/v1/moves", tag = "moves and migrations", request_body = MoveBody,
    responses((status = 200, body = MoveReportView), (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn apply(
    State(engine): State<Engine>,
    body: Result<Json<MoveBody>, JsonRejection>,
) -> Result<Json<MoveReportView>, ApiError> {
    let request = json_body(body, "a move ({workflow, target, from_version, status, ids, steps})")?;
    let request = move_request(request)?;
    tracing::info!(workflow = %request.workflow, target = %request.target, "admin API: move instances");
    let report = engine.move_instances(&request).await?;
    let moved: Vec<u64> = report.moved.iter().map(|id| id.0).collect();
    let refused: Vec<MoveCheckView> = report.refused.iter().map(check_view).collect();
    Ok(Json(MoveReportView { moved, refused }))
}

fn progress_view(progress: MigrationProgress) -> MigrationProgressView {
    MigrationProgressView {
        workflow: progress.workflow,
        state: super::views::snake_case(&format!("{:?}", progress.state)),
        migrated: progress.migrated,
        remaining: progress.remaining,
        failed: progress.failed,
        rate_per_second: progress.rate_per_second,
        failures: progress
            .failures
            .iter()
            .map(|failure| MigrationFailureView {
                id: failure.id.0,
                reason: failure.reason.clone(),
            })
            .collect(),
    }
}

/// `POST /v1/migrations`: starts the background migration of a workflow's live states (or
/// answers the one that runs).
#[utoipa::path(post, path = "/v1/migrations", tag = "moves and migrations", request_body = MigrationBody,
    responses((status = 200, description = "The job's progress (the running one's, if one runs)", body = MigrationProgressView),
        (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn start_migration(
    State(engine): State<Engine>,
    body: Result<Json<MigrationBody>, JsonRejection>,
) -> Result<Json<MigrationProgressView>, ApiError> {
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
        job = job.max_per_second(super::whole_u32(rate, "max_per_second")?);
    }
    tracing::info!(workflow = %job.workflow, "admin API: start a background migration");
    let handle = engine.migrate_states(job)?;
    Ok(Json(progress_view(handle.progress())))
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
    responses((status = 200, body = MigrationProgressView), (status = 404, description = "No job since this engine opened", body = strata_admin_model::ErrorView)))]
pub(super) async fn progress(
    State(engine): State<Engine>,
    Path(workflow): Path<String>,
) -> Result<Json<MigrationProgressView>, ApiError> {
    Ok(Json(progress_view(handle(&engine, &workflow)?.progress())))
}

/// `POST /v1/migrations/{workflow}/{action}`: `pause` or `resume`.
#[utoipa::path(post, path = "/v1/migrations/{workflow}/{action}", tag = "moves and migrations",
    params(("workflow" = String, Path), ("action" = inline(MigrationAction), Path)),
    responses((status = 200, body = MigrationProgressView), (status = 400, body = strata_admin_model::ErrorView),
        (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn control(
    State(engine): State<Engine>,
    Path((workflow, action)): Path<(String, MigrationAction)>,
) -> Result<Json<MigrationProgressView>, ApiError> {
    let job = handle(&engine, &workflow)?;
    match action {
        MigrationAction::Pause => job.pause(),
        MigrationAction::Resume => job.resume(),
    }
    Ok(Json(progress_view(job.progress())))
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
