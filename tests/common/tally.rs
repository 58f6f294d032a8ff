//! `tally`, a small workflow whose state changes shape: schema 1 `{count, stamps}`, schema 2
//! `{count, doubled, stamps}`. Its migration stamps every state it transforms, so a test can tell
//! how many times each record was migrated, and fails on count 13 and panics on count 666.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata::{
    Engine, InstanceId, InstanceStatus, Next, StartOptions, StateMigration, StepCtx, StepResult, UpgradePolicy,
    WorkflowVersion,
};
use tokio::sync::Semaphore;

/// The workflow's name.
pub const WORKFLOW: &str = "tally";
/// The signal that lets an instance finish.
pub const GO: &str = "go";
/// A count whose migration returns an error.
pub const FAILS_TO_MIGRATE: u64 = 13;
/// A count whose migration panics.
pub const PANICS_IN_MIGRATION: u64 = 666;
/// A count whose first step waits for [`HOLD_GATE`] before going on.
pub const HELD: u64 = 999;
/// Opens for steps of instances with count [`HELD`].
pub static HOLD_GATE: Semaphore = Semaphore::const_new(0);

/// Schema 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyV1 {
    /// The input.
    pub count: u64,
    /// How many migrations transformed this state.
    pub stamps: u32,
}

/// Schema 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyV2 {
    /// The input.
    pub count: u64,
    /// Twice the count, computed by the migration or at start.
    pub doubled: u64,
    /// How many migrations transformed this state.
    pub stamps: u32,
}

/// The migration 1 → 2 (and back), counting its calls in `calls`.
pub fn migration(calls: Arc<AtomicU64>) -> StateMigration {
    let back = calls.clone();
    StateMigration::new(WORKFLOW, 1, 2, move |old: TallyV1| {
        calls.fetch_add(1, Ordering::Relaxed);
        match old.count {
            FAILS_TO_MIGRATE => Err(format!("count {FAILS_TO_MIGRATE} is refused")),
            PANICS_IN_MIGRATION => panic!("count {PANICS_IN_MIGRATION} makes the migration panic"),
            count => Ok(TallyV2 {
                count,
                doubled: count * 2,
                stamps: old.stamps + 1,
            }),
        }
    })
    .with_inverse(move |new: TallyV2| {
        back.fetch_add(1, Ordering::Relaxed);
        Ok(TallyV1 {
            count: new.count,
            stamps: new.stamps + 1,
        })
    })
}

async fn hold_if_asked(count: u64) {
    if count == HELD {
        if let Ok(permit) = HOLD_GATE.acquire().await {
            permit.forget();
        }
    }
}

async fn start_v1(_ctx: StepCtx, state: &mut TallyV1) -> StepResult<u64> {
    hold_if_asked(state.count).await;
    Ok(Next::wait_signal(GO, "finish"))
}

async fn finish_v1(_ctx: StepCtx, state: &mut TallyV1) -> StepResult<u64> {
    Ok(Next::complete(state.count))
}

async fn start_v2(_ctx: StepCtx, state: &mut TallyV2) -> StepResult<u64> {
    hold_if_asked(state.count).await;
    Ok(Next::wait_signal(GO, "finish"))
}

async fn finish_v2(_ctx: StepCtx, state: &mut TallyV2) -> StepResult<u64> {
    Ok(Next::complete(state.count + state.doubled))
}

/// `version` on schema 1: completes with the count.
pub fn on_schema_1(version: &str) -> WorkflowVersion<u64, TallyV1, u64> {
    WorkflowVersion::new(WORKFLOW, version)
        .state_schema(1)
        .init(|count| TallyV1 { count, stamps: 0 })
        .step("start", start_v1)
        .step("finish", finish_v1)
}

/// `version` on schema 2: completes with three times the count.
pub fn on_schema_2(version: &str) -> WorkflowVersion<u64, TallyV2, u64> {
    WorkflowVersion::new(WORKFLOW, version)
        .state_schema(2)
        .init(|count| TallyV2 {
            count,
            doubled: count * 2,
            stamps: 0,
        })
        .step("start", start_v2)
        .step("finish", finish_v2)
}

/// `version` on schema 1 whose instances follow the routing target (`AutoUpgrade`).
pub fn auto_upgrading(version: &str) -> WorkflowVersion<u64, TallyV1, u64> {
    on_schema_1(version).upgrade_policy(UpgradePolicy::AutoUpgrade)
}

/// The stamps of a stored tally state of either schema.
pub fn stamps(schema: u32, bytes: &[u8]) -> Result<u32, String> {
    match schema {
        1 => rmp_serde::from_slice::<TallyV1>(bytes).map(|state| state.stamps),
        2 => rmp_serde::from_slice::<TallyV2>(bytes).map(|state| state.stamps),
        other => return Err(format!("unknown schema {other}")),
    }
    .map_err(|error| error.to_string())
}

/// Starts a tally for each count with `options`, and waits until each waits for [`GO`].
pub async fn start_waiting(
    engine: &Engine,
    counts: impl IntoIterator<Item = u64>,
    options: StartOptions,
) -> Vec<InstanceId> {
    let mut ids = Vec::new();
    for count in counts {
        ids.push(engine.start_with(WORKFLOW, &count, options.clone()).await.unwrap());
    }
    for id in &ids {
        super::wait_for_status(engine, *id, InstanceStatus::WaitingSignal).await;
    }
    ids
}

/// Tally 1.0.0 instances with `counts` stored in `backend` with their state on schema 1, each
/// waiting for [`GO`] (the engine that started them is shut down).
pub async fn stored_on_schema_1(backend: &super::Backend, counts: impl IntoIterator<Item = u64>) -> Vec<InstanceId> {
    let engine = backend.builder().register(on_schema_1("1.0.0")).open().await.unwrap();
    let ids = start_waiting(&engine, counts, StartOptions::new()).await;
    engine.shutdown().await;
    ids
}

/// An engine on `backend` running tally 1.0.0 on schema 2, with the migration 1 → 2 counting its
/// calls in `calls`.
pub async fn open_on_schema_2(backend: &super::Backend, calls: Arc<AtomicU64>) -> Engine {
    backend
        .builder()
        .register(on_schema_2("1.0.0"))
        .migration(migration(calls))
        .open()
        .await
        .unwrap()
}
