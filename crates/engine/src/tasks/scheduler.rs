//! Runs the schedules of the config in force. Each fire time starts exactly one instance, routed
//! like any other: the instance's start and the schedule's "last handled fire" are one commit, so
//! a crash can neither lose a started fire nor start it twice. Fire times that passed while the
//! engine was down (older than the grace period) follow the schedule's missed-fire policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::EngineError;
use crate::observe::Event;
use crate::store::{Op, StoreError};
use crate::Engine;
use strata_config::{MissedFires, ScheduleSpec};

/// How many due fire times of one schedule are looked at, at most, per pass.
const MAX_DUE: usize = 100_000;

/// Runs until `stop` turns true, following the schedule set in `schedules`.
pub(crate) async fn run(
    engine: Engine,
    mut schedules: watch::Receiver<Arc<Vec<ScheduleSpec>>>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut jumps = engine.clock().jumps();
    loop {
        let current = schedules.borrow_and_update().clone();
        let wake_at = match pass(&engine, &current, grace).await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "a schedule pass failed; trying again in a second");
                Some(engine.now_ms() + 1_000)
            }
        };
        let wait = wake_at.map_or(Duration::from_secs(3_600), |at| {
            Duration::from_millis(at.saturating_sub(engine.now_ms()))
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = schedules.changed() => {}
            _ = stop.changed() => {}
            _ = crate::observe::jumped(&mut jumps) => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Starts what is due for every schedule; returns when the next fire time comes.
async fn pass(engine: &Engine, schedules: &[ScheduleSpec], grace: Duration) -> Result<Option<u64>, EngineError> {
    let handled: HashMap<String, u64> = engine.store().schedule_fires()?.into_iter().collect();
    let mut next_wake: Option<u64> = None;
    for schedule in schedules {
        // A process without the workflow's code leaves its fires to those that have it (with a
        // shared store, the config in force may name workflows only other processes run); none
        // is marked handled here, so none is lost for the cluster.
        if !engine.has_code_for(&schedule.workflow) {
            continue;
        }
        let now = engine.now_ms();
        let last = match handled.get(&schedule.name) {
            Some(last) => *last,
            None => {
                // A new schedule: nothing before it existed counts as missed.
                mark_handled(engine, schedule, now).await?;
                now
            }
        };
        let due: Vec<u64> = schedule
            .cron
            .fires_after(last)
            .take_while(|fire| *fire <= now)
            .take(MAX_DUE)
            .collect();
        let late_before = now.saturating_sub(crate::observe::millis_saturating(grace));
        let (missed, on_time): (Vec<u64>, Vec<u64>) = due.iter().partition(|fire| **fire < late_before);
        let mut to_start: Vec<u64> = match schedule.missed {
            MissedFires::Skip => Vec::new(),
            MissedFires::FireOnce => missed.last().copied().into_iter().collect(),
            MissedFires::FireEach { max } => missed.iter().rev().take(max as usize).rev().copied().collect(),
        };
        if !missed.is_empty() {
            tracing::info!(schedule = %schedule.name, missed = missed.len(), starting = to_start.len(), policy = ?schedule.missed, "fire times were missed while the engine was down");
        }
        to_start.extend(on_time);
        for fire_ms in &to_start {
            fire(engine, schedule, *fire_ms).await?;
        }
        let newest_due = due.last().copied();
        if newest_due.is_some() && newest_due != to_start.last().copied() {
            // Skipped fires are handled too, so they are not looked at again.
            let fire_ms = newest_due.unwrap_or(last);
            mark_handled(engine, schedule, fire_ms).await?;
        }
        let after = newest_due.unwrap_or(last).max(now);
        if let Some(next) = schedule.cron.fires_after(after).next() {
            next_wake = Some(next_wake.map_or(next, |wake| wake.min(next)));
        }
    }
    Ok(next_wake)
}

/// Starts the instance of one fire time. A store failure or a shutdown is returned (the fire
/// stays due: tried again, or at the next open); any other failure is reported, and the fire
/// counts as handled.
async fn fire(engine: &Engine, schedule: &ScheduleSpec, fire_ms: u64) -> Result<(), EngineError> {
    match engine.start_scheduled(schedule, fire_ms).await {
        Ok(id) => {
            tracing::debug!(schedule = %schedule.name, fire_ms, instance = %id, "schedule fired");
            Ok(())
        }
        Err(error) if taken_elsewhere(&error) => {
            tracing::debug!(schedule = %schedule.name, fire_ms, "another process started this fire");
            Ok(())
        }
        Err(error @ (EngineError::Store(_) | EngineError::ShuttingDown)) => Err(error),
        Err(error) => {
            tracing::error!(schedule = %schedule.name, fire_ms, %error, "a schedule's fire could not start an instance");
            engine.emit(Event::ScheduleFireFailed {
                schedule: schedule.name.clone(),
                fire_ms,
                reason: error.to_string(),
            });
            mark_handled(engine, schedule, fire_ms).await
        }
    }
}

/// Whether a commit failed only because the fire was handled already (by another process
/// sharing the store): then there is nothing left to do for it.
fn taken_elsewhere(error: &EngineError) -> bool {
    matches!(error, EngineError::Store(StoreError::FireTaken { .. }))
}

/// Records a fire time as handled without starting anything (unless it was already).
async fn mark_handled(engine: &Engine, schedule: &ScheduleSpec, fire_ms: u64) -> Result<(), EngineError> {
    let op = Op::PutScheduleFire {
        schedule: schedule.name.clone(),
        fire_ms,
    };
    match engine.commit(vec![op]).await {
        Err(error) if taken_elsewhere(&error) => Ok(()),
        other => other,
    }
}
