//! Durable step commits per second, Sync (group commit) and Buffered, at 1, 64 and 1 024
//! concurrent instances, side by side with the raw sled limit: inserts of records of the same size
//! in groups of the same size, flushed and fdatasynced per group (and, for Buffered, not synced).
//! Also: instance starts per second.
//!
//! Run: `cargo bench --bench durable_steps`

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata::{Durability, Engine, Next, StepCtx, StepResult, WorkflowVersion};
use strata_workflows::ledger::{self, LedgerInput};
use tokio::runtime::Runtime;

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
    let mut tasks = Vec::with_capacity(instances);
    for account in 0..instances {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let id = engine
                .start(
                    ledger::WORKFLOW,
                    &LedgerInput {
                        account: account as u64,
                        entries,
                    },
                )
                .await?;
            engine.outcome(id).await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("ledger outcome");
    }
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
        let size = rmp_serde::to_vec_named(&record).expect("encode").len();
        engine.shutdown().await;
        size
    })
}

/// The raw sled limit: `total` writes of `size`-byte records in groups of `group`, each group one
/// batch, flushed and (if `fsync`) fdatasynced. As in the engine, where each of `group` concurrent
/// instances rewrites its own record at every step, the writes cycle over `group` keys.
fn raw_sled(dir: &std::path::Path, total: u64, group: usize, size: usize, fsync: bool) -> Duration {
    let db = sled::open(dir).expect("sled");
    let file = File::open(dir.join("db")).expect("sled data file");
    let value = vec![7u8; size];
    let started = Instant::now();
    let mut written = 0;
    while written < total {
        let mut batch = sled::Batch::default();
        for key_index in 0..group.min((total - written) as usize) {
            let mut key = b"i/".to_vec();
            key.extend_from_slice(&(key_index as u64).to_be_bytes());
            batch.insert(key, value.clone());
            written += 1;
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
            group.bench_function(BenchmarkId::new(label, concurrency), |bencher| {
                bencher.iter_custom(|iterations| {
                    (0..iterations)
                        .map(|_| raw_sled(dir.path(), commits(concurrency), concurrency, record_size, fsync))
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
