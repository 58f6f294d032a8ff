//! This process as a worker of its store's cluster: it heartbeats its lease with the versions it
//! has code for, claims the live instances of those versions no live worker holds (at open, and
//! then every heartbeat, which is how a dead worker's instances are taken over), lets go of an
//! instance whose claim another worker took, and hands every claim back at shutdown.
//!
//! Owns nothing persistent: claims and leases live in the store (`store::Cluster`). A store one
//! process opens has a cluster of one (`store::SoloCluster`): the same loop runs, its claims find
//! nothing (the one worker holds every live instance from the start), it always leads, and no
//! other worker publishes, holds or announces anything.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::Runtime;
use crate::error::EngineError;
use crate::observe::Event;
use crate::store::{Claimed, IdKind, Op, SignalRecord, Store, StoreError, Wakeup};
use strata_core::instance::{InstanceId, InstanceRecord, VersionKey};

/// How many instances one claim takes at most while the engine runs (at open: all it can).
const CLAIM_BATCH: usize = 1_000;

/// The role lease of the worker that evaluates rollouts.
const ROLLOUT_ROLE: &str = "rollouts";

/// Numbers handed out from blocks the store reserves, so processes sharing a store never use
/// the same instance id or signal sequence number.
pub(super) struct IdBlocks {
    kind: IdKind,
    block: Mutex<Range<u64>>,
}

impl IdBlocks {
    /// An allocator of `kind` that reserves its first block when first asked.
    pub(super) fn new(kind: IdKind) -> Self {
        IdBlocks {
            kind,
            block: Mutex::new(0..0),
        }
    }

    /// The next number; reserves a block from the store when the current one is used up.
    pub(super) fn next(&self, store: &dyn Store) -> Result<u64, StoreError> {
        let mut block = self.block.lock();
        if block.is_empty() {
            *block = store.reserve_ids(self.kind)?;
        }
        let number = block.start;
        block.start += 1;
        Ok(number)
    }
}

impl Runtime {
    /// Publishes this worker's metrics window of every version it has code for, for the worker
    /// that evaluates rollouts (at every heartbeat; nothing when metrics are off).
    fn publish_metrics(&self) {
        let cluster = self.store.cluster();
        if !self.options.metrics {
            return;
        }
        let windows: Vec<(VersionKey, Vec<u8>)> = self
            .versions_with_code()
            .into_iter()
            .filter_map(|key| {
                let export = self.registry.metrics(&key)?.export();
                match rmp_serde::to_vec_named(&export) {
                    Ok(bytes) => Some((key, bytes)),
                    Err(error) => {
                        tracing::warn!(version = %key, %error, "could not encode a metrics window");
                        None
                    }
                }
            })
            .collect();
        if let Err(error) = cluster.publish_metrics(&windows) {
            tracing::warn!(%error, "could not publish the metrics windows; the rollout evaluator sees older ones");
        }
    }

    /// The metrics windows of `key` the other live workers published, decoded (those that do
    /// not decode are left out, with a warning).
    pub(super) fn others_metrics(&self, key: &VersionKey) -> Vec<crate::observe::WindowExport> {
        match self.store.cluster().metrics_of(key, self.options.lease) {
            Ok(windows) => windows
                .iter()
                .filter_map(|bytes| match strata_core::instance::decode_stored(bytes) {
                    Ok(export) => Some(export),
                    Err(error) => {
                        tracing::warn!(version = %key, %error, "a worker's metrics window does not decode; left out");
                        None
                    }
                })
                .collect(),
            Err(error) => {
                tracing::warn!(version = %key, %error, "could not read the other workers' metrics windows");
                Vec::new()
            }
        }
    }

    /// The versions this worker has code for.
    fn versions_with_code(&self) -> Vec<VersionKey> {
        self.registry
            .snapshot()
            .into_iter()
            .filter(|info| info.registered)
            .map(|info| info.key)
            .collect()
    }

    /// Heartbeats and claims up to `limit` instances, loading those due by `load_through_ms`
    /// (the rest are left in the store, held, until they come due).
    pub(super) async fn heartbeat_and_claim(&self, limit: usize, load_through_ms: u64) -> Result<Claimed, EngineError> {
        let versions = self.versions_with_code();
        let lease = self.options.lease;
        let claimed = self
            .store_call(move |store| {
                let cluster = store.cluster();
                cluster.heartbeat(&versions, lease)?;
                cluster.claim(&versions, lease, limit, load_through_ms)
            })
            .await?;
        Ok(claimed)
    }

    /// Takes claimed instances in: quarantines the ones that do not decode, makes slots for the
    /// rest with their signals, and looks at each (runs, arms a timer, or waits).
    async fn admit(self: &Arc<Self>, claimed: Claimed) -> Result<(), EngineError> {
        self.quarantine_corrupt(claimed.corrupt).await?;
        // Claimed signals all belong to claimed instances.
        let (loaded, _) = self.insert_slots(claimed.live, claimed.signals);
        let mut ids = loaded.clone();
        ids.extend_from_slice(&claimed.left);
        // A background migration running here takes them in its share. They are handed over
        // before the claim's number is: a share that read the number has them. Every share is
        // woken after the number: one that began meanwhile listed them and stores the number.
        if !ids.is_empty() {
            tracing::info!(count = ids.len(), "claimed instances no live worker held");
            for control in self.jobs.lock().values() {
                if !*control.finished.borrow() {
                    control.claimed.lock().extend_from_slice(&ids);
                }
            }
        }
        self.claims_taken_in.fetch_max(claimed.number, Ordering::Release);
        if !ids.is_empty() {
            for control in self.jobs.lock().values() {
                control.more.notify_one();
            }
        }
        for id in loaded {
            self.arm(id);
        }
        Ok(())
    }

    /// Makes a slot for each record, with its pending signals in sequence order; returns the ids,
    /// and the signals of instances not among the records. A record whose version's code is not
    /// registered is parked.
    pub(super) fn insert_slots(
        &self,
        records: Vec<InstanceRecord>,
        signals: Vec<SignalRecord>,
    ) -> (Vec<InstanceId>, Vec<SignalRecord>) {
        let mut inboxes = super::residency::inboxes_of(signals);
        let mut ids = Vec::with_capacity(records.len());
        for record in records {
            let signals = inboxes.remove(&record.id).unwrap_or_default();
            let slot = self.new_slot(record, signals);
            ids.push(slot.record.id);
            self.table.insert(slot);
        }
        (ids, inboxes.into_values().flatten().collect())
    }

    /// Moves live records that do not decode aside, each with its reason.
    pub(super) async fn quarantine_corrupt(
        &self,
        corrupt: Vec<crate::store::CorruptRecord>,
    ) -> Result<(), EngineError> {
        for corrupt in corrupt {
            tracing::error!(instance = %corrupt.id, reason = %corrupt.reason, "quarantining a live record that does not decode");
            self.write(vec![Op::QuarantineRecord {
                id: corrupt.id,
                reason: corrupt.reason.clone(),
            }])
            .await?;
            self.events.emit(Event::InstanceQuarantined {
                id: corrupt.id,
                reason: corrupt.reason,
            });
        }
        Ok(())
    }

    /// Lets go of an instance another worker claimed: its slot goes, and whoever waits on it here
    /// is told it runs elsewhere now.
    pub(super) fn let_go(&self, id: InstanceId) {
        if let Some(slot) = self.table.remove(id) {
            tracing::warn!(instance = %id, version = %slot.record.key, "another worker claimed this instance; letting it go");
            self.events.emit(Event::InstanceClaimLost {
                id,
                key: slot.record.key,
            });
        }
    }

    /// This process's worker id in the store's cluster (`local` in a cluster of one).
    pub(crate) fn worker_id(&self) -> String {
        self.store.cluster().worker_id().to_string()
    }

    /// The workers sharing the store (this process alone in a cluster of one); this worker's
    /// versions as it has them now, not as of its last heartbeat.
    pub(crate) fn workers(&self) -> Result<Vec<crate::store::WorkerInfo>, EngineError> {
        let mut workers = self.store.cluster().workers(self.options.lease)?;
        let this_worker = self.worker_id();
        for worker in workers.iter_mut().filter(|worker| worker.id == this_worker) {
            worker.versions = self.versions_with_code();
        }
        Ok(workers)
    }

    /// Takes in the store's counters and statuses (other workers of a shared store change them
    /// too; in a cluster of one they are this process's own, taken in already).
    pub(super) fn refresh_versions(&self) {
        match self.store.versions() {
            Ok(stored) => {
                let mut statuses_changed = false;
                for version in &stored {
                    statuses_changed |= self.registry.adopt(version);
                }
                if statuses_changed {
                    self.refresh_routing();
                }
            }
            Err(error) => tracing::warn!(%error, "could not read the versions' figures from the store"),
        }
    }

    /// The live workers that can run each version (see `VersionInfo::workers`). With a shared
    /// store, the same read is taken in as which versions accept starts (`take_in_running`), so
    /// a view built from both never says a version without a worker takes starts.
    pub(super) fn workers_by_version(&self) -> std::collections::HashMap<VersionKey, Vec<String>> {
        match self.store.cluster().workers(self.options.lease) {
            Ok(workers) => {
                let workers = self.live_workers_by_version(workers);
                self.take_in_running(&workers);
                workers
            }
            Err(error) => {
                tracing::warn!(%error, "could not read the workers from the store");
                std::collections::HashMap::new()
            }
        }
    }

    /// Takes in which versions the live workers can run: starts may go to a version only
    /// another worker has code for (accepted here, run there), and a version with live instances
    /// that no worker can run is warned of. Nothing changes when the workers cannot be read.
    fn take_in_workers(&self) {
        let workers = match self.store.cluster().workers(self.options.lease) {
            Ok(workers) => self.live_workers_by_version(workers),
            Err(error) => {
                tracing::warn!(%error, "could not read the workers from the store; keeping what was known");
                return;
            }
        };
        self.take_in_running(&workers);
        self.warn_of_versions_without_workers(&workers);
    }

    /// The live workers by version they have code for, from `workers` as the store lists them.
    /// This worker counts among them whatever its row says: it is alive (it runs this), and a
    /// heartbeat that lapsed in an outage is renewed at its next beat; until then its versions
    /// are not without a worker.
    fn live_workers_by_version(
        &self,
        workers: Vec<crate::store::WorkerInfo>,
    ) -> std::collections::HashMap<VersionKey, Vec<String>> {
        let mut by_version: std::collections::HashMap<VersionKey, Vec<String>> = std::collections::HashMap::new();
        let this_worker = self.worker_id();
        for worker in workers
            .into_iter()
            .filter(|worker| worker.alive && worker.id != this_worker)
        {
            for key in worker.versions {
                by_version.entry(key).or_default().push(worker.id.clone());
            }
        }
        for key in self.versions_with_code() {
            by_version.entry(key).or_default().push(this_worker.clone());
        }
        by_version
    }

    /// Routes starts only to versions some live worker among `workers` can run.
    fn take_in_running(&self, workers: &std::collections::HashMap<VersionKey, Vec<String>>) {
        let running = workers.keys().cloned().collect();
        if self.registry.set_running_in_cluster(&running) {
            tracing::info!(versions = ?running, "the versions the live workers can run changed; routing follows");
            self.refresh_routing();
        }
    }

    /// Warns, by name, about each version with live instances that no live worker can run (once,
    /// until a worker for it appears): its instances wait, nothing fails.
    fn warn_of_versions_without_workers(&self, workers: &std::collections::HashMap<VersionKey, Vec<String>>) {
        let mut unrunnable = Vec::new();
        for info in self.registry.snapshot() {
            if info.counters.live > 0 && !workers.contains_key(&info.key) {
                unrunnable.push((info.key, info.counters.live));
            }
        }
        let mut warned = self.unrunnable.lock();
        for (key, live) in &unrunnable {
            if warned.insert(key.clone()) {
                tracing::warn!(version = %key, live, "no live worker has the code of this version; its instances wait for one");
                self.events.emit(Event::NoWorkerForVersion {
                    key: key.clone(),
                    live: *live,
                });
            }
        }
        warned.retain(|key| unrunnable.iter().any(|(unrunnable, _)| unrunnable == key));
    }

    /// Takes signals read from the store into the inboxes of the instances held here (those not
    /// there yet, nor consumed here already), and looks at each instance that got one. A cancel
    /// or a termination asked for through another process arrives as the control signal
    /// `CANCEL_SIGNAL` or `TERMINATE_SIGNAL`.
    pub(super) fn take_in_signals(self: &Arc<Self>, signals: Vec<SignalRecord>) {
        let mut woken = Vec::new();
        let mut terminated = false;
        let mut evicted = Vec::new();
        for signal in signals {
            let instance = signal.instance;
            let Some(taken) = self.table.with(instance, |slot| slot.take_in(signal)) else {
                if !evicted.contains(&instance) {
                    evicted.push(instance);
                }
                continue;
            };
            if let Some(terminates) = taken {
                terminated |= terminates;
                if !woken.contains(&instance) {
                    woken.push(instance);
                }
            }
        }
        if terminated {
            self.terminations.notify_waiters();
        }
        for id in woken {
            self.schedule(id);
        }
        if !evicted.is_empty() {
            // Instances this worker holds in the store only are loaded, with their signals.
            let runtime = self.clone();
            self.spawn_tracked(async move {
                if let Err(error) = runtime.load_resident(&evicted).await {
                    tracing::warn!(%error, "could not load instances a signal arrived for; the next poll finds them");
                }
            });
        }
    }

    /// Reads the pending signals of one held instance (another process announced one).
    async fn fetch_signals_of(self: &Arc<Self>, id: InstanceId) {
        if !self.table.contains(id) {
            // Held here in the store only: loaded with its signals (nothing, if another worker
            // holds it).
            if let Err(error) = self.load_resident(&[id]).await {
                tracing::warn!(instance = %id, %error, "could not load an instance a signal arrived for; the next poll finds it");
            }
            return;
        }
        match self.store_call(move |store| store.cluster().signals_of(id)).await {
            Ok(signals) => self.take_in_signals(signals),
            Err(error) => {
                tracing::warn!(instance = %id, %error, "could not read an instance's signals; the next poll finds them")
            }
        }
    }

    /// What a worker does at open and at every heartbeat besides claiming: takes in the
    /// cluster's version figures and rollouts, takes or renews the rollout lease (one worker at a
    /// time evaluates rollouts, and announces `Drained` of versions whose draining worker stopped
    /// before announcing it), takes in which versions the live workers can run, and follows the
    /// background migrations.
    pub(super) async fn look_around(self: &Arc<Self>) {
        let runtime = self.clone();
        let looked = tokio::task::spawn_blocking(move || {
            runtime.refresh_versions();
            runtime.refresh_rollouts();
            let leading = runtime
                .store
                .cluster()
                .lead(ROLLOUT_ROLE, runtime.options.lease)
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "could not renew the rollout lease; another worker takes it over");
                    false
                });
            let was = runtime
                .rollouts
                .leading
                .swap(leading, std::sync::atomic::Ordering::AcqRel);
            if leading && !was {
                tracing::info!("this worker evaluates the rollouts now");
            }
            if leading {
                runtime.announce_unannounced_drained();
            }
            runtime.publish_metrics();
            runtime.take_in_workers();
        })
        .await;
        if looked.is_err() {
            tracing::warn!("looking at the cluster panicked");
        }
        self.follow_migrations().await;
    }

    /// The worker loop: heartbeat and claim every third of the lease, until shutdown; in
    /// between, signals other processes deliver to instances held here, as they are announced,
    /// and at every heartbeat all pending signals of held instances (what announcements missed).
    pub(super) async fn run_worker(self: Arc<Self>) {
        let mut stop = self.stop_signal();
        let interval = (self.options.lease / 3).max(Duration::from_millis(10));
        let mut wakeups = self.store.cluster().wakeups();
        let mut next_beat = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_beat) => {}
                _ = stop.changed() => return,
                Some(wakeup) = async { match wakeups.as_mut() { Some(wakeups) => wakeups.recv().await, None => std::future::pending().await } } => {
                    match wakeup {
                        Wakeup::Signal(id) => self.fetch_signals_of(id).await,
                        Wakeup::Claimable => {
                            // Announcements that queued meanwhile are answered by this claim too.
                            if let Some(wakeups) = wakeups.as_mut() {
                                while let Ok(next) = wakeups.try_recv() {
                                    if let Wakeup::Signal(id) = next {
                                        self.fetch_signals_of(id).await;
                                    }
                                }
                            }
                            self.claim_what_is_free().await;
                        }
                    }
                    continue;
                }
            }
            next_beat = tokio::time::Instant::now() + interval;
            if self.is_stopping() {
                return;
            }
            match self.store_call(|store| store.cluster().held_signals()).await {
                Ok(signals) => self.take_in_signals(signals),
                Err(error) => tracing::warn!(%error, "could not read the held instances' signals; trying again"),
            }
            self.claim_what_is_free().await;
            self.look_around().await;
        }
    }

    /// Heartbeats and claims what no live worker holds among the versions this one has code
    /// for, batch after batch while batches come back full, and takes the claimed instances in.
    async fn claim_what_is_free(self: &Arc<Self>) {
        loop {
            // Not while the loader raises what is resident: a claim leaves in the store only
            // what the loader reads after it.
            let _loading = self.residency_loading().await;
            match self.heartbeat_and_claim(CLAIM_BATCH, self.resident_through()).await {
                Ok(claimed) => {
                    let full = claimed.live.len() + claimed.corrupt.len() + claimed.left.len() >= CLAIM_BATCH;
                    if let Err(error) = self.admit(claimed).await {
                        tracing::warn!(%error, "could not take claimed instances in; they are claimed again after the lease");
                        return;
                    }
                    if !full || self.is_stopping() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "heartbeat or claim failed; trying again");
                    return;
                }
            }
        }
    }

    /// Hands every claim back (at shutdown, after the last commit), so other workers take the
    /// instances over at once instead of after the lease.
    pub(super) async fn leave_cluster(&self) {
        let left = self.store_call(|store| store.cluster().leave()).await;
        if let Err(error) = left {
            tracing::warn!(%error, "could not hand the claims back; other workers take them after the lease");
        }
    }
}
