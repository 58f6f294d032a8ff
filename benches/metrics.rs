//! The step path with per-version metrics recorded (the default) and switched off: the cost of
//! keeping metrics on for every step. Buffered durability, so the figure is CPU, not fsync.
//!
//! Run: `cargo bench --bench metrics`

use std::time::{Duration, Instant};
use strata::prelude::*;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata::{Durability, Engine};
use strata_workflows::ledger;

#[path = "../examples/support/postings.rs"]
mod postings;

const INSTANCES: usize = 64;
const ENTRIES: u32 = 64;

async fn open(dir: &std::path::Path, metrics: bool) -> Engine {
    Engine::builder()
        .data_dir(dir)
        .durability(Durability::Buffered {
            interval: Duration::from_millis(100),
        })
        .metrics(metrics)
        .max_concurrent_steps(1024)
        .register(ledger::v1_0())
        .open()
        .await
        .expect("open engine")
}

/// Runs `INSTANCES` ledger postings of `ENTRIES` steps each to completion.
async fn run_batch(engine: &Engine) -> Duration {
    let started = Instant::now();
    postings::post_ledgers(engine, INSTANCES, ENTRIES)
        .await
        .expect("ledger postings");
    started.elapsed()
}

fn metrics_on_and_off(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = criterion.benchmark_group("step_path");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements((INSTANCES as u64) * (u64::from(ENTRIES) + 2)));
    for metrics in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = runtime.block_on(open(dir.path(), metrics));
        let label = if metrics { "metrics_on" } else { "metrics_off" };
        group.bench_function(BenchmarkId::new(label, INSTANCES), |bencher| {
            bencher.iter_custom(|iterations| (0..iterations).map(|_| runtime.block_on(run_batch(&engine))).sum())
        });
        runtime.block_on(engine.shutdown());
    }
    group.finish();
}

criterion_group!(benches, metrics_on_and_off);
criterion_main!(benches);
