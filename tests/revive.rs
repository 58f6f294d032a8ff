//! Reviving ended instances (issue #23): failed instances taken up again on a version that fixes
//! their bug — at the step that failed or a mapped one, their state migrated along the chain —
//! after a dry run that says which would be taken up where and why others would not; cancelled
//! ones on their own version, which drained and is draining again until they finish. Counters
//! stay exact on both versions and the revival is in each instance's history.
//!
//! Every behaviour here runs on sled and on PostgreSQL.

mod common;

use common::*;
use strata::history::{HistoryEvent, ReviveStamp, WokenBy};
use strata::instance::{HistoryRequest, InstanceStatus};
use strata::migrate::{MoveRefusal, ReviveRefusal, ReviveRequest};
use strata::{
    Engine, Event, InstanceId, Next, StateMigration, StepCtx, StepError, StepResult, Version, VersionStatus,
    WorkflowVersion,
};

on_sled_and_postgres!(
    failed_instances_are_revived_on_a_fixed_version_after_a_dry_run_and_complete,
    a_cancelled_instance_revived_on_its_drained_version_makes_it_draining_until_it_ends,
    a_revived_instance_is_refused_a_second_revival_until_it_ends_again,
);

const WORKFLOW: &str = "shipment";

async fn reserve(_ctx: StepCtx, state: &mut u32) -> StepResult<u32> {
    *state += 100;
    Ok(Next::goto("charge"))
}

/// 1.0.0's bug: an order whose number is a multiple of 3 is declined.
async fn charge_with_bug(_ctx: StepCtx, state: &mut u32) -> StepResult<u32> {
    let order = *state - 100;
    if order % 3 == 0 {
        return Err(StepError::permanent(format!("card declined for order {order}")));
    }
    Ok(Next::complete(*state))
}

fn buggy() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(|order: u32| order)
        .step("reserve", reserve)
        .step("charge", charge_with_bug)
}

/// 2.0.0's state: the order and what was charged (schema 2).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Charged {
    order: u32,
    charged: u32,
}

async fn reserve_v2(_ctx: StepCtx, state: &mut Charged) -> StepResult<u32> {
    state.order += 100;
    Ok(Next::goto("bill"))
}

/// 2.0.0's fixed step, renamed from `charge`.
async fn bill(_ctx: StepCtx, state: &mut Charged) -> StepResult<u32> {
    state.charged = state.order;
    Ok(Next::complete(state.charged + 1_000))
}

fn fixed() -> WorkflowVersion<u32, Charged, u32> {
    WorkflowVersion::new(WORKFLOW, "2.0.0")
        .state_schema(2)
        .init(|order: u32| Charged { order, charged: 0 })
        .step("reserve", reserve_v2)
        .step("bill", bill)
}

fn to_charged() -> StateMigration {
    StateMigration::new(WORKFLOW, 1, 2, |order: u32| Ok(Charged { order, charged: 0 }))
}

/// Waits for `go`, then completes.
async fn wait(_ctx: StepCtx, _state: &mut u32) -> StepResult<u32> {
    Ok(Next::wait_signal("go", "finish"))
}

async fn finish(_ctx: StepCtx, state: &mut u32) -> StepResult<u32> {
    Ok(Next::complete(*state))
}

fn waiter() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new("waiter", "1.0.0")
        .init(|input: u32| input)
        .signal_type::<u32>("go")
        .step("wait", wait)
        .step("finish", finish)
}

fn version(text: &str) -> Version {
    Version::parse(text).unwrap()
}

fn revivals(engine: &Engine, id: InstanceId) -> Vec<ReviveStamp> {
    engine
        .history(id, &HistoryRequest::default())
        .unwrap()
        .entries
        .into_iter()
        .filter_map(|item| match item.entry {
            Ok(strata::history::HistoryEntry {
                event: HistoryEvent::Revived(stamp),
                ..
            }) => Some(stamp),
            _ => None,
        })
        .collect()
}

async fn failed_instances_are_revived_on_a_fixed_version_after_a_dry_run_and_complete(backend: Backend) {
    let engine = backend.builder().register(buggy()).open().await.unwrap();
    let mut ids = Vec::new();
    for order in 1..=6u32 {
        ids.push(engine.start(WORKFLOW, &order).await.unwrap());
    }
    let mut failed = Vec::new();
    for (order, id) in (1..=6u32).zip(&ids) {
        let outcome = outcome_within(&engine, *id).await;
        if order % 3 == 0 {
            assert_eq!(outcome.status(), InstanceStatus::Failed, "order {order}");
            failed.push(*id);
        } else {
            assert_eq!(outcome.status(), InstanceStatus::Completed, "order {order}");
        }
    }
    assert_eq!(failed.len(), 2);

    // The fix: 2.0.0 stores its state in schema 2 and calls the step `bill`.
    engine.register(fixed()).unwrap();
    engine.register_migrations(vec![to_charged()]).unwrap();
    let request = ReviveRequest::new(WORKFLOW)
        .on_version(version("2.0.0"))
        .reason_contains("card declined");
    let unmapped = engine.plan_revive(&request).unwrap();
    assert_eq!(unmapped.checks.iter().map(|check| check.id).collect::<Vec<_>>(), failed);
    for check in &unmapped.checks {
        assert!(
            matches!(&check.verdict, Err(ReviveRefusal::Step(MoveRefusal::NoCounterpartStep { step, .. })) if step == "charge"),
            "{check:?}"
        );
        assert!(check
            .failure
            .as_deref()
            .is_some_and(|reason| reason.contains("card declined")));
        assert_eq!((check.status, check.step.as_str()), (InstanceStatus::Failed, "charge"));
    }
    let request = request.map_step("charge", "bill").batch_size(1);
    let plan = engine.plan_revive(&request).unwrap();
    assert_eq!(plan.revivable().count(), 2, "{plan:?}");
    assert!(plan
        .checks
        .iter()
        .all(|check| check.verdict.as_deref() == Ok("bill") && check.target.version == version("2.0.0")));
    // The dry run changed nothing.
    assert_eq!(engine.instance(failed[0]).unwrap().status, InstanceStatus::Failed);

    // Chosen by id, a completed instance is refused with why.
    let by_id = ReviveRequest::new(WORKFLOW).ids([ids[0]]);
    let check = &engine.plan_revive(&by_id).unwrap().checks[0];
    assert_eq!(
        check.verdict,
        Err(ReviveRefusal::NotEnded {
            status: InstanceStatus::Completed
        })
    );
    let unknown = engine.plan_revive(&ReviveRequest::new(WORKFLOW).on_version(version("9.9.9")));
    assert!(unknown.is_err(), "an unregistered target is an error, not a plan");

    let mut events = engine.subscribe();
    let report = engine.revive(&request).await.unwrap();
    assert_eq!(report.revived, failed);
    assert!(report.refused.is_empty() && report.undrained.is_empty(), "{report:?}");
    let revived = wait_for_event(&mut events, |event| matches!(event, Event::InstancesRevived { .. })).await;
    assert!(
        matches!(revived, Event::InstancesRevived { count: 1, .. }),
        "one commit per batch of 1"
    );
    for (id, order) in failed.iter().zip([3u32, 6]) {
        let outcome = outcome_within(&engine, *id).await;
        assert_eq!(outcome.status(), InstanceStatus::Completed);
        assert_eq!(
            outcome.output::<u32>().unwrap(),
            order + 100 + 1_000,
            "the state came along, migrated, and the fixed step ran"
        );
        let info = engine.instance(*id).unwrap();
        assert_eq!(info.record.key.version, version("2.0.0"));
        let stamps = revivals(&engine, *id);
        assert_eq!(stamps.len(), 1);
        assert_eq!(
            (
                stamps[0].from.clone(),
                stamps[0].to.clone(),
                stamps[0].from_step.as_str(),
                stamps[0].to_step.as_str()
            ),
            (version("1.0.0"), version("2.0.0"), "charge", "bill")
        );
        assert_eq!((stamps[0].from_schema, stamps[0].to_schema), (1, 2));
        assert!(stamps[0]
            .failure
            .as_deref()
            .is_some_and(|reason| reason.contains("card declined")));
        let woken: Vec<(String, WokenBy)> = engine
            .history(*id, &HistoryRequest::default())
            .unwrap()
            .entries
            .into_iter()
            .filter_map(|item| match item.entry {
                Ok(strata::history::HistoryEntry {
                    event: HistoryEvent::Step(step),
                    ..
                }) => Some((step.step, step.woken_by)),
                _ => None,
            })
            .collect();
        assert_eq!(
            woken,
            [
                ("reserve".to_string(), WokenBy::Start),
                ("charge".to_string(), WokenBy::Previous),
                ("bill".to_string(), WokenBy::Revival)
            ],
            "the fixed step says the revival woke it"
        );
    }
    // Both versions' counters are exact: the old keeps its failures, the fix counts the revived.
    let old = engine.version(WORKFLOW, "1.0.0").unwrap().counters;
    let new = engine.version(WORKFLOW, "2.0.0").unwrap().counters;
    assert_eq!((old.started, old.completed, old.failed, old.live), (6, 4, 2, 0));
    assert_eq!((new.started, new.revived, new.completed, new.live), (0, 2, 2, 0));
    assert!(
        engine.plan_revive(&request).unwrap().checks.is_empty(),
        "nothing left to revive"
    );

    // The same after a restart: the store kept it all.
    engine.shutdown().await;
    let engine = backend
        .builder()
        .register(buggy())
        .register(fixed())
        .migration(to_charged())
        .open()
        .await
        .unwrap();
    assert_eq!(engine.version(WORKFLOW, "2.0.0").unwrap().counters.revived, 2);
    assert_eq!(revivals(&engine, failed[1]).len(), 1);
    assert_eq!(engine.instance(failed[1]).unwrap().status, InstanceStatus::Completed);
}

async fn a_cancelled_instance_revived_on_its_drained_version_makes_it_draining_until_it_ends(backend: Backend) {
    let engine = backend.builder().register(waiter()).open().await.unwrap();
    let id = engine.start("waiter", &7u32).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    engine.cancel(id).await.unwrap();
    let mut events = engine.subscribe();
    assert_eq!(engine.drain("waiter", "1.0.0").await.unwrap(), VersionStatus::Drained);

    let request = ReviveRequest::new("waiter").with_status(InstanceStatus::Cancelled);
    let plan = engine.plan_revive(&request).unwrap();
    assert_eq!(plan.checks.len(), 1);
    assert_eq!(plan.checks[0].verdict.as_deref(), Ok("finish"), "{plan:?}");
    let failed_only = ReviveRequest::new("waiter").with_status(InstanceStatus::Failed);
    assert!(engine.plan_revive(&failed_only).unwrap().checks.is_empty());

    let report = engine.revive(&request).await.unwrap();
    assert_eq!(report.revived, [id]);
    let key = strata::VersionKey::new("waiter", version("1.0.0"));
    assert_eq!(
        report.undrained,
        std::slice::from_ref(&key),
        "the report says the drain was undone"
    );
    let undrained = wait_for_event(&mut events, |event| matches!(event, Event::VersionUndrained { .. })).await;
    assert!(matches!(&undrained, Event::VersionUndrained { key: undone, .. } if *undone == key));
    // It runs to its end on its own version, and the version drains again, announced again.
    assert_eq!(outcome_within(&engine, id).await.output::<u32>().unwrap(), 7);
    let drained = wait_for_event(&mut events, |event| matches!(event, Event::VersionDrained { .. })).await;
    assert!(matches!(&drained, Event::VersionDrained { key: done, .. } if *done == key));
    let info = engine.version("waiter", "1.0.0").unwrap();
    assert_eq!(info.status, VersionStatus::Drained);
    assert_eq!(
        (
            info.counters.started,
            info.counters.cancelled,
            info.counters.revived,
            info.counters.completed
        ),
        (1, 1, 1, 1)
    );
    let stamps = revivals(&engine, id);
    assert_eq!(stamps.len(), 1);
    assert_eq!(
        (stamps[0].failure.clone(), stamps[0].to_step.as_str()),
        (None, "finish")
    );
}

async fn a_revived_instance_is_refused_a_second_revival_until_it_ends_again(backend: Backend) {
    let engine = backend.builder().register(waiter()).open().await.unwrap();
    let id = engine.start("waiter", &5u32).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    engine.cancel(id).await.unwrap();
    // Taken up at `wait` (not `finish`, where it was cancelled), so it waits for `go` again.
    let request = ReviveRequest::new("waiter").ids([id]).map_step("finish", "wait");
    assert_eq!(engine.revive(&request).await.unwrap().revived, [id]);
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    let again = engine.revive(&request).await.unwrap();
    assert!(again.revived.is_empty(), "{again:?}");
    assert_eq!(
        again.refused[0].verdict,
        Err(ReviveRefusal::NotEnded {
            status: InstanceStatus::WaitingSignal
        })
    );
    engine.signal(id, "go", &1u32).await.unwrap();
    assert_eq!(outcome_within(&engine, id).await.output::<u32>().unwrap(), 5);
    let counters = engine.version("waiter", "1.0.0").unwrap().counters;
    assert_eq!(
        (counters.cancelled, counters.revived, counters.completed, counters.live),
        (1, 1, 1, 0)
    );
    assert_eq!(revivals(&engine, id).len(), 1);
}
