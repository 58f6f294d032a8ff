//! Recovery: time from `open` until it returns, for 100 000 in-flight approval requests that each
//! wait a day for a decision: with the default residency horizon (nothing is due, so every one
//! stays in the store), and with every instance loaded and its timer re-armed (`Duration::MAX`).
//!
//! Run: `cargo bench --bench recovery`

use std::path::Path;
use std::time::{Duration, Instant};
use strata::prelude::*;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strata::{Durability, Engine};
use strata_workflows::approval;

#[path = "../examples/support/waiting.rs"]
mod waiting;

const INSTANCES: usize = 100_000;

async fn open(dir: &Path, horizon: Duration) -> Engine {
    Engine::builder()
        .data_dir(dir)
        .residency_horizon(horizon)
        .durability(Durability::Buffered {
            interval: Duration::from_millis(100),
        })
        .max_concurrent_steps(1024)
        .register(approval::v1_0())
        .open()
        .await
        .expect("open")
}

/// Fills `dir` with `INSTANCES` approval requests, each waiting for a decision.
async fn populate(dir: &Path) {
    let engine = open(dir, Duration::MAX).await;
    waiting::start_waiting_requests(&engine, INSTANCES)
        .await
        .expect("populate");
    engine.shutdown().await;
}

fn recovery(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let populated = Instant::now();
    runtime.block_on(populate(dir.path()));
    eprintln!(
        "populated {INSTANCES} waiting instances in {:.1}s",
        populated.elapsed().as_secs_f64()
    );
    let mut group = criterion.benchmark_group("recovery");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1));
    for (name, horizon, resident) in [
        ("open_idle_left_in_store", Duration::from_secs(30), 0),
        ("open_all_loaded_and_rearmed", Duration::MAX, INSTANCES),
    ] {
        group.bench_function(BenchmarkId::new(name, INSTANCES), |bencher| {
            bencher.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    let engine = runtime.block_on(open(dir.path(), horizon));
                    total += started.elapsed();
                    assert_eq!(engine.live_instances(), resident);
                    let live: u64 = engine.versions().iter().map(|info| info.counters.live).sum();
                    assert_eq!(live, INSTANCES as u64);
                    runtime.block_on(engine.shutdown());
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
