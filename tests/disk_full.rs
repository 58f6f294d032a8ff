//! A full disk (issue #12), in child processes.
//!
//! Nearly full: a child runs the engine on a small filesystem of its own (a tmpfs the test
//! mounts, so the disk really fills). While free space is below the reserve, a start is refused
//! with a typed error naming the directory, due steps run but their commits are refused (each runs
//! again: the mark of a commit that did not land), and every instance stays at its last committed
//! step; once space returns the engine continues by itself. Afterwards the parent reads the store:
//! every instance finished once, with the right output, and the counters equal a recount.
//!
//! Refused anyway: a child whose files may not grow (`RLIMIT_FSIZE`, with the reserve off) starts
//! instances until the disk refuses a write; that start is answered `WriteRefused`, and after it
//! nothing more is acknowledged. The parent reopens the store without the limit: every
//! acknowledged start is there and runs to its end, and the counters equal a recount.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use strata::prelude::*;
use strata::store::BackendFailure;

use parking_lot::Mutex;
use strata::instance::Phase;
use strata::store::{SledStore, Store};
use strata::{
    Durability, Engine, EngineError, InstanceId, InstanceStatus, ManualClock, Next, StepCtx, StepResult, StoreError,
    WorkflowVersion,
};
use strata_store::ListScope;

const CHILD_DIR: &str = "STRATA_DISK_FULL_CHILD_DIR";
const LIMITED_CHILD_DIR: &str = "STRATA_FILE_LIMIT_CHILD_DIR";
const WORKFLOW: &str = "ticker";
const INSTANCES: u64 = 20;
/// The filesystem's size and the reserve the engine keeps on it.
const FILESYSTEM_MIB: u64 = 64;
const RESERVE: u64 = 16 * 1024 * 1024;

/// How often each instance's second step ran.
static SECOND_VISITS: Mutex<BTreeMap<InstanceId, u32>> = Mutex::new(BTreeMap::new());

/// Counts to two: the first step sleeps a second, the second completes with the count.
async fn tick(ctx: StepCtx, count: &mut u32) -> StepResult<u32> {
    *count += 1;
    if *count == 1 {
        return Ok(Next::sleep(Duration::from_secs(1), "tick"));
    }
    *SECOND_VISITS.lock().entry(ctx.instance_id()).or_default() += 1;
    Ok(Next::complete(*count))
}

fn ticker() -> WorkflowVersion<(), u32, u32> {
    WorkflowVersion::new(WORKFLOW, "1.0.0").init(|()| 0).step("tick", tick)
}

fn second_visits(ids: &[InstanceId]) -> Vec<u32> {
    let visits = SECOND_VISITS.lock();
    ids.iter().map(|id| visits.get(id).copied().unwrap_or(0)).collect()
}

/// Waits (bounded) until `condition` holds, moving the engine's clock on by `step` at each look
/// (a refused commit is retried after the engine's `commit_retry_delay`, on its clock).
async fn wait_for(what: &str, clock: &ManualClock, step: Duration, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "child: {what} not within 30 s");
        clock.advance(step);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The child: runs the story on the directory the parent mounted. Ignored in normal runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child process of a_full_disk_refuses_commits_until_space_returns_and_loses_nothing"]
async fn disk_full_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let data = dir.join("data");
    let clock = Arc::new(ManualClock::starting_now());
    let engine = Engine::builder()
        .data_dir(&data)
        .durability(Durability::Sync)
        .commit_retry_delay(Duration::from_millis(10))
        .disk_reserve(RESERVE)
        .clock(clock.clone())
        .register(ticker())
        .open()
        .await
        .expect("child: open");
    let mut ids = Vec::new();
    for _ in 0..INSTANCES {
        ids.push(engine.start(WORKFLOW, &()).await.expect("child: start"));
    }
    for id in &ids {
        let engine = engine.clone();
        wait_for("the first steps", &clock, Duration::ZERO, || {
            engine.instance(*id).map(|info| info.status).ok() == Some(InstanceStatus::Sleeping)
        })
        .await;
    }

    // Fill the disk until less than half the reserve is free.
    let available = fs2::available_space(&dir).expect("child: free space");
    let filler_path = dir.join("filler");
    let mut filler = std::fs::File::create(&filler_path).expect("child: filler");
    let chunk = vec![0u8; 1024 * 1024];
    let mut left = available - RESERVE / 2;
    while left > 0 {
        let size = left.min(chunk.len() as u64) as usize;
        filler.write_all(&chunk[..size]).expect("child: fill");
        left -= size as u64;
    }
    filler.sync_all().expect("child: filler sync");
    assert!(fs2::available_space(&dir).unwrap() < RESERVE);

    // A start is refused, naming the directory and what to do.
    let refused = engine
        .start(WORKFLOW, &())
        .await
        .expect_err("child: a start on a full disk");
    let EngineError::Store(StoreError::Backend {
        kind: BackendFailure::NoSpace,
        message,
    }) = &refused
    else {
        panic!("child: expected NoSpace, got {refused}");
    };
    assert!(
        message.contains(&format!("the disk holding {} has", data.display())),
        "{message}"
    );
    assert!(message.contains("Free space"), "{message}");

    // The second steps fall due: each runs, its commit is refused, and it runs again.
    clock.advance(Duration::from_secs(1));
    wait_for(
        "every second step to run twice",
        &clock,
        Duration::from_millis(10),
        || second_visits(&ids).iter().all(|visits| *visits >= 2),
    )
    .await;
    for id in &ids {
        let info = engine.instance(*id).expect("child: inspect");
        assert_eq!(
            info.status,
            InstanceStatus::Sleeping,
            "{id} stays at its last committed step"
        );
        assert_eq!(info.state::<u32>().unwrap(), 1, "{id} keeps its committed state");
    }
    assert_eq!(engine.live_instances() as u64, INSTANCES);

    // Space returns: the engine continues by itself, and starts are taken again.
    drop(filler);
    std::fs::remove_file(&filler_path).expect("child: remove filler");
    wait_for(
        "every instance to finish once space returned",
        &clock,
        Duration::from_millis(10),
        || engine.live_instances() == 0,
    )
    .await;
    for id in &ids {
        let outcome = engine.outcome(*id).await.expect("child: outcome");
        assert_eq!(outcome.output::<u32>().unwrap(), 2);
    }
    let late = engine
        .start(WORKFLOW, &())
        .await
        .expect("child: a start once space returned");
    engine.instance(late).expect("child: the late start");
    wait_for("the late start to finish", &clock, Duration::from_millis(100), || {
        engine.live_instances() == 0
    })
    .await;
    let outcome = engine.outcome(late).await.expect("child: outcome");
    assert_eq!(outcome.output::<u32>().unwrap(), 2);
    println!("STRATA second visits {:?}", second_visits(&ids));
    println!("STRATA done");
    engine.shutdown().await;
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    fn mount(size_mib: u64) -> SmallFilesystem {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => SmallFilesystem { dir },
            Ok(output) => panic!(
                "the disk-full test mounts a {size_mib} MiB tmpfs to fill a real disk, and `mount` refused: {}; \
                 run the suite as root (as CI does) or in a container allowed to mount",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => panic!("the disk-full test needs `mount` (util-linux) to mount a small tmpfs: {error}"),
        }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_refuses_commits_until_space_returns_and_loses_nothing() {
    let filesystem = SmallFilesystem::mount(FILESYSTEM_MIB);
    let output = common::child::run("disk_full_child", CHILD_DIR, filesystem.dir.path());
    common::child::succeeded(&output, "STRATA done");

    // The store as the child left it: every instance finished once, counters equal a recount.
    let store = SledStore::open(filesystem.dir.path().join("data")).unwrap();
    let recovered = store.recover(u64::MAX).unwrap();
    assert!(recovered.live.is_empty(), "no instance is left live");
    let finished = store
        .finished_instances(&ListScope::default(), &mut |_| true, usize::MAX)
        .unwrap();
    assert_eq!(finished.len() as u64, INSTANCES + 1, "the refused start left nothing");
    for record in &finished {
        assert!(
            matches!(record.phase, Phase::Completed { .. }),
            "{} is {:?}",
            record.id,
            record.phase
        );
        assert_eq!(rmp_serde::from_slice::<u32>(&record.state.bytes).unwrap(), 2);
    }
    let stored = recovered.versions.first().expect("the ticker's counters");
    let (key, counters) = (&stored.key, &stored.counters);
    assert_eq!(key.workflow, WORKFLOW);
    assert_eq!(
        (counters.started, counters.completed, counters.live),
        (INSTANCES + 1, INSTANCES + 1, 0)
    );
    drop(store);
}

/// Waits for the signal `go`, then completes with its count.
fn holder() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new("holder", "1.0.0")
        .init(|count| count)
        .step("wait", |_ctx: StepCtx, _count: &mut u32| async {
            Ok(Next::wait_signal("go", "done"))
        })
        .step("done", |_ctx: StepCtx, count: &mut u32| {
            let count = *count;
            async move { Ok(Next::complete(count)) }
        })
}

/// The child whose files may not grow past a limit: starts holders until a start is refused,
/// printing each acknowledged one. Ignored in normal runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child process of a_write_the_disk_refuses_is_never_acknowledged_and_nothing_acknowledged_is_lost"]
async fn file_limit_child() {
    let Ok(dir) = std::env::var(LIMITED_CHILD_DIR) else {
        return;
    };
    let data = PathBuf::from(dir).join("data");
    let engine = Engine::builder()
        .data_dir(&data)
        .durability(Durability::Sync)
        .disk_reserve(0)
        .register(holder())
        .open()
        .await
        .expect("child: open");
    for count in 0..50 {
        let id = engine.start("holder", &count).await.expect("child: start");
        println!("STRATA acknowledged {id} {count}");
    }
    // From now on no file of this process may grow past sled's data file's size and a little more;
    // a write past it fails with EFBIG instead of killing the process with SIGXFSZ.
    let size = std::fs::metadata(data.join("db")).expect("child: db size").len();
    // SAFETY: plain libc calls with valid arguments; nothing else in this process handles SIGXFSZ.
    unsafe {
        assert_ne!(libc::signal(libc::SIGXFSZ, libc::SIG_IGN), libc::SIG_ERR);
        let limit = libc::rlimit {
            rlim_cur: size + 256 * 1024,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let mut refused = None;
    for count in 50..100_000 {
        match engine.start("holder", &count).await {
            Ok(id) => println!("STRATA acknowledged {id} {count}"),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    // The refusal reaches whichever commit met it first (this start's, or an earlier start's
    // first step, after which every commit is refused naming it).
    let refused = refused.expect("child: the disk refused a write");
    let text = refused.to_string();
    assert!(
        matches!(
            refused,
            EngineError::Store(StoreError::Backend {
                kind: BackendFailure::WriteRefused,
                ..
            })
        ) || text.contains("an earlier sync failed"),
        "child: expected the refused write, got {refused}"
    );
    assert!(
        text.contains("the disk refused") && text.contains("File too large") && text.contains("restart the engine"),
        "child: {text}"
    );
    println!("STRATA refused: {refused}");
    let again = engine
        .start("holder", &0)
        .await
        .expect_err("child: nothing is acknowledged after a refused write");
    assert!(again.to_string().contains("restart the engine"), "{again}");
    println!("STRATA done");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_disk_refuses_is_never_acknowledged_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::child::run("file_limit_child", LIMITED_CHILD_DIR, dir.path());
    let stdout = common::child::succeeded(&output, "STRATA done");
    let acknowledged: Vec<(InstanceId, u32)> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("STRATA acknowledged "))
        .map(|rest| {
            let (id, count) = rest.split_once(' ').unwrap();
            (
                InstanceId(id.trim_start_matches('#').parse().unwrap()),
                count.parse().unwrap(),
            )
        })
        .collect();
    assert!(acknowledged.len() > 50, "starts were acknowledged under the limit too");

    // Space returns (no limit here): every acknowledged start is there and finishes.
    let engine = Engine::builder()
        .data_dir(dir.path().join("data"))
        .register(holder())
        .open()
        .await
        .unwrap();
    for (id, count) in &acknowledged {
        engine.signal(*id, "go", &()).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(30), engine.outcome(*id))
            .await
            .expect("finished")
            .unwrap();
        assert_eq!(outcome.output::<u32>().unwrap(), *count);
    }
    // An unacknowledged start may have reached the disk before the refusal; it runs too.
    for info in engine.list(&strata::InstanceFilter::default()).unwrap() {
        if !info.status.is_terminal() {
            engine.signal(info.id(), "go", &()).await.unwrap();
            engine.outcome(info.id()).await.unwrap();
        }
    }
    let version = &engine.versions()[0];
    let listed = engine.list(&strata::InstanceFilter::default()).unwrap().len() as u64;
    assert!(listed >= acknowledged.len() as u64);
    assert_eq!(
        (
            version.counters.started,
            version.counters.completed,
            version.counters.live
        ),
        (listed, listed, 0),
        "the counters equal a recount"
    );
    engine.shutdown().await;
}
