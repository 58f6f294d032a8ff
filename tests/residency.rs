//! Invariant 3 and residency: a drained version says so exactly when its last instance ends, a
//! version with live instances cannot be retired, and a store holding live instances of code that
//! is not registered is refused by name — or parked until the code comes back. The first three run
//! on sled and on PostgreSQL; the last two are about a store one process opens (on a shared store
//! such instances wait for a worker with their code: `tests/both_stores.rs`).

mod common;

use common::*;
use strata::registry::RegistryError;
use strata::{EngineError, Event, InstanceStatus, StartOptions, VersionStatus};
use strata_workflows::order::{self, OrderOutput};

on_sled_and_postgres!(
    a_version_is_drained_exactly_when_its_last_instance_ends,
    a_version_with_live_instances_cannot_be_retired,
    draining_an_idle_version_drains_it_at_once,
);

async fn a_version_is_drained_exactly_when_its_last_instance_ends(backend: Backend) {
    let engine = backend.builder().register(order::v1_0()).open().await.unwrap();
    let mut old = Vec::new();
    for n in 0..3 {
        let input = small_order(n);
        let id = engine.start(order::WORKFLOW, &input).await.unwrap();
        wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
        old.push((id, input));
    }
    engine.register(order::v2_0()).unwrap();
    let mut events = engine.subscribe();
    assert_eq!(
        engine.drain(order::WORKFLOW, "1.0.0").await.unwrap(),
        VersionStatus::Draining
    );
    let info = engine.version(order::WORKFLOW, "1.0.0").unwrap();
    assert_eq!(info.counters.live, 3);
    assert_eq!(info.oldest_live.map(|(id, _)| id), Some(old[0].0));
    assert!(!info.safe_to_remove());
    // A draining version takes no new instance, even when asked for by exact version.
    let refused = engine
        .start_with(order::WORKFLOW, &small_order(9), StartOptions::new().version("=1.0.0"))
        .await;
    assert!(
        matches!(
            refused,
            Err(EngineError::Registry(RegistryError::NoRoutableVersion { .. }))
        ),
        "{refused:?}"
    );
    let routed = engine.start(order::WORKFLOW, &small_order(10)).await.unwrap();
    assert_eq!(engine.instance(routed).unwrap().version().to_string(), "2.0.0");

    for (index, (id, input)) in old.iter().enumerate() {
        engine
            .signal(*id, order::PAYMENT_SIGNAL, &full_payment(input))
            .await
            .unwrap();
        let _: OrderOutput = outcome_within(&engine, *id).await.output().unwrap();
        let info = engine.version(order::WORKFLOW, "1.0.0").unwrap();
        let remaining = (old.len() - index - 1) as u64;
        assert_eq!(info.counters.live, remaining);
        if remaining > 0 {
            assert_eq!(info.status, VersionStatus::Draining, "drained with {remaining} live");
        }
    }
    let drained = wait_for_event(&mut events, |event| matches!(event, Event::VersionDrained { .. })).await;
    let Event::VersionDrained { key, counters } = drained else {
        unreachable!()
    };
    assert_eq!(key.to_string(), "order@1.0.0");
    assert_eq!((counters.live, counters.completed, counters.started), (0, 3, 3));
    let info = engine.version(order::WORKFLOW, "1.0.0").unwrap();
    assert_eq!(info.status, VersionStatus::Drained);
    assert!(info.safe_to_remove());
    assert_eq!(info.oldest_live, None);
    engine.retire(order::WORKFLOW, "1.0.0").await.unwrap();
    engine.shutdown().await;

    // Statuses survive a restart.
    let engine = backend
        .builder()
        .register(order::v1_0())
        .register(order::v2_0())
        .open()
        .await
        .unwrap();
    assert_eq!(
        engine.version(order::WORKFLOW, "1.0.0").unwrap().status,
        VersionStatus::Retired
    );
    let id = engine.start(order::WORKFLOW, &small_order(11)).await.unwrap();
    assert_eq!(engine.instance(id).unwrap().version().to_string(), "2.0.0");
    engine.shutdown().await;
}

async fn a_version_with_live_instances_cannot_be_retired(backend: Backend) {
    let engine = backend.builder().register(order::v1_0()).open().await.unwrap();
    let id = engine.start(order::WORKFLOW, &small_order(1)).await.unwrap();
    let error = engine.retire(order::WORKFLOW, "1.0.0").await.unwrap_err();
    assert!(
        matches!(
            &error,
            EngineError::Registry(RegistryError::LiveInstances { live: 1, .. })
        ),
        "unexpected: {error}"
    );
    assert!(
        error.to_string().contains("order@1.0.0 still has 1 live instance"),
        "{error}"
    );
    assert_eq!(
        engine.version(order::WORKFLOW, "1.0.0").unwrap().status,
        VersionStatus::Active
    );
    engine.cancel(id).await.unwrap();
    engine.retire(order::WORKFLOW, "1.0.0").await.unwrap();
    assert_eq!(
        engine.version(order::WORKFLOW, "1.0.0").unwrap().status,
        VersionStatus::Retired
    );
    engine.shutdown().await;
}

async fn draining_an_idle_version_drains_it_at_once(backend: Backend) {
    let engine = backend
        .builder()
        .register(order::v1_0())
        .register(order::v1_1())
        .open()
        .await
        .unwrap();
    assert_eq!(
        engine.drain(order::WORKFLOW, "1.0.0").await.unwrap(),
        VersionStatus::Drained
    );
    assert!(engine.version(order::WORKFLOW, "1.0.0").unwrap().safe_to_remove());
    engine.shutdown().await;
}

async fn store_with_two_waiting_v1_orders(dir: &std::path::Path) -> Vec<(strata::InstanceId, order::OrderInput)> {
    let engine = builder(dir).register(order::v1_0()).open().await.unwrap();
    let mut waiting = Vec::new();
    for n in 0..2 {
        let input = small_order(n);
        let id = engine.start(order::WORKFLOW, &input).await.unwrap();
        wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
        waiting.push((id, input));
    }
    engine.shutdown().await;
    waiting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_without_the_code_of_live_instances_fails_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    store_with_two_waiting_v1_orders(dir.path()).await;
    let Err(error) = builder(dir.path()).register(order::v2_0()).open().await else {
        panic!("opened although order@1.0.0 has live instances and is not registered");
    };
    let EngineError::MissingVersions { missing } = &error else {
        panic!("unexpected error: {error}")
    };
    assert_eq!(missing.len(), 1);
    assert_eq!((missing[0].0.to_string(), missing[0].1), ("order@1.0.0".to_string(), 2));
    assert!(error.to_string().contains("order@1.0.0 (2 live)"), "{error}");
    // Nothing was changed: with the code registered the store opens and the instances finish.
    let engine = builder(dir.path()).register(order::v1_0()).open().await.unwrap();
    assert_eq!(engine.version(order::WORKFLOW, "1.0.0").unwrap().counters.live, 2);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_instances_resume_when_their_code_is_registered() {
    let dir = tempfile::tempdir().unwrap();
    let waiting = store_with_two_waiting_v1_orders(dir.path()).await;
    let engine = builder(dir.path())
        .register(order::v2_0())
        .park_unregistered(true)
        .open()
        .await
        .unwrap();
    for (id, _) in &waiting {
        assert_eq!(engine.instance(*id).unwrap().status, InstanceStatus::Parked);
    }
    let info = engine.version(order::WORKFLOW, "1.0.0").unwrap();
    assert!(!info.registered);
    assert_eq!(info.counters.live, 2);
    assert!(!info.safe_to_remove());
    // A signal to a parked instance is kept for it.
    let (first, input) = &waiting[0];
    engine
        .signal(*first, order::PAYMENT_SIGNAL, &full_payment(input))
        .await
        .unwrap();
    let mut events = engine.subscribe();
    engine.register(order::v1_0()).unwrap();
    wait_for_event(&mut events, |event| {
        matches!(event, Event::InstancesResumed { count: 2, .. })
    })
    .await;
    let output: OrderOutput = outcome_within(&engine, *first).await.output().unwrap();
    assert_eq!(output.finished_on, "1.0.0");
    let (second, input) = &waiting[1];
    engine
        .signal(*second, order::PAYMENT_SIGNAL, &full_payment(input))
        .await
        .unwrap();
    let output: OrderOutput = outcome_within(&engine, *second).await.output().unwrap();
    assert_eq!(output.finished_on, "1.0.0");
    engine.shutdown().await;
}
