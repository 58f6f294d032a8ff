//! Shadow stages (issue #24, first part): while a rollout is in a shadow stage, no real start
//! goes to the candidate; for the stage's share of the starts routed to the stable version, a
//! shadow instance of the candidate runs beside the real one with the same input. Its steps know
//! they are a shadow's; it is never returned to the caller, never counted as either version's
//! real outcome (it counts apart), and the gates judge the candidate on it — so a worse candidate
//! is rolled back before it serves a single real start. Time is a manual clock.
//!
//! Every behaviour runs on sled and on PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use strata::prelude::*;
use strata::rollout::{RolloutError, RolloutStatus, Transition};
use strata::{
    Engine, EngineError, Gates, InstanceFilter, ManualClock, MeasureGate, MeasureKind, Next, Outcome, RolloutSpec,
    Stage, StartOptions, StepCtx, StepResult, Version, WorkflowVersion,
};

on_sled_and_postgres!(
    a_shadow_stage_runs_the_candidate_beside_the_stable_unseen_and_counted_apart,
    a_costlier_candidate_is_rolled_back_in_its_shadow_stage_before_serving_anyone,
    a_candidate_that_passes_its_shadow_stage_then_serves_real_starts,
    shadow_stages_come_first_and_a_rollout_ends_on_real_ones,
    each_shadow_is_compared_with_its_real_twin_and_mismatches_roll_the_candidate_back,
    a_signal_to_the_real_instance_reaches_its_shadow_too,
    a_live_shadow_does_not_hold_up_the_stable_version_s_drain,
);

const WORKFLOW: &str = "quote";
const HOLD: Duration = Duration::from_secs(600);

/// What a quote answers: its number, and whether a shadow computed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Answer {
    n: u64,
    shadow: bool,
    idempotency_key: String,
}

async fn price(ctx: StepCtx, n: &mut u64) -> StepResult<Answer> {
    // 2.0.0 costs twice what 1.0.0 and 2.1.0 do; 2.2.0 answers odd quotes wrong.
    let version = (ctx.version().major, ctx.version().minor);
    ctx.record("cost", if version == (2, 0) { 2.0 } else { 1.0 });
    let wrong = version == (2, 2) && *n % 2 == 1;
    Ok(Next::complete(Answer {
        n: if wrong { *n + 1 } else { *n },
        shadow: ctx.is_shadow(),
        idempotency_key: ctx.idempotency_key(),
    }))
}

/// A quote version that compares a shadow's answer with the stable's by the number alone (how
/// it was computed differs, and must).
fn quote(version: &str) -> WorkflowVersion<u64, u64, Answer> {
    plain_quote(version).compare_outputs(|stable: &Answer, candidate: &Answer| {
        if stable.n == candidate.n {
            Ok(())
        } else {
            Err(format!("quoted {} where the stable quoted {}", candidate.n, stable.n))
        }
    })
}

/// A quote version without a comparator: its shadows' stored outputs must equal the stable's.
fn plain_quote(version: &str) -> WorkflowVersion<u64, u64, Answer> {
    WorkflowVersion::new(WORKFLOW, version)
        .init(|n: u64| n)
        .measure("cost", MeasureKind::Summed)
        .step("price", price)
}

/// Waits until `count` shadow pairs of `rollout` are compared (they are, as the second of each
/// pair finishes).
async fn pairs_compared(engine: &Engine, rollout: &str, count: usize) -> Vec<strata::shadow::ShadowPair> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pairs = engine.shadow_pairs(rollout).unwrap();
        if pairs.len() >= count {
            return pairs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} pairs compared after 30 s",
            pairs.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await; // polling work the engine does on its own
    }
}

async fn open(backend: &Backend, clock: &Arc<ManualClock>, candidate: &str) -> Engine {
    backend
        .builder()
        .clock(clock.clone())
        .register(quote("1.0.0"))
        .register(quote(candidate))
        .open()
        .await
        .unwrap()
}

/// A shadow stage of `shadow_percent` % then a real one of 50 %, each held ten minutes and
/// needing 10 finished candidate instances (shadow ones in the shadow stage).
fn rollout(candidate: &str, shadow_percent: f64, gates: Gates) -> RolloutSpec {
    RolloutSpec::new(WORKFLOW, Version::parse(candidate).unwrap(), Version::new(1, 0, 0))
        .stage(Stage::shadow(shadow_percent, HOLD, 10))
        .stage(Stage::new(50.0, HOLD, 10))
        .gates(gates)
}

fn cost_gate() -> Gates {
    Gates {
        measures: vec![MeasureGate::new("cost").max_increase(0.2).min_sample(10)],
        ..Gates::default()
    }
}

/// Starts quotes `numbers` with routing keys, waits for each, and returns their outcomes.
async fn run_quotes(engine: &Engine, numbers: std::ops::Range<u64>) -> Vec<(strata::InstanceId, Answer)> {
    let mut ids = Vec::new();
    for n in numbers {
        let options = StartOptions::new().routing_key(format!("customer-{n}"));
        ids.push(engine.start_with(WORKFLOW, &n, options).await.unwrap());
    }
    let mut answers = Vec::new();
    for id in ids {
        let Outcome::Completed(bytes) = outcome_within(engine, id).await else {
            panic!("quote {id} did not complete")
        };
        answers.push((id, rmp_serde::from_slice(&bytes).unwrap()));
    }
    answers
}

/// Waits until every shadow instance of `candidate` has finished (they run on their own): each
/// one's outcome, which its waiters get once its slot is gone, so that every reading after this
/// sees it finished.
async fn shadows_finished(engine: &Engine, candidate: &str) {
    let candidate = Version::parse(candidate).unwrap();
    let shadows: Vec<strata::InstanceId> = engine
        .list(&InstanceFilter::default())
        .unwrap()
        .into_iter()
        .filter(|info| info.version() == &candidate && info.record.shadow_of.is_some())
        .map(|info| info.id())
        .collect();
    for shadow in shadows {
        outcome_within(engine, shadow).await;
    }
}

async fn a_shadow_stage_runs_the_candidate_beside_the_stable_unseen_and_counted_apart(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.1.0").await;
    engine
        .start_rollout(rollout("2.1.0", 100.0, cost_gate()))
        .await
        .unwrap();
    let record = engine.rollout("quote@2.1.0").unwrap();
    assert_eq!((record.candidate_share(), record.shadow_share()), (0, 10_000));

    let answers = run_quotes(&engine, 0..8).await;
    shadows_finished(&engine, "2.1.0").await;
    // Every caller got the stable version's answer, computed by a real instance.
    for (id, answer) in &answers {
        assert_eq!(engine.instance(*id).unwrap().version(), &Version::new(1, 0, 0));
        assert!(
            !answer.shadow && !answer.idempotency_key.starts_with("shadow-"),
            "{answer:?}"
        );
    }
    // Beside each, one shadow instance of the candidate with the same input, which knew it was one.
    let shadows: Vec<_> = engine
        .list(&InstanceFilter::default())
        .unwrap()
        .into_iter()
        .filter(|info| info.version() == &Version::new(2, 1, 0))
        .collect();
    assert_eq!(shadows.len(), 8);
    for shadow in &shadows {
        let real = shadow
            .record
            .shadow_of
            .expect("a candidate instance in a shadow stage is a shadow");
        let (_, answer) = answers.iter().find(|(id, _)| *id == real).unwrap();
        let Some(Outcome::Completed(bytes)) = Outcome::from_record(&shadow.record) else {
            panic!("shadow {} did not complete", shadow.id())
        };
        let computed: Answer = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(computed.n, answer.n, "the same input");
        assert!(
            computed.shadow && computed.idempotency_key.starts_with("shadow-"),
            "{computed:?}"
        );
    }
    // Counted apart: the candidate has no real start, the stable's counts are its real ones.
    let candidate = engine.version(WORKFLOW, "2.1.0").unwrap().counters;
    assert_eq!(
        (candidate.started, candidate.completed, candidate.live),
        (0, 0, 0),
        "{candidate:?}"
    );
    assert_eq!((candidate.shadow.started, candidate.shadow.completed), (8, 8));
    assert_eq!(candidate.shadow.measures["cost"].count, 8);
    assert!(
        candidate.measures.is_empty(),
        "the shadows' measures are not the version's"
    );
    let stable = engine.version(WORKFLOW, "1.0.0").unwrap().counters;
    assert_eq!((stable.started, stable.completed), (8, 8));
    // Starts that ask for a version are not shadowed.
    let asked = engine
        .start_with(WORKFLOW, &99u64, StartOptions::new().version("=1.0.0"))
        .await
        .unwrap();
    outcome_within(&engine, asked).await;
    let after = engine.version(WORKFLOW, "2.1.0").unwrap().counters;
    assert_eq!(after.shadow.started, 8);
    engine.shutdown().await;
}

async fn a_costlier_candidate_is_rolled_back_in_its_shadow_stage_before_serving_anyone(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.0").await;
    engine
        .start_rollout(rollout("2.0.0", 100.0, cost_gate()))
        .await
        .unwrap();
    let name = "quote@2.0.0";
    let mut first = 0;
    while engine.rollout(name).unwrap().status == RolloutStatus::Running {
        assert!(first < 200, "never rolled back");
        run_quotes(&engine, first..first + 10).await;
        shadows_finished(&engine, "2.0.0").await;
        engine.evaluate_rollouts().await.unwrap();
        first += 10;
    }
    let record = engine.rollout(name).unwrap();
    assert_eq!(record.status, RolloutStatus::RolledBack);
    assert_eq!(record.stage, 0, "rolled back in the shadow stage");
    let Some(Transition::RolledBack { reason, candidate, .. }) = record.history.last().map(|last| &last.transition)
    else {
        panic!("{:?}", record.history)
    };
    assert!(
        reason.starts_with("candidate cost 2 is 100.0 % above the stable's"),
        "{reason}"
    );
    assert!(
        candidate.finished >= 10,
        "judged on its shadow instances: {candidate:?}"
    );
    let counters = engine.version(WORKFLOW, "2.0.0").unwrap().counters;
    assert_eq!(counters.started, 0, "it never served a real start");
    // After the rollback, no more shadows.
    let shadowed = counters.shadow.started;
    run_quotes(&engine, 1_000..1_010).await;
    assert_eq!(
        engine.version(WORKFLOW, "2.0.0").unwrap().counters.shadow.started,
        shadowed
    );
    engine.shutdown().await;
}

async fn a_candidate_that_passes_its_shadow_stage_then_serves_real_starts(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.1.0").await;
    engine.start_rollout(rollout("2.1.0", 50.0, cost_gate())).await.unwrap();
    let name = "quote@2.1.0";
    // A 50 % shadow share: about half the starts get a shadow, sticky by routing key.
    run_quotes(&engine, 0..60).await;
    shadows_finished(&engine, "2.1.0").await;
    let shadowed = engine.version(WORKFLOW, "2.1.0").unwrap().counters.shadow.started;
    assert!((15..=45).contains(&shadowed), "{shadowed} of 60 shadowed at 50 %");
    engine.evaluate_rollouts().await.unwrap();
    assert_eq!(engine.rollout(name).unwrap().stage, 0, "the hold is not over");
    let (candidate, _) = engine.rollout_figures(&engine.rollout(name).unwrap());
    assert_eq!(candidate.finished, shadowed, "the shadow stage counts the shadows");
    assert_eq!(candidate.measures["cost"].value, Some(1.0));
    clock.advance(HOLD);
    engine.evaluate_rollouts().await.unwrap();
    let record = engine.rollout(name).unwrap();
    assert_eq!(
        (record.stage, record.candidate_share(), record.shadow_share()),
        (1, 5_000, 0)
    );
    // Now real starts reach the candidate, and none is a shadow.
    let answers = run_quotes(&engine, 100..160).await;
    let on_candidate = answers
        .iter()
        .filter(|(id, _)| engine.instance(*id).unwrap().version() == &Version::new(2, 1, 0))
        .count();
    assert!(on_candidate > 0, "the real stage routes real starts to the candidate");
    assert!(answers.iter().all(|(_, answer)| !answer.shadow));
    assert_eq!(
        engine.version(WORKFLOW, "2.1.0").unwrap().counters.shadow.started,
        shadowed,
        "no shadow after the shadow stage"
    );
    engine.shutdown().await;
}

async fn shadow_stages_come_first_and_a_rollout_ends_on_real_ones(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.1.0").await;
    let candidate = Version::new(2, 1, 0);
    let refused = |spec: RolloutSpec| {
        let engine = engine.clone();
        async move {
            match engine.start_rollout(spec).await.unwrap_err() {
                EngineError::Rollout(error @ RolloutError::BadShare { .. }) => (error.field(), error.to_string()),
                other => panic!("{other:?}"),
            }
        }
    };
    let late = RolloutSpec::new(WORKFLOW, candidate.clone(), Version::new(1, 0, 0))
        .stage(Stage::new(10.0, HOLD, 1))
        .stage(Stage::shadow(50.0, HOLD, 1))
        .stage(Stage::new(100.0, HOLD, 1))
        .gates(cost_gate());
    let (field, message) = refused(late).await;
    assert_eq!(field, "stages[1]");
    assert!(message.contains("shadow stages come first"), "{message}");
    let only = RolloutSpec::new(WORKFLOW, candidate.clone(), Version::new(1, 0, 0))
        .stage(Stage::shadow(50.0, HOLD, 1))
        .gates(cost_gate());
    let (field, message) = refused(only).await;
    assert_eq!(field, "stages[0]");
    assert!(message.contains("give a stage that is not shadow"), "{message}");
    // Shares rise among shadow stages, then afresh among real ones.
    let spec = RolloutSpec::new(WORKFLOW, candidate, Version::new(1, 0, 0))
        .stage(Stage::shadow(20.0, HOLD, 1))
        .stage(Stage::shadow(100.0, HOLD, 1))
        .stage(Stage::new(5.0, HOLD, 1))
        .gates(cost_gate());
    engine.start_rollout(spec).await.unwrap();

    // The config file: shadow_stages before stages.
    engine.rollback_rollout("quote@2.1.0").await.unwrap();
    let config = "[[rollouts]]\nname = \"quote-shadowed\"\nworkflow = \"quote\"\ncandidate = \"2.1.0\"\nstable = \"1.0.0\"\nshadow_stages = [25]\nstages = [50, 100]\nhold = \"10m\"\nmin_finished = 5\n[[rollouts.gates.measures]]\nmeasure = \"cost\"\nmax = 3.0\n";
    engine.apply_config("strata.toml", config).await.unwrap();
    let stages = engine.rollout("quote-shadowed").unwrap().spec.stages;
    assert_eq!(
        stages
            .iter()
            .map(|stage| (stage.percent, stage.shadow))
            .collect::<Vec<_>>(),
        [(25.0, true), (50.0, false), (100.0, false)]
    );
    let bad = config.replace("shadow_stages = [25]", "shadow_stages = [25, 10]");
    let message = engine.apply_config("strata.toml", &bad).await.unwrap_err().to_string();
    assert!(
        message.contains("rollouts[0].shadow_stages[1]") && message.contains("shares must rise"),
        "{message}"
    );
    engine.shutdown().await;
}

async fn each_shadow_is_compared_with_its_real_twin_and_mismatches_roll_the_candidate_back(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = backend
        .builder()
        .clock(clock.clone())
        .register(quote("1.0.0"))
        .register(quote("2.2.0"))
        .register(plain_quote("2.4.0"))
        .admin("127.0.0.1:0".parse().unwrap())
        .open()
        .await
        .unwrap();
    // 2.2.0 answers odd quotes wrong: half its pairs mismatch, over the 20 % allowed.
    let gates = Gates {
        max_shadow_mismatch: Some(0.2),
        ..Gates::default()
    };
    engine
        .start_rollout(rollout("2.2.0", 100.0, gates.clone()))
        .await
        .unwrap();
    let name = "quote@2.2.0";
    let answers = run_quotes(&engine, 0..10).await;
    let pairs = pairs_compared(&engine, name, 10).await;
    engine.evaluate_rollouts().await.unwrap();
    let record = engine.rollout(name).unwrap();
    assert_eq!(record.status, RolloutStatus::RolledBack);
    let Some(Transition::RolledBack {
        gate,
        reason,
        candidate,
        ..
    }) = record.history.last().map(|last| &last.transition)
    else {
        panic!("{:?}", record.history)
    };
    assert_eq!(gate, &Some(strata::rollout::Gate::ShadowMismatch));
    assert_eq!(
        reason,
        "5 of 10 shadow pairs (50.0 %) differ from the stable's runs, above 20.0 %"
    );
    assert_eq!((candidate.pairs, candidate.mismatches), (10, 5));
    // The pairs, mismatches first, each with its twin, what differs, and both sides' figures.
    assert!(pairs[..5].iter().all(|pair| !pair.matched) && pairs[5..].iter().all(|pair| pair.matched));
    for pair in &pairs {
        let (_, answer) = answers.iter().find(|(id, _)| *id == pair.real).unwrap();
        assert_eq!(engine.instance(pair.shadow).unwrap().record.shadow_of, Some(pair.real));
        assert_eq!(
            engine.instance(pair.real).unwrap().record.shadowed_by,
            Some(pair.shadow)
        );
        let expected =
            (answer.n % 2 == 1).then(|| format!("quoted {} where the stable quoted {}", answer.n + 1, answer.n));
        assert_eq!(pair.diff, expected, "pair of {}", pair.real);
        assert_eq!(
            (pair.stable.to_string(), pair.candidate.to_string()),
            ("1.0.0".to_string(), "2.2.0".to_string())
        );
        assert_eq!(pair.real_measures["cost"].count, 1);
        assert_eq!(pair.shadow_measures["cost"].count, 1);
    }

    // The same pairs through the API, mismatches first, with the ids of both instances.
    let url = format!("http://{}/v1/rollouts/{name}/shadows", engine.admin_address().unwrap());
    let listed: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 10);
    assert_eq!(listed[0]["matched"], false);
    assert_eq!(listed[0]["real"], pairs[0].real.0);
    assert_eq!(listed[0]["shadow"], pairs[0].shadow.0);
    assert_eq!(listed[0]["diff"], pairs[0].diff.clone().unwrap());
    assert_eq!(listed[0]["shadow_measures"]["cost"]["count"], 1);
    let missing = reqwest::get(url.replace("quote@2.2.0", "quote@9.9.9")).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // Without a comparator, the stored outputs must be equal, and the diff names the fields.
    engine.start_rollout(rollout("2.4.0", 100.0, gates)).await.unwrap();
    run_quotes(&engine, 100..101).await;
    let pairs = pairs_compared(&engine, "quote@2.4.0", 1).await;
    let diff = pairs[0].diff.as_deref().unwrap_or_default();
    assert!(diff.starts_with("shadow: false → true; idempotency_key: "), "{diff}");
    let unknown = engine.shadow_pairs("quote@9.9.9").unwrap_err();
    assert!(
        matches!(unknown, EngineError::Rollout(RolloutError::Unknown { .. })),
        "{unknown}"
    );
    engine.shutdown().await;
}

async fn wait_for_approval(_ctx: StepCtx, _n: &mut u64) -> StepResult<u64> {
    Ok(Next::wait_signal("approve", "decide"))
}

async fn decide(ctx: StepCtx, n: &mut u64) -> StepResult<u64> {
    let amount: u64 = ctx.signal()?.unwrap_or_default();
    Ok(Next::complete(*n + amount))
}

/// approval 2.0.0 beside every start of 1.0.0, then a real stage; no pair may differ.
fn shadowing_approvals() -> RolloutSpec {
    RolloutSpec::new("approval", Version::new(2, 0, 0), Version::new(1, 0, 0))
        .stage(Stage::shadow(100.0, HOLD, 1))
        .stage(Stage::new(50.0, HOLD, 1))
        .gates(Gates {
            max_shadow_mismatch: Some(0.0),
            ..Gates::default()
        })
}

/// `approval`: waits for the signal `approve` (an amount), then completes with input + amount.
fn approval(version: &str) -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("approval", version)
        .init(|n: u64| n)
        .step("wait", wait_for_approval)
        .step("decide", decide)
}

async fn a_signal_to_the_real_instance_reaches_its_shadow_too(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = backend
        .builder()
        .clock(clock.clone())
        .register(approval("1.0.0"))
        .register(approval("2.0.0"))
        .open()
        .await
        .unwrap();
    engine.start_rollout(shadowing_approvals()).await.unwrap();
    let real = engine
        .start_with("approval", &5u64, StartOptions::new().routing_key("order-5"))
        .await
        .unwrap();
    let shadow = engine
        .instance(real)
        .unwrap()
        .record
        .shadowed_by
        .expect("shadowed at 100 %");
    for id in [real, shadow] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while engine.instance(id).unwrap().status != strata::InstanceStatus::WaitingSignal {
            assert!(tokio::time::Instant::now() < deadline, "{id} never waited");
            tokio::time::sleep(Duration::from_millis(2)).await; // polling the instance's own progress
        }
    }
    engine.signal(real, "approve", &37u64).await.unwrap();
    assert_eq!(
        outcome_within(&engine, real).await,
        Outcome::Completed(rmp_serde::to_vec_named(&42u64).unwrap())
    );
    assert_eq!(
        outcome_within(&engine, shadow).await,
        Outcome::Completed(rmp_serde::to_vec_named(&42u64).unwrap())
    );
    let pairs = pairs_compared(&engine, "approval@2.0.0", 1).await;
    assert!(pairs[0].matched, "{:?}", pairs[0]);
    engine.shutdown().await;
}

async fn wait_forever(_ctx: StepCtx, _n: &mut u64) -> StepResult<u64> {
    Ok(Next::wait_signal("never", "decide"))
}

async fn a_live_shadow_does_not_hold_up_the_stable_version_s_drain(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    // 2.0.0's shadow waits for a signal nobody sends: it stays live.
    let stuck = WorkflowVersion::<u64, u64, u64>::new("approval", "2.0.0")
        .init(|n: u64| n)
        .step("wait", wait_forever)
        .step("decide", decide);
    let engine = backend
        .builder()
        .clock(clock.clone())
        .register(approval("1.0.0"))
        .register(stuck)
        .open()
        .await
        .unwrap();
    engine.start_rollout(shadowing_approvals()).await.unwrap();
    let real = engine
        .start_with("approval", &1u64, StartOptions::new().routing_key("order-1"))
        .await
        .unwrap();
    let shadow = engine.instance(real).unwrap().record.shadowed_by.unwrap();
    engine.rollback_rollout("approval@2.0.0").await.unwrap();
    let mut events = engine.subscribe();
    engine.drain("approval", "1.0.0").await.unwrap();
    engine.signal(real, "approve", &1u64).await.unwrap();
    outcome_within(&engine, real).await;
    wait_for_event(
        &mut events,
        |event| matches!(event, strata::Event::VersionDrained { key, .. } if key.version == Version::new(1, 0, 0)),
    )
    .await;
    assert_eq!(
        engine.version("approval", "1.0.0").unwrap().status,
        strata::VersionStatus::Drained,
        "drained with its real instances, whatever the shadow does"
    );
    assert!(
        !engine.instance(shadow).unwrap().status.is_terminal(),
        "the shadow still runs"
    );
    assert_eq!(engine.version("approval", "2.0.0").unwrap().counters.live, 1);
    engine.shutdown().await;
}

/// PostgreSQL: a shadow instance runs on a worker that has the candidate's code, whichever worker
/// took the start; the real instance's signal reaches it through the store, and the pair is
/// compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_runs_on_a_worker_with_the_candidates_code_whoever_took_the_start() {
    let backend = Backend::postgres();
    let lease = Duration::from_millis(300);
    let with_both = backend
        .builder()
        .lease(lease)
        .register(approval("1.0.0"))
        .register(approval("2.0.0"))
        .open()
        .await
        .unwrap();
    let stable_only = backend
        .builder()
        .lease(lease)
        .register(approval("1.0.0"))
        .open()
        .await
        .unwrap();
    with_both.start_rollout(shadowing_approvals()).await.unwrap();
    // The worker without 2.0.0 learns of the rollout at its next look around.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (real, shadow) = loop {
        let real = stable_only
            .start_with("approval", &3u64, StartOptions::new().routing_key("order-3"))
            .await
            .unwrap();
        if let Some(shadow) = stable_only.instance(real).unwrap().record.shadowed_by {
            break (real, shadow);
        }
        // Before this worker knows the rollout, the start went to the newest version (2.0.0, for
        // the other worker): it waits there for a signal, harmlessly.
        assert!(tokio::time::Instant::now() < deadline, "never shadowed");
        tokio::time::sleep(Duration::from_millis(20)).await; // until the rollout reaches this worker
    };
    // The shadow waits on the worker with 2.0.0's code; the signal reaches it through the store.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while with_both.instance(shadow).ok().map(|info| info.status) != Some(strata::InstanceStatus::WaitingSignal) {
        assert!(tokio::time::Instant::now() < deadline, "the shadow never ran");
        tokio::time::sleep(Duration::from_millis(5)).await; // polling the other worker's progress
    }
    stable_only.signal(real, "approve", &4u64).await.unwrap();
    let seven = Outcome::Completed(rmp_serde::to_vec_named(&7u64).unwrap());
    assert_eq!(outcome_within(&stable_only, real).await, seven);
    assert_eq!(outcome_within(&with_both, shadow).await, seven);
    let pairs = pairs_compared(&with_both, "approval@2.0.0", 1).await;
    assert!(pairs.iter().any(|pair| pair.real == real && pair.matched), "{pairs:?}");
    stable_only.shutdown().await;
    with_both.shutdown().await;
}
