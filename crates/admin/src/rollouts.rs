//! The rollouts part of the admin API: each rollout with its stage, the figures its gates
//! compare (candidate against stable) and its history; and the operator's controls: start,
//! pause, resume, roll back.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{blocking_read, json_body, parse_version, ApiError};
use strata_admin_model::{
    FiguresView, GatesView, MeasureFigureView, MeasureGateView, OnRollbackChoice, PairMeasureView, RolloutFiguresView,
    RolloutStartRequest, RolloutView, ShadowPairView, StageView, TransitionKind, TransitionView, Whole,
};
use strata_core::rollout::{Figures, OnRollback, RolloutRecord, Transition, TransitionRecord};
use strata_core::shadow::ShadowPair;
use strata_engine::{Engine, Gates, MeasureGate, RolloutSpec, Stage};

fn transition_view(record: &TransitionRecord) -> TransitionView {
    let mut view = TransitionView {
        at_ms: record.at_ms,
        stage: record.stage,
        kind: TransitionKind::Started,
        gate: None,
        reason: None,
        candidate: record.figures.as_ref().map(|figures| figures_view(&figures.candidate)),
        stable: record.figures.as_ref().map(|figures| figures_view(&figures.stable)),
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
            view.gate = gate.as_ref().map(|gate| gate.field());
            view.reason = Some(reason.clone());
            view.candidate = Some(figures_view(candidate));
            view.stable = Some(figures_view(stable));
            TransitionKind::RolledBack
        }
    };
    view
}

fn figures_view(figures: &Figures) -> FiguresView {
    FiguresView {
        finished: figures.finished,
        completed: figures.completed,
        failed: figures.failed,
        attempts: figures.attempts,
        p95_step_micros: figures.p95_step_micros,
        consecutive_failures: figures.consecutive_failures,
        measures: figures
            .measures
            .iter()
            .map(|(name, figure)| {
                let view = MeasureFigureView {
                    value: figure.value,
                    sample: figure.sample,
                };
                (name.clone(), view)
            })
            .collect(),
        pairs: figures.pairs,
        mismatches: figures.mismatches,
    }
}

fn measure_gate_view(gate: &MeasureGate) -> MeasureGateView {
    MeasureGateView {
        measure: gate.measure.clone(),
        max_increase: gate.max_increase,
        min: gate.min,
        max: gate.max,
        min_sample: Whole(gate.min_sample),
    }
}

fn measure_gate(view: MeasureGateView) -> MeasureGate {
    MeasureGate {
        measure: view.measure,
        max_increase: view.max_increase,
        min: view.min,
        max: view.max,
        min_sample: view.min_sample.0,
    }
}

fn rollout_view(engine: &Engine, record: &RolloutRecord) -> RolloutView {
    let now_ms = engine.now_ms();
    let hold_remaining_ms = record
        .status
        .is_active()
        .then(|| record.current_stage())
        .flatten()
        .map(|stage| {
            stage
                .hold_ms
                .saturating_sub(record.hold_elapsed(now_ms).as_millis() as u64)
        });
    let figures = record.status.is_active().then(|| {
        let (candidate, stable) = engine.rollout_figures(record);
        RolloutFiguresView {
            candidate: figures_view(&candidate),
            stable: figures_view(&stable),
        }
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
                shadow: stage.shadow,
            })
            .collect(),
        candidate_percent: f64::from(record.candidate_share()) / 100.0,
        shadow_percent: f64::from(record.shadow_share()) / 100.0,
        stage_started_ms: record.stage_started_ms,
        hold_remaining_ms,
        gates: GatesView {
            max_error_rate_increase: record.spec.gates.max_error_rate_increase,
            max_latency_multiplier: record.spec.gates.max_latency_multiplier,
            min_success_rate: record.spec.gates.min_success_rate,
            max_consecutive_failures: record.spec.gates.max_consecutive_failures,
            max_shadow_mismatch: record.spec.gates.max_shadow_mismatch,
            measures: record.spec.gates.measures.iter().map(measure_gate_view).collect(),
        },
        on_rollback: match record.spec.on_rollback {
            OnRollback::KeepRunning => OnRollbackChoice::KeepRunning,
            OnRollback::MoveBack => OnRollbackChoice::MoveBack,
        },
        unwatched: record.spec.unwatched,
        figures,
        history: record.history.iter().map(transition_view).collect(),
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
            .map(|record| rollout_view(engine, record))
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
            .map(|record| rollout_view(engine, &record))
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

/// `GET /v1/rollouts/{name}/shadows`.
#[utoipa::path(get, path = "/v1/rollouts/{name}/shadows", tag = "rollouts",
    params(("name" = String, Path, description = "workflow@candidate, e.g. order@2.0.0")),
    responses((status = 200, description = "The rollout's shadow pairs, mismatches first, then the newest first", body = Vec<ShadowPairView>),
        (status = 404, body = strata_admin_model::ErrorView)))]
pub(super) async fn shadows(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ShadowPairView>>, ApiError> {
    let pairs = blocking_read(engine, move |engine| engine.shadow_pairs(&name)).await??;
    Ok(Json(pairs.iter().map(shadow_pair_view).collect()))
}

fn shadow_pair_view(pair: &ShadowPair) -> ShadowPairView {
    let measures = |totals: &strata_core::measure::MeasureTotals| {
        totals
            .iter()
            .map(|(name, total)| {
                let view = PairMeasureView {
                    sum: total.sum(),
                    count: total.count,
                };
                (name.clone(), view)
            })
            .collect()
    };
    ShadowPairView {
        real: pair.real.0,
        shadow: pair.shadow.0,
        stable: pair.stable.to_string(),
        candidate: pair.candidate.to_string(),
        compared_ms: pair.compared_ms,
        matched: pair.matched,
        diff: pair.diff.clone(),
        real_status: pair.real_status.as_str().to_string(),
        shadow_status: pair.shadow_status.as_str().to_string(),
        real_took_ms: pair.real_took_ms,
        shadow_took_ms: pair.shadow_took_ms,
        real_measures: measures(&pair.real_measures),
        shadow_measures: measures(&pair.shadow_measures),
    }
}

/// `POST /v1/rollouts` with `{workflow, candidate, stable, stages: [{percent, hold_ms,
/// min_finished}], gates}`: starts it at its first stage.
#[utoipa::path(post, path = "/v1/rollouts", tag = "rollouts", request_body = RolloutStartRequest,
    responses((status = 200, description = "The rollout at its first stage", body = RolloutView),
        (status = 400, body = strata_admin_model::ErrorView), (status = 404, body = strata_admin_model::ErrorView),
        (status = 409, description = "The workflow has an active rollout", body = strata_admin_model::ErrorView)))]
pub(super) async fn start(
    State(engine): State<Engine>,
    request: Result<Json<RolloutStartRequest>, JsonRejection>,
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
            shadow: stage.shadow,
        });
    }
    let gates = request.gates;
    let mut spec = spec
        .gates(Gates {
            max_error_rate_increase: gates.max_error_rate_increase,
            max_latency_multiplier: gates.max_latency_multiplier,
            min_success_rate: gates.min_success_rate,
            max_consecutive_failures: gates.max_consecutive_failures.map(|count| count.0),
            max_shadow_mismatch: gates.max_shadow_mismatch,
            measures: gates.measures.into_iter().map(measure_gate).collect(),
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
