//! The embedded store's commit log (issue #12): a `Sync` commit is durable once its frame is in
//! the log, before sled's tree reaches its file; opening the store replays what the tree lacks.
//! Checked with a real child process killed with SIGKILL after its acknowledgements, whose sled
//! files are then put back as they were when it opened the store — as a machine crash can leave
//! them, since nothing made them durable after that — so that only the log holds the commits.
//! Bytes flipped in the real segment such a child wrote: a damaged instance record quarantines
//! that instance alone while the rest runs on; damage that cannot be named, or in the store's own
//! bookkeeping, is refused by name. And the log kept whole: compaction bounds it, and the log
//! alone rebuilds the store.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use strata::prelude::*;
use strata::store::BackendFailure;

mod common;

use std::sync::Arc;

use common::probe::{self, Probe};
use strata::store::{SledStore, Store};
use strata::{Durability, Engine, InstanceId, InstanceStatus, Outcome};
use strata_store::Op;

const CHILD_DIR: &str = "STRATA_COMMIT_LOG_CHILD_DIR";
const TREE_COPY_DIR: &str = "STRATA_COMMIT_LOG_TREE_COPY_DIR";
const DAMAGED_ID: &str = "STRATA_COMMIT_LOG_DAMAGED_ID";
const WAITING_IDS: &str = "STRATA_COMMIT_LOG_WAITING_IDS";
const COMMITS: u64 = 200;
const PROBES: u64 = 10;

fn fire(index: u64) -> Op {
    Op::PutScheduleFire {
        schedule: format!("schedule-{index}"),
        fire_ms: 1_000 + index,
    }
}

fn fire_key(index: u64) -> Vec<u8> {
    format!("f/schedule-{index}").into_bytes()
}

fn log_segments(dir: &Path) -> Vec<u64> {
    let mut sizes: Vec<u64> = std::fs::read_dir(dir.join("commit-log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| common::is_log_segment(path))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .collect();
    sizes.sort();
    sizes
}

/// A segment's frames, without the zeros written ahead of them (cut off when it is ended);
/// `None` if compaction deleted it.
fn frames_in(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(mut bytes) => {
            bytes.truncate(bytes.iter().rposition(|byte| *byte != 0).map_or(0, |at| at + 1));
            Some(bytes)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => panic!("{error}"),
    }
}

/// Bytes of frames in the log's segments. Compaction may delete a segment between the listing
/// and its read: it then counts nothing.
fn log_frames_length(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("commit-log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| common::is_log_segment(path))
        .map(|path| frames_in(&path).map_or(0, |frames| frames.len() as u64))
        .sum()
}

/// Copies sled's files (everything but the commit log) from `from` into `to`.
fn copy_tree_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "commit-log" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(to.join(&name)).unwrap();
            copy_tree_files(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// A child's store, opened with its next checkpoint an hour away, and sled's files copied as
/// the open left them (durable, and untouched until that checkpoint) to the parent's directory.
fn open_with_the_tree_copied(dir: &str) -> SledStore {
    let store = SledStore::open(dir)
        .expect("child: open")
        .with_checkpoint_interval(Duration::from_secs(3600));
    let copy = std::env::var(TREE_COPY_DIR).expect("child: where to copy the tree");
    copy_tree_files(Path::new(dir), Path::new(&copy));
    store
}

/// The child: copies sled's files as the open left them (durable, and untouched until the next
/// checkpoint, an hour away), commits one schedule fire at a time, each synced, prints each
/// acknowledged, then waits to be killed. Ignored in normal runs.
#[test]
#[ignore = "entry point of the child process of acknowledged_commits_only_the_log_holds_survive_a_kill"]
fn commit_log_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let store = open_with_the_tree_copied(&dir);
    for index in 0..COMMITS {
        store.apply(&[fire(index)]).expect("child: apply");
        store.sync().expect("child: sync");
        println!("STRATA acknowledged {index}");
    }
    println!("STRATA done");
    loop {
        std::thread::park();
    }
}

/// Runs the child test `name`, kills it with SIGKILL once it prints `STRATA done`, and puts its
/// sled files back as they were at its open: only the commit log holds what it committed then.
/// Returns the directory and every line the child printed that began with `STRATA`.
fn killed_child_store(name: &str) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let tree_at_open = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(TREE_COPY_DIR, tree_at_open.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let mut printed = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // The test harness's own "test … " may begin the first line.
        if let Some((_, said)) = line.split_once("STRATA ") {
            printed.push(said.to_string());
        }
        if line.contains("STRATA done") {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    assert_eq!(
        printed.last().map(String::as_str),
        Some("done"),
        "the child stopped early: {printed:?}"
    );
    // sled's files as a machine crash can leave them: as last made durable, at the open.
    copy_tree_files(tree_at_open.path(), dir.path());
    (dir, printed)
}

/// The store of a killed [`commit_log_child`]: its tree holds none of the commits.
fn killed_commit_log_child() -> tempfile::TempDir {
    let (dir, printed) = killed_child_store("commit_log_child");
    let acknowledged = printed.iter().filter(|said| said.starts_with("acknowledged ")).count();
    assert_eq!(acknowledged as u64, COMMITS, "the child stopped early");
    {
        let tree = sled::open(dir.path()).unwrap();
        let in_tree = (0..COMMITS)
            .filter(|index| tree.contains_key(fire_key(*index)).unwrap())
            .count();
        assert_eq!(in_tree, 0, "the tree as it was at the open holds none of the commits");
        assert!(log_segments(dir.path()).iter().any(|size| *size > 0));
    }
    dir
}

#[test]
fn acknowledged_commits_only_the_log_holds_survive_a_kill() {
    let dir = killed_commit_log_child();

    // The store replays the log: every acknowledged commit is there, and stays there without
    // the log (the open checkpointed the tree).
    for open in ["after the kill", "without the log"] {
        if open == "without the log" {
            std::fs::remove_dir_all(dir.path().join("commit-log")).unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let mut fires = store.schedule_fires().unwrap();
        fires.sort_by_key(|(_, fire_ms)| *fire_ms);
        let expected: Vec<(String, u64)> = (0..COMMITS)
            .map(|index| (format!("schedule-{index}"), 1_000 + index))
            .collect();
        assert_eq!(fires, expected, "{open}");
        // A fire already handled is refused: the replayed tree decides as the first did.
        assert!(store.apply(&[fire(7)]).is_err(), "{open}");
    }
}

/// Waits (bounded) until the log's frames take at most `bound` bytes: the checkpoint thread
/// compacts a segment per look.
fn wait_for_log_within(dir: &Path, bound: u64, written: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let total = log_frames_length(dir);
        if total <= bound {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log stayed at {total} bytes (bound {bound}) after {written} written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A store in `dir` whose log segments end at `segment` bytes and whose checkpoint thread
/// checkpoints (and so may compact) at every look.
fn compacting_store(dir: &Path, segment: u64) -> SledStore {
    SledStore::open(dir)
        .unwrap()
        .with_log_segment_size(segment)
        .with_checkpoint_interval(Duration::from_millis(1))
}

/// Writes every one of `keys` schedule fires `rounds` times, a round per commit, unsynced.
fn rewrite_rounds(store: &SledStore, keys: u64, rounds: u64) {
    for round in 0..rounds {
        let ops: Vec<Op> = (0..keys)
            .map(|key| Op::PutScheduleFire {
                schedule: format!("schedule-{key}"),
                fire_ms: 1_000 + round,
            })
            .collect();
        store.apply(&ops).unwrap();
    }
}

#[test]
fn compaction_leaves_segments_of_live_records_alone_and_reclaims_the_garbage() {
    const SEGMENT: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = compacting_store(dir.path(), SEGMENT);
    // Records written once and kept, over two segments' worth, first in the log: one commit, so
    // one frame (a segment is ended only between frames).
    let ops: Vec<Op> = (0..600u64)
        .map(|index| Op::PutScheduleFire {
            schedule: format!("cold-{index}-{}", "c".repeat(200)),
            fire_ms: index,
        })
        .collect();
    store.apply(&ops).unwrap();
    store.sync().unwrap();
    // Until the checkpoint thread ends the segment they are in (and begins the next, empty), so
    // the rest goes after them.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log_segments(dir.path()).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the segment was never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    // (A few of the rewrites below may still land in it: the next segment's file is created
    // just before appends switch to it.)
    let cold: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("commit-log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| common::is_log_segment(path) && std::fs::metadata(path).unwrap().len() > 0)
        .collect();
    let cold_length: u64 = cold.iter().map(|path| frames_in(path).unwrap().len() as u64).sum();

    // Then garbage: fifty records rewritten 1 500 times, far more than the log's bound.
    rewrite_rounds(&store, 50, 1_500);
    store.sync().unwrap();
    wait_for_log_within(dir.path(), 3 * cold_length + 4 * SEGMENT, 1_500 * 50 * 40);
    for path in &cold {
        assert!(
            path.exists(),
            "{} holds live records almost only: compaction leaves it as it is (it would have been replaced by a compacted segment)",
            path.display()
        );
    }
    drop(store);
    common::lose_sled_files(dir.path());
    let store = SledStore::open(dir.path()).unwrap();
    let fires = store.schedule_fires().unwrap();
    assert_eq!(fires.iter().filter(|(name, _)| name.starts_with("cold-")).count(), 600);
    assert!(fires
        .iter()
        .filter(|(name, _)| name.starts_with("schedule-"))
        .all(|(_, fire_ms)| *fire_ms == 1_000 + 1_499));
}

#[test]
fn compaction_keeps_the_log_bounded_and_the_log_alone_rebuilds_the_store() {
    const KEYS: u64 = 50;
    const ROUNDS: u64 = 400;
    const SEGMENT: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = compacting_store(dir.path(), SEGMENT);
    // Every key rewritten ROUNDS times: almost all of what the log takes in is dead at once.
    rewrite_rounds(&store, KEYS, ROUNDS);
    store.sync().unwrap();
    // Within its bound — three times the live records (a few KiB here) plus two segments — and
    // a segment being appended to.
    wait_for_log_within(dir.path(), 4 * SEGMENT, ROUNDS * KEYS * 40);
    drop(store);

    // sled's files lost: the log alone gives every record at its last value.
    common::lose_sled_files(dir.path());
    let store = SledStore::open(dir.path()).unwrap();
    let mut fires = store.schedule_fires().unwrap();
    fires.sort();
    let mut expected: Vec<(String, u64)> = (0..KEYS)
        .map(|key| (format!("schedule-{key}"), 1_000 + ROUNDS - 1))
        .collect();
    expected.sort();
    assert_eq!(fires, expected);
    assert_eq!(
        store.damaged_files_set_aside().len(),
        1,
        "what sled had left is kept aside"
    );
}

/// The child's one segment with frames, and its bytes.
fn written_segment(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let segment = std::fs::read_dir(dir.join("commit-log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.extension().is_some_and(|extension| extension == "log2") && std::fs::metadata(path).unwrap().len() > 0
        })
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    (segment, bytes)
}

/// Where the entries whose key is `key` begin in `bytes`: each is its kind, the key's and the
/// value's lengths, the key, the CRC32 of those, the value and its CRC32.
fn entries_of(bytes: &[u8], key: &[u8]) -> Vec<usize> {
    bytes
        .windows(key.len())
        .enumerate()
        .filter(|(at, window)| {
            *window == key
                && *at >= 9
                && bytes[at - 9] == 1
                && bytes[at - 8..at - 4] == (key.len() as u32).to_le_bytes()
        })
        .map(|(at, _)| at - 9)
        .collect()
}

/// Where the value of the entry at `entry` with a key of `key_length` bytes begins.
fn value_of(entry: usize, key_length: usize) -> usize {
    entry + 9 + key_length + 4
}

/// The store of a killed [`commit_log_child`] with one byte flipped in the real segment it wrote:
/// in the entry of the tenth commit's fire, `into_entry(key length)` bytes into the entry.
fn killed_with_the_tenth_fire_damaged(into_entry: impl Fn(usize) -> usize) -> tempfile::TempDir {
    let dir = killed_commit_log_child();
    let (segment, mut bytes) = written_segment(dir.path());
    let key = fire_key(9);
    let entry = entries_of(&bytes, &key)[0];
    bytes[entry + into_entry(key.len())] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();
    dir
}

#[test]
fn a_damaged_byte_in_the_log_is_refused_by_name_and_nothing_after_it_is_dropped_silently() {
    // A byte of the key: the entry's own checksum fails too, so what the frame held cannot be
    // named.
    let dir = killed_with_the_tenth_fire_damaged(|_| 9 + 3);

    for open in ["first", "second"] {
        let Err(error) = SledStore::open(dir.path()) else {
            panic!("{open} open: a store whose log lost acknowledged commits opened")
        };
        assert_eq!(
            error.backend_failure(),
            Some(BackendFailure::Damaged),
            "{open} open: {error}"
        );
        let text = error.to_string();
        assert!(
            text.contains("commit-log") && text.contains("synced"),
            "{open} open: {text}"
        );
    }

    // An operator who takes what is left: without the mark and the log, the tree as the failed
    // open left it — at most the commits before the damaged one, in order.
    std::fs::remove_file(dir.path().join("strata-damaged.txt")).unwrap();
    std::fs::remove_dir_all(dir.path().join("commit-log")).unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let mut fires = store.schedule_fires().unwrap();
    fires.sort_by_key(|(_, fire_ms)| *fire_ms);
    let before_the_damage: Vec<(String, u64)> = (0..9)
        .map(|index| (format!("schedule-{index}"), 1_000 + index))
        .collect();
    assert!(before_the_damage.starts_with(&fires), "{fires:?}");
}

#[test]
fn a_damaged_value_of_the_stores_own_bookkeeping_is_refused_naming_the_record() {
    let dir = killed_with_the_tenth_fire_damaged(|key_length| value_of(0, key_length));
    let Err(error) = SledStore::open(dir.path()) else {
        panic!("a store missing a schedule's fire opened");
    };
    assert_eq!(error.backend_failure(), Some(BackendFailure::Damaged), "{error}");
    assert!(
        error.to_string().contains("the store's record f/schedule-9 is damaged")
            && error.to_string().contains("fails its checksum"),
        "{error}"
    );
}

/// The child: an engine on a store whose tree is copied as its open left it starts ten probes
/// that wait for a signal, waits until each waits, then starts two more one after the other
/// (each commit synced: frames after the probes' say the log was synced past them), and waits
/// to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child process of a_damaged_instance_record_in_the_log_is_quarantined_and_the_rest_runs_on"]
async fn probes_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let store = open_with_the_tree_copied(&dir);
    let engine = Engine::builder()
        .store(Arc::new(store))
        .durability(Durability::Sync)
        .register(probe::version("1.0.0"))
        .open()
        .await
        .expect("child: open the engine");
    let mut ids = Vec::new();
    for n in 0..PROBES {
        ids.push(
            engine
                .start(probe::WORKFLOW, &Probe { n, wait: true })
                .await
                .expect("child: start"),
        );
    }
    for id in &ids {
        common::wait_for_status(&engine, *id, InstanceStatus::WaitingSignal).await;
        println!("STRATA waiting {}", id.0);
    }
    for n in 0..2 {
        engine
            .start(probe::WORKFLOW, &Probe { n: 100 + n, wait: true })
            .await
            .expect("child: start");
    }
    println!("STRATA done");
    loop {
        std::thread::park();
    }
}

/// The child that opens the engine on the damaged store and checks it. Ignored in normal runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child process of a_damaged_instance_record_in_the_log_is_quarantined_and_the_rest_runs_on"]
async fn reopen_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let damaged = InstanceId(
        std::env::var(DAMAGED_ID)
            .expect("child: the damaged id")
            .parse()
            .unwrap(),
    );
    let waiting: Vec<InstanceId> = std::env::var(WAITING_IDS)
        .expect("child: the waiting ids")
        .split(',')
        .map(|id| InstanceId(id.parse().unwrap()))
        .collect();
    let engine = Engine::builder()
        .data_dir(Path::new(&dir))
        .register(probe::version("1.0.0"))
        .open()
        .await
        .expect("child: a store with one damaged record opens");
    let quarantined = engine.quarantined_records().unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].id, damaged);
    // Set apart: not run, not listed among the live.
    assert!(engine.instance(damaged).is_err());
    // The rest of the store works: every other probe takes its signal and finishes.
    for id in waiting.iter().filter(|id| **id != damaged) {
        engine.signal(*id, "go", &()).await.expect("child: signal");
        assert!(matches!(
            common::outcome_within(&engine, *id).await,
            Outcome::Completed(_)
        ));
    }
    println!("STRATA quarantined: {}", quarantined[0].reason);
    engine.shutdown().await;
}

#[test]
fn a_damaged_instance_record_in_the_log_is_quarantined_and_the_rest_runs_on() {
    let (dir, printed) = killed_child_store("probes_child");
    let waiting: Vec<u64> = printed
        .iter()
        .filter_map(|said| said.strip_prefix("waiting "))
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(waiting.len() as u64, PROBES);
    // One byte of every value the log holds for the fourth probe's record, in the real segment
    // the child wrote: the last of them is what the tree lacks.
    let damaged = waiting[3];
    let (segment, mut bytes) = written_segment(dir.path());
    let mut key = b"i/".to_vec();
    key.extend_from_slice(&damaged.to_be_bytes());
    let entries = entries_of(&bytes, &key);
    assert!(!entries.is_empty(), "the log holds the probe's record");
    for entry in entries {
        bytes[value_of(entry, key.len()) + 5] ^= 0x10;
    }
    std::fs::write(&segment, &bytes).unwrap();

    let ids: Vec<String> = waiting.iter().map(u64::to_string).collect();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "reopen_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(DAMAGED_ID, damaged.to_string())
        .env(WAITING_IDS, ids.join(","))
        .output()
        .unwrap();
    let stdout = common::child::succeeded(&output, "STRATA quarantined");
    assert!(
        stdout.contains("fails its checksum") && stdout.contains("commit-log") && stdout.contains(".log2 byte "),
        "the reason names the check and the place: {stdout}"
    );
}
