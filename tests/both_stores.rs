//! The behaviours every store must give, run against sled and PostgreSQL alike (modules `sled`
//! and `postgres`, and PostgreSQL through PgBouncer: `session_pooled`, `transaction_pooled`):
//! pinning, residency and missing code (invariants 1 and 3), durable timers and signals, state
//! migration (invariant 6), watched rollouts (invariant 7), config history (invariant 5), moves,
//! and listing finished instances — each across a restart. What a store does at the `Store` seam
//! alone (the residency rule on one write, compare-and-set writes, ...) is the conformance kit's
//! (`crates/store/src/conformance.rs`), run by each backend's own tests.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use common::probe::{self, Probe};
use common::tally::{self, TallyV2};
use common::*;
use strata::migrate::MigrationState;
use strata::registry::RegistryError;
use strata::rollout::{Gate, RolloutStatus, Transition};
use strata::{
    EngineError, Event, Gates, InstanceFilter, InstanceStatus, ManualClock, MigrationJob, MoveRequest, Next,
    RolloutSpec, Stage, StartOptions, StepCtx, StepResult, Version, VersionStatus, WorkflowVersion,
};
use strata_workflows::order::{self, OrderOutput};

fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

on_both_stores!(
    instances_stay_pinned_across_a_restart_while_new_ones_go_to_the_new_version,
    a_version_drains_exactly_when_its_last_instance_ends,
    a_drain_is_undone_with_instances_live_or_after_the_last_finished_and_stays_undone_across_a_restart,
    every_instance_finished_with_the_last_one_is_finished_and_announced_before_the_version_drains,
    live_instances_without_their_code_are_refused_by_name_or_wait_for_a_worker,
    durable_timers_and_signals_survive_a_restart,
    background_migration_survives_a_restart_and_migrates_each_record_once,
    a_failing_candidate_is_rolled_back_and_its_record_survives_a_restart,
    a_candidate_rolls_out_again_after_its_rollout_ended_and_neither_version_drains_under_an_active_one,
    every_applied_config_is_kept_and_any_can_be_restored_after_a_restart,
    moved_instances_keep_exact_counters_on_both_versions,
    finished_instances_are_listed_and_read_after_a_restart,
    writes_from_an_older_copy_never_undo_newer_ones,
    finished_instances_past_the_retention_period_are_removed_and_nothing_else_across_a_restart,
    a_listing_pages_through_live_and_finished_instances_of_one_workflow_in_id_order,
);

async fn instances_stay_pinned_across_a_restart_while_new_ones_go_to_the_new_version(backend: Backend) {
    let engine = backend.builder().register(order::v1_0()).open().await.unwrap();
    let input = small_order(1);
    let old = engine.start(order::WORKFLOW, &input).await.unwrap();
    wait_for_status(&engine, old, InstanceStatus::WaitingSignal).await;
    engine.shutdown().await;

    let engine = backend
        .builder()
        .register(order::v1_0())
        .register(order::v2_0())
        .open()
        .await
        .unwrap();
    let new = engine.start(order::WORKFLOW, &small_order(2)).await.unwrap();
    assert_eq!(engine.instance(new).unwrap().version().to_string(), "2.0.0");
    engine
        .signal(old, order::PAYMENT_SIGNAL, &full_payment(&input))
        .await
        .unwrap();
    let shipped: OrderOutput = outcome_within(&engine, old).await.output().unwrap();
    assert_eq!(shipped.status, "shipped");
    let finished = engine.instance(old).unwrap();
    assert_eq!(finished.version().to_string(), "1.0.0");
    let state = order::order_state(finished.state_schema(), finished.state_bytes()).unwrap();
    assert_eq!(
        state.history,
        order::expected_history("1.0.0"),
        "only 1.0.0's steps ran"
    );
    engine.shutdown().await;
}

async fn a_version_drains_exactly_when_its_last_instance_ends(backend: Backend) {
    let engine = backend.with_tally().await;
    let ids = tally::start_waiting(&engine, 0..3u64, StartOptions::new()).await;
    assert_eq!(
        engine.drain(tally::WORKFLOW, "1.0.0").await.unwrap(),
        VersionStatus::Draining
    );
    let refused = engine.retire(tally::WORKFLOW, "1.0.0").await.unwrap_err();
    assert!(
        matches!(
            refused,
            EngineError::Registry(RegistryError::LiveInstances { live: 3, .. })
        ),
        "{refused}"
    );
    engine.shutdown().await;

    let engine = backend.with_tally().await;
    let info = engine.version(tally::WORKFLOW, "1.0.0").unwrap();
    assert_eq!(
        (info.status, info.counters.live, info.counters.started),
        (VersionStatus::Draining, 3, 3)
    );
    let mut events = engine.subscribe();
    for (index, id) in ids.iter().enumerate() {
        engine.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&engine, *id).await;
        let info = engine.version(tally::WORKFLOW, "1.0.0").unwrap();
        assert_eq!(info.counters.live, (ids.len() - index - 1) as u64);
    }
    wait_for_event(&mut events, |event| matches!(event, Event::VersionDrained { .. })).await;
    let info = engine.version(tally::WORKFLOW, "1.0.0").unwrap();
    assert_eq!(info.status, VersionStatus::Drained);
    assert!(info.safe_to_remove());
    assert_eq!(info.counters.completed, 3);
    engine.retire(tally::WORKFLOW, "1.0.0").await.unwrap();
    engine.shutdown().await;

    let engine = backend.builder().open().await.unwrap();
    let info = engine.version(tally::WORKFLOW, "1.0.0").unwrap();
    assert_eq!(
        (info.status, info.counters.live, info.counters.completed),
        (VersionStatus::Retired, 0, 3)
    );
    engine.shutdown().await;
}

/// An operator who drained the only version of a workflow by mistake undoes it: while it still
/// has live instances (it then never drains as they finish) and after it drained (its code is
/// still registered); the undo survives a restart. A retired version and one whose code is not
/// registered cannot be made active again.
async fn a_drain_is_undone_with_instances_live_or_after_the_last_finished_and_stays_undone_across_a_restart(
    backend: Backend,
) {
    let engine = backend.with_tally().await;
    let mut events = engine.subscribe();
    let waiting = tally::start_waiting(&engine, 0..2u64, StartOptions::new()).await;
    engine.drain(tally::WORKFLOW, "1.0.0").await.unwrap();
    let refused = engine.start(tally::WORKFLOW, &7u64).await.unwrap_err();
    assert!(
        matches!(refused, EngineError::Registry(RegistryError::NoRoutableVersion { .. })),
        "{refused}"
    );
    assert_eq!(
        engine.activate(tally::WORKFLOW, "1.0.0").await.unwrap(),
        VersionStatus::Active
    );
    let activated = wait_for_event(&mut events, |event| matches!(event, Event::VersionActivated { .. })).await;
    let Event::VersionActivated { key, counters } = activated else {
        unreachable!()
    };
    assert_eq!((key.version, counters.live), (v("1.0.0"), 2));
    let info = engine.version(tally::WORKFLOW, "1.0.0").unwrap();
    assert!(info.accepts_starts && info.status == VersionStatus::Active, "{info:?}");
    assert_eq!(
        engine.activate(tally::WORKFLOW, "1.0.0").await.unwrap(),
        VersionStatus::Active,
        "activating an active version changes nothing"
    );
    let started = tally::start_waiting(&engine, 2..3u64, StartOptions::new()).await;
    for id in waiting.iter().chain(&started) {
        engine.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&engine, *id).await;
    }
    let info = engine.version(tally::WORKFLOW, "1.0.0").unwrap();
    assert_eq!(
        (info.status, info.counters.live, info.counters.completed),
        (VersionStatus::Active, 0, 3),
        "an undone drain does not drain when the last instance ends"
    );

    assert_eq!(
        engine.drain(tally::WORKFLOW, "1.0.0").await.unwrap(),
        VersionStatus::Drained
    );
    assert_eq!(
        engine.activate(tally::WORKFLOW, "1.0.0").await.unwrap(),
        VersionStatus::Active,
        "a drained version whose code is registered comes back"
    );
    engine.shutdown().await;

    let engine = backend.with_tally().await;
    assert_eq!(
        engine.version(tally::WORKFLOW, "1.0.0").unwrap().status,
        VersionStatus::Active,
        "the undo is stored"
    );
    let id = tally::start_waiting(&engine, [1u64], StartOptions::new()).await[0];
    engine.signal(id, tally::GO, &()).await.unwrap();
    outcome_within(&engine, id).await;
    engine.drain(tally::WORKFLOW, "1.0.0").await.unwrap();
    engine.shutdown().await;

    let engine = backend.builder().open().await.unwrap();
    let refused = engine.activate(tally::WORKFLOW, "1.0.0").await.unwrap_err();
    assert!(
        matches!(refused, EngineError::Registry(RegistryError::CodeNotRegistered { .. })),
        "{refused}"
    );
    engine.retire(tally::WORKFLOW, "1.0.0").await.unwrap();
    let refused = engine.activate(tally::WORKFLOW, "1.0.0").await.unwrap_err();
    assert!(
        matches!(refused, EngineError::Registry(RegistryError::Retired { .. })),
        "{refused}"
    );
    engine.shutdown().await;
}

/// Many instances of a draining version finish at once (in one group commit, mostly): by the time
/// `VersionDrained` arrives, each of them has been announced finished, none is listed as live,
/// and each caller waiting for its output has it.
async fn every_instance_finished_with_the_last_one_is_finished_and_announced_before_the_version_drains(
    backend: Backend,
) {
    const INSTANCES: u64 = 400;
    let engine = backend
        .builder()
        .event_capacity(1 << 16)
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let ids = tally::start_waiting(&engine, 0..INSTANCES, StartOptions::new()).await;
    engine.drain(tally::WORKFLOW, "1.0.0").await.unwrap();
    let outputs: Vec<_> = ids
        .iter()
        .map(|id| {
            let engine = engine.clone();
            let id = *id;
            tokio::spawn(async move { engine.outcome(id).await })
        })
        .collect();
    let mut events = engine.subscribe();
    let watcher = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut finished = std::collections::HashSet::new();
            loop {
                match events.recv().await.expect("no event is missed") {
                    Event::InstanceFinished { id, .. } => {
                        finished.insert(id);
                    }
                    Event::VersionDrained { counters, .. } => {
                        // What a subscriber sees the moment it hears of the drain.
                        let live = engine
                            .list(&InstanceFilter::workflow(tally::WORKFLOW).with_version(v("1.0.0")))
                            .unwrap()
                            .into_iter()
                            .filter(|info| !info.status.is_terminal())
                            .count();
                        let info = engine.version(tally::WORKFLOW, "1.0.0").unwrap();
                        return (finished, counters.live, live, info.counters.live);
                    }
                    _ => {}
                }
            }
        })
    };
    // Every signal at once, so that the finishes share group commits.
    let signals: Vec<_> = ids
        .iter()
        .map(|id| {
            let engine = engine.clone();
            let id = *id;
            tokio::spawn(async move { engine.signal(id, tally::GO, &()).await })
        })
        .collect();
    for signal in signals {
        signal.await.unwrap().unwrap();
    }
    let (finished, event_live, listed_live, version_live) = tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .expect("the version drained")
        .unwrap();
    assert_eq!(
        finished.len() as u64,
        INSTANCES,
        "instances announced finished before VersionDrained"
    );
    assert_eq!((event_live, listed_live, version_live), (0, 0, 0));
    for output in outputs {
        let outcome = tokio::time::timeout(Duration::from_secs(30), output)
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    engine.shutdown().await;
}

async fn a_candidate_rolls_out_again_after_its_rollout_ended_and_neither_version_drains_under_an_active_one(
    backend: Backend,
) {
    let open = || {
        backend
            .builder()
            .register(probe::version("1.0.0"))
            .register(probe::version("2.0.0"))
            .open()
    };
    let engine = open().await.unwrap();
    let spec = || {
        RolloutSpec::new(probe::WORKFLOW, v("2.0.0"), v("1.0.0"))
            .stage(Stage::new(50.0, Duration::from_secs(600), 10))
            .gates(Gates {
                max_consecutive_failures: Some(3),
                ..Gates::default()
            })
    };
    let first = engine.start_rollout(spec()).await.unwrap();
    assert_eq!(first, "probe@2.0.0");
    for version in ["1.0.0", "2.0.0"] {
        let refused = engine.drain(probe::WORKFLOW, version).await.unwrap_err();
        assert!(
            matches!(&refused, EngineError::Rollout(strata::rollout::RolloutError::VersionInRollout { name, .. }) if name == "probe@2.0.0"),
            "{refused}"
        );
    }
    engine.rollback_rollout(&first).await.unwrap();
    engine.shutdown().await;

    let engine = open().await.unwrap();
    let second = engine.start_rollout(spec()).await.unwrap();
    assert_eq!(
        second, "probe@2.0.0~2",
        "a finished rollout does not block the next one of its candidate"
    );
    assert_eq!(engine.rollout(&first).unwrap().status, RolloutStatus::RolledBack);
    assert_eq!(engine.rollout(&second).unwrap().status, RolloutStatus::Running);
    let refused = engine.start_rollout(spec()).await.unwrap_err();
    assert!(
        refused.to_string().contains("still Running"),
        "one active rollout per workflow: {refused}"
    );
    engine.rollback_rollout(&second).await.unwrap();
    // With no rollout active, draining goes through.
    assert_eq!(
        engine.drain(probe::WORKFLOW, "2.0.0").await.unwrap(),
        VersionStatus::Drained
    );
    engine.shutdown().await;
}

async fn live_instances_without_their_code_are_refused_by_name_or_wait_for_a_worker(backend: Backend) {
    let open_with_code = || backend.builder().register(tally::on_schema_1("1.0.0")).open();
    let engine = open_with_code().await.unwrap();
    let ids = tally::start_waiting(&engine, 0..2, StartOptions::new()).await;
    engine.shutdown().await;
    match &backend {
        // One process opens sled: without the code nothing can run them, so opening refuses.
        Backend::Sled(_) => {
            let refused = backend.builder().open().await.err().expect("open without the code");
            let message = refused.to_string();
            assert!(
                matches!(&refused, EngineError::MissingVersions { missing } if missing.len() == 1 && missing[0].1 == 2),
                "{message}"
            );
            assert!(message.contains("tally@1.0.0 (2 live)"), "{message}");
            let parked = backend.builder().park_unregistered(true).open().await.unwrap();
            let listed = parked
                .list(&InstanceFilter::default().with_status(InstanceStatus::Parked))
                .unwrap();
            assert_eq!(listed.len(), 2);
            parked.shutdown().await;
        }
        // Many processes share PostgreSQL: another worker may have the code, so the instances
        // wait for one, and the version says it has none.
        Backend::Postgres(_) | Backend::Pooled(..) => {
            let without = backend.builder().open().await.unwrap();
            let info = without.version(tally::WORKFLOW, "1.0.0").unwrap();
            assert_eq!(info.counters.live, 2);
            assert!(info.workers.is_empty(), "{:?}", info.workers);
            assert!(!info.registered);
            let listed = without.list(&InstanceFilter::workflow(tally::WORKFLOW)).unwrap();
            assert_eq!(listed.iter().map(|info| info.id()).collect::<Vec<_>>(), ids);
            let with = open_with_code().await.unwrap();
            let info = without.version(tally::WORKFLOW, "1.0.0").unwrap();
            assert_eq!(
                info.workers,
                vec![with.worker_id()],
                "the worker with the code can run it"
            );
            for id in &ids {
                with.signal(*id, tally::GO, &()).await.unwrap();
                outcome_within(&with, *id).await;
            }
            assert_eq!(without.version(tally::WORKFLOW, "1.0.0").unwrap().counters.live, 0);
            with.shutdown().await;
            without.shutdown().await;
        }
    }
}

async fn nap(_ctx: StepCtx, _state: &mut u32) -> StepResult<String> {
    Ok(Next::sleep(Duration::from_secs(3_600), "wait"))
}

async fn wait_for_wake(_ctx: StepCtx, _state: &mut u32) -> StepResult<String> {
    Ok(Next::wait_signal_with_timeout(
        "wake",
        "end",
        Duration::from_secs(86_400),
    ))
}

async fn end(ctx: StepCtx, _state: &mut u32) -> StepResult<String> {
    Ok(Next::complete(if ctx.timed_out() {
        "timed out".to_string()
    } else {
        format!("woken with {}", ctx.signal::<u32>()?.unwrap_or_default())
    }))
}

/// Sleeps an hour, then waits a day for `wake`.
fn napper() -> WorkflowVersion<u32, u32, String> {
    WorkflowVersion::new("napper", "1.0.0")
        .init(|n: u32| n)
        .signal_type::<u32>("wake")
        .step("nap", nap)
        .step("wait", wait_for_wake)
        .step("end", end)
}

async fn durable_timers_and_signals_survive_a_restart(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let open = || backend.builder().clock(clock.clone()).register(napper()).open();
    let engine = open().await.unwrap();
    let early = engine.start("napper", &1u32).await.unwrap();
    let late = engine.start("napper", &2u32).await.unwrap();
    wait_for_status(&engine, early, InstanceStatus::Sleeping).await;
    wait_for_status(&engine, late, InstanceStatus::Sleeping).await;
    // A signal sent before the instance waits for it is kept until it does.
    engine.signal(early, "wake", &7u32).await.unwrap();
    engine.shutdown().await;

    let engine = open().await.unwrap();
    assert_eq!(engine.instance(late).unwrap().status, InstanceStatus::Sleeping);
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(
        outcome_within(&engine, early).await.output::<String>().unwrap(),
        "woken with 7"
    );
    wait_for_status(&engine, late, InstanceStatus::WaitingSignal).await;
    engine.shutdown().await;

    let engine = open().await.unwrap();
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(
        outcome_within(&engine, late).await.output::<String>().unwrap(),
        "timed out"
    );
    engine.shutdown().await;
}

async fn background_migration_survives_a_restart_and_migrates_each_record_once(backend: Backend) {
    let engine = backend.with_tally().await;
    // Counts clear of the ones the tally migration refuses (13) or holds (999).
    let ids = tally::start_waiting(&engine, 100..140u64, StartOptions::new()).await;
    engine.shutdown().await;

    let calls = Arc::new(AtomicU64::new(0));
    let open = || {
        backend
            .builder()
            .register(tally::on_schema_2("1.0.0"))
            .migration(tally::migration(calls.clone()))
            .open()
    };
    let engine = open().await.unwrap();
    let mut events = engine.subscribe();
    // Batches of 10 at 100 records a second: the pause lands while the job has work left.
    let job = engine
        .migrate_states(MigrationJob::new(tally::WORKFLOW).batch_size(10).max_per_second(100))
        .unwrap();
    wait_for_event(&mut events, |event| matches!(event, Event::MigrationProgress { .. })).await;
    job.pause();
    wait_until(&engine, |_| job.progress().state == MigrationState::Paused).await;
    let paused = job.progress();
    assert!(paused.migrated >= 10 && paused.remaining > 0, "{paused:?}");
    engine.shutdown().await;
    // The pause and the counts were stored; the job is back at the next open, still paused.
    let engine = open().await.unwrap();
    let job = engine.migration(tally::WORKFLOW).expect("the job resumed at open");
    assert_eq!(job.progress().state, MigrationState::Paused);
    assert_eq!(job.progress().migrated, paused.migrated);
    job.resume();
    let progress = tokio::time::timeout(Duration::from_secs(30), job.finished())
        .await
        .expect("the migration finished");
    assert_eq!(
        (progress.migrated, progress.failed, progress.remaining),
        (40, 0, 0),
        "{progress:?}"
    );
    for id in &ids {
        let info = engine.instance(*id).unwrap();
        assert_eq!(info.state_schema(), 2);
        let state: TallyV2 = info.state().unwrap();
        assert_eq!(state.stamps, 1, "instance {id} was migrated once");
        assert_eq!(state.doubled, state.count * 2);
    }
    engine.signal(ids[3], tally::GO, &()).await.unwrap();
    assert_eq!(
        outcome_within(&engine, ids[3]).await.output::<u64>().unwrap(),
        309,
        "103 + 2 × 103"
    );
    engine.shutdown().await;
}

async fn a_failing_candidate_is_rolled_back_and_its_record_survives_a_restart(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let open = || {
        backend
            .builder()
            .clock(clock.clone())
            .register(probe::version("1.0.0"))
            .register(probe::version("2.0.0"))
            .open()
    };
    let engine = open().await.unwrap();
    let spec = RolloutSpec::new(probe::WORKFLOW, v("2.0.0"), v("1.0.0"))
        .stage(Stage::new(50.0, Duration::from_secs(600), 10))
        .stage(Stage::new(100.0, Duration::from_secs(600), 10))
        .gates(Gates {
            max_error_rate_increase: Some(0.05),
            ..Gates::default()
        });
    let name = spec.name.clone();
    engine.start_rollout(spec).await.unwrap();
    let mut n = 0;
    while engine.rollout(&name).unwrap().status == RolloutStatus::Running {
        assert!(n < 2_000, "no rollback after {n} probes");
        let options = StartOptions::new().routing_key(format!("customer-{n}"));
        let id = engine
            .start_with(probe::WORKFLOW, &Probe { n, wait: false }, options)
            .await
            .unwrap();
        let _ = outcome_within(&engine, id).await;
        engine.evaluate_rollouts().await.unwrap();
        n += 1;
    }
    engine.shutdown().await;

    let engine = open().await.unwrap();
    let record = engine.rollout(&name).unwrap();
    assert_eq!(record.status, RolloutStatus::RolledBack);
    assert!(
        record.history.iter().any(|entry| matches!(
            entry.transition,
            Transition::RolledBack {
                gate: Some(Gate::ErrorRateIncrease),
                ..
            }
        )),
        "{:?}",
        record.history
    );
    for n in 10_000..10_050 {
        let options = StartOptions::new().routing_key(format!("customer-{n}"));
        let id = engine
            .start_with(probe::WORKFLOW, &Probe { n, wait: false }, options)
            .await
            .unwrap();
        assert_eq!(engine.instance(id).unwrap().version().to_string(), "1.0.0");
    }
    engine.shutdown().await;
}

async fn every_applied_config_is_kept_and_any_can_be_restored_after_a_restart(backend: Backend) {
    let open = || backend.builder().register(order::v1_0()).register(order::v2_0()).open();
    let engine = open().await.unwrap();
    let first = "[workflows.order]\ndefault = \"=1.0.0\"\n";
    let second = "[workflows.order]\ndefault = \"=2.0.0\"\n";
    assert_eq!(engine.apply_config("strata.toml", first).await.unwrap(), 1);
    assert_eq!(engine.apply_config("strata.toml", second).await.unwrap(), 2);
    engine
        .apply_config("strata.toml", "[workflows.order]\ndefault = \"^9\"\n")
        .await
        .unwrap_err();
    engine.shutdown().await;

    let engine = open().await.unwrap();
    let routed = engine.start(order::WORKFLOW, &small_order(1)).await.unwrap();
    assert_eq!(
        engine.instance(routed).unwrap().version().to_string(),
        "2.0.0",
        "generation 2 in force"
    );
    let history = engine.config_history().unwrap();
    let generations: Vec<(u64, &str)> = history
        .iter()
        .map(|record| (record.generation, record.text.as_str()))
        .collect();
    assert_eq!(
        generations,
        vec![(1, first), (2, second)],
        "the invalid config was not kept"
    );
    assert_eq!(engine.restore_config(1).await.unwrap(), 3);
    let routed = engine.start(order::WORKFLOW, &small_order(2)).await.unwrap();
    assert_eq!(engine.instance(routed).unwrap().version().to_string(), "1.0.0");
    engine.shutdown().await;
}

async fn moved_instances_keep_exact_counters_on_both_versions(backend: Backend) {
    let calls = Arc::new(AtomicU64::new(0));
    let engine = backend
        .builder()
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_2("2.0.0"))
        .migration(tally::migration(calls))
        .open()
        .await
        .unwrap();
    let ids = tally::start_waiting(&engine, 0..10, StartOptions::new().version("=1.0.0")).await;
    let request = MoveRequest::new(tally::WORKFLOW, v("2.0.0"))
        .from_version(v("1.0.0"))
        .ids(ids[..6].to_vec());
    let report = engine.move_instances(&request).await.unwrap();
    assert_eq!(report.moved.len(), 6, "{report:?}");
    engine.shutdown().await;

    let engine = backend
        .builder()
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_2("2.0.0"))
        .migration(tally::migration(Arc::new(AtomicU64::new(0))))
        .open()
        .await
        .unwrap();
    let old = engine.version(tally::WORKFLOW, "1.0.0").unwrap().counters;
    let new = engine.version(tally::WORKFLOW, "2.0.0").unwrap().counters;
    assert_eq!((old.live, old.moved_out), (4, 6));
    assert_eq!((new.live, new.moved_in), (6, 6));
    engine.signal(ids[0], tally::GO, &()).await.unwrap();
    assert_eq!(outcome_within(&engine, ids[0]).await.output::<u64>().unwrap(), 0);
    engine.signal(ids[5], tally::GO, &()).await.unwrap();
    assert_eq!(
        outcome_within(&engine, ids[5]).await.output::<u64>().unwrap(),
        15,
        "finished on 2.0.0"
    );
    engine.shutdown().await;
}

async fn finished_instances_are_listed_and_read_after_a_restart(backend: Backend) {
    let open = || backend.builder().register(tally::on_schema_1("1.0.0")).open();
    let engine = open().await.unwrap();
    let ids = tally::start_waiting(&engine, 0..6u64, StartOptions::new()).await;
    for id in &ids[..2] {
        engine.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&engine, *id).await;
    }
    engine.cancel(ids[2]).await.unwrap();
    engine.shutdown().await;

    let engine = open().await.unwrap();
    let status_of = |status| {
        let listed = engine.list(&InstanceFilter::default().with_status(status)).unwrap();
        listed.iter().map(|info| info.id()).collect::<Vec<_>>()
    };
    assert_eq!(status_of(InstanceStatus::Completed), ids[..2].to_vec());
    assert_eq!(status_of(InstanceStatus::Cancelled), vec![ids[2]]);
    assert_eq!(status_of(InstanceStatus::WaitingSignal), ids[3..].to_vec());
    assert_eq!(engine.list(&InstanceFilter::default()).unwrap().len(), 6);
    assert_eq!(engine.list_limited(&InstanceFilter::default(), 4).unwrap().len(), 4);
    // Newest first, a page at a time, live and finished instances in one order.
    let page = |filter: InstanceFilter| {
        engine
            .list_limited(&filter, 4)
            .unwrap()
            .iter()
            .map(|info| info.id())
            .collect::<Vec<_>>()
    };
    let mut newest: Vec<_> = ids.clone();
    newest.reverse();
    assert_eq!(page(InstanceFilter::default().newest_first()), newest[..4].to_vec());
    assert_eq!(
        page(InstanceFilter::default().newest_first().after(newest[3])),
        newest[4..].to_vec(),
        "the page below the cursor"
    );
    assert_eq!(
        page(InstanceFilter::workflow(tally::WORKFLOW).newest_first().after(ids[4])),
        vec![ids[3], ids[2], ids[1], ids[0]],
        "a workflow's instances below the cursor, live and finished"
    );
    assert_eq!(page(InstanceFilter::default().after(ids[1])), ids[2..].to_vec());
    assert_eq!(engine.output::<u64>(ids[1]).await.unwrap(), 1);
    let error = engine.signal(ids[0], tally::GO, &()).await.unwrap_err();
    assert!(matches!(error, EngineError::InstanceFinished { .. }), "{error}");
    let unknown = engine.instance(strata::InstanceId(999_999)).unwrap_err();
    assert!(matches!(unknown, EngineError::UnknownInstance { .. }), "{unknown}");
    engine.shutdown().await;
}

async fn writes_from_an_older_copy_never_undo_newer_ones(backend: Backend) {
    let engine = backend
        .builder()
        .register(probe::version("1.0.0"))
        .register(probe::version("2.0.1"))
        .open()
        .await
        .unwrap();
    let spec = RolloutSpec::new(probe::WORKFLOW, v("2.0.1"), v("1.0.0"))
        .stage(Stage::new(50.0, Duration::from_secs(600), 10))
        .unwatched();
    let name = spec.name.clone();
    engine.start_rollout(spec).await.unwrap();
    let started = engine.rollout(&name).unwrap();
    engine.rollback_rollout(&name).await.unwrap();
    engine
        .apply_config("strata.toml", "[workflows.probe]\ndefault = \"=1.0.0\"\n")
        .await
        .unwrap();
    engine.shutdown().await;
    let store = backend.store();
    // The rollout as it was before the rollback, written again: refused, the rollback stays.
    let stale = store.apply(&[strata_store::Op::PutRollout(Box::new(started))]);
    assert!(
        matches!(stale, Err(strata::StoreError::RolloutChanged { .. })),
        "{stale:?}"
    );
    // A config generation that exists, written again: refused.
    let mut taken = store.config_history().unwrap().pop().unwrap();
    taken.text = "# another text".to_string();
    let again = store.apply(&[strata_store::Op::PutConfig(taken)]);
    assert!(
        matches!(again, Err(strata::StoreError::ConfigTaken { generation: 1 })),
        "{again:?}"
    );
    // A schedule's fire, handled again or rewound: refused.
    let fire = |fire_ms| strata_store::Op::PutScheduleFire {
        schedule: "nightly".into(),
        fire_ms,
    };
    store.apply(&[fire(2_000)]).unwrap();
    for stale in [2_000, 1_000] {
        let refused = store.apply(&[fire(stale)]);
        assert!(
            matches!(refused, Err(strata::StoreError::FireTaken { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(store.schedule_fires().unwrap(), vec![("nightly".to_string(), 2_000)]);
    let reopened = backend
        .builder()
        .register(probe::version("1.0.0"))
        .register(probe::version("2.0.1"));
    drop(store);
    let engine = reopened.open().await.unwrap();
    assert_eq!(engine.rollout(&name).unwrap().status, RolloutStatus::RolledBack);
    engine.shutdown().await;
}

async fn finished_instances_past_the_retention_period_are_removed_and_nothing_else_across_a_restart(backend: Backend) {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let clock = Arc::new(ManualClock::starting_now());
    let open = || {
        backend
            .builder()
            .clock(clock.clone())
            .retention(2 * DAY)
            .register(tally::on_schema_1("1.0.0"))
            .open()
    };
    let engine = open().await.unwrap();
    let finish = |engine: &strata::Engine, ids: Vec<strata::InstanceId>| {
        let engine = engine.clone();
        async move {
            for id in &ids {
                engine.signal(*id, tally::GO, &()).await.unwrap();
                outcome_within(&engine, *id).await;
            }
            ids
        }
    };
    // Day 0: two finish, one stays live; day 1: two more finish.
    let oldest = finish(&engine, tally::start_waiting(&engine, 0..2, StartOptions::new()).await).await;
    let live = tally::start_waiting(&engine, 2..3, StartOptions::new()).await[0];
    clock.advance(DAY);
    let newer = finish(&engine, tally::start_waiting(&engine, 3..5, StartOptions::new()).await).await;
    let counters = engine.version(tally::WORKFLOW, "1.0.0").unwrap().counters;
    // Day 2 and an hour: only day 0's are past two days.
    clock.advance(DAY + Duration::from_secs(3600));
    assert_eq!(engine.remove_expired_instances().await.unwrap(), 2);
    for id in &oldest {
        // Its outcome was readable until now; now the answer says it was removed, by name.
        let error = engine.instance(*id).unwrap_err();
        assert!(
            matches!(error, EngineError::InstanceRemoved { id: removed } if removed == *id),
            "{error}"
        );
        assert!(error.to_string().contains("retention"), "{error}");
    }
    let beyond = engine.instance(strata::InstanceId(u64::MAX / 2)).unwrap_err();
    assert!(
        matches!(beyond, EngineError::UnknownInstance { .. }),
        "an id never issued: {beyond}"
    );
    for id in &newer {
        assert_eq!(
            engine.instance(*id).unwrap().status,
            InstanceStatus::Completed,
            "kept until its time"
        );
    }
    assert_eq!(engine.instance(live).unwrap().status, InstanceStatus::WaitingSignal);
    assert_eq!(
        engine.version(tally::WORKFLOW, "1.0.0").unwrap().counters,
        counters,
        "counters count what happened"
    );
    assert_eq!(
        engine.remove_expired_instances().await.unwrap(),
        0,
        "nothing else is due"
    );
    engine.shutdown().await;

    // After a restart, a day later: day 1's go; the live one and the counters stay.
    clock.advance(DAY);
    let engine = open().await.unwrap();
    assert_eq!(engine.remove_expired_instances().await.unwrap(), 2);
    let finished = engine
        .list(&InstanceFilter::workflow(tally::WORKFLOW).with_status(InstanceStatus::Completed))
        .unwrap();
    assert!(
        finished.is_empty(),
        "{:?}",
        finished.iter().map(|info| info.id()).collect::<Vec<_>>()
    );
    assert_eq!(engine.version(tally::WORKFLOW, "1.0.0").unwrap().counters, counters);
    // Ids of removed instances are never issued again.
    let highest = newer.iter().chain(&oldest).max().copied().unwrap();
    let fresh = engine.start(tally::WORKFLOW, &9u64).await.unwrap();
    assert!(fresh > highest, "{fresh} is issued after {highest}");
    engine.signal(live, tally::GO, &()).await.unwrap();
    assert_eq!(outcome_within(&engine, live).await.output::<u64>().unwrap(), 2);
    engine.shutdown().await;
}

async fn a_listing_pages_through_live_and_finished_instances_of_one_workflow_in_id_order(backend: Backend) {
    let open = || {
        backend
            .builder()
            .register(tally::on_schema_1("1.0.0"))
            .register(tally::on_schema_1("1.1.0"))
            .register(probe::version("1.0.0"))
            .open()
    };
    let engine = open().await.unwrap();
    let mut ids = Vec::new();
    for count in 0..6u64 {
        let version = if count < 4 { "=1.0.0" } else { "=1.1.0" };
        ids.extend(tally::start_waiting(&engine, count..count + 1, StartOptions::new().version(version)).await);
        // Another workflow's instances, finished, in between: never read for tally's pages.
        let other = engine
            .start(probe::WORKFLOW, &Probe { n: count, wait: false })
            .await
            .unwrap();
        outcome_within(&engine, other).await;
    }
    // Every other one finishes: the pages mix live and finished instances.
    for id in ids.iter().step_by(2) {
        engine.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&engine, *id).await;
    }
    engine.shutdown().await;
    let engine = open().await.unwrap();
    let pages = |filter: InstanceFilter| {
        let engine = engine.clone();
        move || {
            let mut pages = Vec::new();
            let mut filter = filter.clone();
            loop {
                let page: Vec<_> = engine
                    .list_limited(&filter, 2)
                    .unwrap()
                    .iter()
                    .map(|info| info.id())
                    .collect();
                match page.last() {
                    Some(last) => filter = filter.clone().after(*last),
                    None => return pages,
                }
                pages.push(page);
            }
        }
    };
    let all = pages(InstanceFilter::workflow(tally::WORKFLOW))();
    assert_eq!(
        all,
        ids.chunks(2).map(<[_]>::to_vec).collect::<Vec<_>>(),
        "id order, each once"
    );
    let newer = pages(InstanceFilter::workflow(tally::WORKFLOW).with_version(v("1.1.0")))();
    assert_eq!(newer, vec![ids[4..6].to_vec()]);
    let finished = pages(InstanceFilter::workflow(tally::WORKFLOW).with_status(InstanceStatus::Completed))();
    assert_eq!(finished.concat(), vec![ids[0], ids[2], ids[4]]);
    engine.shutdown().await;
}
