//! Reviving failed and cancelled instances through the admin API: the dry-run plan (which
//! instances would be taken up where, and why the others would not) and the revival itself.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::{blocking_read, json_body, parse_version, ApiError};
use strata_admin_model::{ReviveBody, ReviveCheckView, RevivePlanView, ReviveReportView};
use strata_engine::migrate::ReviveCheck;
use strata_engine::{Engine, InstanceId, InstanceStatus, ReviveRequest};

/// What a posted revival's body must look like, for the error that refuses another.
const SHAPE: &str =
    "a revival ({workflow, target, from_version, status, reason_contains, ended_after_ms, ended_before_ms, ids, steps, batch_size})";

/// The engine's revival request for a posted revival.
fn revive_request(body: ReviveBody) -> Result<ReviveRequest, ApiError> {
    let mut request = ReviveRequest::new(body.workflow);
    if let Some(target) = &body.target {
        request = request.on_version(parse_version(target)?);
    }
    if let Some(from) = &body.from_version {
        request = request.from_version(parse_version(from)?);
    }
    if let Some(name) = &body.status {
        request = request.with_status(match name.as_str() {
            "failed" => InstanceStatus::Failed,
            "cancelled" => InstanceStatus::Cancelled,
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                    "only failed and cancelled instances are revived, not '{other}'; use status failed or cancelled"
                ),
                ))
            }
        });
    }
    request.reason_contains = body.reason_contains;
    request.ended_after_ms = body
        .ended_after_ms
        .map(|whole| moment("ended_after_ms", whole.0))
        .transpose()?;
    request.ended_before_ms = body
        .ended_before_ms
        .map(|whole| moment("ended_before_ms", whole.0))
        .transpose()?;
    request.ids = body.ids.map(|ids| ids.into_iter().map(|id| InstanceId(id.0)).collect());
    request.steps = body.steps;
    if let Some(size) = body.batch_size {
        request = request.batch_size(usize::try_from(size.0).unwrap_or(usize::MAX));
    }
    Ok(request)
}

/// A time in ms since the Unix epoch as the document bounds it (an int64 from 0).
fn moment(name: &str, ms: u64) -> Result<u64, ApiError> {
    if ms > i64::MAX as u64 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name} must be ms since the Unix epoch, from 0 to {}", i64::MAX),
        ));
    }
    Ok(ms)
}

fn check_view(check: &ReviveCheck) -> ReviveCheckView {
    let (resumes_at, refused) = match &check.verdict {
        Ok(step) => (Some(step.clone()), None),
        Err(refusal) => (None, Some(refusal.to_string())),
    };
    ReviveCheckView {
        id: check.id.0,
        from: check.from.to_string(),
        status: check.status.as_str().to_string(),
        failure: check.failure.clone(),
        step: check.step.clone(),
        target: check.target.to_string(),
        resumes_at,
        refused,
    }
}

/// `POST /v1/revivals/plan`: which selected instances would be revived, where and at which
/// step, and why the others would not; nothing changes.
#[utoipa::path(post, path = "/v1/revivals/plan", tag = "moves and migrations", request_body = ReviveBody,
    responses((status = 200, body = RevivePlanView), (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn plan(
    State(engine): State<Engine>,
    body: Result<Json<ReviveBody>, JsonRejection>,
) -> Result<Json<RevivePlanView>, ApiError> {
    let request = revive_request(json_body(body, SHAPE)?)?;
    let plan = blocking_read(engine, move |engine| engine.plan_revive(&request)).await??;
    let checks: Vec<ReviveCheckView> = plan.checks.iter().map(check_view).collect();
    Ok(Json(RevivePlanView {
        revivable: plan.revivable().count() as u64,
        refused: plan.refused().count() as u64,
        checks,
    }))
}

/// `POST /v1/revivals`: revives the selected instances that can be, in batches of one commit.
#[utoipa::path(post, path = "/v1/revivals", tag = "moves and migrations", request_body = ReviveBody,
    responses((status = 200, body = ReviveReportView), (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn apply(
    State(engine): State<Engine>,
    body: Result<Json<ReviveBody>, JsonRejection>,
) -> Result<Json<ReviveReportView>, ApiError> {
    let request = revive_request(json_body(body, SHAPE)?)?;
    tracing::info!(workflow = %request.workflow, target = ?request.target, "admin API: revive instances");
    let report = engine.revive(&request).await?;
    Ok(Json(ReviveReportView {
        revived: report.revived.iter().map(|id| id.0).collect(),
        refused: report.refused.iter().map(check_view).collect(),
        undrained: report.undrained.iter().map(ToString::to_string).collect(),
    }))
}
