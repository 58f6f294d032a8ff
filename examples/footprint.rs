//! Prints the memory an idle in-flight instance costs and how long opening takes.
//!
//! Fills a fresh store with idle instances (each waiting a day for a signal), then in a fresh
//! process measures the resident set size before and after `open`, then the latency of a signal
//! sent to an idle instance (which the engine keeps in the store only, beyond its residency
//! horizon, and loads when the signal arrives). The figure includes sled's page cache.
//!
//! Run: `cargo run --release --example footprint [instances]` (default 100 000). To measure one
//! population again and again (or under a profiler): `footprint --populate DIR N` once, then
//! `footprint --measure DIR N`.

use std::time::{Duration, Instant};
use strata::prelude::*;

use strata::{Durability, Engine, Next, StepCtx, StepResult, WorkflowVersion};
use strata_workflows::approval;

#[path = "support/waiting.rs"]
mod waiting;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// How long a reminder sleeps: beyond the default residency horizon (30 s), so it is evicted and
/// loaded again ahead of its timer.
const REMINDER_SLEEP: Duration = Duration::from_secs(40);

/// A reminder: sleeps `REMINDER_SLEEP`, then completes with how late its timer fired (ms).
fn reminder() -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("reminder", "1.0.0")
        .init(|_: u64| 0u64)
        .step("wait", wait)
        .step("fire", fire)
}

/// Notes when the timer is due and sleeps until then.
async fn wait(ctx: StepCtx, due_ms: &mut u64) -> StepResult<u64> {
    *due_ms = millis_of(ctx.now()) + REMINDER_SLEEP.as_millis() as u64;
    Ok(Next::sleep(REMINDER_SLEEP, "fire"))
}

/// Completes with how late it runs after the due time.
async fn fire(ctx: StepCtx, due_ms: &mut u64) -> StepResult<u64> {
    Ok(Next::complete(millis_of(ctx.now()).saturating_sub(*due_ms)))
}

fn millis_of(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

async fn open(dir: &std::path::Path) -> Result<Engine, strata::EngineError> {
    open_with(dir, Duration::from_secs(30)).await
}

async fn open_with(dir: &std::path::Path, horizon: Duration) -> Result<Engine, strata::EngineError> {
    Engine::builder()
        .data_dir(dir)
        .residency_horizon(horizon)
        .register(reminder())
        .durability(Durability::Buffered {
            interval: Duration::from_millis(100),
        })
        .max_concurrent_steps(1024)
        .register(approval::v1_0())
        .open()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, dir, instances] = args.as_slice() {
        match flag.as_str() {
            "--measure" => return measure(std::path::Path::new(dir), instances.parse()?).await,
            "--populate" => return populate(std::path::Path::new(dir), instances.parse()?).await,
            _ => {}
        }
    }
    let instances: usize = args.get(1).and_then(|text| text.parse().ok()).unwrap_or(100_000);
    let dir = tempfile_dir()?;
    populate(&dir, instances).await?;
    // Measure in a fresh process, so nothing of the population run is counted.
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--measure")
        .arg(&dir)
        .arg(instances.to_string())
        .status()?;
    std::fs::remove_dir_all(&dir)?;
    if !status.success() {
        return Err(format!("the measuring process failed: {status}").into());
    }
    Ok(())
}

async fn populate(dir: &std::path::Path, instances: usize) -> Result<(), Box<dyn std::error::Error>> {
    let engine = open(dir).await?;
    let started = Instant::now();
    waiting::start_waiting_requests(&engine, instances).await?;
    println!(
        "started {instances} waiting instances in {:.2}s (Buffered)",
        started.elapsed().as_secs_f64()
    );
    engine.shutdown().await;
    Ok(())
}

async fn measure(dir: &std::path::Path, instances: usize) -> Result<(), Box<dyn std::error::Error>> {
    let before = resident_bytes();
    let started = Instant::now();
    let engine = open(dir).await?;
    let recovery = started.elapsed();
    let after = resident_bytes();
    let live: u64 = engine.versions().iter().map(|info| info.counters.live).sum();
    println!(
        "opened with {live} live instances in {:.3}s, {} of them in memory",
        recovery.as_secs_f64(),
        engine.live_instances(),
    );
    println!(
        "resident memory: {:.1} MiB before open, {:.1} MiB after: {} bytes per idle instance",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after.saturating_sub(before)) / instances as u64
    );
    signal_latency(&engine, live.min(200)).await?;
    let live_now: u64 = engine.versions().iter().map(|info| info.counters.live).sum();
    timer_lateness(&engine, "evicted and loaded again (horizon 30 s)", Some(live_now)).await?;
    engine.shutdown().await;
    // The same reminders on an engine that keeps every instance in memory, for comparison.
    let resident_dir = tempfile_dir()?.join("resident");
    let resident = open_with(&resident_dir, Duration::MAX).await?;
    timer_lateness(&resident, "kept in memory (horizon Duration::MAX)", None).await?;
    resident.shutdown().await;
    std::fs::remove_dir_all(&resident_dir)?;
    Ok(())
}

/// Starts 200 reminders at once and prints how late their timers fired: median and worst; with
/// `list_among`, first how long the first page of them takes to list among that many others.
async fn timer_lateness(
    engine: &Engine,
    label: &str,
    list_among: Option<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut ids = Vec::new();
    for n in 0..200u64 {
        ids.push(engine.start("reminder", &n).await?);
    }
    if let Some(others) = list_among {
        for (what, workflow) in [("reminders", "reminder"), ("waiting requests", approval::WORKFLOW)] {
            let began = Instant::now();
            let page = engine.list_limited(&strata::InstanceFilter::workflow(workflow), 50)?;
            println!(
                "listed the first {} {what} among {} live instances in {:.2} ms",
                page.len(),
                others + 200,
                began.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
    let mut late = Vec::new();
    for id in ids {
        match engine.outcome(id).await? {
            strata::Outcome::Completed(bytes) => late.push(rmp_serde::from_slice::<u64>(&bytes)?),
            other => return Err(format!("reminder {id} ended {other:?}").into()),
        }
    }
    late.sort_unstable();
    println!(
        "200 timers of {} s, {label}: fired late by median {} ms, worst {} ms",
        REMINDER_SLEEP.as_secs(),
        late[late.len() / 2],
        late[late.len() - 1]
    );
    Ok(())
}

/// Decides `count` waiting requests one after another and prints the median and worst time
/// from the signal to its outcome (the request's last step loads it, runs and commits).
async fn signal_latency(engine: &Engine, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let waiting =
        strata::InstanceFilter::workflow(approval::WORKFLOW).with_status(strata::InstanceStatus::WaitingSignal);
    let ids: Vec<strata::InstanceId> = engine
        .list_limited(&waiting, count as usize)?
        .into_iter()
        .map(|info| info.record.id)
        .collect();
    let mut took = Vec::with_capacity(ids.len());
    for id in ids {
        let began = Instant::now();
        engine.signal(id, approval::DECISION_SIGNAL, &true).await?;
        engine.outcome(id).await?;
        took.push(began.elapsed());
    }
    took.sort();
    if let (Some(median), Some(worst)) = (took.get(took.len() / 2), took.last()) {
        println!(
            "signal to an idle instance -> its outcome, {} in turn: median {:.2} ms, worst {:.2} ms (Buffered)",
            took.len(),
            median.as_secs_f64() * 1000.0,
            worst.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("strata-footprint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
