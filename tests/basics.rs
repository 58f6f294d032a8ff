//! An order runs through every step of its version, with a signal, a durable sleep and a retry;
//! attempts time out, listings filter and page, and an awaited outcome ends at shutdown. All on
//! sled and on PostgreSQL but the idempotency-key test (its steps record into one static).

mod common;

use common::*;
use strata::{InstanceStatus, Outcome};
use strata_workflows::order::{self, Line, OrderOutput, OrderState};

on_sled_and_postgres!(
    an_order_completes_through_signal_sleep_and_retry,
    an_attempt_that_exceeds_its_timeout_is_retried,
    instances_are_listed_by_workflow_version_and_status,
    awaiting_an_outcome_ends_when_the_engine_shuts_down,
    a_listing_shows_each_instance_once_while_instances_finish,
);

async fn an_order_completes_through_signal_sleep_and_retry(backend: Backend) {
    let engine = backend.builder().register(order::v1_0()).open().await.unwrap();
    let mut input = small_order(1);
    input.lines.push(Line {
        sku: "flaky-lamp".into(),
        quantity: 1,
        unit_price_cents: 999,
    });
    let id = engine.start(order::WORKFLOW, &input).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    let info = engine.instance(id).unwrap();
    assert_eq!(info.step(), "charge");
    let state: OrderState = info.state().unwrap();
    assert!(state.reserved);
    engine
        .signal(id, order::PAYMENT_SIGNAL, &full_payment(&input))
        .await
        .unwrap();
    let output: OrderOutput = outcome_within(&engine, id).await.output().unwrap();
    assert_eq!(output.status, "shipped");
    assert_eq!(output.tracking.as_deref(), Some("TRK-o-1"));
    let state: OrderState = engine.instance(id).unwrap().state().unwrap();
    assert_eq!(state.history, order::expected_history("1.0.0"));
    let finished = engine.instance(id).unwrap();
    assert_eq!(finished.status, InstanceStatus::Completed);
    assert!(matches!(finished.outcome(), Some(Outcome::Completed(_))));
    engine.shutdown().await;
}

static KEYS: std::sync::Mutex<Vec<(u32, String)>> = std::sync::Mutex::new(Vec::new());

async fn flaky_call(ctx: strata::StepCtx, state: &mut u32) -> strata::StepResult<u32> {
    KEYS.lock().unwrap().push((ctx.attempt(), ctx.idempotency_key()));
    if ctx.attempt() < 3 {
        return Err(strata::StepError::retryable("service unavailable"));
    }
    *state += 1;
    Ok(strata::Next::goto("second_call"))
}

async fn second_call(ctx: strata::StepCtx, state: &mut u32) -> strata::StepResult<u32> {
    KEYS.lock().unwrap().push((ctx.attempt(), ctx.idempotency_key()));
    Ok(strata::Next::complete(*state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idempotency_key_is_stable_across_retries_and_differs_between_visits() {
    let dir = tempfile::tempdir().unwrap();
    let version = strata::WorkflowVersion::new("calls", "1.0.0")
        .init(|value: u32| value)
        .default_retry(strata::RetryPolicy::exponential(3, std::time::Duration::from_millis(5)))
        .step("flaky_call", flaky_call)
        .step("second_call", second_call);
    let engine = builder(dir.path()).register(version).open().await.unwrap();
    let id = engine.start("calls", &0u32).await.unwrap();
    assert_eq!(outcome_within(&engine, id).await.output::<u32>().unwrap(), 1);
    let keys = KEYS.lock().unwrap().clone();
    let attempts: Vec<u32> = keys.iter().map(|(attempt, _)| *attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3, 1]);
    assert_eq!(keys[0].1, keys[1].1);
    assert_eq!(keys[1].1, keys[2].1);
    assert_ne!(keys[2].1, keys[3].1, "a new step visit needs a new key");
    engine.shutdown().await;
}

async fn slow_first_attempt(ctx: strata::StepCtx, state: &mut u32) -> strata::StepResult<u32> {
    if ctx.attempt() == 1 {
        std::future::pending::<()>().await; // hangs, like a call that never answers
    }
    Ok(strata::Next::complete(*state + ctx.attempt()))
}

async fn an_attempt_that_exceeds_its_timeout_is_retried(backend: Backend) {
    let policy = strata::RetryPolicy::exponential(2, std::time::Duration::from_millis(5))
        .with_attempt_timeout(std::time::Duration::from_millis(50));
    let version = strata::WorkflowVersion::new("hangs", "1.0.0")
        .init(|value: u32| value)
        .step_with_retry("slow_first_attempt", slow_first_attempt, policy);
    let engine = backend.builder().register(version).open().await.unwrap();
    let id = engine.start("hangs", &10u32).await.unwrap();
    assert_eq!(outcome_within(&engine, id).await.output::<u32>().unwrap(), 12);
    let record = engine.instance(id).unwrap().record;
    assert_eq!(record.visits, 1);
    engine.shutdown().await;
}

async fn instances_are_listed_by_workflow_version_and_status(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
    let on_1_0 = engine
        .start_with(
            order::WORKFLOW,
            &small_order(1),
            strata::StartOptions::new().version("=1.0.0"),
        )
        .await
        .unwrap();
    let on_2_0 = engine.start(order::WORKFLOW, &small_order(2)).await.unwrap();
    let cancelled = engine.start(order::WORKFLOW, &small_order(3)).await.unwrap();
    engine.cancel(cancelled).await.unwrap();
    for id in [on_1_0, on_2_0] {
        wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    }
    let ids = |filter: strata::InstanceFilter| -> Vec<strata::InstanceId> {
        engine.list(&filter).unwrap().iter().map(|info| info.id()).collect()
    };
    let v1 = strata::Version::new(1, 0, 0);
    assert_eq!(
        ids(strata::InstanceFilter::workflow(order::WORKFLOW)),
        vec![on_1_0, on_2_0, cancelled]
    );
    assert_eq!(
        ids(strata::InstanceFilter::workflow(order::WORKFLOW).with_version(v1)),
        vec![on_1_0]
    );
    assert_eq!(
        ids(strata::InstanceFilter::default().with_status(InstanceStatus::WaitingSignal)),
        vec![on_1_0, on_2_0]
    );
    assert_eq!(
        ids(strata::InstanceFilter::default().with_status(InstanceStatus::Cancelled)),
        vec![cancelled]
    );
    assert!(ids(strata::InstanceFilter::workflow("onboarding")).is_empty());
    engine.shutdown().await;
}

async fn awaiting_an_outcome_ends_when_the_engine_shuts_down(backend: Backend) {
    let engine = backend.builder().register(order::v1_0()).open().await.unwrap();
    let id = engine.start(order::WORKFLOW, &small_order(1)).await.unwrap();
    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.outcome(id).await }
    });
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    engine.clone().shutdown().await;
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(strata::EngineError::ShuttingDown)), "{result:?}");
}

async fn hop(_ctx: strata::StepCtx, hops: &mut u32) -> strata::StepResult<u32> {
    *hops += 1;
    Ok(if *hops < 3 {
        strata::Next::goto("hop")
    } else {
        strata::Next::complete(*hops)
    })
}

async fn a_listing_shows_each_instance_once_while_instances_finish(backend: Backend) {
    let hopper = strata::WorkflowVersion::new("hopper", "1.0.0")
        .init(|hops: u32| hops)
        .step("hop", hop);
    let engine = backend
        .builder()
        .durability(strata::Durability::Buffered {
            interval: std::time::Duration::from_millis(5),
        })
        .register(hopper)
        .open()
        .await
        .unwrap();
    let total = 2_000;
    let starter = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for _ in 0..total {
                engine.start("hopper", &0u32).await.unwrap();
            }
        })
    };
    let (mut listings, mut seen_finishing) = (0, 0);
    loop {
        let listed = engine.list(&strata::InstanceFilter::default()).unwrap();
        listings += 1;
        let mut ids: Vec<_> = listed.iter().map(|info| info.record.id).collect();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(
            ids.len(),
            before,
            "listing {listings} shows {} instances twice",
            before - ids.len()
        );
        let finished = listed.iter().filter(|info| info.status.is_terminal()).count();
        if finished > 0 && finished < listed.len() {
            seen_finishing += 1;
        }
        if finished == total {
            break;
        }
        tokio::task::yield_now().await;
    }
    starter.await.unwrap();
    assert!(seen_finishing > 0, "no listing caught instances finishing");
    engine.shutdown().await;
}
