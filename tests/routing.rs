//! Invariants 4 and 7 through the engine: new instances follow the routing rules — sticky,
//! percentage-based, behind flags — only to versions that can take them; a kill switch or a
//! drained candidate stops new instances reaching a version from the next start on, while its
//! in-flight instances keep running.

mod common;

use common::*;
use strata::routing::{bucket, Flag, RolloutRule, RoutingError, RoutingSpec, Segment, WorkflowRouting};
use strata::{EngineError, InstanceStatus, StartOptions, Version};
use strata_workflows::order::{self, OrderOutput};

fn rollout(basis_points: u16, flag: Option<Flag>) -> RoutingSpec {
    let rule = RolloutRule {
        candidate: Version::new(2, 0, 0),
        basis_points,
        flag: flag.as_ref().map(|flag| flag.name.clone()),
        segments: Vec::new(),
    };
    let routing = WorkflowRouting {
        default: Some("^1".parse().unwrap()),
        rollouts: vec![rule],
    };
    RoutingSpec {
        flags: flag.into_iter().map(|flag| (flag.name.clone(), flag)).collect(),
        workflows: [(order::WORKFLOW.to_string(), routing)].into_iter().collect(),
    }
}

async fn version_for(engine: &strata::Engine, key: &str) -> String {
    let id = engine
        .start_with(order::WORKFLOW, &small_order(1), StartOptions::new().routing_key(key))
        .await
        .unwrap();
    engine.instance(id).unwrap().version().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percentage_rollout_routes_each_key_by_its_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder_with_all(dir.path()).open().await.unwrap();
    engine.set_routing(rollout(3_000, None)).unwrap();
    for customer in 0..120 {
        let key = format!("customer-{customer}");
        let expected = if bucket(order::WORKFLOW, &key) < 3_000 {
            "2.0.0"
        } else {
            "1.1.0"
        };
        assert_eq!(version_for(&engine, &key).await, expected, "{key}");
        assert_eq!(version_for(&engine, &key).await, expected, "{key} is not sticky");
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_new_instances_at_the_next_start_and_spares_running_ones() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder_with_all(dir.path()).open().await.unwrap();
    let flag = |enabled| Flag {
        name: "payment-first".into(),
        enabled,
        segments: Vec::new(),
    };
    engine.set_routing(rollout(10_000, Some(flag(true)))).unwrap();
    let input = small_order(1);
    let running = engine.start(order::WORKFLOW, &input).await.unwrap();
    assert_eq!(engine.instance(running).unwrap().version().to_string(), "2.0.0");
    wait_for_status(&engine, running, InstanceStatus::WaitingSignal).await;

    engine.set_routing(rollout(10_000, Some(flag(false)))).unwrap();
    for customer in 0..20 {
        assert_eq!(version_for(&engine, &format!("customer-{customer}")).await, "1.1.0");
    }
    engine
        .signal(running, order::PAYMENT_SIGNAL, &full_payment(&input))
        .await
        .unwrap();
    let output: OrderOutput = outcome_within(&engine, running).await.output().unwrap();
    assert_eq!(output.finished_on, "2.0.0", "the in-flight instance kept its version");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_pick_whom_a_flag_is_on_for() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder_with_all(dir.path()).open().await.unwrap();
    let acme = Segment {
        attribute: "tenant".into(),
        values: vec!["acme".into()],
    };
    let flag = Flag {
        name: "payment-first".into(),
        enabled: true,
        segments: vec![acme],
    };
    engine.set_routing(rollout(10_000, Some(flag))).unwrap();
    let start = |tenant: &'static str| {
        let engine = engine.clone();
        async move {
            let options = StartOptions::new().attribute("tenant", tenant);
            let id = engine
                .start_with(order::WORKFLOW, &small_order(1), options)
                .await
                .unwrap();
            engine.instance(id).unwrap().version().to_string()
        }
    };
    assert_eq!(start("acme").await, "2.0.0");
    assert_eq!(start("globex").await, "1.1.0");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rules_change_nothing_and_a_drained_candidate_is_never_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder_with_all(dir.path()).open().await.unwrap();
    engine.set_routing(rollout(10_000, None)).unwrap();
    assert_eq!(version_for(&engine, "k").await, "2.0.0");
    let error = engine.set_routing(rollout(10_001, None)).unwrap_err();
    assert!(
        matches!(error, EngineError::Routing(RoutingError::PercentOutOfRange { .. })),
        "{error}"
    );
    assert_eq!(version_for(&engine, "k").await, "2.0.0", "the rules in force changed");

    engine.drain(order::WORKFLOW, "2.0.0").await.unwrap();
    assert_eq!(
        version_for(&engine, "k").await,
        "1.1.0",
        "a draining candidate was chosen"
    );
    let error = engine.set_routing(rollout(10_000, None)).unwrap_err();
    assert!(
        matches!(error, EngineError::Routing(RoutingError::CandidateNotActive { .. })),
        "{error}"
    );
    engine.shutdown().await;
}
