//! Who may use the admin API: with no token configured (loopback only), anyone on this host;
//! otherwise a bearer token — the read-only one for reads, the admin one for everything.
//! Probes (`/healthz`, `/readyz`) need none. Every change let through is logged with the role
//! of the caller's token.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The bearer tokens of the admin API.
#[derive(Clone, Default)]
pub struct AdminTokens {
    /// Allows every request.
    pub admin: Option<String>,
    /// Allows reads (GET) only.
    pub read: Option<String>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |token: &Option<String>| if token.is_some() { "set" } else { "none" };
        formatter
            .debug_struct("AdminTokens")
            .field("admin", &shown(&self.admin))
            .field("read", &shown(&self.read))
            .finish()
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |difference, (left, right)| difference | (left ^ right))
        == 0
}

/// What a request's token allows.
#[derive(Debug, PartialEq, Eq)]
enum Allowed {
    Everything,
    Reads,
    Nothing,
}

fn allowed(tokens: &AdminTokens, bearer: Option<&str>) -> Allowed {
    if tokens.admin.is_none() && tokens.read.is_none() {
        return Allowed::Everything;
    }
    let Some(given) = bearer else {
        return Allowed::Nothing;
    };
    let matches = |token: &Option<String>| {
        token
            .as_ref()
            .is_some_and(|token| same_secret(given.as_bytes(), token.as_bytes()))
    };
    if matches(&tokens.admin) {
        Allowed::Everything
    } else if matches(&tokens.read) {
        Allowed::Reads
    } else {
        Allowed::Nothing
    }
}

/// The middleware: lets a request through or answers 401 (no or a wrong token) or 403 (a
/// read-only token on a change).
pub(super) async fn check(State(tokens): State<AdminTokens>, request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    // Checking a config file and planning a move change nothing: the read-only token may.
    let dry_run = matches!(request.uri().path(), "/v1/config/check" | "/v1/moves/plan");
    let reading = matches!(*request.method(), Method::GET | Method::HEAD) || dry_run;
    let allowed = allowed(&tokens, bearer);
    if !reading && allowed == Allowed::Everything {
        // Every change, with who asked for it (the token's role, never the token).
        let caller = if tokens.admin.is_some() {
            "admin token"
        } else {
            "loopback, no token configured"
        };
        tracing::info!(method = %request.method(), path = %request.uri().path(), caller, "admin API change");
    }
    match allowed {
        Allowed::Everything => next.run(request).await,
        Allowed::Reads if reading => next.run(request).await,
        Allowed::Reads => ApiError::new(
            StatusCode::FORBIDDEN,
            "this token may only read; changes need the admin token",
        )
        .into_response(),
        Allowed::Nothing => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "send the admin or the read-only token as 'Authorization: Bearer <token>'",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_allow_what_they_are_for() {
        let none = AdminTokens::default();
        assert_eq!(allowed(&none, None), Allowed::Everything);
        let tokens = AdminTokens {
            admin: Some("admin-secret".into()),
            read: Some("read-secret".into()),
        };
        assert_eq!(allowed(&tokens, None), Allowed::Nothing);
        assert_eq!(allowed(&tokens, Some("admin-secret")), Allowed::Everything);
        assert_eq!(allowed(&tokens, Some("read-secret")), Allowed::Reads);
        assert_eq!(allowed(&tokens, Some("admin-secreT")), Allowed::Nothing);
        assert_eq!(allowed(&tokens, Some("admin")), Allowed::Nothing);
        assert!(!format!("{tokens:?}").contains("secret"), "tokens never show in logs");
    }
}
