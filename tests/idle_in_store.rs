//! Idle instances live in the store, not in memory (issue #25): an instance that only waits
//! beyond the residency horizon is evicted, and everything about it behaves as before — its timer
//! fires when due, a signal or a cancel reaches it, an awaited outcome arrives, listings and
//! lookups show it, counters stay exact, a move plans and moves it, a background migration
//! migrates it (loading one batch at a time) — and a restart loads only what is due within the
//! horizon.
//!
//! Every behaviour runs on sled and on PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use strata::{Engine, EngineBuilder, Event, InstanceFilter, InstanceStatus, ManualClock, Outcome, VersionKey};
use strata_workflows::approval::{self, Decision};

on_sled_and_postgres!(
    an_evicted_instance_is_loaded_ahead_of_its_timer_which_fires_when_due,
    signals_cancels_and_awaited_outcomes_reach_evicted_instances,
    a_restart_loads_only_what_is_due_within_the_horizon,
    evicted_instances_are_planned_and_moved_like_resident_ones,
    a_background_migration_loads_each_batch_of_evicted_instances_when_it_comes,
);

/// The horizon of these tests: the approvals wait a day, far beyond it.
const HORIZON: Duration = Duration::from_secs(1);

fn approvals(backend: &Backend, clock: &Arc<ManualClock>) -> EngineBuilder {
    backend
        .builder()
        .clock(clock.clone())
        .residency_horizon(HORIZON)
        .register(approval::v1_0())
}

fn version() -> VersionKey {
    VersionKey::new(approval::WORKFLOW, strata::Version::new(1, 0, 0))
}

/// Starts `count` approvals and returns once each waits for its decision and none is resident.
async fn evicted_approvals(engine: &Engine, count: u64) -> Vec<strata::InstanceId> {
    let mut ids = Vec::new();
    for amount in 0..count {
        let id = engine.start(approval::WORKFLOW, &amount).await.unwrap();
        wait_for_status(engine, id, InstanceStatus::WaitingSignal).await;
        ids.push(id);
    }
    wait_until(engine, |engine| engine.live_instances() == 0).await;
    ids
}

/// The approval version's counters as the engine reports them.
fn counters(engine: &Engine) -> strata_store::VersionCounters {
    let versions = engine.versions();
    versions
        .into_iter()
        .find(|info| info.key == version())
        .map(|info| info.counters)
        .unwrap()
}

fn outcome_of(outcome: Outcome) -> Decision {
    match outcome {
        Outcome::Completed(bytes) => rmp_serde::from_slice(&bytes).unwrap(),
        other => panic!("not completed: {other:?}"),
    }
}

async fn an_evicted_instance_is_loaded_ahead_of_its_timer_which_fires_when_due(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = approvals(&backend, &clock).open().await.unwrap();
    let ids = evicted_approvals(&engine, 3).await;
    // Out of memory, not out of sight: looked up, listed and counted from the store.
    let info = engine.instance(ids[0]).unwrap();
    assert_eq!(info.status, InstanceStatus::WaitingSignal);
    let listed = engine
        .list(&InstanceFilter::workflow(approval::WORKFLOW).with_status(InstanceStatus::WaitingSignal))
        .unwrap();
    assert_eq!(listed.iter().map(|info| info.record.id).collect::<Vec<_>>(), ids);
    let versions = engine.versions();
    let ours = versions.iter().find(|info| info.key == version()).unwrap();
    assert_eq!(ours.counters.live, 3);
    assert_eq!(
        ours.oldest_live.map(|(id, _)| id),
        Some(ids[0]),
        "the oldest live instance"
    );
    // A caller awaits the first one's outcome: it is loaded and stays in memory while awaited,
    // its timer armed only once the loader reaches it.
    let awaited = tokio::spawn({
        let engine = engine.clone();
        let id = ids[0];
        async move { engine.outcome(id).await }
    });
    wait_until(&engine, |engine| engine.live_instances() == 1).await;
    // At the timeout every request expires.
    clock.advance(approval::DECISION_TIMEOUT);
    let expired = tokio::time::timeout(Duration::from_secs(30), awaited)
        .await
        .expect("the awaited instance's timer fired");
    assert_eq!(outcome_of(expired.unwrap().unwrap()), Decision::Expired);
    for &id in &ids {
        assert_eq!(outcome_of(engine.outcome(id).await.unwrap()), Decision::Expired);
    }
    assert_eq!(counters(&engine).live, 0);
    engine.shutdown().await;
}

async fn signals_cancels_and_awaited_outcomes_reach_evicted_instances(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = approvals(&backend, &clock).open().await.unwrap();
    let ids = evicted_approvals(&engine, 3).await;
    // A caller awaits the first one's outcome while it is evicted; the signal comes later.
    let awaited = tokio::spawn({
        let engine = engine.clone();
        let id = ids[0];
        async move { engine.outcome(id).await }
    });
    engine.signal(ids[0], approval::DECISION_SIGNAL, &true).await.unwrap();
    assert_eq!(outcome_of(awaited.await.unwrap().unwrap()), Decision::Approved);
    // A wrong payload is refused for an evicted instance as for a resident one.
    assert!(engine.signal(ids[1], approval::DECISION_SIGNAL, &"yes").await.is_err());
    engine.signal(ids[1], approval::DECISION_SIGNAL, &false).await.unwrap();
    assert_eq!(outcome_of(engine.outcome(ids[1]).await.unwrap()), Decision::Rejected);
    // The last instance of a draining version, evicted, is cancelled: the version drains.
    let mut events = engine.subscribe();
    engine.drain(approval::WORKFLOW, "1.0.0").await.unwrap();
    engine.cancel(ids[2]).await.unwrap();
    assert_eq!(engine.instance(ids[2]).unwrap().status, InstanceStatus::Cancelled);
    loop {
        match events.recv().await.unwrap() {
            Event::VersionDrained { key, counters } => {
                assert_eq!(key, version());
                assert_eq!((counters.live, counters.completed, counters.cancelled), (0, 2, 1));
                break;
            }
            _ => continue,
        }
    }
    // A signal to a finished instance is refused as before.
    assert!(engine.signal(ids[0], approval::DECISION_SIGNAL, &true).await.is_err());
    engine.shutdown().await;
    assert_eq!(backend.stored_signals(&ids), 0, "no signal is left behind");
}

async fn a_restart_loads_only_what_is_due_within_the_horizon(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = approvals(&backend, &clock).open().await.unwrap();
    let ids = evicted_approvals(&engine, 4).await;
    engine.shutdown().await;
    let engine = approvals(&backend, &clock).open().await.unwrap();
    // Nothing is due within the horizon: nothing stays in memory. (That the open reads none of
    // them is the store conformance check a_worker_that_opens_the_store_loads_only_what_is_due_by_its_time:
    // here the sweep would evict what it read.)
    wait_until(&engine, |engine| engine.live_instances() == 0).await;
    let listed = engine
        .list(&InstanceFilter::workflow(approval::WORKFLOW).with_status(InstanceStatus::WaitingSignal))
        .unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(counters(&engine).live, 4);
    engine.signal(ids[3], approval::DECISION_SIGNAL, &true).await.unwrap();
    assert_eq!(outcome_of(engine.outcome(ids[3]).await.unwrap()), Decision::Approved);
    engine.shutdown().await;
    // Opened at the timeout, the three left are due: loaded at open and expired.
    clock.advance(approval::DECISION_TIMEOUT);
    let engine = approvals(&backend, &clock).open().await.unwrap();
    for &id in &ids[..3] {
        assert_eq!(outcome_of(engine.outcome(id).await.unwrap()), Decision::Expired);
    }
    let counters = counters(&engine);
    assert_eq!((counters.live, counters.completed), (0, 4));
    engine.shutdown().await;
}

async fn evicted_instances_are_planned_and_moved_like_resident_ones(backend: Backend) {
    let version = |text: &str| strata::Version::parse(text).unwrap();
    let engine = backend
        .builder()
        .residency_horizon(HORIZON)
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_1("2.0.0"))
        .open()
        .await
        .unwrap();
    let options = strata::StartOptions::new().version("=1.0.0");
    let ids = tally::start_waiting(&engine, 0..4, options).await;
    wait_until(&engine, |engine| engine.live_instances() == 0).await;
    let request = strata::MoveRequest::new(tally::WORKFLOW, version("2.0.0"))
        .from_version(version("1.0.0"))
        .ids(ids[..3].to_vec());
    // The dry run reads them from the store and loads none of them.
    let plan = engine.plan_moves(&request).unwrap();
    let planned: Vec<_> = plan
        .checks
        .iter()
        .map(|check| (check.id, check.verdict.is_ok()))
        .collect();
    assert_eq!(planned, ids[..3].iter().map(|id| (*id, true)).collect::<Vec<_>>());
    assert_eq!(engine.live_instances(), 0);
    let report = engine.move_instances(&request).await.unwrap();
    assert_eq!(report.moved, ids[..3].to_vec(), "{report:?}");
    let counters = |text: &str| engine.version(tally::WORKFLOW, text).unwrap().counters;
    assert_eq!((counters("1.0.0").live, counters("2.0.0").live), (1, 3));
    // Moved ones go back to the store like any idle instance, and run on 2.0.0 when signalled.
    wait_until(&engine, |engine| engine.live_instances() == 0).await;
    engine.signal(ids[0], tally::GO, &()).await.unwrap();
    let finished = outcome_within(&engine, ids[0]).await;
    assert_eq!(finished.output::<u64>().unwrap(), 0);
    assert_eq!(engine.instance(ids[0]).unwrap().version().to_string(), "2.0.0");
    assert_eq!(engine.instance(ids[3]).unwrap().version().to_string(), "1.0.0");
    engine.shutdown().await;
}

async fn a_background_migration_loads_each_batch_of_evicted_instances_when_it_comes(backend: Backend) {
    let ids = tally::stored_on_schema_1(&backend, 0..3).await;
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let engine = backend
        .builder()
        .residency_horizon(HORIZON)
        .register(tally::on_schema_2("1.0.0"))
        .migration(tally::migration(calls))
        .open()
        .await
        .unwrap();
    assert_eq!(engine.live_instances(), 0, "they wait for a signal: none is due");
    let mut events = engine.subscribe();
    // One record a second: the next batch waits a second after the first one's progress.
    let job = engine
        .migrate_states(
            strata::MigrationJob::new(tally::WORKFLOW)
                .batch_size(1)
                .max_per_second(1),
        )
        .unwrap();
    let first = wait_for_event(&mut events, |event| matches!(event, Event::MigrationProgress { .. })).await;
    assert!(
        engine.live_instances() <= 1,
        "only the first batch was loaded ({} resident after {first:?})",
        engine.live_instances()
    );
    wait_until(&engine, |_| {
        job.progress().state == strata::migrate::MigrationState::Finished
    })
    .await;
    assert_eq!((job.progress().migrated, job.progress().failed), (3, 0));
    for id in &ids {
        assert_eq!(engine.instance(*id).unwrap().state_schema(), 2);
    }
    // Migrated ones go back to the store, and finish on their migrated state when signalled.
    wait_until(&engine, |engine| engine.live_instances() == 0).await;
    engine.signal(ids[2], tally::GO, &()).await.unwrap();
    let finished = outcome_within(&engine, ids[2]).await;
    assert_eq!(finished.output::<u64>().unwrap(), 6);
    engine.shutdown().await;
}
