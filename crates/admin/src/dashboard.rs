//! The dashboard: one page with its stylesheet and script, embedded in the binary (no build
//! step), served at `/`. It reads the admin API like any client (with the token the operator
//! types, kept for the browser tab), follows `/v1/events` to refresh what changed, and draws its
//! charts itself. The page runs under a Content-Security-Policy that allows only these files and
//! this server, and may not be framed.

use axum::http::header;
use axum::response::IntoResponse;

/// The page's markup.
const PAGE: &str = include_str!("dashboard.html");
/// The page's style.
const STYLE: &str = include_str!("dashboard.css");
/// The page's script.
const SCRIPT: &str = include_str!("dashboard.js");

/// What the page may load and run: its own files and calls to this server, nothing inline, no
/// frame around it, no form sent elsewhere.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the dashboard.
#[utoipa::path(get, path = "/", tag = "meta", security(()),
    responses((status = 200, description = "The live dashboard (HTML); it reads the API with the operator's token", content_type = "text/html")))]
pub(super) async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

/// `GET /dashboard.css`: the dashboard's style.
#[utoipa::path(get, path = "/dashboard.css", tag = "meta", security(()),
    responses((status = 200, description = "The dashboard's stylesheet", content_type = "text/css")))]
pub(super) async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// `GET /dashboard.js`: the dashboard's script.
#[utoipa::path(get, path = "/dashboard.js", tag = "meta", security(()),
    responses((status = 200, description = "The dashboard's script", content_type = "text/javascript")))]
pub(super) async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}
