//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`): the
//! versions table shows the right counts and changes as instances finish, without a reload;
//! a rolled-back rollout shows the gate that fired; config history shows its diffs; an instance
//! is found by id and has a page of its own (`#/instances/42`: status, timeline, history,
//! state) from which a failed one is revived and a live one terminated; the instance list pages and shows why instances
//! failed. A screenshot of the page is saved (the README's). A page of another origin open in the
//! same browser cannot change anything through the API.

mod common;

use std::time::Duration;
use strata::prelude::*;

use common::browser::Browser;
use common::tally;
use common::*;
use strata::rollout::RolloutStatus;
use strata::{Engine, Gates, Next, RolloutSpec, Stage, StartOptions, StepCtx, StepResult, Version, WorkflowVersion};

async fn charge(_ctx: StepCtx, _attempt: &mut u64) -> StepResult<u64> {
    Ok(Next::complete(1))
}

async fn refuse(_ctx: StepCtx, _attempt: &mut u64) -> StepResult<u64> {
    Ok(Next::fail("the new payment provider refuses every charge"))
}

/// `payment` 1.0.0 completes.
fn payment() -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("payment", "1.0.0")
        .init(|n| n)
        .step("charge", charge)
}

/// `payment` 2.0.0 fails every instance.
fn failing_payment() -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("payment", "2.0.0")
        .init(|n| n)
        .step("charge", refuse)
}

async fn quote(ctx: StepCtx, n: &mut u64) -> StepResult<u64> {
    // 2.0.0 costs three times what 1.0.0 does.
    ctx.record("cost", if ctx.version().major == 2 { 3.0 } else { 1.0 });
    Ok(Next::complete(*n))
}

/// `quote`: one step recording its cost.
fn priced(version: &str) -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("quote", version)
        .init(|n| n)
        .measure("cost", strata::MeasureKind::Summed)
        .step("quote", quote)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_counts_a_rolled_back_gate_config_diffs_and_instances() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .data_dir(dir.path())
        .admin("127.0.0.1:0".parse().unwrap())
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_1("1.1.0"))
        .register(payment())
        .register(failing_payment())
        .register(priced("1.0.0"))
        .register(priced("2.0.0"))
        .open()
        .await
        .unwrap();
    let ids = tally::start_waiting(&engine, 0..3, StartOptions::new().version("=1.0.0")).await;
    tally::start_waiting(&engine, 3..4, StartOptions::new().version("=1.1.0")).await;
    engine
        .apply_config("strata.toml", "[workflows.tally]\ndefault = \"=1.0.0\"\n")
        .await
        .unwrap();
    engine
        .apply_config("strata.toml", "[workflows.tally]\ndefault = \"=1.1.0\"\n")
        .await
        .unwrap();
    let browser = Browser::start().await;
    let page = format!("http://{}/", engine.admin_address().unwrap());
    browser.goto(&page).await;

    let live = r#"tr[data-version="tally@1.0.0"] [data-field="live"]"#;
    browser
        .wait_for_text(live, "3 live instances", |text| text == "3")
        .await;
    assert_eq!(
        browser
            .text(r#"tr[data-version="tally@1.1.0"] [data-field="live"]"#)
            .await
            .as_deref(),
        Some("1")
    );
    // Instances finish: the count follows without a reload.
    engine.drain(tally::WORKFLOW, "1.0.0").await.unwrap();
    browser
        .wait_for_text(
            r#"tr[data-version="tally@1.0.0"] [data-field="status"]"#,
            "draining",
            |text| text == "draining",
        )
        .await;
    engine.signal(ids[0], tally::GO, &()).await.unwrap();
    outcome_within(&engine, ids[0]).await;
    browser
        .wait_for_text(live, "2 live instances", |text| text == "2")
        .await;
    for id in &ids[1..] {
        engine.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&engine, *id).await;
    }
    browser
        .wait_for_text(live, "no live instance", |text| text == "0")
        .await;
    browser
        .wait_for_text(
            r#"tr[data-version="tally@1.0.0"] [data-field="safe_to_remove"]"#,
            "safe to remove",
            |text| text == "yes",
        )
        .await;

    // A rollout whose candidate fails every instance: the consecutive-failures gate fires.
    let gates = Gates {
        max_consecutive_failures: Some(2),
        ..Gates::default()
    };
    let spec = RolloutSpec::new("payment", Version::new(2, 0, 0), Version::new(1, 0, 0))
        .stage(Stage {
            percent: 100.0,
            hold_ms: 600_000,
            min_finished: 100,
            shadow: false,
        })
        .gates(gates);
    engine.start_rollout(spec).await.unwrap();
    let name = "payment@2.0.0";
    browser
        .wait_for_text(
            &format!(r#"[data-rollout="{name}"] [data-field="status"]"#),
            "running",
            |text| text == "running",
        )
        .await;
    while engine.rollout(name).unwrap().status == RolloutStatus::Running {
        let id = engine.start("payment", &1u64).await.unwrap();
        outcome_within(&engine, id).await;
        engine.evaluate_rollouts().await.unwrap();
    }
    browser
        .wait_for_text(
            &format!(r#"[data-rollout="{name}"] [data-field="status"]"#),
            "rolled back",
            |text| text == "rolled back",
        )
        .await;
    let fired = browser
        .wait_for_text(
            &format!(r#"[data-rollout="{name}"] [data-field="rolled-back"]"#),
            "the gate",
            |_| true,
        )
        .await;
    assert!(
        fired.starts_with("Rolled back by consecutive failures gate:"),
        "{fired}"
    );
    let gate = browser
        .text(&format!(
            r#"[data-rollout="{name}"] tr[data-gate="max_consecutive_failures"]"#
        ))
        .await
        .unwrap();
    assert!(gate.contains("fired") && gate.contains("≤ 2"), "{gate}");
    let figure = gate.split('\t').nth(2).unwrap_or_default().trim().to_string();
    assert_eq!(figure, "2", "the figure the gate compared when it fired: {gate}");

    // A rollout gated on a measure: its gate row compares both versions' cost per instance,
    // and each version's row shows its measure.
    let spec = RolloutSpec::new("quote", Version::new(2, 0, 0), Version::new(1, 0, 0))
        .stage(Stage {
            percent: 50.0,
            hold_ms: 600_000,
            min_finished: 2,
            shadow: false,
        })
        .gates(Gates {
            measures: vec![strata::MeasureGate::new("cost").max_increase(0.5).min_sample(2)],
            ..Gates::default()
        });
    engine.start_rollout(spec).await.unwrap();
    let name = "quote@2.0.0";
    for version in ["=1.0.0", "=2.0.0"] {
        for n in 0..2u64 {
            let id = engine
                .start_with("quote", &n, StartOptions::new().version(version))
                .await
                .unwrap();
            outcome_within(&engine, id).await;
        }
    }
    engine.evaluate_rollouts().await.unwrap();
    assert_eq!(engine.rollout(name).unwrap().status, RolloutStatus::RolledBack);
    let gate_row = format!(r#"[data-rollout="{name}"] tr[data-gate="measures[cost].max_increase"]"#);
    let gate = browser
        .wait_for_text(&gate_row, "the cost gate fired", |text| text.contains("fired"))
        .await;
    assert!(
        gate.contains("cost (max increase)") && gate.contains("3 (sample 2) vs stable 1 (sample 2)"),
        "{gate}"
    );
    let measures = browser
        .wait_for_text(
            r#"tr[data-version="quote@2.0.0"] [data-field="measures"]"#,
            "the version's cost",
            |text| text != "-",
        )
        .await;
    assert_eq!(measures, "cost 3 per instance");

    // The same candidate again, in a shadow stage: its pairs are listed under the rollout.
    let spec = RolloutSpec::new("quote", Version::new(2, 0, 0), Version::new(1, 0, 0))
        .stage(Stage::shadow(100.0, Duration::from_secs(600), 50))
        .stage(Stage::new(50.0, Duration::from_secs(600), 2))
        .gates(Gates {
            max_shadow_mismatch: Some(0.5),
            ..Gates::default()
        });
    let name = engine.start_rollout(spec).await.unwrap();
    for n in 0..2u64 {
        let id = engine
            .start_with("quote", &n, StartOptions::new().routing_key(format!("k-{n}")))
            .await
            .unwrap();
        outcome_within(&engine, id).await;
    }
    let pairs = browser
        .wait_for_text(
            &format!(r#"[data-rollout="{name}"] [data-field="shadow-pairs"]"#),
            "the shadow pairs",
            |text| text.starts_with("0 of 2 shadow pairs differ"),
        )
        .await;
    assert!(pairs.contains("match"), "{pairs}");

    // Config history with its diffs, newest first.
    let generation = browser
        .wait_for_text(r#"[data-field="generation"]"#, "the generation", |_| true)
        .await;
    assert!(generation.starts_with("Generation 2 in force"), "{generation}");
    let diff = browser.text(r#"[data-generation="2"] pre.diff"#).await.unwrap();
    assert_eq!(diff, "- default = \"=1.0.0\"\n+ default = \"=1.1.0\"");

    // An instance found by its id opens its page: status, history, timeline and state.
    browser.submit("#search-id", &ids[0].0.to_string()).await;
    browser
        .wait_for_text(
            &format!(r#"[data-instance-page="{}"]"#, ids[0].0),
            "the instance's page",
            |_| true,
        )
        .await;
    assert_eq!(
        browser.text(r#"#instance-body [data-field="status"]"#).await.as_deref(),
        Some("completed")
    );
    let history = browser.text(r#"#instance-body [data-field="history"]"#).await.unwrap();
    assert!(
        history.contains("started") && history.contains("signal 'go'"),
        "{history}"
    );
    assert!(browser.text(r#"#instance-body [data-field="state"]"#).await.is_some());

    let screenshot = browser.screenshot().await;
    assert_eq!(&screenshot[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let saved = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&saved, &screenshot).unwrap();
    println!("dashboard screenshot: {}", saved.display());
    drop(browser);
    tokio::time::timeout(Duration::from_secs(30), engine.shutdown())
        .await
        .expect("the engine stops with the dashboard's event stream open");
}

/// Serves `page` at every path of a loopback port of its own: another origin than the engine's.
async fn serve_page_elsewhere(page: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || {
        let page = page.clone();
        async move { axum::response::Html(page) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_cannot_change_anything_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .data_dir(dir.path())
        .admin("127.0.0.1:0".parse().unwrap())
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let id = tally::start_waiting(&engine, [1], StartOptions::new()).await[0];
    let api = format!("http://{}", engine.admin_address().unwrap());
    // What a page the operator happens to visit could send: a form posted as text (no CORS
    // preflight) and a `no-cors` fetch, both at changes that take no JSON body.
    let attacker = serve_page_elsewhere(format!(
        r#"<!doctype html><form id="attack" method="post" enctype="text/plain" action="{api}/v1/instances/{}/cancel">
<input name="a" value="b"></form>"#,
        id.0
    ))
    .await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{attacker}/")).await;
    let fetched = browser
        .execute(&format!(
            r#"return fetch("{api}/v1/versions/tally/1.0.0/drain", {{ method: "POST", mode: "no-cors" }})
                .then(() => "sent", (error) => "not sent: " + error);"#
        ))
        .await;
    assert_eq!(
        fetched, "sent",
        "the browser sent the request (its answer is opaque to the page)"
    );
    assert_eq!(
        engine.version(tally::WORKFLOW, "1.0.0").unwrap().status,
        strata::VersionStatus::Active,
        "a no-cors fetch from another origin drained the version"
    );
    browser
        .execute(r#"document.getElementById("attack").submit(); return true;"#)
        .await;
    // The form's answer replaces the page: the server's refusal, once it has answered.
    let answer = browser
        .wait_for_text("body", "the server's answer to the form", |text| text.contains("error"))
        .await;
    assert!(answer.contains("another origin"), "{answer}");
    assert!(
        !engine.instance(id).unwrap().status.is_terminal(),
        "a form posted from another origin cancelled the instance"
    );
    // The dashboard's own origin may.
    browser.goto(&format!("{api}/")).await;
    let drained = browser
        .execute(&format!(
            r#"return fetch("{api}/v1/versions/tally/1.0.0/drain", {{ method: "POST" }}).then((answer) => answer.status);"#
        ))
        .await;
    assert_eq!(drained, 200);
    drop(browser);
    engine.shutdown().await;
}

async fn declined(_ctx: StepCtx, _attempt: &mut u64) -> StepResult<u64> {
    Err(strata::StepError::permanent("card declined by the old provider"))
}

/// `refund` 1.0.0 fails every instance; 1.1.0 (the fix) completes.
fn refund(version: &str) -> WorkflowVersion<u64, u64, u64> {
    let started = WorkflowVersion::new("refund", version).init(|n| n);
    if version == "1.0.0" {
        started.step("pay_back", declined)
    } else {
        started.step("pay_back", charge)
    }
}

/// How many instances the page's list shows.
async fn listed_rows(browser: &Browser) -> serde_json::Value {
    browser
        .execute(r##"return document.querySelectorAll("#instances-body tbody tr").length;"##)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_instance_is_investigated_on_its_page_and_revived_on_the_fix_and_lists_page() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .data_dir(dir.path())
        .admin("127.0.0.1:0".parse().unwrap())
        .register(refund("1.0.0"))
        .open()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..55u64 {
        let id = engine
            .start_with("refund", &n, StartOptions::new().version("=1.0.0"))
            .await
            .unwrap();
        ids.push(id);
    }
    for id in &ids {
        outcome_within(&engine, *id).await;
    }
    engine.register(refund("1.1.0")).unwrap();
    let browser = Browser::start().await;
    let base = format!("http://{}/", engine.admin_address().unwrap());
    let failed = ids[3];
    browser.goto(&format!("{base}#/instances/{}", failed.0)).await;
    let status = browser
        .wait_for_text(r#"#instance-body [data-field="status"]"#, "the status", |_| true)
        .await;
    assert_eq!(status, "failed");
    let failure = browser.text(r#"#instance-body [data-field="failure"]"#).await.unwrap();
    assert!(failure.contains("card declined by the old provider"), "{failure}");
    let bars = browser
        .execute(r#"return document.querySelectorAll('[data-field="timeline"] rect.failed').length;"#)
        .await;
    assert_eq!(bars, 1, "the failed attempt is a bar on the timeline");

    // The dry run, then the revival, on the fix.
    let choose = r#"const select = document.querySelector('[data-field="revive-target"]');
        select.value = "1.1.0"; document.querySelector('[data-action="plan-revival"]').click(); return true;"#;
    browser.execute(choose).await;
    let planned = browser
        .wait_for_text(r#"[data-field="action-result"]"#, "the plan", |text| !text.is_empty())
        .await;
    assert_eq!(planned, "would be revived on refund@1.1.0 at step pay_back");
    assert_eq!(
        engine.instance(failed).unwrap().status,
        strata::InstanceStatus::Failed,
        "a plan changes nothing"
    );
    browser
        .execute(r#"document.querySelector('[data-action="revive"]').click(); return true;"#)
        .await;
    browser
        .wait_for_text(
            r#"#instance-body [data-field="status"]"#,
            "completed on the fix",
            |text| text == "completed",
        )
        .await;
    let heading = browser.text("[data-instance-page]").await.unwrap();
    assert!(heading.ends_with("refund@1.1.0"), "{heading}");
    let history = browser.text(r#"#instance-body [data-field="history"]"#).await.unwrap();
    assert!(
        history.contains("revived") && history.contains("1.0.0 → 1.1.0"),
        "{history}"
    );
    assert_eq!(engine.version("refund", "1.1.0").unwrap().counters.revived, 1);
    let saved = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("instance-page.png");
    std::fs::write(&saved, browser.screenshot().await).unwrap();
    println!("instance page screenshot: {}", saved.display());

    // The list: 50 a page, the failure reason beside each, the next page and back.
    browser.goto(&base).await;
    browser
        .execute(
            r#"document.getElementById("search-workflow").value = "refund";
            document.getElementById("search").requestSubmit(); return true;"#,
        )
        .await;
    browser
        .wait_for_text(r#"[data-field="page"]"#, "the first page", |text| text == "page 1")
        .await;
    let rows = listed_rows(&browser).await;
    assert_eq!(rows, 50);
    let first = browser
        .execute(r##"return document.querySelector("#instances-body tbody tr").getAttribute("data-instance");"##)
        .await;
    assert_eq!(first, ids[54].0.to_string(), "newest first");
    let reason = browser
        .text(&format!(r#"tr[data-instance="{}"] [data-field="reason"]"#, ids[54].0))
        .await
        .unwrap();
    assert!(reason.contains("card declined"), "{reason}");
    browser
        .execute(r#"document.getElementById("page-next").click(); return true;"#)
        .await;
    browser
        .wait_for_text(r#"[data-field="page"]"#, "the last page", |text| {
            text == "page 2 (the last)"
        })
        .await;
    let rows = listed_rows(&browser).await;
    assert_eq!(rows, 5);
    browser
        .execute(r#"document.getElementById("page-previous").click(); return true;"#)
        .await;
    browser
        .wait_for_text(r#"[data-field="page"]"#, "the first page again", |text| {
            text == "page 1"
        })
        .await;
    drop(browser);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_drained_and_rollouts_paused_and_rolled_back_from_the_page_with_the_admin_token() {
    const ADMIN: &str = "admin-secret-0123456789";
    const READER: &str = "read-secret-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .data_dir(dir.path())
        .admin("127.0.0.1:0".parse().unwrap())
        .admin_token(ADMIN)
        .admin_read_token(READER)
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_1("1.1.0"))
        .register(payment())
        .register(failing_payment())
        .open()
        .await
        .unwrap();
    let browser = Browser::start().await;
    browser
        .goto(&format!("http://{}/", engine.admin_address().unwrap()))
        .await;
    let status = r#"tr[data-version="tally@1.0.0"] [data-field="status"]"#;
    let drain = r#"tr[data-version="tally@1.0.0"] [data-action="drain"]"#;
    let click = |selector: &str| {
        format!(
            "document.querySelector({}).click(); return true;",
            serde_json::json!(selector)
        )
    };

    // The read-only token may look, not change: the refusal shows, the version stays active.
    browser.submit("#token", READER).await;
    browser
        .wait_for_text(status, "the version", |text| text == "active")
        .await;
    browser.execute(&click(drain)).await;
    browser
        .wait_for_text("#problem", "the refusal", |text| text.contains("admin token"))
        .await;
    // The refresh every action triggers (and any event's) does not wipe the refusal away.
    let after_refresh = browser
        .execute(r#"return refresh(ALL).then(() => document.getElementById("problem").textContent);"#)
        .await;
    assert!(
        after_refresh.as_str().is_some_and(|text| text.contains("admin token")),
        "the refusal is gone after a refresh: {after_refresh}"
    );
    let pressable = browser
        .execute(&format!(
            "return !document.querySelector({}).disabled;",
            serde_json::json!(drain)
        ))
        .await;
    assert_eq!(pressable, true, "a refused action's button may be pressed again");
    assert_eq!(
        engine.version(tally::WORKFLOW, "1.0.0").unwrap().status,
        strata::VersionStatus::Active
    );

    // The admin token drains it, and undoes the drain.
    browser.submit("#token", ADMIN).await;
    browser.execute(&click(drain)).await;
    browser.wait_for_text(status, "drained", |text| text == "drained").await;
    browser
        .execute(&click(r#"tr[data-version="tally@1.0.0"] [data-action="activate"]"#))
        .await;
    browser
        .wait_for_text(status, "active again", |text| text == "active")
        .await;

    // A rollout paused, resumed and rolled back.
    let spec = RolloutSpec::new("payment", Version::new(2, 0, 0), Version::new(1, 0, 0))
        .stage(Stage {
            percent: 50.0,
            hold_ms: 600_000,
            min_finished: 100,
            shadow: false,
        })
        .gates(Gates {
            max_consecutive_failures: Some(50),
            ..Gates::default()
        });
    engine.start_rollout(spec).await.unwrap();
    let name = "payment@2.0.0";
    let rollout_status = format!(r#"[data-rollout="{name}"] [data-field="status"]"#);
    let button = |action: &str| format!(r#"[data-rollout="{name}"] [data-action="{action}"]"#);
    browser
        .wait_for_text(&rollout_status, "running", |text| text == "running")
        .await;
    browser.execute(&click(&button("pause"))).await;
    browser
        .wait_for_text(&rollout_status, "paused", |text| text == "paused")
        .await;
    assert_eq!(engine.rollout(name).unwrap().status, RolloutStatus::Paused);
    browser.execute(&click(&button("resume"))).await;
    browser
        .wait_for_text(&rollout_status, "running again", |text| text == "running")
        .await;
    browser.execute(&click(&button("rollback"))).await;
    browser
        .wait_for_text(&rollout_status, "rolled back", |text| text == "rolled back")
        .await;
    let by = browser
        .wait_for_text(
            &format!(r#"[data-rollout="{name}"] [data-field="rolled-back"]"#),
            "why",
            |_| true,
        )
        .await;
    assert!(by.starts_with("Rolled back by an operator"), "{by}");
    assert_eq!(engine.rollout(name).unwrap().status, RolloutStatus::RolledBack);

    // An instance terminated from its page, with the reason typed beside the button.
    let waiting = tally::start_waiting(&engine, 1..2, StartOptions::new()).await[0];
    engine.signal(waiting, "nudge", &5u32).await.unwrap();
    browser
        .goto(&format!(
            "http://{}/#/instances/{}",
            engine.admin_address().unwrap(),
            waiting.0
        ))
        .await;
    browser
        .wait_for_text(r#"#instance-body [data-field="status"]"#, "the status", |text| {
            text == "waiting_signal"
        })
        .await;
    let pending = browser
        .text(r#"#instance-body [data-field="pending-signals"]"#)
        .await
        .unwrap();
    assert!(pending.starts_with("'nudge' #") && pending.ends_with(" 5"), "{pending}");
    browser
        .execute(
            r#"document.querySelector('[data-field="terminate-reason"]').value = "wrong customer";
            document.querySelector('[data-action="terminate"]').click(); return true;"#,
        )
        .await;
    browser
        .wait_for_text(r#"#instance-body [data-field="status"]"#, "cancelled", |text| {
            text == "cancelled"
        })
        .await;
    let history = browser.text(r#"#instance-body [data-field="history"]"#).await.unwrap();
    assert!(
        history.contains("terminated") && history.contains("wrong customer"),
        "{history}"
    );
    assert!(history.contains("never consumed: 'nudge' #"), "{history}");
    assert_eq!(
        engine.instance(waiting).unwrap().status,
        strata::InstanceStatus::Cancelled
    );
    drop(browser);
    engine.shutdown().await;
}
