//! The admin HTTP API (issue #11, first part), through a real HTTP client against the engine's
//! own server on a loopback port: probes, versions with their residency as instances finish,
//! drain and retire (a live version's retirement refused with 409 and what to do), unknown and
//! malformed versions, Prometheus text, and access: no token, a wrong one, a read-only one on a
//! change, the admin one; an address other hosts can reach refused without a token.
//!
//! The behaviours listed in `on_sled_and_postgres!` run on sled and on PostgreSQL; the other two
//! are about the builder (a token set in either order, tokens refused at open).

mod common;

use std::net::SocketAddr;
use strata::prelude::*;

use common::tally;
use common::*;
use serde_json::Value;
use strata::{Engine, EngineError, InstanceStatus, StartOptions, Version};

on_sled_and_postgres!(
    a_rollout_is_started_watched_paused_and_its_rollback_shows_the_gate_that_fired,
    versions_show_residency_live_and_drain_and_retire_answer_what_to_do,
    tokens_guard_reads_and_changes_and_probes_need_none,
    an_address_other_hosts_reach_needs_a_token_and_a_taken_port_is_named,
    the_bearer_scheme_is_any_case_and_a_401_says_which_scheme,
    requests_for_a_foreign_host_and_changes_from_another_origin_are_refused,
    every_error_is_json_and_every_operation_documents_its_errors,
    every_answer_carries_headers_that_keep_it_from_being_framed_or_sniffed,
    instances_are_listed_paged_shown_signalled_and_cancelled,
    the_event_stream_sends_each_event_as_it_happens_and_ends_at_shutdown,
    config_in_force_history_with_diffs_checks_and_restores,
    a_rollout_takes_every_field_refuses_unknown_ones_and_runs_again_after_it_ended,
    moves_are_planned_then_applied_and_migrations_report_progress,
    cancelled_instances_are_planned_then_revived_and_the_version_counts_them,
    workers_routing_in_force_schedules_and_quarantined_records_are_read,
    an_instance_is_started_with_json_input_on_a_required_version_and_bad_starts_say_why,
    the_openapi_document_describes_every_route_with_its_parameters_and_answers,
);

const LOOPBACK: &str = "127.0.0.1:0";
const ADMIN_TOKEN: &str = "admin-secret-0123456789";
const READ_TOKEN: &str = "read-secret-0123456789";

async fn open(backend: &Backend, tokens: Option<(&str, &str)>) -> Engine {
    let mut builder = backend
        .builder()
        .register(tally::on_schema_1("1.0.0"))
        .admin(LOOPBACK.parse().unwrap());
    if let Some((admin, read)) = tokens {
        builder = builder.admin_token(admin).admin_read_token(read);
    }
    builder.open().await.unwrap()
}

/// An engine with `tally` 1.0.0 and 1.1.0 and the admin API on loopback, without tokens.
async fn open_two_tallies(backend: &Backend) -> Engine {
    backend
        .builder()
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_1("1.1.0"))
        .admin(LOOPBACK.parse().unwrap())
        .open()
        .await
        .unwrap()
}

/// An engine with `probe` 1.0.0 and 2.0.0 and the admin API on loopback, without tokens.
async fn open_with_probes(backend: &Backend) -> Engine {
    backend
        .builder()
        .register(common::probe::version("1.0.0"))
        .register(common::probe::version("2.0.0"))
        .admin(LOOPBACK.parse().unwrap())
        .open()
        .await
        .unwrap()
}

fn url(engine: &Engine, path: &str) -> String {
    format!(
        "http://{}{path}",
        engine.admin_address().expect("the admin API listens")
    )
}

async fn get(engine: &Engine, path: &str) -> (u16, Value) {
    let response = reqwest::get(url(engine, path)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A POST with an optional body (its content type and text) and bearer token; the status and
/// the JSON answer.
async fn send(engine: &Engine, path: &str, body: Option<(&str, &str)>, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url(engine, path));
    if let Some((content_type, text)) = body {
        request = request.header("content-type", content_type).body(text.to_string());
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(engine: &Engine, path: &str, token: Option<&str>) -> (u16, Value) {
    send(engine, path, None, token).await
}

async fn post_json(engine: &Engine, path: &str, body: &str) -> (u16, Value) {
    send(engine, path, Some(("application/json", body)), None).await
}

async fn post_text(engine: &Engine, path: &str, body: &str) -> (u16, Value) {
    send(engine, path, Some(("text/plain", body)), None).await
}

async fn versions_show_residency_live_and_drain_and_retire_answer_what_to_do(backend: Backend) {
    let engine = open(&backend, None).await;
    let health = reqwest::get(url(&engine, "/healthz")).await.unwrap();
    assert_eq!(
        (health.status().as_u16(), health.text().await.unwrap()),
        (200, "ok".to_string())
    );
    let ready = reqwest::get(url(&engine, "/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    let ids = tally::start_waiting(&engine, 0..3, StartOptions::new()).await;
    let (status, versions) = get(&engine, "/v1/versions").await;
    assert_eq!(status, 200);
    let version = &versions.as_array().unwrap()[0];
    assert_eq!(version["workflow"], "tally");
    assert_eq!(version["version"], "1.0.0");
    assert_eq!(version["status"], "active");
    assert_eq!(
        (version["live"].as_u64(), version["started"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(version["oldest_live"]["id"].as_u64(), Some(ids[0].0));
    assert_eq!(version["safe_to_remove"], false);
    let (_, filtered) = get(&engine, "/v1/versions?workflow=nothing").await;
    assert_eq!(filtered, Value::Array(Vec::new()));

    // Retiring a live version: refused, saying what to do.
    let (status, error) = post(&engine, "/v1/versions/tally/1.0.0/retire", None).await;
    assert_eq!(status, 409, "{error}");
    assert!(error["error"].as_str().unwrap().contains("drain it"), "{error}");
    let (status, drained) = post(&engine, "/v1/versions/tally/1.0.0/drain", None).await;
    assert_eq!((status, drained["status"].as_str()), (200, Some("draining")));
    // The residency follows the instances as they finish.
    for id in &ids {
        engine.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&engine, *id).await;
    }
    let (_, version) = get(&engine, "/v1/versions/tally/1.0.0").await;
    assert_eq!(version["status"], "drained");
    assert_eq!(
        (version["live"].as_u64(), version["completed"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(version["safe_to_remove"], true);
    assert_eq!(version["oldest_live"], Value::Null);
    // A drain made by mistake is undone while the code is registered.
    let (status, active) = post(&engine, "/v1/versions/tally/1.0.0/activate", None).await;
    assert_eq!(
        (status, active["status"].as_str(), active["accepts_starts"].as_bool()),
        (200, Some("active"), Some(true)),
        "{active}"
    );
    let (status, drained) = post(&engine, "/v1/versions/tally/1.0.0/drain", None).await;
    assert_eq!((status, drained["status"].as_str()), (200, Some("drained")));
    let (status, retired) = post(&engine, "/v1/versions/tally/1.0.0/retire", None).await;
    assert_eq!((status, retired["status"].as_str()), (200, Some("retired")));
    let (status, error) = post(&engine, "/v1/versions/tally/1.0.0/activate", None).await;
    assert_eq!(status, 409, "a retired version stays retired: {error}");
    assert!(
        error["error"].as_str().unwrap().contains("register a new version"),
        "{error}"
    );

    // Unknown and malformed versions: 4xx with the reason, never a 500.
    let (status, error) = get(&engine, "/v1/versions/tally/9.9.9").await;
    assert_eq!(status, 404, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("1.0.0"),
        "names the known versions: {error}"
    );
    let (status, error) = get(&engine, "/v1/versions/nothing/1.0.0").await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = get(&engine, "/v1/versions/tally/not-a-version").await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = post(&engine, "/v1/versions/tally/not-a-version/drain", None).await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = post(&engine, "/v1/versions/tally/1.0.0/dran", None).await;
    assert_eq!(status, 400, "an unknown action: {error}");
    assert_eq!(
        error["error"],
        "in the path: unknown value `dran`, expected one of `drain`, `activate`, `retire` (did you mean `drain`?)"
    );

    let metrics = reqwest::get(url(&engine, "/metrics")).await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("strata_instances_completed_total{workflow=\"tally\",version=\"1.0.0\"} 3"),
        "{text}"
    );
    engine.shutdown().await;
}

async fn tokens_guard_reads_and_changes_and_probes_need_none(backend: Backend) {
    let engine = open(&backend, Some((ADMIN_TOKEN, READ_TOKEN))).await;
    let client = reqwest::Client::new();
    let read = |token: Option<&'static str>| {
        let mut request = client.get(url(&engine, "/v1/versions"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(read(None).await, 401, "no token");
    assert_eq!(read(Some("wrong")).await, 401, "a wrong token");
    assert_eq!(read(Some(READ_TOKEN)).await, 200, "the read-only token reads");
    assert_eq!(read(Some(ADMIN_TOKEN)).await, 200, "the admin token reads");
    let (status, error) = post(&engine, "/v1/versions/tally/1.0.0/drain", Some(READ_TOKEN)).await;
    assert_eq!(status, 403, "the read-only token changes nothing: {error}");
    assert!(error["error"].as_str().unwrap().contains("admin token"), "{error}");
    assert_eq!(
        engine.version("tally", "1.0.0").unwrap().status,
        strata::VersionStatus::Active
    );
    // Dry runs change nothing: the read-only token may check a config and plan a move.
    let config = "[workflows.tally]\ndefault = \"^1\"\n";
    let (status, checked) = send(
        &engine,
        "/v1/config/check",
        Some(("text/plain", config)),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!((status, checked["valid"].as_bool()), (200, Some(true)), "{checked}");
    let plan = r#"{"workflow": "tally", "target": "1.0.0"}"#;
    let (status, planned) = send(
        &engine,
        "/v1/moves/plan",
        Some(("application/json", plan)),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{planned}");
    let revival = r#"{"workflow": "tally"}"#;
    let (status, planned) = send(
        &engine,
        "/v1/revivals/plan",
        Some(("application/json", revival)),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "a revival's dry run is a read: {planned}");
    let (status, refused) = send(
        &engine,
        "/v1/revivals",
        Some(("application/json", revival)),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, 403, "a revival is a change: {refused}");
    let (status, error) = post(&engine, "/v1/versions/tally/1.0.0/drain", None).await;
    assert_eq!(status, 401, "{error}");
    let (status, drained) = post(&engine, "/v1/versions/tally/1.0.0/drain", Some(ADMIN_TOKEN)).await;
    assert_eq!((status, drained["status"].as_str()), (200, Some("drained")));
    for probe in ["/healthz", "/readyz"] {
        let status = reqwest::get(url(&engine, probe)).await.unwrap().status().as_u16();
        assert_eq!(status, 200, "{probe} needs no token");
    }
    engine.shutdown().await;
}

async fn an_address_other_hosts_reach_needs_a_token_and_a_taken_port_is_named(backend: Backend) {
    let everywhere: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let refused = backend.builder().admin(everywhere).open().await;
    match refused {
        Err(error @ EngineError::AdminTokenRequired { .. }) => {
            assert!(error.to_string().contains("STRATA_ADMIN_TOKEN"), "{error}")
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("the admin API listened on every interface without a token"),
    }
    let first = open(&backend, None).await;
    let taken = first.admin_address().unwrap();
    let elsewhere = Backend::sled();
    match elsewhere.builder().admin(taken).open().await {
        Err(error @ EngineError::AdminBind { .. }) => assert!(error.to_string().contains(&taken.to_string())),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("two servers on one port"),
    }
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_whatever_order_the_builder_was_called_in() {
    let dir = tempfile::tempdir().unwrap();
    // The token before the address: the API is guarded all the same.
    let engine = builder(dir.path())
        .register(tally::on_schema_1("1.0.0"))
        .admin_token(ADMIN_TOKEN)
        .admin(LOOPBACK.parse().unwrap())
        .open()
        .await
        .unwrap();
    let (status, error) = post(&engine, "/v1/versions/tally/1.0.0/drain", None).await;
    assert_eq!(status, 401, "a drain without the token: {error}");
    assert_eq!(
        engine.version("tally", "1.0.0").unwrap().status,
        strata::VersionStatus::Active
    );
    engine.shutdown().await;

    // On every interface, a token given before the address is the token it needs.
    let dir = tempfile::tempdir().unwrap();
    let engine = builder(dir.path())
        .admin_token(ADMIN_TOKEN)
        .admin("0.0.0.0:0".parse().unwrap())
        .open()
        .await
        .unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_tokens_and_tokens_without_an_address_are_refused_at_open() {
    for (token, length) in [("", 0), ("short", 5), ("fifteen-chars!!", 15)] {
        let dir = tempfile::tempdir().unwrap();
        match builder(dir.path())
            .admin(LOOPBACK.parse().unwrap())
            .admin_token(token)
            .open()
            .await
        {
            Err(error @ EngineError::AdminTokenTooShort { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains(&format!("is {length} characters")) && message.contains("at least 16"),
                    "{message}"
                );
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("the admin token {token:?} was accepted"),
        }
        match builder(dir.path())
            .admin(LOOPBACK.parse().unwrap())
            .admin_read_token(token)
            .open()
            .await
        {
            Err(EngineError::AdminTokenTooShort { role, .. }) => assert_eq!(role, "read-only"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("the read-only token {token:?} was accepted"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    match builder(dir.path()).admin_token(ADMIN_TOKEN).open().await {
        Err(error @ EngineError::AdminTokenWithoutAddress) => {
            assert!(error.to_string().contains("EngineBuilder::admin(address)"), "{error}")
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a token was set for an admin API that does not listen"),
    }
}

async fn the_bearer_scheme_is_any_case_and_a_401_says_which_scheme(backend: Backend) {
    let engine = open(&backend, Some((ADMIN_TOKEN, READ_TOKEN))).await;
    let client = reqwest::Client::new();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = client
            .get(url(&engine, "/v1/versions"))
            .header("authorization", format!("{scheme} {READ_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{scheme}");
    }
    let refused = client.get(url(&engine, "/v1/versions")).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let challenge = refused
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_string());
    assert!(
        challenge.as_deref().is_some_and(|value| value.starts_with("Bearer")),
        "{challenge:?}"
    );
    engine.shutdown().await;
}

async fn requests_for_a_foreign_host_and_changes_from_another_origin_are_refused(backend: Backend) {
    let engine = open(&backend, None).await;
    let id = tally::start_waiting(&engine, [1], StartOptions::new()).await[0];
    let client = reqwest::Client::new();
    let address = engine.admin_address().unwrap();
    // DNS rebinding: a name that resolves here but is not this server's.
    let rebound = client
        .get(url(&engine, "/v1/versions"))
        .header("host", format!("attacker.example:{}", address.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 403);
    let error: Value = rebound.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("attacker.example"), "{error}");
    for host in [format!("localhost:{}", address.port()), address.to_string()] {
        let status = client
            .get(url(&engine, "/v1/versions"))
            .header("host", &host)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200, "{host}");
    }
    // Changes a page of another origin sends: a form, a no-cors fetch.
    let changes = [
        format!("/v1/instances/{}/cancel", id.0),
        "/v1/versions/tally/1.0.0/drain".to_string(),
        format!("/v1/instances/{}/terminate", id.0),
    ];
    let foreign = [
        ("origin", "http://127.0.0.1:1".to_string()),
        ("origin", "null".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
        ("sec-fetch-site", "same-site".to_string()),
    ];
    for path in &changes {
        for (header, value) in &foreign {
            let response = client
                .post(url(&engine, path))
                .header(*header, value)
                .header("content-type", "text/plain")
                .body("a=b")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 403, "{path} with {header}: {value}");
            let error: Value = response.json().await.unwrap();
            assert!(error["error"].as_str().unwrap().contains("another origin"), "{error}");
        }
    }
    assert!(
        !engine.instance(id).unwrap().status.is_terminal(),
        "nothing was cancelled"
    );
    assert_eq!(
        engine.version("tally", "1.0.0").unwrap().status,
        strata::VersionStatus::Active
    );
    // The same change from this server's own origin (the dashboard) goes through.
    let response = client
        .post(url(&engine, &changes[1]))
        .header("origin", format!("http://{address}"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    engine.shutdown().await;
}

async fn every_error_is_json_and_every_operation_documents_its_errors(backend: Backend) {
    let engine = open(&backend, Some((ADMIN_TOKEN, READ_TOKEN))).await;
    let client = reqwest::Client::new();
    let cases = [
        (
            reqwest::Method::GET,
            "/v1/instances?workflw=tally",
            400,
            "did you mean `workflow`?",
        ),
        (
            reqwest::Method::GET,
            "/v1/instances?after=18446744073709551615",
            400,
            "after must be an instance id",
        ),
        (
            reqwest::Method::GET,
            "/v1/instances?limit=0",
            400,
            "limit must be from 1 to 1000",
        ),
        (reqwest::Method::GET, "/v1/instances/abc", 400, "in the path"),
        (reqwest::Method::GET, "/v1/nowhere", 404, "no such path"),
        (
            reqwest::Method::DELETE,
            "/v1/versions",
            405,
            "does not take that method",
        ),
    ];
    for (method, path, status, says) in cases {
        let response = client
            .request(method.clone(), url(&engine, path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: {content_type}"
        );
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{method} {path}: {error}"
        );
    }
    let (_, document) = {
        let response = client
            .get(url(&engine, "/v1/openapi.json"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    let probes = ["/", "/dashboard.css", "/dashboard.js", "/healthz", "/readyz"];
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("403"), "{method} {path} does not document 403");
            if !probes.contains(&path.as_str()) {
                assert!(responses.contains_key("401"), "{method} {path} does not document 401");
            }
            if operation["requestBody"]["content"].get("application/json").is_some() {
                for status in ["413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }
    engine.shutdown().await;
}

async fn every_answer_carries_headers_that_keep_it_from_being_framed_or_sniffed(backend: Backend) {
    let engine = open(&backend, None).await;
    for path in ["/", "/dashboard.js", "/v1/versions", "/healthz", "/v1/nowhere"] {
        let response = reqwest::get(url(&engine, path)).await.unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("frame-ancestors 'none'") && policy.contains("script-src 'self'"),
            "{path}: {policy}"
        );
        assert!(!policy.contains("unsafe-inline"), "{policy}");
    }
    engine.shutdown().await;
}

async fn instances_are_listed_paged_shown_signalled_and_cancelled(backend: Backend) {
    let engine = open(&backend, None).await;
    let ids = tally::start_waiting(&engine, 10..15, StartOptions::new()).await;

    let (status, page) = get(&engine, "/v1/instances?workflow=tally&status=waiting_signal&limit=2").await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<u64> = page["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[0].0, ids[1].0]);
    let next = page["next"].as_u64().expect("a cursor to the next page");
    let (_, rest) = get(&engine, &format!("/v1/instances?workflow=tally&after={next}")).await;
    assert_eq!(rest["instances"].as_array().unwrap().len(), 3);
    assert_eq!(rest["next"], Value::Null, "the last page has no cursor");
    let (status, newest) = get(&engine, "/v1/instances?workflow=tally&order=newest&limit=2").await;
    assert_eq!(status, 200, "{newest}");
    let listed: Vec<u64> = newest["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[4].0, ids[3].0], "newest first");
    let (_, older) = get(
        &engine,
        &format!("/v1/instances?workflow=tally&order=newest&after={}", newest["next"]),
    )
    .await;
    let listed: Vec<u64> = older["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2].0, ids[1].0, ids[0].0], "the older page");
    let (status, error) = get(&engine, "/v1/instances?order=sideways").await;
    assert_eq!(status, 400, "{error}");

    let (status, detail) = get(&engine, &format!("/v1/instances/{}", ids[0].0)).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["status"], "waiting_signal");
    assert_eq!(detail["phase"]["kind"], "waiting_signal");
    assert_eq!(detail["phase"]["signal"], tally::GO);
    assert_eq!(
        detail["state"]["count"].as_u64(),
        Some(10),
        "state decoded as JSON: {detail}"
    );

    // A signal it does not wait for yet waits in its inbox, shown with its payload.
    let (status, _) = post_json(
        &engine,
        &format!("/v1/instances/{}/signals/later", ids[2].0),
        r#"{"note": "for after"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (_, detail) = get(&engine, &format!("/v1/instances/{}", ids[2].0)).await;
    let pending = detail["pending_signals"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{detail}");
    assert_eq!(
        (pending[0]["name"].as_str(), &pending[0]["payload"]["note"]),
        (Some("later"), &Value::from("for after"))
    );

    // The version's metrics window, a point per bucket: the five first steps ran in the last.
    let (status, series) = get(&engine, "/v1/versions/tally/1.0.0/metrics").await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series["bucket_ms"], 10_000);
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 32);
    let attempts: u64 = points.iter().map(|point| point["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 5, "{series}");
    assert_eq!(get(&engine, "/v1/versions/tally/9.0.0/metrics").await.0, 404);
    assert_eq!(get(&engine, "/v1/versions/tally/latest/metrics").await.0, 400);

    // A signal with its payload as JSON wakes the instance; a cancel ends another.
    let (status, answer) = post_json(&engine, &format!("/v1/instances/{}/signals/go", ids[0].0), "null").await;
    assert_eq!((status, answer["delivered"].as_bool()), (200, Some(true)), "{answer}");
    outcome_within(&engine, ids[0]).await;
    let (_, detail) = get(&engine, &format!("/v1/instances/{}", ids[0].0)).await;
    assert_eq!(detail["phase"]["kind"], "completed");
    assert_eq!(detail["phase"]["output"].as_u64(), Some(10));
    let (status, answer) = post(&engine, &format!("/v1/instances/{}/cancel", ids[1].0), None).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("cancelled")),
        "{answer}"
    );

    // The completed instance's history: its start, the step that waited, the step the signal woke.
    let (status, history) = get(&engine, &format!("/v1/instances/{}/history", ids[0].0)).await;
    assert_eq!(status, 200, "{history}");
    let kinds: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["started", "step", "step"], "{history}");
    assert_eq!(history["entries"][0]["event"]["routed_by"], "newest");
    let last = &history["entries"][2]["event"];
    assert_eq!(
        (
            &last["woken_by"]["kind"],
            &last["woken_by"]["name"],
            &last["outcome"]["kind"]
        ),
        (&Value::from("signal"), &Value::from("go"), &Value::from("completed")),
        "{history}"
    );
    assert!(last["duration_ms"].is_u64(), "{history}");
    let (_, newest) = get(
        &engine,
        &format!("/v1/instances/{}/history?order=newest&limit=1", ids[0].0),
    )
    .await;
    assert_eq!(newest["entries"][0]["seq"], 2, "{newest}");
    assert_eq!(newest["next"], 2, "{newest}");
    let (_, older) = get(
        &engine,
        &format!("/v1/instances/{}/history?order=newest&from=2", ids[0].0),
    )
    .await;
    let older: Vec<u64> = older["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(older, [1, 0]);
    let (_, cancelled) = get(
        &engine,
        &format!("/v1/instances/{}/history?order=newest&limit=1", ids[1].0),
    )
    .await;
    assert_eq!(cancelled["entries"][0]["event"]["kind"], "cancelled", "{cancelled}");
    for (query, status) in [
        ("order=sideways", 400),
        ("limit=0", 400),
        ("limt=3", 400),
        ("from=-1", 400),
    ] {
        let (got, error) = get(&engine, &format!("/v1/instances/{}/history?{query}", ids[0].0)).await;
        assert_eq!(got, status, "{query}: {error}");
    }
    assert_eq!(get(&engine, "/v1/instances/999999/history").await.0, 404);

    // Bad input: 4xx with what to do.
    let (status, error) = get(&engine, "/v1/instances/999999").await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = post_json(&engine, &format!("/v1/instances/{}/signals/go", ids[0].0), "null").await;
    assert_eq!(status, 409, "a finished instance: {error}");
    let (status, error) = post_json(&engine, &format!("/v1/instances/{}/signals/go", ids[2].0), "{not json").await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("JSON"), "{error}");
    let (status, error) = post_json(
        &engine,
        &format!("/v1/instances/{}/signals/strata:cancel", ids[2].0),
        "null",
    )
    .await;
    assert_eq!(status, 400, "a reserved name: {error}");
    let (status, error) = get(&engine, "/v1/instances?status=sleepy").await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("waiting_signal"),
        "lists the statuses: {error}"
    );
    let (status, error) = get(&engine, "/v1/instances?version=one").await;
    assert_eq!(status, 400, "{error}");
    let big = format!("\"{}\"", "x".repeat(100 * 1024));
    let (status, _) = post_json(&engine, &format!("/v1/instances/{}/signals/go", ids[2].0), &big).await;
    assert_eq!(status, 413, "a body over the limit is refused unread");
    // None of the refused signals reached the instance.
    assert_eq!(
        engine.instance(ids[2]).unwrap().status,
        strata::InstanceStatus::WaitingSignal
    );

    // A termination needs its reason; a typo or a blank one is refused, and nothing ends.
    let terminate = format!("/v1/instances/{}/terminate", ids[3].0);
    for (body, refused, says) in [
        (r#"{"reasn": "typo"}"#, 422, "did you mean `reason`"),
        (r#"{}"#, 422, "reason"),
        (r#"{"reason": "  "}"#, 400, "needs a reason"),
        ("not json", 400, "JSON"),
    ] {
        let (status, error) = post_json(&engine, &terminate, body).await;
        assert_eq!(status, refused, "{body}: {error}");
        assert!(error["error"].as_str().unwrap().contains(says), "{body}: {error}");
    }
    assert_eq!(
        engine.instance(ids[3]).unwrap().status,
        strata::InstanceStatus::WaitingSignal
    );
    let (status, answer) = post_json(&engine, &terminate, r#"{"reason": "duplicate order"}"#).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("cancelled")),
        "{answer}"
    );
    let (_, history) = get(
        &engine,
        &format!("/v1/instances/{}/history?order=newest&limit=1", ids[3].0),
    )
    .await;
    let event = &history["entries"][0]["event"];
    assert_eq!(
        (&event["kind"], &event["reason"], &event["abandoned_step"]),
        (
            &Value::from("terminated"),
            &Value::from("duplicate order"),
            &Value::Null
        ),
        "{history}"
    );
    let (status, error) = post_json(&engine, &terminate, r#"{"reason": "again"}"#).await;
    assert_eq!(status, 409, "an ended instance: {error}");
    let (status, _) = post_json(&engine, "/v1/instances/999999/terminate", r#"{"reason": "x"}"#).await;
    assert_eq!(status, 404);
    engine.shutdown().await;
}

/// Reads the event stream until a chunk holds `wanted` (bounded), returning all it read.
async fn read_until(stream: &mut reqwest::Response, wanted: &str) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !text.contains(wanted) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no '{wanted}' in the event stream within 10 s: {text}"))
            .unwrap()
            .expect("the stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

async fn the_event_stream_sends_each_event_as_it_happens_and_ends_at_shutdown(backend: Backend) {
    let engine = open(&backend, None).await;
    let mut stream = reqwest::get(url(&engine, "/v1/events")).await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let id = engine.start(tally::WORKFLOW, &4u64).await.unwrap();
    let text = read_until(&mut stream, "event: instance_started").await;
    assert!(text.contains(&format!("\"id\":{}", id.0)), "{text}");
    engine.signal(id, tally::GO, &()).await.unwrap();
    let text = read_until(&mut stream, "event: instance_finished").await;
    assert!(text.contains("\"status\":\"completed\""), "{text}");
    assert!(text.contains("\"at_ms\":"), "every event says when: {text}");

    // Filtered: only the kinds asked for, of the workflow and version asked for.
    let mut finished = reqwest::get(url(
        &engine,
        "/v1/events?workflow=tally&version=1.0.0&kind=instance_finished,version_drained",
    ))
    .await
    .unwrap();
    let mut elsewhere = reqwest::get(url(&engine, "/v1/events?workflow=parcel")).await.unwrap();
    let second = engine.start(tally::WORKFLOW, &5u64).await.unwrap();
    engine.signal(second, tally::GO, &()).await.unwrap();
    let text = read_until(&mut finished, "event: instance_finished").await;
    assert!(
        !text.contains("instance_started") && text.contains(&format!("\"id\":{}", second.0)),
        "{text}"
    );
    let (status, error) = get(&engine, "/v1/events?kind=x&wokflow=tally").await;
    assert_eq!(status, 400, "a misspelt filter is refused: {error}");
    // Shutdown does not wait for the reader to hang up: the stream ends.
    tokio::time::timeout(std::time::Duration::from_secs(10), engine.shutdown())
        .await
        .expect("shutdown finished with a reader on the event stream");
    let rest = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the event stream ended with the engine");
    let mut seen = String::new();
    while let Ok(Some(chunk)) = elsewhere.chunk().await {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("event:"), "no event of another workflow: {seen}");
}

async fn config_in_force_history_with_diffs_checks_and_restores(backend: Backend) {
    let engine = open(&backend, None).await;
    let (status, error) = get(&engine, "/v1/config").await;
    assert_eq!(status, 404, "none applied yet: {error}");
    let first = "[workflows.tally]\ndefault = \"^1\"\n";
    let second = "[workflows.tally]\ndefault = \"=1.0.0\"\n";
    engine.apply_config("strata.toml", first).await.unwrap();
    engine.apply_config("strata.toml", second).await.unwrap();
    let (status, in_force) = get(&engine, "/v1/config").await;
    assert_eq!((status, in_force["generation"].as_u64()), (200, Some(2)), "{in_force}");
    assert_eq!(in_force["text"], second);
    let (_, history) = get(&engine, "/v1/config/history").await;
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[1]["diff"],
        serde_json::json!(["- default = \"^1\"", "+ default = \"=1.0.0\""]),
        "what generation 2 changed"
    );

    // A file is checked against the running registry without being applied.
    let (status, answer) = post_text(&engine, "/v1/config/check", "[workflows.tally]\ndefault = \"^1\"\n").await;
    assert_eq!((status, answer["valid"].as_bool()), (200, Some(true)), "{answer}");
    let (status, error) = post_text(
        &engine,
        "/v1/config/check?file=prod.toml",
        "[workflows.tally]\ndefault = \"^7\"\n",
    )
    .await;
    assert_eq!(status, 422, "no version matches: {error}");
    assert!(
        error["error"].as_str().unwrap().starts_with("prod.toml: "),
        "names the file: {error}"
    );
    let (status, error) = post_text(&engine, "/v1/config/check", "").await;
    assert_eq!(status, 422, "an empty file is no config: {error}");
    assert!(
        error["error"].as_str().unwrap().contains("the body is empty"),
        "{error}"
    );
    let (status, error) = post_text(&engine, "/v1/config/check", "[workflows.tally\n").await;
    assert_eq!(status, 422, "a syntax error: {error}");
    let (_, in_force) = get(&engine, "/v1/config").await;
    assert_eq!(in_force["generation"].as_u64(), Some(2), "checking applied nothing");

    let (status, restored) = post(&engine, "/v1/config/restore/1", None).await;
    assert_eq!((status, restored["generation"].as_u64()), (200, Some(3)), "{restored}");
    let (_, in_force) = get(&engine, "/v1/config").await;
    assert_eq!(in_force["text"], first);
    let (status, error) = post(&engine, "/v1/config/restore/99", None).await;
    assert_eq!(status, 404, "{error}");
    engine.shutdown().await;
}

async fn a_rollout_takes_every_field_refuses_unknown_ones_and_runs_again_after_it_ended(backend: Backend) {
    let engine = open_with_probes(&backend).await;
    let stages = r#""stages": [{"percent": 50, "hold_ms": 3600000, "min_finished": 10}]"#;
    let body =
        |rest: &str| format!(r#"{{"workflow": "probe", "candidate": "2.0.0", "stable": "1.0.0", {stages}{rest}}}"#);
    // Typos are refused, naming the field and the nearest known name.
    for (typo, says) in [
        (
            r#", "gates": {"max_error_rate_increase": 0.01, "min_sucess_rate": 0.99}"#,
            "gates.min_sucess_rate: unknown field `min_sucess_rate`, expected one of",
        ),
        (
            r#", "nmae": "x", "gates": {"min_success_rate": 0.9}"#,
            "did you mean `name`?",
        ),
        (
            r#", "on_rollback": "move_bak", "gates": {"min_success_rate": 0.9}"#,
            "did you mean `move_back`?",
        ),
        (
            r#", "gates": {"measures": [{"measure": "cost", "max_incrase": 0.2}]}"#,
            "did you mean `max_increase`?",
        ),
    ] {
        let (status, error) = post_json(&engine, "/v1/rollouts", &body(typo)).await;
        assert_eq!(status, 422, "{error}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(says) && message.contains("(did you mean `"), "{error}");
    }
    // A gate on a measure neither version declares, or with no bound: refused, naming it.
    for (gates, says) in [
        (
            r#", "gates": {"measures": [{"measure": "cost", "max_increase": 0.2}]}"#,
            "gates.measures[0] ('cost'): the candidate 2.0.0 declares no measure 'cost' (it declares: none)",
        ),
        (
            r#", "gates": {"measures": [{"measure": "cost"}]}"#,
            "gates.measures[0] ('cost'): set at least one bound",
        ),
    ] {
        let (status, error) = post_json(&engine, "/v1/rollouts", &body(gates)).await;
        assert_eq!(status, 400, "{error}");
        assert!(error["error"].as_str().unwrap().contains(says), "{error}");
    }
    // No gate: refused unless asked for.
    let (status, error) = post_json(&engine, "/v1/rollouts", &body("")).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("has no gate"), "{error}");
    assert!(engine.rollouts().is_empty(), "nothing started");
    // Every field of the definition is taken.
    let (status, started) = post_json(
        &engine,
        "/v1/rollouts",
        &body(r#", "name": "probe-canary", "on_rollback": "move_back", "unwatched": true"#),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        (&started["name"], &started["on_rollback"], &started["unwatched"]),
        (
            &Value::from("probe-canary"),
            &Value::from("move_back"),
            &Value::from(true)
        )
    );
    // Neither version can be drained under it: the rollout would be stranded.
    for version in ["2.0.0", "1.0.0"] {
        let (status, error) = post(&engine, &format!("/v1/versions/probe/{version}/drain"), None).await;
        assert_eq!(status, 409, "{error}");
        let message = error["error"].as_str().unwrap();
        assert!(
            message.contains("rollout 'probe-canary'") && message.contains("strata rollout rollback probe-canary"),
            "{message}"
        );
    }
    assert_eq!(
        engine.version("probe", "2.0.0").unwrap().status,
        strata::VersionStatus::Active
    );
    let (status, _) = post(&engine, "/v1/rollouts/probe-canary/rollback", None).await;
    assert_eq!(status, 200);
    // The same candidate, rolled out again twice under its default name: each run has its own.
    let gated = body(r#", "gates": {"max_consecutive_failures": 3}"#);
    let mut names = Vec::new();
    for _ in 0..2 {
        let (status, started) = post_json(&engine, "/v1/rollouts", &gated).await;
        assert_eq!(status, 200, "{started}");
        let name = started["name"].as_str().unwrap().to_string();
        let (status, _) = post(&engine, &format!("/v1/rollouts/{name}/rollback"), None).await;
        assert_eq!(status, 200);
        names.push(name);
    }
    let (status, error) = post_json(
        &engine,
        "/v1/rollouts",
        &body(r#", "name": "probe-canary", "gates": {"max_consecutive_failures": 3}"#),
    )
    .await;
    assert_eq!(status, 409, "a name given explicitly must be free: {error}");
    let (_, listed) = get(&engine, "/v1/rollouts?workflow=probe").await;
    let mut listed: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|rollout| rollout["name"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(names, ["probe@2.0.0", "probe@2.0.0~2"]);
    assert_eq!(listed, ["probe-canary", "probe@2.0.0", "probe@2.0.0~2"]);
    engine.shutdown().await;
}

async fn a_rollout_is_started_watched_paused_and_its_rollback_shows_the_gate_that_fired(backend: Backend) {
    use common::probe::{self, Probe};
    let engine = open_with_probes(&backend).await;
    let rollout = r#"{"workflow": "probe", "candidate": "2.0.0", "stable": "1.0.0",
        "stages": [{"percent": 50, "hold_ms": 3600000, "min_finished": 10},
                   {"percent": 100, "hold_ms": 3600000, "min_finished": 10}],
        "gates": {"max_error_rate_increase": 0.1}}"#;
    let (status, started) = post_json(&engine, "/v1/rollouts", rollout).await;
    assert_eq!(status, 200, "{started}");
    let name = started["name"].as_str().unwrap().to_string();
    assert_eq!(
        (started["status"].as_str(), started["candidate_percent"].as_f64()),
        (Some("running"), Some(50.0))
    );
    let (status, error) = post_json(&engine, "/v1/rollouts", rollout).await;
    assert_eq!(status, 409, "one active rollout per workflow: {error}");
    let (status, error) = post_json(
        &engine,
        "/v1/rollouts",
        &rollout.replace("\"percent\": 50", "\"percent\": 150"),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = post_json(&engine, "/v1/rollouts", "{\"workflow\": 3}").await;
    assert_eq!(status, 422, "{error}");

    let (status, paused) = post(&engine, &format!("/v1/rollouts/{name}/pause"), None).await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")), "{paused}");
    let (status, resumed) = post(&engine, &format!("/v1/rollouts/{name}/resume"), None).await;
    assert_eq!(
        (status, resumed["status"].as_str()),
        (200, Some("running")),
        "{resumed}"
    );
    let (status, error) = post(&engine, &format!("/v1/rollouts/{name}/promote-now"), None).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("unknown value `promote-now`"),
        "{error}"
    );
    let (status, error) = get(&engine, "/v1/rollouts/nothing@1.0.0").await;
    assert_eq!(status, 404, "{error}");

    // The faulty candidate fails every second instance: its error rate gate fires.
    let mut n = 0;
    loop {
        let (_, watched) = get(&engine, &format!("/v1/rollouts/{name}")).await;
        if watched["status"] == "rolled_back" {
            let last = watched["history"].as_array().unwrap().last().unwrap().clone();
            assert_eq!(
                (&last["kind"], &last["gate"]),
                (&Value::from("rolled_back"), &Value::from("max_error_rate_increase")),
                "{watched}"
            );
            assert!(
                last["reason"].as_str().is_some_and(|reason| !reason.is_empty()),
                "{watched}"
            );
            assert!(last["candidate"]["finished"].is_u64(), "{watched}");
            assert_eq!(watched["figures"], Value::Null, "no figures once it is over");
            break;
        }
        assert_eq!(watched["status"], "running", "{watched}");
        assert!(
            watched["figures"]["candidate"]["finished"].is_u64(),
            "figures while it runs: {watched}"
        );
        assert!(n < 2_000, "never rolled back: {watched}");
        let mut ids = Vec::new();
        for _ in 0..20 {
            let options = StartOptions::new().routing_key(format!("customer-{n}"));
            ids.push(
                engine
                    .start_with(probe::WORKFLOW, &Probe { n, wait: false }, options)
                    .await
                    .unwrap(),
            );
            n += 1;
        }
        for id in ids {
            let _ = outcome_within(&engine, id).await;
        }
        engine.evaluate_rollouts().await.unwrap();
    }
    let (_, listed) = get(&engine, "/v1/rollouts?workflow=probe").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    engine.shutdown().await;
}

async fn moves_are_planned_then_applied_and_migrations_report_progress(backend: Backend) {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let engine = backend
        .builder()
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_2("2.0.0"))
        .migration(tally::migration(calls))
        .admin(LOOPBACK.parse().unwrap())
        .open()
        .await
        .unwrap();
    let ids = tally::start_waiting(&engine, 1..4, StartOptions::new().version("=1.0.0")).await;
    let body = r#"{"workflow": "tally", "target": "2.0.0", "from_version": "1.0.0"}"#;
    let (status, plan) = post_json(&engine, "/v1/moves/plan", body).await;
    assert_eq!(status, 200, "{plan}");
    let checks = plan["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{plan}");
    assert!(checks.iter().all(|check| check["refused"].is_null()), "{plan}");
    assert_eq!(
        engine.instance(ids[0]).unwrap().version().to_string(),
        "1.0.0",
        "a plan moves nothing"
    );
    let (status, report) = post_json(&engine, "/v1/moves", body).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["moved"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(engine.instance(ids[0]).unwrap().version().to_string(), "2.0.0");
    let (status, error) = post_json(&engine, "/v1/moves/plan", r#"{"workflow": "tally", "target": "two"}"#).await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = post_json(&engine, "/v1/moves/plan", r#"{"workflow": "tally", "target": "9.0.0"}"#).await;
    assert_eq!(status, 404, "an unknown target: {error}");

    let (status, started) = post_json(&engine, "/v1/migrations", r#"{"workflow": "tally", "batch_size": 10}"#).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["workflow"], "tally");
    let (status, progress) = get(&engine, "/v1/migrations/tally").await;
    assert_eq!(status, 200, "{progress}");
    assert!(
        ["running", "finished"].contains(&progress["state"].as_str().unwrap()),
        "{progress}"
    );
    let (status, _) = post(&engine, "/v1/migrations/tally/pause", None).await;
    assert_eq!(status, 200);
    let (status, error) = post(&engine, "/v1/migrations/tally/rewind", None).await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = get(&engine, "/v1/migrations/nothing").await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = post_json(&engine, "/v1/migrations", r#"{"workflow": "nothing"}"#).await;
    assert_eq!(status, 404, "{error}");
    engine.shutdown().await;
}

async fn cancelled_instances_are_planned_then_revived_and_the_version_counts_them(backend: Backend) {
    let engine = open(&backend, None).await;
    let ids = tally::start_waiting(&engine, 1..4, StartOptions::new()).await;
    for id in &ids[..2] {
        let (status, _) = post(&engine, &format!("/v1/instances/{id}/cancel"), None).await;
        assert_eq!(status, 200);
    }
    let body = r#"{"workflow": "tally", "status": "cancelled", "batch_size": 1}"#;
    let (status, plan) = post_json(&engine, "/v1/revivals/plan", body).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        (plan["revivable"].as_u64(), plan["refused"].as_u64()),
        (Some(2), Some(0)),
        "{plan}"
    );
    let checks = plan["checks"].as_array().unwrap();
    assert_eq!(checks[0]["id"].as_u64(), Some(ids[0].0));
    assert_eq!(
        (checks[0]["status"].as_str(), checks[0]["target"].as_str()),
        (Some("cancelled"), Some("tally@1.0.0"))
    );
    assert!(
        checks[0]["resumes_at"].is_string() && checks[0]["refused"].is_null(),
        "{plan}"
    );
    assert_eq!(
        engine.instance(ids[0]).unwrap().status,
        InstanceStatus::Cancelled,
        "a plan revives nothing"
    );

    // A live one chosen by id is refused with why.
    let live = format!(r#"{{"workflow": "tally", "ids": [{}]}}"#, ids[2]);
    let (status, plan) = post_json(&engine, "/v1/revivals/plan", &live).await;
    assert_eq!(status, 200, "{plan}");
    assert!(
        plan["checks"][0]["refused"]
            .as_str()
            .is_some_and(|why| why.contains("only failed and cancelled")),
        "{plan}"
    );

    let (status, report) = post_json(&engine, "/v1/revivals", body).await;
    assert_eq!(status, 200, "{report}");
    let revived: Vec<u64> = report["revived"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(revived, [ids[0].0, ids[1].0], "{report}");
    assert_eq!(report["undrained"], serde_json::json!([]));
    let (status, version) = get(&engine, "/v1/versions/tally/1.0.0").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            version["revived"].as_u64(),
            version["cancelled"].as_u64(),
            version["started"].as_u64()
        ),
        (Some(2), Some(2), Some(3)),
        "the cancellations stay counted, and the revivals are counted apart: {version}"
    );

    for (body, why) in [
        (
            r#"{"workflow": "tally", "status": "completed"}"#,
            "only failed and cancelled",
        ),
        (r#"{"workflow": "tally", "target": "two"}"#, "semantic version"),
        (r#"{"workflow": "tally", "reason": "x"}"#, "reason"),
    ] {
        let (status, error) = post_json(&engine, "/v1/revivals/plan", body).await;
        assert_eq!(status, if why == "reason" { 422 } else { 400 }, "{body}: {error}");
        assert!(
            error["error"].as_str().is_some_and(|text| text.contains(why)),
            "{body}: {error}"
        );
    }
    let (status, error) = post_json(&engine, "/v1/revivals", r#"{"workflow": "tally", "target": "9.0.0"}"#).await;
    assert_eq!(status, 404, "an unknown target: {error}");
    engine.shutdown().await;
}

async fn workers_routing_in_force_schedules_and_quarantined_records_are_read(backend: Backend) {
    let engine = open_two_tallies(&backend).await;
    let (status, workers) = get(&engine, "/v1/workers").await;
    assert_eq!(status, 200, "{workers}");
    let me = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|worker| worker["id"] == engine.worker_id().as_str())
        .unwrap_or_else(|| panic!("this worker is listed: {workers}"));
    assert_eq!(me["alive"], true);
    assert_eq!(me["versions"], serde_json::json!(["tally@1.0.0", "tally@1.1.0"]));

    let config = "[workflows.tally]\ndefault = \"=1.0.0\"\n\n[[schedules]]\nname = \"hourly\"\nworkflow = \"tally\"\ncron = \"0 * * * *\"\ninput = 1\n";
    engine.apply_config("strata.toml", config).await.unwrap();
    let spec = strata::RolloutSpec::new(tally::WORKFLOW, Version::new(1, 1, 0), Version::new(1, 0, 0))
        .stage(strata::Stage {
            percent: 25.0,
            hold_ms: 600_000,
            min_finished: 100,
            shadow: false,
        })
        .gates(strata::Gates {
            max_consecutive_failures: Some(5),
            ..strata::Gates::default()
        });
    engine.start_rollout(spec).await.unwrap();
    tally::start_waiting(&engine, 1..3, StartOptions::new().version("=1.0.0")).await;
    let (status, routing) = get(&engine, "/v1/routing").await;
    assert_eq!(status, 200, "{routing}");
    let tally_rules = &routing["workflows"][0];
    assert_eq!(
        (tally_rules["workflow"].as_str(), tally_rules["default"].as_str()),
        (Some("tally"), Some("=1.0.0"))
    );
    assert_eq!(
        tally_rules["rules"][0]["candidate"], "1.1.0",
        "the rollout's stage is in force: {routing}"
    );
    assert_eq!(tally_rules["rules"][0]["percent"], 25.0);
    let requested: Vec<&Value> = routing["starts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|starts| starts["reason"] == "requested")
        .collect();
    assert_eq!(
        (requested.len(), requested[0]["count"].as_u64()),
        (1, Some(2)),
        "{routing}"
    );
    engine.rollback_rollout("tally@1.1.0").await.unwrap();
    let (_, routing) = get(&engine, "/v1/routing").await;
    assert_eq!(
        routing["workflows"][0]["rules"],
        serde_json::json!([]),
        "a rolled-back rule is gone: {routing}"
    );

    let (status, schedules) = get(&engine, "/v1/schedules").await;
    assert_eq!(status, 200, "{schedules}");
    let hourly = &schedules[0];
    assert_eq!(
        (hourly["name"].as_str(), hourly["expression"].as_str()),
        (Some("hourly"), Some("0 * * * *"))
    );
    let next = hourly["next_fire_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        next > now && next <= now + 3_600_000 && next % 3_600_000 == 0,
        "the next full hour: {next}"
    );

    let (status, quarantined) = get(&engine, "/v1/quarantined").await;
    assert_eq!((status, quarantined), (200, serde_json::json!([])));
    engine.shutdown().await;
}

async fn an_instance_is_started_with_json_input_on_a_required_version_and_bad_starts_say_why(backend: Backend) {
    let engine = open_two_tallies(&backend).await;
    let (status, started) = post_json(
        &engine,
        "/v1/instances",
        r#"{"workflow": "tally", "input": 7, "routing_key": "customer-7", "version": "=1.0.0"}"#,
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        (started["workflow"].as_str(), started["version"].as_str()),
        (Some("tally"), Some("1.0.0"))
    );
    let id = strata::InstanceId(started["id"].as_u64().unwrap());
    let info = engine.instance(id).unwrap();
    assert_eq!(info.record.routing_key.as_deref(), Some("customer-7"));
    let (status, routed) = post_json(&engine, "/v1/instances", r#"{"workflow": "tally", "input": 1}"#).await;
    assert_eq!(
        (status, routed["version"].as_str()),
        (200, Some("1.1.0")),
        "routed to the newest: {routed}"
    );

    for (body, expected, why) in [
        (r#"{"workflow": "parcel", "input": 1}"#, 404, "parcel"),
        (r#"{"workflow": "tally", "input": "seven"}"#, 400, "input"),
        (
            r#"{"workflow": "tally", "input": 1, "version": "=9.0.0"}"#,
            400,
            "9.0.0",
        ),
        (
            r#"{"workflow": "tally", "input": 1, "verison": "=1.0.0"}"#,
            422,
            "version",
        ),
    ] {
        let (status, error) = post_json(&engine, "/v1/instances", body).await;
        assert_eq!(status, expected, "{body}: {error}");
        assert!(
            error["error"].as_str().is_some_and(|text| text.contains(why)),
            "{body}: {error}"
        );
    }
    engine.shutdown().await;
}

async fn the_openapi_document_describes_every_route_with_its_parameters_and_answers(backend: Backend) {
    let engine = open(&backend, None).await;
    let (status, document) = get(&engine, "/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "Strata admin API");
    let mut paths: Vec<&str> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/",
            "/dashboard.css",
            "/dashboard.js",
            "/healthz",
            "/metrics",
            "/readyz",
            "/v1/config",
            "/v1/config/check",
            "/v1/config/history",
            "/v1/config/restore/{generation}",
            "/v1/events",
            "/v1/instances",
            "/v1/instances/{id}",
            "/v1/instances/{id}/cancel",
            "/v1/instances/{id}/history",
            "/v1/instances/{id}/signals/{name}",
            "/v1/instances/{id}/terminate",
            "/v1/migrations",
            "/v1/migrations/{workflow}",
            "/v1/migrations/{workflow}/{action}",
            "/v1/moves",
            "/v1/moves/plan",
            "/v1/openapi.json",
            "/v1/quarantined",
            "/v1/revivals",
            "/v1/revivals/plan",
            "/v1/rollouts",
            "/v1/rollouts/{name}",
            "/v1/rollouts/{name}/shadows",
            "/v1/rollouts/{name}/{action}",
            "/v1/routing",
            "/v1/schedules",
            "/v1/versions",
            "/v1/versions/{workflow}/{version}",
            "/v1/versions/{workflow}/{version}/metrics",
            "/v1/versions/{workflow}/{version}/{action}",
            "/v1/workers",
        ]
    );
    // Every path parameter of every operation is declared, and every operation answers 200.
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(
                operation["responses"]["200"].is_object(),
                "{method} {path} documents its 200"
            );
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|parameters| {
                    parameters
                        .iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            for segment in path.split('/').filter(|segment| segment.starts_with('{')) {
                let name = segment.trim_matches(|letter| letter == '{' || letter == '}');
                assert!(declared.contains(&name), "{method} {path} declares {name}");
            }
        }
    }
    assert!(document["paths"]["/v1/rollouts"]["post"]["requestBody"].is_object());
    assert_eq!(
        document["paths"]["/v1/versions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["items"]
            ["$ref"],
        "#/components/schemas/VersionView"
    );
    let version_fields = document["components"]["schemas"]["VersionView"]["properties"]
        .as_object()
        .unwrap();
    for field in [
        "status",
        "live",
        "oldest_live",
        "safe_to_remove",
        "workers",
        "accepts_starts",
    ] {
        assert!(version_fields.contains_key(field), "VersionView documents {field}");
    }
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    engine.shutdown().await;
}
