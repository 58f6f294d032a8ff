//! The embedded store's commit log stays whole across crashes (issue #12): a real child process
//! rewrites the same records over and over through a store whose log rolls and compacts every
//! few milliseconds, and is killed with SIGKILL at random moments — mid-append, mid-checkpoint,
//! mid-compaction (a compacted segment written, renamed into place, the segments it replaced
//! deleted). Records written once at the start and never again must be kept by every compaction
//! of the segment holding them. After every kill the store holds every
//! acknowledged write, and the log alone (sled's files lost) rebuilds exactly what the store
//! holds.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use strata::store::{SledStore, Store};
use strata_store::Op;

const CHILD_DIR: &str = "STRATA_LOG_COMPACTION_CHILD_DIR";
const KEYS: u64 = 20;
/// Records written once, before the first round.
const COLD: u64 = 5;

fn hot_schedule(key: u64) -> String {
    format!("schedule-{key}-{}", "x".repeat(200))
}

fn cold_schedule(key: u64) -> String {
    format!("cold-{key}")
}

/// The cold records the store holds.
fn cold_records(store: &SledStore) -> usize {
    let fires = store.schedule_fires().unwrap();
    fires.iter().filter(|(name, _)| name.starts_with("cold-")).count()
}
const KILLS: usize = 20;

fn round_of(store: &SledStore) -> Option<u64> {
    let fires: Vec<(String, u64)> = store
        .schedule_fires()
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name.starts_with("schedule-"))
        .collect();
    if fires.is_empty() {
        return None;
    }
    let rounds: Vec<u64> = fires.iter().map(|(_, fire_ms)| *fire_ms).collect();
    assert_eq!(
        fires.len() as u64,
        KEYS,
        "every key is written by every round: {fires:?}"
    );
    assert!(
        rounds.iter().all(|round| *round == rounds[0]),
        "a round is one atomic write: {fires:?}"
    );
    Some(rounds[0])
}

/// The child: from the round the store holds on, writes every key with the round's number, one
/// synced write per round, printing each acknowledged; segments of 16 KiB and checkpoints every
/// millisecond make the checkpoint thread roll, checkpoint and compact all the time. Ignored in
/// normal runs.
#[test]
#[ignore = "entry point of the child process of kill_nine_while_the_log_compacts_loses_nothing"]
fn compaction_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    // The parent's last open of the store may still hold sled's file lock a moment after it
    // closed (sled's threads wind down): retried, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = loop {
        match SledStore::open(&dir) {
            Err(error) if error.to_string().contains("could not acquire lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            opened => break opened.expect("child: open"),
        }
    };
    let store = store
        .with_log_segment_size(16 * 1024)
        .with_checkpoint_interval(Duration::from_millis(1));
    if cold_records(&store) == 0 {
        let ops: Vec<Op> = (0..COLD)
            .map(|key| Op::PutScheduleFire {
                schedule: cold_schedule(key),
                fire_ms: 1,
            })
            .collect();
        store.apply(&ops).expect("child: apply");
        store.sync().expect("child: sync");
    }
    let first = round_of(&store).map_or(1, |round| round + 1);
    println!("STRATA started");
    for round in first.. {
        let ops: Vec<Op> = (0..KEYS)
            .map(|key| Op::PutScheduleFire {
                schedule: hot_schedule(key),
                fire_ms: round,
            })
            .collect();
        store.apply(&ops).expect("child: apply");
        store.sync().expect("child: sync");
        println!("STRATA acknowledged {round}");
    }
}

/// Runs the child until `kill_after` has passed since it started writing, kills it with
/// SIGKILL, and returns the last round it acknowledged.
fn run_child(dir: &Path, kill_after: Duration) -> Option<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "compaction_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let mut acknowledged = None;
    let mut started: Option<Instant> = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("STRATA started") {
            started = Some(Instant::now());
        }
        if let Some((_, round)) = line.split_once("STRATA acknowledged ") {
            acknowledged = Some(round.parse::<u64>().unwrap());
        }
        if started.is_some_and(|started| started.elapsed() >= kill_after) {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    assert!(started.is_some(), "the child did not start writing");
    acknowledged
}

#[test]
fn kill_nine_while_the_log_compacts_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut last_acknowledged = 0u64;
    let mut compacted = false;
    for kill in 0..KILLS {
        let kill_after = Duration::from_millis(rng.random_range(30..400));
        if let Some(round) = run_child(dir.path(), kill_after) {
            last_acknowledged = last_acknowledged.max(round);
        }
        let held = {
            let store = SledStore::open(dir.path()).unwrap();
            if last_acknowledged > 0 {
                assert_eq!(
                    cold_records(&store) as u64,
                    COLD,
                    "kill {kill}: the records written once"
                );
            }
            round_of(&store).unwrap_or(0)
        };
        assert!(
            held >= last_acknowledged,
            "kill {kill}: the store holds round {held}, round {last_acknowledged} was acknowledged"
        );
        // The first segments are gone once compaction has run.
        let first_segment_left = dir.path().join("commit-log").join(format!("{:020}.log2", 1)).exists();
        compacted |= !first_segment_left;

        common::lose_sled_files(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            round_of(&store).unwrap_or(0),
            held,
            "kill {kill}: the log alone rebuilds what the store held"
        );
        if held > 0 {
            assert_eq!(
                cold_records(&store) as u64,
                COLD,
                "kill {kill}: the log alone holds the records written once"
            );
        }
        last_acknowledged = held;
    }
    assert!(compacted, "compaction ran during the kills");
    assert!(last_acknowledged > 0);
}
