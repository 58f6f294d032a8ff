//! The instances part of the admin API: a filtered, paged listing, one instance in full (its
//! state decoded as JSON), its history a page at a time, and what an operator does to
//! instances: start one, signal it, cancel it.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::views::{history_page, instance_detail, instance_summary};
use super::{blocking_read, json_body, parse_version, ApiError};
use strata_admin_model::{
    CancelledView, ErrorView, HistoryPageView, InstanceDetail, InstancePage, SignalDeliveredView, StartBody,
    StartedView, TerminateBody,
};
use strata_engine::instance::HistoryRequest;
use strata_engine::{Engine, InstanceFilter, InstanceId, InstanceStatus, StartOptions};

/// Instances per page unless `limit` says otherwise, and the most a page holds.
const PAGE: usize = 100;
const LARGEST_PAGE: usize = 1_000;

/// Every status, to read one from a query by its name.
pub(super) const STATUSES: [InstanceStatus; 10] = [
    InstanceStatus::Ready,
    InstanceStatus::Running,
    InstanceStatus::Sleeping,
    InstanceStatus::WaitingSignal,
    InstanceStatus::RetryBackoff,
    InstanceStatus::Parked,
    InstanceStatus::Quarantined,
    InstanceStatus::Completed,
    InstanceStatus::Failed,
    InstanceStatus::Cancelled,
];

/// The status `name` names (as `InstanceStatus::as_str` does), or a 400 listing the names.
pub(super) fn status_named(name: &str) -> Result<InstanceStatus, ApiError> {
    STATUSES
        .into_iter()
        .find(|status| status.as_str() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = STATUSES.iter().map(|status| status.as_str()).collect();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown status '{name}'; use one of {}", known.join(", ")),
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    workflow: Option<String>,
    version: Option<String>,
    status: Option<String>,
    /// The cursor: only instances past this id in the listing's order.
    after: Option<u64>,
    /// `oldest` (the default) or `newest` first.
    order: Option<ListOrder>,
    limit: Option<usize>,
}

/// The size of a page a query asks for (`PAGE` unless it says), refused with what to do when
/// it is out of range or its cursor `name` (a `what`) is beyond what the store numbers.
fn checked_page(limit: Option<usize>, cursor: Option<u64>, name: &str, what: &str) -> Result<usize, ApiError> {
    if limit.is_some_and(|limit| !(1..=LARGEST_PAGE).contains(&limit)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be from 1 to {LARGEST_PAGE}; leave it out for pages of {PAGE}"),
        ));
    }
    if cursor.is_some_and(|cursor| cursor > i64::MAX as u64) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{name} must be {what} from 0 to {}; pass the `next` of the previous page",
                i64::MAX
            ),
        ));
    }
    Ok(limit.unwrap_or(PAGE))
}

impl ListQuery {
    fn filter(&self) -> Result<InstanceFilter, ApiError> {
        checked_page(self.limit, self.after, "after", "an instance id")?;
        let version = self.version.as_deref().map(parse_version).transpose()?;
        let status = self.status.as_deref().map(status_named).transpose()?;
        Ok(InstanceFilter {
            workflow: self.workflow.clone(),
            version,
            status,
            after: self.after.map(InstanceId),
            newest_first: self.order == Some(ListOrder::Newest),
        })
    }
}

/// `GET /v1/instances`: the instances the filter matches, oldest or newest first, a page at a
/// time; `next` is the cursor of the next page (pass it as `after`).
#[utoipa::path(get, path = "/v1/instances", tag = "instances",
    params(("workflow" = Option<String>, Query), ("version" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "ready, running, sleeping, waiting_signal, retry_backoff, parked, quarantined, completed, failed or cancelled"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only ids past this one in the listing's order (above it, or below it newest first): the `next` of the previous page"),
        ("order" = Option<ListOrder>, Query, description = "oldest (the default) or newest first"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)")),
    responses((status = 200, body = InstancePage), (status = 400, body = ErrorView),
        (status = 404, description = "No version of that workflow, or no such version, is known", body = ErrorView)))]
pub(super) async fn list(
    State(engine): State<Engine>,
    Query(query): Query<ListQuery>,
) -> Result<Json<InstancePage>, ApiError> {
    let filter = query.filter()?;
    let limit = query.limit.unwrap_or(PAGE).clamp(1, LARGEST_PAGE);
    // One more than the page, to know whether another follows; the store reads no further.
    let mut matching = blocking_read(engine, move |engine| engine.list_limited(&filter, limit + 1)).await??;
    let more = matching.len() > limit;
    matching.truncate(limit);
    let next = if more {
        matching.last().map(|info| info.id().0)
    } else {
        None
    };
    Ok(Json(InstancePage {
        instances: matching.iter().map(instance_summary).collect(),
        next,
    }))
}

/// `GET /v1/instances/{id}`: one instance in full.
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", params(("id" = u64, Path)),
    responses((status = 200, body = InstanceDetail), (status = 404, body = ErrorView)))]
pub(super) async fn show(State(engine): State<Engine>, Path(id): Path<u64>) -> Result<Json<InstanceDetail>, ApiError> {
    let (info, signals) = blocking_read(engine, move |engine| {
        let info = engine.instance(InstanceId(id))?;
        engine.pending_signals(InstanceId(id)).map(|signals| (info, signals))
    })
    .await??;
    Ok(Json(instance_detail(&info, &signals)))
}

/// Which end a listing (of instances, or of a history's entries) starts from.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum ListOrder {
    /// The oldest first.
    Oldest,
    /// The newest first.
    Newest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// The cursor: the `next` of the previous page.
    from: Option<u64>,
    /// `oldest` (the default) or `newest` first.
    order: Option<ListOrder>,
    limit: Option<usize>,
}

impl HistoryQuery {
    fn request(&self) -> Result<HistoryRequest, ApiError> {
        let limit = checked_page(self.limit, self.from, "from", "an entry number")?;
        Ok(HistoryRequest {
            from: self.from,
            newest_first: self.order == Some(ListOrder::Newest),
            limit,
        })
    }
}

/// `GET /v1/instances/{id}/history`: what happened to the instance, a page at a time, oldest
/// first unless `order=newest`; `next` is the cursor of the next page (pass it as `from`).
#[utoipa::path(get, path = "/v1/instances/{id}/history", tag = "instances",
    params(("id" = u64, Path),
        ("from" = Option<i64>, Query, minimum = 0, description = "Only entries after this number (oldest first) or before it (newest first): the `next` of the previous page"),
        ("order" = Option<ListOrder>, Query, description = "oldest (the default) or newest"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)")),
    responses((status = 200, body = HistoryPageView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
pub(super) async fn history(
    State(engine): State<Engine>,
    Path(id): Path<u64>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryPageView>, ApiError> {
    let request = query.request()?;
    let history = blocking_read(engine, move |engine| engine.history(InstanceId(id), &request)).await??;
    Ok(Json(history_page(&history)))
}

/// `POST /v1/instances/{id}/signals/{name}` with the payload as the JSON body (`null` for
/// none): delivered durably, consumed when the instance waits for it.
#[utoipa::path(post, path = "/v1/instances/{id}/signals/{name}", tag = "instances",
    params(("id" = u64, Path), ("name" = String, Path, description = "The signal's name")),
    request_body(content = serde_json::Value, description = "The payload as JSON (null for none)"),
    responses((status = 200, description = "Stored durably", body = SignalDeliveredView), (status = 400, body = ErrorView),
        (status = 404, body = ErrorView), (status = 409, description = "The instance has finished", body = ErrorView)))]
pub(super) async fn signal(
    State(engine): State<Engine>,
    Path((id, name)): Path<(u64, String)>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Json<SignalDeliveredView>, ApiError> {
    let payload = json_body(payload, "the signal's payload (null for none)")?;
    engine.signal(InstanceId(id), &name, &payload).await?;
    Ok(Json(SignalDeliveredView { delivered: true }))
}

/// `POST /v1/instances`: starts an instance of a workflow with its input as JSON, routed like
/// any start (or on a version meeting `version`); answers its id and version once committed.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", request_body = StartBody,
    responses((status = 200, description = "Started and committed", body = StartedView), (status = 400, body = ErrorView),
        (status = 404, body = ErrorView), (status = 409, body = ErrorView), (status = 422, description = "Its state could not be built from the input", body = ErrorView)))]
pub(super) async fn start(
    State(engine): State<Engine>,
    body: Result<Json<StartBody>, JsonRejection>,
) -> Result<Json<StartedView>, ApiError> {
    let body = json_body(body, "a start ({workflow, input, routing_key, version})")?;
    let mut options = StartOptions::new();
    if let Some(key) = body.routing_key {
        options = options.routing_key(key);
    }
    if let Some(requirement) = body.version {
        options = options.version(requirement);
    }
    let id = engine.start_with(&body.workflow, &body.input, options).await?;
    tracing::info!(workflow = %body.workflow, %id, "admin API: instance started");
    let version = blocking_read(engine, move |engine| engine.instance(id))
        .await??
        .version()
        .to_string();
    Ok(Json(StartedView {
        id: id.0,
        workflow: body.workflow,
        version,
    }))
}

/// `POST /v1/instances/{id}/cancel`: cancelled at its next step boundary; answers once it is.
#[utoipa::path(post, path = "/v1/instances/{id}/cancel", tag = "instances", params(("id" = u64, Path)),
    responses((status = 200, description = "Cancelled", body = CancelledView), (status = 404, body = ErrorView),
        (status = 409, description = "The instance has finished", body = ErrorView)))]
pub(super) async fn cancel(State(engine): State<Engine>, Path(id): Path<u64>) -> Result<Json<CancelledView>, ApiError> {
    engine.cancel(InstanceId(id)).await?;
    Ok(Json(CancelledView {
        status: "cancelled".to_string(),
    }))
}

/// `POST /v1/instances/{id}/terminate`: ended at once, without running another step (a running
/// step is abandoned), cancelled, with the reason in its history; answers once committed.
#[utoipa::path(post, path = "/v1/instances/{id}/terminate", tag = "instances", params(("id" = u64, Path)),
    request_body = TerminateBody,
    responses((status = 200, description = "Terminated: it ended cancelled", body = CancelledView),
        (status = 400, description = "A blank reason, or a body that is not JSON", body = ErrorView), (status = 404, body = ErrorView),
        (status = 409, description = "The instance has finished", body = ErrorView),
        (status = 422, description = "JSON that is not a termination (no reason, an unknown field)", body = ErrorView)))]
pub(super) async fn terminate(
    State(engine): State<Engine>,
    Path(id): Path<u64>,
    body: Result<Json<TerminateBody>, JsonRejection>,
) -> Result<Json<CancelledView>, ApiError> {
    let body = json_body(body, "a termination ({reason})")?;
    engine.terminate(InstanceId(id), &body.reason).await?;
    tracing::info!(instance = id, reason = %body.reason, "admin API: instance terminated");
    Ok(Json(CancelledView {
        status: "cancelled".to_string(),
    }))
}
