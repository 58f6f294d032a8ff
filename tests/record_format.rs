//! Stores written by an older Strata: a store in record format 1 (a fixture kept in the
//! repository, written by the frozen format-1 encoder in `strata_store_sled::format1`) opens,
//! its records are read as they are, instances run on, and records are rewritten in the current
//! format incrementally — by their next commit, or by a background migration.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_bytes::ByteBuf;
use strata::instance::{PersistedWake, Phase, StateEnvelope, RECORD_FORMAT};
use strata::registry::VersionStatus;
use strata::{InstanceId, InstanceStatus, MigrationJob, Version, VersionKey};
use strata_store_sled::format1::{CountersV1, Format1Contents, InstanceRecordV1, SignalRecordV1};
use strata_workflows::order::{self, OrderInput, OrderOutput, OrderState, Payment};

const T0: u64 = 1_700_000_000_000;

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-format-1.msgpack")
}

fn state(input: &OrderInput, steps: &[&str], paid: bool) -> StateEnvelope {
    let state = OrderState {
        input: input.clone(),
        total_cents: input.total_cents(),
        reserved: steps.contains(&"reserve"),
        payment_reference: paid.then(|| format!("pay-{}", input.order_id)),
        fraud_checked: false,
        tracking: None,
        customer_notified: false,
        history: steps.iter().map(|step| format!("{step}@1.0.0")).collect(),
        shipped_to: None,
    };
    StateEnvelope {
        schema: 1,
        bytes: rmp_serde::to_vec_named(&state).unwrap(),
    }
}

fn record(id: u64, step: &str, visits: u64, phase: Phase, state: StateEnvelope) -> InstanceRecordV1 {
    InstanceRecordV1 {
        format: 1,
        id: InstanceId(id),
        key: VersionKey::new(order::WORKFLOW, Version::new(1, 0, 0)),
        step: step.into(),
        attempt: 1,
        visits,
        phase,
        state,
        routing_key: None,
        scheduled: None,
        last_error: None,
        created_at_ms: T0 + id,
        updated_at_ms: T0 + id,
    }
}

/// What the fixture holds: five order 1.0.0 instances in every phase a store keeps, one of them
/// finished, a pending signal, counters and a status, with fixed times so it is reproducible.
fn format_1_contents() -> Format1Contents {
    let input = |n: u64| small_order(n);
    let waiting = || Phase::WaitingSignal {
        name: order::PAYMENT_SIGNAL.into(),
        timeout_at_ms: None,
    };
    let output = OrderOutput {
        order_id: "o-5".into(),
        status: "shipped".into(),
        total_cents: input(5).total_cents(),
        tracking: Some("TRK-o-5".into()),
        customer_notified: false,
        finished_on: "1.0.0".into(),
    };
    let payment = Payment {
        amount_cents: input(1).total_cents(),
        reference: "pay-o-1".into(),
    };
    let key = VersionKey::new(order::WORKFLOW, Version::new(1, 0, 0));
    Format1Contents {
        live: vec![
            record(
                1,
                "charge",
                2,
                waiting(),
                state(&input(1), &["validate", "reserve"], false),
            ),
            record(
                2,
                "charge",
                2,
                waiting(),
                state(&input(2), &["validate", "reserve"], false),
            ),
            record(
                3,
                "reserve",
                1,
                Phase::Ready {
                    wake: PersistedWake::Continued,
                },
                state(&input(3), &["validate"], false),
            ),
            record(
                4,
                "ship",
                3,
                Phase::Sleeping { until_ms: T0 },
                state(&input(4), &["validate", "reserve", "charge"], true),
            ),
        ],
        finished: vec![record(
            5,
            "ship",
            4,
            Phase::Completed {
                output: rmp_serde::to_vec_named(&output).unwrap(),
            },
            state(&input(5), &["validate", "reserve", "charge", "ship"], true),
        )],
        signals: vec![SignalRecordV1 {
            instance: InstanceId(1),
            seq: 1,
            name: order::PAYMENT_SIGNAL.into(),
            payload: rmp_serde::to_vec_named(&payment).unwrap(),
        }],
        counters: vec![(
            key.clone(),
            CountersV1 {
                live: 4,
                started: 5,
                completed: 1,
                failed: 0,
                cancelled: 0,
                first_start_ms: Some(T0 + 1),
                last_start_ms: Some(T0 + 5),
            },
        )],
        statuses: vec![(key, VersionStatus::Active)],
    }
}

fn encoded_fixture() -> Vec<u8> {
    let entries: Vec<(ByteBuf, ByteBuf)> = format_1_contents()
        .entries()
        .unwrap()
        .into_iter()
        .map(|(key, value)| (ByteBuf::from(key), ByteBuf::from(value)))
        .collect();
    rmp_serde::to_vec(&entries).unwrap()
}

#[test]
#[ignore = "writes tests/fixtures/store-format-1.msgpack; run it only to regenerate the fixture"]
fn write_format_1_fixture() {
    std::fs::create_dir_all(fixture_path().parent().unwrap()).unwrap();
    std::fs::write(fixture_path(), encoded_fixture()).unwrap();
}

#[test]
fn the_fixture_is_what_the_frozen_format_1_encoder_writes() {
    let kept = std::fs::read(fixture_path()).expect("tests/fixtures/store-format-1.msgpack is missing");
    assert!(
        kept == encoded_fixture(),
        "the format-1 encoder changed: format 1 is frozen, stores of it exist; revert the change"
    );
}

/// Writes the fixture's raw entries into a fresh sled store in `dir`.
fn restore_fixture(dir: &Path) {
    let bytes = std::fs::read(fixture_path()).unwrap();
    let entries: Vec<(ByteBuf, ByteBuf)> = rmp_serde::from_slice(&bytes).unwrap();
    let db = sled::open(dir).unwrap();
    for (key, value) in entries {
        db.insert(key.into_vec(), value.into_vec()).unwrap();
    }
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_store_opens_runs_and_is_upgraded_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    restore_fixture(dir.path());
    let engine = builder(dir.path()).register(order::v1_0()).open().await.unwrap();

    // Everything reads: live and finished records, counters, the pending signal.
    // Instances 1 and 4 run on at once and may finish before the counters are read: the
    // fixture's figures (5 started, 4 live, 1 completed) are read as they were, less what ran.
    let counters = engine.version(order::WORKFLOW, "1.0.0").unwrap().counters;
    assert_eq!(counters.started, 5);
    assert_eq!(counters.live + counters.completed, 5);
    assert!((1..=3).contains(&counters.completed), "{counters:?}");
    let finished = engine.instance(InstanceId(5)).unwrap();
    assert_eq!(finished.record.format, 1, "finished records stay as written");
    let output: OrderOutput = finished.outcome().unwrap().output().unwrap();
    assert_eq!(output.tracking.as_deref(), Some("TRK-o-5"));
    let untouched = engine.instance(InstanceId(2)).unwrap();
    assert_eq!(
        (untouched.record.format, untouched.status),
        (1, InstanceStatus::WaitingSignal)
    );

    // Instances with work run on; each commit writes the current format.
    for id in [1, 4] {
        let output: OrderOutput = outcome_within(&engine, InstanceId(id)).await.output().unwrap();
        assert_eq!(output.status, "shipped", "instance {id}");
    }
    wait_for_status(&engine, InstanceId(3), InstanceStatus::WaitingSignal).await;
    assert_eq!(engine.instance(InstanceId(3)).unwrap().record.format, RECORD_FORMAT);
    assert_eq!(engine.instance(InstanceId(2)).unwrap().record.format, 1);

    // A background migration rewrites the idle record without changing anything else.
    let done = engine
        .migrate_states(MigrationJob::new(order::WORKFLOW))
        .unwrap()
        .finished_within(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((done.migrated, done.failed), (1, 0));
    let upgraded = engine.instance(InstanceId(2)).unwrap();
    assert_eq!(upgraded.record.format, RECORD_FORMAT);
    assert_eq!(upgraded.record.step, untouched.record.step);
    assert_eq!(upgraded.record.state, untouched.record.state);

    for id in [2, 3] {
        let input = small_order(id);
        engine
            .signal(InstanceId(id), order::PAYMENT_SIGNAL, &full_payment(&input))
            .await
            .unwrap();
        let output: OrderOutput = outcome_within(&engine, InstanceId(id)).await.output().unwrap();
        assert_eq!(output.status, "shipped");
    }
    let counters = engine.version(order::WORKFLOW, "1.0.0").unwrap().counters;
    assert_eq!((counters.live, counters.completed), (0, 5));
    engine.shutdown().await;

    // The store now says it holds the current format, so an older build refuses it.
    let db = sled::open(dir.path()).unwrap();
    let marker: u32 = rmp_serde::from_slice(&db.get(b"m/format").unwrap().unwrap()).unwrap();
    assert_eq!(marker, RECORD_FORMAT);
}
