//! Watched rollouts (invariant 7 for automatic rollbacks): faulty and slow candidates rolled back
//! at the first stage with a sufficient sample, a healthy one promoted through every stage with
//! the old default draining, a restart mid-stage, too small a sample, operator controls, the
//! metrics exposition and the event stream. Time is a manual clock, advanced by the tests.
//!
//! The behaviours listed in `on_sled_and_postgres!` run on sled and on PostgreSQL; the rest are
//! need no store, or open the embedded store's directory themselves.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::probe::{self, Probe};
use common::*;
use strata::rollout::{Gate, RolloutStatus, Transition};
use strata::{
    Clock, Engine, Event, Gates, InstanceId, InstanceStatus, ManualClock, RolloutSpec, Stage, StartOptions, Version,
    VersionStatus,
};
use tokio::sync::broadcast;

on_sled_and_postgres!(
    a_failing_candidate_is_rolled_back_at_the_first_stage_with_enough_sample,
    a_slower_candidate_is_rolled_back_on_latency,
    a_healthy_candidate_is_promoted_through_every_stage_and_the_old_default_drains,
    a_restart_mid_stage_continues_at_that_stage_with_the_hold_already_elapsed,
    too_small_a_sample_neither_promotes_nor_rolls_back,
    operators_pause_resume_and_roll_back_and_the_record_keeps_every_transition,
    metrics_are_exported_in_prometheus_text,
    subscribers_see_events_in_order_and_a_slow_one_only_lags,
    a_rollback_can_move_the_candidates_in_flight_instances_back,
    the_active_rollout_routes_even_when_started_in_the_same_instant_as_a_rollback,
    impossible_rollouts_are_refused_naming_the_field_and_value_and_nothing_routes,
);

const HOLD: Duration = Duration::from_secs(600);

fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

async fn open(backend: &Backend, clock: &Arc<ManualClock>, candidate: &str) -> Engine {
    backend
        .builder()
        .clock(clock.clone())
        .register(probe::version("1.0.0"))
        .register(probe::version(candidate))
        .open()
        .await
        .unwrap()
}

/// Stages of 10 %, 50 % and 100 %, each held 10 minutes and needing `min_finished` finished
/// candidate instances; with `Gates::default()`, unwatched on purpose.
fn rollout(candidate: &str, min_finished: u64, gates: Gates) -> RolloutSpec {
    let unwatched = gates == Gates::default();
    let spec = RolloutSpec::new(probe::WORKFLOW, v(candidate), v("1.0.0"))
        .stage(Stage::new(10.0, HOLD, min_finished))
        .stage(Stage::new(50.0, HOLD, min_finished))
        .stage(Stage::new(100.0, HOLD, min_finished))
        .gates(gates);
    if unwatched {
        spec.unwatched()
    } else {
        spec
    }
}

/// Starts `count` probes numbered from `first` with distinct routing keys, waits for them all to
/// finish, and returns how many ran on each version.
async fn run_probes(engine: &Engine, first: u64, count: u64) -> std::collections::BTreeMap<String, u64> {
    let mut ids = Vec::new();
    for n in first..first + count {
        let options = StartOptions::new().routing_key(format!("customer-{n}"));
        let probe = Probe { n, wait: false };
        ids.push(engine.start_with(probe::WORKFLOW, &probe, options).await.unwrap());
    }
    let mut versions = std::collections::BTreeMap::new();
    for id in ids {
        let _ = outcome_within(engine, id).await;
        *versions
            .entry(engine.instance(id).unwrap().version().to_string())
            .or_default() += 1;
    }
    versions
}

fn status(engine: &Engine, name: &str) -> (RolloutStatus, usize) {
    let record = engine.rollout(name).unwrap();
    (record.status, record.stage)
}

async fn a_failing_candidate_is_rolled_back_at_the_first_stage_with_enough_sample(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.0").await;
    let mut events = engine.subscribe();
    let spec = rollout(
        "2.0.0",
        20,
        Gates {
            max_error_rate_increase: Some(0.1),
            ..Gates::default()
        },
    );
    engine.start_rollout(spec).await.unwrap();
    let mut first = 0;
    while status(&engine, "probe@2.0.0").0 == RolloutStatus::Running {
        assert!(first < 5_000, "never rolled back");
        run_probes(&engine, first, 100).await;
        first += 100;
    }
    let rolled_back = wait_for_event(&mut events, |event| matches!(event, Event::RolloutRolledBack { .. })).await;
    assert!(
        matches!(&rolled_back, Event::RolloutRolledBack { gate: Some(Gate::ErrorRateIncrease), reason, .. } if reason.contains("error rate")),
        "{rolled_back:?}"
    );
    let record = engine.rollout("probe@2.0.0").unwrap();
    assert_eq!(record.stage, 0, "rolled back in the first stage");
    let Some(Transition::RolledBack { candidate, stable, .. }) = record.history.last().map(|last| &last.transition)
    else {
        panic!("{:?}", record.history)
    };
    assert!(candidate.finished >= 20 && candidate.failed > 0, "{candidate:?}");
    assert_eq!(stable.failed, 0);
    // From the next routing decision on, nothing reaches the candidate.
    let after = run_probes(&engine, 100_000, 200).await;
    assert_eq!(after.get("2.0.0"), None, "{after:?}");
    assert_eq!(after.get("1.0.0"), Some(&200));
    engine.shutdown().await;
}

async fn a_slower_candidate_is_rolled_back_on_latency(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.2").await;
    let gates = Gates {
        max_latency_multiplier: Some(3.0),
        max_error_rate_increase: Some(0.1),
        ..Gates::default()
    };
    let spec = RolloutSpec {
        stages: vec![Stage::new(30.0, HOLD, 20), Stage::new(100.0, HOLD, 20)],
        ..rollout("2.0.2", 20, gates)
    };
    engine.start_rollout(spec).await.unwrap();
    let mut first = 0;
    while status(&engine, "probe@2.0.2").0 == RolloutStatus::Running {
        assert!(first < 3_000, "never rolled back");
        run_probes(&engine, first, 50).await;
        first += 50;
    }
    let record = engine.rollout("probe@2.0.2").unwrap();
    assert_eq!(record.status, RolloutStatus::RolledBack);
    let Some(Transition::RolledBack { gate, .. }) = record.history.last().map(|last| &last.transition) else {
        panic!("{:?}", record.history)
    };
    assert_eq!(*gate, Some(Gate::LatencyMultiplier));
    engine.shutdown().await;
}

async fn a_healthy_candidate_is_promoted_through_every_stage_and_the_old_default_drains(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.1").await;
    // Three instances of the stable version stay live through the rollout.
    let mut waiting = Vec::new();
    for n in 0..3 {
        let options = StartOptions::new().version("=1.0.0");
        let id = engine
            .start_with(probe::WORKFLOW, &Probe { n, wait: true }, options)
            .await
            .unwrap();
        waiting.push(id);
    }
    let mut events = engine.subscribe();
    let gates = Gates {
        max_error_rate_increase: Some(0.05),
        min_success_rate: Some(0.95),
        max_consecutive_failures: Some(3),
        ..Gates::default()
    };
    engine.start_rollout(rollout("2.0.1", 20, gates)).await.unwrap();
    let mut first = 1_000;
    let mut shares = Vec::new();
    while status(&engine, "probe@2.0.1").0 == RolloutStatus::Running {
        assert!(first < 20_000, "never promoted");
        let ran = run_probes(&engine, first, 100).await;
        first += 100;
        let stage = status(&engine, "probe@2.0.1").1;
        shares.push((stage, ran.get("2.0.1").copied().unwrap_or(0)));
        let record = engine.rollout("probe@2.0.1").unwrap();
        let finished_on_candidate =
            engine.version(probe::WORKFLOW, "2.0.1").unwrap().counters.completed - record.candidate_baseline.completed;
        if finished_on_candidate >= 20 {
            clock.advance(HOLD);
            wait_until(&engine, |engine| {
                status(engine, "probe@2.0.1") != (RolloutStatus::Running, stage)
            })
            .await;
        }
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&"promoted".to_string()) {
        match wait_for_event(&mut events, |event| {
            matches!(
                event,
                Event::RolloutStarted { .. } | Event::RolloutAdvanced { .. } | Event::RolloutPromoted { .. }
            )
        })
        .await
        {
            Event::RolloutStarted { .. } => seen.push("started".to_string()),
            Event::RolloutAdvanced {
                stage, basis_points, ..
            } => seen.push(format!("stage {stage} at {basis_points}")),
            _ => seen.push("promoted".to_string()),
        }
    }
    assert_eq!(seen, ["started", "stage 1 at 5000", "stage 2 at 10000", "promoted"]);
    // Each advance and the promotion keep what the stage they left showed: the candidate had
    // finished its minimum there, and the figures stay after the rollout ended.
    let record = engine.rollout("probe@2.0.1").unwrap();
    let passed: Vec<(usize, u64)> = record
        .history
        .iter()
        .filter(|entry| matches!(entry.transition, Transition::Advanced { .. } | Transition::Promoted))
        .map(|entry| {
            let figures = entry
                .figures
                .as_ref()
                .unwrap_or_else(|| panic!("{entry:?} keeps its figures"));
            (entry.stage, figures.candidate.finished)
        })
        .collect();
    assert_eq!(passed.iter().map(|(stage, _)| *stage).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(passed.iter().all(|(_, finished)| *finished >= 20), "{passed:?}");
    assert!(record.history[0].figures.is_none(), "a start has no stage behind it");
    // The share grew with the stages (10 % of 100 probes is about 10; 100 % is all of them).
    let at = |wanted: usize| {
        shares
            .iter()
            .filter(move |(stage, _)| *stage == wanted)
            .map(|(_, count)| *count)
    };
    assert!(at(0).all(|count| count < 40), "{shares:?}");
    assert!(at(2).all(|count| count == 100), "{shares:?}");

    // The old default drains through the store after the promotion, and says so.
    wait_for_event(
        &mut events,
        |event| matches!(event, Event::VersionDraining { key, .. } if key.version == v("1.0.0")),
    )
    .await;
    let stable = engine.version(probe::WORKFLOW, "1.0.0").unwrap();
    assert_eq!((stable.status, stable.counters.live), (VersionStatus::Draining, 3));
    let after = run_probes(&engine, 50_000, 50).await;
    assert_eq!(after.get("2.0.1"), Some(&50), "the candidate is the default now");
    for id in &waiting {
        engine.signal(*id, "go", &()).await.unwrap();
    }
    wait_for_event(
        &mut events,
        |event| matches!(event, Event::VersionDrained { key, .. } if key.version == v("1.0.0")),
    )
    .await;
    engine.shutdown().await;
}

async fn a_restart_mid_stage_continues_at_that_stage_with_the_hold_already_elapsed(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.1").await;
    let spec = RolloutSpec {
        stages: vec![Stage::new(50.0, HOLD, 20), Stage::new(100.0, HOLD, 20)],
        ..rollout("2.0.1", 20, Gates::default())
    };
    engine.start_rollout(spec).await.unwrap();
    run_probes(&engine, 0, 100).await;
    clock.advance(HOLD);
    wait_until(&engine, |engine| {
        status(engine, "probe@2.0.1") == (RolloutStatus::Running, 1)
    })
    .await;
    run_probes(&engine, 100, 30).await; // all on the candidate now: stage 1's sample is there
    clock.advance(Duration::from_secs(240));
    engine.shutdown().await;

    let engine = open(&backend, &clock, "2.0.1").await;
    let record = engine.rollout("probe@2.0.1").unwrap();
    assert_eq!((record.status, record.stage), (RolloutStatus::Running, 1));
    assert_eq!(record.hold_elapsed(clock.now_ms()), Duration::from_secs(240));
    clock.advance(Duration::from_secs(300));
    engine.evaluate_rollouts().await.unwrap();
    assert_eq!(
        status(&engine, "probe@2.0.1"),
        (RolloutStatus::Running, 1),
        "9 of 10 minutes held"
    );
    clock.advance(Duration::from_secs(60));
    wait_until(&engine, |engine| {
        status(engine, "probe@2.0.1").0 == RolloutStatus::Promoted
    })
    .await;
    engine.shutdown().await;
}

async fn too_small_a_sample_neither_promotes_nor_rolls_back(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.0").await;
    let gates = Gates {
        min_success_rate: Some(0.99),
        ..Gates::default()
    };
    engine.start_rollout(rollout("2.0.0", 500, gates)).await.unwrap();
    let ran = run_probes(&engine, 0, 300).await;
    let on_candidate = ran.get("2.0.0").copied().unwrap_or(0);
    assert!(on_candidate > 0 && on_candidate < 500, "{ran:?}");
    clock.advance(HOLD * 3);
    engine.evaluate_rollouts().await.unwrap();
    assert_eq!(status(&engine, "probe@2.0.0"), (RolloutStatus::Running, 0));
    let record = engine.rollout("probe@2.0.0").unwrap();
    assert_eq!(record.history.len(), 1, "only the start: {:?}", record.history);
    engine.shutdown().await;
}

async fn operators_pause_resume_and_roll_back_and_the_record_keeps_every_transition(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.1").await;
    engine
        .start_rollout(rollout("2.0.1", 10, Gates::default()))
        .await
        .unwrap();
    engine.pause_rollout("probe@2.0.1").await.unwrap();
    run_probes(&engine, 0, 300).await;
    clock.advance(HOLD * 2);
    engine.evaluate_rollouts().await.unwrap();
    assert_eq!(
        status(&engine, "probe@2.0.1"),
        (RolloutStatus::Paused, 0),
        "paused: no decision"
    );
    engine.resume_rollout("probe@2.0.1").await.unwrap();
    let record = engine.rollout("probe@2.0.1").unwrap();
    assert_eq!(
        record.hold_elapsed(clock.now_ms()),
        Duration::ZERO,
        "the pause did not count as hold"
    );
    engine.rollback_rollout("probe@2.0.1").await.unwrap();
    let after = run_probes(&engine, 1_000, 100).await;
    assert_eq!(after.get("2.0.1"), None);
    let error = engine.resume_rollout("probe@2.0.1").await.unwrap_err();
    assert!(error.to_string().contains("RolledBack"), "{error}");
    engine.shutdown().await;

    // Persisted: the history survives a restart.
    let engine = open(&backend, &clock, "2.0.1").await;
    let history: Vec<String> = engine.rollout_history(probe::WORKFLOW)[0]
        .history
        .iter()
        .map(|entry| match &entry.transition {
            Transition::RolledBack { gate, .. } => format!("rolled back by {gate:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(history, ["Started", "Paused", "Resumed", "rolled back by None"]);
    // The candidate rolls out again under the next free `~N` of its default name.
    let renamed = engine
        .start_rollout(rollout("2.0.1", 10, Gates::default()))
        .await
        .unwrap();
    assert_eq!(renamed, "probe@2.0.1~2");
    engine.shutdown().await;
}

async fn metrics_are_exported_in_prometheus_text(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.0").await;
    for n in 0..10u64 {
        let options = StartOptions::new().version("=2.0.0");
        let id = engine
            .start_with(probe::WORKFLOW, &Probe { n, wait: false }, options)
            .await
            .unwrap();
        let _ = outcome_within(&engine, id).await;
    }
    let text = engine.metrics_text();
    let labels = "workflow=\"probe\",version=\"2.0.0\"";
    for line in [
        format!("strata_instances_started_total{{{labels}}} 10"),
        format!("strata_instances_completed_total{{{labels}}} 5"),
        format!("strata_instances_failed_total{{{labels}}} 5"),
        format!("strata_live_instances{{{labels}}} 0"),
        format!("strata_step_attempts_total{{{labels}}} 20"),
        format!("strata_step_failures_total{{{labels}}} 5"),
        format!("strata_step_duration_seconds_count{{{labels}}} 20"),
        format!("strata_routing_decisions_total{{{labels},reason=\"requested\"}} 10"),
    ] {
        assert!(
            text.lines().any(|candidate| candidate == line),
            "missing {line} in\n{text}"
        );
    }
    assert!(text.contains("# TYPE strata_step_duration_seconds summary"));
    assert!(text.contains(&format!("strata_step_duration_seconds{{{labels},quantile=\"0.95\"}}")));
    let window = engine
        .metrics(probe::WORKFLOW, "2.0.0", Duration::from_secs(60))
        .unwrap();
    assert_eq!((window.started, window.completed, window.failed), (10, 5, 5));
    clock.advance(Duration::from_secs(3_600));
    let later = engine
        .metrics(probe::WORKFLOW, "2.0.0", Duration::from_secs(60))
        .unwrap();
    assert_eq!(later.finished(), 0, "an hour later the window is empty");
    engine.shutdown().await;
}

async fn subscribers_see_events_in_order_and_a_slow_one_only_lags(backend: Backend) {
    let engine = backend
        .builder()
        .event_capacity(256)
        .register(probe::version("1.0.0"))
        .open()
        .await
        .unwrap();
    let mut attentive = engine.subscribe();
    let mut asleep = engine.subscribe(); // never read until the end
    let reader = tokio::spawn(async move {
        let mut seen: Vec<(InstanceId, &'static str)> = Vec::new();
        let mut finished = 0;
        while finished < 1_000 {
            match attentive.recv().await {
                Ok(Event::InstanceStarted { id, .. }) => seen.push((id, "started")),
                Ok(Event::InstanceFinished { id, status, .. }) => {
                    assert_eq!(status, InstanceStatus::Completed);
                    seen.push((id, "finished"));
                    finished += 1;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => panic!("the attentive reader lagged by {missed}"),
                Err(error) => panic!("{error}"),
            }
        }
        seen
    });
    let mut ids = Vec::new();
    for n in 0..1_000 {
        ids.push(engine.start(probe::WORKFLOW, &Probe { n, wait: false }).await.unwrap());
        if n % 10 == 9 {
            tokio::task::yield_now().await;
        }
    }
    for id in &ids {
        let _ = outcome_within(&engine, *id).await;
    }
    let seen = reader.await.unwrap();
    for id in &ids {
        let started = seen.iter().position(|entry| *entry == (*id, "started"));
        let finished = seen.iter().position(|entry| *entry == (*id, "finished"));
        assert!(
            started.is_some() && started < finished,
            "instance {id}: {started:?} {finished:?}"
        );
    }
    match asleep.recv().await {
        Err(broadcast::error::RecvError::Lagged(missed)) => assert!(missed > 1_000, "lagged by {missed}"),
        other => panic!("the slow subscriber should be told it lagged, got {other:?}"),
    }
    engine.shutdown().await;
}

async fn a_rollback_can_move_the_candidates_in_flight_instances_back(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.0").await;
    let spec = RolloutSpec {
        stages: vec![Stage::new(100.0, HOLD, 10)],
        ..rollout("2.0.0", 10, Gates::default())
    }
    .on_rollback(strata::OnRollback::MoveBack);
    engine.start_rollout(spec).await.unwrap();
    let mut waiting = Vec::new();
    for n in 0..6 {
        let id = engine.start(probe::WORKFLOW, &Probe { n, wait: true }).await.unwrap();
        assert_eq!(engine.instance(id).unwrap().version(), &v("2.0.0"));
        waiting.push(id);
    }
    for id in &waiting {
        wait_for_status(&engine, *id, InstanceStatus::WaitingSignal).await;
    }
    engine.rollback_rollout("probe@2.0.0").await.unwrap();
    for (n, id) in waiting.iter().enumerate() {
        assert_eq!(engine.instance(*id).unwrap().version(), &v("1.0.0"), "moved back");
        engine.signal(*id, "go", &()).await.unwrap();
        // Even probes fail on 2.0.0; moved back, they complete on 1.0.0.
        assert_eq!(outcome_within(&engine, *id).await.output::<u64>().unwrap(), n as u64);
    }
    let candidate = engine.version(probe::WORKFLOW, "2.0.0").unwrap().counters;
    assert_eq!((candidate.live, candidate.moved_out), (0, 6));
    engine.shutdown().await;
}

async fn the_active_rollout_routes_even_when_started_in_the_same_instant_as_a_rollback(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now()); // never advanced: every transition is at one instant
    let engine = open(&backend, &clock, "2.0.0").await;
    engine.register(probe::version("2.0.1")).unwrap();
    let everything = |candidate: &str| RolloutSpec {
        stages: vec![Stage::new(100.0, HOLD, 10)],
        ..rollout(candidate, 10, Gates::default())
    };
    engine.start_rollout(everything("2.0.0")).await.unwrap();
    engine.rollback_rollout("probe@2.0.0").await.unwrap();
    // Named to sort before the rolled-back one, so name order cannot decide for it.
    engine.start_rollout(everything("2.0.1").named("a-fix")).await.unwrap();
    let ran = run_probes(&engine, 0, 20).await;
    assert_eq!(ran.get("2.0.1"), Some(&20), "{ran:?}");
    engine.shutdown().await;
}

async fn impossible_rollouts_are_refused_naming_the_field_and_value_and_nothing_routes(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = open(&backend, &clock, "2.0.0").await;
    let cases = [
        (
            RolloutSpec::new(probe::WORKFLOW, v("2.0.0"), v("1.0.0")).stage(Stage::new(150.0, HOLD, 1)),
            "stages[0] = 150 %",
        ),
        (
            RolloutSpec::new(probe::WORKFLOW, v("2.0.0"), v("1.0.0")).stage(Stage::new(f64::NAN, HOLD, 1)),
            "stages[0] = NaN %",
        ),
        (
            rollout(
                "2.0.0",
                1,
                Gates {
                    max_latency_multiplier: Some(f64::NAN),
                    ..Gates::default()
                },
            ),
            "gates.max_latency_multiplier = NaN",
        ),
    ];
    for (spec, expected) in cases {
        let name = spec.name.clone();
        let error = engine.start_rollout(spec).await.unwrap_err();
        assert!(
            error.to_string().contains(expected),
            "'{error}' does not say '{expected}'"
        );
        assert!(engine.rollout(&name).is_none(), "a refused rollout is not recorded");
    }
    run_probes(&engine, 0, 50).await;
    let reasons: Vec<_> = engine
        .routing_counts()
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect();
    assert_eq!(
        reasons,
        vec![strata::routing::RouteReason::Newest],
        "no rollout rule routed a start"
    );
    engine.shutdown().await;
}
