//! A rolling deploy with real processes on one PostgreSQL database (invariant 8): an old worker
//! with code for 1.0.0 only and a new one with 1.0.0 and 2.0.0 run side by side; new instances
//! go to 2.0.0 and the old worker never holds one of them; the old worker stops and the new one
//! finishes its 1.0.0 instances; 1.0.0 drains and is safe to remove.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use strata::prelude::*;

use common::pgbouncer::{PgBouncer, PoolMode};
use common::postgres::TestDatabase;
use common::tally;
use common::*;
use strata::{Engine, InstanceFilter, InstanceStatus, StartOptions, VersionStatus};

const CHILD_URL: &str = "STRATA_ROLLING_CHILD_URL";
const CHILD_VERSIONS: &str = "STRATA_ROLLING_CHILD_VERSIONS";
const CHILD_LISTEN_URL: &str = "STRATA_ROLLING_CHILD_LISTEN_URL";

/// Where the workers and the console connect: the database's URL, and a direct one for the
/// wake-ups when that URL goes through a transaction pooler.
#[derive(Clone)]
struct Urls {
    database: String,
    listen: Option<String>,
}

impl Urls {
    fn builder(&self) -> strata::EngineBuilder {
        let builder = Engine::builder().postgres(&self.database);
        match &self.listen {
            Some(listen) => builder.postgres_listen_url(listen),
            None => builder,
        }
    }
}

/// A worker process: the tally versions named in its environment; starts 10 instances on its
/// newest version (and, with 2.0.0, 5 more that a client pins to `=1.0.0`), prints its worker id,
/// and runs until a line arrives on its standard input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the worker processes of old_and_new_workers_share_a_database_through_a_rolling_deploy"]
async fn rolling_child() {
    let (Ok(url), Ok(versions)) = (std::env::var(CHILD_URL), std::env::var(CHILD_VERSIONS)) else {
        return;
    };
    let urls = Urls {
        database: url,
        listen: std::env::var(CHILD_LISTEN_URL).ok(),
    };
    let mut builder = urls.builder().lease(Duration::from_secs(2));
    for version in versions.split(',') {
        builder = builder.register(tally::on_schema_1(version));
    }
    let engine = builder.open().await.unwrap();
    for count in 0..10u64 {
        engine
            .start_with(tally::WORKFLOW, &count, StartOptions::new())
            .await
            .unwrap();
    }
    if versions.contains("2.0.0") {
        for count in 10..15u64 {
            let pinned = StartOptions::new().version("=1.0.0");
            engine.start_with(tally::WORKFLOW, &count, pinned).await.unwrap();
        }
    }
    println!("STRATA ready {}", engine.worker_id());
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    engine.shutdown().await;
}

fn spawn(urls: &Urls, versions: &str) -> (Child, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if let Some(listen) = &urls.listen {
        command.env(CHILD_LISTEN_URL, listen);
    }
    let mut child = command
        .args([
            "--exact",
            "rolling_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, &urls.database)
        .env(CHILD_VERSIONS, versions)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let id = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.split_once("STRATA ready ").map(|(_, id)| id.to_string()))
        .expect("the worker started");
    // The test harness in the child prints on until it exits: keep reading.
    std::thread::spawn(move || lines.for_each(drop));
    (child, id)
}

fn stop(mut child: Child) {
    writeln!(child.stdin.take().unwrap(), "stop").unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_workers_share_a_database_through_a_rolling_deploy() {
    let database = TestDatabase::create();
    let urls = Urls {
        database: database.url.clone(),
        listen: None,
    };
    rolling_deploy(&database, &urls).await;
}

/// The same deploy with every process connected through PgBouncer in transaction pooling mode
/// (wake-ups on direct connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_workers_share_a_database_through_a_transaction_pooler() {
    let database = TestDatabase::create();
    let bouncer = PgBouncer::start(PoolMode::Transaction, database.server(), &database.user());
    let urls = Urls {
        database: bouncer.url(&database.user(), database.name()),
        listen: Some(database.url.clone()),
    };
    rolling_deploy(&database, &urls).await;
}

async fn rolling_deploy(database: &TestDatabase, urls: &Urls) {
    let (old, old_id) = spawn(urls, "1.0.0");
    let (new, new_id) = spawn(urls, "1.0.0,2.0.0");
    // The console: no code; reads the cluster's figures and signals through the database.
    let console = urls.builder().open().await.unwrap();
    let v1 = console.version(tally::WORKFLOW, "1.0.0").unwrap();
    let v2 = console.version(tally::WORKFLOW, "2.0.0").unwrap();
    assert_eq!(
        (v1.counters.live, v2.counters.live),
        (15, 10),
        "new starts go to the newest version"
    );
    let mut can_run_v1 = v1.workers.clone();
    can_run_v1.sort();
    let mut both = vec![old_id.clone(), new_id.clone()];
    both.sort();
    assert_eq!(can_run_v1, both);
    assert_eq!(v2.workers, vec![new_id.clone()]);
    let held_by = |worker: &str, version: &str| {
        database.count(&format!(
            "SELECT count(*) FROM strata_instances WHERE live AND owner = '{worker}' AND version = '{version}'"
        ))
    };
    assert_eq!(held_by(&old_id, "2.0.0"), 0, "the old worker holds no 2.0.0 instance");

    // The new worker goes away for a moment (a restart of the new release): its 2.0.0
    // instances wait, the old worker never takes them, its 1.0.0 ones go to the old worker.
    stop(new);
    wait_until(&console, |_| held_by(&old_id, "1.0.0") == 15).await;
    assert_eq!(held_by(&old_id, "2.0.0"), 0, "still none after the new worker left");
    let v2 = console.version(tally::WORKFLOW, "2.0.0").unwrap();
    assert!(v2.workers.is_empty() && v2.counters.live == 10, "{v2:?}");

    // The new release is back, the old one stops: everything runs on new workers.
    let (new, new_id) = spawn(urls, "1.0.0,2.0.0");
    stop(old);
    wait_until(&console, |_| {
        held_by(&new_id, "1.0.0") == 20 && held_by(&new_id, "2.0.0") == 20
    })
    .await;
    assert_eq!(
        console.drain(tally::WORKFLOW, "1.0.0").await.unwrap(),
        VersionStatus::Draining
    );
    let waiting = console
        .list(&InstanceFilter::workflow(tally::WORKFLOW).with_status(InstanceStatus::WaitingSignal))
        .unwrap();
    assert_eq!(waiting.len(), 40);
    for info in &waiting {
        console.signal(info.id(), tally::GO, &()).await.unwrap();
    }
    for info in &waiting {
        outcome_within(&console, info.id()).await;
    }
    let v1 = console.version(tally::WORKFLOW, "1.0.0").unwrap();
    assert_eq!(
        (v1.status, v1.counters.live, v1.counters.completed),
        (VersionStatus::Drained, 0, 20)
    );
    assert!(v1.safe_to_remove());
    assert_eq!(
        console.version(tally::WORKFLOW, "2.0.0").unwrap().counters.completed,
        20
    );
    stop(new);
    console.shutdown().await;
}
