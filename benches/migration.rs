//! State migration: background migration throughput over 100 000 live instances with a small
//! state, the time to plan a move of 100 000 instances, and the cost lazy migration adds to a step.
//!
//! Run: `cargo bench --bench migration`
//!
//! Stores are filled by writing records straight into the store (not timed), so each measurement
//! starts from 100 000 untouched schema-1 records.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::prelude::*;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde::{Deserialize, Serialize};
use strata::instance::{InstanceRecord, PersistedWake, Phase, StateEnvelope};
use strata::{
    Durability, Engine, InstanceId, MigrationJob, MoveRequest, Next, SledStore, StateMigration, StepCtx, StepResult,
    Store, Version, VersionKey, WorkflowVersion,
};
use strata_store::{CounterDelta, Op};

const WORKFLOW: &str = "meter";

#[derive(Serialize, Deserialize)]
struct MeterV1 {
    reading: u64,
    unit: String,
}

#[derive(Serialize, Deserialize)]
struct MeterV2 {
    reading: u64,
    unit: String,
    reading_in_watts: u64,
}

async fn finish_v1(_ctx: StepCtx, state: &mut MeterV1) -> StepResult<u64> {
    Ok(Next::complete(state.reading))
}

async fn finish_v2(_ctx: StepCtx, state: &mut MeterV2) -> StepResult<u64> {
    Ok(Next::complete(state.reading_in_watts))
}

fn on_schema_1(version: &str) -> WorkflowVersion<u64, MeterV1, u64> {
    WorkflowVersion::new(WORKFLOW, version)
        .state_schema(1)
        .init(|reading| MeterV1 {
            reading,
            unit: "kW".into(),
        })
        .step("finish", finish_v1)
}

fn on_schema_2(version: &str) -> WorkflowVersion<u64, MeterV2, u64> {
    WorkflowVersion::new(WORKFLOW, version)
        .state_schema(2)
        .init(|reading| MeterV2 {
            reading,
            unit: "kW".into(),
            reading_in_watts: reading * 1000,
        })
        .step("finish", finish_v2)
}

fn migration() -> StateMigration {
    StateMigration::new(WORKFLOW, 1, 2, |old: MeterV1| {
        Ok(MeterV2 {
            reading_in_watts: old.reading * 1000,
            reading: old.reading,
            unit: old.unit,
        })
    })
}

/// Writes `count` schema-1 records of meter 1.0.0 straight into a store in `dir`, each in
/// `phase`, with the live counter to match.
fn fill(dir: &Path, count: u64, phase: Phase) {
    let store = SledStore::open(dir).expect("open store");
    let key = VersionKey::new(WORKFLOW, Version::new(1, 0, 0));
    let now = 1_700_000_000_000;
    for chunk_start in (1..=count).step_by(10_000) {
        let mut ops = Vec::new();
        for id in chunk_start..(chunk_start + 10_000).min(count + 1) {
            let state = MeterV1 {
                reading: id,
                unit: "kW".into(),
            };
            let record = InstanceRecord {
                step: "finish".into(),
                visits: 1,
                state: StateEnvelope {
                    schema: 1,
                    bytes: rmp_serde::to_vec_named(&state).expect("encode"),
                },
                ..InstanceRecord::new(InstanceId(id), key.clone(), phase.clone(), now)
            };
            ops.push(Op::PutInstance(record.encode().expect("encode")));
        }
        let started = ops.len() as u64;
        ops.push(Op::AdjustCounters {
            key: key.clone(),
            delta: CounterDelta {
                live: started as i64,
                started,
                ..CounterDelta::default()
            },
        });
        store.apply(&ops).expect("apply");
    }
    store.sync().expect("sync");
}

fn waiting() -> Phase {
    Phase::WaitingSignal {
        name: "read".into(),
        timeout_at_ms: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

fn background_migration(criterion: &mut Criterion) {
    const INSTANCES: u64 = 100_000;
    let runtime = runtime();
    let mut group = criterion.benchmark_group("background_migration");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(criterion::Throughput::Elements(INSTANCES));
    group.bench_function(BenchmarkId::new("instances", INSTANCES), |bencher| {
        bencher.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let dir = tempfile::tempdir().expect("tempdir");
                fill(dir.path(), INSTANCES, waiting());
                total += runtime.block_on(async {
                    let engine = Engine::builder()
                        .data_dir(dir.path())
                        .durability(Durability::Sync)
                        .register(on_schema_2("1.0.0"))
                        .migration(migration())
                        .open()
                        .await
                        .expect("open");
                    let started = Instant::now();
                    let job = engine
                        .migrate_states(MigrationJob::new(WORKFLOW).batch_size(2_000))
                        .expect("start");
                    let done = job.finished().await;
                    let elapsed = started.elapsed();
                    assert_eq!(done.migrated, INSTANCES);
                    engine.shutdown().await;
                    elapsed
                });
            }
            total
        })
    });
    group.finish();
}

fn plan_moves(criterion: &mut Criterion) {
    const INSTANCES: u64 = 100_000;
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path(), INSTANCES, waiting());
    let engine = runtime.block_on(async {
        Engine::builder()
            .data_dir(dir.path())
            .register(on_schema_1("1.0.0"))
            .register(on_schema_2("2.0.0"))
            .migration(migration())
            .open()
            .await
            .expect("open")
    });
    let request = MoveRequest::new(WORKFLOW, Version::new(2, 0, 0)).from_version(Version::new(1, 0, 0));
    let mut group = criterion.benchmark_group("plan_moves");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(criterion::Throughput::Elements(INSTANCES));
    group.bench_function(BenchmarkId::new("instances", INSTANCES), |bencher| {
        bencher.iter(|| {
            let plan = engine.plan_moves(&request).expect("plan");
            assert_eq!(plan.movable().count() as u64, INSTANCES);
        })
    });
    group.finish();
    runtime.block_on(engine.shutdown());
}

/// Runs `INSTANCES` ready instances to completion (one step each), with code that reads the
/// stored schema (no migration) or the next one (every step migrates lazily).
fn lazy_migration(criterion: &mut Criterion) {
    const INSTANCES: u64 = 20_000;
    let runtime = runtime();
    let mut group = criterion.benchmark_group("lazy_migration");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(criterion::Throughput::Elements(INSTANCES));
    for migrate in [false, true] {
        let name = if migrate { "step_with_migration" } else { "step_without" };
        group.bench_function(BenchmarkId::new(name, INSTANCES), |bencher| {
            bencher.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let ready = Phase::Ready {
                        wake: PersistedWake::Continued,
                    };
                    fill(dir.path(), INSTANCES, ready);
                    total += runtime.block_on(run_all(dir.path(), migrate, INSTANCES));
                }
                total
            })
        });
    }
    group.finish();
}

/// Opens the store (its instances start running at once) and times until all have finished.
async fn run_all(dir: &Path, migrate: bool, instances: u64) -> Duration {
    let builder = Engine::builder()
        .data_dir(dir)
        .durability(Durability::Buffered {
            interval: Duration::from_millis(50),
        })
        .max_concurrent_steps(1024);
    let builder = if migrate {
        builder.register(on_schema_2("1.0.0")).migration(migration())
    } else {
        builder.register(on_schema_1("1.0.0"))
    };
    let started = Instant::now();
    let engine = builder.open().await.expect("open");
    let mut events = engine.subscribe();
    let engine = Arc::new(engine);
    while engine.version(WORKFLOW, "1.0.0").expect("version").counters.live > 0 {
        let _ = tokio::time::timeout(Duration::from_millis(20), events.recv()).await;
    }
    let elapsed = started.elapsed();
    let counters = engine.version(WORKFLOW, "1.0.0").expect("version").counters;
    assert_eq!(counters.completed, instances, "{counters:?}");
    Arc::try_unwrap(engine).ok().expect("one handle").shutdown().await;
    elapsed
}

/// What lazy migration adds to a step, measured alone: decoding the old state, the typed
/// function, encoding the new one.
fn one_state(criterion: &mut Criterion) {
    let migration = migration();
    let old = rmp_serde::to_vec_named(&MeterV1 {
        reading: 42,
        unit: "kW".into(),
    })
    .expect("encode");
    criterion.bench_function("lazy_migration/one_state", |bencher| {
        bencher.iter(|| migration.run_on(std::hint::black_box(&old)).expect("migrate"))
    });
}

criterion_group!(benches, background_migration, plan_moves, lazy_migration, one_state);
criterion_main!(benches);
