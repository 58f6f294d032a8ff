//! Many workers on one PostgreSQL database (invariant 8), here as several engines in one test
//! process, each its own worker: signals and cancels through any worker reach the instance
//! wherever it runs; a worker never claims instances of a version it has no code for; a worker
//! that lost its lease (cut off from the database) never commits; each worker is judged alive by
//! its own lease; `Drained` is announced once in the cluster; retiring is
//! refused while any worker has a live instance; a start through a worker without the routed
//! version's code is accepted and begins on a worker with it; a background migration runs once
//! in the cluster, each worker over the instances it holds. Child processes killed with SIGKILL are in
//! tests/cluster_crash.rs.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::prelude::*;

use common::postgres::TestDatabase;
use common::tally;
use common::*;
use strata::migrate::MigrationState;
use strata::registry::RegistryError;
use strata::{
    Engine, EngineBuilder, EngineError, Event, InstanceFilter, InstanceStatus, MigrationJob, Next, Outcome,
    StartOptions, StepCtx, StepResult, WorkflowVersion,
};
use tokio::sync::Semaphore;

/// A worker that keeps every instance it holds in memory: these tests count what each worker
/// holds by what it keeps (`tests/idle_in_store.rs` is about idle instances left in the store).
fn worker(database: &TestDatabase) -> EngineBuilder {
    Engine::builder()
        .postgres(&database.url)
        .commit_retry_delay(Duration::from_millis(10))
        .residency_horizon(Duration::MAX)
}

/// A worker that heartbeats every 200 ms (lease 600 ms), so tests see the cluster change fast.
fn quick_worker(database: &TestDatabase) -> EngineBuilder {
    worker(database).lease(QUICK_LEASE)
}

const QUICK_LEASE: Duration = Duration::from_millis(600);

async fn with_tally(database: &TestDatabase, versions: &[&str]) -> Engine {
    let mut builder = worker(database);
    for version in versions {
        builder = builder.register(tally::on_schema_1(version));
    }
    builder.open().await.unwrap()
}

/// Tallies with `counts` pinned to `version`, each waiting for its signal.
async fn waiting_tallies(engine: &Engine, counts: std::ops::Range<u64>, version: &str) -> Vec<strata::InstanceId> {
    tally::start_waiting(engine, counts, StartOptions::new().version(format!("={version}"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_or_cancel_through_any_worker_reaches_the_instance_where_it_runs() {
    let database = TestDatabase::create();
    let holder = with_tally(&database, &["1.0.0"]).await;
    // The other worker has no code for the version: it can still signal, cancel and wait.
    let other = worker(&database).open().await.unwrap();
    let ids = waiting_tallies(&holder, 0..20, "1.0.0").await;
    let mut latencies = Vec::new();
    for id in &ids[..10] {
        let sent = Instant::now();
        other.signal(*id, tally::GO, &()).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(30), other.outcome(*id))
            .await
            .expect("the signal woke the instance")
            .unwrap();
        latencies.push(sent.elapsed());
        assert!(matches!(outcome, Outcome::Completed(_)), "{outcome:?}");
    }
    latencies.sort();
    println!(
        "signal through another worker to outcome seen there: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    for id in &ids[10..15] {
        other.cancel(*id).await.unwrap();
        // The holder committed the cancellation before `cancel` saw it in the store; its own
        // view follows its commit a moment later.
        wait_for_status(&holder, *id, InstanceStatus::Cancelled).await;
    }
    let error = other.signal(ids[0], tally::GO, &()).await.unwrap_err();
    assert!(matches!(error, EngineError::InstanceFinished { .. }), "{error}");
    let error = other.signal(ids[15], "strata:cancel", &()).await.unwrap_err();
    assert!(matches!(error, EngineError::ReservedSignalName { .. }), "{error}");
    let counters = other.version(tally::WORKFLOW, "1.0.0").unwrap().counters;
    assert_eq!(
        (counters.live, counters.completed, counters.cancelled),
        (5, 10, 5),
        "the figures are the cluster's, read by a worker that ran none of it"
    );
    holder.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_claims_instances_of_a_version_it_has_no_code_for() {
    let database = TestDatabase::create();
    let old = with_tally(&database, &["1.0.0"]).await;
    let new = with_tally(&database, &["1.0.0", "2.0.0"]).await;
    let on_v1 = waiting_tallies(&new, 0..5, "1.0.0").await;
    let on_v2 = waiting_tallies(&new, 5..10, "2.0.0").await;
    // The new worker stops and hands its claims back: the old one takes 1.0.0's, never 2.0.0's.
    new.shutdown().await;
    wait_until(&old, |old| old.live_instances() == on_v1.len()).await;
    for id in &on_v1 {
        old.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&old, *id).await;
    }
    let v2 = old.version(tally::WORKFLOW, "2.0.0").unwrap();
    assert_eq!(v2.counters.live, 5);
    assert!(
        v2.workers.is_empty(),
        "no live worker has 2.0.0's code: {:?}",
        v2.workers
    );
    assert_eq!(old.live_instances(), 0, "the old worker holds no 2.0.0 instance");
    let waiting = old
        .list(&InstanceFilter::workflow(tally::WORKFLOW).with_status(InstanceStatus::WaitingSignal))
        .unwrap();
    assert_eq!(waiting.iter().map(|info| info.id()).collect::<Vec<_>>(), on_v2);
    // A worker with the code comes back and finishes them.
    let back = with_tally(&database, &["1.0.0", "2.0.0"]).await;
    for id in &on_v2 {
        old.signal(*id, tally::GO, &()).await.unwrap();
        let output: u64 = outcome_within(&old, *id).await.output().unwrap();
        assert_eq!(output, id_count(&on_v2, *id) + 5);
    }
    assert!(old.version(tally::WORKFLOW, "2.0.0").unwrap().workers == vec![back.worker_id()]);
    back.shutdown().await;
    old.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_through_a_worker_without_the_newest_versions_code_runs_on_a_worker_with_it() {
    let database = TestDatabase::create();
    let old = quick_worker(&database)
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let new = quick_worker(&database)
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_2("2.0.0"))
        .open()
        .await
        .unwrap();
    // The old worker learns at its heartbeat that a live worker runs 2.0.0.
    wait_until(&old, |old| {
        old.version(tally::WORKFLOW, "2.0.0")
            .is_ok_and(|info| info.accepts_starts && !info.registered)
    })
    .await;
    let mut ids = Vec::new();
    let mut latencies = Vec::new();
    for count in 0..10u64 {
        let sent = Instant::now();
        let id = old.start(tally::WORKFLOW, &count).await.unwrap();
        assert_eq!(
            old.instance(id).unwrap().record.key.version.to_string(),
            "2.0.0",
            "routed to the newest in the cluster"
        );
        // The worker with the code claims it at once and runs its first step, on 2.0.0's state.
        wait_for_status(&new, id, InstanceStatus::WaitingSignal).await;
        latencies.push(sent.elapsed());
        ids.push(id);
    }
    latencies.sort();
    println!(
        "start through a worker without the code to first step on one with it: median {:?}",
        latencies[5]
    );
    assert_eq!(old.live_instances(), 0, "the old worker holds none of them");
    let routed: u64 = old
        .routing_counts()
        .iter()
        .filter(|(key, _, _)| key.version.to_string() == "2.0.0")
        .map(|(_, _, count)| count)
        .sum();
    assert_eq!(routed, 10, "the starting worker counts where it routed");
    for (count, id) in ids.iter().enumerate() {
        old.signal(*id, tally::GO, &()).await.unwrap();
        let output: u64 = outcome_within(&old, *id).await.output().unwrap();
        assert_eq!(
            output,
            count as u64 * 3,
            "2.0.0's init built the state (doubled) on the other worker"
        );
    }
    // An input 2.0.0 cannot take: the start was accepted, and the instance fails where it begins.
    let bad = old.start(tally::WORKFLOW, &"not a count").await.unwrap();
    match outcome_within(&old, bad).await {
        Outcome::Failed(reason) => {
            assert!(
                reason.contains("could not begin on tally@2.0.0") && reason.contains("does not decode"),
                "{reason}"
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let history = old.history(bad, &strata::HistoryRequest::default()).unwrap();
    let events: Vec<_> = history
        .entries
        .iter()
        .map(|item| item.entry.as_ref().unwrap().event.clone())
        .collect();
    assert!(
        matches!(events.as_slice(), [strata::history::HistoryEvent::Started { .. }, strata::history::HistoryEvent::BeginFailed { reason }] if reason.contains("does not decode")),
        "the start, then why it could not begin, read through the worker without the code: {events:?}"
    );
    let counters = new.version(tally::WORKFLOW, "2.0.0").unwrap().counters;
    assert_eq!(
        (counters.started, counters.completed, counters.failed, counters.live),
        (11, 10, 1, 0)
    );
    // The worker with 2.0.0 leaves: starts through the old one go to the version it runs.
    new.shutdown().await;
    wait_until(&old, |old| {
        old.version(tally::WORKFLOW, "2.0.0")
            .is_ok_and(|info| !info.accepts_starts)
    })
    .await;
    let local = old.start(tally::WORKFLOW, &7u64).await.unwrap();
    assert_eq!(old.instance(local).unwrap().record.key.version.to_string(), "1.0.0");
    wait_for_status(&old, local, InstanceStatus::WaitingSignal).await;
    assert_eq!(old.live_instances(), 1, "and it runs here");
    old.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_migration_runs_once_in_the_cluster_each_worker_over_the_instances_it_holds() {
    let database = TestDatabase::create();
    // Twenty tallies on schema 1 (none with the count that fails to migrate): ten of 1.0.0, ten
    // of 1.1.0.
    let before = with_tally(&database, &["1.0.0", "1.1.0"]).await;
    let mut ids = waiting_tallies(&before, 0..10, "1.0.0").await;
    ids.extend(waiting_tallies(&before, 20..30, "1.1.0").await);
    before.shutdown().await;
    // New code on schema 2: one worker runs 1.0.0, the other 1.1.0, so each holds ten.
    let calls = Arc::new(AtomicU64::new(0));
    let open = |version: &'static str| {
        quick_worker(&database)
            .register(tally::on_schema_2(version))
            .migration(tally::migration(calls.clone()))
            .open()
    };
    let first = open("1.0.0").await.unwrap();
    let second = open("1.1.0").await.unwrap();
    // A console process without the workflow's code follows the job too.
    let observer = quick_worker(&database).open().await.unwrap();
    assert_eq!((first.live_instances(), second.live_instances()), (10, 10));
    let mut first_events = first.subscribe();
    let mut second_events = second.subscribe();
    let mut observer_events = observer.subscribe();
    let job = first
        .migrate_states(MigrationJob::new(tally::WORKFLOW).batch_size(1).max_per_second(5))
        .unwrap();
    // The other worker joins at its heartbeat; a pause through it holds the job everywhere.
    wait_until(&second, |second| second.migration(tally::WORKFLOW).is_some()).await;
    let joined = second.migration(tally::WORKFLOW).unwrap();
    joined.pause();
    wait_until(&first, |_| job.progress().state == MigrationState::Paused).await;
    job.resume();
    wait_until(&second, |_| joined.progress().state == MigrationState::Running).await;
    let progress = job
        .finished_within(Duration::from_secs(60))
        .await
        .expect("the job finished");
    assert_eq!(progress.state, MigrationState::Finished);
    assert_eq!(
        (progress.migrated, progress.failed, progress.remaining),
        (20, 0, 0),
        "the job's figures are the cluster's: both workers' shares"
    );
    let elsewhere = joined
        .finished_within(Duration::from_secs(30))
        .await
        .expect("finished there too");
    assert_eq!(elsewhere.migrated, 20);
    let watched = observer
        .migration(tally::WORKFLOW)
        .expect("the observer follows the job");
    let watched = watched
        .finished_within(Duration::from_secs(30))
        .await
        .expect("finished for the observer too");
    assert_eq!((watched.state, watched.migrated), (MigrationState::Finished, 20));
    // Started again through a worker while none runs: a new job, with nothing left to do.
    let again = observer.migrate_states(MigrationJob::new(tally::WORKFLOW)).unwrap();
    let again = again
        .finished_within(Duration::from_secs(30))
        .await
        .expect("the second job finished");
    assert_eq!((again.migrated, again.failed), (0, 0));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        20,
        "each record was migrated exactly once"
    );
    for id in &ids {
        let info = first.instance(*id).unwrap();
        assert_eq!(info.record.state.schema, 2, "instance {id} was migrated");
        assert_eq!(tally::stamps(2, &info.record.state.bytes).unwrap(), 1);
    }
    first.shutdown().await;
    second.shutdown().await;
    observer.shutdown().await;
    let mut announced = 0;
    for events in [&mut first_events, &mut second_events, &mut observer_events] {
        while let Ok(event) = events.try_recv() {
            announced += usize::from(matches!(event, Event::MigrationFinished { .. }));
        }
    }
    assert_eq!(announced, 2, "the end of each job is announced once in the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_a_worker_takes_over_during_a_background_migration_join_its_share() {
    takeover_during_a_background_migration(Duration::MAX).await;
}

/// The same with workers that keep idle instances in the store: the staying worker's claim
/// leaves the waiting instances unread, and its share loads and migrates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_a_worker_claims_without_loading_during_a_background_migration_join_its_share() {
    takeover_during_a_background_migration(Duration::from_secs(1)).await;
}

async fn takeover_during_a_background_migration(horizon: Duration) {
    let everything_resident = horizon == Duration::MAX;
    let database = TestDatabase::create();
    let before = with_tally(&database, &["1.0.0", "1.1.0"]).await;
    let mut ids = waiting_tallies(&before, 0..10, "1.0.0").await;
    ids.extend(waiting_tallies(&before, 20..30, "1.1.0").await);
    before.shutdown().await;
    let calls = Arc::new(AtomicU64::new(0));
    let open = |versions: &[&'static str]| {
        let mut builder = quick_worker(&database)
            .residency_horizon(horizon)
            .migration(tally::migration(calls.clone()));
        for version in versions {
            builder = builder.register(tally::on_schema_2(version));
        }
        builder.open()
    };
    // The leaving worker holds 1.1.0's ten; the staying one 1.0.0's, and has 1.1.0's code too.
    let leaving = open(&["1.1.0"]).await.unwrap();
    let staying = open(&["1.0.0", "1.1.0"]).await.unwrap();
    if everything_resident {
        assert_eq!((leaving.live_instances(), staying.live_instances()), (10, 10));
    }
    let job = staying
        .migrate_states(MigrationJob::new(tally::WORKFLOW).batch_size(1).max_per_second(5))
        .unwrap();
    wait_until(&leaving, |leaving| leaving.migration(tally::WORKFLOW).is_some()).await;
    // Both shares are under way; the leaving worker stops in the middle of its share.
    wait_until(&staying, |_| calls.load(Ordering::Relaxed) >= 4).await;
    leaving.shutdown().await;
    let progress = job
        .finished_within(Duration::from_secs(60))
        .await
        .expect("the job finished");
    assert_eq!((progress.migrated, progress.failed, progress.remaining), (20, 0, 0));
    if everything_resident {
        assert_eq!(
            staying.live_instances(),
            20,
            "the staying worker took the leaving one's instances"
        );
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        20,
        "each record was migrated exactly once"
    );
    for id in &ids {
        let info = staying.instance(*id).unwrap();
        assert_eq!(
            (
                info.record.state.schema,
                tally::stamps(2, &info.record.state.bytes).unwrap()
            ),
            (2, 1),
            "instance {id}"
        );
    }
    staying.shutdown().await;
}

fn id_count(ids: &[strata::InstanceId], id: strata::InstanceId) -> u64 {
    ids.iter().position(|candidate| *candidate == id).unwrap() as u64
}

/// Steps of `slow` block on `SLOW_GATE` while `SLOW_BLOCKS` is set.
static SLOW_BLOCKS: AtomicBool = AtomicBool::new(false);
static SLOW_GATE: Semaphore = Semaphore::const_new(0);
static SLOW_RUNS: AtomicU64 = AtomicU64::new(0);

async fn slow_step(_ctx: StepCtx, runs: &mut u64) -> StepResult<u64> {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    if SLOW_BLOCKS.load(Ordering::SeqCst) {
        if let Ok(permit) = SLOW_GATE.acquire().await {
            permit.forget();
        }
    }
    *runs += 1;
    Ok(Next::complete(*runs))
}

fn slow() -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("slow", "1.0.0")
        .init(|n: u64| n)
        .step("run", slow_step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_never_commits_the_step_it_ran() {
    let database = TestDatabase::create();
    // The partitioned worker reaches the database through a proxy that will cut it off.
    let proxy = common::proxy::FaultyProxy::start(database.server()).await;
    let partitioned = Engine::builder()
        .postgres(proxy.url(&database.user(), database.name()))
        .commit_retry_delay(Duration::from_millis(10))
        .lease(Duration::from_millis(300))
        .register(slow())
        .open()
        .await
        .unwrap();
    let mut lost = partitioned.subscribe();
    SLOW_BLOCKS.store(true, Ordering::SeqCst);
    let id = partitioned.start("slow", &0u64).await.unwrap();
    wait_until(&partitioned, |_| SLOW_RUNS.load(Ordering::SeqCst) == 1).await;
    // Its step is running when the network cuts it off: its heartbeats stop landing. Another
    // worker finds its lease run out, claims the instance and runs the step itself.
    proxy.refuse(true);
    SLOW_BLOCKS.store(false, Ordering::SeqCst);
    let taker = worker(&database)
        .lease(Duration::from_millis(300))
        .register(slow())
        .open()
        .await
        .unwrap();
    let output: u64 = outcome_within(&taker, id).await.output().unwrap();
    assert_eq!(output, 1, "the taker's commit is the one that landed");
    // The network heals and the partitioned worker's step finishes: its commit is refused and
    // it lets the instance go.
    proxy.refuse(false);
    SLOW_GATE.add_permits(1);
    let event = wait_for_event(&mut lost, |event| matches!(event, Event::InstanceClaimLost { .. })).await;
    assert!(matches!(event, Event::InstanceClaimLost { id: lost, .. } if lost == id));
    assert_eq!(
        SLOW_RUNS.load(Ordering::SeqCst),
        2,
        "the step ran twice (at least once is the contract)"
    );
    assert_eq!(partitioned.live_instances(), 0);
    let counters = taker.version("slow", "1.0.0").unwrap().counters;
    assert_eq!(
        (counters.started, counters.completed, counters.live),
        (1, 1, 0),
        "committed once"
    );
    partitioned.shutdown().await;
    taker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_is_announced_once_in_the_cluster_and_retiring_waits_for_every_worker() {
    let database = TestDatabase::create();
    let first = with_tally(&database, &["1.0.0"]).await;
    let second = with_tally(&database, &["1.0.0"]).await;
    let on_first = waiting_tallies(&first, 0..3, "1.0.0").await;
    let on_second = waiting_tallies(&second, 3..6, "1.0.0").await;
    let mut heard = [first.subscribe(), second.subscribe()];
    assert_eq!(
        first.drain(tally::WORKFLOW, "1.0.0").await.unwrap(),
        strata::VersionStatus::Draining
    );
    for id in &on_first {
        first.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&first, *id).await;
    }
    // The first worker has none left, the second still has three: retiring is refused anywhere.
    let refused = first.retire(tally::WORKFLOW, "1.0.0").await.unwrap_err();
    assert!(
        matches!(
            refused,
            EngineError::Registry(RegistryError::LiveInstances { live: 3, .. })
        ),
        "{refused}"
    );
    for id in &on_second {
        first.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&first, *id).await;
    }
    let drained = wait_for_event(&mut heard[1], |event| matches!(event, Event::VersionDrained { .. })).await;
    assert!(matches!(drained, Event::VersionDrained { counters, .. } if counters.live == 0 && counters.completed == 6));
    // The first worker never announced it: only the write that drained it does.
    second.shutdown().await;
    first.shutdown().await;
    let mut announced_by_first = 0;
    while let Ok(event) = heard[0].try_recv() {
        if matches!(event, Event::VersionDrained { .. }) {
            announced_by_first += 1;
        }
    }
    assert_eq!(announced_by_first, 0);
    let reopened = with_tally(&database, &["1.0.0"]).await;
    let info = reopened.version(tally::WORKFLOW, "1.0.0").unwrap();
    assert_eq!(info.status, strata::VersionStatus::Drained);
    assert!(info.safe_to_remove());
    reopened.retire(tally::WORKFLOW, "1.0.0").await.unwrap();
    reopened.shutdown().await;
}

/// A drain undone on one worker holds on every worker, although the status went back: each
/// takes the status written last (by its count of changes), never a read of the drain before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_undone_through_one_worker_lets_every_worker_start_the_version_again() {
    let database = TestDatabase::create();
    let open = || quick_worker(&database).register(tally::on_schema_1("1.0.0")).open();
    let (first, second) = (open().await.unwrap(), open().await.unwrap());
    let waiting = waiting_tallies(&second, 0..1, "1.0.0").await;
    let status_on = |engine: &Engine| engine.version(tally::WORKFLOW, "1.0.0").unwrap().status;
    first.drain(tally::WORKFLOW, "1.0.0").await.unwrap();
    wait_until(&second, |engine| status_on(engine) == strata::VersionStatus::Draining).await;
    let refused = second.start(tally::WORKFLOW, &5u64).await.unwrap_err();
    assert!(
        matches!(refused, EngineError::Registry(RegistryError::NoRoutableVersion { .. })),
        "{refused}"
    );
    first.activate(tally::WORKFLOW, "1.0.0").await.unwrap();
    wait_until(&second, |engine| status_on(engine) == strata::VersionStatus::Active).await;
    let started = waiting_tallies(&second, 1..2, "1.0.0").await;
    for id in waiting.iter().chain(&started) {
        first.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&second, *id).await;
    }
    for engine in [&first, &second] {
        let info = engine.version(tally::WORKFLOW, "1.0.0").unwrap();
        assert_eq!(
            (info.status, info.counters.live, info.accepts_starts),
            (strata::VersionStatus::Active, 0, true)
        );
    }
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_version_its_worker_stopped_before_announcing_is_announced_once_by_the_rollout_evaluator() {
    let database = TestDatabase::create();
    // The only worker, so it evaluates rollouts; the other one stays alive without announcing.
    let evaluator = quick_worker(&database)
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_1("2.0.0"))
        .open()
        .await
        .unwrap();
    let alive = quick_worker(&database).open().await.unwrap();
    for version in ["1.0.0", "2.0.0"] {
        assert_eq!(
            evaluator.drain(tally::WORKFLOW, version).await.unwrap(),
            strata::VersionStatus::Drained
        );
    }
    assert_eq!(
        database.count("SELECT count(*) FROM strata_versions WHERE drained_by IS NOT NULL"),
        0,
        "a worker marks what it announced"
    );
    let mut heard = evaluator.subscribe();
    // As the store is left when a worker stops between the commit that drained a version and its
    // announcement (1.0.0), and while a live one is in between (2.0.0).
    database
        .execute(&format!(
            "UPDATE strata_versions SET drained_by = CASE version WHEN '1.0.0' THEN 'a-worker-that-stopped' ELSE '{}' END",
            alive.worker_id()
        ))
        .unwrap();
    let announced = wait_for_event(&mut heard, |event| matches!(event, Event::VersionDrained { .. })).await;
    let Event::VersionDrained { key, .. } = announced else {
        unreachable!()
    };
    assert_eq!(key.version.to_string(), "1.0.0");
    // Taken in the same statement that looked: nobody announces 1.0.0 again, 2.0.0 is left to
    // the live worker that drained it.
    assert_eq!(
        database.count("SELECT count(*) FROM strata_versions WHERE version = '1.0.0' AND drained_by IS NOT NULL"),
        0
    );
    assert_eq!(
        database.count("SELECT count(*) FROM strata_versions WHERE version = '2.0.0' AND drained_by IS NOT NULL"),
        1
    );
    // A worker that leaves has announced all it drained.
    alive.shutdown().await;
    assert_eq!(
        database.count("SELECT count(*) FROM strata_versions WHERE drained_by IS NOT NULL"),
        0
    );
    evaluator.shutdown().await;
    let mut drained_events = 0;
    while let Ok(event) = heard.try_recv() {
        drained_events += usize::from(matches!(event, Event::VersionDrained { .. }));
    }
    assert_eq!(drained_events, 0, "announced once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_fire_time_however_many_workers_run_it_or_lack_its_code() {
    let database = TestDatabase::create();
    let open = || worker(&database).register(strata_workflows::ledger::v1_0()).open();
    let (first, second) = (open().await.unwrap(), open().await.unwrap());
    // A worker without the workflow's code leaves the fires to the others (none lost to it).
    let bystander = worker(&database).open().await.unwrap();
    let every_second = "[[schedules]]\nname = \"tick\"\nworkflow = \"ledger\"\ncron = \"* * * * * *\"\n\
                        input = { account = 1, entries = 1 }\n";
    first.apply_config("strata.toml", every_second).await.unwrap();
    // Both workers run the schedule (the second takes the config in from the store).
    wait_until(&second, |second| second.schedule_fires().unwrap().len() == 1).await;
    let fires = |engine: &Engine| {
        let mut fires: Vec<u64> = engine
            .list(&InstanceFilter::workflow(strata_workflows::ledger::WORKFLOW))
            .unwrap()
            .iter()
            .filter_map(|info| info.record.scheduled.as_ref().map(|fire| fire.fire_ms))
            .collect();
        fires.sort_unstable();
        fires
    };
    wait_until(&first, |first| fires(first).len() >= 4).await;
    first.shutdown().await;
    second.shutdown().await;
    bystander.shutdown().await;
    let reader = worker(&database).open().await.unwrap();
    let fires = fires(&reader);
    let mut distinct = fires.clone();
    distinct.dedup();
    assert_eq!(distinct, fires, "a fire time started two instances");
    assert!(
        fires.windows(2).all(|pair| pair[1] - pair[0] == 1_000),
        "a fire time between the first and the last was lost: {fires:?}"
    );
    reader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_follows_the_config_generation_in_force_and_an_invalid_file_reaches_none() {
    let database = TestDatabase::create();
    let open = || {
        worker(&database)
            .register(tally::on_schema_1("1.0.0"))
            .register(tally::on_schema_1("2.0.0"))
            .open()
    };
    let (first, second) = (open().await.unwrap(), open().await.unwrap());
    let default_to = |version: &str| format!("[workflows.tally]\ndefault = \"={version}\"\n");
    let routed = |engine: &Engine| {
        let engine = engine.clone();
        async move {
            let id = engine.start(tally::WORKFLOW, &1u64).await.unwrap();
            engine.instance(id).unwrap().version().to_string()
        }
    };
    let mut events = second.subscribe();
    assert_eq!(first.apply_config("a.toml", &default_to("1.0.0")).await.unwrap(), 1);
    wait_for_event(&mut events, |event| {
        matches!(event, Event::ConfigApplied { generation: 1, .. })
    })
    .await;
    assert_eq!(routed(&second).await, "1.0.0");
    // Changes through both workers get their own generations, in order.
    assert_eq!(second.apply_config("b.toml", &default_to("2.0.0")).await.unwrap(), 2);
    assert_eq!(first.apply_config("a.toml", &default_to("1.0.0")).await.unwrap(), 3);
    wait_for_event(&mut events, |event| {
        matches!(event, Event::ConfigApplied { generation: 3, .. })
    })
    .await;
    assert_eq!(routed(&second).await, "1.0.0");
    // An invalid file is refused where it is applied and never stored.
    first
        .apply_config("a.toml", "[workflows.tally]\ndefault = \"^9\"\n")
        .await
        .unwrap_err();
    let history: Vec<u64> = second
        .config_history()
        .unwrap()
        .iter()
        .map(|config| config.generation)
        .collect();
    assert_eq!(history, vec![1, 2, 3]);
    assert_eq!(routed(&second).await, "1.0.0");
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_routes_on_every_worker_and_a_rollback_through_any_holds_everywhere() {
    use common::probe::{self, Probe};
    use strata::rollout::RolloutStatus;
    use strata::{RolloutSpec, Stage, Version};
    let database = TestDatabase::create();
    let open = || {
        worker(&database)
            .register(probe::version("1.0.0"))
            .register(probe::version("2.0.1"))
            .open()
    };
    let (first, second) = (open().await.unwrap(), open().await.unwrap());
    let spec = RolloutSpec::new(probe::WORKFLOW, Version::new(2, 0, 1), Version::new(1, 0, 0))
        .stage(Stage::new(50.0, Duration::from_secs(3_600), 1_000_000))
        .stage(Stage::new(100.0, Duration::from_secs(3_600), 1_000_000))
        .unwatched();
    let name = spec.name.clone();
    first.start_rollout(spec).await.unwrap();
    let on_candidate = |engine: &Engine| {
        let engine = engine.clone();
        async move {
            let mut candidate = 0;
            for n in 0..100 {
                let options = StartOptions::new().routing_key(format!("customer-{n}"));
                let id = engine
                    .start_with(probe::WORKFLOW, &Probe { n, wait: false }, options)
                    .await
                    .unwrap();
                if engine.instance(id).unwrap().version().to_string() == "2.0.1" {
                    candidate += 1;
                }
            }
            candidate
        }
    };
    // The second worker takes the rollout in from the store and routes its share too.
    wait_until(&second, |second| second.rollout(&name).is_some()).await;
    let share = on_candidate(&second).await;
    assert!((30..=70).contains(&share), "{share} of 100 starts on the candidate");
    assert_eq!(
        on_candidate(&first).await,
        share,
        "the same keys on every worker (sticky)"
    );
    // Rolled back through the second worker: the first stops routing to the candidate too.
    second.rollback_rollout(&name).await.unwrap();
    wait_until(&first, |first| {
        first
            .rollout(&name)
            .is_some_and(|record| record.status == RolloutStatus::RolledBack)
    })
    .await;
    assert_eq!(
        on_candidate(&first).await,
        0,
        "no start reaches the rolled-back candidate"
    );
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_is_judged_alive_by_its_own_lease() {
    let database = TestDatabase::create();
    // A heartbeats every second (lease 3 s); B, with a lease of 150 ms, claims every 50 ms.
    let a = worker(&database)
        .lease(Duration::from_secs(3))
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let ids = waiting_tallies(&a, 0..10, "1.0.0").await;
    let b = worker(&database)
        .lease(Duration::from_millis(150))
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let heartbeat = |engine: &Engine, id: &str| {
        engine
            .workers()
            .unwrap()
            .into_iter()
            .find(|worker| worker.id == id)
            .map(|worker| (worker.heartbeat_ms, worker.alive))
            .unwrap()
    };
    // Wait until A's last heartbeat is older than B's lease, then for another round of B's
    // (each heartbeats, then claims): B has looked for claimable instances while A's heartbeat
    // was too old by B's lease, but not by A's own. Tried again if A heartbeat meanwhile.
    let (a_id, b_id) = (a.worker_id().to_string(), b.worker_id().to_string());
    let held_by_a = format!("SELECT count(*) FROM strata_instances WHERE live AND owner = '{a_id}'");
    let mut tested = false;
    for _ in 0..5 {
        let a_beat = heartbeat(&b, &a_id).0;
        wait_until(&b, |b| heartbeat(b, &b_id).0 > a_beat + 200).await;
        let b_beat = heartbeat(&b, &b_id).0;
        wait_until(&b, |b| heartbeat(b, &b_id).0 > b_beat).await;
        wait_until(&b, |b| heartbeat(b, &b_id).0 > b_beat + 60).await;
        let (a_now, a_alive) = heartbeat(&b, &a_id);
        assert!(a_alive, "B counts A alive by A's lease");
        assert_eq!(
            database.count(&held_by_a),
            ids.len() as i64,
            "B took instances of a live worker"
        );
        if a_now == a_beat {
            tested = true;
            break;
        }
    }
    assert!(tested, "A heartbeat during every try");
    // A still runs them: a signal through B reaches them there.
    for id in &ids {
        b.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&b, *id).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_evaluator_sees_every_workers_steps_and_rolls_back_a_slow_candidate_it_never_runs() {
    use common::probe::{self, Probe};
    use strata::rollout::{Gate, RolloutStatus, Transition};
    use strata::{Gates, RolloutSpec, Stage, Version};
    let database = TestDatabase::create();
    // The evaluator has the stable version's code only; the candidate (slow steps) runs on the
    // other worker alone, so only that worker's published metrics can show it is slow.
    let evaluator = quick_worker(&database)
        .register(probe::version("1.0.0"))
        .open()
        .await
        .unwrap();
    let runner = quick_worker(&database)
        .register(probe::version("1.0.0"))
        .register(probe::version("2.0.2"))
        .open()
        .await
        .unwrap();
    let leader = format!(
        "SELECT count(*) FROM strata_leases WHERE role = 'rollouts' AND holder = '{}'",
        evaluator.worker_id()
    );
    assert_eq!(
        database.count(&leader),
        1,
        "the first worker open evaluates the rollouts"
    );
    let gates = Gates {
        max_latency_multiplier: Some(3.0),
        ..Gates::default()
    };
    let spec = RolloutSpec::new(probe::WORKFLOW, Version::new(2, 0, 2), Version::new(1, 0, 0))
        .stage(Stage::new(30.0, Duration::from_secs(3_600), 20))
        .stage(Stage::new(100.0, Duration::from_secs(3_600), 20))
        .gates(gates);
    let name = spec.name.clone();
    runner.start_rollout(spec).await.unwrap();
    let rolled_back = |engine: &Engine| {
        engine
            .rollout(&name)
            .is_some_and(|record| record.status == RolloutStatus::RolledBack)
    };
    let mut n = 0;
    while !rolled_back(&runner) {
        assert!(n < 4_000, "the slow candidate was never rolled back");
        let mut ids = Vec::new();
        for _ in 0..50 {
            let options = StartOptions::new().routing_key(format!("customer-{n}"));
            ids.push(
                runner
                    .start_with(probe::WORKFLOW, &Probe { n, wait: false }, options)
                    .await
                    .unwrap(),
            );
            n += 1;
        }
        for id in ids {
            outcome_within(&runner, id).await;
        }
    }
    let record = runner.rollout(&name).unwrap();
    let Some(Transition::RolledBack { gate, .. }) = record.history.last().map(|last| &last.transition) else {
        panic!("{:?}", record.history)
    };
    assert_eq!(*gate, Some(Gate::LatencyMultiplier));
    assert_eq!(database.count(&leader), 1, "the evaluator decided it");
    evaluator.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_names_the_oldest_live_instance_of_a_version_whoever_holds_it() {
    let database = TestDatabase::create();
    let holder = with_tally(&database, &["1.0.0"]).await;
    let ids = waiting_tallies(&holder, 0..5, "1.0.0").await;
    let console = worker(&database).open().await.unwrap();
    let oldest = holder.instance(ids[0]).unwrap().record.created_at_ms;
    let seen = console.version(tally::WORKFLOW, "1.0.0").unwrap().oldest_live;
    assert_eq!(seen, Some((ids[0], oldest)), "seen from a worker holding none of them");
    // Once it finishes, the next oldest is named.
    holder.signal(ids[0], tally::GO, &()).await.unwrap();
    outcome_within(&console, ids[0]).await;
    let next = holder.instance(ids[1]).unwrap().record.created_at_ms;
    let seen = console.version(tally::WORKFLOW, "1.0.0").unwrap().oldest_live;
    assert_eq!(seen, Some((ids[1], next)));
    holder.shutdown().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_last_worker_stopped_shows_no_worker_and_takes_no_starts_in_one_view() {
    let database = TestDatabase::create();
    // A heartbeats every 20 s: what it knows of the cluster comes from the read of the view
    // itself, not from a heartbeat between B's stop and the view.
    let a = worker(&database)
        .lease(Duration::from_secs(60))
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let b = with_tally(&database, &["1.0.0", "2.0.0"]).await;
    let b_id = b.worker_id().to_string();
    wait_until(&a, |a| {
        let info = a.version(tally::WORKFLOW, "2.0.0").unwrap();
        info.accepts_starts && info.workers == [b_id.clone()]
    })
    .await;
    b.shutdown().await;
    let info = a.version(tally::WORKFLOW, "2.0.0").unwrap();
    assert!(info.workers.is_empty(), "{:?}", info.workers);
    assert!(
        !info.accepts_starts,
        "a version no live worker can run said it takes starts"
    );
    let refused = a
        .start_with(tally::WORKFLOW, &1u64, StartOptions::new().version("=2.0.0"))
        .await;
    assert!(refused.is_err(), "a start went to a version no live worker can run");
    a.shutdown().await;
}

/// After an outage longer than its lease, a worker's own row says it is dead until its next
/// heartbeat lands. It is alive all the same: its own versions never show without a worker nor
/// stop taking starts, and it warns of none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_heartbeat_lapsed_still_counts_itself_for_its_own_versions() {
    let database = TestDatabase::create();
    let engine = quick_worker(&database)
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let mut events = engine.subscribe();
    let waiting = waiting_tallies(&engine, 0..1, "1.0.0").await;
    // As an outage leaves it: the row's heartbeat long past, and heartbeats failing for a while
    // after the reads work again.
    database
        .execute(
            "CREATE FUNCTION strata_test_refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'heartbeats refused by the test'; END $$;
             UPDATE strata_workers SET heartbeat_ms = 0;
             CREATE TRIGGER strata_test_no_heartbeat BEFORE UPDATE ON strata_workers
                 FOR EACH ROW EXECUTE FUNCTION strata_test_refuse();",
        )
        .unwrap();
    let own = engine.worker_id().to_string();
    let alive_in_the_store = |database: &TestDatabase| {
        database.count(&format!(
            "SELECT count(*) FROM strata_workers WHERE id = '{own}' AND heartbeat_ms > 0"
        ))
    };
    let info = engine.version(tally::WORKFLOW, "1.0.0").unwrap();
    assert_eq!(alive_in_the_store(&database), 0, "the row says the worker is dead");
    assert_eq!(
        info.workers,
        std::slice::from_ref(&own),
        "this worker runs its own version"
    );
    assert!(info.accepts_starts);
    let started = waiting_tallies(&engine, 1..2, "1.0.0").await;
    database
        .execute("DROP TRIGGER strata_test_no_heartbeat ON strata_workers")
        .unwrap();
    wait_until(&engine, |_| alive_in_the_store(&database) == 1).await;
    for id in waiting.iter().chain(&started) {
        engine.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&engine, *id).await;
    }
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, Event::NoWorkerForVersion { .. }),
            "warned of its own version: {event:?}"
        );
    }
    engine.shutdown().await;
}
