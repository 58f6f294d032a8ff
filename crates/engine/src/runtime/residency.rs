//! Which live instances this worker keeps in memory. An instance that only waits — asleep,
//! backing off, waiting for a signal — beyond the residency horizon is evicted: its record stays
//! in the store, which indexes it by wake time (`Phase::wake_ms`), and memory keeps nothing of it.
//! A loader loads what comes due within the horizon ahead of time, so its timer fires as it would
//! have; a signal, a cancel, an awaited outcome, a move or a migration loads it on demand.
//!
//! The rule: every live instance this worker holds whose wake time is at or before
//! `resident_through` is resident, or being loaded; the loader raises `resident_through` before
//! it reads what comes due up to the new value (so a step that commits a wake time either sees
//! the new value and arms its timer, or is seen by the read), and the sweep evicts only
//! instances whose wake time is beyond it. Memory never runs ahead of the store, so an evicted
//! instance's record in the store is its last committed one; a record read before an eviction
//! of its shard is not put in after it (`InstanceTable::insert_loaded`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::table::{Presence, Slot};
use super::Runtime;
use crate::error::EngineError;
use crate::store::SignalRecord;
use strata_core::codec::EncodeError;
use strata_core::instance::{EncodedInstance, IndexedAs, InstanceId, InstanceRecord};

/// The residency horizon unless the builder says: instances idle beyond it are evicted.
pub(crate) const DEFAULT_RESIDENCY_HORIZON: Duration = Duration::from_secs(30);

/// How many due instances one store read returns at most.
const LOAD_BATCH: usize = 1_000;

/// What the runtime knows of residency besides the table.
#[derive(Default)]
pub(super) struct Residency {
    /// Every held instance whose wake time is at or before this (ms since the Unix epoch) is
    /// resident, or being loaded by the loader (which raises it first: a step that commits a
    /// wake time at or before it arms its timer, one after it is seen by the loader's read).
    resident_through: AtomicU64,
    /// Held while the loader raises `resident_through` and loads up to it, and while a claim
    /// runs: a claim loads what is due by one value of it, and leaves the rest for the loader.
    loading: tokio::sync::Mutex<()>,
    /// How many holds keep the sweep from evicting (moves and migrations selecting instances or
    /// working on a batch they loaded); the sweep evicts with it locked and none counted, so a
    /// hold taken meanwhile waits for the end of that one pass (which awaits nothing).
    holds: parking_lot::Mutex<usize>,
}

/// Keeps the sweep from evicting while it lives (see `Runtime::hold_resident`).
pub(super) struct ResidencyHold<'a> {
    holds: &'a parking_lot::Mutex<usize>,
}

impl Drop for ResidencyHold<'_> {
    fn drop(&mut self) {
        *self.holds.lock() -= 1;
    }
}

/// Where an instance asked for by id is live (see `Runtime::with_holder`).
pub(super) enum Holder<R> {
    /// Resident here (loaded if it had to be): what the action returned.
    Here(R),
    /// Another worker holds it: its record as stored.
    Elsewhere(Box<InstanceRecord>),
    /// Not live anywhere the store knows: finished, removed or unknown.
    Nowhere,
}

/// The wake time up to which instances are resident after a load at `now_ms` with `horizon`
/// (`u64::MAX` for `Duration::MAX`: everything stays resident).
pub(super) fn target(now_ms: u64, horizon: Duration) -> u64 {
    now_ms.saturating_add(crate::observe::millis_saturating(horizon))
}

impl Runtime {
    /// The wake time up to which instances are resident after a load at `now`.
    fn residency_target(&self, now: u64) -> u64 {
        target(now, self.options.residency_horizon)
    }

    /// The wake time up to which every held instance is resident: a claim loads what is due by
    /// then and leaves the rest in the store.
    pub(super) fn resident_through(&self) -> u64 {
        self.residency.resident_through.load(Ordering::SeqCst)
    }

    /// Arms the timer of resident instance `id` for `due`, if it falls within what is resident:
    /// a later one is armed when the loader reaches it (`load_due`), so that memory holds no
    /// timer of an instance the sweep may evict.
    pub(super) fn arm_timer(&self, due: u64, id: InstanceId) {
        if due <= self.resident_through() {
            self.timers.arm(due, id);
        }
    }

    /// Notes that every held instance due at or before `through` is resident (at open).
    pub(super) fn set_resident_through(&self, through: u64) {
        self.residency.resident_through.fetch_max(through, Ordering::AcqRel);
    }

    /// How the record of `id` in the table is indexed: what a write of its next record replaces.
    pub(super) fn indexed_in_table(&self, id: InstanceId) -> Option<IndexedAs> {
        self.table.with(id, |slot| slot.record.indexed_as()).flatten()
    }

    /// Encodes `record` to replace the resident record of its instance.
    pub(super) fn encode_replacing_resident(&self, record: &InstanceRecord) -> Result<EncodedInstance, EncodeError> {
        let mut encoded = record.encode()?;
        encoded.replaces = self.indexed_in_table(record.id);
        Ok(encoded)
    }

    /// Stops the sweep from evicting until the hold is dropped (a move or a migration selects
    /// instances, or works on those it loaded).
    pub(super) fn hold_resident(&self) -> ResidencyHold<'_> {
        let holds = &self.residency.holds;
        *holds.lock() += 1;
        ResidencyHold { holds }
    }

    /// Runs `action` on the slot of `id`, loading the instance first if this worker holds it in
    /// the store only; `None` if it is not live here (finished, unknown, or held by another
    /// worker).
    pub(super) async fn with_resident<R>(
        self: &Arc<Self>,
        id: InstanceId,
        action: impl FnMut(&mut Slot) -> R,
    ) -> Result<Option<R>, EngineError> {
        Ok(match self.with_holder(id, action).await? {
            Holder::Here(result) => Some(result),
            Holder::Elsewhere(_) | Holder::Nowhere => None,
        })
    }

    /// Runs `action` on the slot of `id` like [`Runtime::with_resident`]; if another worker holds
    /// it, says so with its record as the same store read found it.
    pub(super) async fn with_holder<R>(
        self: &Arc<Self>,
        id: InstanceId,
        mut action: impl FnMut(&mut Slot) -> R,
    ) -> Result<Holder<R>, EngineError> {
        loop {
            if let Some(result) = self.table.with(id, &mut action) {
                return Ok(Holder::Here(result));
            }
            // Evicted again between the load and the action: load it again.
            let (resident, mut elsewhere) = self.load_or_find(&[id]).await?;
            if resident.is_empty() {
                return Ok(elsewhere
                    .pop()
                    .map_or(Holder::Nowhere, |record| Holder::Elsewhere(Box::new(record))));
            }
        }
    }

    /// Loads those of `ids` this worker holds in the store and are not resident, with their
    /// signals, and looks at each (runs it, arms its timer); records that do not decode are
    /// quarantined. Returns the ids resident now.
    pub(super) async fn load_resident(self: &Arc<Self>, ids: &[InstanceId]) -> Result<Vec<InstanceId>, EngineError> {
        Ok(self.load_or_find(ids).await?.0)
    }

    /// [`Runtime::load_resident`], which also returns the records of those of `ids` another
    /// worker holds.
    async fn load_or_find(
        self: &Arc<Self>,
        ids: &[InstanceId],
    ) -> Result<(Vec<InstanceId>, Vec<InstanceRecord>), EngineError> {
        let mut resident = Vec::new();
        let mut loaded = Vec::new();
        let mut elsewhere = Vec::new();
        let mut pending: Vec<(InstanceId, u64)> = Vec::new();
        for &id in ids {
            match self.table.presence(id) {
                Presence::Resident => resident.push(id),
                Presence::Absent(evictions) => pending.push((id, evictions)),
            }
        }
        while !pending.is_empty() {
            let wanted: Vec<InstanceId> = pending.iter().map(|(id, _)| *id).collect();
            let claimed = self.store_call(move |store| store.load_held(&wanted)).await?;
            self.quarantine_corrupt(claimed.corrupt).await?;
            elsewhere.extend(claimed.elsewhere);
            let evictions: HashMap<InstanceId, u64> = pending.drain(..).collect();
            let mut inboxes = inboxes_of(claimed.signals);
            for record in claimed.live {
                let id = record.id;
                let Some(&seen) = evictions.get(&id) else {
                    continue;
                };
                let slot = self.new_slot(record, inboxes.remove(&id).unwrap_or_default());
                if self.table.insert_loaded(slot, seen) {
                    loaded.push(id);
                } else if let Presence::Absent(now) = self.table.presence(id) {
                    // Its shard evicted meanwhile: the record read may be older than the store's.
                    pending.push((id, now));
                }
            }
        }
        for &id in &loaded {
            self.arm(id);
        }
        resident.extend(loaded);
        Ok((resident, elsewhere))
    }

    /// Whether a slot is idle beyond `beyond_ms`: nothing to do, nobody waiting on it (callers
    /// that stopped waiting are let go of first), nothing asked of it, and its wake time later
    /// than that.
    fn is_idle(slot: &mut Slot, beyond_ms: u64) -> bool {
        slot.waiters.retain(|waiter| !waiter.is_closed());
        !slot.running
            && !slot.rerun
            && !slot.parked
            && slot.end_requested.is_none()
            && slot.waiters.is_empty()
            && slot.inbox.is_empty()
            && slot.commit_failures == 0
            && slot.record.phase.wake_ms().is_some_and(|wake| wake > beyond_ms)
    }

    /// Evicts the instances idle beyond the horizon; returns how many.
    pub(super) fn evict_idle(&self) -> usize {
        // Not while a move or a migration selects instances or works on a batch it loaded.
        let holds = self.residency.holds.lock();
        if *holds > 0 {
            return 0;
        }
        let beyond = self
            .residency_target(self.now())
            .max(self.residency.resident_through.load(Ordering::Acquire));
        if beyond == u64::MAX {
            return 0;
        }
        self.table.evict(|slot| Self::is_idle(slot, beyond))
    }

    /// Held while a claim runs (see `Residency::loading`).
    pub(super) async fn residency_loading(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.residency.loading.lock().await
    }

    /// Raises `resident_through` to `through`, then loads every held instance whose wake time
    /// is after its old value and at or before `through` (a load that fails is retried from
    /// the old value).
    async fn load_due(self: &Arc<Self>, through: u64) -> Result<(), EngineError> {
        let _loading = self.residency.loading.lock().await;
        let from = self.residency.resident_through.fetch_max(through, Ordering::SeqCst);
        if through <= from {
            return Ok(());
        }
        let loaded = self.load_between(from, through).await;
        if loaded.is_err() {
            // Lowered again, so that the next turn loads this range again (a timer armed
            // meanwhile only makes an extra look at an instance).
            self.residency.resident_through.store(from, Ordering::SeqCst);
        }
        loaded
    }

    /// Loads every held instance whose wake time is after `from` and at or before `through`.
    async fn load_between(self: &Arc<Self>, from: u64, through: u64) -> Result<(), EngineError> {
        let mut after = Some((from, InstanceId(u64::MAX)));
        loop {
            let page = self
                .store_call(move |store| store.due_held(after, through, LOAD_BATCH))
                .await?;
            let Some(&last) = page.last() else {
                break;
            };
            let ids: Vec<InstanceId> = page.iter().map(|(_, id)| *id).collect();
            // Resident ones whose timer was beyond the horizon when they went idle: armed now.
            let resident: Vec<InstanceId> = ids.iter().copied().filter(|id| self.table.contains(*id)).collect();
            self.load_resident(&ids).await?;
            for id in resident {
                self.arm(id);
            }
            if page.len() < LOAD_BATCH {
                break;
            }
            after = Some(last);
        }
        Ok(())
    }

    /// Loads the held instances of version `key` that are not resident.
    pub(super) async fn load_version(
        self: &Arc<Self>,
        key: &strata_core::instance::VersionKey,
    ) -> Result<(), EngineError> {
        self.load_scope(crate::store::ListScope {
            workflow: Some(key.workflow.clone()),
            version: Some(key.version.clone()),
            ..Default::default()
        })
        .await
    }

    /// Loads the held instances in `scope` that are not resident.
    async fn load_scope(self: &Arc<Self>, scope: crate::store::ListScope) -> Result<(), EngineError> {
        let ids = self
            .off_executor(move |runtime| Ok(runtime.unloaded_ids(scope, |_| true)?))
            .await?;
        for batch in ids.chunks(LOAD_BATCH) {
            self.load_resident(batch).await?;
        }
        Ok(())
    }

    /// The live instances in `scope` this worker holds in the store only (not resident) that
    /// `keep` accepts.
    pub(super) fn unloaded_ids(
        &self,
        scope: crate::store::ListScope,
        keep: impl FnMut(&InstanceRecord) -> bool,
    ) -> Result<Vec<InstanceId>, crate::store::StoreError> {
        let mut ids = Vec::new();
        self.for_each_held_in_store(scope, keep, |record| ids.push(record.id))?;
        Ok(ids)
    }

    /// Calls `each` with the record of every live instance in `scope` this worker holds in the
    /// store only (not resident) whose stored record `keep` accepts, in the scope's order, read
    /// from the store a page at a time: read, not loaded.
    pub(super) fn for_each_held_in_store(
        &self,
        mut scope: crate::store::ListScope,
        mut keep: impl FnMut(&InstanceRecord) -> bool,
        mut each: impl FnMut(InstanceRecord),
    ) -> Result<(), crate::store::StoreError> {
        scope.held_here = true;
        loop {
            let mut wanted = |record: &InstanceRecord| !self.table.contains(record.id) && keep(record);
            let page = self
                .store
                .cluster()
                .live_held_elsewhere(&scope, &mut wanted, LOAD_BATCH)?;
            let (Some(last), full) = (page.last().map(|record| record.id), page.len() == LOAD_BATCH) else {
                return Ok(());
            };
            page.into_iter().for_each(&mut each);
            if !full {
                return Ok(());
            }
            scope.after = Some(last);
        }
    }

    /// The loader and the sweep: loads what comes due within the horizon, evicts what is idle
    /// beyond it, a quarter of the horizon apart (and at once when the clock jumps).
    pub(super) async fn run_residency(self: Arc<Self>) {
        let mut stop = self.stop_signal();
        let mut jumps = self.options.clock.jumps();
        let pause = (self.options.residency_horizon / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        loop {
            if self.is_stopping() {
                return;
            }
            let through = self.residency_target(self.now());
            if let Err(error) = self.load_due(through).await {
                tracing::warn!(%error, "could not load the instances coming due; trying again shortly");
            }
            let evicted = self.evict_idle();
            if evicted > 0 {
                tracing::debug!(evicted, "evicted idle instances; their records stay in the store");
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|stopping| *stopping) => return,
                _ = crate::observe::jumped(&mut jumps) => {}
            }
        }
    }

    /// A slot for a record loaded or claimed, with its pending signals in sequence order; parked
    /// if its version's code is not registered. A cancel or termination asked through the store
    /// before this worker held it is acted on as if it arrived now.
    pub(super) fn new_slot(&self, record: InstanceRecord, signals: Vec<SignalRecord>) -> Slot {
        let parked = !self.registry.is_registered(&record.key);
        let mut slot = Slot::new(record, parked);
        for signal in signals {
            slot.take_in(signal);
        }
        slot
    }
}

/// Signals by instance, each instance's in the order given.
pub(super) fn inboxes_of(signals: Vec<SignalRecord>) -> HashMap<InstanceId, Vec<SignalRecord>> {
    let mut inboxes: HashMap<InstanceId, Vec<SignalRecord>> = HashMap::new();
    for signal in signals {
        inboxes.entry(signal.instance).or_default().push(signal);
    }
    inboxes
}
