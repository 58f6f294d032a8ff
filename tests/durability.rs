//! Durable timers and signals across restarts, graceful shutdown, and the two commit modes.
//!
//! Timers and signals across a restart run on sled and on PostgreSQL. The shutdown test counts
//! the runs of a step in statics (two stores at once in one binary would share them), and the
//! commit-mode tests measure the embedded store's syncs: they run on sled.

mod common;

use std::time::Duration;

use common::*;
use strata::instance::Phase;
use strata::{Durability, EngineError, InstanceStatus, Next, StepCtx, StepResult, WorkflowVersion};
use strata_workflows::onboarding::{self, OnboardingInput, OnboardingOutput};
use strata_workflows::{ledger, ledger::LedgerInput};
use tokio::sync::{Notify, Semaphore};

on_sled_and_postgres!(
    timers_and_early_signals_survive_a_restart,
    a_signal_timeout_fires_after_a_restart,
);

async fn nap(_ctx: StepCtx, _state: &mut String) -> StepResult<String> {
    Ok(Next::sleep(Duration::from_millis(300), "wait_for_go"))
}

async fn wait_for_go(_ctx: StepCtx, _state: &mut String) -> StepResult<String> {
    Ok(Next::wait_signal("go", "done"))
}

async fn done(ctx: StepCtx, state: &mut String) -> StepResult<String> {
    let word: String = ctx.signal()?.unwrap_or_default();
    Ok(Next::complete(format!("{state} {word}")))
}

fn sleeper() -> WorkflowVersion<String, String, String> {
    WorkflowVersion::new("sleeper", "1.0.0")
        .init(|greeting: String| greeting)
        .step("nap", nap)
        .step("wait_for_go", wait_for_go)
        .step("done", done)
}

async fn timers_and_early_signals_survive_a_restart(backend: Backend) {
    let engine = backend.builder().register(sleeper()).open().await.unwrap();
    let id = engine.start("sleeper", "hello").await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::Sleeping).await;
    let Phase::Sleeping { until_ms } = engine.instance(id).unwrap().record.phase else {
        unreachable!()
    };
    // Sent while the instance sleeps, so nothing awaits it yet: it must be kept durably.
    engine.signal(id, "go", "world").await.unwrap();
    engine.shutdown().await;

    let engine = backend.builder().register(sleeper()).open().await.unwrap();
    let output: String = outcome_within(&engine, id).await.output().unwrap();
    assert_eq!(output, "hello world");
    let finished = engine.instance(id).unwrap().record;
    assert!(finished.updated_at_ms >= until_ms, "the sleep ended before its time");
    engine.shutdown().await;
}

async fn a_signal_timeout_fires_after_a_restart(backend: Backend) {
    let input = OnboardingInput {
        customer: "c-1".into(),
        reminder_after_ms: 150,
        max_reminders: 1,
    };
    let engine = backend.builder().register(onboarding::v1_0()).open().await.unwrap();
    let id = engine.start(onboarding::WORKFLOW, &input).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    engine.shutdown().await;

    let engine = backend.builder().register(onboarding::v1_0()).open().await.unwrap();
    let output: OnboardingOutput = outcome_within(&engine, id).await.output().unwrap();
    assert_eq!(
        output,
        OnboardingOutput {
            activated: false,
            reminders_sent: 1
        }
    );
    engine.shutdown().await;
}

static ENTERED: Notify = Notify::const_new();
static GATE: Semaphore = Semaphore::const_new(0);
/// How many times `slow` began on the instance started with 1 (the test's starts that land
/// before the shutdown begins start with 5).
static SLOW_RUNS_OF_THE_FIRST: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn slow(_ctx: StepCtx, state: &mut u32) -> StepResult<u32> {
    if *state == 1 {
        SLOW_RUNS_OF_THE_FIRST.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    ENTERED.notify_one();
    let _permit = GATE
        .acquire()
        .await
        .map_err(|error| strata::StepError::permanent(error.to_string()))?;
    *state += 1;
    Ok(Next::goto("after"))
}

async fn after(_ctx: StepCtx, state: &mut u32) -> StepResult<u32> {
    Ok(Next::complete(*state + 10))
}

fn gated() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new("gated", "1.0.0")
        .init(|start: u32| start)
        .step("slow", slow)
        .step("after", after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_running_step_commit_and_starts_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder(dir.path()).register(gated()).open().await.unwrap();
    let id = engine.start("gated", &1u32).await.unwrap();
    ENTERED.notified().await;
    let mut shutdown = tokio::spawn(engine.clone().shutdown());
    let refused = loop {
        match engine.start("gated", &5u32).await {
            Err(error) => break error,
            Ok(_) => tokio::task::yield_now().await, // shutdown has not begun yet
        }
    };
    assert!(matches!(refused, EngineError::ShuttingDown), "{refused}");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut shutdown)
            .await
            .is_err(),
        "shutdown returned while a step was still running"
    );
    GATE.add_permits(1);
    shutdown.await.unwrap();
    drop(engine);

    // The reopened engine goes on at once: the instance finishes with the step that ran before
    // the shutdown committed (had its commit been lost, `slow` would begin again and wait on
    // the gate for good).
    let engine = builder(dir.path()).register(gated()).open().await.unwrap();
    let output: u32 = outcome_within(&engine, id).await.output().unwrap();
    assert_eq!(output, 12);
    let record = engine.instance(id).unwrap().record;
    assert_eq!((record.step.as_str(), record.visits), ("after", 2));
    assert_eq!(
        SLOW_RUNS_OF_THE_FIRST.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the running step's commit was lost: it ran again"
    );
    engine.shutdown().await;
}

fn ledger_input(account: u64, entries: u32) -> LedgerInput {
    LedgerInput { account, entries }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_groups_concurrent_commits_into_shared_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder(dir.path())
        .register(ledger::v1_0())
        .max_concurrent_steps(64)
        .open()
        .await
        .unwrap();
    let before = engine.store_stats();
    let id = engine.start(ledger::WORKFLOW, &ledger_input(0, 1)).await.unwrap();
    assert!(
        engine.store_stats().syncs > before.syncs,
        "a Sync start was acknowledged before any fsync"
    );
    outcome_within(&engine, id).await;
    let before = engine.store_stats();
    let mut ids = Vec::new();
    for account in 0..64 {
        ids.push(
            engine
                .start(ledger::WORKFLOW, &ledger_input(account, 30))
                .await
                .unwrap(),
        );
    }
    for (account, id) in ids.iter().enumerate() {
        let balance: i64 = outcome_within(&engine, *id).await.output().unwrap();
        assert_eq!(balance, ledger::expected_balance(account as u64, 30));
    }
    let after = engine.store_stats();
    let commits = 64 * (1 + 31); // a start and 31 steps each
    let syncs = after.syncs - before.syncs;
    eprintln!("{commits} commits shared {syncs} fsyncs");
    assert!(syncs >= 1);
    assert!(
        syncs < commits / 2,
        "{syncs} fsyncs for {commits} commits: commits are not grouped"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_mode_flushes_on_its_interval_and_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder(dir.path())
        .durability(Durability::Buffered {
            interval: Duration::from_millis(200),
        })
        .register(ledger::v1_0())
        .open()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for account in 0..16 {
        ids.push(
            engine
                .start(ledger::WORKFLOW, &ledger_input(account, 20))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        outcome_within(&engine, *id).await;
    }
    let stats = engine.store_stats();
    assert!(
        stats.syncs < 16,
        "buffered mode synced {} times for {} writes",
        stats.syncs,
        stats.applies
    );
    engine.shutdown().await;
    let engine = builder(dir.path()).register(ledger::v1_0()).open().await.unwrap();
    for id in &ids {
        assert_eq!(engine.instance(*id).unwrap().status, InstanceStatus::Completed);
    }
    engine.shutdown().await;
}
