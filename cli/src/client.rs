//! The admin API client: one request, its bearer token, and the answer as JSON or as a typed
//! failure whose message says what to check.

use std::time::Duration;

use serde_json::Value;

use crate::error::CliError;

/// A client of one engine's admin API.
pub(crate) struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl AdminClient {
    /// A client for the API at `base` (`http://host:port`), sending `token` if given.
    pub(crate) fn new(base: &str, token: Option<String>) -> Result<AdminClient, CliError> {
        let base = admin_url(base)?;
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // The event stream stays open; every other answer comes at once.
            .timeout(None::<Duration>)
            .build()
            .map_err(|error| CliError::Unreachable(format!("could not set up the HTTP client: {error}")))?;
        Ok(AdminClient { base, token, http })
    }

    /// `GET path`, answered as JSON.
    pub(crate) fn get(&self, path: &str) -> Result<Value, CliError> {
        self.answer(self.request(reqwest::Method::GET, path), path)
    }

    /// `POST path` with a JSON body (or none).
    pub(crate) fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let mut request = self.request(reqwest::Method::POST, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.answer(request, path)
    }

    /// `POST path` with a text body (a config file).
    pub(crate) fn post_text(&self, path: &str, text: String) -> Result<Value, CliError> {
        let request = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(text);
        self.answer(request, path)
    }

    /// `GET path` as a stream (Server-Sent Events), once its answer says it is one.
    pub(crate) fn stream(&self, path: &str) -> Result<reqwest::blocking::Response, CliError> {
        let response = self.send(self.request(reqwest::Method::GET, path), path)?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.failure(response, path))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
        path: &str,
    ) -> Result<reqwest::blocking::Response, CliError> {
        request.send().map_err(|error| {
            CliError::Unreachable(format!(
                "could not reach the admin API at {}{path}: {}; check --url (or STRATA_ADMIN_URL) and that the engine runs with its admin API on",
                self.base,
                with_causes(&error)
            ))
        })
    }

    fn answer(&self, request: reqwest::blocking::RequestBuilder, path: &str) -> Result<Value, CliError> {
        let response = self.send(request, path)?;
        if !response.status().is_success() {
            return Err(self.failure(response, path));
        }
        let text = response
            .text()
            .map_err(|error| CliError::Unreachable(format!("the answer to {path} broke off: {error}")))?;
        serde_json::from_str(&text).map_err(|error| {
            CliError::Unreachable(format!(
                "the answer to {path} is not JSON ({error}); is --url an engine's admin API?"
            ))
        })
    }

    /// The failure an unsuccessful answer stands for, with the engine's own message.
    fn failure(&self, response: reqwest::blocking::Response, path: &str) -> CliError {
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|body| body["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{path}: {}", text.trim()));
        let message = match status.as_u16() {
            401 => format!("{message}; pass --token (or STRATA_ADMIN_TOKEN)"),
            _ => message,
        };
        if status.is_client_error() {
            CliError::Refused {
                status: status.as_u16(),
                message,
            }
        } else {
            CliError::Unreachable(format!("the admin API failed: {message} (HTTP {})", status.as_u16()))
        }
    }
}

/// The admin API's base URL from `--url`: `http://` is assumed where no scheme is given
/// (`127.0.0.1:7700`); `https://` is refused with why (this CLI speaks plain HTTP, as the admin
/// API serves it).
fn admin_url(given: &str) -> Result<String, CliError> {
    let given = given.trim();
    let with_scheme = if given.contains("://") {
        given.to_string()
    } else {
        format!("http://{given}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|error| {
        CliError::Input(format!(
            "--url '{given}' is not a URL ({error}); write it like http://127.0.0.1:7700"
        ))
    })?;
    match url.scheme() {
        "http" if url.host().is_some() => Ok(with_scheme.trim_end_matches('/').to_string()),
        "http" => Err(CliError::Input(format!("--url '{given}' names no host; write it like http://127.0.0.1:7700"))),
        "https" => Err(CliError::Input(format!(
            "--url '{given}': this strata CLI speaks plain HTTP only, as the engine's admin API serves it; use http:// (behind a TLS proxy, run the CLI where it reaches the engine directly)"
        ))),
        other => Err(CliError::Input(format!("--url '{given}': '{other}' is not a scheme the admin API speaks; use http://"))),
    }
}

/// An error's message followed by each of its causes (`connection refused` hides in them).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    message
}

/// How often a waiting command asks the admin API again.
pub(crate) const POLL: Duration = Duration::from_millis(500);

/// A request body of the model as the JSON the client posts.
pub(crate) fn body_json<T: serde::Serialize>(body: &T) -> Value {
    serde_json::to_value(body).unwrap_or_default()
}

/// An answer of the admin API read as the view `T` it documents (`strata-admin-model`).
pub(crate) fn typed<T: serde::de::DeserializeOwned>(answer: &Value, what: &str) -> Result<T, CliError> {
    T::deserialize(answer).map_err(|error| {
        CliError::Unreachable(format!(
            "the admin API answered with {what} this strata does not read ({error}); use a strata CLI of the engine's release"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_scheme_are_http_and_https_is_refused_saying_why() {
        assert_eq!(admin_url("127.0.0.1:7700").unwrap(), "http://127.0.0.1:7700");
        assert_eq!(admin_url("http://localhost:7700/").unwrap(), "http://localhost:7700");
        let https = admin_url("https://strata.example").unwrap_err().to_string();
        assert!(https.contains("plain HTTP only"), "{https}");
        let broken = admin_url("http://").unwrap_err().to_string();
        assert!(broken.contains("write it like http://127.0.0.1:7700"), "{broken}");
    }
}
