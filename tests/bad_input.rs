//! Bad input gets a clear typed error and loses nothing: unknown workflows, versions and
//! instances, payloads that do not decode, corrupt records, panicking steps, a failing disk, a
//! store of a newer format, invalid definitions. The behaviours that are not about sled's files
//! run on sled and on PostgreSQL.

mod common;

use strata::prelude::*;
use strata::store::BackendFailure;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use strata::instance::{InstanceRecord, StateEnvelope};
use strata::registry::RegistryError;
use strata::store::{AppliedConfig, CorruptRecord, SledStore, Store, StoreError, StoreStats};
use strata::{
    Engine, EngineError, Event, InstanceId, InstanceStatus, Next, RetryPolicy, StartOptions, StepCtx, StepResult,
    WorkflowVersion,
};
use strata_store::{Applied, IdKind, Op, RecoveredState, StoredVersion};
use strata_workflows::order::{self, OrderOutput};

// What is not about sled's files runs on both stores.
on_sled_and_postgres!(
    unknown_workflows_versions_and_instances_are_named,
    signals_to_finished_instances_are_refused,
    payloads_that_do_not_decode_are_refused_before_anything_is_stored,
    a_panicking_step_is_a_failed_attempt_not_a_crashed_engine,
    invalid_definitions_are_refused_at_registration,
    user_code_that_panics_outside_a_step_gets_a_typed_error_and_changes_nothing,
);

async fn unknown_workflows_versions_and_instances_are_named(backend: Backend) {
    let engine = with_all(backend.builder()).open().await.unwrap();
    let error = engine.start("invoice", &1u32).await.unwrap_err();
    assert!(
        matches!(&error, EngineError::Registry(RegistryError::UnknownWorkflow { workflow }) if workflow == "invoice")
    );
    let error = engine
        .start_with(order::WORKFLOW, &small_order(1), StartOptions::new().version("^9"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, EngineError::Registry(RegistryError::NoRoutableVersion { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("1.0.0 (Active)"),
        "the error lists the versions: {error}"
    );
    let error = engine
        .start_with(order::WORKFLOW, &small_order(1), StartOptions::new().version("one"))
        .await
        .unwrap_err();
    assert!(matches!(error, EngineError::InvalidVersion { .. }), "{error}");
    let error = engine.drain(order::WORKFLOW, "7.0.0").await.unwrap_err();
    assert!(
        matches!(error, EngineError::Registry(RegistryError::UnknownVersion { .. })),
        "{error}"
    );
    let error = engine.signal(InstanceId(999), "payment", &()).await.unwrap_err();
    assert!(
        matches!(error, EngineError::UnknownInstance { id: InstanceId(999) }),
        "{error}"
    );
    let error = engine.cancel(InstanceId(999)).await.unwrap_err();
    assert!(matches!(error, EngineError::UnknownInstance { .. }), "{error}");
    assert!(
        engine.versions().iter().all(|info| info.counters.started == 0),
        "nothing was started"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_with_no_store_or_two_is_refused_at_open_naming_the_calls() {
    match Engine::builder().open().await {
        Err(error @ EngineError::NoStore) => {
            let message = error.to_string();
            assert!(
                message.contains("data_dir") && message.contains("postgres"),
                "{message}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("an engine opened without a store"),
    }
    let given = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(given.path()).unwrap());
    let chosen = tempfile::tempdir().unwrap();
    let directory = chosen.path().join("data");
    // Either order: the second store is not silently dropped.
    let twice = [
        Engine::builder().store(store.clone()).data_dir(&directory),
        Engine::builder().data_dir(&directory).store(store.clone()),
    ];
    for builder in twice {
        match builder.open().await {
            Err(error @ EngineError::StoreGivenTwice) => {
                assert!(error.to_string().contains("keep one"), "{error}")
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("an engine opened on one of two stores"),
        }
    }
    assert!(
        !directory.exists(),
        "the data directory was opened although open was refused"
    );
}

async fn signals_to_finished_instances_are_refused(backend: Backend) {
    let engine = backend.builder().register(order::v1_0()).open().await.unwrap();
    let id = engine.start(order::WORKFLOW, &small_order(1)).await.unwrap();
    engine.cancel(id).await.unwrap();
    assert_eq!(engine.instance(id).unwrap().status, InstanceStatus::Cancelled);
    let error = engine
        .signal(id, order::PAYMENT_SIGNAL, &full_payment(&small_order(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, EngineError::InstanceFinished { .. }), "{error}");
    let error = engine.cancel(id).await.unwrap_err();
    assert!(matches!(error, EngineError::InstanceFinished { .. }), "{error}");
    let counters = engine.version(order::WORKFLOW, "1.0.0").unwrap().counters;
    assert_eq!((counters.live, counters.cancelled), (0, 1));
    engine.shutdown().await;
}

async fn payloads_that_do_not_decode_are_refused_before_anything_is_stored(backend: Backend) {
    let engine = backend.builder().register(order::v1_0()).open().await.unwrap();
    let error = engine.start(order::WORKFLOW, "not an order").await.unwrap_err();
    assert!(matches!(error, EngineError::InputDecode { .. }), "{error}");
    assert_eq!(engine.version(order::WORKFLOW, "1.0.0").unwrap().counters.started, 0);

    let input = small_order(1);
    let id = engine.start(order::WORKFLOW, &input).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    let error = engine
        .signal(id, order::PAYMENT_SIGNAL, &"a lot of money")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, EngineError::SignalDecode { name, .. } if name == "payment"),
        "{error}"
    );
    assert_eq!(
        engine.instance(id).unwrap().status,
        InstanceStatus::WaitingSignal,
        "the instance was disturbed"
    );
    engine
        .signal(id, order::PAYMENT_SIGNAL, &full_payment(&input))
        .await
        .unwrap();
    let output: OrderOutput = outcome_within(&engine, id).await.output().unwrap();
    assert_eq!(output.status, "shipped");
    engine.shutdown().await;
}

async fn panics_once(ctx: StepCtx, state: &mut u32) -> StepResult<u32> {
    if ctx.attempt() == 1 {
        panic!("boom on attempt {}", ctx.attempt());
    }
    *state += 1;
    Ok(Next::complete(*state))
}

async fn always_panics(_ctx: StepCtx, _state: &mut u32) -> StepResult<u32> {
    panic!("always broken");
}

fn panicky() -> WorkflowVersion<u32, u32, u32> {
    let retry = RetryPolicy::exponential(3, Duration::from_millis(5));
    WorkflowVersion::new("panicky", "1.0.0")
        .init(|value: u32| value)
        .default_retry(retry)
        .step("panics_once", panics_once)
}

fn always_panicky() -> WorkflowVersion<u32, u32, u32> {
    let retry = RetryPolicy::exponential(3, Duration::from_millis(5));
    WorkflowVersion::new("always_panicky", "1.0.0")
        .init(|value: u32| value)
        .default_retry(retry)
        .step("always_panics", always_panics)
}

async fn a_panicking_step_is_a_failed_attempt_not_a_crashed_engine(backend: Backend) {
    let engine = backend
        .builder()
        .register(panicky())
        .register(always_panicky())
        .open()
        .await
        .unwrap();
    let retried = engine.start("panicky", &1u32).await.unwrap();
    let broken = engine.start("always_panicky", &1u32).await.unwrap();
    let output: u32 = outcome_within(&engine, retried).await.output().unwrap();
    assert_eq!(output, 2);
    let outcome = outcome_within(&engine, broken).await;
    let strata::Outcome::Failed(reason) = outcome else {
        panic!("expected a failure, got {outcome:?}")
    };
    assert!(
        reason.contains("attempt 3") && reason.contains("always broken"),
        "{reason}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_quarantined_and_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder(dir.path()).register(order::v1_0()).open().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = engine.start(order::WORKFLOW, &small_order(n)).await.unwrap();
        wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
        ids.push(id);
    }
    let damaged_state = engine.instance(ids[1]).unwrap().record;
    engine.shutdown().await;
    {
        // Damage one record's bytes and another record's state, as a bad disk or a bug would.
        let store = SledStore::open(dir.path()).unwrap();
        let record = InstanceRecord {
            state: StateEnvelope {
                schema: 1,
                bytes: vec![0xc1, 0x00],
            },
            ..damaged_state
        };
        store.apply(&[Op::PutInstance(record.encode().unwrap())]).unwrap();
        store.sync().unwrap();
        drop(store);
        // sled's threads of the store just dropped may hold its lock a moment longer.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let db = loop {
            match ::sled::open(dir.path()) {
                Ok(db) => break db,
                Err(error) if std::time::Instant::now() < deadline => {
                    eprintln!("waiting for sled's lock: {error}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => panic!("{error}"),
            }
        };
        let mut key = b"i/".to_vec();
        key.extend_from_slice(&ids[0].0.to_be_bytes());
        db.insert(key, &b"\xff\xfe garbage"[..]).unwrap();
        db.flush().unwrap();
    }
    // Every live instance loaded at open, so the damaged record is met at once (with the
    // default horizon it is met when it comes due or is asked for).
    let engine = builder(dir.path())
        .residency_horizon(Duration::MAX)
        .register(order::v1_0())
        .open()
        .await
        .unwrap();
    let quarantined = engine.quarantined_records().unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].id, ids[0]);
    // The damaged state is found when the step runs; only that instance stops.
    let mut events = engine.subscribe();
    engine
        .signal(ids[1], order::PAYMENT_SIGNAL, &full_payment(&small_order(1)))
        .await
        .unwrap();
    let event = wait_for_event(&mut events, |event| matches!(event, Event::InstanceQuarantined { .. })).await;
    let Event::InstanceQuarantined { id, reason } = event else {
        unreachable!()
    };
    assert_eq!(id, ids[1]);
    assert!(reason.contains("does not decode"), "{reason}");
    assert_eq!(engine.instance(ids[1]).unwrap().status, InstanceStatus::Quarantined);
    engine
        .signal(ids[2], order::PAYMENT_SIGNAL, &full_payment(&small_order(2)))
        .await
        .unwrap();
    let output: OrderOutput = outcome_within(&engine, ids[2]).await.output().unwrap();
    assert_eq!(output.status, "shipped");
    // An operator can cancel the quarantined instance; the counts stay exact.
    engine.cancel(ids[1]).await.unwrap();
    engine.shutdown().await;
}

/// A store whose writes fail while `failing` is set, as with a full disk.
struct FailingStore {
    inner: SledStore,
    failing: AtomicBool,
    rejected: AtomicUsize,
}

impl Store for FailingStore {
    fn cluster(&self) -> &dyn strata::store::Cluster {
        self.inner.cluster()
    }

    fn apply(&self, ops: &[Op]) -> Result<Applied, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            self.rejected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::failed("apply", "No space left on device (os error 28)"));
        }
        self.inner.apply(ops)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }
    fn versions(&self) -> Result<Vec<StoredVersion>, StoreError> {
        self.inner.versions()
    }
    fn recover(&self, through_ms: u64) -> Result<RecoveredState, StoreError> {
        self.inner.recover(through_ms)
    }
    fn due_held(
        &self,
        after: Option<(u64, InstanceId)>,
        through_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InstanceId)>, StoreError> {
        self.inner.due_held(after, through_ms, limit)
    }
    fn load_held(&self, ids: &[InstanceId]) -> Result<strata_store::Claimed, StoreError> {
        self.inner.load_held(ids)
    }
    fn reserve_ids(&self, kind: IdKind) -> Result<std::ops::Range<u64>, StoreError> {
        self.inner.reserve_ids(kind)
    }
    fn load_instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        self.inner.load_instance(id)
    }
    fn live_instances(
        &self,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.inner.live_instances(keep, limit)
    }
    fn finished_instances(
        &self,
        scope: &strata_store::ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.inner.finished_instances(scope, keep, limit)
    }
    fn expire_finished(&self, finished_before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        self.inner.expire_finished(finished_before_ms, limit)
    }
    fn highest_removed_id(&self) -> Result<u64, StoreError> {
        self.inner.highest_removed_id()
    }
    fn history(&self, instance: InstanceId) -> Result<Vec<strata_store::StoredHistoryChunk>, StoreError> {
        self.inner.history(instance)
    }
    fn quarantined(&self) -> Result<Vec<CorruptRecord>, StoreError> {
        self.inner.quarantined()
    }
    fn config_history(&self) -> Result<Vec<AppliedConfig>, StoreError> {
        self.inner.config_history()
    }
    fn schedule_fires(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.schedule_fires()
    }
    fn migration_jobs(&self) -> Result<Vec<strata_store::MigrationJobRecord>, StoreError> {
        self.inner.migration_jobs()
    }
    fn rollouts(&self) -> Result<Vec<strata::rollout::RolloutRecord>, StoreError> {
        self.inner.rollouts()
    }
    fn shadow_pairs(&self, rollout: &str) -> Result<Vec<strata::shadow::ShadowPair>, StoreError> {
        self.inner.shadow_pairs(rollout)
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

async fn count_then_nap(_ctx: StepCtx, state: &mut u32) -> StepResult<u32> {
    *state += 1;
    Ok(Next::sleep(Duration::from_millis(100), "finish"))
}

async fn finish(_ctx: StepCtx, state: &mut u32) -> StepResult<u32> {
    *state += 100;
    Ok(Next::complete(*state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_keeps_instances_at_their_last_committed_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FailingStore {
        inner: SledStore::open(dir.path()).unwrap(),
        failing: AtomicBool::new(false),
        rejected: AtomicUsize::new(0),
    });
    let version = WorkflowVersion::new("napper", "1.0.0")
        .init(|value: u32| value)
        .step("count_then_nap", count_then_nap)
        .step("finish", finish);
    let engine = Engine::builder()
        .store(store.clone())
        .commit_retry_delay(Duration::from_millis(20))
        .register(version)
        .open()
        .await
        .unwrap();
    let id = engine.start("napper", &0u32).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::Sleeping).await;
    store.failing.store(true, Ordering::SeqCst);
    let error = engine.start("napper", &0u32).await.unwrap_err();
    assert!(
        matches!(&error, EngineError::Store(StoreError::Backend { .. })),
        "{error}"
    );
    assert!(error.to_string().contains("No space left"), "{error}");
    // The nap ends and `finish` runs, but its commit fails (again and again): the instance stays
    // at its last committed step.
    let rejected = store.rejected.load(Ordering::SeqCst);
    wait_until(&engine, |_| store.rejected.load(Ordering::SeqCst) >= rejected + 3).await;
    let record = engine.instance(id).unwrap().record;
    assert_eq!((record.step.as_str(), record.visits), ("finish", 1));
    assert_eq!(engine.instance(id).unwrap().state::<u32>().unwrap(), 1);
    assert_eq!(engine.version("napper", "1.0.0").unwrap().counters.started, 1);
    store.failing.store(false, Ordering::SeqCst);
    let output: u32 = outcome_within(&engine, id).await.output().unwrap();
    assert_eq!(output, 101, "a step's effect on the state was committed more than once");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(dir.path()).unwrap();
        db.insert(b"m/format", rmp_serde::to_vec(&99u32).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let Err(error) = builder_with_all(dir.path()).open().await else {
        panic!("opened a store of format 99")
    };
    assert!(
        matches!(
            &error,
            EngineError::Store(StoreError::Backend {
                kind: BackendFailure::Newer,
                ..
            })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("record format 99"), "{error}");
    assert!(error.to_string().contains("upgrade Strata"), "{error}");
}

async fn noop(_ctx: StepCtx, _state: &mut u32) -> StepResult<u32> {
    Ok(Next::complete(0))
}

async fn invalid_definitions_are_refused_at_registration(backend: Backend) {
    let engine = backend.builder().open().await.unwrap();
    let cases: Vec<(WorkflowVersion<u32, u32, u32>, &str)> = vec![
        (
            WorkflowVersion::new("w", "one").init(|v| v).step("a", noop),
            "not a semantic version",
        ),
        (WorkflowVersion::new("w", "1.0.0").init(|v| v), "at least one step"),
        (WorkflowVersion::new("w", "1.0.0").step("a", noop), ".init"),
        (
            WorkflowVersion::new("w", "1.0.0")
                .init(|v| v)
                .step("a", noop)
                .step("a", noop),
            "defined twice",
        ),
        (
            WorkflowVersion::new("w", "1.0.0")
                .init(|v| v)
                .step("a", noop)
                .entry("b"),
            "entry step 'b'",
        ),
        (
            WorkflowVersion::new(" ", "1.0.0").init(|v| v).step("a", noop),
            "non-empty name",
        ),
    ];
    for (version, expected) in cases {
        let error = engine.register(version).unwrap_err();
        assert!(matches!(error, EngineError::Definition(_)), "{error}");
        assert!(
            error.to_string().contains(expected),
            "'{error}' does not say '{expected}'"
        );
    }
    engine
        .register(WorkflowVersion::new("w", "1.0.0").init(|v: u32| v).step("a", noop))
        .unwrap();
    let error = engine
        .register(WorkflowVersion::new("w", "1.0.0").init(|v: u32| v).step("a", noop))
        .unwrap_err();
    assert!(
        matches!(error, EngineError::Registry(RegistryError::AlreadyRegistered { .. })),
        "{error}"
    );
    engine.shutdown().await;
}

/// A type whose serde impls panic: user code the engine runs outside a step.
#[derive(Debug)]
struct Touchy;

impl serde::Serialize for Touchy {
    fn serialize<S: serde::Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
        panic!("touchy serialize")
    }
}

impl<'de> serde::Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(_deserializer: D) -> Result<Self, D::Error> {
        panic!("touchy deserialize")
    }
}

async fn wait_for_poke(_ctx: StepCtx, _state: &mut u32) -> StepResult<u32> {
    Ok(Next::wait_signal("go", "finish"))
}

async fn finish_poked(_ctx: StepCtx, state: &mut u32) -> StepResult<u32> {
    Ok(Next::complete(*state))
}

/// `init` panics for input 13; signal `poke` is declared with a type whose decoding panics.
fn touchy() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new("touchy", "1.0.0")
        .init(|n: u32| {
            assert_ne!(n, 13, "unlucky input");
            n
        })
        .signal_type::<Touchy>("poke")
        .signal_type::<u32>("go")
        .step("wait", wait_for_poke)
        .step("finish", finish_poked)
}

async fn user_code_that_panics_outside_a_step_gets_a_typed_error_and_changes_nothing(backend: Backend) {
    let engine = backend.builder().register(touchy()).open().await.unwrap();

    // A panicking init, even in a task of the caller's: a typed error naming the version and the
    // panic, never a JoinError, and nothing started.
    let spawned = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.start("touchy", &13u32).await })
    };
    let error = spawned.await.expect("the caller's task does not panic").unwrap_err();
    assert!(
        matches!(&error, EngineError::Init { key, reason } if key.to_string() == "touchy@1.0.0" && reason.contains("unlucky input")),
        "{error}"
    );
    assert!(error.to_string().contains("nothing was started"), "{error}");
    let info = engine.version("touchy", "1.0.0").unwrap();
    assert_eq!((info.counters.started, info.counters.live), (0, 0));
    assert!(engine.list(&strata::InstanceFilter::default()).unwrap().is_empty());

    // An input whose Serialize panics.
    let error = engine.start("touchy", &Touchy).await.unwrap_err();
    assert!(
        matches!(&error, EngineError::Encode { what: "input", reason } if reason.contains("touchy serialize")),
        "{error}"
    );

    // A signal whose declared payload type panics while decoding: refused, nothing delivered.
    let id = engine.start("touchy", &1u32).await.unwrap();
    wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    let error = engine.signal(id, "poke", &0u32).await.unwrap_err();
    assert!(
        matches!(&error, EngineError::SignalDecode { reason, .. } if reason.contains("touchy deserialize")),
        "{error}"
    );
    assert_eq!(engine.instance(id).unwrap().status, InstanceStatus::WaitingSignal);
    let error = engine.signal(id, "go", &Touchy).await.unwrap_err();
    assert!(
        matches!(
            error,
            EngineError::Encode {
                what: "signal payload",
                ..
            }
        ),
        "{error}"
    );

    // A state or an output read as a type whose Deserialize panics.
    let error = engine.instance(id).unwrap().state::<Touchy>().unwrap_err();
    assert!(matches!(error, EngineError::Decode { what: "state", .. }), "{error}");
    engine.signal(id, "go", &5u32).await.unwrap();
    let error = engine.output::<Touchy>(id).await.unwrap_err();
    assert!(
        matches!(&error, EngineError::Decode { what: "output", reason } if reason.contains("touchy deserialize")),
        "{error}"
    );
    assert_eq!(engine.output::<u32>(id).await.unwrap(), 1);

    // Residency stayed exact throughout, and the engine goes on.
    let info = engine.version("touchy", "1.0.0").unwrap();
    assert_eq!(
        (info.counters.started, info.counters.live, info.counters.completed),
        (1, 0, 1)
    );
    engine.drain("touchy", "1.0.0").await.unwrap();
    engine.retire("touchy", "1.0.0").await.unwrap();
    engine.shutdown().await;
}
