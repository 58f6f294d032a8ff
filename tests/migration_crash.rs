//! Invariant 6 under `kill -9`: a background migration of 100 000 live instances runs in a child
//! process that is killed with SIGKILL at random moments, again and again. While it runs, a reader
//! in the child decodes instances continuously; after every kill the parent opens the store
//! directly and checks that every record decodes, that its state decodes as the schema it says,
//! that no state was migrated twice (each migration stamps the state), and that the count stored on
//! the job's share equals the records migrated — it is committed in the same commit as its batch.
//!
//! A second test kills a child that moves 20 000 instances between two versions (and schemas) and
//! back, in batches, and checks after every kill that each record's version, schema and recorded
//! moves agree, that each move migrated the state exactly once, and that every version's live
//! counter equals its records (invariants 1, 2 and 6 for moves).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::prelude::*;

use common::tally;
use rand::{Rng, SeedableRng};
use strata::migrate::{MigrationJob, MigrationState};
use strata::{Durability, Engine, InstanceId, InstanceStatus, SledStore, Store};

const CHILD_DIR: &str = "STRATA_MIGRATION_CHILD_DIR";
const CHILD_MODE: &str = "STRATA_MIGRATION_CHILD_MODE";
const INSTANCES: u64 = 100_000;
const KILLS: usize = 8;
/// Instances of the move test.
const MOVED_INSTANCES: u64 = 20_000;

fn child_builder(dir: &Path) -> strata::EngineBuilder {
    Engine::builder()
        .data_dir(dir)
        .durability(Durability::Sync)
        .max_concurrent_steps(512)
}

/// Fills the store with `count` live instances on schema 1, all waiting for a signal.
async fn fill(dir: &Path, count: u64) {
    let engine = child_builder(dir)
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let mut starters = Vec::new();
    let total = count;
    for worker in 0..64u64 {
        let engine = engine.clone();
        starters.push(tokio::spawn(async move {
            let mut count = 10_000 + worker;
            while count < 10_000 + total {
                engine.start(tally::WORKFLOW, &count).await.unwrap();
                count += 64;
            }
        }));
    }
    for starter in starters {
        starter.await.unwrap();
    }
    let waiting = strata::InstanceFilter::workflow(tally::WORKFLOW).with_status(InstanceStatus::WaitingSignal);
    let deadline = Instant::now() + Duration::from_secs(120);
    while engine.list(&waiting).unwrap().len() < count as usize {
        assert!(Instant::now() < deadline, "the instances did not reach their wait");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling the child's own progress
    }
    engine.shutdown().await;
}

/// Runs (or resumes) the migration with a concurrent reader, until the job finishes.
async fn migrate(dir: &Path) {
    let engine = child_builder(dir)
        .register(tally::on_schema_2("1.0.0"))
        .migration(tally::migration(Arc::new(AtomicU64::new(0))))
        .open()
        .await
        .unwrap();
    let job = match engine.migration(tally::WORKFLOW) {
        Some(resumed) => resumed,
        None => engine
            .migrate_states(
                MigrationJob::new(tally::WORKFLOW)
                    .batch_size(500)
                    .max_per_second(10_000),
            )
            .unwrap(),
    };
    let reader_engine = engine.clone();
    let reader = tokio::spawn(async move {
        let mut random = rand::rngs::StdRng::seed_from_u64(7);
        let mut reads = 0u64;
        loop {
            let id = InstanceId(random.random_range(1..=INSTANCES));
            let info = reader_engine.instance(id).unwrap();
            let stamps = tally::stamps(info.state_schema(), &info.record.state.bytes);
            let expected = if info.state_schema() == 2 { 1 } else { 0 };
            if stamps != Ok(expected) {
                println!("STRATA unreadable {id}: schema {} {stamps:?}", info.state_schema());
            }
            reads += 1;
            if reads % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    println!("STRATA ready");
    let done = job.finished().await;
    reader.abort();
    println!("STRATA migrated {} {:?}", done.migrated, done.state);
    engine.shutdown().await;
}

/// Moves every instance from 1.0.0 (schema 1) to 2.0.0 (schema 2) and back, in batches, forever.
async fn move_back_and_forth(dir: &Path) {
    // Every instance in memory from the open, so that the first move begins at once and the
    // kills land in moves (with the default horizon a move first loads the 20 000 waiting
    // instances, which in a debug build can outlast the kill delays).
    let engine = child_builder(dir)
        .residency_horizon(Duration::MAX)
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_2("2.0.0"))
        .migration(tally::migration(Arc::new(AtomicU64::new(0))))
        .open()
        .await
        .unwrap();
    println!("STRATA ready");
    for round in 0u64.. {
        let (from, to) = if round % 2 == 0 {
            ("1.0.0", "2.0.0")
        } else {
            ("2.0.0", "1.0.0")
        };
        let request = strata::MoveRequest::new(tally::WORKFLOW, strata::Version::parse(to).unwrap())
            .from_version(strata::Version::parse(from).unwrap())
            .batch_size(250);
        let report = engine.move_instances(&request).await.unwrap();
        println!("STRATA moved {} to {to}", report.moved.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child processes of the kill-nine tests in this file"]
async fn migration_child() {
    println!("STRATA child");
    let dir = std::path::PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    match std::env::var(CHILD_MODE).unwrap().as_str() {
        "fill" => fill(&dir, INSTANCES).await,
        "fill-small" => fill(&dir, MOVED_INSTANCES).await,
        "move" => move_back_and_forth(&dir).await,
        _ => migrate(&dir).await,
    }
}

/// Runs a child; with `kill_after`, SIGKILLs it that long after it said it was ready. Returns its
/// output lines.
fn run_child(dir: &Path, mode: &str, kill_after: Option<Duration>) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "migration_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (ready_sender, ready) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("STRATA ready") {
                let _ = ready_sender.send(());
            }
            lines.push(line);
        }
        lines
    });
    match kill_after {
        Some(delay) => {
            ready
                .recv_timeout(Duration::from_secs(120))
                .expect("child never got ready");
            std::thread::sleep(delay); // picks the kill moment; not a synchronisation
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
        }
        None => {
            let status = child.wait().unwrap();
            assert!(status.success(), "the child ({mode}) failed: {status}");
        }
    }
    reader.join().unwrap()
}

/// Opens the store a killed child left and recovers it; no record may be undecodable.
fn recover(dir: &Path) -> (SledStore, strata_store::RecoveredState) {
    let store = SledStore::open(dir).expect("parent: open the store after a kill");
    let recovered = store.recover(u64::MAX).unwrap();
    assert!(
        recovered.corrupt.is_empty(),
        "undecodable records: {:?}",
        recovered.corrupt
    );
    (store, recovered)
}

/// Checks the store directly; returns how many records are on schema 2.
fn check_store(dir: &Path) -> u64 {
    let (store, recovered) = recover(dir);
    assert_eq!(recovered.live.len() as u64, INSTANCES, "a live instance went missing");
    let mut on_schema_2 = 0;
    for record in &recovered.live {
        let schema = record.state.schema;
        let stamps = tally::stamps(schema, &record.state.bytes)
            .unwrap_or_else(|error| panic!("instance {} state (schema {schema}) unreadable: {error}", record.id));
        match schema {
            1 => assert_eq!(stamps, 0, "instance {} on schema 1 was stamped", record.id),
            _ => {
                assert_eq!(stamps, 1, "instance {} was migrated {stamps} times", record.id);
                on_schema_2 += 1;
            }
        }
    }
    // The job's own record (worker id empty) and this store's one share of it, whose counts are
    // committed with each batch; the job's record takes the totals when it finishes.
    let jobs = store.migration_jobs().unwrap();
    let migrated: u64 = jobs
        .iter()
        .filter(|record| !record.worker.is_empty())
        .map(|share| share.migrated)
        .sum();
    assert_eq!(
        migrated, on_schema_2,
        "the share's stored count must equal the migrated records (one commit per batch)"
    );
    for job in jobs.iter().filter(|record| record.worker.is_empty()) {
        if job.state == MigrationState::Finished {
            assert_eq!(job.migrated, on_schema_2, "a finished job's totals are its share's");
        }
    }
    on_schema_2
}

/// The kill moments' seed (`STRATA_CRASH_SEED` to repeat a run) and its generator.
fn seeded() -> (u64, rand::rngs::StdRng) {
    let seed = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    (seed, rand::rngs::StdRng::seed_from_u64(seed))
}

#[test]
fn background_migration_survives_kill_nine() {
    let dir = tempfile::tempdir().unwrap();
    let (seed, mut random) = seeded();
    run_child(dir.path(), "fill", None);
    assert_eq!(check_store(dir.path()), 0);
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        let delay = Duration::from_millis(random.random_range(50..700));
        let lines = run_child(dir.path(), "migrate", Some(delay));
        assert!(
            !lines.iter().any(|line| line.contains("unreadable")),
            "seed {seed}: the reader saw {:?}",
            lines.iter().find(|line| line.contains("unreadable"))
        );
        progress.push(check_store(dir.path()));
    }
    let lines = run_child(dir.path(), "migrate", None);
    assert!(!lines.iter().any(|line| line.contains("unreadable")), "seed {seed}");
    assert!(
        lines
            .iter()
            .any(|line| line == &format!("STRATA migrated {INSTANCES} Finished")),
        "seed {seed}: {lines:?}"
    );
    assert_eq!(check_store(dir.path()), INSTANCES);
    let store = SledStore::open(dir.path()).unwrap();
    let jobs = store.migration_jobs().unwrap();
    let job = jobs
        .iter()
        .find(|record| record.worker.is_empty())
        .expect("the job's own record");
    assert_eq!((job.state, job.migrated), (MigrationState::Finished, INSTANCES));
    assert!(
        progress.windows(2).all(|pair| pair[0] <= pair[1]) && progress[KILLS - 1] < INSTANCES,
        "seed {seed}: migrated after each kill {progress:?} (the kills must land mid-migration)"
    );
    println!("seed {seed}: migrated after each of {KILLS} kills: {progress:?}");
}

/// Checks the store after a kill during moves: every record on 1.0.0 holds schema 1 and an even
/// number of recorded moves, every record on 2.0.0 schema 2 and an odd number; each move migrated
/// the state once (its stamps equal its moves); each version's live counter equals its records.
fn check_moves(dir: &Path) -> (u64, u64) {
    let (_, recovered) = recover(dir);
    assert_eq!(
        recovered.live.len() as u64,
        MOVED_INSTANCES,
        "a live instance went missing"
    );
    let mut per_version = std::collections::BTreeMap::<String, u64>::new();
    for record in &recovered.live {
        let version = record.key.version.to_string();
        let expected_schema = if version == "1.0.0" { 1 } else { 2 };
        assert_eq!(
            record.state.schema, expected_schema,
            "instance {} on {version}",
            record.id
        );
        assert_eq!(
            record.moves.len() % 2,
            (expected_schema - 1) as usize,
            "instance {}",
            record.id
        );
        let stamps = tally::stamps(record.state.schema, &record.state.bytes).unwrap();
        assert_eq!(
            stamps as usize,
            record.moves.len(),
            "instance {}: a move migrated twice or not at all",
            record.id
        );
        *per_version.entry(version).or_default() += 1;
    }
    for stored in &recovered.versions {
        let (key, counters) = (&stored.key, &stored.counters);
        let listed = per_version.get(&key.version.to_string()).copied().unwrap_or(0);
        assert_eq!(
            counters.live, listed,
            "{key}: live counter {} but {listed} records",
            counters.live
        );
    }
    (
        per_version.get("1.0.0").copied().unwrap_or(0),
        per_version.get("2.0.0").copied().unwrap_or(0),
    )
}

#[test]
fn moves_between_versions_survive_kill_nine() {
    let dir = tempfile::tempdir().unwrap();
    let (seed, mut random) = seeded();
    run_child(dir.path(), "fill-small", None);
    assert_eq!(check_moves(dir.path()), (MOVED_INSTANCES, 0));
    let mut split = Vec::new();
    for _ in 0..KILLS {
        let delay = Duration::from_millis(random.random_range(100..1_500));
        let lines = run_child(dir.path(), "move", Some(delay));
        let batches = lines.iter().filter(|line| line.starts_with("STRATA moved")).count();
        split.push((check_moves(dir.path()), batches));
    }
    let mid_move = split.iter().filter(|((old, new), _)| *old > 0 && *new > 0).count();
    assert!(
        mid_move > 0,
        "seed {seed}: no kill landed in the middle of a move: {split:?}"
    );
    println!("seed {seed}: (on 1.0.0, on 2.0.0) and full moves done after each kill: {split:?}");
}
