//! Invariants 4 and 7 through the engine: new instances follow the routing rules — sticky,
//! percentage-based, behind flags — only to versions that can take them; a kill switch or a
//! drained candidate stops new instances reaching a version from the next start on, while its
//! in-flight instances keep running.
//!
//! The behaviours listed in `on_sled_and_postgres!` run on sled and on PostgreSQL; the rest
//! need no store, or open the embedded store's directory themselves.

mod common;

use common::*;
use strata::routing::{bucket, Flag, RolloutRule, RouteReason, RoutingError, RoutingSpec, Segment, WorkflowRouting};
use strata::{EngineError, InstanceStatus, StartOptions, Version};
use strata_workflows::order::{self, OrderOutput};

on_sled_and_postgres!(
    a_percentage_rollout_routes_each_key_by_its_bucket,
    the_kill_switch_stops_new_instances_at_the_next_start_and_spares_running_ones,
    segments_pick_whom_a_flag_is_on_for,
    invalid_rules_change_nothing_and_a_drained_candidate_is_never_chosen,
    a_rollout_in_the_config_file_starts_once_and_routes_its_share,
    each_invalid_config_is_refused_with_its_own_message_and_routing_goes_on,
    the_shipped_example_config_applies,
    applying_a_config_is_announced_and_so_is_a_rejection,
    every_applied_config_is_kept_and_any_can_be_restored_also_after_a_restart,
);

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

async fn a_percentage_rollout_routes_each_key_by_its_bucket(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
    engine.set_routing(rollout(3_000, None)).unwrap();
    let mut in_rollout = 0;
    for customer in 0..120 {
        let key = format!("customer-{customer}");
        let expected = if bucket(order::WORKFLOW, &key) < 3_000 {
            "2.0.0"
        } else {
            "1.1.0"
        };
        in_rollout += u64::from(expected == "2.0.0");
        assert_eq!(version_for(&engine, &key).await, expected, "{key}");
        assert_eq!(version_for(&engine, &key).await, expected, "{key} is not sticky");
    }
    engine
        .start_with(order::WORKFLOW, &small_order(1), StartOptions::new().version("=1.0.0"))
        .await
        .unwrap();
    let counts: Vec<(String, RouteReason, u64)> = engine
        .routing_counts()
        .into_iter()
        .map(|(key, reason, count)| (key.to_string(), reason, count))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("order@1.0.0".to_string(), RouteReason::Requested, 1),
            ("order@1.1.0".to_string(), RouteReason::Default, 2 * (120 - in_rollout)),
            (
                "order@2.0.0".to_string(),
                RouteReason::Rollout { rule: 0 },
                2 * in_rollout
            ),
        ]
    );
    engine.shutdown().await;
}

async fn the_kill_switch_stops_new_instances_at_the_next_start_and_spares_running_ones(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
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

async fn segments_pick_whom_a_flag_is_on_for(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
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

async fn invalid_rules_change_nothing_and_a_drained_candidate_is_never_chosen(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
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

/// A `[[rollouts]]` entry for order with `stages`, `hold` and extra lines (a consecutive-failures
/// gate where they give no `[rollouts.gates]`).
fn watched(candidate: &str, stages: &str, hold: &str, extra: &str) -> String {
    let gates = if extra.contains("[rollouts.gates]") {
        ""
    } else {
        "[rollouts.gates]\nmax_consecutive_failures = 5\n"
    };
    format!(
        "[[rollouts]]\nworkflow = \"order\"\ncandidate = \"{candidate}\"\nstable = \"1.0.0\"\nstages = {stages}\nhold = \"{hold}\"\nmin_finished = 20\n{extra}{gates}"
    )
}

/// The same entry without any gate.
fn unwatched(extra: &str) -> String {
    format!(
        "[[rollouts]]\nworkflow = \"order\"\ncandidate = \"2.0.0\"\nstable = \"1.0.0\"\nstages = [5, 100]\nhold = \"10m\"\nmin_finished = 20\n{extra}"
    )
}

async fn a_rollout_in_the_config_file_starts_once_and_routes_its_share(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
    let text = watched(
        "2.0.0",
        "[100]",
        "1h",
        "on_rollback = \"move_back\"\n[rollouts.gates]\nmax_error_rate_increase = 0.05\n",
    );
    engine.apply_config("strata.toml", &text).await.unwrap();
    let record = engine.rollout("order@2.0.0").expect("the config started the rollout");
    assert_eq!(record.spec.stages[0].hold_ms, 3_600_000);
    assert_eq!(record.spec.gates.max_error_rate_increase, Some(0.05));
    assert_eq!(record.spec.on_rollback, strata::OnRollback::MoveBack);
    assert_eq!(
        version_for(&engine, "anyone").await,
        "2.0.0",
        "stage 0 gives the candidate 100 %"
    );
    // Applying the same rollout again (or an edit elsewhere) does not restart it.
    engine.rollback_rollout("order@2.0.0").await.unwrap();
    engine
        .apply_config("strata.toml", &format!("{text}\n# edited\n"))
        .await
        .unwrap();
    let again = engine.rollout("order@2.0.0").unwrap();
    assert_eq!(again.status, strata::rollout::RolloutStatus::RolledBack);
    assert_eq!(
        version_for(&engine, "anyone").await,
        "1.0.0",
        "rolled back: the stable version"
    );
    engine.shutdown().await;
}

const VALID: &str = r#"
[flags.payment-first]
enabled = true

[workflows.order]
default = "=1.0.0"

[[workflows.order.rollouts]]
candidate = "2.0.0"
percent = 0
flag = "payment-first"
"#;

async fn each_invalid_config_is_refused_with_its_own_message_and_routing_goes_on(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
    engine.drain(order::WORKFLOW, "1.1.0").await.unwrap();
    engine.apply_config("strata.toml", VALID).await.unwrap();
    let rule = |candidate: &str, percent: &str, flag: &str| {
        format!("[workflows.order]\ndefault = \"=1.0.0\"\n[[workflows.order.rollouts]]\ncandidate = \"{candidate}\"\npercent = {percent}\n{flag}")
    };
    let cases = [
        ("[workflows.order\n".to_string(), "TOML parse error at line 1"),
        (
            "[workflows.invoice]\ndefault = \"^1\"\n".to_string(),
            "workflows.invoice: no version of workflow 'invoice' is registered",
        ),
        (
            rule("3.0.0", "5", ""),
            "workflows.order.rollouts[0].candidate: version 3.0.0 is not registered",
        ),
        (
            "[workflows.order]\ndefault = \"^4\"\n".to_string(),
            "workflows.order.default: no registered, active version matches '^4'",
        ),
        (
            rule("2.0.0", "120", ""),
            "workflows.order.rollouts[0].percent: 120 is not a percentage",
        ),
        (
            rule("2.0.0", "5", "flag = \"nope\""),
            "workflows.order.rollouts[0].flag: flag 'nope' is not defined",
        ),
        (
            rule("1.1.0", "5", ""),
            "workflows.order.rollouts[0].candidate: version 1.1.0 is not active",
        ),
        (
            "[[schedules]]\nname = \"n\"\nworkflow = \"ledger\"\ncron = \"* * 99 * *\"\n".to_string(),
            "schedules[0].cron: '* * 99 * *' is not a valid cron expression",
        ),
        (
            "[workflows.order]\ncanary = true\n".to_string(),
            "unknown field `canary`",
        ),
        (
            watched("3.0.0", "[5, 100]", "10m", ""),
            "rollouts[0].candidate: order@3.0.0 is not registered",
        ),
        (
            watched("2.0.0", "[50, 10]", "10m", ""),
            "rollouts[0].stages[1]: rollout 'order@2.0.0': stages[1] = 10 %: shares must rise",
        ),
        (
            watched("2.0.0", "[5, 150]", "10m", ""),
            "rollouts[0].stages[1]: 150 is not a percentage",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "[rollouts.gates]\nmax_latency_multiplier = nan\n"),
            "rollouts[0].gates.max_latency_multiplier: rollout 'order@2.0.0': gates.max_latency_multiplier = NaN is out of range",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "[rollouts.gates]\nmax_error_rate_increase = -inf\n"),
            "rollouts[0].gates.max_error_rate_increase: rollout 'order@2.0.0': gates.max_error_rate_increase = -inf",
        ),
        (
            watched("2.0.0", "[5, 100]", "ten minutes", ""),
            "rollouts[0].hold: 'ten minutes' is not a duration",
        ),
        (
            unwatched(""),
            "rollouts[0].gates: rollout 'order@2.0.0' has no gate, so it would watch nothing",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "[rollouts.gates]\nmax_error_rate_increase = 0.01\nmin_sucess_rate = 0.99\n"),
            "unknown field `min_sucess_rate`, expected one of `max_error_rate_increase`, `max_latency_multiplier`, `min_success_rate`, `max_consecutive_failures`, `max_shadow_mismatch`, `measures` (did you mean `min_success_rate`?)",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "on_rolback = \"move_back\"\n"),
            "(did you mean `on_rollback`?)",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "[rollouts.gates]\nmax_shadow_mismatch = 0.1\n"),
            "rollouts[0].gates.max_shadow_mismatch: rollout 'order@2.0.0': gates.max_shadow_mismatch = 0.1 is out of range: it must be set only with a shadow stage",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "shadow_stages = [10, 150]\n"),
            "rollouts[0].shadow_stages[1]: 150 is not a percentage",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "[[rollouts.gates.measures]]\nmeasure = \"cost\"\n"),
            "rollouts[0].gates.measures[0].max_increase: rollout 'order@2.0.0': gates.measures[0] ('cost'): set at least one bound: max_increase, min or max",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "[[rollouts.gates.measures]]\nmeasure = \"cost\"\nmax_incrase = 0.2\n"),
            "unknown field `max_incrase`, expected one of `measure`, `max_increase`, `min`, `max`, `min_sample` (did you mean `max_increase`?)",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "[[rollouts.gates.measures]]\nmeasure = \"cost\"\nmin = 1.0\nmin_sample = 0\n"),
            "rollouts[0].gates.measures[0].min_sample: rollout 'order@2.0.0': gates.measures[0] ('cost'): min_sample = 0",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "[[rollouts.gates.measures]]\nmeasure = \"cost\"\nmax_increase = 0.2\n"),
            "rollouts[0].gates.measures[0].measure: rollout 'order@2.0.0': gates.measures[0] ('cost'): the candidate 2.0.0 declares no measure 'cost' (it declares: none)",
        ),
        (
            watched("2.0.0", "[5, 100]", "10m", "[rollouts.gates]\nmin_success_rate = 2.0\n"),
            "rollouts[0].gates.min_success_rate: rollout 'order@2.0.0': gates.min_success_rate = 2 is out of range: it must be a number from 0 to 1",
        ),
    ];
    let mut messages = std::collections::HashSet::new();
    for (text, expected) in &cases {
        let error = engine.apply_config("strata.toml", text).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, EngineError::Config(_)), "{message}");
        assert!(message.starts_with("strata.toml: "), "{message}");
        assert!(message.contains(expected), "'{message}' does not say '{expected}'");
        assert!(messages.insert(message), "two cases gave the same message");
        // The config in force (default =1.0.0, candidate at 0 %) still decides.
        assert_eq!(version_for(&engine, "customer-7").await, "1.0.0");
    }
    engine.shutdown().await;
}

async fn the_shipped_example_config_applies(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/strata.example.toml");
    engine.apply_config_file(example).await.unwrap();
    let start = |tenant: &'static str, region: &'static str| {
        let engine = engine.clone();
        async move {
            let options = StartOptions::new()
                .routing_key("k")
                .attribute("tenant", tenant)
                .attribute("region", region);
            let id = engine
                .start_with(order::WORKFLOW, &small_order(1), options)
                .await
                .unwrap();
            engine.instance(id).unwrap().version().to_string()
        }
    };
    let in_rollout = bucket(order::WORKFLOW, "k") < 1_250;
    assert_eq!(start("acme", "eu").await, if in_rollout { "2.0.0" } else { "1.1.0" });
    assert_eq!(start("initech", "eu").await, "1.1.0");
    engine.shutdown().await;
}

async fn applying_a_config_is_announced_and_so_is_a_rejection(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
    let mut events = engine.subscribe();
    engine.apply_config("strata.toml", VALID).await.unwrap();
    let applied = wait_for_event(&mut events, |event| {
        matches!(event, strata::Event::ConfigApplied { .. })
    })
    .await;
    assert_eq!(
        applied,
        strata::Event::ConfigApplied {
            source: "strata.toml".into(),
            generation: 1,
            changes: vec![
                "flag 'payment-first': undefined -> on".to_string(),
                "order: default newest active -> =1.0.0".to_string(),
                "order: rollouts none -> 0 % to 2.0.0 behind flag 'payment-first'".to_string(),
            ],
        }
    );
    engine
        .apply_config("strata.toml", "[flags.x]\nenabled = maybe\n")
        .await
        .unwrap_err();
    let rejected = wait_for_event(&mut events, |event| {
        matches!(event, strata::Event::ConfigRejected { .. })
    })
    .await;
    let strata::Event::ConfigRejected { reason, .. } = rejected else {
        unreachable!()
    };
    assert!(reason.starts_with("strata.toml: "), "{reason}");
    engine.shutdown().await;
}

const HASH_CHILD: &str = "STRATA_HASH_CHILD";

fn sample_keys() -> Vec<String> {
    (0..200)
        .map(|index| format!("customer-{index}"))
        .chain(["", "ü-ñ", "a\0b"].map(String::from))
        .collect()
}

/// The child: prints the bucket of every sample key. Run by the parent test as its own process.
#[test]
#[ignore = "entry point of the child process of a_key_has_the_same_bucket_in_another_process"]
fn hash_child() {
    if std::env::var(HASH_CHILD).is_err() {
        return;
    }
    for key in sample_keys() {
        println!("BUCKET {}", bucket(order::WORKFLOW, &key));
    }
}

#[test]
fn a_key_has_the_same_bucket_in_another_process() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(HASH_CHILD, "1")
        .output()
        .unwrap();
    assert!(output.status.success());
    let child: Vec<u16> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            line.split("BUCKET ")
                .nth(1)
                .and_then(|bucket| bucket.trim().parse().ok())
        })
        .collect();
    let here: Vec<u16> = sample_keys().iter().map(|key| bucket(order::WORKFLOW, key)).collect();
    assert_eq!(child, here);
}

async fn every_applied_config_is_kept_and_any_can_be_restored_also_after_a_restart(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
    let all_to = |version: &str| format!("[workflows.order]\ndefault = \"={version}\"\n");
    assert_eq!(engine.apply_config("first.toml", &all_to("1.0.0")).await.unwrap(), 1);
    assert_eq!(engine.apply_config("second.toml", &all_to("2.0.0")).await.unwrap(), 2);
    assert_eq!(
        engine.apply_config("second.toml", &all_to("2.0.0")).await.unwrap(),
        2,
        "unchanged text, same generation"
    );
    engine
        .apply_config("broken.toml", "[workflows.order]\ndefault = \"^7\"\n")
        .await
        .unwrap_err();
    let history = engine.config_history().unwrap();
    let generations: Vec<(u64, &str)> = history
        .iter()
        .map(|config| (config.generation, config.source.as_str()))
        .collect();
    assert_eq!(
        generations,
        vec![(1, "first.toml"), (2, "second.toml")],
        "a rejected config is not in the history"
    );
    assert_eq!(version_for(&engine, "k").await, "2.0.0");

    let mut events = engine.subscribe();
    assert_eq!(engine.restore_config(1).await.unwrap(), 3);
    let restored = wait_for_event(&mut events, |event| {
        matches!(event, strata::Event::ConfigRestored { .. })
    })
    .await;
    assert_eq!(
        restored,
        strata::Event::ConfigRestored {
            restored: 1,
            generation: 3
        }
    );
    assert_eq!(version_for(&engine, "k").await, "1.0.0");
    let error = engine.restore_config(9).await.unwrap_err();
    assert!(error.to_string().contains("no config of generation 9"), "{error}");
    engine.shutdown().await;

    // The last applied config is in force again after a restart, without a config file.
    let engine = with_all(backend.builder()).open().await.unwrap();
    assert_eq!(version_for(&engine, "k").await, "1.0.0");
    assert_eq!(engine.config_history().unwrap().len(), 3);
    engine.shutdown().await;
}
