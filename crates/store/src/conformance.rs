//! The store conformance kit: what every backend must do at the `Store` seam, as checks any
//! backend's tests run (feature `conformance`). A backend provides a [`Harness`] that opens its
//! store on the same data again and again, and runs every check with
//! [`conformance_tests!`](crate::conformance_tests), one test each; the engine's own behaviour
//! tests then run on both backends on top of this.
//!
//! The checks hold a worker's view through its cluster, as the engine does: what a worker holds
//! after a reopen is what `recover` returned plus what its first claim took (all of it from
//! `recover` in a cluster of one, all of it from the claim in a shared store).

use std::sync::Arc;
use std::time::Duration;

use semver::Version;
use strata_core::instance::{
    InstanceId, InstanceRecord, InstanceStatus, PersistedWake, Phase, StateEnvelope, VersionKey,
};
use strata_core::migrate::{MigrationJob, MigrationJobRecord, MigrationState};
use strata_core::rollout::{RolloutRecord, RolloutSpec, RolloutStatus, Stage, Transition, TransitionRecord};
use strata_core::version::{CounterDelta, VersionCounters, VersionStatus};

use crate::{AppliedConfig, IdKind, ListScope, Op, SignalRecord, Store, StoreError, StoredHistoryChunk, StoredVersion};

/// Opens one backend's store on the same data, again and again.
pub trait Harness {
    /// The store on this harness's data. The caller drops the store it opened before it opens
    /// the next one (an embedded store lets one process open its directory once).
    fn open(&self) -> Arc<dyn Store>;
}

/// One `#[test]` per check of the kit — every check, listed here once — each on a fresh harness
/// that `$harness` builds.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            pinned_instances_come_back_on_their_version,
            a_start_is_refused_when_its_write_leaves_the_version_not_active,
            retiring_is_refused_while_instances_live,
            the_write_that_ends_the_last_instance_of_a_draining_version_drains_it_and_alone_reports_it,
            a_retired_version_stays_retired_and_every_status_write_counts,
            timers_come_back_with_their_due_time,
            signals_are_kept_until_deleted_and_come_back_with_their_instance,
            a_finished_instance_leaves_the_live_ones_and_is_read_and_listed,
            retention_removes_only_finished_instances_due_and_remembers_the_highest_id,
            every_config_generation_is_kept_once,
            a_schedule_fire_is_handled_once,
            a_rollout_written_from_an_older_copy_is_refused,
            migration_jobs_are_kept_by_workflow_and_worker,
            moves_count_on_both_versions,
            a_live_record_that_does_not_decode_is_set_apart_with_its_reason,
            ids_are_never_handed_out_twice,
            a_refused_write_changes_nothing,
            history_chunks_are_kept_in_order_and_a_dropped_one_is_gone,
            a_span_of_history_chunks_dropped_in_one_write_is_gone_and_the_rest_stay,
            a_history_chunk_in_a_refused_write_is_not_stored_and_the_next_follows_the_stored_ones,
            retention_removes_an_instances_history_with_it,
            a_revived_instance_is_live_again_once_and_undrains_its_drained_version,
            listings_page_in_either_order_from_a_cursor,
            measure_and_shadow_counts_add_up_and_shadow_pairs_are_kept_by_rollout,
            held_instances_are_found_by_wake_time_and_loaded_with_their_signals,
            a_worker_that_opens_the_store_loads_only_what_is_due_by_its_time,
        );
    };
    (@each $harness:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::$check(&$harness);
            }
        )+
    };
}

const LEASE: Duration = Duration::from_secs(30);

fn key(version: &str) -> VersionKey {
    VersionKey::new(
        "w",
        Version::parse(version).unwrap_or_else(|error| panic!("{version}: {error}")),
    )
}

fn record(id: u64, version: &str, phase: Phase) -> InstanceRecord {
    InstanceRecord {
        step: "first".to_string(),
        state: StateEnvelope {
            schema: 1,
            bytes: vec![0x91, 0x07],
        },
        routing_key: Some(format!("customer-{id}")),
        updated_at_ms: 2_000 + id,
        ..InstanceRecord::new(InstanceId(id), key(version), phase, 1_000 + id)
    }
}

fn ready(id: u64, version: &str) -> InstanceRecord {
    record(
        id,
        version,
        Phase::Ready {
            wake: PersistedWake::Started,
        },
    )
}

/// Instance `id` on `version`, waiting for the signal "approved" without a timeout.
fn awaiting_approval(id: u64, version: &str) -> InstanceRecord {
    record(
        id,
        version,
        Phase::WaitingSignal {
            name: "approved".to_string(),
            timeout_at_ms: None,
        },
    )
}

fn put(record: &InstanceRecord) -> Op {
    Op::PutInstance(record.encode().unwrap_or_else(|error| panic!("{error}")))
}

fn start(version: &str) -> Op {
    Op::AdjustCounters {
        key: key(version),
        delta: CounterDelta::start(1_000),
    }
}

fn finish(version: &str, status: InstanceStatus) -> Op {
    Op::AdjustCounters {
        key: key(version),
        delta: CounterDelta::finish(status),
    }
}

fn set(version: &str, status: VersionStatus) -> Op {
    Op::PutVersionStatus {
        key: key(version),
        status,
    }
}

fn apply(store: &dyn Store, ops: &[Op]) -> crate::Applied {
    store.apply(ops).unwrap_or_else(|error| panic!("{ops:?}: {error}"))
}

fn stored(store: &dyn Store, version: &str) -> StoredVersion {
    let versions = store.versions().unwrap_or_else(|error| panic!("{error}"));
    versions
        .into_iter()
        .find(|stored| stored.key == key(version))
        .unwrap_or_else(|| panic!("{version} is not stored"))
}

/// What a worker of `store` holds after it opened it: what `recover` returned and what its first
/// claim took, with their signals. A worker writes a record it holds with the claim it holds it
/// by (`InstanceRecord::claim`), as the engine does: a shared store refuses any other.
fn held(store: &dyn Store) -> (Vec<InstanceRecord>, Vec<SignalRecord>, Vec<crate::CorruptRecord>) {
    let mut recovered = store
        .recover(u64::MAX)
        .unwrap_or_else(|error| panic!("recover: {error}"));
    let versions: Vec<VersionKey> = ["1.0.0", "2.0.0"].into_iter().map(key).collect();
    let cluster = store.cluster();
    cluster
        .heartbeat(&versions, LEASE)
        .unwrap_or_else(|error| panic!("heartbeat: {error}"));
    let claimed = cluster
        .claim(&versions, LEASE, usize::MAX, u64::MAX)
        .unwrap_or_else(|error| panic!("claim: {error}"));
    recovered.live.extend(claimed.live);
    recovered.signals.extend(claimed.signals);
    recovered.corrupt.extend(claimed.corrupt);
    recovered.live.sort_by_key(|record| record.id);
    recovered.signals.sort_by_key(|signal| signal.seq);
    (recovered.live, recovered.signals, recovered.corrupt)
}

/// Reopens the harness's store after the previous one is dropped, and lets its worker go first
/// (a shared store's claims are then free at once).
fn reopen(harness: &dyn Harness, store: Arc<dyn Store>) -> Arc<dyn Store> {
    let _ = store.cluster().leave();
    drop(store);
    harness.open()
}

/// `records` as stored, without the claims they are held by.
fn unclaimed(records: &[InstanceRecord]) -> Vec<InstanceRecord> {
    records
        .iter()
        .cloned()
        .map(|record| InstanceRecord { claim: 0, ..record })
        .collect()
}

/// The claim by which the worker holds instance `id` among `held` (0 in a cluster of one).
fn claim_of(held: &[InstanceRecord], id: u64) -> u64 {
    held.iter()
        .find(|record| record.id.0 == id)
        .unwrap_or_else(|| panic!("instance {id} is not held"))
        .claim
}

/// The ready record of `id` on `version` under the claim this worker takes it with ([`held`]),
/// for a later commit of the live instance to write. Once per opened store: the worker's next
/// claim finds it held already.
fn ready_as_held(store: &dyn Store, id: u64, version: &str) -> InstanceRecord {
    let (live, _, _) = held(store);
    InstanceRecord {
        claim: claim_of(&live, id),
        ..ready(id, version)
    }
}

fn signal(instance: u64, seq: u64, name: &str) -> SignalRecord {
    SignalRecord {
        format: 2,
        instance: InstanceId(instance),
        seq,
        name: name.to_string(),
        payload: vec![0xa2, b'o', b'k'],
    }
}

/// An instance's record comes back as written, on the version it started on, after a reopen;
/// a later version's start does not touch it.
pub fn pinned_instances_come_back_on_their_version(harness: &dyn Harness) {
    let store = harness.open();
    let old = ready(1, "1.0.0");
    apply(store.as_ref(), &[put(&old), start("1.0.0")]);
    let new = ready(2, "2.0.0");
    apply(store.as_ref(), &[put(&new), start("2.0.0")]);
    let store = reopen(harness, store);
    let (live, _, corrupt) = held(store.as_ref());
    assert!(corrupt.is_empty(), "{corrupt:?}");
    assert_eq!(
        unclaimed(&live),
        vec![old.clone(), new],
        "the records as written, each on its version"
    );
    let loaded = store
        .load_instance(InstanceId(1))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(loaded.map(|record| InstanceRecord { claim: 0, ..record }), Some(old));
    assert_eq!(
        (
            stored(store.as_ref(), "1.0.0").counters.live,
            stored(store.as_ref(), "2.0.0").counters.live
        ),
        (1, 1)
    );
}

/// A start counts against the status its write leaves the version in, whatever the order of
/// the write's ops (a group commit merges the ops of several callers).
pub fn a_start_is_refused_when_its_write_leaves_the_version_not_active(harness: &dyn Harness) {
    let store = harness.open();
    apply(store.as_ref(), &[start("1.0.0")]);
    for ops in [
        [start("1.0.0"), set("1.0.0", VersionStatus::Draining)],
        [set("1.0.0", VersionStatus::Draining), start("1.0.0")],
    ] {
        let refused = store.apply(&ops);
        assert!(
            matches!(
                refused,
                Err(StoreError::VersionNotAccepting {
                    status: VersionStatus::Draining,
                    ..
                })
            ),
            "{ops:?}: {refused:?}"
        );
    }
    let after = stored(store.as_ref(), "1.0.0");
    assert_eq!(
        (after.status, after.counters.started),
        (None, 1),
        "a refused write changed nothing"
    );
    // Drained, then made active again and started on in one write: the write leaves it Active.
    apply(store.as_ref(), &[set("2.0.0", VersionStatus::Draining)]);
    assert_eq!(stored(store.as_ref(), "2.0.0").status, Some(VersionStatus::Drained));
    apply(store.as_ref(), &[start("2.0.0"), set("2.0.0", VersionStatus::Active)]);
    let after = stored(store.as_ref(), "2.0.0");
    assert_eq!(
        (after.status, after.counters.started, after.counters.live),
        (Some(VersionStatus::Active), 1, 1)
    );
}

/// Retiring needs no live instance, in the store's own count.
pub fn retiring_is_refused_while_instances_live(harness: &dyn Harness) {
    let store = harness.open();
    apply(store.as_ref(), &[start("1.0.0"), start("1.0.0")]);
    let refused = store.apply(&[set("1.0.0", VersionStatus::Retired)]);
    assert!(
        matches!(refused, Err(StoreError::LiveInstances { live: 2, .. })),
        "{refused:?}"
    );
    apply(
        store.as_ref(),
        &[
            finish("1.0.0", InstanceStatus::Completed),
            finish("1.0.0", InstanceStatus::Failed),
        ],
    );
    apply(store.as_ref(), &[set("1.0.0", VersionStatus::Retired)]);
    assert_eq!(stored(store.as_ref(), "1.0.0").status, Some(VersionStatus::Retired));
}

/// `Drained` is exact: the write that ends the last live instance of a draining version drains
/// it, in the same write, and it alone reports it — not one before, not one after.
pub fn the_write_that_ends_the_last_instance_of_a_draining_version_drains_it_and_alone_reports_it(
    harness: &dyn Harness,
) {
    let store = harness.open();
    apply(store.as_ref(), &[start("1.0.0"), start("1.0.0")]);
    let draining = apply(store.as_ref(), &[set("1.0.0", VersionStatus::Draining)]);
    assert!(draining.drained.is_empty(), "two instances still live");
    let first = apply(store.as_ref(), &[finish("1.0.0", InstanceStatus::Completed)]);
    assert!(first.drained.is_empty(), "one instance still live");
    assert_eq!(stored(store.as_ref(), "1.0.0").status, Some(VersionStatus::Draining));
    let last = apply(store.as_ref(), &[finish("1.0.0", InstanceStatus::Cancelled)]);
    assert_eq!(
        last.drained,
        vec![key("1.0.0")],
        "the write that ends the last instance drains it"
    );
    let reported = last.versions.iter().find(|version| version.key == key("1.0.0"));
    assert_eq!(
        reported.and_then(|version| version.status),
        Some(VersionStatus::Drained)
    );
    let later = apply(
        store.as_ref(),
        &[Op::AdjustCounters {
            key: key("1.0.0"),
            delta: CounterDelta::default(),
        }],
    );
    assert!(later.drained.is_empty(), "reported once");
    let store = reopen(harness, store);
    let after = stored(store.as_ref(), "1.0.0");
    assert_eq!(
        (
            after.status,
            after.counters.live,
            after.counters.completed,
            after.counters.cancelled
        ),
        (Some(VersionStatus::Drained), 0, 1, 1)
    );
}

/// A retired version never takes starts again, and each status write counts once.
pub fn a_retired_version_stays_retired_and_every_status_write_counts(harness: &dyn Harness) {
    let store = harness.open();
    apply(store.as_ref(), &[set("1.0.0", VersionStatus::Draining)]);
    apply(store.as_ref(), &[set("1.0.0", VersionStatus::Active)]);
    apply(store.as_ref(), &[set("1.0.0", VersionStatus::Retired)]);
    let refused = store.apply(&[set("1.0.0", VersionStatus::Active)]);
    assert!(matches!(refused, Err(StoreError::VersionRetired { .. })), "{refused:?}");
    let refused = store.apply(&[start("1.0.0")]);
    assert!(
        matches!(
            refused,
            Err(StoreError::VersionNotAccepting {
                status: VersionStatus::Retired,
                ..
            })
        ),
        "{refused:?}"
    );
    let store = reopen(harness, store);
    let after = stored(store.as_ref(), "1.0.0");
    assert_eq!((after.status, after.status_changes), (Some(VersionStatus::Retired), 3));
}

/// A sleeping instance and one waiting for a signal with a timeout come back with their due
/// times, which the encoded record carries for the store to index.
pub fn timers_come_back_with_their_due_time(harness: &dyn Harness) {
    let store = harness.open();
    let sleeping = record(1, "1.0.0", Phase::Sleeping { until_ms: 9_000_000 });
    let waiting = record(
        2,
        "1.0.0",
        Phase::WaitingSignal {
            name: "approved".to_string(),
            timeout_at_ms: Some(u64::MAX),
        },
    );
    let encoded = sleeping.encode().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(encoded.due_ms, Some(9_000_000));
    apply(
        store.as_ref(),
        &[put(&sleeping), put(&waiting), start("1.0.0"), start("1.0.0")],
    );
    let store = reopen(harness, store);
    let (live, _, _) = held(store.as_ref());
    let phases: Vec<Option<u64>> = live.iter().map(|record| record.phase.timer_due_ms()).collect();
    assert_eq!(phases, [Some(9_000_000), Some(u64::MAX)]);
}

/// A worker finds the live instances it holds by wake time — ready ones first, one waiting for a
/// signal without a timeout last — as each write left it (a write that changes a record's wake
/// time moves it, a finish takes it out), page by page, and loads chosen ones with their signals
/// and the claim it holds them by.
pub fn held_instances_are_found_by_wake_time_and_loaded_with_their_signals(harness: &dyn Harness) {
    use strata_core::instance::WAKE_NEVER;
    let store = harness.open();
    let records = [
        ready(1, "1.0.0"),
        record(2, "1.0.0", Phase::Sleeping { until_ms: 5_000 }),
        awaiting_approval(3, "1.0.0"),
        record(4, "1.0.0", Phase::Sleeping { until_ms: 9_000 }),
        ready(5, "1.0.0"),
    ];
    let mut ops: Vec<Op> = records.iter().map(put).collect();
    ops.extend((0..records.len()).map(|_| start("1.0.0")));
    apply(store.as_ref(), &ops);
    apply(store.as_ref(), &[Op::PutSignal(signal(3, 7, "approved"))]);
    let (held_records, _, _) = held(store.as_ref());
    let holding = |id: u64| {
        let mut record = held_records
            .iter()
            .find(|record| record.id == InstanceId(id))
            .cloned()
            .unwrap_or_else(|| panic!("instance {id} is not held"));
        record.claim = claim_of(&held_records, id);
        record
    };
    let replacing = |next: &InstanceRecord, previous: &InstanceRecord| {
        Op::PutInstance(
            next.encode_replacing(Some(previous))
                .unwrap_or_else(|error| panic!("{error}")),
        )
    };
    // Instance 4 sleeps less now; instance 1 finishes; instance 5 takes a step (same wake time).
    let four = holding(4);
    let sooner = InstanceRecord {
        phase: Phase::Sleeping { until_ms: 3_000 },
        ..four.clone()
    };
    let one = holding(1);
    let done = InstanceRecord {
        phase: Phase::Completed { output: vec![0xc0] },
        ..one.clone()
    };
    let five = holding(5);
    let stepped = InstanceRecord {
        step: "second".to_string(),
        ..five.clone()
    };
    apply(
        store.as_ref(),
        &[
            replacing(&sooner, &four),
            replacing(&done, &one),
            finish("1.0.0", InstanceStatus::Completed),
            replacing(&stepped, &five),
        ],
    );
    let due = |after: Option<(u64, u64)>, through: u64, limit: usize| -> Vec<(u64, u64)> {
        store
            .due_held(after.map(|(wake, id)| (wake, InstanceId(id))), through, limit)
            .unwrap_or_else(|error| panic!("due_held: {error}"))
            .into_iter()
            .map(|(wake, id)| (wake, id.0))
            .collect()
    };
    assert_eq!(due(None, 5_000, 10), [(0, 5), (3_000, 4), (5_000, 2)]);
    assert_eq!(due(None, 2_999, 10), [(0, 5)], "nothing due later");
    assert_eq!(due(None, u64::MAX, 2), [(0, 5), (3_000, 4)], "a page");
    assert_eq!(
        due(Some((3_000, 4)), u64::MAX, 10),
        [(5_000, 2), (WAKE_NEVER, 3)],
        "the next page"
    );
    assert_eq!(due(Some((5_000, 2)), 9_000, 10), [], "nothing between");

    let loaded = store
        .load_held(&[InstanceId(3), InstanceId(4), InstanceId(1), InstanceId(99)])
        .unwrap_or_else(|error| panic!("load_held: {error}"));
    let mut ids: Vec<u64> = loaded.live.iter().map(|record| record.id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, [3, 4], "a finished and an unknown instance are not held");
    let four = loaded.live.iter().find(|record| record.id == InstanceId(4));
    assert_eq!(
        four.map(|record| &record.phase),
        Some(&Phase::Sleeping { until_ms: 3_000 })
    );
    assert_eq!(four.map(|record| record.claim), Some(claim_of(&held_records, 4)));
    assert_eq!(loaded.signals, vec![signal(3, 7, "approved")]);
}

/// A worker opening the store — recover, then claim, both up to one time — is handed the records
/// of the instances due by then and accounts for the others without reading them: counted by
/// version by `recover` (a store one process opens), or listed as claimed and left by `claim` (a
/// shared one). The ones left are found by wake time afterwards.
pub fn a_worker_that_opens_the_store_loads_only_what_is_due_by_its_time(harness: &dyn Harness) {
    let store = harness.open();
    let records = [
        ready(1, "1.0.0"),
        record(2, "1.0.0", Phase::Sleeping { until_ms: 5_000 }),
        record(3, "1.0.0", Phase::Sleeping { until_ms: 9_000 }),
        awaiting_approval(4, "1.0.0"),
    ];
    let mut ops: Vec<Op> = records.iter().map(put).collect();
    ops.extend((0..records.len()).map(|_| start("1.0.0")));
    apply(store.as_ref(), &ops);
    let store = reopen(harness, store);
    let recovered = store.recover(6_000).unwrap_or_else(|error| panic!("recover: {error}"));
    let versions = [key("1.0.0")];
    let cluster = store.cluster();
    cluster
        .heartbeat(&versions, LEASE)
        .unwrap_or_else(|error| panic!("heartbeat: {error}"));
    let claimed = cluster
        .claim(&versions, LEASE, usize::MAX, 6_000)
        .unwrap_or_else(|error| panic!("claim: {error}"));
    let mut loaded: Vec<u64> = recovered
        .live
        .iter()
        .chain(&claimed.live)
        .map(|record| record.id.0)
        .collect();
    loaded.sort_unstable();
    assert_eq!(loaded, [1, 2], "the records due by 6 000");
    let counted: u64 = recovered.unloaded.iter().map(|(_, count)| count).sum();
    assert_eq!(
        counted + claimed.left.len() as u64,
        2,
        "the others are accounted for: {:?} counted, {:?} left",
        recovered.unloaded,
        claimed.left
    );
    let later: Vec<u64> = store
        .due_held(Some((6_000, InstanceId(u64::MAX))), u64::MAX, 10)
        .unwrap_or_else(|error| panic!("due_held: {error}"))
        .into_iter()
        .map(|(_, id)| id.0)
        .collect();
    assert_eq!(later, [3, 4], "found by wake time afterwards");
}

/// Signals stay until a commit deletes them, in sequence order, and come back with their
/// instance.
pub fn signals_are_kept_until_deleted_and_come_back_with_their_instance(harness: &dyn Harness) {
    let store = harness.open();
    apply(store.as_ref(), &[put(&awaiting_approval(1, "1.0.0")), start("1.0.0")]);
    apply(store.as_ref(), &[Op::PutSignal(signal(1, 12, "approved"))]);
    apply(store.as_ref(), &[Op::PutSignal(signal(1, 11, "noise"))]);
    apply(store.as_ref(), &[Op::PutSignal(signal(1, 13, "approved"))]);
    apply(
        store.as_ref(),
        &[Op::DeleteSignal {
            instance: InstanceId(1),
            seq: 12,
        }],
    );
    let store = reopen(harness, store);
    let (live, signals, _) = held(store.as_ref());
    assert_eq!(live.len(), 1);
    assert_eq!(signals, vec![signal(1, 11, "noise"), signal(1, 13, "approved")]);
}

/// A finished record leaves the live instances in the write that finishes it, is read by id and
/// listed among the finished ones of its workflow and version.
pub fn a_finished_instance_leaves_the_live_ones_and_is_read_and_listed(harness: &dyn Harness) {
    let store = harness.open();
    let live = ready(1, "1.0.0");
    apply(
        store.as_ref(),
        &[put(&live), start("1.0.0"), put(&ready(2, "1.0.0")), start("1.0.0")],
    );
    let (holding, _, _) = held(store.as_ref());
    let mut done = record(1, "1.0.0", Phase::Completed { output: vec![0xc3] });
    done.claim = claim_of(&holding, 1);
    apply(
        store.as_ref(),
        &[put(&done), finish("1.0.0", InstanceStatus::Completed)],
    );
    let store = reopen(harness, store);
    let (held_live, _, _) = held(store.as_ref());
    assert_eq!(held_live.iter().map(|record| record.id.0).collect::<Vec<_>>(), [2]);
    let loaded = store
        .load_instance(InstanceId(1))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(loaded.map(|record| record.phase), Some(done.phase.clone()));
    let scope = ListScope {
        workflow: Some("w".to_string()),
        version: Some(Version::new(1, 0, 0)),
        after: None,
        newest_first: false,
        held_here: false,
    };
    let listed = store
        .finished_instances(&scope, &mut |_| true, 10)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(listed.iter().map(|record| record.id.0).collect::<Vec<_>>(), [1]);
    let elsewhere = ListScope {
        version: Some(Version::new(2, 0, 0)),
        ..scope
    };
    let listed = store
        .finished_instances(&elsewhere, &mut |_| true, 10)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(listed.is_empty(), "another version's listing");
    let counters = stored(store.as_ref(), "1.0.0").counters;
    assert_eq!((counters.live, counters.started, counters.completed), (1, 2, 1));
}

/// Retention removes finished instances that finished before the cut, no live one, leaves the
/// counters alone, and remembers the highest id it removed.
pub fn retention_removes_only_finished_instances_due_and_remembers_the_highest_id(harness: &dyn Harness) {
    let store = harness.open();
    let finished = |id: u64| {
        let mut done = record(
            id,
            "1.0.0",
            Phase::Failed {
                reason: "no".to_string(),
            },
        );
        done.updated_at_ms = id * 100;
        done
    };
    for id in 1..=4 {
        apply(
            store.as_ref(),
            &[
                put(&finished(id)),
                start("1.0.0"),
                finish("1.0.0", InstanceStatus::Failed),
            ],
        );
    }
    apply(store.as_ref(), &[put(&ready(5, "1.0.0")), start("1.0.0")]);
    assert_eq!(store.highest_removed_id().unwrap_or_else(|error| panic!("{error}")), 0);
    let mut removed = 0;
    loop {
        let round = store.expire_finished(301, 1).unwrap_or_else(|error| panic!("{error}"));
        removed += round;
        if round < 1 {
            break;
        }
    }
    assert_eq!(removed, 3, "ids 1 to 3 finished before 301");
    let store = reopen(harness, store);
    assert_eq!(store.highest_removed_id().unwrap_or_else(|error| panic!("{error}")), 3);
    assert!(store
        .load_instance(InstanceId(2))
        .unwrap_or_else(|error| panic!("{error}"))
        .is_none());
    assert!(store
        .load_instance(InstanceId(4))
        .unwrap_or_else(|error| panic!("{error}"))
        .is_some());
    let (live, _, _) = held(store.as_ref());
    assert_eq!(live.iter().map(|record| record.id.0).collect::<Vec<_>>(), [5]);
    let counters = stored(store.as_ref(), "1.0.0").counters;
    assert_eq!(
        (counters.started, counters.failed, counters.live),
        (5, 4, 1),
        "counters untouched"
    );
}

/// Every applied config generation is kept, oldest first; a generation is written once.
pub fn every_config_generation_is_kept_once(harness: &dyn Harness) {
    let store = harness.open();
    let config = |generation: u64, text: &str| AppliedConfig {
        generation,
        source: "strata.toml".to_string(),
        text: text.to_string(),
        applied_at_ms: generation * 10,
    };
    apply(store.as_ref(), &[Op::PutConfig(config(1, "a = 1"))]);
    apply(store.as_ref(), &[Op::PutConfig(config(2, "a = 2"))]);
    let refused = store.apply(&[Op::PutConfig(config(2, "a = 3"))]);
    assert!(
        matches!(refused, Err(StoreError::ConfigTaken { generation: 2 })),
        "{refused:?}"
    );
    let store = reopen(harness, store);
    let history = store.config_history().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(history, vec![config(1, "a = 1"), config(2, "a = 2")]);
    assert_eq!(
        store.latest_config().unwrap_or_else(|error| panic!("{error}")),
        Some(config(2, "a = 2"))
    );
}

/// A schedule's fire is handled once: only a later fire time is written.
pub fn a_schedule_fire_is_handled_once(harness: &dyn Harness) {
    let store = harness.open();
    let fire = |fire_ms| Op::PutScheduleFire {
        schedule: "nightly".to_string(),
        fire_ms,
    };
    apply(store.as_ref(), &[fire(1_000)]);
    for again in [1_000, 999] {
        let refused = store.apply(&[fire(again)]);
        assert!(
            matches!(refused, Err(StoreError::FireTaken { .. })),
            "{again}: {refused:?}"
        );
    }
    apply(store.as_ref(), &[fire(2_000)]);
    let store = reopen(harness, store);
    assert_eq!(
        store.schedule_fires().unwrap_or_else(|error| panic!("{error}")),
        vec![("nightly".to_string(), 2_000)]
    );
}

fn rollout(transitions: usize) -> RolloutRecord {
    let spec = RolloutSpec::new("w", Version::new(2, 0, 0), Version::new(1, 0, 0)).stage(Stage::new(
        10.0,
        Duration::from_secs(60),
        5,
    ));
    RolloutRecord {
        format: 1,
        spec,
        status: RolloutStatus::Running,
        stage: 0,
        stage_started_ms: 0,
        paused_ms: 0,
        paused_at_ms: None,
        candidate_baseline: VersionCounters::default(),
        stable_baseline: VersionCounters::default(),
        history: (0..transitions)
            .map(|at| TransitionRecord {
                at_ms: at as u64,
                stage: 0,
                transition: if at == 0 {
                    Transition::Started
                } else {
                    Transition::Paused
                },
                figures: None,
            })
            .collect(),
    }
}

/// A rollout is written only from its newest copy: each write adds a transition.
pub fn a_rollout_written_from_an_older_copy_is_refused(harness: &dyn Harness) {
    let store = harness.open();
    apply(store.as_ref(), &[Op::PutRollout(Box::new(rollout(1)))]);
    apply(store.as_ref(), &[Op::PutRollout(Box::new(rollout(2)))]);
    let refused = store.apply(&[Op::PutRollout(Box::new(rollout(2)))]);
    assert!(matches!(refused, Err(StoreError::RolloutChanged { .. })), "{refused:?}");
    let store = reopen(harness, store);
    let rollouts = store.rollouts().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(rollouts, vec![rollout(2)]);
}

/// A background migration's job record and each worker's share are kept apart, by workflow
/// and worker; a later write of one replaces it.
pub fn migration_jobs_are_kept_by_workflow_and_worker(harness: &dyn Harness) {
    let store = harness.open();
    let job = |worker: &str, migrated: u64| MigrationJobRecord {
        format: 2,
        workflow: "w".to_string(),
        job: MigrationJob::new("w"),
        cursor: Some(InstanceId(migrated)),
        state: MigrationState::Running,
        migrated,
        failed: 0,
        started_at_ms: 77,
        worker: worker.to_string(),
        control: 0,
        remaining: 3,
        claims_covered: 0,
    };
    apply(store.as_ref(), &[Op::PutMigrationJob(job("", 0))]);
    apply(store.as_ref(), &[Op::PutMigrationJob(job("worker-a", 5))]);
    apply(store.as_ref(), &[Op::PutMigrationJob(job("worker-a", 9))]);
    let store = reopen(harness, store);
    let mut jobs = store.migration_jobs().unwrap_or_else(|error| panic!("{error}"));
    jobs.sort_by(|one, other| one.worker.cmp(&other.worker));
    assert_eq!(jobs, vec![job("", 0), job("worker-a", 9)]);
}

/// A move is one write: the record on its new version and the counters of both versions.
pub fn moves_count_on_both_versions(harness: &dyn Harness) {
    let store = harness.open();
    apply(store.as_ref(), &[put(&ready(1, "1.0.0")), start("1.0.0")]);
    let (holding, _, _) = held(store.as_ref());
    let mut moved = ready(1, "2.0.0");
    moved.state.schema = 2;
    moved.claim = claim_of(&holding, 1);
    apply(
        store.as_ref(),
        &[
            put(&moved),
            Op::AdjustCounters {
                key: key("1.0.0"),
                delta: CounterDelta::moved(1, false),
            },
            Op::AdjustCounters {
                key: key("2.0.0"),
                delta: CounterDelta::moved(1, true),
            },
        ],
    );
    let store = reopen(harness, store);
    let (live, _, _) = held(store.as_ref());
    assert_eq!(unclaimed(&live), unclaimed(&[moved]));
    let (old, new) = (
        stored(store.as_ref(), "1.0.0").counters,
        stored(store.as_ref(), "2.0.0").counters,
    );
    assert_eq!((old.live, old.moved_out, new.live, new.moved_in), (0, 1, 1, 1));
}

/// A live record whose bytes do not decode is reported with its id and why, not dropped; set
/// apart, it is listed as quarantined and no longer live.
pub fn a_live_record_that_does_not_decode_is_set_apart_with_its_reason(harness: &dyn Harness) {
    let store = harness.open();
    let mut damaged = ready(1, "1.0.0").encode().unwrap_or_else(|error| panic!("{error}"));
    damaged.bytes = vec![0x93, 0xc1, 0x00];
    apply(
        store.as_ref(),
        &[
            Op::PutInstance(damaged),
            start("1.0.0"),
            put(&ready(2, "1.0.0")),
            start("1.0.0"),
        ],
    );
    let store = reopen(harness, store);
    let (live, _, corrupt) = held(store.as_ref());
    assert_eq!(live.iter().map(|record| record.id.0).collect::<Vec<_>>(), [2]);
    assert_eq!(corrupt.iter().map(|corrupt| corrupt.id.0).collect::<Vec<_>>(), [1]);
    assert!(!corrupt[0].reason.is_empty());
    apply(
        store.as_ref(),
        &[Op::QuarantineRecord {
            id: InstanceId(1),
            reason: corrupt[0].reason.clone(),
        }],
    );
    let store = reopen(harness, store);
    let (live, _, corrupt) = held(store.as_ref());
    assert_eq!((live.len(), corrupt.len()), (1, 0));
    let quarantined = store.quarantined().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(quarantined.iter().map(|corrupt| corrupt.id.0).collect::<Vec<_>>(), [1]);
}

/// Ids of a kind are never handed out twice, within one opening and after a reopen.
pub fn ids_are_never_handed_out_twice(harness: &dyn Harness) {
    let store = harness.open();
    let first = store
        .reserve_ids(IdKind::Instance)
        .unwrap_or_else(|error| panic!("{error}"));
    let second = store
        .reserve_ids(IdKind::Instance)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(!first.is_empty() && !second.is_empty());
    assert!(
        first.end <= second.start || second.end <= first.start,
        "{first:?} and {second:?} overlap"
    );
    // The highest id handed out is used, as the engine uses it.
    let used = second.end.max(first.end) - 1;
    apply(store.as_ref(), &[put(&ready(used, "1.0.0")), start("1.0.0")]);
    let store = reopen(harness, store);
    let third = store
        .reserve_ids(IdKind::Instance)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(third.start > used, "{third:?} after {used} was used");
    let signals = store
        .reserve_ids(IdKind::Signal)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(!signals.is_empty());
}

/// A write refused for one of its ops applies none of them.
pub fn a_refused_write_changes_nothing(harness: &dyn Harness) {
    let store = harness.open();
    apply(
        store.as_ref(),
        &[Op::PutScheduleFire {
            schedule: "nightly".to_string(),
            fire_ms: 5,
        }],
    );
    let refused = store.apply(&[
        put(&ready(1, "1.0.0")),
        start("1.0.0"),
        Op::PutSignal(signal(1, 1, "approved")),
        history_chunk(1, 0),
        Op::PutScheduleFire {
            schedule: "nightly".to_string(),
            fire_ms: 5,
        },
    ]);
    assert!(matches!(refused, Err(StoreError::FireTaken { .. })), "{refused:?}");
    let store = reopen(harness, store);
    let (live, signals, _) = held(store.as_ref());
    assert!(live.is_empty() && signals.is_empty(), "{live:?} {signals:?}");
    assert_eq!(
        history_numbers(store.as_ref(), 1),
        Vec::<u64>::new(),
        "no history chunk either"
    );
    assert!(store
        .versions()
        .unwrap_or_else(|error| panic!("{error}"))
        .iter()
        .all(|version| version.counters.started == 0));
}

fn history_chunk(instance: u64, first: u64) -> Op {
    Op::PutHistoryChunk {
        instance: InstanceId(instance),
        first,
        entries: format!("chunk {first} of {instance}").into_bytes(),
    }
}

/// The first entry numbers of a page of `instance`'s history chunks.
fn history_numbers(store: &dyn Store, instance: u64) -> Vec<u64> {
    store
        .history(InstanceId(instance))
        .unwrap_or_else(|error| panic!("history of {instance}: {error}"))
        .iter()
        .map(|chunk| chunk.first)
        .collect()
}

/// An instance's history chunks come back in order of their first entry numbers, after a
/// reopen; a dropped chunk is gone; another instance's chunks are its own.
pub fn history_chunks_are_kept_in_order_and_a_dropped_one_is_gone(harness: &dyn Harness) {
    let store = harness.open();
    let mut first = vec![put(&ready(1, "1.0.0")), start("1.0.0")];
    first.extend((0..3).map(|seq| history_chunk(1, seq)));
    first.push(history_chunk(2, 0));
    apply(store.as_ref(), &[put(&ready(2, "1.0.0")), start("1.0.0")]);
    apply(store.as_ref(), &first);
    let store = reopen(harness, store);
    let mut later = vec![put(&ready_as_held(store.as_ref(), 1, "1.0.0"))];
    later.extend((3..6).map(|seq| history_chunk(1, seq)));
    later.push(Op::DropHistoryChunk {
        instance: InstanceId(1),
        first: 1,
    });
    apply(store.as_ref(), &later);

    let everything = store.history(InstanceId(1)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        everything,
        [0, 2, 3, 4, 5]
            .map(|first| StoredHistoryChunk {
                first,
                entries: format!("chunk {first} of 1").into_bytes(),
            })
            .to_vec()
    );
    assert_eq!(history_numbers(store.as_ref(), 2), [0]);
    assert_eq!(history_numbers(store.as_ref(), 3), Vec::<u64>::new());
}

/// The bound drops a whole span of chunks in one write (`strata_core::history::
/// HISTORY_FOLD_SPAN`), and a chunk at a time where it cannot: either way those chunks are gone,
/// after a reopen too, and the first chunk and the ones after stay.
pub fn a_span_of_history_chunks_dropped_in_one_write_is_gone_and_the_rest_stay(harness: &dyn Harness) {
    let chunk = strata_core::history::HISTORY_CHUNK;
    let span = strata_core::history::HISTORY_FOLD_SPAN;
    let store = harness.open();
    let mut written = vec![put(&ready(1, "1.0.0")), start("1.0.0")];
    written.extend((0..10).map(|index| history_chunk(1, index * chunk)));
    apply(store.as_ref(), &written);
    let held_record = ready_as_held(store.as_ref(), 1, "1.0.0");
    let rewrite = || put(&held_record);
    let mut span_dropped = vec![rewrite()];
    span_dropped.extend((10..18).map(|index| history_chunk(1, index * chunk)));
    span_dropped.extend(
        (chunk..chunk + span)
            .step_by(chunk as usize)
            .map(|first| Op::DropHistoryChunk {
                instance: InstanceId(1),
                first,
            }),
    );
    apply(store.as_ref(), &span_dropped);
    let after_span: Vec<u64> = std::iter::once(0)
        .chain((chunk + span..18 * chunk).step_by(chunk as usize))
        .collect();
    assert_eq!(history_numbers(store.as_ref(), 1), after_span);
    apply(
        store.as_ref(),
        &[
            rewrite(),
            Op::DropHistoryChunk {
                instance: InstanceId(1),
                first: chunk + span,
            },
        ],
    );
    let store = reopen(harness, store);
    assert_eq!(
        history_numbers(store.as_ref(), 1),
        [&[0][..], &after_span[2..]].concat()
    );
    let stored = store.history(InstanceId(1)).unwrap_or_else(|error| panic!("{error}"));
    assert!(stored
        .iter()
        .all(|kept| kept.entries == format!("chunk {} of 1", kept.first).into_bytes()));
}

/// A write refused after its history chunk was taken in stores none of it, and the chunks the
/// next writes add follow the ones stored before: a store that appends a chunk to what it
/// holds of a segment (the embedded store) must not hold what a refused write made of it.
pub fn a_history_chunk_in_a_refused_write_is_not_stored_and_the_next_follows_the_stored_ones(harness: &dyn Harness) {
    let chunk = strata_core::history::HISTORY_CHUNK;
    let store = harness.open();
    let fire = || Op::PutScheduleFire {
        schedule: "nightly".to_string(),
        fire_ms: 5,
    };
    apply(
        store.as_ref(),
        &[put(&ready(1, "1.0.0")), start("1.0.0"), history_chunk(1, 0), fire()],
    );
    let held_record = ready_as_held(store.as_ref(), 1, "1.0.0");
    let rewrite = || put(&held_record);
    apply(store.as_ref(), &[rewrite(), history_chunk(1, chunk)]);
    // Refused while its ops are read, and when the whole write is checked after them.
    let refused = store.apply(&[rewrite(), history_chunk(1, 2 * chunk), fire()]);
    assert!(matches!(refused, Err(StoreError::FireTaken { .. })), "{refused:?}");
    let refused = store.apply(&[
        rewrite(),
        history_chunk(1, 2 * chunk),
        start("1.0.0"),
        set("1.0.0", VersionStatus::Draining),
    ]);
    assert!(
        matches!(refused, Err(StoreError::VersionNotAccepting { .. })),
        "{refused:?}"
    );
    apply(store.as_ref(), &[rewrite(), history_chunk(1, 3 * chunk)]);
    apply(store.as_ref(), &[rewrite(), history_chunk(1, 4 * chunk)]);
    let expected = [0, chunk, 3 * chunk, 4 * chunk];
    assert_eq!(history_numbers(store.as_ref(), 1), expected);
    let store = reopen(harness, store);
    assert_eq!(history_numbers(store.as_ref(), 1), expected, "after a reopen");
}

/// Retention removes an instance's history with the instance, and leaves a live one's.
pub fn retention_removes_an_instances_history_with_it(harness: &dyn Harness) {
    let store = harness.open();
    let mut done = record(
        2,
        "1.0.0",
        Phase::Failed {
            reason: "no".to_string(),
        },
    );
    done.updated_at_ms = 100;
    apply(
        store.as_ref(),
        &[
            put(&done),
            start("1.0.0"),
            finish("1.0.0", InstanceStatus::Failed),
            history_chunk(2, 0),
            history_chunk(2, 1),
        ],
    );
    apply(
        store.as_ref(),
        &[put(&ready(3, "1.0.0")), start("1.0.0"), history_chunk(3, 0)],
    );
    assert_eq!(history_numbers(store.as_ref(), 2), [0, 1]);
    while store.expire_finished(101, 10).unwrap_or_else(|error| panic!("{error}")) == 10 {}
    let store = reopen(harness, store);
    assert!(store
        .load_instance(InstanceId(2))
        .unwrap_or_else(|error| panic!("{error}"))
        .is_none());
    assert_eq!(history_numbers(store.as_ref(), 2), Vec::<u64>::new());
    assert_eq!(
        history_numbers(store.as_ref(), 3),
        [0],
        "a live instance keeps its history"
    );
}

/// A revival makes an ended instance live again, held by the reviving worker, in the write that
/// counts it; a second revival of it (another process's, from an older read) fails whole and
/// changes nothing; a `Drained` version the write gives live instances is `Draining` again, and
/// drains again when they end.
pub fn a_revived_instance_is_live_again_once_and_undrains_its_drained_version(harness: &dyn Harness) {
    let store = harness.open();
    apply(store.as_ref(), &[put(&ready(1, "1.0.0")), start("1.0.0")]);
    let (holding, _, _) = held(store.as_ref());
    let mut failed = record(
        1,
        "1.0.0",
        Phase::Failed {
            reason: "card declined".to_string(),
        },
    );
    failed.claim = claim_of(&holding, 1);
    apply(store.as_ref(), &[put(&failed), finish("1.0.0", InstanceStatus::Failed)]);
    let drained = apply(store.as_ref(), &[set("1.0.0", VersionStatus::Draining)]);
    assert_eq!(drained.drained, vec![key("1.0.0")]);

    let ended = store
        .load_instance(InstanceId(1))
        .unwrap_or_else(|error| panic!("{error}"))
        .unwrap_or_else(|| panic!("the failed instance is stored"));
    let mut revived = ready(1, "1.0.0");
    revived.claim = ended.claim + 1;
    let revival = [
        Op::ReviveInstance(revived.encode().unwrap_or_else(|error| panic!("{error}"))),
        Op::AdjustCounters {
            key: key("1.0.0"),
            delta: CounterDelta::revived(1),
        },
    ];
    let applied = apply(store.as_ref(), &revival);
    let reported = applied.versions.iter().find(|version| version.key == key("1.0.0"));
    assert_eq!(
        reported.and_then(|version| version.status),
        Some(VersionStatus::Draining),
        "a drained version given a live instance is draining again, in the same write"
    );
    assert!(applied.drained.is_empty());
    let again = store.apply(&revival);
    assert!(
        matches!(&again, Err(StoreError::NoLongerEnded { ids }) if ids == &[InstanceId(1)]),
        "{again:?}"
    );
    let counters = stored(store.as_ref(), "1.0.0").counters;
    assert_eq!(
        (counters.live, counters.failed, counters.revived),
        (1, 1, 1),
        "the refused revival counted nothing; the failure stays counted"
    );

    let store = reopen(harness, store);
    let (held_live, _, _) = held(store.as_ref());
    assert_eq!(unclaimed(&held_live), unclaimed(&[revived]));
    let scope = ListScope {
        workflow: Some("w".to_string()),
        version: None,
        after: None,
        newest_first: false,
        held_here: false,
    };
    let listed = store
        .finished_instances(&scope, &mut |_| true, 10)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(listed.is_empty(), "a revived instance is no longer listed as finished");

    let mut done = record(1, "1.0.0", Phase::Completed { output: vec![0xc3] });
    done.claim = claim_of(&held_live, 1);
    let last = apply(
        store.as_ref(),
        &[put(&done), finish("1.0.0", InstanceStatus::Completed)],
    );
    assert_eq!(
        last.drained,
        vec![key("1.0.0")],
        "it drains again when the revived one ends"
    );
    let after = stored(store.as_ref(), "1.0.0");
    assert_eq!(
        (
            after.status,
            after.counters.live,
            after.counters.failed,
            after.counters.completed
        ),
        (Some(VersionStatus::Drained), 0, 1, 1)
    );
}

/// Finished instances are listed oldest or newest first, from a cursor, by the whole store's
/// scan and by a workflow's index alike; live ones held elsewhere come in the scope's order.
pub fn listings_page_in_either_order_from_a_cursor(harness: &dyn Harness) {
    let store = harness.open();
    let mut ops = Vec::new();
    for id in 1..=5 {
        ops.push(put(&ready(id, "1.0.0")));
        ops.push(start("1.0.0"));
    }
    apply(store.as_ref(), &ops);
    let (holding, _, _) = held(store.as_ref());
    let mut finishing = Vec::new();
    for id in [1, 2, 4] {
        let mut done = record(id, "1.0.0", Phase::Completed { output: vec![0xc3] });
        done.claim = claim_of(&holding, id);
        finishing.push(put(&done));
        finishing.push(finish("1.0.0", InstanceStatus::Completed));
    }
    apply(store.as_ref(), &finishing);
    let ids = |records: Vec<InstanceRecord>| records.iter().map(|record| record.id.0).collect::<Vec<_>>();
    for workflow in [None, Some("w".to_string())] {
        let scope = |after: Option<u64>, newest_first: bool| ListScope {
            workflow: workflow.clone(),
            version: None,
            after: after.map(InstanceId),
            newest_first,
            held_here: false,
        };
        let listed = |scope: ListScope, limit: usize| {
            ids(store
                .finished_instances(&scope, &mut |_| true, limit)
                .unwrap_or_else(|error| panic!("{error}")))
        };
        assert_eq!(listed(scope(None, false), 10), [1, 2, 4], "{workflow:?}");
        assert_eq!(listed(scope(None, true), 10), [4, 2, 1], "{workflow:?}");
        assert_eq!(listed(scope(Some(4), true), 1), [2], "{workflow:?}: below the cursor");
        assert_eq!(
            listed(scope(Some(1), false), 10),
            [2, 4],
            "{workflow:?}: above the cursor"
        );
        assert!(listed(scope(Some(1), true), 10).is_empty(), "{workflow:?}");
        // The live ones (3 and 5, both held here) below the cursor, also when only this worker's
        // are asked for.
        for held_here in [false, true] {
            let live = ids(store
                .cluster()
                .live_held_elsewhere(
                    &ListScope {
                        held_here,
                        ..scope(Some(5), true)
                    },
                    &mut |_| true,
                    10,
                )
                .unwrap_or_else(|error| panic!("{error}")));
            assert_eq!(live, [3], "{workflow:?}, held here only: {held_here}");
        }
    }
}

/// What finishing instances recorded adds up per measure, exactly, in the counters of the
/// version they finished on; shadow instances count apart (but for `live`); a compared shadow
/// pair is kept by rollout and real instance, a second write of it replacing the first, and
/// retention removes it with its real instance.
pub fn measure_and_shadow_counts_add_up_and_shadow_pairs_are_kept_by_rollout(harness: &dyn Harness) {
    use strata_core::measure::{MeasureTotal, MeasureTotals};
    let cost = |units: i64, count: u64| -> MeasureTotals {
        [(
            "cost".to_string(),
            MeasureTotal {
                sum_units: units,
                count,
            },
        )]
        .into()
    };
    let store = harness.open();
    apply(store.as_ref(), &[put(&ready(1, "1.0.0")), start("1.0.0")]);
    apply(store.as_ref(), &[put(&ready(2, "1.0.0")), start("1.0.0")]);
    let finished = |id: u64, units: i64| {
        let mut record = record(id, "1.0.0", Phase::Completed { output: vec![0x90] });
        record.measures = cost(units, 2);
        record.updated_at_ms = 100 * id;
        record
    };
    let (holding, _, _) = held(store.as_ref());
    for (id, units) in [(1, 250_000), (2, 1_000_001)] {
        let mut record = finished(id, units);
        record.claim = claim_of(&holding, id);
        let delta = CounterDelta {
            measures: record.measures.clone(),
            ..CounterDelta::finish(InstanceStatus::Completed)
        };
        apply(
            store.as_ref(),
            &[
                put(&record),
                Op::AdjustCounters {
                    key: key("1.0.0"),
                    delta,
                },
            ],
        );
    }
    // A shadow of 2.0.0 starts and finishes: only its shadow counts (and live while it runs).
    let shadow_start = Op::AdjustCounters {
        key: key("2.0.0"),
        delta: CounterDelta::shadow_start(),
    };
    let mut shadow = ready(3, "2.0.0");
    shadow.shadow_of = Some(InstanceId(1));
    apply(store.as_ref(), &[put(&shadow), shadow_start]);
    assert_eq!(stored(store.as_ref(), "2.0.0").counters.live, 1);
    let (holding, _, _) = held(store.as_ref());
    let mut ended = record(3, "2.0.0", Phase::Completed { output: vec![0x90] });
    ended.shadow_of = Some(InstanceId(1));
    ended.claim = claim_of(&holding, 3);
    let shadow_end = CounterDelta::shadow_finish(InstanceStatus::Completed, cost(500_000, 1));
    apply(
        store.as_ref(),
        &[
            put(&ended),
            Op::AdjustCounters {
                key: key("2.0.0"),
                delta: shadow_end,
            },
        ],
    );
    let pair = |matched: bool| strata_core::shadow::ShadowPair {
        rollout: "w@2.0.0".to_string(),
        real: InstanceId(1),
        shadow: InstanceId(3),
        stable: semver::Version::new(1, 0, 0),
        candidate: semver::Version::new(2, 0, 0),
        compared_ms: 5,
        matched,
        diff: (!matched).then(|| "total: 1 → 2".to_string()),
        real_status: InstanceStatus::Completed,
        shadow_status: InstanceStatus::Completed,
        real_took_ms: 3,
        shadow_took_ms: 4,
        real_measures: cost(250_000, 2),
        shadow_measures: cost(500_000, 1),
    };
    apply(store.as_ref(), &[Op::PutShadowPair(Box::new(pair(false)))]);
    apply(store.as_ref(), &[Op::PutShadowPair(Box::new(pair(true)))]);
    // Writes that add no measures (a start, status writes) keep both versions' totals.
    apply(store.as_ref(), &[put(&ready(4, "1.0.0")), start("1.0.0")]);
    apply(
        store.as_ref(),
        &[set("1.0.0", VersionStatus::Active), set("2.0.0", VersionStatus::Active)],
    );
    let store = reopen(harness, store);
    let stable = stored(store.as_ref(), "1.0.0").counters;
    assert_eq!(stable.measures, cost(1_250_001, 4), "exact, in millionths");
    let candidate = stored(store.as_ref(), "2.0.0").counters;
    assert_eq!((candidate.live, candidate.started, candidate.completed), (0, 0, 0));
    assert_eq!((candidate.shadow.started, candidate.shadow.completed), (1, 1));
    assert_eq!(candidate.shadow.measures, cost(500_000, 1));
    assert!(candidate.measures.is_empty());
    let pairs = store.shadow_pairs("w@2.0.0").unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(pairs, vec![pair(true)], "the second write replaced the first");
    assert!(
        store
            .shadow_pairs("w@2.0.")
            .unwrap_or_else(|error| panic!("{error}"))
            .is_empty(),
        "a name is not a prefix"
    );
    // Retention: instance 1 (finished at 100) goes, and its pair with it; instance 2 stays.
    while store.expire_finished(150, 10).unwrap_or_else(|error| panic!("{error}")) == 10 {}
    let store = reopen(harness, store);
    let loaded = |id: u64| {
        store
            .load_instance(InstanceId(id))
            .unwrap_or_else(|error| panic!("{error}"))
    };
    assert!(loaded(1).is_none() && loaded(2).is_some());
    assert!(store
        .shadow_pairs("w@2.0.0")
        .unwrap_or_else(|error| panic!("{error}"))
        .is_empty());
}
