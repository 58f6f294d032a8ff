//! What one step commit costs on the embedded store: the process's CPU time (user + system) per
//! commit, and commits per second, for ledger postings at a chosen concurrency.
//!
//! CPU per commit moves far less from run to run than throughput does on a busy machine, so it
//! tells two builds apart where `benches/durable_steps.rs` (criterion, throughput) cannot; run both
//! builds alternately. Each run opens a fresh data directory, warms up with one round, then runs
//! `rounds` rounds of `concurrency` instances of `4096 / concurrency` postings each.
//!
//! Run: `cargo run --release --example commit_cost [concurrency] [rounds] [sync|buffered]
//! [metered]` (defaults: 64, 60, buffered; `metered`: each step records three measures).

use std::time::{Duration, Instant};
use strata::prelude::*;

use strata::{Durability, Engine};
use strata_workflows::ledger;

#[path = "support/postings.rs"]
mod postings;

/// The CPU time this process has used so far (user + system), from `/proc/self/stat`; `None`
/// where that file is not there (not Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; 100 per second on Linux.
    Some((user + system) / 100.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let concurrency: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(64).max(1);
    let rounds: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(60).max(1);
    let durability = match args.next().as_deref() {
        Some("sync") => Durability::Sync,
        _ => Durability::Buffered {
            interval: Duration::from_millis(100),
        },
    };
    let metered = args.next().as_deref() == Some("metered");
    let dir = tempfile::tempdir()?;
    let engine = Engine::builder()
        .data_dir(dir.path())
        .durability(durability)
        .max_concurrent_steps(1024)
        .register(if metered {
            ledger::v1_0_metered()
        } else {
            ledger::v1_0()
        })
        .open()
        .await?;
    let entries = (4096 / concurrency).max(4) as u32;
    postings::post_ledgers(&engine, concurrency, entries).await?;

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    for _ in 0..rounds {
        postings::post_ledgers(&engine, concurrency, entries).await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);
    engine.shutdown().await;

    // A start, one commit per posting, and the completing step.
    let commits = (rounds * concurrency * (entries as usize + 2)) as f64;
    let mode = match (durability, metered) {
        (Durability::Sync, false) => "Sync",
        (Durability::Sync, true) => "Sync, three measures per step",
        (_, false) => "Buffered",
        (_, true) => "Buffered, three measures per step",
    };
    println!(
        "{concurrency} concurrent, {mode}: {commits} commits in {wall:.2} s = {:.1} k commits/s",
        commits / wall / 1_000.0
    );
    match cpu {
        Some(cpu) => println!(
            "CPU (user + system) {cpu:.2} s = {:.2} µs per commit",
            cpu / commits * 1e6
        ),
        None => println!("CPU time is read from /proc/self/stat, which this system does not have"),
    }
    Ok(())
}
