//! What the engine runs with, through the admin API: the workers sharing its store, the routing
//! rules that route starts now (after promotions and rollbacks) with the starts each version got,
//! the schedules with their last and next fires, and the quarantined records.

use axum::extract::State;
use axum::Json;

use super::{blocking_read, ApiError};
use strata_admin_model::{
    FlagView, QuarantinedView, RolloutRuleView, RoutedStartsView, RoutingView, ScheduleView, WorkerView,
    WorkflowRoutingView,
};
use strata_engine::config::MissedFires;
use strata_engine::routing::Segment;
use strata_engine::Engine;

/// `GET /v1/workers`: the workers sharing the store, with the versions each has code for and
/// whether its lease is current.
#[utoipa::path(get, path = "/v1/workers", tag = "engine",
    responses((status = 200, body = Vec<WorkerView>)))]
pub(super) async fn workers(State(engine): State<Engine>) -> Result<Json<Vec<WorkerView>>, ApiError> {
    let workers = blocking_read(engine, |engine| engine.workers()).await??;
    Ok(Json(
        workers
            .into_iter()
            .map(|worker| WorkerView {
                id: worker.id,
                host: worker.host,
                pid: worker.pid,
                started_at_ms: worker.started_at_ms,
                heartbeat_ms: worker.heartbeat_ms,
                versions: worker.versions.iter().map(ToString::to_string).collect(),
                alive: worker.alive,
            })
            .collect(),
    ))
}

fn segment_text(segment: &Segment) -> String {
    format!("{} in [{}]", segment.attribute, segment.values.join(", "))
}

/// `GET /v1/routing`: the rules that route new instances now — the config's with every rollout
/// laid over them — and the starts each version got, and why, since this engine opened.
#[utoipa::path(get, path = "/v1/routing", tag = "engine",
    responses((status = 200, body = RoutingView)))]
pub(super) async fn routing(State(engine): State<Engine>) -> Result<Json<RoutingView>, ApiError> {
    let (spec, counts) = blocking_read(engine, |engine| (engine.routing_in_force(), engine.routing_counts())).await?;
    Ok(Json(RoutingView {
        workflows: spec
            .workflows
            .iter()
            .map(|(workflow, routing)| WorkflowRoutingView {
                workflow: workflow.clone(),
                default: routing.default.as_ref().map(ToString::to_string),
                rules: routing
                    .rollouts
                    .iter()
                    .map(|rule| RolloutRuleView {
                        candidate: rule.candidate.to_string(),
                        percent: f64::from(rule.basis_points) / 100.0,
                        flag: rule.flag.clone(),
                        segments: rule.segments.iter().map(segment_text).collect(),
                    })
                    .collect(),
            })
            .collect(),
        flags: spec
            .flags
            .values()
            .map(|flag| FlagView {
                name: flag.name.clone(),
                enabled: flag.enabled,
                segments: flag.segments.iter().map(segment_text).collect(),
            })
            .collect(),
        starts: counts
            .into_iter()
            .map(|(key, reason, count)| RoutedStartsView {
                workflow: key.workflow,
                version: key.version.to_string(),
                reason: reason.label(),
                count,
            })
            .collect(),
    }))
}

/// `GET /v1/schedules`: the schedules of the config in force, each with its last handled fire
/// and its next one.
#[utoipa::path(get, path = "/v1/schedules", tag = "engine",
    responses((status = 200, body = Vec<ScheduleView>)))]
pub(super) async fn schedules(State(engine): State<Engine>) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    let (schedules, fires) = blocking_read(engine, |engine| (engine.schedules(), engine.schedule_fires())).await?;
    let fires = fires?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    Ok(Json(
        schedules
            .iter()
            .map(|schedule| {
                let last_fire_ms = fires
                    .iter()
                    .find(|(name, _)| *name == schedule.name)
                    .map(|(_, fire)| *fire);
                ScheduleView {
                    name: schedule.name.clone(),
                    workflow: schedule.workflow.clone(),
                    expression: schedule.expression.clone(),
                    missed: match schedule.missed {
                        MissedFires::Skip => "skip".to_string(),
                        MissedFires::FireOnce => "fire_once".to_string(),
                        MissedFires::FireEach { max } => format!("fire_each (at most {max})"),
                    },
                    last_fire_ms,
                    next_fire_ms: schedule.cron.fires_after(last_fire_ms.unwrap_or(0).max(now_ms)).next(),
                }
            })
            .collect(),
    ))
}

/// `GET /v1/quarantined`: live records set apart because they do not decode, with why; the
/// rest run.
#[utoipa::path(get, path = "/v1/quarantined", tag = "instances",
    responses((status = 200, body = Vec<QuarantinedView>)))]
pub(super) async fn quarantined(State(engine): State<Engine>) -> Result<Json<Vec<QuarantinedView>>, ApiError> {
    let records = blocking_read(engine, |engine| engine.quarantined_records()).await??;
    Ok(Json(
        records
            .into_iter()
            .map(|record| QuarantinedView {
                id: record.id.0,
                reason: record.reason,
            })
            .collect(),
    ))
}
