//! An instance's history (issue #23): what happened to it, entry by entry — its start, every step
//! attempt with what woke it, when it began and ended and how it ended, cancels, background
//! migrations, signals it never consumed — readable after a restart, paged from either end, and bounded (the first entry
//! and the newest kept, the rest counted).
//!
//! Every behaviour here runs on sled and on PostgreSQL.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use common::tally;
use common::*;
use strata::history::{AttemptOutcome, HistoryEntry, HistoryEvent, StepEntry, WokenBy};
use strata::instance::{HistoryRequest, InstanceHistory};
use strata::migrate::MigrationJob;
use strata::routing::RouteReason;
use strata::{
    Engine, InstanceId, InstanceStatus, Next, RetryPolicy, StartOptions, StepCtx, StepError, StepResult,
    WorkflowVersion,
};

on_sled_and_postgres!(
    a_history_says_what_happened_step_by_step_and_survives_a_restart,
    each_failed_attempt_is_an_entry_with_its_error_and_when_the_retry_runs,
    a_long_history_keeps_its_first_and_newest_entries_and_counts_the_rest,
    beyond_a_bound_of_a_hundred_the_oldest_entries_go_sixty_four_at_a_time,
    a_cancel_and_a_background_migration_are_in_the_history,
    a_signal_never_consumed_is_pending_while_the_instance_lives_and_noted_when_it_ends,
);

const WORKFLOW: &str = "parcel";

/// Fails its first two attempts, then waits for `delivered`.
async fn pack(ctx: StepCtx, _packed: &mut u32) -> StepResult<u32> {
    if ctx.attempt() < 3 {
        return Err(StepError::retryable(format!("printer jam {}", ctx.attempt())));
    }
    Ok(Next::wait_signal("delivered", "close"))
}

async fn close(_ctx: StepCtx, packed: &mut u32) -> StepResult<u32> {
    Ok(Next::complete(*packed + 1))
}

/// `parcel` 1.0.0: `pack` (three attempts at most, 10 then 20 ms apart) then `close` on `delivered`.
fn parcel() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(|input: u32| input)
        .signal_type::<u32>("delivered")
        .step_with_retry("pack", pack, RetryPolicy::exponential(3, Duration::from_millis(10)))
        .step("close", close)
}

/// Counts its visits in the state and loops until it has made `input` of them.
async fn tick(_ctx: StepCtx, state: &mut (u32, u32)) -> StepResult<u32> {
    state.1 += 1;
    if state.1 >= state.0 {
        return Ok(Next::complete(state.1));
    }
    Ok(Next::goto("tick"))
}

fn ticker() -> WorkflowVersion<u32, (u32, u32), u32> {
    WorkflowVersion::new("ticker", "1.0.0")
        .init(|input: u32| (input, 0))
        .step("tick", tick)
}

fn whole_history(engine: &Engine, id: InstanceId) -> InstanceHistory {
    engine
        .history(
            id,
            &HistoryRequest {
                limit: 1_000,
                ..HistoryRequest::default()
            },
        )
        .unwrap()
}

fn entries(history: &InstanceHistory) -> Vec<HistoryEntry> {
    history
        .entries
        .iter()
        .map(|item| {
            item.entry
                .clone()
                .unwrap_or_else(|error| panic!("entry {}: {error}", item.seq))
        })
        .collect()
}

fn steps(history: &InstanceHistory) -> Vec<StepEntry> {
    entries(history)
        .into_iter()
        .filter_map(|entry| match entry.event {
            HistoryEvent::Step(step) => Some(step),
            _ => None,
        })
        .collect()
}

async fn a_history_says_what_happened_step_by_step_and_survives_a_restart(backend: Backend) {
    let engine = backend.builder().register(parcel()).open().await.unwrap();
    let id = engine
        .start_with(WORKFLOW, &41u32, StartOptions::new().routing_key("customer-7"))
        .await
        .unwrap();
    wait_until(&engine, |engine| {
        steps(&whole_history(engine, id))
            .last()
            .is_some_and(|step| matches!(step.outcome, AttemptOutcome::AwaitSignal { .. }))
    })
    .await;
    engine.signal(id, "delivered", &1u32).await.unwrap();
    assert_eq!(outcome_within(&engine, id).await.output::<u32>().unwrap(), 42);
    engine.shutdown().await;

    let engine = backend.builder().register(parcel()).open().await.unwrap();
    let history = whole_history(&engine, id);
    assert_eq!((history.kept, history.folded, history.next), (5, 0, None));
    let seqs: Vec<u64> = history.entries.iter().map(|item| item.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    let all = entries(&history);
    match &all[0].event {
        HistoryEvent::Started {
            version,
            routed_by,
            routing_key,
            input_bytes,
            schedule,
        } => {
            assert_eq!(version.to_string(), "1.0.0");
            assert_eq!(*routed_by, RouteReason::Newest);
            assert_eq!(routing_key.as_deref(), Some("customer-7"));
            assert_eq!((*input_bytes, schedule.clone()), (1, None));
        }
        other => panic!("the first entry is the start, not {other:?}"),
    }
    let steps = steps(&history);
    let summary: Vec<(&str, u32, &WokenBy)> = steps
        .iter()
        .map(|step| (step.step.as_str(), step.attempt, &step.woken_by))
        .collect();
    assert_eq!(summary.len(), 4);
    assert_eq!(summary[0], ("pack", 1, &WokenBy::Start));
    assert_eq!(summary[1], ("pack", 2, &WokenBy::Retry));
    assert_eq!(summary[2], ("pack", 3, &WokenBy::Retry));
    assert_eq!(summary[3].0, "close");
    assert!(
        matches!(summary[3].2, WokenBy::Signal { name, bytes: 1, .. } if name == "delivered"),
        "{:?}",
        summary[3].2
    );
    assert!(matches!(
        &steps[2].outcome,
        AttemptOutcome::AwaitSignal { name, timeout_at_ms: None, step } if name == "delivered" && step == "close"
    ));
    assert_eq!(steps[3].outcome, AttemptOutcome::Completed { output_bytes: 1 });
    for (entry, step) in all[1..].iter().zip(&steps) {
        assert!(
            entry.at_ms.saturating_sub(step.took_ms) >= all[0].at_ms,
            "an attempt begins after the start: {step:?} at {}",
            entry.at_ms
        );
    }
    assert!(
        all.windows(2).all(|pair| pair[0].at_ms <= pair[1].at_ms),
        "entries are in the order things happened"
    );

    // Pages from either end, and an unknown instance.
    let newest = engine
        .history(
            id,
            &HistoryRequest {
                newest_first: true,
                limit: 2,
                ..HistoryRequest::default()
            },
        )
        .unwrap();
    assert_eq!(newest.entries.iter().map(|item| item.seq).collect::<Vec<_>>(), [4, 3]);
    assert_eq!(newest.next, Some(3));
    let older = engine
        .history(
            id,
            &HistoryRequest {
                from: newest.next,
                newest_first: true,
                limit: 2,
            },
        )
        .unwrap();
    assert_eq!(older.entries.iter().map(|item| item.seq).collect::<Vec<_>>(), [2, 1]);
    let unknown = engine.history(InstanceId(999_999), &HistoryRequest::default());
    assert!(
        matches!(unknown, Err(strata::EngineError::UnknownInstance { .. })),
        "{unknown:?}"
    );
    engine.shutdown().await;
}

async fn each_failed_attempt_is_an_entry_with_its_error_and_when_the_retry_runs(backend: Backend) {
    let engine = backend.builder().register(parcel()).open().await.unwrap();
    let id = engine.start(WORKFLOW, &1u32).await.unwrap();
    wait_until(&engine, |engine| steps(&whole_history(engine, id)).len() == 3).await;
    let history = entries(&whole_history(&engine, id));
    let retried: Vec<(u64, StepEntry)> = history
        .iter()
        .filter_map(|entry| match &entry.event {
            HistoryEvent::Step(step) => Some((entry.at_ms, step.clone())),
            _ => None,
        })
        .collect();
    for (index, (_, step)) in retried[..2].iter().enumerate() {
        match &step.outcome {
            AttemptOutcome::Retrying { error, at_ms } => {
                assert_eq!(*error, format!("printer jam {}", index + 1));
                assert!(*at_ms >= retried[index].0, "the retry runs after the attempt ended");
            }
            other => panic!("attempt {} should be retried: {other:?}", index + 1),
        }
    }
    engine.cancel(id).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::Cancelled).await;
    engine.shutdown().await;
}

/// An engine on `backend` (which must outlive it) whose histories keep `limit` entries, after a ticker of `ticks` steps finished on
/// it: the engine, the instance and its whole history, which must hold the first chunk (the
/// start first) and then the entries `newest` (the completing step last), `folded` dropped.
async fn ticked_under_a_bound(
    backend: &Backend,
    limit: u32,
    ticks: u32,
    newest: std::ops::Range<u64>,
    folded: u64,
) -> (Engine, InstanceId) {
    let engine = backend
        .builder()
        .register(ticker())
        .history_limit(limit)
        .open()
        .await
        .unwrap();
    let id = engine.start("ticker", &ticks).await.unwrap();
    assert_eq!(outcome_within(&engine, id).await.output::<u32>().unwrap(), ticks);
    let history = whole_history(&engine, id);
    let expected: Vec<u64> = (0..8).chain(newest.clone()).collect();
    assert_eq!((history.kept, history.folded), (expected.len() as u64, folded));
    let seqs: Vec<u64> = history.entries.iter().map(|item| item.seq).collect();
    assert_eq!(seqs, expected);
    let all = entries(&history);
    assert!(matches!(all[0].event, HistoryEvent::Started { .. }));
    assert!(matches!(
        &all[all.len() - 1].event,
        HistoryEvent::Step(step) if matches!(step.outcome, AttemptOutcome::Completed { .. })
    ));
    (engine, id)
}

async fn a_long_history_keeps_its_first_and_newest_entries_and_counts_the_rest(backend: Backend) {
    // The start and 40 attempts: 41 entries, in chunks of 8. The first chunk (with the start) is
    // kept, and the newest entries up to the bound of 16; three chunks between are folded.
    let (engine, id) = ticked_under_a_bound(&backend, 16, 40, 32..41, 24).await;
    let newest = engine
        .history(
            id,
            &HistoryRequest {
                from: Some(33),
                newest_first: true,
                limit: 3,
            },
        )
        .unwrap();
    assert_eq!(
        newest.entries.iter().map(|item| item.seq).collect::<Vec<_>>(),
        [32, 7, 6],
        "paging newest first steps over the folded entries"
    );
    engine.shutdown().await;
}

async fn beyond_a_bound_of_a_hundred_the_oldest_entries_go_sixty_four_at_a_time(backend: Backend) {
    // 201 entries. Entry 103 filled the chunk that put 104 over the bound: 8..72 went at once,
    // leaving 40; at 168 again, 72..136. The first chunk and 136..201 are kept.
    let (engine, _) = ticked_under_a_bound(&backend, 100, 200, 136..201, 128).await;
    engine.shutdown().await;
}

async fn a_cancel_and_a_background_migration_are_in_the_history(backend: Backend) {
    let ids = tally::stored_on_schema_1(&backend, [5, 6]).await;
    let engine = tally::open_on_schema_2(&backend, Arc::new(AtomicU64::new(0))).await;
    engine
        .migrate_states(MigrationJob::new(tally::WORKFLOW))
        .unwrap()
        .finished_within(Duration::from_secs(30))
        .await
        .unwrap();
    engine.cancel(ids[1]).await.unwrap();
    wait_for_status(&engine, ids[1], InstanceStatus::Cancelled).await;
    for id in &ids {
        let all = entries(&whole_history(&engine, *id));
        assert!(
            all.iter().any(|entry| entry.event
                == HistoryEvent::Migrated {
                    from_schema: 1,
                    to_schema: 2
                }),
            "{all:?}"
        );
    }
    let cancelled = entries(&whole_history(&engine, ids[1]));
    assert_eq!(
        cancelled.last().map(|entry| &entry.event),
        Some(&HistoryEvent::Cancelled)
    );
    engine.shutdown().await;
}

async fn a_signal_never_consumed_is_pending_while_the_instance_lives_and_noted_when_it_ends(backend: Backend) {
    let engine = backend.builder().register(parcel()).open().await.unwrap();
    let id = engine.start(WORKFLOW, &4u32).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    // A typo: the instance waits for `delivered`.
    engine.signal(id, "delivred", &9u32).await.unwrap();
    let pending: Vec<String> = engine
        .pending_signals(id)
        .unwrap()
        .into_iter()
        .map(|signal| signal.name)
        .collect();
    assert_eq!(pending, ["delivred"], "listed while the instance lives");
    engine.signal(id, "delivered", &1u32).await.unwrap();
    assert_eq!(outcome_within(&engine, id).await.status(), InstanceStatus::Completed);

    let all = entries(&whole_history(&engine, id));
    let [.., last_step, dropped] = all.as_slice() else {
        panic!("{all:?}")
    };
    assert!(
        matches!(&last_step.event, HistoryEvent::Step(step)
            if matches!(&step.woken_by, WokenBy::Signal { name, .. } if name == "delivered")),
        "{all:?}"
    );
    let HistoryEvent::SignalsDropped { signals } = &dropped.event else {
        panic!("the end notes the signal no step consumed: {all:?}")
    };
    let noted: Vec<(&str, u64)> = signals
        .iter()
        .map(|signal| (signal.name.as_str(), signal.bytes))
        .collect();
    assert_eq!(noted, [("delivred", 1)], "9 is one byte of MessagePack");
    assert_eq!(dropped.at_ms, last_step.at_ms, "written in the commit that ended it");
    engine.shutdown().await;
}
