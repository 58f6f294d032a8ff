//! strata-admin: the admin HTTP API, served beside an engine. What the engine knows, as JSON
//! under versioned paths, for the `strata` CLI, the dashboard and scripts.
//!
//! **Owns** the server's lifetime (started as an [`EnginePart`] once the engine is open, it
//! stops with the engine), its settings on the engine's builder ([`AdminBuilder`]), its access
//! rules (bearer tokens, read-only and admin; browsers of other origins and foreign host names
//! kept out, see `access`), the mapping of engine errors to HTTP answers that say what to do
//! (every error, the extractors' own included, as `{error}`), and the OpenAPI document those
//! answers keep to (`tests/contract.rs` checks them).
//! **May not touch**: the engine's internals (it uses `strata-engine`'s public API only) or a
//! store backend; its JSON views are `strata-admin-model`'s, shared with the CLI.
//!
//! Served so far: `/` with `/dashboard.js` and `/dashboard.css`, `/healthz`, `/readyz`,
//! `/metrics` (Prometheus text), `GET /v1/versions`
//! (optionally `?workflow=`), `GET /v1/versions/{workflow}/{version}`, and
//! `POST /v1/versions/{workflow}/{version}/drain|activate|retire`, `GET /v1/instances` (filters
//! `workflow`, `version`, `status`; paged with `after` and `limit`), `GET /v1/instances/{id}`,
//! `POST /v1/instances` (start one), `GET /v1/instances/{id}/history` (paged with `from`,
//! `order` and `limit`),
//! `POST /v1/instances/{id}/signals/{name}`, `POST /v1/instances/{id}/cancel`, `GET /v1/config`
//! and `/v1/config/history` (with diffs), `POST /v1/config/check` (a file checked, not applied)
//! and `/v1/config/restore/{generation}`, `GET /v1/rollouts[?workflow=]` and
//! `/v1/rollouts/{name}` (stage, gate figures against the stable, history), `POST /v1/rollouts`
//! (start) and `/v1/rollouts/{name}/pause|resume|rollback`, `POST /v1/moves/plan` (dry run) and
//! `/v1/moves`, `POST /v1/revivals/plan` (dry run) and `/v1/revivals`, `POST /v1/migrations`, `GET /v1/migrations/{workflow}` and
//! `POST /v1/migrations/{workflow}/pause|resume`, `GET /v1/workers`, `/v1/routing` (the rules
//! in force and each version's starts), `/v1/schedules` and `/v1/quarantined`, and the event stream as Server-Sent Events at
//! `GET /v1/events`, all described by the OpenAPI document at `GET /v1/openapi.json`.

mod access;
mod changes;
mod config;
mod dashboard;
mod events;
mod instances;
mod operation;
mod revivals;
mod rollouts;
mod views;

use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use access::AdminTokens;
pub use access::MIN_ADMIN_TOKEN_LENGTH;
use strata_admin_model::{ErrorView, VersionView};
use views::version_view;

use strata_engine::{Engine, EngineBuilder, EngineError, EnginePart, PartStart};

/// A semantic version as the OpenAPI document describes it: semver.org's own expression, with
/// major, minor and patch of at most 18 digits (the server holds each in 64 bits).
const SEMANTIC_VERSION: &str = r"^(0|[1-9]\d{0,17})\.(0|[1-9]\d{0,17})\.(0|[1-9]\d{0,17})(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$";

/// Request bodies larger than this are refused (413) before they are read.
const BODY_LIMIT: usize = 64 * 1024;

/// A whole number of a request body as a `u32`, or a 422 naming the field.
fn whole_u32(whole: strata_admin_model::Whole, field: &str) -> Result<u32, ApiError> {
    u32::try_from(whole.0).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field} is at most {}", u32::MAX),
        )
    })
}

/// The admin API's settings as the engine's builder collects them (an [`EnginePart`]): where it
/// listens and who may use it. Set through [`AdminBuilder`]'s methods, in any order.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdminSettings {
    address: Option<SocketAddr>,
    tokens: AdminTokens,
    allowed_hosts: Vec<String>,
}

/// Where the admin API listens and who may use it, once checked.
#[derive(Debug, Clone)]
struct AdminOptions {
    address: SocketAddr,
    tokens: AdminTokens,
    allowed_hosts: Vec<String>,
}

impl AdminSettings {
    /// The settings, checked before anything opens: tokens from the builder or else the
    /// environment, each long enough, none without an address to serve, and an admin token
    /// wherever other hosts could reach the API. `None` when no admin API was asked for.
    fn checked(&self) -> Result<Option<AdminOptions>, EngineError> {
        let Some(address) = self.address else {
            if self.tokens.admin.is_some() || self.tokens.read.is_some() {
                return Err(EngineError::AdminTokenWithoutAddress);
            }
            return Ok(None);
        };
        let tokens = self.tokens.clone().with_environment();
        tokens.check_lengths()?;
        if !address.ip().is_loopback() && tokens.admin.is_none() {
            return Err(EngineError::AdminTokenRequired { address });
        }
        Ok(Some(AdminOptions {
            address,
            tokens,
            allowed_hosts: self.allowed_hosts.clone(),
        }))
    }
}

impl EnginePart for AdminSettings {
    fn check(&self) -> Result<(), EngineError> {
        self.checked().map(|_| ())
    }

    fn start(self: Box<Self>, engine: Engine) -> PartStart {
        Box::pin(async move {
            if let Some(options) = self.checked()? {
                let address = start(engine.clone(), options).await?;
                engine.set_extension(AdminAddress(address));
            }
            Ok(())
        })
    }
}

/// The address the admin API listens on, kept with the engine once it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AdminAddress(SocketAddr);

/// The admin API's settings on the engine's builder (`use strata::prelude::*` brings it in).
pub trait AdminBuilder: Sized {
    /// Serves the admin HTTP API (JSON under `/v1`, `/metrics`, `/healthz`, `/readyz`, the
    /// dashboard at `/`) on `address` while the engine runs; `127.0.0.1:0` picks a free port
    /// ([`AdminEngine::admin_address`] says which). An address other hosts can reach needs an
    /// admin token ([`AdminBuilder::admin_token`] or `STRATA_ADMIN_TOKEN`).
    fn admin(self, address: SocketAddr) -> Self;

    /// The bearer token that allows every admin API request (else `STRATA_ADMIN_TOKEN`); at
    /// least [`MIN_ADMIN_TOKEN_LENGTH`] characters. May be called before or after
    /// [`AdminBuilder::admin`]; `open` refuses a token without an address.
    fn admin_token(self, token: impl Into<String>) -> Self;

    /// The bearer token that allows admin API reads only (else `STRATA_ADMIN_READ_TOKEN`); the
    /// same rules as [`AdminBuilder::admin_token`].
    fn admin_read_token(self, token: impl Into<String>) -> Self;

    /// A host name the admin API is reached by (`strata.internal`, the name a proxy forwards):
    /// requests for names other than these, IP addresses and loopback names are refused, so a
    /// web page cannot reach the API through DNS rebinding. May be called more than once.
    fn admin_allowed_host(self, name: impl Into<String>) -> Self;
}

impl AdminBuilder for EngineBuilder {
    fn admin(self, address: SocketAddr) -> Self {
        self.part(|settings: &mut AdminSettings| settings.address = Some(address))
    }

    fn admin_token(self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.part(|settings: &mut AdminSettings| settings.tokens.admin = Some(token))
    }

    fn admin_read_token(self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.part(|settings: &mut AdminSettings| settings.tokens.read = Some(token))
    }

    fn admin_allowed_host(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.part(|settings: &mut AdminSettings| settings.allowed_hosts.push(name))
    }
}

/// Where an engine's admin API listens (`use strata::prelude::*` brings it in).
pub trait AdminEngine {
    /// Where the admin API listens, if the builder asked for it.
    fn admin_address(&self) -> Option<SocketAddr>;
}

impl AdminEngine for Engine {
    fn admin_address(&self) -> Option<SocketAddr> {
        self.extension::<AdminAddress>().map(|AdminAddress(address)| address)
    }
}

/// Binds the admin API and serves it until the engine shuts down; returns the bound address.
async fn start(engine: Engine, options: AdminOptions) -> Result<SocketAddr, EngineError> {
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
    let router = router(engine.clone(), options.tokens, options.allowed_hosts);
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

/// The API's routes, each registered with its OpenAPI description (`routes!` takes both from
/// the handler's `#[utoipa::path]`), behind the access check but for the probes.
fn router(engine: Engine, tokens: AdminTokens, allowed_hosts: Vec<String>) -> Router {
    let (guarded, mut document) = OpenApiRouter::with_openapi(ApiDocument::openapi())
        .routes(routes!(versions))
        .routes(routes!(version))
        .routes(routes!(version_action))
        .routes(routes!(version_metrics))
        .routes(routes!(instances::list, instances::start))
        .routes(routes!(instances::show))
        .routes(routes!(instances::history))
        .routes(routes!(instances::signal))
        .routes(routes!(instances::cancel))
        .routes(routes!(instances::terminate))
        .routes(routes!(config::in_force))
        .routes(routes!(config::history))
        .routes(routes!(config::check))
        .routes(routes!(config::restore))
        .routes(routes!(rollouts::list, rollouts::start))
        .routes(routes!(rollouts::show))
        .routes(routes!(rollouts::shadows))
        .routes(routes!(rollouts::control))
        .routes(routes!(changes::plan))
        .routes(routes!(changes::apply))
        .routes(routes!(revivals::plan))
        .routes(routes!(revivals::apply))
        .routes(routes!(changes::start_migration))
        .routes(routes!(changes::progress))
        .routes(routes!(changes::control))
        .routes(routes!(operation::workers))
        .routes(routes!(operation::routing))
        .routes(routes!(operation::schedules))
        .routes(routes!(operation::quarantined))
        .routes(routes!(events::events))
        .routes(routes!(metrics))
        .routes(routes!(openapi_document))
        .split_for_parts();
    let (probes, mut probe_document) = OpenApiRouter::new()
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::style))
        .routes(routes!(dashboard::script))
        .routes(routes!(healthz))
        .routes(routes!(ready))
        .split_for_parts();
    document_error_answers(&mut document, true);
    document_error_answers(&mut probe_document, false);
    document.merge(probe_document);
    describe_formats(&mut document);
    guarded
        .layer(axum::middleware::from_fn_with_state(tokens, access::check))
        .merge(probes)
        .layer(axum::Extension(std::sync::Arc::new(document)))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(errors_as_json))
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(allowed_hosts),
            access::same_origin,
        ))
        .with_state(engine)
}

/// Adds to every operation the error answers the server gives around the handlers, where the
/// handler's own description does not list them: 403 (a foreign host, a change from another
/// origin, a read-only token), 401 where a token is needed, 400 where parameters are parsed, and
/// 413, 415 and 422 where a JSON body is read. Each is an `ErrorView`. Parameters get the
/// formats `describe_format` knows.
fn document_error_answers(document: &mut utoipa::openapi::OpenApi, needs_token: bool) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let answer = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorView")))
                    .build(),
            )
            .build()
    };
    for item in document.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            let mut add = |status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| answer(description).into());
            };
            add("403", "Refused: a request for a host this server does not go by, a change from a page of another origin, or a change with the read-only token");
            if needs_token {
                add(
                    "401",
                    "No token, or a wrong one, while tokens are set: send 'Authorization: Bearer <token>'",
                );
            }
            if operation
                .parameters
                .as_ref()
                .is_some_and(|parameters| !parameters.is_empty())
            {
                add(
                    "400",
                    "A path or query parameter that is not what the document says (named in the message)",
                );
            }
            for parameter in operation.parameters.iter_mut().flatten() {
                if let Some(schema) = parameter.schema.as_mut() {
                    describe_format(&parameter.name, schema);
                }
            }
            let json_body = operation
                .request_body
                .as_ref()
                .is_some_and(|body| body.content.contains_key("application/json"));
            if json_body {
                add("413", "The body is over 64 KiB");
                add("415", "The body is not sent as application/json");
                add(
                    "422",
                    "The body is JSON of the wrong shape: a missing, unknown or mistyped field (named in the message)",
                );
            }
        }
    }
}

/// Where the request bodies' schemas say less than the server checks, says it: the values their
/// fields of known names take (see `describe_format`). Only schemas a request body refers to are
/// touched: views share field names (`status`) with other meanings.
fn describe_formats(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{schema::Schema, RefOr};
    let mut requested: Vec<String> = Vec::new();
    for item in document.paths.paths.values() {
        for operation in [&item.get, &item.post].into_iter().flatten() {
            for content in operation.request_body.iter().flat_map(|body| body.content.values()) {
                if let Some(RefOr::Ref(reference)) = &content.schema {
                    requested.push(
                        reference
                            .ref_location
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
        }
    }
    let Some(components) = document.components.as_mut() else {
        return;
    };
    for name in requested {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) {
            for (field, property) in object.properties.iter_mut() {
                describe_format(field, property);
            }
        }
    }
}

/// Narrows the schema of a field or parameter called `name` to what the server takes: versions
/// are semantic versions, statuses one of the instance statuses.
fn describe_format(name: &str, schema: &mut utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) {
    use utoipa::openapi::{schema::Schema, RefOr};
    let RefOr::T(Schema::Object(object)) = schema else {
        return;
    };
    match name {
        "version" | "candidate" | "stable" | "target" | "from_version" => {
            object.pattern = Some(SEMANTIC_VERSION.to_string());
        }
        "status" if object.enum_values.is_none() => {
            let mut names: Vec<serde_json::Value> = instances::STATUSES
                .iter()
                .map(|status| status.as_str().into())
                .collect();
            if matches!(&object.schema_type, utoipa::openapi::schema::SchemaType::Array(types) if types.contains(&utoipa::openapi::schema::Type::Null))
            {
                names.push(serde_json::Value::Null);
            }
            object.enum_values = Some(names);
        }
        _ => {}
    }
}

/// Answers every error as the JSON `{error}` the document promises: the rejections of axum's
/// extractors and its fallbacks (no such path, a method the path does not take) answer plain
/// text of their own, which this turns into an `ErrorView` with the same status.
async fn errors_as_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header;
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match (text.is_empty(), status) {
        (false, _) => strata_core::suggest::explain_unknown(&in_users_words(&text)),
        (true, StatusCode::NOT_FOUND) => "no such path; /v1/openapi.json lists every path".to_string(),
        (true, StatusCode::METHOD_NOT_ALLOWED) => {
            "this path does not take that method; /v1/openapi.json lists what each path takes".to_string()
        }
        (true, _) => status.canonical_reason().unwrap_or("refused").to_string(),
    };
    let mut answer = ApiError::new(status, message).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

/// An extractor's rejection as a user reads it: where the mistake is (path, query) and what was
/// expected, without axum's and serde's words for it.
fn in_users_words(text: &str) -> String {
    let text = text.replace("unknown variant", "unknown value");
    if let Some(rest) = text.strip_prefix("Invalid URL: ") {
        return format!("in the path: {rest}");
    }
    if let Some(rest) = text.strip_prefix("Failed to deserialize query string: ") {
        return format!("in the query: {rest}");
    }
    text
}

/// The OpenAPI document's frame: title, version, the bearer scheme; the paths come from the
/// router.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Strata admin API",
        description = "What a Strata engine knows (versions and residency, instances, config, rollouts, moves and migrations, events) and what an operator changes. Every call but /healthz and /readyz needs `Authorization: Bearer <token>` when tokens are set; the read-only token may only read (and check configs, plan moves and revivals). Errors are `{\"error\": \"what to do\"}` with a 4xx status."
    ),
    modifiers(&BearerScheme),
    security(("bearer" = []))
)]
struct ApiDocument;

/// Adds the bearer token scheme the access check expects.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
async fn openapi_document(
    axum::Extension(document): axum::Extension<std::sync::Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*document).clone())
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "ok", content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
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
        use strata_engine::registry::RegistryError;
        let status = match &error {
            EngineError::Registry(RegistryError::UnknownWorkflow { .. } | RegistryError::UnknownVersion { .. }) => {
                StatusCode::NOT_FOUND
            }
            EngineError::Registry(
                RegistryError::LiveInstances { .. }
                | RegistryError::Retired { .. }
                | RegistryError::CodeNotRegistered { .. },
            )
            | EngineError::Store(
                strata_engine::StoreError::LiveInstances { .. } | strata_engine::StoreError::VersionRetired { .. },
            ) => StatusCode::CONFLICT,
            EngineError::UnknownInstance { .. } | EngineError::InstanceRemoved { .. } => StatusCode::NOT_FOUND,
            EngineError::InstanceFinished { .. } => StatusCode::CONFLICT,
            EngineError::Registry(_)
            | EngineError::InvalidVersion { .. }
            | EngineError::SignalDecode { .. }
            | EngineError::InputDecode { .. }
            | EngineError::ReservedSignalName { .. }
            | EngineError::TerminateWithoutReason { .. } => StatusCode::BAD_REQUEST,
            EngineError::Init { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::Store(strata_engine::StoreError::VersionNotAccepting { .. }) => StatusCode::CONFLICT,
            EngineError::Config(strata_config::ConfigError::UnknownGeneration { .. }) => StatusCode::NOT_FOUND,
            EngineError::Config(_) | EngineError::Routing(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::Rollout(strata_core::rollout::RolloutError::Unknown { .. }) => StatusCode::NOT_FOUND,
            EngineError::Rollout(
                strata_core::rollout::RolloutError::Conflict { .. }
                | strata_core::rollout::RolloutError::VersionInRollout { .. }
                | strata_core::rollout::RolloutError::Finished { .. },
            ) => StatusCode::CONFLICT,
            EngineError::Rollout(_) => StatusCode::BAD_REQUEST,
            EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Store(error) if error.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
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
#[serde(deny_unknown_fields)]
struct VersionsQuery {
    workflow: Option<String>,
}

/// `GET /v1/versions`: every version with its residency.
#[utoipa::path(get, path = "/v1/versions", tag = "versions",
    params(("workflow" = Option<String>, Query, description = "Only this workflow's versions")),
    responses((status = 200, body = Vec<VersionView>), (status = 401, body = ErrorView)))]
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
            .map(version_view)
            .collect()
    })
    .await?;
    Ok(Json(views))
}

/// `GET /v1/versions/{workflow}/{version}`: one version with its residency.
#[utoipa::path(get, path = "/v1/versions/{workflow}/{version}", tag = "versions",
    params(("workflow" = String, Path), ("version" = String, Path, description = "A semantic version, e.g. 2.0.0")),
    responses((status = 200, body = VersionView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
async fn version(
    State(engine): State<Engine>,
    Path((workflow, version)): Path<(String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    let info = blocking_read(engine, move |engine| engine.version(&workflow, &version)).await??;
    Ok(Json(version_view(&info)))
}

/// A version's metrics window, a point per bucket.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct SeriesView {
    workflow: String,
    version: String,
    /// How long each point's bucket is (ms).
    bucket_ms: u64,
    /// Oldest first; the last is the bucket now.
    #[schema(value_type = Vec<Object>)]
    points: Vec<strata_engine::observe::MetricsPoint>,
}

/// `GET /v1/versions/{workflow}/{version}/metrics`: the last 320 s of a version's metrics, one
/// point per 10 s: finished instances, error rate, step attempts, p95 step latency.
#[utoipa::path(get, path = "/v1/versions/{workflow}/{version}/metrics", tag = "versions",
    params(("workflow" = String, Path), ("version" = String, Path, description = "A semantic version, e.g. 2.0.0")),
    responses((status = 200, body = SeriesView), (status = 400, body = ErrorView), (status = 404, body = ErrorView)))]
async fn version_metrics(
    State(engine): State<Engine>,
    Path((workflow, version)): Path<(String, String)>,
) -> Result<Json<SeriesView>, ApiError> {
    let points = {
        let (workflow, version) = (workflow.clone(), version.clone());
        blocking_read(engine, move |engine| engine.metrics_series(&workflow, &version)).await??
    };
    Ok(Json(SeriesView {
        workflow,
        version,
        bucket_ms: strata_engine::observe::BUCKET_MS,
        points,
    }))
}

/// `POST /v1/versions/{workflow}/{version}/{action}`: `drain`, `activate` (undo a drain) or
/// `retire`; answers the version as it is afterwards.
#[utoipa::path(post, path = "/v1/versions/{workflow}/{version}/{action}", tag = "versions",
    params(("workflow" = String, Path), ("version" = String, Path, description = "A semantic version, e.g. 2.0.0"),
        ("action" = inline(VersionAction), Path)),
    responses((status = 200, description = "The version afterwards", body = VersionView),
        (status = 400, body = ErrorView), (status = 404, body = ErrorView),
        (status = 409, description = "Retiring a version with live instances, draining one an active rollout uses, or activating a retired one or one whose code no live worker has", body = ErrorView)))]
async fn version_action(
    State(engine): State<Engine>,
    Path((workflow, version, action)): Path<(String, String, VersionAction)>,
) -> Result<Json<VersionView>, ApiError> {
    match action {
        VersionAction::Drain => {
            engine.drain(&workflow, &version).await?;
        }
        VersionAction::Activate => {
            engine.activate(&workflow, &version).await?;
        }
        VersionAction::Retire => engine.retire(&workflow, &version).await?,
    }
    let info = blocking_read(engine, move |engine| engine.version(&workflow, &version)).await??;
    Ok(Json(version_view(&info)))
}

/// What an operator does to a version.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum VersionAction {
    /// No new instances; drained when the last finishes.
    Drain,
    /// Undoes a drain: takes new instances again.
    Activate,
    /// Gone for good; refused while any instance lives.
    Retire,
}

/// `GET /metrics`: the engine's metrics in Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
async fn metrics(State(engine): State<Engine>) -> Result<impl IntoResponse, ApiError> {
    let text = blocking_read(engine, |engine| engine.metrics_text()).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// `GET /readyz`: ready when the engine takes work and its store answers.
#[utoipa::path(get, path = "/readyz", tag = "meta", security(()),
    responses((status = 200, description = "ready", content_type = "text/plain"),
        (status = 503, description = "Shutting down, or the store does not answer", body = ErrorView)))]
async fn ready(State(engine): State<Engine>) -> Response {
    if engine.is_stopping() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine is shutting down").into_response();
    }
    match blocking_read(engine, |engine| engine.check_store()).await {
        Ok(Ok(())) => "ready".into_response(),
        Ok(Err(error)) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
        Err(error) => error.into_response(),
    }
}

/// A JSON body, or the answer to a request without one: the rejection's own status (400
/// malformed, 415 not JSON, 413 over the size limit) and what `shape` the body must have.
fn json_body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>, shape: &str) -> Result<T, ApiError> {
    body.map(|Json(body)| body).map_err(|rejection| {
        let reason = strata_core::suggest::explain_unknown(&rejection.body_text());
        ApiError::new(
            rejection.status(),
            format!("the body must be {shape} as JSON, at most 64 KiB: {reason}"),
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
