//! The dashboard: one page, embedded in the binary (no build step), served at `/`. It reads the
//! admin API like any client (with the token the operator types, kept for the browser tab),
//! follows `/v1/events` to refresh what changed, and draws its charts itself.

use axum::response::Html;

/// The page: markup, style and script in one file.
const PAGE: &str = include_str!("dashboard.html");

/// `GET /`: the dashboard.
#[utoipa::path(get, path = "/", tag = "meta", security(()),
    responses((status = 200, description = "The live dashboard (HTML); it reads the API with the operator's token", content_type = "text/html")))]
pub(super) async fn page() -> Html<&'static str> {
    Html(PAGE)
}
