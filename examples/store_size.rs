//! How big the embedded store grows with many finished instances, with retention off and on.
//!
//! Runs a workflow of `steps` steps (default 1) to completion `instances` times (default
//! 1 000 000) on a fresh data directory, ten days of engine time passing over the run (a
//! `ManualClock`), twice: keeping every finished instance, and keeping them one day
//! (`EngineBuilder::retention`, a removal pass after each batch as the background would do).
//! Prints the data directory's size after each, and the commit log's share of it. Each instance
//! keeps its history: its start and one entry per step.
//!
//! Run: `cargo run --release --example store_size [instances] [steps]`

use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::prelude::*;

use strata::{Durability, Engine, ManualClock, Next, StepCtx, StepResult, WorkflowVersion};

const BATCH: u64 = 10_000;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Counts the steps left in the state's second half; completes when none is.
async fn settle(_ctx: StepCtx, state: &mut (u64, u64)) -> StepResult<u64> {
    state.1 = state.1.saturating_sub(1);
    if state.1 == 0 {
        return Ok(Next::complete(state.0));
    }
    Ok(Next::goto("settle"))
}

/// `receipt`: `steps` runs of `settle` (its input is the amount and the steps).
fn receipt() -> WorkflowVersion<(u64, u64), (u64, u64), u64> {
    WorkflowVersion::new("receipt", "1.0.0")
        .init(|input: (u64, u64)| input)
        .step("settle", settle)
}

fn directory_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => directory_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

/// What a run left: the data directory's bytes, the commit log's share, the finished instances
/// kept, and how long it took.
type RunFigures = (u64, u64, u64, Duration);

async fn run(instances: u64, steps: u64, retention: Duration) -> Result<RunFigures, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::starting_now());
    let engine = Engine::builder()
        .data_dir(dir.path())
        .durability(Durability::Buffered {
            interval: Duration::from_millis(100),
        })
        .max_concurrent_steps(1024)
        .clock(clock.clone())
        .metrics(false)
        .retention(retention)
        .register(receipt())
        .open()
        .await?;
    let batches = instances.div_ceil(BATCH);
    let step = (10 * DAY) / u32::try_from(batches.max(1)).unwrap_or(u32::MAX);
    let began = Instant::now();
    let mut removed = 0;
    for batch in 0..batches {
        let mut running = tokio::task::JoinSet::new();
        for n in 0..BATCH.min(instances - batch * BATCH) {
            let engine = engine.clone();
            running.spawn(async move {
                let id = engine.start("receipt", &(n, steps)).await?;
                engine.outcome(id).await.map(|_| ())
            });
            // At most 1 024 in flight.
            if running.len() >= 1_024 {
                if let Some(done) = running.join_next().await {
                    done??;
                }
            }
        }
        while let Some(done) = running.join_next().await {
            done??;
        }
        clock.advance(step);
        removed += engine.remove_expired_instances().await?;
    }
    let took = began.elapsed();
    engine.shutdown().await;
    Ok((
        directory_bytes(dir.path()),
        directory_bytes(&dir.path().join("commit-log")),
        instances - removed,
        took,
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let instances: u64 = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000_000);
    let steps: u64 = std::env::args()
        .nth(2)
        .and_then(|text| text.parse().ok())
        .unwrap_or(1)
        .max(1);
    println!(
        "{instances} instances of {steps} step(s) run to completion over ten days of engine time, Buffered (100 ms)"
    );
    for (name, retention) in [("retention off", Duration::ZERO), ("retention 1 day", DAY)] {
        let (bytes, log_bytes, kept, took) = run(instances, steps, retention).await?;
        println!(
            "{name:>16}: {kept:>8} finished instances kept, store {:>7.1} MB, of which commit log {:>7.1} MB  (run {:.1} s)",
            bytes as f64 / 1e6,
            log_bytes as f64 / 1e6,
            took.as_secs_f64()
        );
    }
    Ok(())
}
