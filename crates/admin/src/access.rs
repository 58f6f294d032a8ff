//! Who may use the admin API: with no token configured (loopback only), anyone on this host;
//! otherwise a bearer token — the read-only one for reads, the admin one for everything.
//! Probes (`/healthz`, `/readyz`) and the dashboard's files need none. Every change let through
//! is logged with the role of the caller's token.
//!
//! Browsers are kept out of it whatever the tokens: a request naming a host that is not this
//! server (DNS rebinding) is refused, and so is a change sent by a page of another origin (a
//! form or a `no-cors` fetch from any site the operator visits). Every answer carries headers
//! that keep it from being sniffed or framed.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use strata_engine::EngineError;

/// The shortest admin or read-only token accepted: shorter ones are guessed quickly.
pub const MIN_ADMIN_TOKEN_LENGTH: usize = 16;

/// The bearer tokens of the admin API.
#[derive(Clone, Default)]
pub(crate) struct AdminTokens {
    /// Allows every request.
    pub(crate) admin: Option<String>,
    /// Allows reads (GET) only.
    pub(crate) read: Option<String>,
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

impl AdminTokens {
    /// These tokens, each taken from the environment where it was not given
    /// (`STRATA_ADMIN_TOKEN`, `STRATA_ADMIN_READ_TOKEN`).
    pub(crate) fn with_environment(self) -> AdminTokens {
        let from_environment = |name: &str| std::env::var(name).ok().filter(|token| !token.is_empty());
        AdminTokens {
            admin: self.admin.or_else(|| from_environment("STRATA_ADMIN_TOKEN")),
            read: self.read.or_else(|| from_environment("STRATA_ADMIN_READ_TOKEN")),
        }
    }

    /// Refuses a token shorter than [`MIN_ADMIN_TOKEN_LENGTH`] (an empty one included).
    pub(crate) fn check_lengths(&self) -> Result<(), EngineError> {
        for (role, token) in [("admin", &self.admin), ("read-only", &self.read)] {
            let length = token
                .as_ref()
                .map_or(MIN_ADMIN_TOKEN_LENGTH, |token| token.chars().count());
            if length < MIN_ADMIN_TOKEN_LENGTH {
                return Err(EngineError::AdminTokenTooShort {
                    role,
                    length,
                    minimum: MIN_ADMIN_TOKEN_LENGTH,
                });
            }
        }
        Ok(())
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

/// The token of an `Authorization` header's `Bearer` credentials; the scheme's name is matched
/// without regard to case (RFC 9110 §11.1), and spaces around the token are ignored.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a `Host` header's name may be this server's: an IP address (DNS rebinding needs a
/// name), a loopback name (`localhost`, `*.localhost`), or one of `allowed` (the names a proxy
/// or DNS gives the server).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [::1]:7700
        Some(bracketed) => {
            return bracketed
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|digit| digit.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.iter().any(|allowed| allowed.eq_ignore_ascii_case(&name))
}

/// Why a change must be refused as sent by a page of another origin, if it must: browsers send
/// `Origin` with every change and `Sec-Fetch-Site` with every request; a client that is not a
/// browser (the CLI, curl, scripts) sends neither.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let text = |name: &str| headers.get(name).map(|value| value.to_str().unwrap_or("(not text)"));
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("Sec-Fetch-Site: {site}"));
        }
    }
    let origin = text("origin")?;
    let host = text("host").unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host));
    (!same).then(|| format!("Origin: {origin}"))
}

/// The middleware before every route: refuses a request for a host this server does not go by
/// (DNS rebinding) and a change sent by a page of another origin, both with 403.
pub(super) async fn same_origin(
    State(allowed_hosts): State<std::sync::Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().authority().map(|authority| authority.as_str()))
        .unwrap_or("");
    if !host_allowed(host, &allowed_hosts) {
        tracing::warn!(host, path = %request.uri().path(), "admin API request for a foreign host refused");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this server does not answer for host '{host}'; use its address or a loopback name, or allow the name with EngineBuilder::admin_allowed_host"),
        )
        .into_response();
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(why) = foreign_origin(request.headers()) {
            tracing::warn!(%why, method = %request.method(), path = %request.uri().path(), "admin API change from another origin refused");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!("changes are refused from pages of another origin ({why}); use the dashboard served by this server, the strata CLI or a client that is not a browser"),
            )
            .into_response();
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(super::dashboard::CONTENT_SECURITY_POLICY),
    );
    response
}

/// The middleware: lets a request through or answers 401 (no or a wrong token, with
/// `WWW-Authenticate: Bearer`) or 403 (a read-only token on a change).
pub(super) async fn check(State(tokens): State<AdminTokens>, request: Request, next: Next) -> Response {
    let bearer = bearer_token(request.headers());
    // Checking a config file and planning a move or a revival change nothing: the read-only
    // token may.
    let dry_run = matches!(
        request.uri().path(),
        "/v1/config/check" | "/v1/moves/plan" | "/v1/revivals/plan"
    );
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
        Allowed::Nothing => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "send the admin or the read-only token as 'Authorization: Bearer <token>'",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"strata\""),
            );
            response
        }
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (header::HeaderName::from_static(name), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER   abc ", " Bearer abc"] {
            let headers = headers(&[("authorization", value)]);
            assert_eq!(bearer_token(&headers), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearerabc", "abc"] {
            let headers = headers(&[("authorization", value)]);
            assert_eq!(bearer_token(&headers), None, "{value:?}");
        }
    }

    #[test]
    fn hosts_are_addresses_loopback_names_or_the_allowed_ones() {
        let allowed = vec!["strata.internal".to_string()];
        for host in [
            "127.0.0.1:7700",
            "127.0.0.1",
            "[::1]:7700",
            "localhost:7700",
            "LocalHost",
            "app.localhost:1",
            "10.1.2.3:7700",
            "strata.internal:7700",
            "STRATA.internal",
        ] {
            assert!(host_allowed(host, &allowed), "{host}");
        }
        for host in [
            "evil.example:7700",
            "localhost.evil.example",
            "",
            "strata.internal.evil:7700",
            "[evil]:7700",
        ] {
            assert!(!host_allowed(host, &allowed), "{host}");
        }
    }

    #[test]
    fn a_change_from_another_origin_is_told_apart_from_the_same_origin_and_from_non_browsers() {
        assert_eq!(
            foreign_origin(&headers(&[("host", "127.0.0.1:7700")])),
            None,
            "the CLI sends no Origin"
        );
        assert_eq!(
            foreign_origin(&headers(&[
                ("host", "127.0.0.1:7700"),
                ("origin", "http://127.0.0.1:7700"),
                ("sec-fetch-site", "same-origin")
            ])),
            None
        );
        for foreign in [
            headers(&[("host", "127.0.0.1:7700"), ("origin", "http://127.0.0.1:8000")]),
            headers(&[("host", "127.0.0.1:7700"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:7700"), ("sec-fetch-site", "same-site")]),
            headers(&[("host", "127.0.0.1:7700"), ("sec-fetch-site", "cross-site")]),
            headers(&[
                ("host", "127.0.0.1:7700"),
                ("origin", "http://127.0.0.1:7700.evil.example"),
            ]),
        ] {
            assert!(foreign_origin(&foreign).is_some(), "{foreign:?}");
        }
    }

    #[test]
    fn tokens_shorter_than_the_minimum_are_refused_naming_it() {
        let short = AdminTokens {
            admin: Some(String::new()),
            read: None,
        };
        let message = short.check_lengths().unwrap_err().to_string();
        assert!(
            message.contains("admin token is 0 characters") && message.contains("at least 16"),
            "{message}"
        );
        let read = AdminTokens {
            admin: Some("a".repeat(16)),
            read: Some("short".into()),
        };
        assert!(read
            .check_lengths()
            .unwrap_err()
            .to_string()
            .contains("read-only token is 5"));
        assert!(AdminTokens::default().check_lengths().is_ok());
    }
}
