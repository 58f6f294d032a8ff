//! The rollouts part of the admin API: each rollout with its stage, the figures its gates
//! compare (candidate against stable) and its history; and the operator's controls: start,
//! pause, resume, roll back.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::whole::Whole;
use super::{blocking_read, json_body, parse_version, ApiError};
use strata_core::rollout::{Figures, OnRollback, RolloutRecord, Transition, TransitionRecord};
use strata_engine::{Engine, Gates, RolloutSpec, Stage};

/// A rollout as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RolloutView {
    name: String,
    workflow: String,
    candidate: String,
    stable: String,
    /// `running`, `paused`, `promoted` or `rolled_back`.
    status: String,
    /// The index of the current stage.
    stage: usize,
    stages: Vec<StageView>,
    /// The share of new instances the candidate gets now (%).
    candidate_percent: f64,
    stage_started_ms: u64,
    gates: Gates,
    /// What a rollback does to the candidate's in-flight instances.
    on_rollback: OnRollbackChoice,
    /// Started with no gate on purpose.
    unwatched: bool,
    /// What the gates compare now, while the rollout is active.
    figures: Option<FiguresView>,
    /// Every transition, oldest first; a rollback names its gate, reason and figures.
    history: Vec<TransitionView>,
}

/// One transition of a rollout.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct TransitionView {
    /// When (ms of the engine's clock).
    at_ms: u64,
    /// The stage it happened in (the new stage, for `advanced`).
    stage: usize,
    /// `started`, `advanced`, `paused`, `resumed`, `promoted` or `rolled_back`.
    kind: TransitionKind,
    /// For `rolled_back`: the gate that fired (named as in `gates`), absent when an operator
    /// rolled it back.
    gate: Option<String>,
    /// For `rolled_back`: why, with the figures compared.
    reason: Option<String>,
    /// For `rolled_back`: the candidate's figures then.
    candidate: Option<Figures>,
    /// For `rolled_back`: the stable version's figures then.
    stable: Option<Figures>,
}

/// What a transition did.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum TransitionKind {
    /// It started at stage 0.
    Started,
    /// It moved to the next stage.
    Advanced,
    /// An operator paused it.
    Paused,
    /// An operator resumed it.
    Resumed,
    /// It passed the last stage.
    Promoted,
    /// A gate or an operator rolled it back.
    RolledBack,
}

impl TransitionView {
    fn of(record: &TransitionRecord) -> TransitionView {
        let mut view = TransitionView {
            at_ms: record.at_ms,
            stage: record.stage,
            kind: TransitionKind::Started,
            gate: None,
            reason: None,
            candidate: None,
            stable: None,
        };
        view.kind = match &record.transition {
            Transition::Started => TransitionKind::Started,
            Transition::Advanced { stage } => {
                view.stage = *stage;
                TransitionKind::Advanced
            }
            Transition::Paused => TransitionKind::Paused,
            Transition::Resumed => TransitionKind::Resumed,
            Transition::Promoted => TransitionKind::Promoted,
            Transition::RolledBack {
                gate,
                reason,
                candidate,
                stable,
            } => {
                view.gate = gate.map(|gate| gate.field().to_string());
                view.reason = Some(reason.clone());
                view.candidate = Some(*candidate);
                view.stable = Some(*stable);
                TransitionKind::RolledBack
            }
        };
        view
    }
}

/// A stage as the API shows and takes it: the candidate's share in percent (at most two
/// decimals), how long it holds at least, and how many candidate instances must finish in it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StageView {
    #[schema(exclusive_minimum = 0, maximum = 100, multiple_of = 0.01)]
    percent: f64,
    #[schema(value_type = u64)]
    hold_ms: Whole,
    #[schema(value_type = u64)]
    min_finished: Whole,
}

#[derive(Serialize, utoipa::ToSchema)]
struct FiguresView {
    candidate: Figures,
    stable: Figures,
}

impl RolloutView {
    fn of(engine: &Engine, record: &RolloutRecord) -> RolloutView {
        let figures = record.status.is_active().then(|| {
            let (candidate, stable) = engine.rollout_figures(record);
            FiguresView { candidate, stable }
        });
        RolloutView {
            name: record.spec.name.clone(),
            workflow: record.spec.workflow.clone(),
            candidate: record.spec.candidate.to_string(),
            stable: record.spec.stable.to_string(),
            status: super::views::snake_case(&format!("{:?}", record.status)),
            stage: record.stage,
            stages: record
                .spec
                .stages
                .iter()
                .map(|stage| StageView {
                    percent: stage.percent,
                    hold_ms: Whole(stage.hold_ms),
                    min_finished: Whole(stage.min_finished),
                })
                .collect(),
            candidate_percent: f64::from(record.candidate_share()) / 100.0,
            stage_started_ms: record.stage_started_ms,
            gates: record.spec.gates.clone(),
            on_rollback: match record.spec.on_rollback {
                OnRollback::KeepRunning => OnRollbackChoice::KeepRunning,
                OnRollback::MoveBack => OnRollbackChoice::MoveBack,
            },
            unwatched: record.spec.unwatched,
            figures,
            history: record.history.iter().map(TransitionView::of).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    workflow: Option<String>,
}

/// `GET /v1/rollouts[?workflow=]`.
#[utoipa::path(get, path = "/v1/rollouts", tag = "rollouts",
    params(("workflow" = Option<String>, Query, description = "Only this workflow's rollouts")),
    responses((status = 200, body = Vec<RolloutView>)))]
pub(super) async fn list(
    State(engine): State<Engine>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<RolloutView>>, ApiError> {
    let views = blocking_read(engine, move |engine| {
        engine
            .rollouts()
            .iter()
            .filter(|record| {
                query
                    .workflow
                    .as_ref()
                    .is_none_or(|workflow| record.spec.workflow == *workflow)
            })
            .map(|record| RolloutView::of(engine, record))
            .collect()
    })
    .await?;
    Ok(Json(views))
}

/// `GET /v1/rollouts/{name}`.
#[utoipa::path(get, path = "/v1/rollouts/{name}", tag = "rollouts",
    params(("name" = String, Path, description = "workflow@candidate, e.g. order@2.0.0")),
    responses((status = 200, body = RolloutView), (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn show(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    let view = blocking_read(engine, move |engine| {
        engine
            .rollout(&name)
            .map(|record| RolloutView::of(engine, &record))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no rollout is named '{name}'; the list of rollouts names them all"),
                )
            })
    })
    .await??;
    Ok(Json(view))
}

/// A rollout to start, as posted: every field of its definition. Unknown fields are refused.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartRequest {
    workflow: String,
    candidate: String,
    stable: String,
    /// In order of rising share.
    #[schema(min_items = 1)]
    stages: Vec<StageView>,
    /// At least one gate, unless `unwatched`.
    #[serde(default)]
    gates: GatesRequest,
    /// Its name; default `workflow@candidate` (`workflow@candidate~2`, ... when an earlier
    /// rollout of the candidate ended).
    name: Option<String>,
    /// What a rollback does to the candidate's in-flight instances (default `keep_running`).
    #[serde(default)]
    on_rollback: OnRollbackChoice,
    /// `true` runs it with no gate at all, on purpose.
    #[serde(default)]
    unwatched: bool,
}

/// The gates as posted; unset ones are not checked. Unknown fields are refused.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GatesRequest {
    /// The candidate's error rate may exceed the stable's by at most this much (0.05 = 5 points).
    #[schema(minimum = 0, maximum = 1)]
    max_error_rate_increase: Option<f64>,
    /// The candidate's p95 step latency may be at most this multiple of the stable's.
    #[schema(minimum = 1)]
    max_latency_multiplier: Option<f64>,
    /// The candidate's success rate must be at least this.
    #[schema(minimum = 0, maximum = 1)]
    min_success_rate: Option<f64>,
    /// This many failed candidate instances in a row roll back.
    #[schema(value_type = Option<u64>, minimum = 1)]
    max_consecutive_failures: Option<Whole>,
}

/// What a rollback does to the candidate's in-flight instances.
#[derive(Deserialize, Serialize, Default, Clone, Copy, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum OnRollbackChoice {
    /// They finish on the candidate.
    #[default]
    KeepRunning,
    /// They move back to the stable version where a move plan allows.
    MoveBack,
}

/// `POST /v1/rollouts` with `{workflow, candidate, stable, stages: [{percent, hold_ms,
/// min_finished}], gates}`: starts it at its first stage.
#[utoipa::path(post, path = "/v1/rollouts", tag = "rollouts", request_body = StartRequest,
    responses((status = 200, description = "The rollout at its first stage", body = RolloutView),
        (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView),
        (status = 409, description = "The workflow has an active rollout", body = strata_admin_model::ErrorView)))]
pub(super) async fn start(
    State(engine): State<Engine>,
    request: Result<Json<StartRequest>, JsonRejection>,
) -> Result<Json<RolloutView>, ApiError> {
    let request = json_body(
        request,
        "a rollout ({workflow, candidate, stable, stages, gates, name, on_rollback, unwatched})",
    )?;
    let mut spec = RolloutSpec::new(
        request.workflow,
        parse_version(&request.candidate)?,
        parse_version(&request.stable)?,
    );
    for stage in request.stages {
        spec = spec.stage(Stage {
            percent: stage.percent,
            hold_ms: stage.hold_ms.0,
            min_finished: stage.min_finished.0,
        });
    }
    let gates = request.gates;
    let mut spec = spec
        .gates(Gates {
            max_error_rate_increase: gates.max_error_rate_increase,
            max_latency_multiplier: gates.max_latency_multiplier,
            min_success_rate: gates.min_success_rate,
            max_consecutive_failures: gates.max_consecutive_failures.map(|count| count.0),
        })
        .on_rollback(match request.on_rollback {
            OnRollbackChoice::KeepRunning => OnRollback::KeepRunning,
            OnRollbackChoice::MoveBack => OnRollback::MoveBack,
        });
    if let Some(name) = request.name {
        spec = spec.named(name);
    }
    if request.unwatched {
        spec = spec.unwatched();
    }
    let name = engine.start_rollout(spec).await?;
    tracing::info!(rollout = %name, "admin API: rollout started");
    show(State(engine), Path(name)).await
}

/// `POST /v1/rollouts/{name}/{action}`: `pause`, `resume` or `rollback`.
#[utoipa::path(post, path = "/v1/rollouts/{name}/{action}", tag = "rollouts",
    params(("name" = String, Path), ("action" = inline(RolloutAction), Path)),
    responses((status = 200, description = "The rollout afterwards", body = RolloutView),
        (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView),
        (status = 409, description = "The rollout has ended (promoted or rolled back)", body = strata_admin_model::ErrorView)))]
pub(super) async fn control(
    State(engine): State<Engine>,
    Path((name, action)): Path<(String, RolloutAction)>,
) -> Result<Json<RolloutView>, ApiError> {
    match action {
        RolloutAction::Pause => engine.pause_rollout(&name).await?,
        RolloutAction::Resume => engine.resume_rollout(&name).await?,
        RolloutAction::Rollback => engine.rollback_rollout(&name).await?,
    }
    show(State(engine), Path(name)).await
}

/// What an operator does to a rollout.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum RolloutAction {
    /// Hold it at its stage.
    Pause,
    /// Let a paused rollout go on.
    Resume,
    /// Roll it back to the stable version now.
    Rollback,
}
