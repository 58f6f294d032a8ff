//! A caller that stops waiting — its `start` or `signal` future dropped by a timeout or a
//! cancelled task, at any point — never leaves the store and the running engine disagreeing: a
//! start leaves no trace or a listed, counted, running instance; a signal is delivered in the
//! running engine or not stored at all.
//!
//! The behaviours listed in `on_sled_and_postgres!` run on sled and on PostgreSQL; the rest
//! need no store, or open the embedded store's directory themselves.

mod common;

use std::future::Future;
use std::task::{Context, Waker};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata::registry::RegistryError;
use strata::{EngineError, InstanceFilter, InstanceId, InstanceStatus, Next, StepCtx, StepResult, WorkflowVersion};

on_sled_and_postgres!(
    a_start_whose_caller_gives_up_leaves_no_trace_or_a_listed_counted_instance,
    a_signal_whose_caller_gives_up_is_delivered_now_or_not_stored,
);

const WORKFLOW: &str = "waiter";

async fn wait_for_go(_ctx: StepCtx, _state: &mut u64) -> StepResult<u64> {
    Ok(Next::wait_signal("go", "finish"))
}

async fn finish(ctx: StepCtx, state: &mut u64) -> StepResult<u64> {
    let go: u64 = ctx.signal()?.unwrap_or(u64::MAX);
    Ok(Next::complete(*state * 1_000 + go))
}

/// Instances wait for signal `go` (a number) and complete with `input * 1000 + go`.
fn waiter() -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(|n: u64| n)
        .signal_type::<u64>("go")
        .step("wait", wait_for_go)
        .step("finish", finish)
}

/// Polls `future` `polls` times, letting other tasks run between polls, then drops it unless it
/// finished: a caller giving up after its call got that far.
async fn give_up_after(future: impl Future, polls: u32) -> bool {
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    for _ in 0..polls {
        if future.as_mut().poll(&mut context).is_ready() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

/// A random generator whose seed is printed, so that a failure can be replayed.
fn seeded() -> StdRng {
    let seed = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("drop points from seed {seed} (set STRATA_TEST_SEED to replay)");
    StdRng::seed_from_u64(seed)
}

fn ids(listed: Vec<strata::InstanceInfo>) -> Vec<InstanceId> {
    listed.into_iter().map(|info| info.record.id).collect()
}

async fn a_start_whose_caller_gives_up_leaves_no_trace_or_a_listed_counted_instance(backend: Backend) {
    let engine = backend.builder().register(waiter()).open().await.unwrap();
    let mut drop_points = seeded();
    let mut issued = 0;
    for n in 0..400u64 {
        // 0 polls: never issued; 1: the call has done its synchronous part; more: further in.
        let polls = drop_points.random_range(0..=4);
        if polls > 0 {
            issued += 1;
        }
        give_up_after(engine.start(WORKFLOW, &n), polls).await;
    }
    // Shutdown waits for every operation in flight, so what the engine shows afterwards is what
    // it ended with. A start polled once was let in before the shutdown began, so it ran to its
    // end: about four in five of the starts.
    engine.clone().shutdown().await;
    let listed = ids(engine.list(&InstanceFilter::default()).unwrap());
    assert_eq!(
        listed.len(),
        issued,
        "every start issued before the shutdown ran to its end"
    );
    let counters = engine.version(WORKFLOW, "1.0.0").unwrap().counters;
    assert_eq!(counters.live as usize, listed.len(), "live counter against the listing");
    assert_eq!(
        counters.started as usize,
        listed.len(),
        "started counter against the listing"
    );
    drop(engine);

    let reopened = backend.builder().register(waiter()).open().await.unwrap();
    let recovered = ids(reopened.list(&InstanceFilter::default()).unwrap());
    assert_eq!(
        recovered.len(),
        listed.len(),
        "the store holds as many instances as the engine listed"
    );
    assert_eq!(
        recovered, listed,
        "the store holds exactly the instances the engine listed"
    );
    assert_eq!(
        reopened.version(WORKFLOW, "1.0.0").unwrap().counters.live as usize,
        listed.len()
    );
    match reopened.retire(WORKFLOW, "1.0.0").await {
        Err(EngineError::Registry(RegistryError::LiveInstances { live, .. })) => {
            assert_eq!(live as usize, listed.len(), "retire counts what the engine lists")
        }
        other => panic!("retire with {} listed instances: {other:?}", listed.len()),
    }
    for id in listed {
        reopened.signal(id, "go", &7u64).await.unwrap();
        let output: u64 = outcome_within(&reopened, id).await.output().unwrap();
        assert_eq!(output % 1_000, 7);
    }
    reopened.shutdown().await;
}

async fn a_signal_whose_caller_gives_up_is_delivered_now_or_not_stored(backend: Backend) {
    let engine = backend.builder().register(waiter()).open().await.unwrap();
    let mut instances = Vec::new();
    for n in 0..300u64 {
        instances.push(engine.start(WORKFLOW, &n).await.unwrap());
    }
    for id in &instances {
        wait_for_status(&engine, *id, InstanceStatus::WaitingSignal).await;
    }
    let mut drop_points = seeded();
    for id in &instances {
        give_up_after(engine.signal(*id, "go", &5u64), drop_points.random_range(0..=4)).await;
    }
    // Every instance ends now: woken by its signal (completed) or cancelled while it waits. A
    // signal stored but never delivered would outlive its instance in the store.
    let (mut completed, mut cancelled) = (0, 0);
    for id in &instances {
        match engine.cancel(*id).await {
            Ok(()) => cancelled += 1,
            Err(EngineError::InstanceFinished { status, .. }) => {
                assert_eq!(status, "completed");
                let output: u64 = outcome_within(&engine, *id).await.output().unwrap();
                assert_eq!(output, id_input(&instances, *id) * 1_000 + 5);
                completed += 1;
            }
            Err(other) => panic!("cancel of {id}: {other}"),
        }
    }
    assert_eq!(completed + cancelled, instances.len());
    engine.shutdown().await;

    // What the store holds afterwards: no live instance, and no signal left for any of them.
    let live: u64 = backend
        .store()
        .versions()
        .unwrap()
        .iter()
        .map(|version| version.counters.live)
        .sum();
    assert_eq!(live, 0, "instances still live in the store");
    assert_eq!(
        backend.stored_signals(&instances),
        0,
        "signals were stored but never delivered ({completed} delivered, {cancelled} cancelled)"
    );
}

/// The input of instance `id` (the n-th started got input n).
fn id_input(instances: &[InstanceId], id: InstanceId) -> u64 {
    instances.iter().position(|candidate| *candidate == id).unwrap() as u64
}
