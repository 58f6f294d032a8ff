//! The PostgreSQL store on its own: a wrong URL, server, user or database is a typed error
//! naming the problem before anything runs; the schema is created once by versioned migrations
//! even when engines start at once on an empty database; a newer schema or record format is
//! refused; loads and listings tell this worker's instances from another worker's.

mod common;

use common::postgres::TestDatabase;
use strata::prelude::*;
use strata::store::{BackendFailure, DatabaseProblem, PostgresStore, StoreError};
use strata::{Engine, EngineError};

fn problem_of(url: &str) -> (DatabaseProblem, String) {
    match PostgresStore::connect(url) {
        Err(
            error @ StoreError::Backend {
                kind: BackendFailure::Unusable(problem),
                ..
            },
        ) => (problem, error.to_string()),
        Err(other) => panic!("{url}: not a database error: {other}"),
        Ok(_) => panic!("{url}: connected"),
    }
}

#[test]
fn a_wrong_url_server_user_or_database_is_named_before_anything_runs() {
    let database = TestDatabase::create();
    let (server, _) = database.url.rsplit_once('/').unwrap();

    let (problem, message) = problem_of("postgres://127.0.0.1:notaport/strata");
    assert_eq!(problem, DatabaseProblem::InvalidUrl, "{message}");
    assert!(message.contains("give a URL like postgres://"), "{message}");

    let (problem, message) = problem_of("postgres://postgres@127.0.0.1:1/postgres");
    assert_eq!(problem, DatabaseProblem::Unreachable, "{message}");
    assert!(message.contains("postgres@127.0.0.1:1/postgres"), "{message}");
    assert!(message.contains("check that PostgreSQL runs"), "{message}");

    let (problem, message) = problem_of("postgres://strata_no_such_role:secret@127.0.0.1:5432/postgres");
    assert_eq!(problem, DatabaseProblem::Authentication, "{message}");
    assert!(!message.contains("secret"), "the password is never shown: {message}");
    assert!(message.contains("strata_no_such_role"), "{message}");

    let (problem, message) = problem_of(&format!("{server}/strata_no_such_database"));
    assert_eq!(problem, DatabaseProblem::MissingDatabase, "{message}");
    assert!(message.contains("createdb"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_reports_the_problem_as_a_store_error() {
    let error = Engine::builder()
        .postgres("postgres://postgres@127.0.0.1:1/postgres")
        .open()
        .await
        .err()
        .expect("no server on port 1");
    assert!(
        matches!(
            error,
            EngineError::Store(StoreError::Backend {
                kind: BackendFailure::Unusable(DatabaseProblem::Unreachable),
                ..
            })
        ),
        "{error}"
    );
}

#[test]
fn engines_starting_at_once_on_an_empty_database_all_succeed_and_create_the_schema_once() {
    let database = TestDatabase::create();
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let url = database.url.clone();
            std::thread::spawn(move || PostgresStore::connect(&url).map(drop))
        })
        .collect();
    for opener in openers {
        opener.join().unwrap().unwrap();
    }
    database
        .execute(
            "DO $$ BEGIN
               IF (SELECT count(*) FROM strata_schema) <> (SELECT max(version) FROM strata_schema)
                   OR (SELECT max(version) FROM strata_schema) < 2 THEN
                   RAISE EXCEPTION 'each schema migration must be applied exactly once';
               END IF;
             END $$",
        )
        .unwrap();
}

#[test]
fn a_database_written_by_a_newer_strata_is_refused() {
    let database = TestDatabase::create();
    drop(PostgresStore::connect(&database.url).unwrap());
    database
        .execute("INSERT INTO strata_schema (version, description) VALUES (99, 'from the future')")
        .unwrap();
    let refused = PostgresStore::connect(&database.url).err().expect("a newer schema");
    assert_eq!(refused.backend_failure(), Some(BackendFailure::Newer), "{refused}");
    assert!(refused.to_string().contains("has Strata schema 99"), "{refused}");
    assert!(refused.to_string().contains("upgrade Strata"), "{refused}");

    let database = TestDatabase::create();
    drop(PostgresStore::connect(&database.url).unwrap());
    database
        .execute("UPDATE strata_meta SET value = 99 WHERE key = 'record_format'")
        .unwrap();
    let refused = PostgresStore::connect(&database.url)
        .err()
        .expect("a newer record format");
    assert_eq!(refused.backend_failure(), Some(BackendFailure::Newer), "{refused}");
    assert!(refused.to_string().contains("record format 99"), "{refused}");
}

/// A load by id hands over what this worker holds and names the live instances another worker
/// holds (so that a signal to one of them is delivered without reading it twice); a listing of
/// this worker's only leaves another worker's out.
#[test]
fn loads_and_listings_tell_this_workers_instances_from_another_workers() {
    use std::time::Duration;
    use strata::instance::{InstanceId, InstanceRecord, VersionKey};
    use strata::store::Store;
    let database = TestDatabase::create();
    let holder = PostgresStore::connect(&database.url).unwrap();
    let other = PostgresStore::connect(&database.url).unwrap();
    let key = VersionKey::new("w", strata::Version::new(1, 0, 0));
    put_waiting(&holder, &key, 7);
    let lease = Duration::from_secs(30);
    for store in [&holder, &other] {
        store.cluster().heartbeat(std::slice::from_ref(&key), lease).unwrap();
    }
    holder.cluster().claim(&[key], lease, usize::MAX, u64::MAX).unwrap();
    let held_here = |store: &PostgresStore| {
        let loaded = store.load_held(&[InstanceId(7), InstanceId(8)]).unwrap();
        let ids = |records: &[InstanceRecord]| records.iter().map(|record| record.id.0).collect::<Vec<_>>();
        (ids(&loaded.live), ids(&loaded.elsewhere))
    };
    assert_eq!(held_here(&holder), (vec![7], vec![]));
    assert_eq!(held_here(&other), (vec![], vec![7]), "another worker's, read once");
    // A listing of this worker's only leaves another worker's out.
    let listed = |store: &PostgresStore, held_here: bool| {
        let scope = strata_store::ListScope {
            held_here,
            ..Default::default()
        };
        let records = store.cluster().live_held_elsewhere(&scope, &mut |_| true, 10).unwrap();
        records.iter().map(|record| record.id.0).collect::<Vec<_>>()
    };
    assert_eq!(listed(&holder, true), [7]);
    assert_eq!(listed(&other, true), Vec::<u64>::new());
    assert_eq!(listed(&other, false), [7], "every worker's");
}

/// A claim takes what no worker with a current lease holds, whatever the reason: instances held
/// by no one, those of a worker that left (released), of one whose lease lapsed, and none of a
/// live worker's, its own included; a claim with nothing lost takes nothing.
#[test]
fn a_claim_takes_the_instances_of_lost_holders_and_never_a_live_workers() {
    use std::time::Duration;
    use strata::instance::{InstanceId, VersionKey};
    use strata::store::Store;
    let database = TestDatabase::create();
    let key = VersionKey::new("w", strata::Version::new(1, 0, 0));
    let lease = Duration::from_secs(30);
    let workers: Vec<PostgresStore> = (0..4).map(|_| PostgresStore::connect(&database.url).unwrap()).collect();
    let [claimer, alive, left, lapsed] = &workers[..] else {
        unreachable!()
    };
    for store in &workers {
        store.cluster().heartbeat(std::slice::from_ref(&key), lease).unwrap();
    }
    let claimed_ids = |store: &PostgresStore| claimed_ids(store, std::slice::from_ref(&key), lease);
    // Each worker writes two instances, ids 10 * its number + 1 and + 2: held by no one until
    // its claim takes them.
    for (number, store) in workers.iter().enumerate() {
        for id in [10 * number as u64 + 1, 10 * number as u64 + 2] {
            put_waiting(store, &key, id);
        }
        let first = 10 * number as u64;
        assert_eq!(claimed_ids(store), [first + 1, first + 2], "unheld instances");
    }
    assert_eq!(claimed_ids(claimer), Vec::<u64>::new(), "every holder is alive");

    left.cluster().leave().unwrap();
    database
        .execute(&format!(
            "UPDATE strata_workers SET heartbeat_ms = 0 WHERE id = '{}'",
            lapsed.cluster().worker_id()
        ))
        .unwrap();
    assert_eq!(
        claimed_ids(claimer),
        [21, 22, 31, 32],
        "a worker that left, one whose lease lapsed"
    );
    assert_eq!(claimed_ids(alive), Vec::<u64>::new(), "taken already, by a live worker");
    assert_eq!(claimed_ids(claimer), Vec::<u64>::new());
    let held = alive.load_held(&[InstanceId(11), InstanceId(21)]).unwrap();
    assert_eq!(held.live.iter().map(|record| record.id.0).collect::<Vec<_>>(), [11]);
}

/// What a background migration's shares did not cover (`Cluster::uncovered_live`): of a live
/// holder, the instances it claimed after its share; of a lost holder and of no holder, those a
/// live worker has the code for; never another workflow's.
#[test]
fn a_migrations_uncovered_count_takes_live_holders_after_their_share_and_lost_or_unheld_ones_a_live_worker_runs() {
    use std::time::Duration;
    use strata::instance::VersionKey;
    use strata::store::Store;
    let database = TestDatabase::create();
    let runnable = VersionKey::new("w", strata::Version::new(1, 0, 0));
    let orphaned = VersionKey::new("w", strata::Version::new(9, 0, 0));
    let other_workflow = VersionKey::new("x", strata::Version::new(1, 0, 0));
    let lease = Duration::from_secs(30);
    let workers: Vec<PostgresStore> = (0..3).map(|_| PostgresStore::connect(&database.url).unwrap()).collect();
    let [first, second, lapsed] = &workers[..] else {
        unreachable!()
    };
    let claim = |store: &PostgresStore, keys: &[VersionKey], ids: &[u64]| {
        store.cluster().heartbeat(keys, lease).unwrap();
        assert_eq!(claimed_ids(store, keys, lease), ids);
        database.count(&format!(
            "SELECT claimed_in FROM strata_instances WHERE id = {}",
            ids[0]
        )) as u64
    };
    // The first worker's share covered its claim of 1 and 2 (and of 10, another workflow's); it
    // claimed 3 and 11 after. The second worker's share covered nothing; it claimed 4.
    for id in [1, 2] {
        put_waiting(first, &runnable, id);
    }
    put_waiting(first, &other_workflow, 10);
    let covered_claim = claim(first, &[runnable.clone(), other_workflow.clone()], &[1, 2, 10]);
    put_waiting(first, &runnable, 3);
    put_waiting(first, &other_workflow, 11);
    let later_claim = claim(first, &[runnable.clone(), other_workflow.clone()], &[3, 11]);
    put_waiting(second, &runnable, 4);
    let second_claim = claim(second, std::slice::from_ref(&runnable), &[4]);
    // A worker whose lease lapsed still holds 5 (a version the live workers run) and 6 (one none
    // of them runs).
    put_waiting(lapsed, &runnable, 5);
    put_waiting(lapsed, &orphaned, 6);
    claim(lapsed, &[runnable.clone(), orphaned.clone()], &[5, 6]);
    database
        .execute(&format!(
            "UPDATE strata_workers SET heartbeat_ms = 0 WHERE id = '{}'",
            lapsed.cluster().worker_id()
        ))
        .unwrap();
    // Held by no one: 7 (run by a live worker), 8 (not) and 12 (another workflow's).
    put_waiting(first, &runnable, 7);
    put_waiting(first, &orphaned, 8);
    put_waiting(first, &other_workflow, 12);

    let uncovered = |covered: &[(String, u64)]| first.cluster().uncovered_live("w", lease, covered).unwrap();
    let worker = |store: &PostgresStore| store.cluster().worker_id().to_string();
    assert_eq!(
        uncovered(&[(worker(first), covered_claim)]),
        4,
        "3 (claimed after the first share), 4 (a share that covered no claim), 5 (a lost holder's, a live worker runs it) and 7 (unheld)"
    );
    assert_eq!(
        uncovered(&[(worker(first), later_claim), (worker(second), second_claim)]),
        2,
        "5 and 7: what no live worker's share can cover"
    );
    assert_eq!(
        uncovered(&[]),
        6,
        "no share covered a claim: 1, 2, 3 and 4, held by live workers, 5 and 7"
    );
    assert_eq!(
        second
            .cluster()
            .uncovered_live("x", lease, &[(worker(first), later_claim)])
            .unwrap(),
        1,
        "12, unheld"
    );
}

/// The ids of the instances of `keys` a claim of `store` takes, in order.
fn claimed_ids(store: &PostgresStore, keys: &[strata::instance::VersionKey], lease: std::time::Duration) -> Vec<u64> {
    use strata::store::Store;
    let claimed = store.cluster().claim(keys, lease, usize::MAX, u64::MAX).unwrap();
    let mut ids: Vec<u64> = claimed.live.iter().map(|record| record.id.0).collect();
    ids.sort();
    ids
}

/// Writes instance `id` of `key`, waiting for a signal, as a start does (held by no one until a
/// claim takes it).
fn put_waiting(store: &PostgresStore, key: &strata::instance::VersionKey, id: u64) {
    use strata::instance::{InstanceId, InstanceRecord, Phase};
    use strata::store::Store;
    use strata_store::{CounterDelta, Op};
    let phase = Phase::WaitingSignal {
        name: "go".to_string(),
        timeout_at_ms: None,
    };
    let record = InstanceRecord::new(InstanceId(id), key.clone(), phase, 1_000);
    store
        .apply(&[
            Op::PutInstance(record.encode().unwrap()),
            Op::AdjustCounters {
                key: key.clone(),
                delta: CounterDelta::start(1_000),
            },
        ])
        .unwrap();
}
