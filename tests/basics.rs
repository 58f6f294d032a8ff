//! An order runs through every step of its version, with a signal, a durable sleep and a retry.

mod common;

use common::*;
use strata::{InstanceStatus, Outcome};
use strata_workflows::order::{self, Line, OrderOutput, OrderState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_completes_through_signal_sleep_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder(dir.path()).register(order::v1_0()).open().await.unwrap();
    let mut input = small_order(1);
    input.lines.push(Line {
        sku: "flaky-lamp".into(),
        quantity: 1,
        unit_price_cents: 999,
    });
    let id = engine.start(order::WORKFLOW, &input).await.unwrap();
    wait_until(&engine, |engine| {
        engine.instance(id).unwrap().status == InstanceStatus::WaitingSignal
    })
    .await;
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
