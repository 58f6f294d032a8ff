//! Claims on instances at step boundaries, and moves between versions: the operator's plan and
//! apply, and the `AutoUpgrade` policy's move before an instance's next step.
//!
//! A claim takes an instance the way a driver does (its slot's `running` flag), so no step of it
//! runs while its record is rewritten; whatever arrived meanwhile is looked at on release.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::table::Slot;
use super::{Runtime, TakeIns};
use crate::error::EngineError;
use crate::migrate::{MoveCheck, MoveContext, MovePlan, MoveRefusal, MoveReport, MoveRequest};
use crate::observe::Event;
use crate::registry::{RegistryError, VersionStatus};
use crate::store::{CounterDelta, Op};
use strata_core::history::{HistoryEntry, HistoryEvent};
use strata_core::instance::{InstanceId, InstanceRecord, InstanceStatus, MoveCause, VersionKey};
use strata_core::routing::RouteInput;
use strata_core::workflow::VersionCode;

/// What the `AutoUpgrade` policy decided for an instance about to run a step.
pub(super) enum AutoUpgrade {
    /// It is on the routing target already.
    Stay,
    /// It cannot move; the reason is recorded on the instance.
    Pinned(String),
    /// Its record on the routing target.
    Move(Box<InstanceRecord>),
}

impl Runtime {
    /// Takes a live instance at its step boundary, as a driver would; `Err` says why not.
    pub(super) fn claim(&self, id: InstanceId) -> Result<InstanceRecord, MoveRefusal> {
        self.table
            .with(id, |slot| {
                claimable(slot)?;
                slot.running = true;
                Ok(slot.record.clone())
            })
            .unwrap_or(Err(MoveRefusal::Finished))
    }

    /// Gives a claimed instance back, with its newly committed record if there is one, and lets a
    /// driver look at it if anything arrived while it was claimed.
    pub(super) fn release(self: &Arc<Self>, id: InstanceId, committed: Option<InstanceRecord>) {
        let rerun = self.table.with(id, |slot| {
            if let Some(record) = committed {
                slot.record = record;
            }
            slot.running = false;
            std::mem::take(&mut slot.rerun)
        });
        if rerun == Some(true) {
            self.schedule(id);
        }
    }

    /// The code and status of a move's target; an error if it is not registered.
    pub(super) fn move_target(&self, key: &VersionKey) -> Result<(Arc<dyn VersionCode>, VersionStatus), EngineError> {
        self.registry.code_and_status(key).ok_or_else(|| {
            EngineError::Registry(RegistryError::UnknownVersion {
                key: key.clone(),
                known: self.registry.describe_workflow(&key.workflow),
            })
        })
    }

    /// Runs `action` with a move context for `target` (locks the migrations and step mappings
    /// for its duration; run no await inside).
    pub(super) fn with_move_context<R>(
        &self,
        target: &dyn VersionCode,
        target_status: VersionStatus,
        extra_steps: &std::collections::HashMap<String, String>,
        action: impl FnOnce(&MoveContext<'_>) -> R,
    ) -> R {
        let chains = self.migrations.read();
        let mappings = self.step_mappings.read();
        action(&MoveContext {
            target,
            target_status,
            chains: &chains,
            mappings: &mappings,
            extra_steps,
        })
    }

    /// The live instances a request selects, in id order, each as `make` makes it from its
    /// record and whether it can be claimed now: first those this worker holds in the store only
    /// (read page by page, not loaded), then the resident ones from memory (which win for an
    /// instance loaded meanwhile). The sweep evicts nothing meanwhile, so none is missed; `make`
    /// runs under a table shard's lock for resident ones.
    fn select_for_move<T>(
        &self,
        request: &MoveRequest,
        mut make: impl FnMut(&InstanceRecord, Result<(), MoveRefusal>) -> T,
    ) -> Result<Vec<T>, EngineError> {
        let wanted: Option<HashSet<InstanceId>> = request.ids.as_ref().map(|ids| ids.iter().copied().collect());
        let selects = |record: &InstanceRecord, status: InstanceStatus| {
            record.key.workflow == request.workflow
                && request
                    .from_version
                    .as_ref()
                    .is_none_or(|version| *version == record.key.version)
                && wanted.as_ref().is_none_or(|ids| ids.contains(&record.id))
                && request.status.is_none_or(|wanted| wanted == status)
        };
        let _hold = self.hold_resident();
        let mut selected = BTreeMap::new();
        let scope = crate::store::ListScope {
            workflow: Some(request.workflow.clone()),
            version: request.from_version.clone(),
            ..Default::default()
        };
        self.for_each_held_in_store(
            scope,
            |record| selects(record, InstanceStatus::of_phase(&record.phase)),
            |record| {
                let available = if self.registry.is_registered(&record.key) {
                    Ok(())
                } else {
                    Err(MoveRefusal::SourceNotRegistered)
                };
                selected.insert(record.id, make(&record, available));
            },
        )?;
        self.table.for_each(|slot| {
            if selects(&slot.record, Self::info_status(slot)) {
                selected.insert(slot.record.id, make(&slot.record, claimable(slot)));
            }
        });
        Ok(selected.into_values().collect())
    }

    /// The live instances a request selects, in id order, with their plan verdicts. The dry run
    /// runs the state migrations too (and throws their results away), so a state the migration
    /// refuses shows in the plan, not only when applying.
    pub(crate) fn plan_moves(&self, request: &MoveRequest) -> Result<MovePlan, EngineError> {
        let target = request.target_key();
        let (code, status) = self.move_target(&target)?;
        let selected = self.select_for_move(request, |record, available| (record.clone(), available))?;
        let now = self.now();
        let checks = self.with_move_context(code.as_ref(), status, &request.steps, |context| {
            selected
                .into_iter()
                .map(|(record, available)| MoveCheck {
                    verdict: available
                        .and_then(|()| context.move_record(&record, MoveCause::Operator, now))
                        .map(|moved| moved.step),
                    id: record.id,
                    from: record.key,
                    step: record.step,
                })
                .collect()
        });
        Ok(MovePlan { target, checks })
    }

    /// Moves the selected instances in batches, each batch one commit; every instance is checked
    /// again when its turn comes, at a step boundary. A batch loads those of its instances that
    /// are not resident, and lets them go once committed: the sweep evicts them again when idle.
    pub(crate) async fn apply_moves(self: &Arc<Self>, request: &MoveRequest) -> Result<MoveReport, EngineError> {
        let target = request.target_key();
        self.move_target(&target)?;
        // Each instance is checked (and its state migrated) once, when its turn comes.
        let selection = request.clone();
        let selected = self
            .off_executor(move |runtime| {
                runtime.select_for_move(&selection, |record, _| Planned {
                    id: record.id,
                    from: record.key.clone(),
                    step: record.step.clone(),
                })
            })
            .await?;
        let mut report = MoveReport::default();
        for batch in selected.chunks(request.batch_size.max(1)) {
            if self.is_stopping() {
                return Err(EngineError::ShuttingDown);
            }
            let _hold = self.hold_resident();
            let ids: Vec<InstanceId> = batch.iter().map(|planned| planned.id).collect();
            self.load_resident(&ids).await?;
            let (code, status) = self.move_target(&target)?;
            let mut moved = self.with_move_context(code.as_ref(), status, &request.steps, |context| {
                let mut moved = Vec::new();
                for planned in batch {
                    let record = match self.claim(planned.id) {
                        Ok(record) => record,
                        Err(refusal) => {
                            report.refused.push(refused(planned, refusal));
                            continue;
                        }
                    };
                    match context.move_record(&record, MoveCause::Operator, self.now()) {
                        Ok(next) => moved.push((record.key.clone(), next)),
                        Err(refusal) => {
                            report.refused.push(refused(planned, refusal));
                            self.release(planned.id, None);
                        }
                    }
                }
                moved
            });
            self.begin_work();
            let committed = self.commit_moves(&mut moved).await;
            self.work_finished();
            match committed {
                Ok(drained) => {
                    for (_, record) in moved {
                        report.moved.push(record.id);
                        self.release(record.id, Some(record));
                    }
                    self.announce(drained);
                }
                Err(error) => {
                    for (_, record) in moved {
                        self.release(record.id, None);
                    }
                    return Err(error);
                }
            }
        }
        Ok(report)
    }

    /// Commits moved records, each with its move in its history, with both versions' counters
    /// in one commit, then applies the counters in memory and announces the move. The caller
    /// updates the slots with the records (which carry their history's new book), then hands the
    /// versions drained to `announce`.
    pub(super) async fn commit_moves(
        &self,
        moved: &mut [(VersionKey, InstanceRecord)],
    ) -> Result<TakeIns, EngineError> {
        if moved.is_empty() {
            return Ok(TakeIns::none());
        }
        let mut flows: BTreeMap<(VersionKey, VersionKey), (u64, MoveCause)> = BTreeMap::new();
        let mut ops = Vec::with_capacity(moved.len() * 2 + 4);
        for (from, record) in moved.iter_mut() {
            if let Some(stamp) = record.moves.last().cloned() {
                let entry = HistoryEntry {
                    at_ms: stamp.at_ms,
                    event: HistoryEvent::Moved(stamp),
                };
                super::transition::append_history(record, &entry, self.options.history_limit, &mut ops)?;
            }
            ops.push(Op::PutInstance(self.encode_replacing_resident(record)?));
            let cause = record.moves.last().map_or(MoveCause::Operator, |stamp| stamp.cause);
            flows.entry((from.clone(), record.key.clone())).or_insert((0, cause)).0 += 1;
        }
        let mut deltas: Vec<(VersionKey, CounterDelta)> = Vec::new();
        for ((from, to), (count, _)) in &flows {
            deltas.push((from.clone(), CounterDelta::moved(*count, false)));
            deltas.push((to.clone(), CounterDelta::moved(*count, true)));
        }
        ops.extend(deltas.into_iter().map(|(key, delta)| Op::AdjustCounters { key, delta }));
        let drained = self.write_then_announce(ops).await?;
        for ((from, to), (count, cause)) in flows {
            tracing::info!(from = %from, to = %to, count, ?cause, "instances moved between versions");
            self.events.emit(Event::InstancesMoved { from, to, count, cause });
        }
        Ok(drained)
    }

    /// Where the `AutoUpgrade` policy would take `record` now: the version a new instance with
    /// its routing key would be routed to.
    fn routing_target(&self, record: &InstanceRecord) -> Option<semver::Version> {
        let table = self.routing.load();
        let input = RouteInput {
            routing_key: record.routing_key.as_deref(),
            instance_id: record.id.0,
            attributes: &[],
        };
        match table.route(&record.key.workflow, input) {
            Some(version) => Some(version.clone()),
            None => self.registry.newest_active(&record.key.workflow),
        }
    }

    /// The `AutoUpgrade` decision for an instance its driver is about to step.
    pub(super) fn auto_upgrade(&self, record: &InstanceRecord) -> AutoUpgrade {
        let Some(version) = self.routing_target(record) else {
            return AutoUpgrade::Stay;
        };
        if version == record.key.version {
            return AutoUpgrade::Stay;
        }
        let target = VersionKey::new(record.key.workflow.clone(), version);
        let Some((code, status)) = self.registry.code_and_status(&target) else {
            return AutoUpgrade::Pinned(format!("the routing target {target} is not registered"));
        };
        let no_extra = Default::default();
        self.with_move_context(code.as_ref(), status, &no_extra, |context| {
            match context.move_record(record, MoveCause::AutoUpgrade, self.now()) {
                Ok(moved) => AutoUpgrade::Move(Box::new(moved)),
                Err(refusal) => AutoUpgrade::Pinned(format!("cannot move to {target}: {refusal}")),
            }
        })
    }
}

/// Whether an instance is at a step boundary and free to be claimed now.
fn claimable(slot: &Slot) -> Result<(), MoveRefusal> {
    if slot.running {
        Err(MoveRefusal::MidStep)
    } else if slot.end_requested.is_some() {
        Err(MoveRefusal::CancelRequested)
    } else if slot.parked {
        Err(MoveRefusal::SourceNotRegistered)
    } else {
        Ok(())
    }
}

/// An instance a move selected: what its report entry says if it does not move.
struct Planned {
    id: InstanceId,
    from: VersionKey,
    step: String,
}

/// The report entry of a selected instance that did not move.
fn refused(selected: &Planned, refusal: MoveRefusal) -> MoveCheck {
    MoveCheck {
        id: selected.id,
        from: selected.from.clone(),
        step: selected.step.clone(),
        verdict: Err(refusal),
    }
}
