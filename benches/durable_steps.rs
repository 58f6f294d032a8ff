//! Durable step commits per second, Sync (group commit) and Buffered, at 1, 64 and 1 024
//! concurrent instances, side by side with the raw sled limit: the same writes (records of the
//! same size, in groups of the same size) made directly on sled, flushed and fdatasynced per group
//! (and, as the limit for Buffered, not synced per group).
//! Also: instance starts per second.
//!
//! Run: `cargo bench --bench durable_steps`

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::prelude::*;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata::{Durability, Engine, Next, StepCtx, StepResult, WorkflowVersion};
use strata_workflows::ledger;
use tokio::runtime::Runtime;

#[path = "../examples/support/postings.rs"]
mod postings;

const CONCURRENCY: [usize; 3] = [1, 64, 1024];
/// Posting steps per iteration, spread over the concurrent instances.
const STEPS_PER_ITERATION: usize = 4096;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn open(dir: &std::path::Path, durability: Durability) -> Engine {
    Engine::builder()
        .data_dir(dir)
        .durability(durability)
        .max_concurrent_steps(1024)
        .register(ledger::v1_0())
        .register(waiter())
        .open()
        .await
        .expect("open engine")
}

/// Runs `instances` ledger postings of `entries` each to completion; returns the elapsed time.
async fn run_batch(engine: &Engine, instances: usize, entries: u32) -> Duration {
    let started = Instant::now();
    postings::post_ledgers(engine, instances, entries)
        .await
        .expect("ledger postings");
    started.elapsed()
}

fn entries_for(concurrency: usize) -> u32 {
    (STEPS_PER_ITERATION / concurrency).max(4) as u32
}

/// Commits per instance: its start, one per posted entry, and the completing step.
fn commits(concurrency: usize) -> u64 {
    (concurrency as u64) * (u64::from(entries_for(concurrency)) + 2)
}

/// The encoded size of a live ledger record, as the engine writes it at every step.
fn ledger_record_size(runtime: &Runtime) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async {
        let engine = open(dir.path(), Durability::Sync).await;
        let id = engine.start(waiter_name(), &0u32).await.expect("start");
        let mut record = engine.instance(id).expect("instance").record;
        let ledger_state = rmp_serde::to_vec_named(&ledger::LedgerState {
            account: 123,
            entries: 64,
            posted: 17,
            balance: -4_242,
        })
        .expect("encode");
        record.state.bytes = ledger_state;
        record.key.workflow = ledger::WORKFLOW.to_string();
        record.step = "post".to_string();
        let size = record.encode().expect("encode").bytes.len();
        engine.shutdown().await;
        size
    })
}

/// The raw sled limit: the writes the engine makes for `instances` concurrent ledger postings of
/// `entries` entries, without the engine. Each group is one batch with one write per instance —
/// its start (record and counters), a step's record rewrite, or its finish (record moved from the
/// live to the finished keys, and counters) — flushed and, if `fsync`, fdatasynced. Records have
/// the engine's record size; ids grow across iterations as the engine's do.
fn raw_sled(
    db: &sled::Db,
    file: &File,
    instances: usize,
    entries: u32,
    size: usize,
    fsync: bool,
    next_id: &mut u64,
) -> Duration {
    let record = vec![7u8; size];
    let counters = vec![3u8; 64];
    let first_id = *next_id;
    *next_id += instances as u64;
    let key = |prefix: &[u8], id: u64| {
        let mut key = prefix.to_vec();
        key.extend_from_slice(&id.to_be_bytes());
        key
    };
    let started = Instant::now();
    let last_group = entries as usize + 2;
    for group in 0..last_group {
        let mut batch = sled::Batch::default();
        for id in first_id..first_id + instances as u64 {
            if group + 1 == last_group {
                batch.remove(key(b"i/", id));
                batch.insert(key(b"d/", id), record.clone());
            } else {
                batch.insert(key(b"i/", id), record.clone());
            }
        }
        if group == 0 || group + 1 == last_group {
            batch.insert(&b"c/ledger\x001.0.0"[..], counters.clone());
        }
        db.apply_batch(batch).expect("apply");
        if fsync {
            db.flush().expect("flush");
            file.sync_data().expect("fdatasync");
        }
    }
    db.flush().expect("flush");
    file.sync_data().expect("fdatasync");
    started.elapsed()
}

fn step_commits(criterion: &mut Criterion) {
    let runtime = runtime();
    let record_size = ledger_record_size(&runtime);
    eprintln!("ledger record: {record_size} bytes");
    for concurrency in CONCURRENCY {
        let mut group = criterion.benchmark_group(format!("step_commits/{concurrency}_concurrent"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(8))
            .warm_up_time(Duration::from_secs(1));
        group.throughput(Throughput::Elements(commits(concurrency)));
        for (label, durability) in [
            ("engine_sync", Durability::Sync),
            (
                "engine_buffered",
                Durability::Buffered {
                    interval: Duration::from_millis(100),
                },
            ),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = runtime.block_on(open(dir.path(), durability));
            group.bench_function(BenchmarkId::new(label, concurrency), |bencher| {
                bencher.iter_custom(|iterations| {
                    (0..iterations)
                        .map(|_| runtime.block_on(run_batch(&engine, concurrency, entries_for(concurrency))))
                        .sum()
                })
            });
            runtime.block_on(engine.shutdown());
        }
        for (label, fsync) in [("raw_sled_fsync_per_group", true), ("raw_sled_no_fsync", false)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = sled::open(dir.path()).expect("sled");
            let file = File::open(dir.path().join("db")).expect("sled data file");
            let mut next_id = 0;
            group.bench_function(BenchmarkId::new(label, concurrency), |bencher| {
                bencher.iter_custom(|iterations| {
                    (0..iterations)
                        .map(|_| {
                            let entries = entries_for(concurrency);
                            raw_sled(&db, &file, concurrency, entries, record_size, fsync, &mut next_id)
                        })
                        .sum()
                })
            });
        }
        group.finish();
    }
}

async fn wait_forever(_ctx: StepCtx, _state: &mut u32) -> StepResult<u32> {
    Ok(Next::wait_signal("never", "wait"))
}

fn waiter_name() -> &'static str {
    "waiter"
}

/// A workflow whose only step waits for a signal: a start is one start commit and one step.
fn waiter() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new(waiter_name(), "1.0.0")
        .init(|value: u32| value)
        .step("wait", wait_forever)
}

fn instance_starts(criterion: &mut Criterion) {
    let runtime = runtime();
    const STARTS: usize = 2048;
    const STARTERS: usize = 64;
    let mut group = criterion.benchmark_group("instance_starts");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(STARTS as u64));
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(runtime.block_on(open(dir.path(), Durability::Sync)));
    group.bench_function(BenchmarkId::new("sync", format!("{STARTERS}_callers")), |bencher| {
        bencher.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| {
                    runtime.block_on(async {
                        let started = Instant::now();
                        let tasks: Vec<_> = (0..STARTERS)
                            .map(|_| {
                                let engine = engine.clone();
                                tokio::spawn(async move {
                                    for _ in 0..STARTS / STARTERS {
                                        engine.start(waiter_name(), &1u32).await.expect("start");
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("starter");
                        }
                        started.elapsed()
                    })
                })
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, step_commits, instance_starts);
criterion_main!(benches);
