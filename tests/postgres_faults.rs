//! Faults between the engine and PostgreSQL (issue #10): backends terminated with
//! `pg_terminate_backend`, connections cut, a server refusing connections for a while, and
//! COMMITs that land while their answer is lost. The engine reconnects and retries; nothing is
//! lost and nothing is applied twice (every counter equals a recount of the rows), and an
//! outage longer than the retries gives an error that says what to check; sessions a failover
//! leaves read-only are replaced, and a multi-host URL reaches the host that answers.

mod common;

use std::time::Duration;
use strata::prelude::*;
use strata::store::BackendFailure;

use common::outcome_within;
use common::postgres::TestDatabase;
use common::proxy::FaultyProxy;
use strata::{Engine, EngineError, InstanceId, Next, StepCtx, StepResult, StoreError, WorkflowVersion};

const WORKFLOW: &str = "sturdy";
/// Steps each instance runs; it waits for signal `go` after the first.
const STEPS: u64 = 6;

async fn step(ctx: StepCtx, visits: &mut Vec<u64>) -> StepResult<u64> {
    visits.push(visits.len() as u64);
    let done = visits.len() as u64;
    if done == STEPS {
        return Ok(Next::complete(ctx.instance_id().0 * 100 + done));
    }
    if done == 1 {
        return Ok(Next::wait_signal("go", "step"));
    }
    Ok(Next::sleep(Duration::from_millis(5), "step"))
}

/// `STEPS` steps recording their visits, waiting for `go` after the first; completes with
/// `id * 100 + STEPS`.
fn sturdy() -> WorkflowVersion<u64, Vec<u64>, u64> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(|_: u64| Vec::new())
        .signal_type::<u64>("go")
        .step("step", step)
}

async fn open_through(proxy: &FaultyProxy, database: &TestDatabase) -> Engine {
    Engine::builder()
        .postgres(proxy.url(&database.user(), database.name()))
        .commit_retry_delay(Duration::from_millis(10))
        .register(sturdy())
        .open()
        .await
        .expect("the engine opens through the proxy")
}

/// Checks that every instance completed with its output, and that the version's counters, in
/// the engine and in the database, equal a recount of the rows.
async fn assert_exactly_once(engine: &Engine, database: &TestDatabase, ids: &[InstanceId]) {
    for id in ids {
        let output: u64 = outcome_within(engine, *id).await.output().expect("completed");
        assert_eq!(output, id.0 * 100 + STEPS, "instance {id} ran its steps and completed");
    }
    let total = ids.len() as i64;
    assert_eq!(
        database.count("SELECT count(*) FROM strata_instances"),
        total,
        "instance rows"
    );
    assert_eq!(
        database.count("SELECT count(*) FROM strata_instances WHERE live"),
        0,
        "live rows"
    );
    for column in ["started", "completed"] {
        assert_eq!(
            database.count(&format!("SELECT {column} FROM strata_versions")),
            total,
            "stored counter {column} against the recount: a commit applied twice or lost"
        );
    }
    assert_eq!(
        database.count("SELECT live FROM strata_versions"),
        0,
        "stored live counter"
    );
    assert_eq!(database.count("SELECT count(*) FROM strata_signals"), 0, "signals left");
    let counters = engine.version(WORKFLOW, "1.0.0").unwrap().counters;
    assert_eq!(
        (counters.started, counters.completed, counters.live),
        (total as u64, total as u64, 0),
        "the engine's counters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_whose_answers_are_lost_land_exactly_once() {
    let database = TestDatabase::create();
    let proxy = FaultyProxy::start(database.server()).await;
    let engine = open_through(&proxy, &database).await;
    let mut ids = Vec::new();
    for round in 0..10u64 {
        // The next commits land on the server, and their connections break before the answer:
        // starts, signal deliveries, step commits, whichever comes.
        proxy.lose_commit_answers(3);
        for n in 0..10 {
            let id = engine
                .start(WORKFLOW, &(round * 10 + n))
                .await
                .expect("a start whose commit answer was lost is started once");
            ids.push(id);
        }
        for id in &ids[ids.len() - 10..] {
            engine
                .signal(*id, "go", &1u64)
                .await
                .expect("a signal whose delivery answer was lost is delivered once");
        }
    }
    assert_exactly_once(&engine, &database, &ids).await;
    assert!(
        proxy.commit_answers_lost() >= 20,
        "only {} commit answers were lost: the test did not test",
        proxy.commit_answers_lost()
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_whose_connection_breaks_at_the_schema_commit_is_tried_again_and_opens() {
    let database = TestDatabase::create();
    let proxy = FaultyProxy::start(database.server()).await;
    // The first COMMIT is the schema's: it lands, and its connection breaks before the answer.
    proxy.lose_commit_answers(1);
    let engine = open_through(&proxy, &database).await;
    assert_eq!(proxy.commit_answers_lost(), 1, "the open's commit answer was not lost");
    let id = engine.start(WORKFLOW, &7u64).await.unwrap();
    engine.signal(id, "go", &1u64).await.unwrap();
    assert_exactly_once(&engine, &database, &[id]).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_rides_out_killed_backends_cut_connections_and_a_refusing_server() {
    let database = TestDatabase::create();
    let proxy = FaultyProxy::start(database.server()).await;
    let engine = open_through(&proxy, &database).await;
    let mut ids = Vec::new();
    for n in 0..120u64 {
        ids.push(engine.start(WORKFLOW, &n).await.unwrap());
    }
    let completed = |engine: &Engine| engine.version(WORKFLOW, "1.0.0").unwrap().counters.completed;
    let mut faults = 0;
    for (index, id) in ids.iter().enumerate() {
        // A fault every ten signals, while instances sleep, step and commit.
        if index % 10 == 0 {
            match faults % 3 {
                0 => database
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                    .expect("terminate the engine's backends"),
                1 => proxy.cut_all(),
                _ => {
                    // Down until the engine has tried to reconnect a few times.
                    let refused = proxy.refused();
                    proxy.refuse(true);
                    common::wait_until(&engine, |_| proxy.refused() >= refused + 3).await;
                    proxy.refuse(false);
                }
            }
            faults += 1;
        }
        engine
            .signal(*id, "go", &1u64)
            .await
            .expect("a signal sent around a fault is delivered");
        if index % 10 == 9 {
            // Every instance signalled so far completes before the next fault.
            common::wait_until(&engine, |engine| completed(engine) as usize == index + 1).await;
        }
    }
    assert!(faults >= 12, "{faults} faults injected");
    assert_exactly_once(&engine, &database, &ids).await;
    assert!(proxy.accepted() > 12, "the engine reconnected after the faults");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retries_says_what_to_check_and_the_engine_recovers() {
    let database = TestDatabase::create();
    let proxy = FaultyProxy::start(database.server()).await;
    let engine = open_through(&proxy, &database).await;
    let first = engine.start(WORKFLOW, &1u64).await.unwrap();
    proxy.refuse(true);
    // Callers during the outage: each gets its error at the retry window (15 s), however many
    // queue behind one another in the commit thread, not a window each in turn.
    let began = std::time::Instant::now();
    let starts: Vec<_> = (10..14u64)
        .map(|count| {
            let engine = engine.clone();
            tokio::spawn(async move { (engine.start(WORKFLOW, &count).await, began.elapsed()) })
        })
        .collect();
    let reader = engine.clone();
    let read = tokio::task::spawn_blocking(move || reader.workers()).await.unwrap();
    match read {
        Err(EngineError::Store(
            error @ StoreError::Backend {
                kind: BackendFailure::Unreachable { .. },
                ..
            },
        )) => {
            let message = error.to_string();
            assert!(
                message.contains("check that the PostgreSQL server is up and reachable"),
                "{message}"
            );
        }
        other => panic!("a read during a long outage: {other:?}"),
    }
    for start in starts {
        let (started, waited) = start.await.unwrap();
        assert!(
            matches!(
                started,
                Err(EngineError::Store(StoreError::Backend {
                    kind: BackendFailure::Unreachable { .. },
                    ..
                }))
            ),
            "a start during a long outage: {started:?}"
        );
        assert!(
            waited < Duration::from_secs(25),
            "a start waited {waited:?} for its error: more than one retry window (15 s)"
        );
    }
    // Still refusing: a call now fails at once, and says how long the database has been away.
    let again = engine.start(WORKFLOW, &20u64).await.unwrap_err();
    assert!(
        again.to_string().contains("check that the PostgreSQL server"),
        "{again}"
    );
    proxy.refuse(false);
    assert_eq!(
        database.count("SELECT count(*) FROM strata_instances"),
        1,
        "a start that failed left no instance"
    );
    engine.signal(first, "go", &1u64).await.expect("signals work again");
    let second = engine.start(WORKFLOW, &2u64).await.expect("starts work again");
    engine.signal(second, "go", &1u64).await.unwrap();
    assert_exactly_once(&engine, &database, &[first, second]).await;
    engine.shutdown().await;
}

/// A failover as clients left on a demoted primary see it: the engine's pooled sessions become
/// read-only, and stay so after the database is writable again (`ALTER DATABASE .. SET
/// default_transaction_read_only`, the backends replaced, then `RESET` with the sessions kept).
/// Meanwhile a caller gets `ReadOnly` at the retry window and steps wait; once the database is
/// writable, the engine replaces its read-only sessions by itself: every instance finishes,
/// nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_left_read_only_by_a_failover_are_replaced_and_every_instance_finishes() {
    let database = TestDatabase::create();
    let engine = Engine::builder()
        .postgres(&database.url)
        .commit_retry_delay(Duration::from_millis(10))
        .register(sturdy())
        .open()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for count in 1..=4u64 {
        ids.push(engine.start(WORKFLOW, &count).await.unwrap());
    }
    for id in &ids {
        common::wait_for_status(&engine, *id, strata::InstanceStatus::WaitingSignal).await;
    }
    // Two run their sleeping steps through the episode; two wait for their signal.
    for id in &ids[..2] {
        engine.signal(*id, "go", &1u64).await.unwrap();
    }
    let name = database.name().to_string();
    database
        .execute(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = '{name}' AND pid <> pg_backend_pid();"
        ))
        .unwrap();
    let refused = engine.signal(ids[2], "go", &1u64).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            EngineError::Store(StoreError::Backend {
                kind: BackendFailure::ReadOnly { .. },
                ..
            })
        ),
        "a signal while the database is read-only: {refused:?}"
    );
    assert!(
        refused.to_string().contains("target_session_attrs=read-write"),
        "{refused}"
    );
    // Writable again; the engine's sessions, opened meanwhile, are still read-only.
    database
        .execute(&format!(
            "BEGIN READ WRITE; ALTER DATABASE {name} RESET default_transaction_read_only; COMMIT;"
        ))
        .unwrap();
    let writable = std::time::Instant::now();
    let fifth = engine
        .start(WORKFLOW, &5u64)
        .await
        .expect("a start once the database is writable");
    println!(
        "first start after the database was writable again: {:?}",
        writable.elapsed()
    );
    ids.push(fifth);
    common::wait_for_status(&engine, fifth, strata::InstanceStatus::WaitingSignal).await;
    for id in &ids[2..] {
        engine.signal(*id, "go", &1u64).await.unwrap();
    }
    assert_exactly_once(&engine, &database, &ids).await;
    engine.shutdown().await;
}

/// A multi-host URL as a cluster with failover is given: the first host down (a proxy that
/// refuses), the engine opens on and writes to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_host_url_with_target_session_attrs_reaches_the_host_that_answers() {
    let database = TestDatabase::create();
    let down = FaultyProxy::start(database.server()).await;
    down.refuse(true);
    let down_address = down.url("x", "y");
    let down_host = down_address
        .trim_start_matches("postgres://x@")
        .trim_end_matches("/y")
        .to_string();
    let url = format!(
        "postgres://{}@{down_host},{}/{}?target_session_attrs=read-write",
        database.user(),
        database.server(),
        database.name()
    );
    let engine = Engine::builder()
        .postgres(&url)
        .register(sturdy())
        .open()
        .await
        .expect("opens on the host that answers");
    let id = engine.start(WORKFLOW, &1u64).await.unwrap();
    engine.signal(id, "go", &1u64).await.unwrap();
    assert_exactly_once(&engine, &database, &[id]).await;
    assert!(down.refused() > 0, "the first host was tried");
    engine.shutdown().await;
}
