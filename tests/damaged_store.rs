//! A damaged byte in sled's real store file (issue #12), opened by an engine in a child process.
//! The commit log holds every record the tree holds, so a store whose sled files are damaged —
//! sled panics recovering them, or silently drops what follows the damage, which the checkpoint
//! record reveals — has them set aside and its tree rebuilt from the log: every record is there.
//! A store whose log does not hold every record (last opened by an older build, or its log
//! deleted) gets a `Damaged` store error naming the directory and what to do — not a crash of the
//! process — and so does a second open: sled has rewritten part of the file by then, and
//! upstream a second open succeeds on what is left, silently without the records after the
//! damage.

mod common;

use std::path::Path;
use strata::prelude::*;
use strata::store::BackendFailure;

use strata::store::{SledStore, Store};
use strata::{Engine, EngineError, StoreError};
use strata_store::Op;

const CHILD_DIR: &str = "STRATA_DAMAGED_CHILD_DIR";
const RECORDS: u64 = 3_000;

fn schedule_name(n: u64) -> String {
    format!("record-{n:05}-{}", "x".repeat(300))
}

/// Writes `records` schedule fires named by `name` through a store that is then closed.
fn write_store(dir: &Path, records: u64, name: impl Fn(u64) -> String) {
    let store = SledStore::open(dir).unwrap();
    for n in 0..records {
        store
            .apply(&[Op::PutScheduleFire {
                schedule: name(n),
                fire_ms: n + 1,
            }])
            .unwrap();
    }
    store.sync().unwrap();
}

/// Flips a byte inside every copy of record 100's name in `file`; returns how many copies there
/// were and the file's size.
fn damage_record_100_in(file: &Path) -> (usize, usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let marker = format!("record-{:05}", 100);
    let copies: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, window)| *window == marker.as_bytes())
        .map(|(at, _)| at)
        .collect();
    for at in &copies {
        bytes[at + 3] ^= 0xff;
    }
    std::fs::write(file, &bytes).unwrap();
    (copies.len(), bytes.len())
}

/// Flips a byte of every copy of record 100 in sled's file (sled keeps stale copies until it
/// reclaims their space, so the one it reads is damaged too); returns the file's size.
fn damage_record_100(dir: &Path) -> usize {
    let (copies, size) = damage_record_100_in(&dir.join("db"));
    assert!(copies > 0, "the record is in the file");
    size
}

/// The child: opens an engine on the damaged store and prints what it found: how many schedule
/// fires it holds and how many times sled's files were set aside, or the damage it was refused
/// for. Ignored in normal runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child process of the damaged store tests"]
async fn damaged_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    match Engine::builder().data_dir(Path::new(&dir)).open().await {
        Ok(engine) => {
            let fires = engine.schedule_fires().unwrap();
            let aside = std::fs::read_dir(&dir)
                .unwrap()
                .filter(|entry| {
                    entry
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("sled-damaged-")
                })
                .count();
            println!("STRATA opened with {} fires, {aside} set aside", fires.len());
            engine.shutdown().await;
        }
        Err(EngineError::Store(
            error @ StoreError::Backend {
                kind: BackendFailure::Damaged,
                ..
            },
        )) => {
            let message = error.to_string();
            assert!(
                message.contains(&format!("the store in {dir} could not be recovered")),
                "{message}"
            );
            println!("STRATA damaged: {error}");
        }
        Err(error) => panic!("child: expected an open or Damaged, got {error}"),
    }
}

/// What a child process printed when it opened an engine on `dir`.
fn open_in_a_child(dir: &Path) -> String {
    common::child::succeeded(&common::child::run("damaged_child", CHILD_DIR, dir), "STRATA ")
}

#[test]
fn a_damaged_store_file_is_set_aside_and_the_tree_rebuilt_from_the_log_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path(), RECORDS, schedule_name);
    let size = damage_record_100(dir.path());
    assert!(size > 4 * 512 * 1024, "the store spans several segments");

    // sled fails recovering its files (it panics on this one): they are set aside, and the log,
    // which holds every record, gives them all back.
    let stdout = open_in_a_child(dir.path());
    assert!(
        stdout.contains(&format!("STRATA opened with {RECORDS} fires, 1 set aside")),
        "{stdout}"
    );
    assert!(!dir.path().join("strata-damaged.txt").exists());
    // The rebuilt store is a store like any other.
    let stdout = open_in_a_child(dir.path());
    assert!(
        stdout.contains(&format!("STRATA opened with {RECORDS} fires, 1 set aside")),
        "{stdout}"
    );
}

#[test]
fn a_damaged_byte_in_a_store_of_one_segment_is_not_dropped_silently_the_tree_is_rebuilt() {
    // sled takes the damaged record in its only segment for the torn end of its log and drops
    // everything after it without a word; the checkpoint record shows the tree lost what a
    // checkpoint made durable, and the log gives it back.
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path(), 300, |n| format!("record-{n:05}"));
    damage_record_100(dir.path());
    let stdout = open_in_a_child(dir.path());
    assert!(stdout.contains("STRATA opened with 300 fires, 1 set aside"), "{stdout}");
}

/// Flips a byte of the key of every log entry of record 100 (its entry heads fail their checksums,
/// so the frames holding it cannot be read).
fn damage_record_100_in_the_log(dir: &Path) {
    let mut copies = 0;
    for entry in std::fs::read_dir(dir.join("commit-log")).unwrap() {
        let path = entry.unwrap().path();
        if common::is_log_segment(&path) {
            copies += damage_record_100_in(&path).0;
        }
    }
    assert!(copies > 0, "the record is in the log");
}

#[test]
fn damage_in_both_sled_files_and_the_log_is_refused_naming_where_sled_files_went() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path(), RECORDS, schedule_name);
    damage_record_100(dir.path());
    damage_record_100_in_the_log(dir.path());
    let stdout = open_in_a_child(dir.path());
    assert!(
        stdout.contains("STRATA damaged") && stdout.contains("were moved to") && stdout.contains("sled-damaged-"),
        "says where sled's own files went: {stdout}"
    );
    assert!(dir.path().join("strata-damaged.txt").exists());
}

#[test]
fn a_damaged_store_file_without_a_whole_log_is_refused_by_name_and_so_is_every_later_open() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path(), RECORDS, schedule_name);
    // As a store last opened by a build from before the log was kept whole, or whose log an
    // operator deleted: nothing to rebuild from.
    std::fs::remove_dir_all(dir.path().join("commit-log")).unwrap();
    damage_record_100(dir.path());

    let stdout = open_in_a_child(dir.path());
    assert!(
        stdout.contains("STRATA damaged") && stdout.contains("Restore the directory from a backup"),
        "says what to do: {stdout}"
    );
    // sled rewrote part of the file while failing: a second open would succeed on what is left
    // and lose the records after the damage without a word. It is refused while the mark is there.
    assert!(dir.path().join("strata-damaged.txt").exists());
    let again = open_in_a_child(dir.path());
    assert!(
        again.contains("STRATA damaged") && again.contains("tried to serialize"),
        "a second open is refused with the first one's reason: {again}"
    );
}
