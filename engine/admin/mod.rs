//! The admin HTTP API (issue #11, first part): what the engine knows, as JSON under versioned
//! paths, for the `strata` CLI, the dashboard and scripts. It owns the server's lifetime (it
//! stops with the engine), its access rules (bearer tokens, read-only and admin) and the mapping
//! of engine errors to HTTP answers that say what to do.
//!
//! Served so far: `/healthz`, `/readyz`, `/metrics` (Prometheus text), `GET /v1/versions`
//! (optionally `?workflow=`), `GET /v1/versions/{workflow}/{version}`, and
//! `POST /v1/versions/{workflow}/{version}/drain|retire`, `GET /v1/instances` (filters
//! `workflow`, `version`, `status`; paged with `after` and `limit`), `GET /v1/instances/{id}`,
//! `POST /v1/instances/{id}/signals/{name}`, `POST /v1/instances/{id}/cancel`, `GET /v1/config`
//! and `/v1/config/history` (with diffs), `POST /v1/config/check` (a file checked, not applied)
//! and `/v1/config/restore/{generation}`, `GET /v1/rollouts[?workflow=]` and
//! `/v1/rollouts/{name}` (stage, gate figures against the stable, history), `POST /v1/rollouts`
//! (start) and `/v1/rollouts/{name}/pause|resume|rollback`, `POST /v1/moves/plan` (dry run) and
//! `/v1/moves`, `POST /v1/migrations`, `GET /v1/migrations/{workflow}` and
//! `POST /v1/migrations/{workflow}/pause|resume`, and the event stream as Server-Sent Events at
//! `GET /v1/events`.

mod access;
mod changes;
mod config;
mod instances;
mod rollouts;
mod views;

use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub use access::AdminTokens;
use views::{ErrorView, VersionView};

use crate::{Engine, EngineError};

/// Request bodies larger than this are refused (413) before they are read.
const BODY_LIMIT: usize = 64 * 1024;

/// Where the admin API listens and who may use it.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// The address to bind (`127.0.0.1:0` picks a free loopback port).
    pub address: SocketAddr,
    /// The bearer tokens; a non-loopback address requires an admin token.
    pub tokens: AdminTokens,
}

/// Binds the admin API and serves it until the engine shuts down; returns the bound address.
pub(crate) async fn start(engine: Engine, options: AdminOptions) -> Result<SocketAddr, EngineError> {
    if !options.address.ip().is_loopback() && options.tokens.admin.is_none() {
        return Err(EngineError::AdminTokenRequired {
            address: options.address,
        });
    }
    let listener = tokio::net::TcpListener::bind(options.address)
        .await
        .map_err(|error| EngineError::AdminBind {
            address: options.address,
            reason: error.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|error| EngineError::AdminBind {
        address: options.address,
        reason: error.to_string(),
    })?;
    let router = Router::new()
        .route("/v1/versions", get(versions))
        .route("/v1/versions/{workflow}/{version}", get(version))
        .route("/v1/versions/{workflow}/{version}/{action}", post(version_action))
        .route("/v1/instances", get(instances::list))
        .route("/v1/instances/{id}", get(instances::show))
        .route("/v1/instances/{id}/signals/{name}", post(instances::signal))
        .route("/v1/instances/{id}/cancel", post(instances::cancel))
        .route("/v1/config", get(config::in_force))
        .route("/v1/config/history", get(config::history))
        .route("/v1/config/check", post(config::check))
        .route("/v1/config/restore/{generation}", post(config::restore))
        .route("/v1/rollouts", get(rollouts::list).post(rollouts::start))
        .route("/v1/rollouts/{name}", get(rollouts::show))
        .route("/v1/rollouts/{name}/{action}", post(rollouts::control))
        .route("/v1/moves/plan", post(changes::plan))
        .route("/v1/moves", post(changes::apply))
        .route("/v1/migrations", post(changes::start_migration))
        .route("/v1/migrations/{workflow}", get(changes::progress))
        .route("/v1/migrations/{workflow}/{action}", post(changes::control))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            options.tokens.clone(),
            access::check,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(engine.clone());
    let mut stop = engine.stop_signal();
    tracing::info!(address = %bound, "the admin API listens");
    engine.spawn_tracked(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
            tracing::error!(%error, "the admin API stopped");
        }
    });
    Ok(bound)
}

/// An error answer: a status and a message that says what to do.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        use crate::registry::RegistryError;
        let status = match &error {
            EngineError::Registry(RegistryError::UnknownWorkflow { .. } | RegistryError::UnknownVersion { .. }) => {
                StatusCode::NOT_FOUND
            }
            EngineError::Registry(RegistryError::LiveInstances { .. })
            | EngineError::Store(crate::StoreError::LiveInstances { .. }) => StatusCode::CONFLICT,
            EngineError::UnknownInstance { .. } => StatusCode::NOT_FOUND,
            EngineError::InstanceFinished { .. } => StatusCode::CONFLICT,
            EngineError::Registry(_)
            | EngineError::InvalidVersion { .. }
            | EngineError::SignalDecode { .. }
            | EngineError::ReservedSignalName { .. } => StatusCode::BAD_REQUEST,
            EngineError::Config(crate::config::ConfigError::UnknownGeneration { .. }) => StatusCode::NOT_FOUND,
            EngineError::Config(_) | EngineError::Routing(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::Rollout(crate::rollout::RolloutError::Unknown { .. }) => StatusCode::NOT_FOUND,
            EngineError::Rollout(crate::rollout::RolloutError::Conflict { .. }) => StatusCode::CONFLICT,
            EngineError::Rollout(_) => StatusCode::BAD_REQUEST,
            EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Store(crate::StoreError::ConnectionLost { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorView { error: self.message })).into_response()
    }
}

#[derive(serde::Deserialize)]
struct VersionsQuery {
    workflow: Option<String>,
}

async fn versions(
    State(engine): State<Engine>,
    Query(query): Query<VersionsQuery>,
) -> Result<Json<Vec<VersionView>>, ApiError> {
    let views = blocking_read(engine, move |engine| {
        engine
            .versions()
            .iter()
            .filter(|info| {
                query
                    .workflow
                    .as_ref()
                    .is_none_or(|workflow| info.key.workflow == *workflow)
            })
            .map(VersionView::of)
            .collect()
    })
    .await?;
    Ok(Json(views))
}

async fn version(
    State(engine): State<Engine>,
    Path((workflow, version)): Path<(String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    let info = blocking_read(engine, move |engine| engine.version(&workflow, &version)).await??;
    Ok(Json(VersionView::of(&info)))
}

/// `POST /v1/versions/{workflow}/{version}/{action}`: `drain` or `retire`; answers the version
/// as it is afterwards.
async fn version_action(
    State(engine): State<Engine>,
    Path((workflow, version, action)): Path<(String, String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    match action.as_str() {
        "drain" => {
            engine.drain(&workflow, &version).await?;
        }
        "retire" => engine.retire(&workflow, &version).await?,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no action '{other}'; use drain or retire"),
            ))
        }
    }
    let info = blocking_read(engine, move |engine| engine.version(&workflow, &version)).await??;
    Ok(Json(VersionView::of(&info)))
}

/// `GET /v1/events`: every event as it happens, as Server-Sent Events named by the event's
/// `type`, with the event as JSON; `lagged` says how many a slow reader missed. Ends at shutdown.
async fn events(
    State(engine): State<Engine>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event as Sent, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let state = (engine.subscribe(), engine.stop_signal());
    let stream = futures_util::stream::unfold(state, |(mut receiver, mut stop)| async move {
        let sent = tokio::select! {
            received = receiver.recv() => match received {
                Ok(event) => {
                    let json = serde_json::to_value(&event).unwrap_or_default();
                    let name = json["type"].as_str().unwrap_or("event").to_string();
                    Sent::default().event(name).data(json.to_string())
                }
                Err(RecvError::Lagged(missed)) => Sent::default().event("lagged").data(missed.to_string()),
                Err(RecvError::Closed) => return None,
            },
            _ = stop.wait_for(|stopping| *stopping) => return None,
        };
        Some((Ok(sent), (receiver, stop)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(engine): State<Engine>) -> Result<impl IntoResponse, ApiError> {
    let text = blocking_read(engine, |engine| engine.metrics_text()).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// Ready when the engine takes work and its store answers.
async fn ready(State(engine): State<Engine>) -> Response {
    if engine.is_stopping() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine is shutting down").into_response();
    }
    match blocking_read(engine, |engine| engine.store_answers()).await {
        Ok(Ok(())) => "ready".into_response(),
        Ok(Err(error)) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
        Err(error) => error.into_response(),
    }
}

/// A JSON body, or the answer to a request without one: the rejection's own status (400
/// malformed, 415 not JSON, 413 over the size limit) and what `shape` the body must have.
fn json_body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>, shape: &str) -> Result<T, ApiError> {
    body.map(|Json(body)| body).map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("the body must be {shape} as JSON, at most 64 KiB: {rejection}"),
        )
    })
}

/// A version given in a request, or a 400 saying how to write one.
fn parse_version(text: &str) -> Result<semver::Version, ApiError> {
    semver::Version::parse(text).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("'{text}' is not a semantic version ({error}); write it like 2.0.0"),
        )
    })
}

/// Runs an engine read that may wait on the store off the server's tasks.
async fn blocking_read<T: Send + 'static>(
    engine: Engine,
    read: impl FnOnce(&Engine) -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || read(&engine))
        .await
        .map_err(|error| {
            tracing::error!(%error, "an admin API read panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the read failed inside the engine (a defect of Strata, please report it)",
            )
        })
}
