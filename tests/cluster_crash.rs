//! Many processes on one PostgreSQL database under SIGKILL (invariants 2 and 8): three worker
//! processes run hundreds of instances through thousands of steps and durable sleeps while the
//! parent kills a random one with SIGKILL at least 30 times and starts it again. Afterwards no
//! instance is lost, no step's commit was applied twice (every instance's state lists each step
//! exactly once, in order, though steps may have run more than once), the counters equal a
//! recount, every instance completed with its right output, the version drained exactly once
//! in the store, and an every-second cron schedule all three run fired once per fire time.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata::prelude::*;

use common::postgres::TestDatabase;
use rand::{Rng, SeedableRng};
use strata::{Engine, InstanceFilter, InstanceStatus, Next, StepCtx, StepResult, VersionStatus, WorkflowVersion};

const CHILD_URL: &str = "STRATA_CLUSTER_CHILD_URL";
const CHILD_LOG: &str = "STRATA_CLUSTER_CHILD_LOG";
const WORKFLOW: &str = "crashy";
const TICKS: &str = "ticks";
const INSTANCES: u64 = 300;
const STEPS: u64 = 25;
const KILLS: usize = 30;
const LEASE: Duration = Duration::from_millis(900);

/// The execution log of this process: the parent's (which runs the first steps before it hands
/// the instances over), or the child's from its environment.
static LOG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Appends one line per step execution to the log the parent reads afterwards.
fn log_execution(instance: strata::InstanceId, visit: u64) {
    let path = LOG
        .get()
        .cloned()
        .or_else(|| std::env::var(CHILD_LOG).ok().map(Into::into));
    if let Some(path) = path {
        if let Ok(mut file) = std::fs::OpenOptions::new().append(true).create(true).open(path) {
            // One write of a short line: appends from several processes do not interleave.
            let _ = file.write_all(format!("{} {visit}\n", instance.0).as_bytes());
        }
    }
}

async fn step(ctx: StepCtx, visits: &mut Vec<u64>) -> StepResult<u64> {
    let visit = visits.len() as u64;
    log_execution(ctx.instance_id(), visit);
    // The step's work takes a while, so kills land in the middle of steps too.
    tokio::time::sleep(Duration::from_millis(15)).await;
    visits.push(visit);
    if visits.len() as u64 == STEPS {
        return Ok(Next::complete(visits.iter().sum()));
    }
    // A durable sleep between steps, so instances live across kills and takeovers.
    Ok(Next::sleep(Duration::from_millis(60), "step"))
}

/// `STEPS` steps, each recording its visit number in the state.
fn crashy() -> WorkflowVersion<u64, Vec<u64>, u64> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(|_: u64| Vec::new())
        .step("step", step)
}

/// The workflow an every-second schedule starts in every process: one step.
fn ticks() -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new(TICKS, "1.0.0")
        .init(|input: u64| input)
        .step("tick", |_ctx: StepCtx, state: &mut u64| {
            let output = *state;
            async move { Ok(Next::complete(output)) }
        })
}

/// A schedule firing every second; fires missed while no process runs are fired each, up to 5.
const SCHEDULE: &str = "[[schedules]]\nname = \"every-second\"\nworkflow = \"ticks\"\ncron = \"* * * * * *\"\n\
     input = 1\nmissed = \"fire_each\"\nmax_missed = 5\n";

fn builder(url: &str) -> strata::EngineBuilder {
    Engine::builder()
        .postgres(url)
        .lease(LEASE)
        .commit_retry_delay(Duration::from_millis(20))
        .register(crashy())
        .register(ticks())
}

/// The child: a worker that runs until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child processes of three_workers_under_sigkill_commit_every_step_once"]
async fn cluster_child() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let _engine = builder(&url).open().await.unwrap();
    println!("STRATA ready");
    tokio::time::sleep(Duration::from_secs(3_600)).await; // until the parent kills it
}

fn spawn_child(url: &str, log: &std::path::Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cluster_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, url)
        .env(CHILD_LOG, log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // Wait until the engine is open, so each kill lands while it runs.
    while let Some(Ok(line)) = lines.next() {
        if line.contains("STRATA ready") {
            break;
        }
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_under_sigkill_commit_every_step_once() {
    let database = TestDatabase::create();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("executions.log");
    LOG.set(log.clone()).unwrap();
    // The parent starts every instance, then hands them to the workers by leaving.
    let starter = builder(&database.url).open().await.unwrap();
    // Every process takes the schedule in from the config generation stored in the database.
    starter.apply_config("strata.toml", SCHEDULE).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..INSTANCES {
        ids.push(starter.start(WORKFLOW, &n).await.unwrap());
    }
    starter.drain(WORKFLOW, "1.0.0").await.unwrap();
    starter.shutdown().await;

    let seed = rand::random::<u64>();
    println!("kill moments from seed {seed}");
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    let mut children: Vec<Child> = (0..3).map(|_| spawn_child(&database.url, &log)).collect();
    let reader = Engine::builder().postgres(&database.url).open().await.unwrap();
    let live = |reader: &Engine| reader.version(WORKFLOW, "1.0.0").unwrap().counters.live;
    let mut kills = 0;
    let mut takeovers = Vec::new();
    while kills < KILLS || live(&reader) > 0 {
        assert!(kills < KILLS * 20, "instances still live after {kills} kills");
        let pause = Duration::from_millis(random.random_range(100..400));
        std::thread::sleep(pause); // picks the kill moment; not a synchronisation
        if kills < KILLS {
            let victim = random.random_range(0..children.len());
            let _ = children[victim].kill();
            let _ = children[victim].wait();
            kills += 1;
            let restarted = Instant::now();
            children[victim] = spawn_child(&database.url, &log);
            takeovers.push(restarted.elapsed());
        }
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }

    // The schedule fired once per second in the cluster, across the kills: no fire time without
    // its instance, none with two; the reader, which has no code for it, left its fires alone.
    let mut fires: Vec<u64> = reader
        .list(&InstanceFilter::workflow(TICKS))
        .unwrap()
        .iter()
        .filter_map(|info| info.record.scheduled.as_ref().map(|fire| fire.fire_ms))
        .collect();
    fires.sort_unstable();
    let doubled = fires.windows(2).filter(|pair| pair[0] == pair[1]).count();
    assert_eq!(doubled, 0, "fire times started twice: {fires:?}");
    let gaps: Vec<&[u64]> = fires.windows(2).filter(|pair| pair[1] - pair[0] != 1_000).collect();
    assert!(gaps.is_empty(), "fire times without an instance between {gaps:?}");
    assert!(fires.len() >= 5, "only {} fires during the run", fires.len());
    let handled = reader.schedule_fires().unwrap();
    assert_eq!(
        handled,
        vec![("every-second".to_string(), *fires.last().unwrap())],
        "the last handled fire is the newest instance's"
    );

    // Every instance completed, with each step committed exactly once, in order.
    let finished = reader
        .list(&InstanceFilter::workflow(WORKFLOW).with_status(InstanceStatus::Completed))
        .unwrap();
    assert_eq!(finished.len() as u64, INSTANCES, "instances lost or not completed");
    let expected: Vec<u64> = (0..STEPS).collect();
    for info in &finished {
        let visits: Vec<u64> = info.state().unwrap();
        assert_eq!(
            visits,
            expected,
            "instance {} has a step committed twice or lost",
            info.id()
        );
        let output: u64 = info.outcome().unwrap().output().unwrap();
        assert_eq!(output, expected.iter().sum::<u64>());
    }
    // Steps ran at least once each; some ran again after a kill, but none was committed twice.
    let mut executions: HashMap<(u64, u64), u64> = HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let mut fields = line.split(' ').map(|field| field.parse::<u64>().unwrap());
        *executions
            .entry((fields.next().unwrap(), fields.next().unwrap()))
            .or_default() += 1;
    }
    assert_eq!(executions.len() as u64, INSTANCES * STEPS, "every step ran");
    let reruns: u64 = executions.values().map(|count| count - 1).sum();
    let counters = reader.version(WORKFLOW, "1.0.0").unwrap();
    assert_eq!(
        (
            counters.counters.started,
            counters.counters.completed,
            counters.counters.live
        ),
        (INSTANCES, INSTANCES, 0),
        "counters equal the recount"
    );
    assert_eq!(counters.status, VersionStatus::Drained, "drained in the store");
    println!(
        "{kills} SIGKILLs over 3 workers: {} instances, {} step commits, {reruns} steps run again after a kill, \
         none committed twice; {} schedule fires, each started once; a restarted worker was ready in {:?} at \
         the slowest",
        INSTANCES,
        INSTANCES * STEPS,
        fires.len(),
        takeovers.iter().max().unwrap()
    );
    reader.shutdown().await;
}
