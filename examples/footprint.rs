//! Prints the memory an idle in-flight instance costs and how long recovery takes.
//!
//! Fills a fresh store with idle instances (each waiting for a signal, with a timeout), then in a
//! fresh process measures the resident set size before and after `open` (which loads and re-arms
//! them all).
//! The figure includes sled's page cache of the records it read.
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
    println!(
        "recovered and re-armed {} instances in {:.3}s",
        engine.live_instances(),
        recovery.as_secs_f64()
    );
    println!(
        "resident memory: {:.1} MiB before open, {:.1} MiB after: {} bytes per idle instance",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after.saturating_sub(before)) / instances as u64
    );
    engine.shutdown().await;
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("strata-footprint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
