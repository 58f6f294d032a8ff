//! Invariant 1: an instance runs steps only of the version it started on — after a newer version
//! is registered while it runs, and after a restart with more versions registered. New instances
//! get the newest version, or the one the caller asks for. On sled and on PostgreSQL alike.

mod common;

use common::*;
use strata::{InstanceStatus, StartOptions};
use strata_workflows::order::{self, OrderOutput, OrderState, OrderStateV2};

on_sled_and_postgres!(
    running_instances_stay_on_their_version_when_a_new_one_is_registered,
    instances_stay_on_their_version_across_a_restart_with_new_versions,
    a_caller_can_ask_for_a_version_by_requirement,
);

async fn running_instances_stay_on_their_version_when_a_new_one_is_registered(backend: Backend) {
    let engine = backend.builder().register(order::v1_0()).open().await.unwrap();
    let mut old = Vec::new();
    for n in 0..5 {
        let input = small_order(n);
        old.push((engine.start(order::WORKFLOW, &input).await.unwrap(), input));
    }
    for (id, _) in &old {
        wait_for_status(&engine, *id, InstanceStatus::WaitingSignal).await;
    }
    engine.register(order::v2_0()).unwrap();
    let input = small_order(100);
    let new = engine.start(order::WORKFLOW, &input).await.unwrap();
    assert_eq!(engine.instance(new).unwrap().version().to_string(), "2.0.0");
    engine
        .signal(new, order::PAYMENT_SIGNAL, &full_payment(&input))
        .await
        .unwrap();
    for (id, input) in &old {
        engine
            .signal(*id, order::PAYMENT_SIGNAL, &full_payment(input))
            .await
            .unwrap();
    }
    for (id, _) in &old {
        let output: OrderOutput = outcome_within(&engine, *id).await.output().unwrap();
        assert_eq!(output.finished_on, "1.0.0");
        let state: OrderState = engine.instance(*id).unwrap().state().unwrap();
        assert_eq!(
            state.history,
            order::expected_history("1.0.0"),
            "instance {id} ran a step of another version"
        );
    }
    let output: OrderOutput = outcome_within(&engine, new).await.output().unwrap();
    assert_eq!(output.finished_on, "2.0.0");
    let state: OrderStateV2 = engine.instance(new).unwrap().state().unwrap();
    assert_eq!(state.order.history, order::expected_history("2.0.0"));
    engine.shutdown().await;
}

async fn instances_stay_on_their_version_across_a_restart_with_new_versions(backend: Backend) {
    let engine = backend.builder().register(order::v1_0()).open().await.unwrap();
    let mut old = Vec::new();
    for n in 0..4 {
        let input = small_order(n);
        let id = engine.start(order::WORKFLOW, &input).await.unwrap();
        wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
        old.push((id, input));
    }
    engine.shutdown().await;

    let engine = with_all(backend.builder()).open().await.unwrap();
    for (id, input) in &old {
        assert_eq!(engine.instance(*id).unwrap().version().to_string(), "1.0.0");
        engine
            .signal(*id, order::PAYMENT_SIGNAL, &full_payment(input))
            .await
            .unwrap();
    }
    let input = small_order(50);
    let new = engine.start(order::WORKFLOW, &input).await.unwrap();
    engine
        .signal(new, order::PAYMENT_SIGNAL, &full_payment(&input))
        .await
        .unwrap();
    for (id, _) in &old {
        let output: OrderOutput = outcome_within(&engine, *id).await.output().unwrap();
        assert_eq!(output.finished_on, "1.0.0");
        assert!(!output.customer_notified, "a 1.1.0 step ran on a 1.0.0 instance");
        let state: OrderState = engine.instance(*id).unwrap().state().unwrap();
        assert_eq!(state.history, order::expected_history("1.0.0"));
    }
    let output: OrderOutput = outcome_within(&engine, new).await.output().unwrap();
    assert_eq!(output.finished_on, "2.0.0");
    engine.shutdown().await;
}

async fn a_caller_can_ask_for_a_version_by_requirement(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
    let start = |requirement: &'static str| {
        let engine = engine.clone();
        async move {
            let id = engine
                .start_with(
                    order::WORKFLOW,
                    &small_order(1),
                    StartOptions::new().version(requirement),
                )
                .await
                .unwrap();
            engine.instance(id).unwrap().version().to_string()
        }
    };
    assert_eq!(start("^1").await, "1.1.0");
    assert_eq!(start("=1.0.0").await, "1.0.0");
    assert_eq!(start(">=1.1, <3").await, "2.0.0");
    let input = small_order(7);
    let id = engine
        .start_with(order::WORKFLOW, &input, StartOptions::new().version("~1.1"))
        .await
        .unwrap();
    engine
        .signal(id, order::PAYMENT_SIGNAL, &full_payment(&input))
        .await
        .unwrap();
    let output: OrderOutput = outcome_within(&engine, id).await.output().unwrap();
    assert_eq!(output.finished_on, "1.1.0");
    assert!(output.customer_notified, "1.1.0's additive step ran");
    engine.shutdown().await;
}
