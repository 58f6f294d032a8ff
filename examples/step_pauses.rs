//! Step latency of one instance on the embedded store, and the pauses in it: one instance runs
//! 20 000 sequential steps (each step's commit acknowledged before the next runs), in `Sync`
//! and in `Buffered` (100 ms) mode, on a fresh data directory each. Prints the gap between
//! consecutive steps as percentiles and as a histogram of pauses over 1, 5, 10 and 50 ms, and,
//! for comparison, one 4 KiB append + `fdatasync` of the same disk as many times (half just before
//! the `Sync` run, half just after, as the disk's speed drifts), and the ratio of the medians of
//! `Sync` steps and of those appends.
//!
//! Run: `cargo run --release --example step_pauses [steps]`

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use strata::prelude::*;

use strata::{Durability, Engine, Next, StepCtx, StepResult, WorkflowVersion};

static STEPS: AtomicU64 = AtomicU64::new(20_000);
static GAPS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static LAST: Mutex<Option<Instant>> = Mutex::new(None);

/// Records the gap since the previous step, then goes on until the count is reached.
async fn tick(_ctx: StepCtx, done: &mut u64) -> StepResult<u64> {
    let now = Instant::now();
    if let Some(previous) = LAST.lock().map(|mut last| last.replace(now)).ok().flatten() {
        if let Ok(mut gaps) = GAPS.lock() {
            gaps.push(now.duration_since(previous).as_micros() as u64);
        }
    }
    *done += 1;
    if *done >= STEPS.load(Ordering::Relaxed) {
        return Ok(Next::complete(*done));
    }
    Ok(Next::goto("tick"))
}

fn ticker() -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("ticker", "1.0.0")
        .init(|_: u64| 0)
        .step("tick", tick)
}

fn report(name: &str, mut gaps: Vec<u64>) {
    gaps.sort_unstable();
    let at = |fraction: f64| gaps[((gaps.len() as f64 * fraction) as usize).min(gaps.len() - 1)] as f64 / 1_000.0;
    let over = |millis: u64| gaps.iter().filter(|gap| **gap > millis * 1_000).count();
    println!(
        "{name:>22}: p50 {:>6.3} ms  p99 {:>6.3} ms  p99.9 {:>7.3} ms  max {:>8.3} ms | pauses >1 ms {:>5}  >5 ms {:>4}  >10 ms {:>4}  >50 ms {:>3}",
        at(0.5),
        at(0.99),
        at(0.999),
        *gaps.last().unwrap_or(&0) as f64 / 1_000.0,
        over(1),
        over(5),
        over(10),
        over(50)
    );
}

async fn run(durability: Durability) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::builder()
        .data_dir(dir.path())
        .durability(durability)
        .metrics(false)
        .register(ticker())
        .open()
        .await?;
    *LAST.lock().map_err(|_| "poisoned")? = None;
    GAPS.lock().map_err(|_| "poisoned")?.clear();
    let id = engine.start("ticker", &0u64).await?;
    engine.outcome(id).await?;
    engine.shutdown().await;
    Ok(std::mem::take(&mut *GAPS.lock().map_err(|_| "poisoned")?))
}

fn median(mut gaps: Vec<u64>) -> f64 {
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied().unwrap_or(0) as f64
}

fn raw_disk(appends: usize) -> std::io::Result<Vec<u64>> {
    let dir = tempfile::tempdir()?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("raw"))?;
    let block = vec![7u8; 4096];
    let mut gaps = Vec::with_capacity(appends);
    for _ in 0..appends {
        let began = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        gaps.push(began.elapsed().as_micros() as u64);
    }
    Ok(gaps)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(steps) = std::env::args().nth(1).and_then(|text| text.parse().ok()) {
        STEPS.store(steps, Ordering::Relaxed);
    }
    let steps = STEPS.load(Ordering::Relaxed);
    println!("one instance, {steps} sequential steps; gap between consecutive steps");
    let buffered = Durability::Buffered {
        interval: Duration::from_millis(100),
    };
    report("Buffered (100 ms)", run(buffered).await?);
    // As many appends as steps, so that the pause counts compare.
    let mut raw = raw_disk(steps as usize / 2)?;
    let sync = run(Durability::Sync).await?;
    raw.extend(raw_disk(steps as usize - steps as usize / 2)?);
    report("Sync", sync.clone());
    report("raw append + fdatasync", raw.clone());
    println!(
        "Sync step / raw append + fdatasync at the median: {:.2}x",
        median(sync) / median(raw).max(1.0)
    );
    Ok(())
}
