//! Measures (issue #24): what steps record of their cost and quality, declared on the version,
//! committed with the step only from the attempt whose result the instance keeps, added to the
//! version's totals when the instance finishes — exactly, across restarts and across the workers
//! of a shared store — and rollout gates on them: a candidate that costs more than allowed, or
//! answers worse, is rolled back with the measure and both figures in the record; one within
//! bounds is promoted. Time in the rollout tests is a manual clock, advanced by the tests.
//!
//! Every behaviour runs on sled and on PostgreSQL; the one about two workers needs a store two
//! processes share, so it runs on PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use strata::measure::{MeasureTotal, MeasureTotals};
use strata::prelude::*;
use strata::rollout::{Gate, MeasureBound, RolloutError, RolloutStatus, Transition};
use strata::{
    Engine, EngineError, Gates, ManualClock, MeasureGate, MeasureKind, Next, RetryPolicy, RolloutSpec, Stage,
    StartOptions, StepCtx, StepError, StepResult, Version, WorkflowVersion,
};

on_sled_and_postgres!(
    a_step_s_measures_count_once_from_its_kept_attempt_and_total_exactly_across_a_restart,
    a_candidate_costing_more_than_allowed_is_rolled_back_naming_the_measure_and_both_figures,
    a_candidate_answering_worse_is_rolled_back_on_its_quality,
    a_candidate_within_its_measure_bounds_is_promoted,
    gates_on_undeclared_measures_are_refused_by_name,
    the_api_and_the_config_file_take_measure_gates_and_show_the_figures,
);

const WORKFLOW: &str = "assistant";

/// An assistant's conversation: its number, and whether its first call fails once (after
/// recording a cost that must not count).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Conversation {
    n: u64,
    flaky: bool,
}

/// What a version's model call costs and how good its answers are.
#[derive(Clone, Copy)]
struct Model {
    ask_cost: f64,
    answer_cost: f64,
    quality: f64,
}

/// 1.0.0: 0.25 + 0.5 = 0.75 per conversation, quality 0.75.
const STABLE: Model = Model {
    ask_cost: 0.25,
    answer_cost: 0.5,
    quality: 0.75,
};
/// 2.0.0: twice the cost, poorer answers.
const COSTLY: Model = Model {
    ask_cost: 0.5,
    answer_cost: 1.0,
    quality: 0.5,
};
/// 2.1.0: cheaper, as good.
const CHEAPER: Model = Model {
    ask_cost: 0.25,
    answer_cost: 0.25,
    quality: 0.75,
};

fn model_of(version: &Version) -> Model {
    match (version.major, version.minor) {
        (2, 0) => COSTLY,
        (2, 1) => CHEAPER,
        _ => STABLE,
    }
}

async fn ask(ctx: StepCtx, conversation: &mut Conversation) -> StepResult<u64> {
    let model = model_of(ctx.version());
    if conversation.flaky && ctx.attempt() == 1 {
        // Recorded, then the attempt fails and is retried: this cost must not count.
        ctx.record("cost", 100.0);
        ctx.record("tokens", 99_999.0);
        return Err(StepError::retryable("the model timed out"));
    }
    ctx.record("tokens", 1_000.0);
    ctx.record("cost", model.ask_cost);
    ctx.record("quality", model.quality);
    // A typo is dropped with a warning, not counted under another name.
    ctx.record("cots", 7.0);
    Ok(Next::goto("answer"))
}

async fn answer(ctx: StepCtx, conversation: &mut Conversation) -> StepResult<u64> {
    ctx.record("cost", model_of(ctx.version()).answer_cost);
    Ok(Next::complete(conversation.n))
}

fn assistant(version: &str) -> WorkflowVersion<Conversation, Conversation, u64> {
    WorkflowVersion::new(WORKFLOW, version)
        .init(|conversation: Conversation| conversation)
        .measure("tokens", MeasureKind::Summed)
        .measure("cost", MeasureKind::Summed)
        .measure("quality", MeasureKind::Averaged)
        .default_retry(RetryPolicy::exponential(3, Duration::from_millis(5)))
        .step("ask", ask)
        .step("answer", answer)
}

fn total(value: f64, count: u64) -> MeasureTotal {
    MeasureTotal {
        sum_units: strata::measure::to_units(value),
        count,
    }
}

fn totals_of(engine: &Engine, version: &str) -> MeasureTotals {
    engine.version(WORKFLOW, version).unwrap().counters.measures
}

/// Starts conversations `numbers` (every third flaky), waits for them to complete, and returns
/// their ids.
async fn converse(engine: &Engine, numbers: std::ops::Range<u64>) -> Vec<strata::InstanceId> {
    let mut ids = Vec::new();
    for n in numbers {
        let conversation = Conversation { n, flaky: n % 3 == 0 };
        let options = StartOptions::new().routing_key(format!("user-{n}"));
        ids.push(engine.start_with(WORKFLOW, &conversation, options).await.unwrap());
    }
    for id in &ids {
        assert_eq!(
            outcome_within(engine, *id).await.status(),
            strata::InstanceStatus::Completed
        );
    }
    ids
}

async fn a_step_s_measures_count_once_from_its_kept_attempt_and_total_exactly_across_a_restart(backend: Backend) {
    let engine = backend.builder().register(assistant("1.0.0")).open().await.unwrap();
    let ids = converse(&engine, 0..30).await;
    let expected: MeasureTotals = [
        // One ask and one answer per conversation; the flaky first attempts' costs are gone.
        ("cost".to_string(), total(30.0 * 0.75, 60)),
        ("quality".to_string(), total(30.0 * 0.75, 30)),
        ("tokens".to_string(), total(30_000.0, 30)),
    ]
    .into();
    assert_eq!(totals_of(&engine, "1.0.0"), expected);
    // The metrics window has them too: what the instances that finished in it recorded.
    let window = engine.metrics(WORKFLOW, "1.0.0", Duration::from_secs(300)).unwrap();
    assert_eq!(window.measures, expected);
    // Each instance keeps what it recorded: conversation 0 was flaky.
    let flaky = engine.instance(ids[0]).unwrap();
    assert_eq!(flaky.record.measures.get("cost"), Some(&total(0.75, 2)));

    // The totals are committed: a new engine on the store reads them back, and adds to them.
    engine.shutdown().await;
    let engine = backend.builder().register(assistant("1.0.0")).open().await.unwrap();
    assert_eq!(totals_of(&engine, "1.0.0"), expected);
    converse(&engine, 30..40).await;
    let after = totals_of(&engine, "1.0.0");
    assert_eq!(after.get("cost"), Some(&total(40.0 * 0.75, 80)));
    assert_eq!(after.get("tokens"), Some(&total(40_000.0, 40)));

    // Exported for Prometheus as a summary per version and measure.
    let text = engine.metrics_text();
    let labels = "workflow=\"assistant\",version=\"1.0.0\"";
    for line in [
        "# TYPE strata_measure summary".to_string(),
        format!("strata_measure_sum{{{labels},measure=\"cost\"}} 30"),
        format!("strata_measure_count{{{labels},measure=\"cost\"}} 80"),
        format!("strata_measure_sum{{{labels},measure=\"quality\"}} 30"),
        format!("strata_measure_count{{{labels},measure=\"quality\"}} 40"),
        format!("strata_measure_sum{{{labels},measure=\"tokens\"}} 40000"),
    ] {
        assert!(
            text.lines().any(|exported| exported == line),
            "missing {line} in\n{text}"
        );
    }
    assert!(
        !text.contains("measure=\"cots\""),
        "an undeclared measure is not counted"
    );
    engine.shutdown().await;
}

/// PostgreSQL: two workers finish instances of one version side by side; the version's totals
/// are the exact sum of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_add_to_one_version_s_totals_exactly() {
    let backend = Backend::postgres();
    let first = backend.builder().register(assistant("1.0.0")).open().await.unwrap();
    let second = backend.builder().register(assistant("1.0.0")).open().await.unwrap();
    tokio::join!(converse(&first, 0..40), converse(&second, 40..80));
    let expected: MeasureTotals = [
        ("cost".to_string(), total(80.0 * 0.75, 160)),
        ("quality".to_string(), total(80.0 * 0.75, 80)),
        ("tokens".to_string(), total(80_000.0, 80)),
    ]
    .into();
    let store = backend.store();
    let stored = store
        .versions()
        .unwrap()
        .into_iter()
        .find(|version| version.key.workflow == WORKFLOW)
        .unwrap();
    assert_eq!(stored.counters.measures, expected);
    first.shutdown().await;
    second.shutdown().await;
}

const HOLD: Duration = Duration::from_secs(600);

async fn open_rollout(backend: &Backend, clock: &Arc<ManualClock>, candidate: &str) -> Engine {
    backend
        .builder()
        .clock(clock.clone())
        .register(assistant("1.0.0"))
        .register(assistant(candidate))
        .open()
        .await
        .unwrap()
}

/// Two stages, 50 % then 100 %, each held ten minutes and needing 10 finished candidates.
fn rollout(candidate: &str, measures: Vec<MeasureGate>) -> RolloutSpec {
    RolloutSpec::new(WORKFLOW, Version::parse(candidate).unwrap(), Version::new(1, 0, 0))
        .stage(Stage::new(50.0, HOLD, 10))
        .stage(Stage::new(100.0, HOLD, 10))
        .gates(Gates {
            measures,
            ..Gates::default()
        })
}

/// Runs conversations in rounds of 40 (none flaky: retries wait on the manual clock) until the
/// rollout leaves `Running` or `rounds` rounds ran; returns its status.
async fn run_until_decided(engine: &Engine, name: &str, first: &mut u64, rounds: u32) -> RolloutStatus {
    for _ in 0..rounds {
        let status = engine.rollout(name).unwrap().status;
        if status != RolloutStatus::Running {
            return status;
        }
        let mut ids = Vec::new();
        for n in *first..*first + 40 {
            let conversation = Conversation { n, flaky: false };
            let options = StartOptions::new().routing_key(format!("user-{n}"));
            ids.push(engine.start_with(WORKFLOW, &conversation, options).await.unwrap());
        }
        *first += 40;
        for id in ids {
            let _ = outcome_within(engine, id).await;
        }
        engine.evaluate_rollouts().await.unwrap();
    }
    engine.rollout(name).unwrap().status
}

/// The sample of the stable's figure of `measure` when the rollout was rolled back.
fn stable_sample_of(engine: &Engine, name: &str, measure: &str) -> u64 {
    match engine
        .rollout(name)
        .unwrap()
        .history
        .last()
        .map(|last| &last.transition)
    {
        Some(Transition::RolledBack { stable, .. }) => stable.measures[measure].sample,
        other => panic!("not rolled back: {other:?}"),
    }
}

/// The rollback transition's gate, reason, and both versions' figures of `measure`.
fn rolled_back_by(engine: &Engine, name: &str, measure: &str) -> (Option<Gate>, String, f64, f64) {
    let record = engine.rollout(name).unwrap();
    let Some(Transition::RolledBack {
        gate,
        reason,
        candidate,
        stable,
    }) = record.history.last().map(|last| last.transition.clone())
    else {
        panic!("not rolled back: {:?}", record.history)
    };
    let figure = |figures: &strata::rollout::Figures| figures.measures[measure].value.unwrap();
    (gate, reason, figure(&candidate), figure(&stable))
}

/// An engine with 1.0.0 and the costly 2.0.0, whose rollout under `gate` has been run until it
/// was rolled back; the rollback's gate, reason, and both figures of the gate's measure.
async fn rolled_back_under(backend: &Backend, gate: MeasureGate) -> (Engine, (Option<Gate>, String, f64, f64)) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open_rollout(backend, &clock, "2.0.0").await;
    let measure = gate.measure.clone();
    engine.start_rollout(rollout("2.0.0", vec![gate])).await.unwrap();
    let mut first = 0;
    let status = run_until_decided(&engine, "assistant@2.0.0", &mut first, 10).await;
    assert_eq!(status, RolloutStatus::RolledBack);
    let rolled_back = rolled_back_by(&engine, "assistant@2.0.0", &measure);
    (engine, rolled_back)
}

async fn a_candidate_costing_more_than_allowed_is_rolled_back_naming_the_measure_and_both_figures(backend: Backend) {
    let gate = MeasureGate::new("cost").max_increase(0.2).min_sample(10);
    let (engine, (gate, reason, candidate, stable)) = rolled_back_under(&backend, gate).await;
    let stable_sample = stable_sample_of(&engine, "assistant@2.0.0", "cost");
    assert!(stable_sample >= 10, "a max_increase waits for the stable's sample too");
    assert_eq!(
        gate,
        Some(Gate::Measure {
            measure: "cost".into(),
            bound: MeasureBound::MaxIncrease
        })
    );
    assert_eq!((candidate, stable), (1.5, 0.75), "the mean cost per finished instance");
    assert_eq!(
        reason,
        format!(
            "candidate cost 1.5 is 100.0 % above the stable's (at most +20.0 % allowed); the stable's is 0.75 (sample {stable_sample})"
        )
    );
    // New conversations go to the stable version only.
    let mut ids = Vec::new();
    for n in 10_000..10_020 {
        let conversation = Conversation { n, flaky: false };
        let options = StartOptions::new().routing_key(format!("user-{n}"));
        ids.push(engine.start_with(WORKFLOW, &conversation, options).await.unwrap());
    }
    for id in ids {
        let _ = outcome_within(&engine, id).await;
        assert_eq!(engine.instance(id).unwrap().version(), &Version::new(1, 0, 0));
    }
    engine.shutdown().await;
}

async fn a_candidate_answering_worse_is_rolled_back_on_its_quality(backend: Backend) {
    let gate = MeasureGate::new("quality").min(0.7).min_sample(10);
    let (engine, (gate, reason, candidate, stable)) = rolled_back_under(&backend, gate).await;
    assert_eq!(gate.map(|gate| gate.field()), Some("measures[quality].min".to_string()));
    assert_eq!((candidate, stable), (0.5, 0.75), "the mean quality recorded");
    assert!(
        reason.starts_with("candidate quality 0.5 is below the minimum 0.7; the stable's is 0.75 (sample "),
        "{reason}"
    );
    engine.shutdown().await;
}

async fn a_candidate_within_its_measure_bounds_is_promoted(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open_rollout(&backend, &clock, "2.1.0").await;
    let gates = vec![
        MeasureGate::new("cost").max_increase(0.2).min_sample(10),
        MeasureGate::new("quality").min(0.7).max(1.0).min_sample(10),
    ];
    engine.start_rollout(rollout("2.1.0", gates)).await.unwrap();
    let name = "assistant@2.1.0";
    let mut first = 0;
    for stage in 0..2 {
        // Enough sample, and nothing breached: the stage holds until its time is up.
        let status = run_until_decided(&engine, name, &mut first, 3).await;
        assert_eq!(status, RolloutStatus::Running, "stage {stage}");
        assert_eq!(engine.rollout(name).unwrap().stage, stage);
        let (candidate, stable) = engine.rollout_figures(&engine.rollout(name).unwrap());
        assert_eq!(candidate.measures["cost"].value, Some(0.5), "stage {stage}");
        assert_eq!(candidate.measures["quality"].value, Some(0.75), "stage {stage}");
        if stage == 0 {
            assert_eq!(stable.measures["cost"].value, Some(0.75));
        }
        clock.advance(HOLD);
        engine.evaluate_rollouts().await.unwrap();
    }
    assert_eq!(engine.rollout(name).unwrap().status, RolloutStatus::Promoted);
    engine.shutdown().await;
}

async fn gates_on_undeclared_measures_are_refused_by_name(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let plain = WorkflowVersion::<Conversation, Conversation, u64>::new(WORKFLOW, "3.0.0")
        .init(|conversation: Conversation| conversation)
        .measure("cost", MeasureKind::Summed)
        .step("ask", ask)
        .step("answer", answer);
    let engine = backend
        .builder()
        .clock(clock.clone())
        .register(assistant("1.0.0"))
        .register(plain)
        .open()
        .await
        .unwrap();
    let refused = |error: EngineError| match error {
        EngineError::Rollout(RolloutError::BadMeasureGate { .. }) => error.to_string(),
        other => panic!("{other:?}"),
    };
    // The candidate does not declare it.
    let spec = RolloutSpec::new(WORKFLOW, Version::new(3, 0, 0), Version::new(1, 0, 0))
        .stage(Stage::new(50.0, HOLD, 10))
        .gates(Gates {
            measures: vec![MeasureGate::new("quality").min(0.5)],
            ..Gates::default()
        });
    let message = refused(engine.start_rollout(spec).await.unwrap_err());
    assert!(
        message.contains("gates.measures[0] ('quality')")
            && message.contains("the candidate 3.0.0 declares no measure 'quality' (it declares: cost)"),
        "{message}"
    );
    // A max_increase compares with the stable, which must declare it too.
    let spec = RolloutSpec::new(WORKFLOW, Version::new(1, 0, 0), Version::new(3, 0, 0))
        .stage(Stage::new(50.0, HOLD, 10))
        .gates(Gates {
            measures: vec![
                MeasureGate::new("cost").max(2.0),
                MeasureGate::new("tokens").max_increase(0.1),
            ],
            ..Gates::default()
        });
    let message = refused(engine.start_rollout(spec).await.unwrap_err());
    assert!(
        message.contains("gates.measures[1] ('tokens')") && message.contains("the stable 3.0.0 declares no measure"),
        "{message}"
    );
    assert!(engine.rollouts().is_empty(), "nothing started");
    engine.shutdown().await;
}

async fn the_api_and_the_config_file_take_measure_gates_and_show_the_figures(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = backend
        .builder()
        .clock(clock.clone())
        .register(assistant("1.0.0"))
        .register(assistant("2.0.0"))
        .register(assistant("2.1.0"))
        .admin("127.0.0.1:0".parse().unwrap())
        .open()
        .await
        .unwrap();
    let url = |path: &str| format!("http://{}{path}", engine.admin_address().unwrap());
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client.get(url(&path));
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };

    // The config file: [[rollouts.gates.measures]], each bound and sample as written.
    let config = r#"
[[rollouts]]
workflow = "assistant"
candidate = "2.0.0"
stable = "1.0.0"
stages = [50, 100]
hold = "10m"
min_finished = 10

[[rollouts.gates.measures]]
measure = "cost"
max_increase = 0.2
min_sample = 10

[[rollouts.gates.measures]]
measure = "quality"
min = 0.7
"#;
    engine.apply_config("strata.toml", config).await.unwrap();
    let record = engine.rollout("assistant@2.0.0").expect("the config started it");
    assert_eq!(
        record.spec.gates.measures,
        [
            MeasureGate::new("cost").max_increase(0.2).min_sample(10),
            MeasureGate::new("quality").min(0.7)
        ]
    );
    engine.rollback_rollout("assistant@2.0.0").await.unwrap();

    // The API: gates.measures posted, then shown with both versions' figures.
    let body = r#"{"workflow": "assistant", "candidate": "2.1.0", "stable": "1.0.0",
        "stages": [{"percent": 50, "hold_ms": 600000, "min_finished": 10}],
        "gates": {"measures": [{"measure": "cost", "max_increase": 0.2, "min_sample": 10}, {"measure": "quality", "min": 0.7, "max": 1.0}]}}"#;
    let response = client
        .post(url("/v1/rollouts"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let started: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        started["gates"]["measures"],
        serde_json::json!([
            {"measure": "cost", "max_increase": 0.2, "min_sample": 10},
            {"measure": "quality", "min": 0.7, "max": 1.0, "min_sample": 1}
        ])
    );
    let mut first = 0;
    run_until_decided(&engine, "assistant@2.1.0", &mut first, 1).await;
    let shown: serde_json::Value = get("/v1/rollouts/assistant@2.1.0".to_string()).await;
    let figures = &shown["figures"];
    assert_eq!(figures["candidate"]["measures"]["cost"]["value"], 0.5, "{shown}");
    assert_eq!(figures["stable"]["measures"]["cost"]["value"], 0.75, "{shown}");
    assert_eq!(figures["candidate"]["measures"]["quality"]["value"], 0.75, "{shown}");
    let candidate_finished = figures["candidate"]["finished"].as_u64().unwrap();
    assert_eq!(figures["candidate"]["measures"]["cost"]["sample"], candidate_finished);

    // One instance's measures, as its page shows them.
    let conversation = Conversation {
        n: 99_999,
        flaky: false,
    };
    let options = StartOptions::new().version("=2.1.0");
    let id = engine.start_with(WORKFLOW, &conversation, options).await.unwrap();
    outcome_within(&engine, id).await;
    let detail: serde_json::Value = get(format!("/v1/instances/{id}")).await;
    assert_eq!(
        detail["measures"],
        serde_json::json!([
            {"measure": "cost", "sum": 0.5, "count": 2},
            {"measure": "quality", "sum": 0.75, "count": 1},
            {"measure": "tokens", "sum": 1000.0, "count": 1}
        ])
    );

    // Each version's totals, with the figure its kind gives.
    let versions: serde_json::Value = get("/v1/versions".to_string()).await;
    let stable = versions
        .as_array()
        .unwrap()
        .iter()
        .find(|version| version["workflow"] == WORKFLOW && version["version"] == "1.0.0")
        .unwrap();
    let measures = stable["measures"].as_array().unwrap();
    let names: Vec<&str> = measures
        .iter()
        .map(|measure| measure["measure"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tokens", "cost", "quality"], "declared order");
    let cost = &measures[1];
    assert_eq!(
        (cost["kind"].as_str(), cost["figure"].as_f64()),
        (Some("summed"), Some(0.75))
    );
    let quality = &measures[2];
    assert_eq!(
        (quality["kind"].as_str(), quality["figure"].as_f64()),
        (Some("averaged"), Some(0.75))
    );
    engine.shutdown().await;
}
