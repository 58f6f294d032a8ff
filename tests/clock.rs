//! The engine's clock: with a manual clock, days of workflow time — durable sleeps, signal
//! timeouts, schedules — pass when the test advances it, with no sleeping.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use strata::instance::Phase;
use strata::{Clock, InstanceFilter, InstanceStatus, ManualClock};
use strata_workflows::{ledger, order};

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_day_sleep_and_a_two_day_timeout_pass_when_the_clock_is_advanced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let engine = builder(dir.path())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_when_the_clock_reaches_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000)); // a whole hour, UTC
    let engine = builder(dir.path())
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
