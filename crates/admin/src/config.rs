//! The config part of the admin API: the generation in force, the history with what each
//! generation changed, a file checked against the running registry without applying it, and an
//! earlier generation restored.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::{blocking_read, ApiError};
use strata_admin_model::{ConfigCheckView, GenerationView, RestoredView};
use strata_engine::store::AppliedConfig;
use strata_engine::Engine;

/// `GET /v1/config`: the generation in force (the newest applied).
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses((status = 200, body = GenerationView), (status = 404, description = "No config applied yet", body = strata_admin_model::ErrorView)))]
pub(super) async fn in_force(State(engine): State<Engine>) -> Result<Json<GenerationView>, ApiError> {
    let history = blocking_read(engine, |engine| engine.config_history()).await??;
    let views = with_diffs(history);
    views
        .into_iter()
        .last()
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no config has been applied yet"))
}

/// `GET /v1/config/history`: every generation, oldest first, each with its diff.
#[utoipa::path(get, path = "/v1/config/history", tag = "config",
    responses((status = 200, body = Vec<GenerationView>)))]
pub(super) async fn history(State(engine): State<Engine>) -> Result<Json<Vec<GenerationView>>, ApiError> {
    let history = blocking_read(engine, |engine| engine.config_history()).await??;
    Ok(Json(with_diffs(history)))
}

/// A config file's text, as posted: not empty.
pub(super) struct ConfigText;

impl utoipa::PartialSchema for ConfigText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .into()
    }
}

impl utoipa::ToSchema for ConfigText {}

/// The name of the file checked, for the messages.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckQuery {
    file: Option<String>,
}

/// `POST /v1/config/check` with a config file as the body: whether applying it would work,
/// and if not why (422), without applying it.
#[utoipa::path(post, path = "/v1/config/check", tag = "config",
    params(("file" = Option<String>, Query, description = "The file's name, for the messages (default strata.toml)")),
    request_body(content = ConfigText, content_type = "text/plain", description = "A strata.toml file"),
    responses((status = 200, description = "The file would apply", body = ConfigCheckView),
        (status = 422, description = "Invalid: the error names the file, the key and the reason", body = strata_admin_model::ErrorView)))]
pub(super) async fn check(
    State(engine): State<Engine>,
    Query(query): Query<CheckQuery>,
    text: String,
) -> Result<Json<ConfigCheckView>, ApiError> {
    let file = query
        .file
        .filter(|file| !file.is_empty())
        .unwrap_or_else(|| "strata.toml".to_string());
    if text.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{file}: the body is empty; post the config file's text"),
        ));
    }
    match engine.check_config(&file, &text) {
        Ok(()) => Ok(Json(ConfigCheckView { valid: true })),
        Err(error) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())),
    }
}

/// `POST /v1/config/restore/{generation}`: applies that generation again, as the newest.
#[utoipa::path(post, path = "/v1/config/restore/{generation}", tag = "config", params(("generation" = u64, Path)),
    responses((status = 200, description = "The new generation in force", body = RestoredView),
        (status = 404, body = strata_admin_model::ErrorView), (status = 422, body = strata_admin_model::ErrorView)))]
pub(super) async fn restore(
    State(engine): State<Engine>,
    Path(generation): Path<u64>,
) -> Result<Json<RestoredView>, ApiError> {
    let applied = engine.restore_config(generation).await?;
    Ok(Json(RestoredView { generation: applied }))
}

fn with_diffs(history: Vec<AppliedConfig>) -> Vec<GenerationView> {
    let mut previous = String::new();
    history
        .into_iter()
        .map(|applied| {
            let diff = line_diff(&previous, &applied.text);
            previous = applied.text.clone();
            GenerationView {
                generation: applied.generation,
                source: applied.source,
                applied_at_ms: applied.applied_at_ms,
                text: applied.text,
                diff,
            }
        })
        .collect()
}

/// The lines removed from `old` (`- `) and added in `new` (`+ `), in order, by the longest
/// common subsequence of lines (config files are small).
pub(super) fn line_diff(old: &str, new: &str) -> Vec<String> {
    let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // common[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut diff) = (0, 0, Vec::new());
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            // A removal first where both keep as much in common: `-` before `+`, as diffs show.
            diff.push(format!("- {}", old[i]));
            i += 1;
        } else {
            diff.push(format!("+ {}", new[j]));
            j += 1;
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn a_diff_names_removed_and_added_lines_in_order() {
        let old = "a = 1\nb = 2\nc = 3\n";
        let new = "a = 1\nb = 20\nc = 3\nd = 4\n";
        assert_eq!(line_diff(old, new), vec!["- b = 2", "+ b = 20", "+ d = 4"]);
        assert_eq!(line_diff("", "x\n"), vec!["+ x"]);
        assert!(line_diff(new, new).is_empty());
    }
}
