//! The engine's clock: with a manual clock, days of workflow time — durable sleeps, signal
//! timeouts, schedules — pass when the test advances it, with no sleeping.
//!
//! The behaviours listed in `on_sled_and_postgres!` run on sled and on PostgreSQL; the rest are
//! need no store, or open the embedded store's directory themselves.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use strata::instance::Phase;
use strata::{Clock, InstanceFilter, InstanceStatus, ManualClock};
use strata_workflows::{ledger, order};

on_sled_and_postgres!(
    a_three_day_sleep_and_a_two_day_timeout_pass_when_the_clock_is_advanced,
    a_schedule_fires_when_the_clock_reaches_its_time,
    a_huge_duration_is_a_long_wait_never_a_panic_or_an_early_wake,
);

const DAY: Duration = Duration::from_secs(86_400);

async fn a_three_day_sleep_and_a_two_day_timeout_pass_when_the_clock_is_advanced(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = backend
        .builder()
        .clock(clock.clone())
        .register(order::v1_0())
        .open()
        .await
        .unwrap();
    let slow = |n| {
        let mut input = small_order(n);
        input.warehouse_delay_ms = 3 * DAY.as_millis() as u64;
        input.payment_timeout_ms = 2 * DAY.as_millis() as u64;
        input
    };
    let paid = engine.start(order::WORKFLOW, &slow(1)).await.unwrap();
    let unpaid = engine.start(order::WORKFLOW, &slow(2)).await.unwrap();
    wait_for_status(&engine, paid, InstanceStatus::WaitingSignal).await;
    wait_for_status(&engine, unpaid, InstanceStatus::WaitingSignal).await;
    engine
        .signal(paid, order::PAYMENT_SIGNAL, &full_payment(&slow(1)))
        .await
        .unwrap();
    wait_for_status(&engine, paid, InstanceStatus::Sleeping).await;
    let Phase::Sleeping { until_ms } = engine.instance(paid).unwrap().record.phase else {
        panic!("not sleeping")
    };
    assert_eq!(
        until_ms,
        clock.now_ms() + 3 * DAY.as_millis() as u64,
        "due on the engine's clock"
    );

    clock.advance(2 * DAY);
    let timed_out: order::OrderOutput = outcome_within(&engine, unpaid).await.output().unwrap();
    assert_eq!(timed_out.status, "payment_timed_out");
    assert_eq!(
        engine.instance(paid).unwrap().status,
        InstanceStatus::Sleeping,
        "a day to go"
    );
    clock.advance(DAY);
    let shipped: order::OrderOutput = outcome_within(&engine, paid).await.output().unwrap();
    assert_eq!(shipped.status, "shipped");
    engine.shutdown().await;
}

async fn a_schedule_fires_when_the_clock_reaches_its_time(backend: Backend) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000)); // a whole hour, UTC
    let engine = backend
        .builder()
        .clock(clock.clone())
        .register(ledger::v1_0())
        .open()
        .await
        .unwrap();
    let config = "[[schedules]]\nname = \"hourly\"\nworkflow = \"ledger\"\ncron = \"0 * * * *\"\n\
                  input = { account = 1, entries = 1 }\n";
    engine.apply_config("strata.toml", config).await.unwrap();
    let started = |engine: &strata::Engine| engine.list(&InstanceFilter::workflow(ledger::WORKFLOW)).unwrap().len();
    // The scheduler takes the new schedule in (from now on, nothing earlier counts) ...
    wait_until(&engine, |engine| !engine.schedule_fires().unwrap().is_empty()).await;
    // ... and starts nothing until the clock reaches the next whole hour.
    assert_eq!(started(&engine), 0);
    clock.advance(Duration::from_secs(3_600));
    wait_until(&engine, |engine| started(engine) == 1).await;
    let fire = engine.list(&InstanceFilter::workflow(ledger::WORKFLOW)).unwrap()[0]
        .record
        .scheduled
        .clone()
        .unwrap();
    assert_eq!(fire.fire_ms, 1_800_003_600_000);
    clock.advance(Duration::from_secs(3_600));
    wait_until(&engine, |engine| started(engine) == 2).await;
    engine.shutdown().await;
}

/// What a `patience` instance waits with, and for how long.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Patience {
    /// 0: a durable sleep; 1: a signal wait with a timeout; 2: a retry backoff.
    kind: u8,
    seconds: u64,
    nanos: u32,
}

impl Patience {
    fn duration(&self) -> Duration {
        Duration::new(self.seconds, self.nanos)
    }
}

async fn wait_patiently(_ctx: strata::StepCtx, patience: &mut Patience) -> strata::StepResult<bool> {
    Ok(match patience.kind {
        0 => strata::Next::sleep(patience.duration(), "done"),
        1 => strata::Next::wait_signal_with_timeout("go", "done", patience.duration()),
        _ => strata::Next::goto("flaky"),
    })
}

async fn flaky(ctx: strata::StepCtx, _patience: &mut Patience) -> strata::StepResult<bool> {
    if ctx.attempt() == 1 {
        return Err(strata::StepError::retryable("first attempts fail"));
    }
    Ok(strata::Next::goto("done"))
}

async fn done(ctx: strata::StepCtx, _patience: &mut Patience) -> strata::StepResult<bool> {
    Ok(strata::Next::complete(ctx.timed_out()))
}

/// Waits as long as its input says; its retry backoff and attempt timeout are the longest there are.
fn patience() -> strata::WorkflowVersion<Patience, Patience, bool> {
    let longest = strata::RetryPolicy::exponential(5, Duration::MAX)
        .with_max_backoff(Duration::MAX)
        .with_attempt_timeout(Duration::MAX);
    strata::WorkflowVersion::new("patience", "1.0.0")
        .init(|patience: Patience| patience)
        .step("wait", wait_patiently)
        .step_with_retry("flaky", flaky, longest)
        .step("done", done)
}

/// When the instance's current wait ends on the engine's clock.
fn due(engine: &strata::Engine, id: strata::InstanceId) -> u64 {
    let phase = engine.instance(id).unwrap().record.phase;
    phase
        .timer_due_ms()
        .unwrap_or_else(|| panic!("{id} has no due time: {phase:?}"))
}

async fn a_huge_duration_is_a_long_wait_never_a_panic_or_an_early_wake(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let engine = backend
        .builder()
        .clock(clock.clone())
        .register(patience())
        .open()
        .await
        .unwrap();
    let now = clock.now_ms();
    let longest = Patience {
        kind: 0,
        seconds: u64::MAX,
        nanos: 999_999_999,
    };
    // Random durations from a second to the longest there is, for each kind of wait.
    let mut random = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(rand::random());
    let mut cases = Vec::new();
    for kind in 0..=1u8 {
        cases.push(Patience { kind, ..longest });
        for _ in 0..20 {
            let magnitude = rand::Rng::random_range(&mut random, 0..64u32);
            let seconds = rand::Rng::random_range(&mut random, 1..=u64::MAX >> magnitude);
            let nanos = rand::Rng::random_range(&mut random, 0..1_000_000_000u32);
            cases.push(Patience { kind, seconds, nanos });
        }
    }
    cases.push(Patience { kind: 2, ..longest });
    let mut waiting = Vec::new();
    for case in cases {
        let id = engine.start("patience", &case).await.unwrap();
        let status = match case.kind {
            0 => InstanceStatus::Sleeping,
            1 => InstanceStatus::WaitingSignal,
            _ => InstanceStatus::RetryBackoff,
        };
        wait_for_status(&engine, id, status).await;
        let expected = match case.kind {
            2 => u64::MAX,
            _ => u64::try_from(u128::from(now) + case.duration().as_millis()).unwrap_or(u64::MAX),
        };
        assert_eq!(due(&engine, id), expected, "{case:?}: due at now + duration, saturated");
        waiting.push((id, case, status, expected));
    }
    // A hundred years later every one of them still waits, and the engine still works.
    clock.advance(Duration::from_secs(100 * 365 * 86_400));
    let quick = engine
        .start(
            "patience",
            &Patience {
                kind: 1,
                seconds: 3_600,
                nanos: 0,
            },
        )
        .await
        .unwrap();
    engine.signal(quick, "go", &()).await.unwrap();
    assert!(
        !outcome_within(&engine, quick).await.output::<bool>().unwrap(),
        "signalled, not timed out"
    );
    for (id, case, status, due_ms) in &waiting {
        if *due_ms > clock.now_ms() {
            assert_eq!(engine.instance(*id).unwrap().status, *status, "{case:?} woke early");
        } else {
            // Due within the hundred years: it woke, and a signal wait knows it timed out.
            let timed_out: bool = outcome_within(&engine, *id).await.output().unwrap();
            assert_eq!(timed_out, case.kind == 1, "{case:?}");
        }
    }
    let longest_sleeper = waiting[0].0;
    assert_eq!(
        engine.instance(longest_sleeper).unwrap().status,
        InstanceStatus::Sleeping
    );
    engine.shutdown().await;
}
