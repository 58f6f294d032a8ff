//! The executor: recovery at open, scheduling with one step at a time per instance, durable
//! timers, signals, cancellation, outcomes and graceful shutdown.
//!
//! Owns the in-memory table of live instances and the commit thread. Every change to an instance
//! is committed through the `Committer` before memory changes, so memory never runs ahead of the
//! store. It reads code from the registry and never calls up into the `Engine` facade.
//!
//! `Runtime` is one type whose methods are kept by concern in the files beside this one
//! (`cluster`, `retention`, `rollouts`: `impl Runtime` blocks there), so those files name
//! `Runtime` from here; this file calls them only through those methods.

mod cluster;
mod committer;
mod driver;
mod migrator;
mod moves;
mod residency;
mod retention;
mod revive;
mod rollouts;
mod table;
mod timers;
mod transition;

pub use committer::Durability;
use residency::Holder;
pub(crate) use residency::DEFAULT_RESIDENCY_HORIZON;
pub(crate) use retention::DEFAULT_RETENTION;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, Notify, Semaphore};

use crate::error::EngineError;
use crate::instance::{HistoryItem, HistoryRequest, InstanceFilter, InstanceHistory, InstanceInfo, Outcome};
use crate::migrate::{JobControl, MigrationChains, StateMigration, StepMapping, StepMappings};
use crate::observe::{Clock, Event, EventBus};
use crate::registry::{Registry, VersionInfo, VersionStatus};
use crate::store::{CounterDelta, IdKind, Op, SignalRecord, Store, StoreError};
use cluster::IdBlocks;
use committer::Committer;
use strata_core::history::{decode_entries, mark_revived_steps, HistoryEntry, HistoryEvent, HISTORY_CHUNK};
use strata_core::instance::{
    InstanceId, InstanceRecord, InstanceStatus, PersistedWake, Phase, ScheduledFire, StateEnvelope, VersionKey,
    RECORD_FORMAT,
};
use strata_core::routing::{RouteInput, RouteReason, RoutingSpec, RoutingTable, VersionRequest};
use strata_core::workflow::{InitFailure, VersionCode};
pub(crate) use table::EndRequest;
use table::{InstanceTable, Slot};
use timers::TimerQueue;

/// Settings of the runtime.
#[derive(Clone)]
pub(crate) struct RuntimeOptions {
    pub durability: Durability,
    pub max_concurrent_steps: usize,
    pub park_unregistered: bool,
    pub commit_retry_delay: Duration,
    pub event_capacity: usize,
    /// Whether per-version metrics are recorded.
    pub metrics: bool,
    /// The engine's clock.
    pub clock: Arc<dyn Clock>,
    /// How long a worker's claims last without a heartbeat, with a shared store.
    pub lease: Duration,
    /// How long finished instances are kept (zero: forever), unless the config file says.
    pub retention: Duration,
    /// How many history entries an instance keeps.
    pub history_limit: u32,
    /// How far ahead an idle instance must be due to stay resident.
    pub residency_horizon: Duration,
}

/// The executor behind an `Engine`.
pub(crate) struct Runtime {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub events: EventBus,
    options: RuntimeOptions,
    table: InstanceTable,
    timers: Arc<TimerQueue>,
    committer: Committer,
    permits: Arc<Semaphore>,
    /// The compiled routing table, read without a lock on every start.
    routing: arc_swap::ArcSwap<RoutingTable>,
    /// The routing rules in force, recompiled whenever the registry changes.
    routing_spec: parking_lot::Mutex<RoutingSpec>,
    /// How many started instances each version got, and why, since open.
    routing_counts: parking_lot::Mutex<HashMap<(VersionKey, RouteReason), u64>>,
    /// Instance ids, from blocks the store reserves.
    instance_ids: IdBlocks,
    /// Signal sequence numbers, likewise.
    signal_seqs: IdBlocks,
    stopping: AtomicBool,
    /// Turns true at shutdown, stopping background tasks such as config watchers.
    stop_signal: tokio::sync::watch::Sender<bool>,
    /// The internal tasks and batches in flight; shutdown waits until there are none.
    tasks: Arc<TaskCount>,
    /// The registered state migrations.
    migrations: parking_lot::RwLock<MigrationChains>,
    /// The registered step mappings between versions.
    step_mappings: parking_lot::RwLock<StepMappings>,
    /// The background migration jobs known since open, by workflow.
    jobs: parking_lot::Mutex<HashMap<String, Arc<JobControl>>>,
    /// Held while the background migrations are looked at (one look at a time).
    following_migrations: tokio::sync::Mutex<()>,
    /// Held while ended instances are revived (one revival at a time).
    reviving: tokio::sync::Mutex<()>,
    /// Told when an operator asks to terminate an instance, so its running step is abandoned.
    terminations: Notify,
    /// How long finished instances are kept (ms; 0: forever): the builder's, or the config's.
    retention_ms: AtomicU64,
    /// Told when the retention period changes, so the background pass follows at once.
    retention_changed: Notify,
    /// Watched rollouts.
    rollouts: rollouts::Rollouts,
    /// The number of the newest claim whose instances are in the table (with a shared store).
    claims_taken_in: AtomicU64,
    /// Versions already warned of as having live instances and no live worker.
    unrunnable: parking_lot::Mutex<std::collections::HashSet<VersionKey>>,
    /// Which held instances are resident (see `residency`).
    residency: residency::Residency,
}

pub(crate) use rollouts::RolloutOperation;

/// Counts internal tasks (drivers, timers, the scheduler, config watchers, migrations) and
/// batches in flight, so that shutdown can wait until none holds the runtime any more.
#[derive(Default)]
struct TaskCount {
    running: AtomicUsize,
    idle: Notify,
}

impl TaskCount {
    fn begin(&self) {
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// A commit's take-in tokens (see `committer::TakeIn`), to hand to `Runtime::announce` once the
/// caller has taken its commit in (announced what it did itself): a drained version is announced
/// by whoever hands its token in last, so after every commit of it was taken in.
#[must_use = "hand the tokens to Runtime::announce once the commit is taken in"]
pub(crate) struct TakeIns(Vec<Arc<committer::TakeIn>>);

impl TakeIns {
    /// No token: a write that touched no version.
    pub(crate) fn none() -> TakeIns {
        TakeIns(Vec::new())
    }

    /// The versions drained whose tokens this was the last holder of.
    fn take_last(&mut self) -> Vec<VersionKey> {
        self.0
            .drain(..)
            .filter_map(Arc::into_inner)
            .filter(|token| token.drained.load(std::sync::atomic::Ordering::Acquire))
            .map(|token| token.key)
            .collect()
    }
}

impl Drop for TakeIns {
    fn drop(&mut self) {
        // Tokens dropped without `announce` (a defect): say so rather than announce nothing.
        let keys = self.take_last();
        if !keys.is_empty() {
            tracing::error!(
                ?keys,
                "drained versions were never announced (a defect of Strata, please report it)"
            );
        }
    }
}

/// Ends one count of a `TaskCount` when dropped.
struct TaskEnd(Arc<TaskCount>);

impl Drop for TaskEnd {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// What a runtime is opened with besides its store and options.
#[derive(Default)]
pub(crate) struct Definitions {
    /// The versions' code.
    pub codes: Vec<Arc<dyn VersionCode>>,
    /// State migrations.
    pub migrations: Vec<StateMigration>,
    /// Step mappings between versions.
    pub step_mappings: Vec<StepMapping>,
}

impl Runtime {
    /// Recovers the store, registers `codes` and starts running the live instances due within
    /// the residency horizon (the rest are loaded as they come due).
    pub(crate) async fn open(
        store: Arc<dyn Store>,
        definitions: Definitions,
        options: RuntimeOptions,
    ) -> Result<Arc<Runtime>, EngineError> {
        let Definitions {
            codes,
            migrations,
            step_mappings,
        } = definitions;
        let mut chains = MigrationChains::default();
        chains.register_all(migrations)?;
        let mut mappings = StepMappings::default();
        for mapping in step_mappings {
            mappings.register(mapping);
        }
        let resident_through = residency::target(options.clock.now_ms(), options.residency_horizon);
        let recovered = store.recover(resident_through)?;
        let rollout_records = store.rollouts()?;
        let committer = Committer::start(store.clone(), options.durability)
            .map_err(|error| crate::store::StoreError::failed("start commit thread", error))?;
        let runtime = Arc::new(Runtime {
            store,
            registry: Registry::default(),
            events: EventBus::new(options.event_capacity),
            table: InstanceTable::new(),
            timers: Arc::new(TimerQueue::new()),
            committer,
            permits: Arc::new(Semaphore::new(options.max_concurrent_steps.max(1))),
            routing: arc_swap::ArcSwap::from_pointee(RoutingTable::default()),
            routing_spec: parking_lot::Mutex::new(RoutingSpec::default()),
            routing_counts: parking_lot::Mutex::new(HashMap::new()),
            instance_ids: IdBlocks::new(IdKind::Instance),
            signal_seqs: IdBlocks::new(IdKind::Signal),
            stopping: AtomicBool::new(false),
            stop_signal: tokio::sync::watch::Sender::new(false),
            tasks: Arc::new(TaskCount::default()),
            migrations: parking_lot::RwLock::new(chains),
            step_mappings: parking_lot::RwLock::new(mappings),
            jobs: parking_lot::Mutex::new(HashMap::new()),
            following_migrations: tokio::sync::Mutex::new(()),
            reviving: tokio::sync::Mutex::new(()),
            terminations: Notify::new(),
            retention_ms: AtomicU64::new(crate::observe::millis_saturating(options.retention)),
            retention_changed: Notify::new(),
            rollouts: rollouts::Rollouts::default(),
            claims_taken_in: AtomicU64::new(0),
            unrunnable: parking_lot::Mutex::new(std::collections::HashSet::new()),
            residency: residency::Residency::default(),
            options,
        });
        runtime.set_resident_through(resident_through);
        runtime.rollouts.load(rollout_records);
        let result = runtime.recover(recovered, codes).await;
        if let Err(error) = result {
            runtime.committer.close();
            return Err(error);
        }
        runtime.spawn_tracked(Self::run_timers(Arc::downgrade(&runtime), runtime.timers.clone()));
        runtime.arm_all();
        runtime.look_around().await;
        runtime.spawn_tracked(runtime.clone().run_worker());
        runtime.refresh_routing();
        runtime.spawn_tracked(runtime.clone().run_rollouts());
        runtime.spawn_tracked(runtime.clone().run_retention());
        runtime.spawn_tracked(runtime.clone().run_residency());
        Ok(runtime)
    }

    async fn recover(
        self: &Arc<Self>,
        mut recovered: crate::store::RecoveredState,
        codes: Vec<Arc<dyn VersionCode>>,
    ) -> Result<(), EngineError> {
        self.registry.load(recovered.versions);
        for code in codes {
            self.registry.register(code)?;
        }
        // This worker runs what the store recovered for it (every live instance due within the
        // residency horizon, in a cluster of one) and what it claims: live instances of its
        // versions no live worker holds. The counters are the store's, kept exact by every commit.
        let claimed = self.heartbeat_and_claim(usize::MAX, self.resident_through()).await?;
        recovered.live.extend(claimed.live);
        recovered.signals.extend(claimed.signals);
        recovered.corrupt.extend(claimed.corrupt);
        let mut live_by_version: HashMap<VersionKey, u64> = HashMap::new();
        for record in &recovered.live {
            *live_by_version.entry(record.key.clone()).or_default() += 1;
        }
        for (key, count) in &recovered.unloaded {
            *live_by_version.entry(key.clone()).or_default() += count;
        }
        let mut missing: Vec<(VersionKey, u64)> = live_by_version
            .iter()
            .filter(|(key, _)| !self.registry.is_registered(key))
            .map(|(key, count)| (key.clone(), *count))
            .collect();
        missing.sort();
        if !missing.is_empty() && !self.options.park_unregistered {
            return Err(EngineError::MissingVersions { missing });
        }
        self.quarantine_corrupt(recovered.corrupt).await?;
        let (_, unplaced) = self.insert_slots(recovered.live, recovered.signals);
        self.claims_taken_in.fetch_max(claimed.number, Ordering::Release);
        // Signals of instances left in the store wait there with them; the rest are orphans.
        let mut orphans = Vec::new();
        for signal in unplaced {
            match self.store.load_instance(signal.instance)? {
                Some(record) if !record.phase.is_terminal() => {}
                _ => orphans.push(signal),
            }
        }
        let orphans: Vec<Op> = orphans
            .into_iter()
            .map(|signal| Op::DeleteSignal {
                instance: signal.instance,
                seq: signal.seq,
            })
            .collect();
        if !orphans.is_empty() {
            self.write(orphans).await?;
        }
        for (key, _) in &missing {
            // Parked instances stay in memory, so that they show as parked and resume together.
            self.load_version(key).await?;
        }
        for (key, count) in missing {
            tracing::warn!(version = %key, count, "parking live instances of a version whose code is not registered");
            self.events.emit(Event::InstancesParked { key, count });
        }
        for key in self.registry.draining_and_empty() {
            if let Err(error) = self.set_status(&key, VersionStatus::Draining).await {
                tracing::warn!(version = %key, %error, "could not drain a draining version left with no live instance");
            }
        }
        Ok(())
    }

    /// Schedules or arms every live instance after recovery.
    fn arm_all(self: &Arc<Self>) {
        let mut ids = Vec::new();
        self.table.for_each(|slot| ids.push(slot.record.id));
        for id in ids {
            self.arm(id);
        }
    }

    /// Looks at an instance just loaded: runs it if it can run, else arms its timer, if any.
    fn arm(self: &Arc<Self>, id: InstanceId) {
        let runnable = self.table.with(id, |slot| match &slot.record.phase {
            Phase::Ready { .. } | Phase::Accepted { .. } => true,
            Phase::WaitingSignal { name, .. } if slot.inbox.iter().any(|signal| signal.name == *name) => true,
            phase => {
                if let Some(due) = phase.timer_due_ms() {
                    self.arm_timer(due, slot.record.id);
                }
                false
            }
        });
        if runnable == Some(true) {
            self.schedule(id);
        }
    }

    async fn run_timers(runtime: Weak<Runtime>, timers: Arc<TimerQueue>) {
        let mut jumps = match runtime.upgrade() {
            Some(runtime) => runtime.options.clock.jumps(),
            None => return,
        };
        loop {
            let changed = timers.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = {
                let Some(runtime) = runtime.upgrade() else {
                    return;
                };
                if runtime.is_stopping() {
                    return;
                }
                let (due, wait) = timers.take_due(runtime.now());
                for id in due {
                    runtime.schedule(id);
                }
                wait.unwrap_or(Duration::from_secs(3600))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
                _ = crate::observe::jumped(&mut jumps) => {}
            }
        }
    }

    /// Now on the engine's clock (ms since the Unix epoch), the unit of every persisted time.
    pub(crate) fn now(&self) -> u64 {
        self.options.clock.now_ms()
    }

    /// How long this worker's claims last without a heartbeat.
    pub(crate) fn lease(&self) -> Duration {
        self.options.lease
    }

    /// The engine's clock.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.options.clock
    }

    /// A receiver that turns true at shutdown.
    pub(crate) fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop_signal.subscribe()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Makes sure a driver looks at `id` soon: starts one, or tells the running one to look again.
    pub(crate) fn schedule(self: &Arc<Self>, id: InstanceId) {
        if self.is_stopping() {
            return;
        }
        let start = self.table.with(id, |slot| {
            if slot.running {
                slot.rerun = true;
                false
            } else {
                slot.running = true;
                true
            }
        });
        if start == Some(true) {
            self.spawn_tracked(self.clone().drive(id));
        }
    }

    /// Spawns an internal task that shutdown waits for. The count drops only after the task's
    /// future, and whatever runtime handle it owns, is gone, so once shutdown returns nothing
    /// internal holds the store open.
    pub(crate) fn spawn_tracked(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.begin();
        // Ends the count when dropped: after the task, or while a panic unwinds it, so that a
        // task that dies cannot make shutdown wait forever.
        let counted = TaskEnd(self.tasks.clone());
        tokio::spawn(async move {
            task.await;
            drop(counted);
        });
    }

    /// Runs `work` as a task of its own and waits for its result. Whatever commits and then
    /// changes memory (a start, a signal, a config, a move) goes through here, so it runs to its
    /// end even when the caller stops waiting — a dropped future, a timeout — and the store and
    /// memory never disagree about it. Shutdown waits for it like for any internal task.
    pub(crate) async fn to_completion<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        // Counted before the check, both sequentially consistent with shutdown's flag and count:
        // either shutdown sees this operation and waits for it, or it sees shutdown and refuses.
        // An operation let in runs to its end, so a caller that gave up on a start or a signal
        // still finds it done after a shutdown.
        self.tasks.begin();
        let counted = TaskEnd(self.tasks.clone());
        if self.stopping.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        let (sender, receiver) = oneshot::channel();
        tokio::spawn(async move {
            let _ = sender.send(work.await);
            drop(counted);
        });
        receiver.await.unwrap_or_else(|_| {
            Err(EngineError::Internal {
                operation,
                reason: "its task panicked".to_string(),
            })
        })
    }

    /// Runs a blocking store call off the async executor.
    pub(super) async fn store_call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        blocking(move || call(store.as_ref())).await
    }

    /// Runs work that reads the store as it goes (a selection over many instances) off the async
    /// executor.
    pub(super) async fn off_executor<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Runtime) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let runtime = self.clone();
        blocking(move || work(&runtime)).await
    }

    /// Counts a batch that shutdown must wait for (a move batch's commit).
    fn begin_work(&self) {
        self.tasks.begin();
    }

    /// Ends work counted by `begin_work`.
    fn work_finished(&self) {
        self.tasks.end();
    }

    fn park(&self, id: InstanceId) {
        self.table.with(id, |slot| slot.parked = true);
    }

    /// Commits `ops` and takes in what the store decided about the versions they touched (their
    /// counters and statuses now), then announces the versions this write drained.
    pub(crate) async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let drained = self.write_then_announce(ops).await?;
        self.announce(drained);
        Ok(())
    }

    /// Like `write`, for a caller that announces what it did first (an instance finished, moved)
    /// and then the versions drained, with `announce`.
    pub(crate) async fn write_then_announce(&self, ops: Vec<Op>) -> Result<TakeIns, StoreError> {
        let committed = self.committer.commit(ops).await?;
        let mut statuses_changed = false;
        for stored in &committed.applied.versions {
            statuses_changed |= self.registry.adopt(stored);
        }
        if statuses_changed {
            self.refresh_routing();
        }
        Ok(TakeIns(committed.take_ins))
    }

    /// Announces versions a write drained: their code can be removed. With a store many processes
    /// share, then marks them announced there, so that no other worker announces them again.
    /// Only the last holder of a drained version's take-in token announces it.
    pub(crate) fn announce(&self, mut drained: TakeIns) {
        let keys = drained.take_last();
        if keys.is_empty() {
            return;
        }
        self.emit_drained(&keys);
        if let Err(error) = self.store.cluster().drained_announced(&keys) {
            tracing::warn!(%error, "could not mark drained versions announced; the rollout evaluator announces them again if this worker stops first");
        }
    }

    /// Emits `VersionDrained` for each version.
    fn emit_drained(&self, keys: &[VersionKey]) {
        for key in keys {
            tracing::info!(version = %key, "version drained: its code can be removed");
            let counters = self.registry.counters(key);
            self.events.emit(Event::VersionDrained {
                key: key.clone(),
                counters,
            });
        }
    }

    /// With a store many processes share, on the worker evaluating rollouts: announces the
    /// versions whose draining worker stopped between its commit and its announcement.
    pub(super) fn announce_unannounced_drained(&self) {
        match self.store.cluster().take_unannounced_drained(self.options.lease) {
            Ok(keys) if keys.is_empty() => {}
            Ok(keys) => {
                tracing::info!(
                    count = keys.len(),
                    "announcing versions drained by a worker that stopped before announcing them"
                );
                self.emit_drained(&keys);
            }
            Err(error) => {
                tracing::warn!(%error, "could not look for drained versions left unannounced; trying again at the next heartbeat")
            }
        }
    }

    /// Sets a version's status through the store, which decides the rest (a `Draining` version
    /// with no live instance is `Drained` at once; retiring one with live instances anywhere is
    /// refused), and announces the result. Returns the status the version has now.
    pub(crate) async fn set_status(
        &self,
        key: &VersionKey,
        status: VersionStatus,
    ) -> Result<VersionStatus, EngineError> {
        let op = Op::PutVersionStatus {
            key: key.clone(),
            status,
        };
        self.write(vec![op]).await.map_err(|error| match error {
            StoreError::LiveInstances { key, live } => {
                EngineError::from(crate::registry::RegistryError::LiveInstances { key, live })
            }
            StoreError::VersionRetired { key } => EngineError::from(crate::registry::RegistryError::Retired { key }),
            other => other.into(),
        })?;
        let now = self.registry.status(key);
        match now {
            VersionStatus::Draining => self.events.emit(Event::VersionDraining {
                key: key.clone(),
                counters: self.registry.counters(key),
            }),
            VersionStatus::Retired => self.events.emit(Event::VersionRetired { key: key.clone() }),
            VersionStatus::Active => self.events.emit(Event::VersionActivated {
                key: key.clone(),
                counters: self.registry.counters(key),
            }),
            VersionStatus::Drained => {}
        }
        Ok(now)
    }

    /// Stops new instances reaching a version; returns its status afterwards. Refused while an
    /// active rollout has it as candidate or stable (the rollout would be stranded); warns when
    /// no version of the workflow accepts starts afterwards.
    pub(crate) async fn drain(&self, key: &VersionKey) -> Result<VersionStatus, EngineError> {
        if !self.registry.can_drain(key)? {
            return Ok(self.registry.status(key));
        }
        if let Some(refusal) = self.rollouts.refusal_to_drain(key) {
            return Err(refusal.into());
        }
        let status = self.set_status(key, VersionStatus::Draining).await?;
        let accepting = self
            .registry
            .snapshot()
            .into_iter()
            .any(|info| info.key.workflow == key.workflow && info.accepts_starts);
        if !accepting {
            tracing::warn!(version = %key, "no version of this workflow accepts new instances now: every start of it fails until a new version is registered or the drain is undone (Engine::activate)");
        }
        Ok(status)
    }

    /// Undoes a drain: the version takes new instances again (routed to as before its drain).
    /// Refused for a retired version and one whose code no live worker has.
    pub(crate) async fn activate(&self, key: &VersionKey) -> Result<VersionStatus, EngineError> {
        if !self.registry.can_activate(key)? {
            return Ok(self.registry.status(key));
        }
        tracing::info!(version = %key, "version made active again: new instances may start on it");
        self.set_status(key, VersionStatus::Active).await
    }

    /// Retires a version with no live instance anywhere.
    pub(crate) async fn retire(&self, key: &VersionKey) -> Result<(), EngineError> {
        if self.registry.can_retire(key)? {
            self.set_status(key, VersionStatus::Retired).await?;
        }
        Ok(())
    }

    /// Validates `spec` against the registered versions and, if valid, routes by it from the next
    /// start on. An invalid spec changes nothing.
    pub(crate) fn set_routing(&self, spec: RoutingSpec) -> Result<(), EngineError> {
        self.check_routing(&spec, true)?;
        self.install_routing(spec);
        Ok(())
    }

    /// Checks that `spec` compiles against the registered versions (see `RoutingTable::build`
    /// for `strict`); changes nothing.
    pub(crate) fn check_routing(&self, spec: &RoutingSpec, strict: bool) -> Result<(), EngineError> {
        RoutingTable::build(spec, &self.registry.version_states(), strict)?;
        Ok(())
    }

    /// Routes by `spec` (checked with `check_routing`), with the rollouts laid over it, from the
    /// next start on.
    pub(crate) fn install_routing(&self, spec: RoutingSpec) {
        let mut current = self.routing_spec.lock();
        *current = spec;
        self.rebuild_routing(&current);
    }

    /// Started instances per version and routing reason since open, sorted.
    pub(crate) fn routing_counts(&self) -> Vec<(VersionKey, RouteReason, u64)> {
        let mut counts: Vec<_> = self
            .routing_counts
            .lock()
            .iter()
            .map(|((key, reason), count)| (key.clone(), *reason, *count))
            .collect();
        counts.sort();
        counts
    }

    /// The routing rules in force.
    pub(crate) fn routing_spec(&self) -> RoutingSpec {
        self.routing_spec.lock().clone()
    }

    /// The rules that route starts now: those in force with each workflow's rollout laid over
    /// them, as the routing table is built from.
    pub(crate) fn routing_in_force(&self) -> RoutingSpec {
        self.rollouts.overlay(&self.routing_spec.lock())
    }

    /// Commits `ops` through the group committer.
    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<(), EngineError> {
        Ok(self.write(ops).await?)
    }

    /// Recompiles the routing rules in force after the registry changed (a version registered,
    /// drained or retired) and at open; rules whose candidate can no longer take instances are
    /// left out. A rollout's change routes through `change_rollouts` instead.
    fn refresh_routing(&self) {
        self.rebuild_routing(&self.routing_spec.lock());
    }

    /// Builds and stores the table for `spec` (the rules in force, whose lock the caller holds, so
    /// tables are stored in the order of changes) with the rollouts laid over it.
    fn rebuild_routing(&self, spec: &RoutingSpec) {
        self.install_table(&self.rollouts.overlay(spec));
    }

    /// Compiles `spec` (rules with the rollouts laid over them) into the table starts route by.
    fn install_table(&self, spec: &RoutingSpec) {
        match RoutingTable::build(spec, &self.registry.version_states(), false) {
            Ok(table) => self.routing.store(Arc::new(table)),
            Err(error) => {
                tracing::error!(%error, "the routing rules in force no longer compile; keeping the previous table")
            }
        }
    }

    /// Starts an instance: picks its version, builds its initial state, commits it, runs it.
    pub(crate) async fn start(
        self: &Arc<Self>,
        workflow: &str,
        input: &[u8],
        request: &VersionRequest,
        routing_key: Option<String>,
        attributes: &[(String, String)],
        scheduled: Option<ScheduledFire>,
    ) -> Result<InstanceId, EngineError> {
        let id = InstanceId(self.instance_ids.next(self.store.as_ref())?);
        let routed;
        let (request, reason) = match request {
            VersionRequest::Newest => {
                let table = self.routing.load();
                let input = RouteInput {
                    routing_key: routing_key.as_deref(),
                    instance_id: id.0,
                    attributes,
                };
                match table.route_explained(workflow, input) {
                    Some((version, reason)) => {
                        routed = VersionRequest::Preferred(version.clone());
                        (&routed, reason)
                    }
                    None => (request, RouteReason::Newest),
                }
            }
            explicit => (explicit, RouteReason::Requested),
        };
        let reserved = self.registry.reserve_start(workflow, request)?;
        let key = reserved.key.clone();
        // A routed version that could no longer take the start fell back to the newest.
        let reason = match request {
            VersionRequest::Preferred(preferred) if *preferred != key.version => RouteReason::Newest,
            _ => reason,
        };
        let now = self.now();
        // A rollout in a shadow stage may run the candidate beside this start, unseen.
        let shadow_of_start = match reason {
            RouteReason::Requested => None,
            _ => self.shadow_candidate(workflow, &key, routing_key.as_deref(), id),
        };
        let mut begun = NewInstance {
            id,
            key: key.clone(),
            code: reserved.code.as_deref(),
            input,
            routing_key,
            scheduled: scheduled.clone(),
            routed_by: reason,
            shadow_of: None,
            shadowed_by: None,
            now,
        };
        // The shadow first, so that the real record names it (only if it could begin).
        let mut shadow_ops = Vec::new();
        let shadow = match shadow_of_start {
            Some(candidate) => self.shadow_record(&begun, candidate, &mut shadow_ops),
            None => None,
        };
        begun.shadowed_by = shadow.as_ref().map(|shadow| shadow.id);
        let mut ops = Vec::with_capacity(4 + shadow_ops.len());
        let record = match self.new_record(begun, &mut ops) {
            Ok(record) => record,
            Err(error) => {
                self.registry.end_start(&key);
                return Err(error);
            }
        };
        ops.push(Op::AdjustCounters {
            key: key.clone(),
            delta: CounterDelta::start(now),
        });
        ops.append(&mut shadow_ops);
        if let Some(fire) = scheduled {
            // The fire is handled exactly when its instance exists: both in one commit.
            ops.push(Op::PutScheduleFire {
                schedule: fire.schedule,
                fire_ms: fire.fire_ms,
            });
        }
        let committed = self.write(ops).await;
        self.registry.end_start(&key);
        committed?;
        *self.routing_counts.lock().entry((key.clone(), reason)).or_default() += 1;
        if self.options.metrics {
            if let Some(metrics) = self.registry.metrics(&key) {
                metrics.record_start(self.now());
            }
        }
        let held = reserved.code.is_some();
        if held {
            self.table.insert(Slot::new(record, false));
        }
        self.events.emit(Event::InstanceStarted { id, key });
        if held {
            self.schedule(id);
        }
        if let Some(shadow) = shadow {
            // Runs here when the candidate's code is here; else the worker that has it claims it.
            let shadow_id = shadow.id;
            if shadow.claim > 0 {
                self.table.insert(Slot::new(shadow, false));
                self.schedule(shadow_id);
            }
        }
        Ok(id)
    }

    /// The record of a new instance, with its `Started` history entry (its chunk write, if it
    /// fills one, added to `ops`) and the record's write; claimed by this worker with its state
    /// built when its version's code is here, else `Accepted` with its input for the first worker
    /// that has the code. An input the code cannot begin from is refused.
    fn new_record(&self, new: NewInstance<'_>, ops: &mut Vec<Op>) -> Result<InstanceRecord, EngineError> {
        let mut record = InstanceRecord {
            routing_key: new.routing_key,
            scheduled: new.scheduled,
            shadow_of: new.shadow_of,
            shadowed_by: new.shadowed_by,
            // Unclaimed: the first worker with the version's code claims it. With the code here,
            // the phase is replaced below by the built state (no copy of the input).
            ..InstanceRecord::new(
                new.id,
                new.key,
                match new.code {
                    Some(_) => Phase::Ready {
                        wake: PersistedWake::Started,
                    },
                    None => Phase::Accepted {
                        input: new.input.to_vec(),
                    },
                },
                new.now,
            )
        };
        if let Some(code) = new.code {
            // With the code here, the state is built now (bad input fails the call itself) and
            // the instance is claimed by this worker, with the first token.
            begin(&mut record, code, new.input).map_err(|failure| {
                let key = record.key.clone();
                match failure {
                    InitFailure::Input(reason) => EngineError::InputDecode { key, reason },
                    InitFailure::Panicked(message) => EngineError::Init {
                        key,
                        reason: format!("it panicked: {message}"),
                    },
                    InitFailure::State(reason) => EngineError::Init {
                        key,
                        reason: format!("its state does not encode: {reason}"),
                    },
                }
            })?;
            record.claim = 1;
        }
        let started = HistoryEntry {
            at_ms: new.now,
            event: HistoryEvent::Started {
                version: record.key.version.clone(),
                routed_by: new.routed_by,
                routing_key: record.routing_key.clone(),
                input_bytes: new.input.len() as u64,
                schedule: record.scheduled.as_ref().map(|fire| fire.schedule.clone()),
            },
        };
        record.history.worker = self.store.cluster().worker_id().into();
        transition::append_history(&mut record, &started, self.options.history_limit, ops)?;
        ops.push(Op::PutInstance(record.encode()?));
        Ok(record)
    }

    /// The candidate a rollout in a shadow stage runs beside a start routed to `key` (its stable
    /// version), if the start's routing bucket is under the stage's shadow share.
    fn shadow_candidate(
        &self,
        workflow: &str,
        key: &VersionKey,
        routing_key: Option<&str>,
        id: InstanceId,
    ) -> Option<VersionKey> {
        let (candidate, share) = self.rollouts.shadow_rule(workflow, &key.version)?;
        let bucket = strata_core::routing::bucket_of_start(workflow, routing_key, id.0);
        (bucket < share).then(|| VersionKey::new(workflow, candidate))
    }

    /// The shadow instance of `candidate` beside the start `real`, its writes added to `ops`
    /// (the record, and the candidate's shadow count): same input, routing key and schedule,
    /// marked as `real`'s shadow. `None` (logged) when it cannot begin: an input the candidate
    /// does not take, or no id; the real start goes on without it.
    fn shadow_record(
        &self,
        real: &NewInstance<'_>,
        candidate: VersionKey,
        ops: &mut Vec<Op>,
    ) -> Option<InstanceRecord> {
        let id = match self.instance_ids.next(self.store.as_ref()) {
            Ok(id) => InstanceId(id),
            Err(error) => {
                tracing::warn!(instance = %real.id, %error, "no shadow instance: no id could be reserved");
                return None;
            }
        };
        let code = self.registry.code(&candidate);
        let shadow = NewInstance {
            id,
            key: candidate.clone(),
            code: code.as_deref(),
            input: real.input,
            routing_key: real.routing_key.clone(),
            scheduled: real.scheduled.clone(),
            routed_by: RouteReason::Rollout { rule: 0 },
            shadow_of: Some(real.id),
            shadowed_by: None,
            now: real.now,
        };
        let mut shadow_ops = Vec::with_capacity(3);
        match self.new_record(shadow, &mut shadow_ops) {
            Ok(record) => {
                ops.extend(shadow_ops);
                ops.push(Op::AdjustCounters {
                    key: candidate,
                    delta: CounterDelta::shadow_start(),
                });
                Some(record)
            }
            Err(error) => {
                tracing::warn!(instance = %real.id, candidate = %candidate, %error, "no shadow instance: the candidate cannot begin from this input");
                None
            }
        }
    }

    /// The error for an instance that is not live here.
    fn not_live(&self, id: InstanceId) -> EngineError {
        match self.store.load_instance(id) {
            Ok(Some(record)) => EngineError::InstanceFinished {
                id,
                status: format!("{:?}", InstanceStatus::of_phase(&record.phase)).to_lowercase(),
            },
            Ok(None) => self.missing(id),
            Err(error) => error.into(),
        }
    }

    /// Delivers a signal durably; the instance consumes it when it waits for that name.
    pub(crate) async fn signal(
        self: &Arc<Self>,
        id: InstanceId,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<(), EngineError> {
        if name.starts_with(table::RESERVED_SIGNAL_PREFIX) {
            return Err(EngineError::ReservedSignalName { name: name.to_string() });
        }
        let (key, shadow) = match self
            .with_holder(id, |slot| (slot.record.key.clone(), slot.record.shadowed_by))
            .await?
        {
            Holder::Here(found) => found,
            Holder::Elsewhere(record) => return self.deliver_elsewhere(*record, name, payload).await,
            Holder::Nowhere => return self.signal_elsewhere(id, name, payload).await,
        };
        self.check_signal(id, &key, name, &payload)?;
        let forwarded = shadow.map(|shadow| (shadow, payload.clone()));
        let signal = self.new_signal(id, name, payload)?;
        self.write(vec![Op::PutSignal(signal.clone())]).await?;
        let seq = signal.seq;
        // Loaded again if it was evicted meanwhile (then with the signal, from the store).
        let delivered = self
            .with_resident(id, |slot| {
                slot.take_in(signal.clone());
            })
            .await?
            .is_some();
        if !delivered {
            // The instance finished while the signal was being stored: take it back.
            self.write(vec![Op::DeleteSignal { instance: id, seq }]).await?;
            return Err(self.not_live(id));
        }
        self.schedule(id);
        if let Some((shadow, payload)) = forwarded {
            self.forward_to_shadow(id, shadow, name, payload).await;
        }
        Ok(())
    }

    /// Sends a signal the real instance `real` got to its shadow too, so that the shadow runs
    /// what the real one runs; a shadow that has finished, or whose version refuses the payload,
    /// does without it (said at debug level: it concerns no caller).
    async fn forward_to_shadow(self: &Arc<Self>, real: InstanceId, shadow: InstanceId, name: &str, payload: Vec<u8>) {
        let delivered = Box::pin(self.signal(shadow, name, payload)).await;
        if let Err(error) = delivered {
            tracing::debug!(instance = %real, %shadow, signal = name, %error, "a signal was not forwarded to the shadow instance");
        }
    }

    /// A signal to `id` with the next sequence number.
    fn new_signal(&self, id: InstanceId, name: &str, payload: Vec<u8>) -> Result<SignalRecord, EngineError> {
        Ok(SignalRecord {
            format: RECORD_FORMAT,
            instance: id,
            seq: self.signal_seqs.next(self.store.as_ref())?,
            name: name.to_string(),
            payload,
        })
    }

    /// Checks a payload against the type `key`'s code declares for signal `name`, if this
    /// process has the code (a worker without it cannot check, and the step decodes it).
    fn check_signal(&self, id: InstanceId, key: &VersionKey, name: &str, payload: &[u8]) -> Result<(), EngineError> {
        match self.registry.code(key) {
            Some(code) => code
                .check_signal(name, payload)
                .map_err(|reason| EngineError::SignalDecode {
                    id,
                    name: name.to_string(),
                    key: key.clone(),
                    reason,
                }),
            None => Ok(()),
        }
    }

    /// Delivers a signal to an instance this process does not hold: with a shared store, through
    /// the store to whichever worker holds it (woken at once, or at its next poll).
    async fn signal_elsewhere(
        self: &Arc<Self>,
        id: InstanceId,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<(), EngineError> {
        match self.store.load_instance(id)? {
            None => Err(self.missing(id)),
            Some(record) if record.phase.is_terminal() => Err(self.not_live(id)),
            Some(record) => self.deliver_elsewhere(record, name, payload).await,
        }
    }

    /// Delivers a signal to the live instance of `record`, which this process does not hold,
    /// through the store (see [`Runtime::signal_elsewhere`]).
    async fn deliver_elsewhere(
        self: &Arc<Self>,
        record: InstanceRecord,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<(), EngineError> {
        let id = record.id;
        self.check_signal(id, &record.key, name, &payload)?;
        let forwarded = record.shadowed_by.map(|shadow| (shadow, payload.clone()));
        let signal = self.new_signal(id, name, payload)?;
        if !self.store.cluster().deliver_signal(&signal)? {
            return Err(self.not_live(id));
        }
        // This worker may have claimed the instance meanwhile.
        self.take_in_signals(vec![signal]);
        if let Some((shadow, payload)) = forwarded {
            self.forward_to_shadow(id, shadow, name, payload).await;
        }
        Ok(())
    }

    /// Ends a live instance as an operator asks — cancelled at its step boundary, or terminated
    /// at once, abandoning a running step — and waits for the commit that ends it; an instance
    /// another worker holds is asked through the store.
    pub(crate) async fn end(self: &Arc<Self>, id: InstanceId, request: EndRequest) -> Result<(), EngineError> {
        if self.is_stopping() {
            return Err(EngineError::ShuttingDown);
        }
        let terminate = matches!(request, EndRequest::Terminate { .. });
        let (name, payload) = request.control_signal();
        match self.with_holder(id, |slot| slot.request_end(request.clone())).await? {
            Holder::Here(()) => {
                if terminate {
                    self.terminations.notify_waiters();
                }
                self.schedule(id)
            }
            Holder::Elsewhere(record) => self.deliver_elsewhere(*record, name, payload).await?,
            Holder::Nowhere => self.signal_elsewhere(id, name, payload).await?,
        }
        match self.outcome(id).await? {
            Outcome::Cancelled => Ok(()),
            other => Err(EngineError::InstanceFinished {
                id,
                status: format!("{:?}", other.status()).to_lowercase(),
            }),
        }
    }

    /// Resolves with the instance's outcome when it finishes: told by its driver when this
    /// process holds it, else read from the store, again and again while another worker runs it.
    pub(crate) async fn outcome(self: &Arc<Self>, id: InstanceId) -> Result<Outcome, EngineError> {
        let mut pause = Duration::from_millis(5);
        // Whether the store was asked if this worker holds it unloaded (once: after that, it is
        // another worker's, or this worker's in memory once it claims it).
        let mut looked_for_it_held = false;
        loop {
            let (sender, receiver) = oneshot::channel();
            if self.table.with(id, |slot| slot.waiters.push(sender)).is_some() {
                // Checked after registering: shutdown sets the flag before it drops the waiters.
                if self.is_stopping() {
                    return Err(EngineError::ShuttingDown);
                }
                match receiver.await {
                    Ok(outcome) => return Ok(outcome),
                    // Dropped: shutdown, or another worker took the instance over.
                    Err(_) if self.is_stopping() => return Err(EngineError::ShuttingDown),
                    Err(_) => continue,
                }
            }
            match self.store.load_instance(id)? {
                None => return Err(self.missing(id)),
                Some(record) => {
                    if let Some(outcome) = Outcome::from_phase(&record.phase) {
                        return Ok(outcome);
                    }
                }
            }
            // Live: if this worker holds it in the store only, it is loaded and waited on here.
            if !looked_for_it_held {
                looked_for_it_held = true;
                if !self.load_resident(&[id]).await?.is_empty() {
                    // Evicted again before the waiter is in, it is looked for again.
                    looked_for_it_held = false;
                    continue;
                }
            }
            if self.is_stopping() {
                return Err(EngineError::ShuttingDown);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The status of a live instance, including what only memory knows (running, parked).
    fn info_status(slot: &Slot) -> InstanceStatus {
        if slot.parked {
            InstanceStatus::Parked
        } else if slot.running && matches!(slot.record.phase, Phase::Ready { .. } | Phase::Accepted { .. }) {
            InstanceStatus::Running
        } else {
            InstanceStatus::of_phase(&slot.record.phase)
        }
    }

    fn info_of(slot: &Slot) -> InstanceInfo {
        InstanceInfo {
            record: slot.record.clone(),
            status: Self::info_status(slot),
        }
    }

    /// One instance, live or finished.
    pub(crate) fn instance(&self, id: InstanceId) -> Result<InstanceInfo, EngineError> {
        if let Some(info) = self.table.with(id, |slot| Self::info_of(slot)) {
            return Ok(info);
        }
        match self.store.load_instance(id)? {
            Some(record) => Ok(InstanceInfo {
                status: InstanceStatus::of_phase(&record.phase),
                record,
            }),
            None => Err(self.missing(id)),
        }
    }

    /// A page of an instance's history: the chunks the store holds and the newest entries, in
    /// its record (every entry committed with the change it records, wherever the instance ran).
    pub(crate) fn history(&self, id: InstanceId, request: &HistoryRequest) -> Result<InstanceHistory, EngineError> {
        let book = self.instance(id)?.record.history;
        let mut entries: Vec<HistoryItem> = Vec::new();
        let mut take_in = |first: u64, bytes: &[u8]| match decode_entries(first, bytes) {
            Ok(decoded) => entries.extend(
                decoded
                    .into_iter()
                    .map(|(seq, entry)| HistoryItem { seq, entry: Ok(entry) }),
            ),
            Err(reason) => entries.push(HistoryItem {
                seq: first,
                entry: Err(reason),
            }),
        };
        let chunks = self.store.history(id)?;
        for chunk in &chunks {
            take_in(chunk.first, &chunk.entries);
        }
        // The chunks are read after the record: a commit in between may have moved the record's
        // tail into a chunk, which then holds every entry of it (an entry never changes).
        let stored_up_to = chunks.last().map_or(0, |chunk| chunk.first + HISTORY_CHUNK);
        if book.tail_first() >= stored_up_to {
            take_in(book.tail_first(), &book.tail);
        }
        mark_revived_steps(entries.iter_mut().filter_map(|item| item.entry.as_mut().ok()));
        let limit = request.limit.max(1);
        if request.newest_first {
            entries.reverse();
        }
        let page: Vec<HistoryItem> = entries
            .into_iter()
            .filter(|item| match (request.from, request.newest_first) {
                (None, _) => true,
                (Some(from), false) => item.seq > from,
                (Some(from), true) => item.seq < from,
            })
            .take(limit)
            .collect();
        let next = match page.last() {
            Some(last) if page.len() == limit => Some(last.seq),
            _ => None,
        };
        Ok(InstanceHistory {
            id,
            entries: page,
            kept: book.kept(),
            folded: book.folded,
            next,
        })
    }

    /// The error for an id the store does not hold: removed by retention if it is at or below
    /// the highest id retention removed, else unknown.
    fn missing(&self, id: InstanceId) -> EngineError {
        match self.store.highest_removed_id() {
            Ok(highest) if id.0 <= highest => EngineError::InstanceRemoved { id },
            _ => EngineError::UnknownInstance { id },
        }
    }

    /// The unconsumed signals of a live instance: its inbox here, else (with a shared store) the
    /// store's; a finished instance has none.
    pub(crate) fn pending_signals(&self, id: InstanceId) -> Result<Vec<SignalRecord>, EngineError> {
        if let Some(inbox) = self.table.with(id, |slot| slot.inbox.clone()) {
            return Ok(inbox);
        }
        Ok(self.store.cluster().signals_of(id)?)
    }

    /// Instances matching `filter`, the first `limit` past its cursor in its order (ids up, or
    /// newest first).
    pub(crate) fn list(&self, filter: &InstanceFilter, limit: usize) -> Result<Vec<InstanceInfo>, EngineError> {
        if let Some(workflow) = &filter.workflow {
            self.registry.check_known(workflow, filter.version.as_ref())?;
        }
        let scope = filter.scope();
        let in_order = |found: &mut Vec<InstanceInfo>| {
            if filter.newest_first {
                found.sort_by_key(|info| std::cmp::Reverse(info.record.id));
            } else {
                found.sort_by_key(|info| info.record.id);
            }
            found.truncate(limit);
        };
        let mut found = Vec::new();
        if !filter.wants_only_terminal() {
            self.table.for_each(|slot| {
                if filter.matches_key(&slot.record.key) && scope.past_cursor(slot.record.id) {
                    let info = Self::info_of(slot);
                    if filter.status.is_none_or(|status| status == info.status) {
                        found.push(info);
                    }
                }
            });
            // Other workers' live instances, and this worker's left in the store, as the store
            // has them: every live one not listed above, even if it is resident by now (a start
            // commits before its slot is made, so the table read may have missed it).
            let elsewhere = Self::read_unlisted(filter, &scope, &found, limit, |keep, limit| {
                self.store.cluster().live_held_elsewhere(&scope, keep, limit)
            })?;
            found.extend(elsewhere);
            in_order(&mut found);
        }
        if filter.wants_terminal() {
            // An instance that finished after the live ones were read is in the store's finished
            // instances too: it is listed once, as it was read first. Up to `limit` of each, so
            // the page is the first `limit` ids of both past the cursor, in the listing's order.
            let finished = Self::read_unlisted(filter, &scope, &found, limit, |keep, limit| {
                self.store.finished_instances(&scope, keep, limit)
            })?;
            found.extend(finished);
            in_order(&mut found);
        }
        Ok(found)
    }

    /// Instances a store read returns that `filter` wants and `listed` does not hold yet.
    fn read_unlisted(
        filter: &InstanceFilter,
        scope: &crate::store::ListScope,
        listed: &[InstanceInfo],
        limit: usize,
        read: impl FnOnce(
            &mut dyn FnMut(&InstanceRecord) -> bool,
            usize,
        ) -> Result<Vec<InstanceRecord>, crate::store::StoreError>,
    ) -> Result<Vec<InstanceInfo>, EngineError> {
        let held: std::collections::HashSet<InstanceId> = listed.iter().map(|info| info.record.id).collect();
        let mut keep = |record: &InstanceRecord| {
            !held.contains(&record.id)
                && scope.past_cursor(record.id)
                && filter.matches_key(&record.key)
                && filter
                    .status
                    .is_none_or(|status| status == InstanceStatus::of_phase(&record.phase))
        };
        Ok(read(&mut keep, limit)?
            .into_iter()
            .map(|record| InstanceInfo {
                status: InstanceStatus::of_phase(&record.phase),
                record,
            })
            .collect())
    }

    /// Every known version with its counts and oldest live instance.
    pub(crate) fn versions(&self) -> Vec<VersionInfo> {
        let mut oldest: HashMap<VersionKey, (InstanceId, u64)> = HashMap::new();
        self.table
            .for_each(|slot| keep_oldest(&mut oldest, &slot.record.key, slot.record.id, slot.record.created_at_ms));
        self.refresh_versions();
        // Other workers of a shared store hold instances too: the store knows their oldest.
        match self.store.cluster().oldest_live() {
            Ok(found) => {
                for (key, id, at) in found {
                    keep_oldest(&mut oldest, &key, id, at);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not read the oldest live instances; showing this worker's")
            }
        }
        // Read before the snapshot: it takes in which versions accept starts from the same read.
        let mut workers = self.workers_by_version();
        let mut infos = self.registry.snapshot();
        for info in &mut infos {
            info.oldest_live = oldest.get(&info.key).copied();
            info.workers = workers.remove(&info.key).unwrap_or_default();
        }
        infos
    }

    /// Registers code after open and resumes the instances parked for it.
    pub(crate) fn register(self: &Arc<Self>, code: Arc<dyn VersionCode>) -> Result<VersionKey, EngineError> {
        let key = self.registry.register(code)?;
        self.refresh_routing();
        self.events.emit(Event::VersionRegistered { key: key.clone() });
        let mut resumed = Vec::new();
        self.table.for_each(|slot| {
            if slot.parked && slot.record.key == key {
                slot.parked = false;
                resumed.push(slot.record.id);
            }
        });
        if !resumed.is_empty() {
            tracing::info!(version = %key, count = resumed.len(), "resuming parked instances");
            self.events.emit(Event::InstancesResumed {
                key: key.clone(),
                count: resumed.len() as u64,
            });
            for id in resumed {
                self.schedule(id);
            }
        }
        Ok(key)
    }

    /// Registers state migrations after open; refused as a whole if the chain would break.
    pub(crate) fn register_migrations(&self, migrations: Vec<StateMigration>) -> Result<(), EngineError> {
        Ok(self.migrations.write().register_all(migrations)?)
    }

    /// Registers a step mapping after open.
    pub(crate) fn register_step_mapping(&self, mapping: StepMapping) {
        self.step_mappings.write().register(mapping);
    }

    /// Live instances held in memory (resident).
    pub(crate) fn live_count(&self) -> usize {
        self.table.len()
    }

    /// Stops taking work, lets running steps finish and commit, then syncs and stops the commit
    /// thread. Instances not running stay as committed and continue at the next open.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_signal.send_replace(true);
        self.timers.wake();
        loop {
            let idle = self.tasks.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.tasks.running.load(Ordering::SeqCst) == 0 {
                break;
            }
            idle.await;
        }
        self.permits.close();
        // Callers awaiting outcomes are told the engine stopped instead of waiting forever.
        self.table.for_each(|slot| slot.waiters.clear());
        let runtime = self.clone();
        if tokio::task::spawn_blocking(move || runtime.committer.close())
            .await
            .is_err()
        {
            tracing::error!("closing the commit thread panicked");
        }
        self.leave_cluster().await;
    }
}

/// Keeps in `oldest` the earlier started of what it holds for `key` and instance `id`, started at
/// `at` (ms since the Unix epoch); ties go to the lower id.
fn keep_oldest(oldest: &mut HashMap<VersionKey, (InstanceId, u64)>, key: &VersionKey, id: InstanceId, at: u64) {
    match oldest.get_mut(key) {
        Some(current) if (at, id) < (current.1, current.0) => *current = (id, at),
        Some(_) => {}
        None => {
            oldest.insert(key.clone(), (id, at));
        }
    }
}

/// What a new instance's record is made of.
struct NewInstance<'a> {
    id: InstanceId,
    key: VersionKey,
    /// Its version's code, when registered here.
    code: Option<&'a dyn VersionCode>,
    input: &'a [u8],
    routing_key: Option<String>,
    scheduled: Option<ScheduledFire>,
    routed_by: RouteReason,
    /// For a shadow instance, the real one.
    shadow_of: Option<InstanceId>,
    /// For a real instance with a shadow, the shadow.
    shadowed_by: Option<InstanceId>,
    now: u64,
}

/// Builds an instance's initial state from the input its `Accepted` record carries, with `code`
/// of its version: the record is then `Ready` at the entry step. On failure the record is left
/// as it was.
pub(crate) fn initialize(record: &mut InstanceRecord, code: &dyn VersionCode) -> Result<(), InitFailure> {
    let Phase::Accepted { input } = &record.phase else {
        return Ok(());
    };
    let input = input.clone();
    begin(record, code, &input)
}

/// Builds the initial state of `record` from `input` with `code`: `Ready` at the entry step.
/// On failure the record is left as it was.
fn begin(record: &mut InstanceRecord, code: &dyn VersionCode, input: &[u8]) -> Result<(), InitFailure> {
    let state = code.initial_state(input)?;
    record.state = StateEnvelope {
        schema: code.state_schema(),
        bytes: state,
    };
    record.step = code.entry_step().to_string();
    record.phase = Phase::Ready {
        wake: PersistedWake::Started,
    };
    Ok(())
}

/// Runs blocking `work` on tokio's blocking threads; a panic in it is a failed store call.
async fn blocking<T: Send + 'static, E: From<StoreError> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(StoreError::failed("store call", error).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_live_instance_of_a_version_is_the_earliest_started_whoever_reports_it_first() {
        let key = VersionKey::new("w", semver::Version::new(1, 0, 0));
        let mut oldest = HashMap::new();
        keep_oldest(&mut oldest, &key, InstanceId(5), 200);
        keep_oldest(&mut oldest, &key, InstanceId(9), 100);
        keep_oldest(&mut oldest, &key, InstanceId(3), 300);
        assert_eq!(oldest[&key], (InstanceId(9), 100));
        keep_oldest(&mut oldest, &key, InstanceId(2), 100);
        assert_eq!(oldest[&key], (InstanceId(2), 100), "a tie goes to the lower id");
    }
}
