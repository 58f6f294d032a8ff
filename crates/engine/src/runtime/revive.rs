//! Reviving ended instances: the operator's dry-run plan and the revival itself, in batches of
//! one commit each. A revived instance is live again on its target, held by this process, with
//! its revival in its history and counted in the target's `revived` counter; a drained target is
//! `Draining` again (the store decides it in the same commit) and says so.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::table::Slot;
use super::Runtime;
use crate::error::EngineError;
use crate::migrate::{ReviveCheck, RevivePlan, ReviveRefusal, ReviveReport, ReviveRequest};
use crate::observe::Event;
use crate::registry::VersionStatus;
use crate::store::{CounterDelta, Op, StoreError};
use strata_core::history::{HistoryEntry, HistoryEvent, ReviveStamp};
use strata_core::instance::{InstanceRecord, VersionKey};
use strata_store::ListScope;

impl Runtime {
    /// The instances a request selects, in id order: the ended ones of its scope from the store,
    /// or those of its ids the store holds (live ones too, which the plan refuses with why).
    fn select_for_revive(
        store: &dyn crate::store::Store,
        request: &ReviveRequest,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        match &request.ids {
            Some(ids) => {
                let mut ids = ids.clone();
                ids.sort();
                ids.dedup();
                let mut selected = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(record) = store.load_instance(id)?.filter(|record| request.selects(record)) {
                        selected.push(record);
                    }
                }
                Ok(selected)
            }
            None => {
                let scope = ListScope {
                    workflow: Some(request.workflow.clone()),
                    version: request.from_version.clone(),
                    ..ListScope::default()
                };
                store.finished_instances(&scope, &mut |record| request.selects(record), usize::MAX)
            }
        }
    }

    /// The request's workflow (and version it selects from) must be known, and an explicit
    /// target registered here (its code takes the revived instances up).
    fn check_revive_target(&self, request: &ReviveRequest) -> Result<(), EngineError> {
        self.registry
            .check_known(&request.workflow, request.from_version.as_ref())?;
        if let Some(version) = &request.target {
            self.move_target(&VersionKey::new(request.workflow.clone(), version.clone()))?;
        }
        Ok(())
    }

    /// `record` revived on `target` at `now_ms`, or why not: its code must be registered here.
    fn revive_on(
        &self,
        record: &InstanceRecord,
        target: &VersionKey,
        request: &ReviveRequest,
        now_ms: u64,
    ) -> Result<(InstanceRecord, ReviveStamp), ReviveRefusal> {
        let Some((code, status)) = self.registry.code_and_status(target) else {
            return Err(ReviveRefusal::TargetNotRegistered);
        };
        self.with_move_context(code.as_ref(), status, &request.steps, |context| {
            context.revive_record(record, now_ms)
        })
    }

    /// The instances a request selects, in id order, with where each would be taken up or why
    /// not. The dry run runs the state migrations too (and throws their results away), so a
    /// state a migration refuses shows in the plan.
    pub(crate) fn plan_revive(&self, request: &ReviveRequest) -> Result<RevivePlan, EngineError> {
        self.check_revive_target(request)?;
        let selected = Self::select_for_revive(self.store.as_ref(), request)?;
        let now = self.now();
        let checks = selected
            .iter()
            .map(|record| {
                let target = request.target_of(record);
                let verdict = self
                    .revive_on(record, &target, request, now)
                    .map(|(revived, _)| revived.step);
                ReviveCheck::of(record, target, verdict)
            })
            .collect();
        Ok(RevivePlan { checks })
    }

    /// Revives the selected instances in batches, each batch one commit; every instance is
    /// checked again when its turn comes. One revival runs at a time in a process; with a store
    /// many processes share, an instance another process revived first is refused, not revived
    /// twice.
    pub(crate) async fn apply_revive(self: &Arc<Self>, request: &ReviveRequest) -> Result<ReviveReport, EngineError> {
        self.check_revive_target(request)?;
        let _one_at_a_time = self.reviving.lock().await;
        let selection = request.clone();
        let selected = self
            .store_call(move |store| Self::select_for_revive(store, &selection))
            .await?;
        let mut report = ReviveReport::default();
        for batch in selected.chunks(request.batch_size.max(1)) {
            if self.is_stopping() {
                return Err(EngineError::ShuttingDown);
            }
            let now = self.now();
            let mut revivals: Vec<Revival<'_>> = Vec::with_capacity(batch.len());
            for record in batch {
                let target = request.target_of(record);
                match self.revive_on(record, &target, request, now) {
                    Ok((mut revived, stamp)) => {
                        // Held by this process from the commit on, under the next claim.
                        revived.claim = record.claim + 1;
                        revived.history.worker = self.store.cluster().worker_id().into();
                        revivals.push(Revival {
                            ended: record,
                            revived,
                            entry: HistoryEntry {
                                at_ms: now,
                                event: HistoryEvent::Revived(stamp),
                            },
                        });
                    }
                    Err(refusal) => report.refused.push(ReviveCheck::of(record, target, Err(refusal))),
                }
            }
            // An instance another process revived (or retention removed) meanwhile fails the
            // commit whole: it is refused, and the rest of the batch committed again.
            loop {
                match self.commit_revivals(&mut revivals, &mut report).await {
                    Err(EngineError::Store(StoreError::NoLongerEnded { ids }))
                        if revivals.iter().any(|revival| ids.contains(&revival.ended.id)) =>
                    {
                        revivals.retain(|revival| {
                            let changed = ids.contains(&revival.ended.id);
                            if changed {
                                let target = revival.revived.key.clone();
                                report.refused.push(ReviveCheck::of(
                                    revival.ended,
                                    target,
                                    Err(ReviveRefusal::Changed),
                                ));
                            }
                            !changed
                        });
                    }
                    other => break other?,
                }
            }
        }
        report.refused.sort_by_key(|check| check.id);
        Ok(report)
    }

    /// Commits one batch of revivals, each with its entry in its history and the targets'
    /// counters, then takes the revived instances into the table and runs them, and says which
    /// targets the commit undrained.
    async fn commit_revivals(
        self: &Arc<Self>,
        revivals: &mut [Revival<'_>],
        report: &mut ReviveReport,
    ) -> Result<(), EngineError> {
        if revivals.is_empty() {
            return Ok(());
        }
        let mut flows: BTreeMap<(VersionKey, VersionKey), u64> = BTreeMap::new();
        let mut ops = Vec::with_capacity(revivals.len() * 2 + 2);
        let mut records = Vec::with_capacity(revivals.len());
        for revival in revivals.iter() {
            let mut record = revival.revived.clone();
            super::transition::append_history(&mut record, &revival.entry, self.options.history_limit, &mut ops)?;
            ops.push(Op::ReviveInstance(record.encode()?));
            *flows
                .entry((revival.ended.key.clone(), record.key.clone()))
                .or_default() += 1;
            records.push(record);
        }
        let mut targets: BTreeMap<VersionKey, (u64, VersionStatus)> = BTreeMap::new();
        for ((_, to), count) in &flows {
            targets.entry(to.clone()).or_insert((0, self.registry.status(to))).0 += count;
        }
        ops.extend(targets.iter().map(|(key, (count, _))| Op::AdjustCounters {
            key: key.clone(),
            delta: CounterDelta::revived(*count),
        }));
        self.begin_work();
        let committed = self.write_then_announce(ops).await;
        self.work_finished();
        let drained = committed?;
        self.announce(drained);
        for record in records {
            let id = record.id;
            self.table.insert(Slot::new(record, false));
            report.revived.push(id);
            self.schedule(id);
        }
        for ((from, to), count) in flows {
            tracing::info!(from = %from, to = %to, count, "ended instances revived");
            self.events.emit(Event::InstancesRevived { from, to, count });
        }
        for (key, (_, before)) in targets {
            if before == VersionStatus::Drained && self.registry.status(&key) == VersionStatus::Draining {
                tracing::warn!(version = %key, "version no longer drained: instances revived onto it are live, keep its code until they finish");
                let counters = self.registry.counters(&key);
                self.events.emit(Event::VersionUndrained {
                    key: key.clone(),
                    counters,
                });
                report.undrained.push(key);
            }
        }
        Ok(())
    }
}

/// One instance a batch revives: its record as it ended, as revived, and its history entry.
struct Revival<'a> {
    ended: &'a InstanceRecord,
    revived: InstanceRecord,
    entry: HistoryEntry,
}
