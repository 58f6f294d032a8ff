//! Prints the memory an idle in-flight instance costs and how long opening takes.
//!
//! Fills a fresh store with idle instances (each waiting a day for a signal), then in a fresh
//! process measures the resident set size before and after `open`, then the latency of a signal
//! sent to an idle instance (which the engine keeps in the store only, beyond its residency
//! horizon, and loads when the signal arrives). The figure includes sled's page cache.
//!
//! Run: `cargo run --release --example footprint [instances]` (default 100 000)

use std::time::{Duration, Instant};
use strata::prelude::*;

use strata::{Durability, Engine};
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

async fn open(dir: &std::path::Path) -> Result<Engine, strata::EngineError> {
    Engine::builder()
        .data_dir(dir)
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
        if flag == "--measure" {
            return measure(std::path::Path::new(dir), instances.parse()?).await;
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
    engine.shutdown().await;
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
