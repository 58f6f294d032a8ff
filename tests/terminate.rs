//! Terminating instances (issue #23): an operator force-ends a live instance without running
//! another of its steps. A step running now is abandoned — its future dropped, nothing of it
//! committed — and the instance ends cancelled at its last committed step, counted as cancelled,
//! with the reason and the abandoned step in its history; a revival on a fixed version takes it
//! up again there. An instance another worker holds is terminated through the store.
//!
//! Every behaviour here runs on sled and on PostgreSQL; the one about another worker needs a
//! store two processes share, so it runs on PostgreSQL.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::LazyLock;

use common::*;
use parking_lot::Mutex;
use strata::history::{HistoryEntry, HistoryEvent};
use strata::instance::{HistoryRequest, InstanceStatus};
use strata::migrate::ReviveRequest;
use strata::{Engine, EngineError, Event, InstanceId, Next, StepCtx, StepResult, Version, WorkflowVersion};
use tokio::sync::oneshot;

on_sled_and_postgres!(
    a_terminated_instance_abandons_its_running_step_and_ends_cancelled_with_the_reason,
    a_waiting_instance_is_terminated_without_a_step_and_wrong_calls_are_refused,
);

const WORKFLOW: &str = "export";

/// What a test's stuck step tells it: that the step began, and that its future was dropped.
#[derive(Default)]
struct Watch {
    entered: Option<oneshot::Sender<()>>,
    dropped: Option<oneshot::Sender<()>>,
}

/// Each test's watch, by the key its instance carries as input (tests run side by side).
static WATCHES: LazyLock<Mutex<HashMap<u32, Watch>>> = LazyLock::new(Default::default);
static NEXT_KEY: AtomicU32 = AtomicU32::new(1);

/// Tells the test watching `key` what `pick` takes out of its watch, if it is still there.
fn tell(key: u32, pick: impl FnOnce(&mut Watch) -> Option<oneshot::Sender<()>>) {
    let sender = WATCHES.lock().get_mut(&key).and_then(pick);
    if let Some(sender) = sender {
        let _ = sender.send(());
    }
}

/// Told when the stuck step's future is dropped.
struct DropGuard(u32);

impl Drop for DropGuard {
    fn drop(&mut self) {
        tell(self.0, |watch| watch.dropped.take());
    }
}

/// A key of this test's own, and the receivers of "the stuck step began" and "it was dropped".
fn watch() -> (u32, oneshot::Receiver<()>, oneshot::Receiver<()>) {
    let key = NEXT_KEY.fetch_add(1, Ordering::SeqCst);
    let (entered, entered_receiver) = oneshot::channel();
    let (dropped, dropped_receiver) = oneshot::channel();
    let watch = Watch {
        entered: Some(entered),
        dropped: Some(dropped),
    };
    WATCHES.lock().insert(key, watch);
    (key, entered_receiver, dropped_receiver)
}

async fn prepare(_ctx: StepCtx, _key: &mut u32) -> StepResult<u32> {
    Ok(Next::goto("upload"))
}

/// 1.0.0's upload waits for a provider that never answers.
async fn upload_stuck(_ctx: StepCtx, key: &mut u32) -> StepResult<u32> {
    let guard = DropGuard(*key);
    tell(*key, |watch| watch.entered.take());
    std::future::pending::<()>().await;
    drop(guard);
    Ok(Next::complete(*key))
}

/// 1.0.1's upload answers.
async fn upload(_ctx: StepCtx, key: &mut u32) -> StepResult<u32> {
    Ok(Next::complete(*key + 1_000))
}

fn stuck() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(|key: u32| key)
        .step("prepare", prepare)
        .step("upload", upload_stuck)
}

fn fixed() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new(WORKFLOW, "1.0.1")
        .init(|key: u32| key)
        .step("prepare", prepare)
        .step("upload", upload)
}

async fn wait_for_go(_ctx: StepCtx, _key: &mut u32) -> StepResult<u32> {
    Ok(Next::wait_signal("go", "done"))
}

async fn done(_ctx: StepCtx, key: &mut u32) -> StepResult<u32> {
    Ok(Next::complete(*key))
}

fn waiter() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new("waiter", "1.0.0")
        .init(|key: u32| key)
        .step("wait", wait_for_go)
        .step("done", done)
}

fn entries(engine: &Engine, id: InstanceId) -> Vec<HistoryEvent> {
    engine
        .history(id, &HistoryRequest::default())
        .unwrap()
        .entries
        .into_iter()
        .map(|item| item.entry.map(|entry: HistoryEntry| entry.event).unwrap())
        .collect()
}

fn steps_run(events: &[HistoryEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            HistoryEvent::Step(step) => Some(step.step.clone()),
            _ => None,
        })
        .collect()
}

/// `future`'s output, or a failure naming `what` after 30 s (a termination that does not
/// abandon its step would otherwise hang the test).
async fn within<T>(future: impl std::future::Future<Output = T>, what: &str) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what} within 30 s"))
}

/// Waits for what a stuck step tells (bounded).
async fn told(receiver: oneshot::Receiver<()>, what: &str) {
    within(receiver, what)
        .await
        .unwrap_or_else(|_| panic!("{what}: the sender was dropped"));
}

async fn a_terminated_instance_abandons_its_running_step_and_ends_cancelled_with_the_reason(backend: Backend) {
    let engine = backend.builder().register(stuck()).open().await.unwrap();
    let (key, entered, dropped) = watch();
    let id = engine.start(WORKFLOW, &key).await.unwrap();
    told(entered, "the upload step began").await;

    // A cancel would wait for the step, which never ends; a termination does not.
    let mut events = engine.subscribe();
    within(engine.terminate(id, "  the provider is down  "), "the termination")
        .await
        .unwrap();
    told(dropped, "the abandoned step's future was dropped").await;
    let said = wait_for_event(&mut events, |event| matches!(event, Event::InstanceTerminated { .. })).await;
    assert_eq!(
        said,
        Event::InstanceTerminated {
            id,
            key: strata::VersionKey::new(WORKFLOW, Version::new(1, 0, 0)),
            reason: "the provider is down".to_string(),
            abandoned_step: Some("upload".to_string()),
        }
    );
    assert_eq!(outcome_within(&engine, id).await.status(), InstanceStatus::Cancelled);
    let info = engine.instance(id).unwrap();
    assert_eq!(
        (info.status, info.record.step.as_str()),
        (InstanceStatus::Cancelled, "upload"),
        "it ends at its last committed step"
    );
    let counters = engine.version(WORKFLOW, "1.0.0").unwrap().counters;
    assert_eq!((counters.cancelled, counters.failed, counters.live), (1, 0, 0));

    // The history says so, after a restart too, and holds no attempt of the abandoned step.
    engine.shutdown().await;
    let engine = backend
        .builder()
        .register(stuck())
        .register(fixed())
        .open()
        .await
        .unwrap();
    let events = entries(&engine, id);
    assert_eq!(
        events.last(),
        Some(&HistoryEvent::Terminated {
            reason: "the provider is down".to_string(),
            abandoned_step: Some("upload".to_string()),
        }),
        "{events:?}"
    );
    assert_eq!(steps_run(&events), ["prepare"], "no entry for the abandoned attempt");
    assert_eq!(engine.instance(id).unwrap().status, InstanceStatus::Cancelled);

    // A terminated instance is revived like a cancelled one: on the fix, at the step it ended on.
    let report = engine
        .revive(&ReviveRequest::new(WORKFLOW).on_version(Version::parse("1.0.1").unwrap()))
        .await
        .unwrap();
    assert_eq!(report.revived, [id]);
    let outcome = outcome_within(&engine, id).await;
    assert_eq!(outcome.output::<u32>().unwrap(), key + 1_000);
    assert_eq!(
        steps_run(&entries(&engine, id)),
        ["prepare", "upload"],
        "only the fix's upload ran after the revival"
    );
    engine.shutdown().await;
}

async fn a_waiting_instance_is_terminated_without_a_step_and_wrong_calls_are_refused(backend: Backend) {
    let engine = backend.builder().register(waiter()).open().await.unwrap();
    let id = engine.start("waiter", &7u32).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;

    let blank = engine.terminate(id, " ").await;
    assert!(
        matches!(blank, Err(EngineError::TerminateWithoutReason { .. })),
        "{blank:?}"
    );
    assert_eq!(
        engine.instance(id).unwrap().status,
        InstanceStatus::WaitingSignal,
        "a refused termination changes nothing"
    );
    let unknown = engine.terminate(InstanceId(id.0 + 1_000_000), "gone").await;
    assert!(
        matches!(unknown, Err(EngineError::UnknownInstance { .. })),
        "{unknown:?}"
    );

    let mut events = engine.subscribe();
    engine.terminate(id, "the customer left").await.unwrap();
    let said = wait_for_event(&mut events, |event| matches!(event, Event::InstanceTerminated { .. })).await;
    assert!(
        matches!(&said, Event::InstanceTerminated { abandoned_step: None, reason, .. } if reason == "the customer left"),
        "{said:?}"
    );
    let events = entries(&engine, id);
    assert_eq!(
        events.last(),
        Some(&HistoryEvent::Terminated {
            reason: "the customer left".to_string(),
            abandoned_step: None,
        }),
        "no step was running: none was abandoned"
    );
    let again = engine.terminate(id, "twice").await;
    assert!(
        matches!(&again, Err(EngineError::InstanceFinished { status, .. }) if status == "cancelled"),
        "{again:?}"
    );
    let signal = engine.signal(id, "go", &1u32).await;
    assert!(
        matches!(&signal, Err(EngineError::InstanceFinished { status, .. }) if status == "cancelled"),
        "a terminated instance takes no signal: {signal:?}"
    );
    assert_eq!(
        engine.version("waiter", "1.0.0").unwrap().counters.cancelled,
        1,
        "counted once"
    );
    engine.shutdown().await;
    assert_eq!(
        backend.stored_signals(&[id]),
        0,
        "its control signal left nothing in the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_running_on_another_worker_is_terminated_through_the_store() {
    let backend = Backend::postgres();
    let holder = backend.builder().register(stuck()).open().await.unwrap();
    let operator = backend.builder().register(stuck()).open().await.unwrap();
    let (key, entered, dropped) = watch();
    let id = holder.start(WORKFLOW, &key).await.unwrap();
    told(entered, "the upload step began on the holder").await;

    within(operator.terminate(id, "stuck on the holder"), "the termination")
        .await
        .unwrap();
    told(dropped, "the holder dropped the abandoned step").await;
    assert_eq!(operator.instance(id).unwrap().status, InstanceStatus::Cancelled);
    assert_eq!(
        entries(&operator, id).last(),
        Some(&HistoryEvent::Terminated {
            reason: "stuck on the holder".to_string(),
            abandoned_step: Some("upload".to_string()),
        })
    );
    assert_eq!(outcome_within(&holder, id).await.status(), InstanceStatus::Cancelled);
    assert_eq!(
        backend.stored_signals(&[id]),
        0,
        "the control signal was deleted with the end"
    );
    operator.shutdown().await;
    holder.shutdown().await;
}

/// PostgreSQL: a start accepted for another worker (this one has no code for its version) and
/// cancelled or terminated before that worker claimed it ends when it is claimed: the request,
/// stored as a control signal with it, is acted on at the claim (before the fix, the holder put
/// it in the inbox and the instance waited for its own signal: the call never returned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_accepted_for_another_worker_is_ended_when_that_worker_claims_it() {
    let backend = Backend::postgres();
    let lease = std::time::Duration::from_millis(300);
    let holder = backend.builder().lease(lease).register(waiter()).open().await.unwrap();
    let acceptor = backend.builder().lease(lease).open().await.unwrap();
    for terminate in [false, true, false, true] {
        // Accepted here (no code for waiter 1.0.0), for the holder to claim and run.
        let id = loop {
            match acceptor.start("waiter", &7u32).await {
                Ok(id) => break id,
                // Until this worker has seen the holder's heartbeat, no live worker runs waiter.
                Err(EngineError::Registry(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    // the next heartbeat
                }
                Err(error) => panic!("{error}"),
            }
        };
        let ended = if terminate {
            within(acceptor.terminate(id, "the order was withdrawn"), "the termination").await
        } else {
            within(acceptor.cancel(id), "the cancel").await
        };
        ended.unwrap();
        assert_eq!(
            within(holder.outcome(id), "the outcome").await.unwrap().status(),
            InstanceStatus::Cancelled
        );
    }
    acceptor.shutdown().await;
    holder.shutdown().await;
}
