//! Runs watched rollouts: feeds each running rollout both versions' figures, commits what the
//! decision rule says (advance, promote, roll back), and routes by the result.
//!
//! Evaluation happens when an instance of a watched workflow finishes, on a one-second tick, and
//! whenever a manual clock jumps. Every transition is one commit of the rollout's record; the
//! routing table is rebuilt from it before the new record can be read here, so a rollback stops
//! new instances from reaching the candidate from the next routing decision on (invariant 7),
//! and whoever sees a new stage starts instances at its share.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use semver::VersionReq;

use super::Runtime;
use crate::error::EngineError;
use crate::migrate::MoveRequest;
use crate::observe::{Event, BUCKET_MS};
use crate::store::{Op, VersionCounters};
use strata_core::instance::{VersionKey, RECORD_FORMAT};
use strata_core::measure;
use strata_core::rollout::{
    decide, Decision, Figures, OnRollback, RolloutError, RolloutRecord, RolloutSpec, RolloutStatus, StageFigures,
    Transition, TransitionRecord,
};
use strata_core::routing::{RolloutRule, RoutingSpec};

/// The rollouts known to a runtime, and what wakes their evaluation.
#[derive(Default)]
pub(crate) struct Rollouts {
    /// Every rollout in the store, by name.
    records: parking_lot::Mutex<BTreeMap<String, RolloutRecord>>,
    /// Workflows with a running rollout: read without a lock when an instance finishes.
    watched: arc_swap::ArcSwap<HashSet<String>>,
    /// Wakes the evaluation task.
    wake: tokio::sync::Notify,
    /// Orders transitions (evaluation and operator calls).
    transitions: tokio::sync::Mutex<()>,
    /// Whether this process evaluates the rollouts: always with a store only it opens; with a
    /// shared one, while it holds the rollout lease.
    pub leading: std::sync::atomic::AtomicBool,
}

impl Rollouts {
    /// Why `key` may not be drained now, if an active rollout compares it (stable) or routes to
    /// it (candidate): draining either would strand the rollout.
    pub(super) fn refusal_to_drain(&self, key: &VersionKey) -> Option<RolloutError> {
        let records = self.records.lock();
        records
            .values()
            .filter(|record| record.status.is_active() && record.spec.workflow == key.workflow)
            .find_map(|record| {
                let role = if record.spec.candidate == key.version {
                    "candidate"
                } else if record.spec.stable == key.version {
                    "stable"
                } else {
                    return None;
                };
                Some(RolloutError::VersionInRollout {
                    name: record.spec.name.clone(),
                    workflow: key.workflow.clone(),
                    version: key.version.clone(),
                    role,
                })
            })
    }

    /// The candidate and shadow share (basis points) of `workflow`'s running rollout in a
    /// shadow stage whose stable version is `stable`, if there is one (lock-free for a workflow
    /// without a running rollout).
    pub(super) fn shadow_rule(&self, workflow: &str, stable: &semver::Version) -> Option<(semver::Version, u16)> {
        if !self.watched.load().contains(workflow) {
            return None;
        }
        let records = self.records.lock();
        records
            .values()
            .filter(|record| record.spec.workflow == workflow && record.spec.stable == *stable)
            .map(|record| (record, record.shadow_share()))
            .find(|(_, share)| *share > 0)
            .map(|(record, share)| (record.spec.candidate.clone(), share))
    }

    /// Loads the stored rollouts.
    pub(super) fn load(&self, records: Vec<RolloutRecord>) {
        // Routed once the open has everything (`Runtime::refresh_routing`).
        self.change(
            |known| {
                known.extend(records.into_iter().map(|record| (record.spec.name.clone(), record)));
                true
            },
            |_| {},
        );
    }

    /// Applies `change` to the rollouts held here (it returns whether it changed any); when it
    /// did, renews the watched workflows and calls `route` with the records still locked, so
    /// whoever reads a changed rollout next also starts instances by routing made from it.
    pub(super) fn change(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, RolloutRecord>) -> bool,
        route: impl FnOnce(&BTreeMap<String, RolloutRecord>),
    ) -> bool {
        let mut known = self.records.lock();
        let changed = change(&mut known);
        if changed {
            self.refresh_watched(&known);
            route(&known);
        }
        changed
    }

    fn refresh_watched(&self, records: &BTreeMap<String, RolloutRecord>) {
        let watched = records
            .values()
            .filter(|record| record.status == RolloutStatus::Running)
            .map(|record| record.spec.workflow.clone())
            .collect();
        self.watched.store(Arc::new(watched));
    }

    /// Every rollout, oldest start first.
    pub(super) fn all(&self) -> Vec<RolloutRecord> {
        let mut records: Vec<RolloutRecord> = self.records.lock().values().cloned().collect();
        records.sort_by_key(started_at);
        records
    }

    /// `spec` with the routing the rollouts decide laid over it: for each workflow, its active
    /// rollout (else its latest) sets the default (the stable version while it runs or after a rollback, the
    /// candidate after a promotion) and, while it runs, a first rule sending its stage's share to
    /// the candidate. Other rules for a rolled-back or promoted candidate are dropped.
    pub(super) fn overlay(&self, spec: &RoutingSpec) -> RoutingSpec {
        overlay(&self.records.lock(), spec)
    }
}

/// `spec` with the routing `records` decide laid over it (see `Rollouts::overlay`).
pub(super) fn overlay(records: &BTreeMap<String, RolloutRecord>, spec: &RoutingSpec) -> RoutingSpec {
    let mut latest: BTreeMap<&str, &RolloutRecord> = BTreeMap::new();
    for record in records.values() {
        // The active rollout (at most one per workflow) wins, else the latest started.
        let rank = |record: &RolloutRecord| (record.status.is_active(), started_at(record));
        let newer = latest
            .get(record.spec.workflow.as_str())
            .is_none_or(|current| rank(current) <= rank(record));
        if newer {
            latest.insert(&record.spec.workflow, record);
        }
    }
    let mut routed = spec.clone();
    for (workflow, record) in latest {
        let routing = routed.workflows.entry(workflow.to_string()).or_default();
        let candidate = &record.spec.candidate;
        routing.rollouts.retain(|rule| rule.candidate != *candidate);
        let default = match record.status {
            RolloutStatus::Promoted => candidate,
            _ => &record.spec.stable,
        };
        routing.default = VersionReq::parse(&format!("={default}")).ok();
        if record.status.is_active() {
            routing.rollouts.insert(
                0,
                RolloutRule {
                    candidate: candidate.clone(),
                    basis_points: record.candidate_share(),
                    flag: None,
                    segments: Vec::new(),
                },
            );
        }
    }
    routed
}

/// Takes `records` as the store has them into `known` where they are newer than the ones held
/// (more transitions): another process decided or an operator acted. Returns whether any changed.
pub(super) fn adopt_newer(known: &mut BTreeMap<String, RolloutRecord>, records: Vec<RolloutRecord>) -> bool {
    let mut changed = false;
    for record in records {
        let newer = known
            .get(&record.spec.name)
            .is_none_or(|held| held.history.len() < record.history.len());
        if newer {
            known.insert(record.spec.name.clone(), record);
            changed = true;
        }
    }
    changed
}

fn started_at(record: &RolloutRecord) -> u64 {
    record.history.first().map_or(0, |first| first.at_ms)
}

impl Runtime {
    /// Changes the rollouts held here with `change` (see `Rollouts::change`) and, when it changed
    /// any, builds the routing table from them before the change can be read: a caller that sees
    /// a rollout's new stage starts instances at that stage's share.
    fn change_rollouts(&self, change: impl FnOnce(&mut BTreeMap<String, RolloutRecord>) -> bool) -> bool {
        let spec = self.routing_spec.lock();
        self.rollouts
            .change(change, |records| self.install_table(&overlay(records, &spec)))
    }

    /// Wakes rollout evaluation if `key`'s workflow has a running rollout (called as an instance
    /// finishes; one lock-free read otherwise).
    pub(super) fn rollouts_notice_finish(&self, key: &VersionKey) {
        if self.rollouts.watched.load().contains(&key.workflow) {
            self.rollouts.wake.notify_one();
        }
    }

    /// The evaluation task: runs until shutdown.
    pub(super) async fn run_rollouts(self: Arc<Self>) {
        let mut stop = self.stop_signal();
        let mut jumps = self.options.clock.jumps();
        loop {
            if self.is_stopping() {
                return;
            }
            if let Err(error) = self.evaluate_rollouts().await {
                tracing::warn!(%error, "rollout evaluation failed; trying again");
            }
            tokio::select! {
                _ = self.rollouts.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = crate::observe::jumped(&mut jumps) => {}
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
        }
    }

    fn counters_of(&self, workflow: &str, version: &semver::Version) -> VersionCounters {
        self.registry.counters(&VersionKey::new(workflow, version.clone()))
    }

    /// The candidate's and the stable version's figures in the rollout's current stage, as its
    /// gates see them now.
    pub(crate) fn rollout_figures(&self, record: &RolloutRecord) -> (Figures, Figures) {
        let figures = self.stage_figures(record, self.now());
        (figures.candidate, figures.stable)
    }

    /// Both versions' figures in the rollout's current stage at `now_ms` (a shadow stage's
    /// pairs read once for both).
    fn stage_figures(&self, record: &RolloutRecord, now_ms: u64) -> StageFigures {
        let pairs = record.in_shadow_stage().then(|| self.stage_pairs(record));
        StageFigures {
            candidate: self.version_figures(record, true, now_ms, pairs.as_deref()),
            stable: self.version_figures(record, false, now_ms, pairs.as_deref()),
        }
    }

    /// A version's metrics window as one point per bucket, merged over this worker's and, with
    /// a shared store, every other live worker's published window.
    pub(crate) fn metrics_series(&self, key: &VersionKey, now_ms: u64) -> Vec<crate::observe::MetricsPoint> {
        let mut exports = self.others_metrics(key);
        exports.extend(self.registry.metrics(key).map(|metrics| metrics.export()));
        crate::observe::window_series(&exports, now_ms)
    }

    /// A version's figures in the rollout's current stage: counts from the committed counters
    /// since the stage's baseline (exact, and kept across restarts), latency and failure runs
    /// from the metrics windows since the stage started — of every live worker, with a shared
    /// store (each publishes its own at every heartbeat); in a shadow stage, the `pairs`
    /// compared in it.
    fn version_figures(
        &self,
        record: &RolloutRecord,
        candidate: bool,
        now_ms: u64,
        pairs: Option<&[strata_core::shadow::ShadowPair]>,
    ) -> Figures {
        let (version, baseline) = if candidate {
            (&record.spec.candidate, &record.candidate_baseline)
        } else {
            (&record.spec.stable, &record.stable_baseline)
        };
        let counters = self.counters_of(&record.spec.workflow, version);
        // In a shadow stage the candidate serves no real start: it is judged on its shadow
        // instances (their latency and failure runs are in its metrics window, which only they
        // reach then).
        let shadow = candidate && record.in_shadow_stage();
        let (completed, failed, cancelled) = if shadow {
            (
                counters.shadow.completed.saturating_sub(baseline.shadow.completed),
                counters.shadow.failed.saturating_sub(baseline.shadow.failed),
                counters.shadow.cancelled.saturating_sub(baseline.shadow.cancelled),
            )
        } else {
            (
                counters.completed.saturating_sub(baseline.completed),
                counters.failed.saturating_sub(baseline.failed),
                counters.cancelled.saturating_sub(baseline.cancelled),
            )
        };
        let (totals, base_totals) = if shadow {
            (&counters.shadow.measures, &baseline.shadow.measures)
        } else {
            (&counters.measures, &baseline.measures)
        };
        let key = VersionKey::new(record.spec.workflow.clone(), version.clone());
        let window = Duration::from_millis(now_ms.saturating_sub(record.stage_started_ms).max(BUCKET_MS));
        // This worker's window and, with a shared store, every other live worker's.
        let mut exports = self.others_metrics(&key);
        exports.extend(self.registry.metrics(&key).map(|metrics| metrics.export()));
        let metrics = (!exports.is_empty()).then(|| crate::observe::merged_window(&exports, now_ms, window));
        let finished = completed + failed + cancelled;
        // In a shadow stage both versions' measures come from the pairs compared in it (each
        // shadow against its own real twin: the same inputs), else from the committed totals
        // since the baseline.
        let (pair_count, mismatches) = match (pairs, candidate) {
            (Some(pairs), true) => (
                pairs.len() as u64,
                pairs.iter().filter(|pair| !pair.matched).count() as u64,
            ),
            _ => (0, 0),
        };
        let measures = self
            .registry
            .code(&key)
            .map(|code| {
                code.measures()
                    .iter()
                    .map(|spec| {
                        let (total, over) = match pairs {
                            Some(pairs) => {
                                let mut total = measure::MeasureTotal::default();
                                for pair in pairs {
                                    let side = if candidate {
                                        &pair.shadow_measures
                                    } else {
                                        &pair.real_measures
                                    };
                                    if let Some(recorded) = side.get(&spec.name) {
                                        total.add(recorded);
                                    }
                                }
                                (total, pairs.len() as u64)
                            }
                            None => {
                                let total = totals.get(&spec.name).copied().unwrap_or_default();
                                let before = base_totals.get(&spec.name).copied().unwrap_or_default();
                                (total.since(&before), finished)
                            }
                        };
                        (spec.name.clone(), measure::figure(spec.kind, &total, over))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Figures {
            finished,
            completed,
            failed,
            attempts: metrics.as_ref().map_or(0, |snapshot| snapshot.attempts),
            p95_step_micros: metrics
                .as_ref()
                .and_then(|snapshot| snapshot.step_latency)
                .map(|quantiles| quantiles.p95.as_micros() as u64),
            consecutive_failures: metrics.as_ref().map_or(0, |snapshot| snapshot.consecutive_failures),
            measures,
            pairs: pair_count,
            mismatches,
        }
    }

    /// The shadow pairs of `record`'s rollout compared since its stage started.
    fn stage_pairs(&self, record: &RolloutRecord) -> Vec<strata_core::shadow::ShadowPair> {
        match self.store.shadow_pairs(&record.spec.name) {
            Ok(pairs) => pairs
                .into_iter()
                .filter(|pair| pair.compared_ms >= record.stage_started_ms)
                .collect(),
            Err(error) => {
                tracing::warn!(rollout = %record.spec.name, %error, "could not read the shadow pairs");
                Vec::new()
            }
        }
    }

    /// The name of the rollout that shadows `stable` with `candidate` in `workflow` (the latest
    /// one started), for a pair of theirs.
    pub(super) fn shadowing_rollout(
        &self,
        workflow: &str,
        stable: &semver::Version,
        candidate: &semver::Version,
    ) -> Option<String> {
        self.rollouts
            .records
            .lock()
            .values()
            .filter(|record| {
                record.spec.workflow == workflow && record.spec.stable == *stable && record.spec.candidate == *candidate
            })
            .max_by_key(|record| started_at(record))
            .map(|record| record.spec.name.clone())
    }

    /// Takes in the store's rollouts (with a shared store, other processes change them) and
    /// routes by them; returns whether any changed.
    pub(super) fn refresh_rollouts(&self) -> bool {
        match self.store.rollouts() {
            Ok(records) => self.change_rollouts(|known| adopt_newer(known, records)),
            Err(error) => {
                tracing::warn!(%error, "could not read the rollouts from the store");
                false
            }
        }
    }

    /// Evaluates every running rollout once and commits what it decides. With a shared store
    /// only the worker holding the rollout lease evaluates, so one process decides at a time.
    pub(crate) async fn evaluate_rollouts(self: &Arc<Self>) -> Result<(), EngineError> {
        if !self.rollouts.leading.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let _ordered = self.rollouts.transitions.lock().await;
        let running: Vec<RolloutRecord> = self
            .rollouts
            .records
            .lock()
            .values()
            .filter(|record| record.status == RolloutStatus::Running)
            .cloned()
            .collect();
        for record in running {
            let now = self.now();
            let figures = self.stage_figures(&record, now);
            let transition = match decide(&record, &figures.candidate, &figures.stable, now) {
                Decision::Hold => continue,
                Decision::Advance => Transition::Advanced {
                    stage: record.stage + 1,
                },
                Decision::Promote => Transition::Promoted,
                Decision::RollBack { gate, reason } => Transition::RolledBack {
                    gate: Some(gate),
                    reason,
                    candidate: Box::new(figures.candidate.clone()),
                    stable: Box::new(figures.stable.clone()),
                },
            };
            self.transition(record, transition, now, Some(figures)).await?;
        }
        Ok(())
    }

    /// Commits `transition` of `record`, then routes by it and announces it. `figures`: the
    /// stage's, when the caller has them already (else read here).
    async fn transition(
        self: &Arc<Self>,
        mut record: RolloutRecord,
        transition: Transition,
        now_ms: u64,
        figures: Option<StageFigures>,
    ) -> Result<(), EngineError> {
        let name = record.spec.name.clone();
        let stage_before = record.stage;
        // What the stage showed, before a new stage starts counting afresh.
        let figures = (record.status.is_active() && !matches!(transition, Transition::Started))
            .then(|| figures.unwrap_or_else(|| self.stage_figures(&record, now_ms)));
        match &transition {
            Transition::Started => {}
            Transition::Advanced { stage } => {
                record.stage = *stage;
                self.start_stage(&mut record, now_ms);
            }
            Transition::Paused => record.paused_at_ms = Some(now_ms),
            Transition::Resumed => {
                if let Some(at) = record.paused_at_ms.take() {
                    record.paused_ms += now_ms.saturating_sub(at);
                }
            }
            Transition::Promoted => record.status = RolloutStatus::Promoted,
            Transition::RolledBack { .. } => record.status = RolloutStatus::RolledBack,
        }
        record.status = match &transition {
            Transition::Paused => RolloutStatus::Paused,
            Transition::Resumed => RolloutStatus::Running,
            _ => record.status,
        };
        record.history.push(TransitionRecord {
            at_ms: now_ms,
            stage: stage_before,
            transition: transition.clone(),
            figures,
        });
        if let Err(error) = self.write(vec![Op::PutRollout(Box::new(record.clone()))]).await {
            if let crate::store::StoreError::RolloutChanged { .. } = error {
                // Decided from an older copy: take in the store's and let the caller look again.
                self.refresh_rollouts();
            }
            return Err(error.into());
        }
        self.change_rollouts(|records| {
            records.insert(name.clone(), record.clone());
            true
        });
        let spec = &record.spec;
        let event = match transition {
            Transition::Started => {
                tracing::info!(rollout = %name, candidate = %spec.candidate, stable = %spec.stable, "rollout started");
                Event::RolloutStarted {
                    name,
                    workflow: spec.workflow.clone(),
                    candidate: spec.candidate.clone(),
                    stable: spec.stable.clone(),
                }
            }
            Transition::Advanced { stage } => {
                let basis_points = record.candidate_share();
                tracing::info!(rollout = %name, stage, basis_points, "rollout advanced");
                Event::RolloutAdvanced {
                    name,
                    stage,
                    basis_points,
                }
            }
            Transition::Paused => Event::RolloutPaused { name },
            Transition::Resumed => Event::RolloutResumed { name },
            Transition::Promoted => {
                tracing::info!(rollout = %name, candidate = %spec.candidate, "rollout promoted");
                Event::RolloutPromoted {
                    name,
                    candidate: spec.candidate.clone(),
                }
            }
            Transition::RolledBack { gate, reason, .. } => {
                tracing::warn!(rollout = %name, ?gate, %reason, "rollout rolled back");
                if spec.on_rollback == OnRollback::MoveBack {
                    let request = MoveRequest::new(spec.workflow.clone(), spec.stable.clone())
                        .from_version(spec.candidate.clone());
                    match self.apply_moves(&request).await {
                        Ok(report) => {
                            tracing::info!(rollout = %name, moved = report.moved.len(), stayed = report.refused.len(), "moved the candidate's instances back")
                        }
                        Err(error) => {
                            tracing::warn!(rollout = %name, %error, "could not move the candidate's instances back")
                        }
                    }
                }
                Event::RolloutRolledBack { name, gate, reason }
            }
        };
        let promoted = matches!(event, Event::RolloutPromoted { .. });
        self.events.emit(event);
        if promoted {
            // The old default takes no new instances and drains (announced after the promotion).
            let stable = VersionKey::new(spec.workflow.clone(), spec.stable.clone());
            if let Err(error) = self.drain(&stable).await {
                tracing::warn!(version = %stable, %error, "could not drain the old default after a promotion");
            }
        }
        Ok(())
    }

    fn start_stage(&self, record: &mut RolloutRecord, now_ms: u64) {
        record.stage_started_ms = now_ms;
        record.paused_ms = 0;
        record.paused_at_ms = None;
        record.candidate_baseline = self.counters_of(&record.spec.workflow, &record.spec.candidate);
        record.stable_baseline = self.counters_of(&record.spec.workflow, &record.spec.stable);
    }

    /// Starts a rollout: both versions registered, no other active rollout of the workflow.
    /// Returns its name: the spec's, or for a default name (`workflow@candidate`) an earlier,
    /// finished rollout of the same candidate holds, the next free `workflow@candidate~N`.
    pub(crate) async fn start_rollout(self: &Arc<Self>, mut spec: RolloutSpec) -> Result<String, EngineError> {
        spec.validate()?;
        for version in [&spec.candidate, &spec.stable] {
            let key = VersionKey::new(spec.workflow.clone(), version.clone());
            if !self.registry.is_registered(&key) {
                return Err(crate::registry::RegistryError::UnknownVersion {
                    known: self.registry.describe_workflow(&spec.workflow),
                    key,
                }
                .into());
            }
        }
        self.check_measure_gates(&spec)?;
        let _ordered = self.rollouts.transitions.lock().await;
        {
            let records = self.rollouts.records.lock();
            let default_name = format!("{}@{}", spec.workflow, spec.candidate);
            if let Some(existing) = records.get(&spec.name) {
                if spec.name != default_name || existing.status.is_active() {
                    return Err(RolloutError::Conflict {
                        name: spec.name.clone(),
                        reason: "a rollout of that name exists; give this one another name".into(),
                    }
                    .into());
                }
                // Rolled out again after an earlier rollout of it ended: both stay in the history.
                let again = (2u32..)
                    .map(|count| format!("{default_name}~{count}"))
                    .find(|name| !records.contains_key(name))
                    .unwrap_or(default_name);
                spec.name = again;
            }
            if let Some(active) = records
                .values()
                .find(|record| record.spec.workflow == spec.workflow && record.status.is_active())
            {
                return Err(RolloutError::Conflict {
                    name: spec.name.clone(),
                    reason: format!(
                        "rollout '{}' of '{}' is still {:?}; finish or roll it back first",
                        active.spec.name, spec.workflow, active.status
                    ),
                }
                .into());
            }
        }
        let now = self.now();
        let mut record = RolloutRecord {
            format: RECORD_FORMAT,
            spec,
            status: RolloutStatus::Running,
            stage: 0,
            stage_started_ms: now,
            paused_ms: 0,
            paused_at_ms: None,
            candidate_baseline: VersionCounters::default(),
            stable_baseline: VersionCounters::default(),
            history: Vec::new(),
        };
        self.start_stage(&mut record, now);
        let name = record.spec.name.clone();
        self.transition(record, Transition::Started, now, None).await?;
        Ok(name)
    }

    /// Refuses a gate on a measure the candidate does not declare, or (for a `max_increase`,
    /// which compares the two) the stable version does not, naming the measure and what each
    /// version declares.
    pub(crate) fn check_measure_gates(&self, spec: &RolloutSpec) -> Result<(), RolloutError> {
        for (index, (measure, compared)) in spec.gated_measures().enumerate() {
            let versions = [(&spec.candidate, "candidate", true), (&spec.stable, "stable", compared)];
            for (version, role, needed) in versions {
                if !needed {
                    continue;
                }
                let key = VersionKey::new(spec.workflow.clone(), version.clone());
                let declared: Vec<String> = self
                    .registry
                    .code(&key)
                    .map(|code| code.measures().iter().map(|measure| measure.name.clone()).collect())
                    .unwrap_or_default();
                if !declared.iter().any(|name| name == measure) {
                    let listed = if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    };
                    return Err(RolloutError::BadMeasureGate {
                        name: spec.name.clone(),
                        index,
                        measure: measure.to_string(),
                        field: "measure",
                        problem: format!(
                            "the {role} {version} declares no measure '{measure}' (it declares: {listed}); declare it with .measure(name, kind) or gate a declared one"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies an operator's transition to an active rollout.
    pub(crate) async fn operate_rollout(
        self: &Arc<Self>,
        name: &str,
        operation: RolloutOperation,
    ) -> Result<(), EngineError> {
        let _ordered = self.rollouts.transitions.lock().await;
        let record = self
            .rollouts
            .records
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| RolloutError::Unknown { name: name.to_string() })?;
        let label = match operation {
            RolloutOperation::Pause => "pause",
            RolloutOperation::Resume => "resume",
            RolloutOperation::RollBack => "rollback",
        };
        if !record.status.is_active() {
            return Err(RolloutError::Finished {
                name: name.to_string(),
                status: record.status,
                operation: label,
            }
            .into());
        }
        let now = self.now();
        let transition = match operation {
            RolloutOperation::Pause if record.status == RolloutStatus::Paused => return Ok(()),
            RolloutOperation::Resume if record.status == RolloutStatus::Running => return Ok(()),
            RolloutOperation::Pause => Transition::Paused,
            RolloutOperation::Resume => Transition::Resumed,
            RolloutOperation::RollBack => {
                let figures = self.stage_figures(&record, now);
                let rolled_back = Transition::RolledBack {
                    gate: None,
                    reason: "rolled back by an operator".into(),
                    candidate: Box::new(figures.candidate.clone()),
                    stable: Box::new(figures.stable.clone()),
                };
                return self.transition(record, rolled_back, now, Some(figures)).await;
            }
        };
        self.transition(record, transition, now, None).await
    }

    /// Every rollout, oldest start first.
    pub(crate) fn rollouts(&self) -> Vec<RolloutRecord> {
        self.rollouts.all()
    }
}

/// What an operator can do to an active rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RolloutOperation {
    /// Hold it where it is.
    Pause,
    /// Let it go on.
    Resume,
    /// Roll it back now.
    RollBack,
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::rollout::Stage;
    use strata_core::routing::WorkflowRouting;

    fn version(text: &str) -> semver::Version {
        semver::Version::parse(text).unwrap()
    }

    /// A rollout of `order` from 1.0.0 to `candidate`, at stage 0 (10 %), started at `started_ms`,
    /// in `status`, with `transitions` transitions behind it.
    fn rollout(
        name: &str,
        candidate: &str,
        started_ms: u64,
        status: RolloutStatus,
        transitions: usize,
    ) -> RolloutRecord {
        let spec = RolloutSpec::new("order", version(candidate), version("1.0.0"))
            .named(name)
            .stage(Stage::new(10.0, Duration::from_secs(60), 0))
            .stage(Stage::new(50.0, Duration::from_secs(60), 0));
        RolloutRecord {
            format: RECORD_FORMAT,
            spec,
            status,
            stage: 0,
            stage_started_ms: started_ms,
            paused_ms: 0,
            paused_at_ms: None,
            candidate_baseline: VersionCounters::default(),
            stable_baseline: VersionCounters::default(),
            history: (0..transitions)
                .map(|index| TransitionRecord {
                    at_ms: started_ms + index as u64,
                    stage: 0,
                    transition: Transition::Started,
                    figures: None,
                })
                .collect(),
        }
    }

    fn exact(text: &str) -> Option<VersionReq> {
        Some(VersionReq::parse(text).unwrap())
    }

    #[test]
    fn a_running_rollout_routes_its_stage_share_first_and_keeps_the_stable_version_as_default() {
        let rollouts = Rollouts::default();
        rollouts.load(vec![rollout("canary", "2.0.0", 100, RolloutStatus::Running, 1)]);
        let mut spec = RoutingSpec::default();
        spec.workflows.insert(
            "order".to_string(),
            WorkflowRouting {
                default: exact("=1.5.0"),
                rollouts: vec![RolloutRule {
                    candidate: version("2.0.0"),
                    basis_points: 9_000,
                    flag: None,
                    segments: Vec::new(),
                }],
            },
        );
        let routed = rollouts.overlay(&spec);
        let order = &routed.workflows["order"];
        assert_eq!(order.default, exact("=1.0.0"));
        assert_eq!(order.rollouts.len(), 1, "the file's rule for the candidate gives way");
        assert_eq!(
            (order.rollouts[0].candidate.clone(), order.rollouts[0].basis_points),
            (version("2.0.0"), 1_000)
        );
    }

    #[test]
    fn a_promoted_rollout_makes_its_candidate_the_default_and_a_rolled_back_one_the_stable() {
        let rollouts = Rollouts::default();
        rollouts.load(vec![rollout("done", "2.0.0", 100, RolloutStatus::Promoted, 3)]);
        let routed = rollouts.overlay(&RoutingSpec::default());
        assert_eq!(routed.workflows["order"].default, exact("=2.0.0"));
        assert!(routed.workflows["order"].rollouts.is_empty());

        // A later rollout that was rolled back wins over the older promotion.
        rollouts.load(vec![rollout("later", "3.0.0", 200, RolloutStatus::RolledBack, 2)]);
        let routed = rollouts.overlay(&RoutingSpec::default());
        assert_eq!(routed.workflows["order"].default, exact("=1.0.0"));
        assert!(routed.workflows["order"].rollouts.is_empty());
    }

    #[test]
    fn an_active_rollout_wins_over_a_later_finished_one() {
        let rollouts = Rollouts::default();
        rollouts.load(vec![
            rollout("running", "2.0.0", 100, RolloutStatus::Paused, 2),
            rollout("later", "3.0.0", 200, RolloutStatus::Promoted, 3),
        ]);
        let routed = rollouts.overlay(&RoutingSpec::default());
        assert_eq!(routed.workflows["order"].default, exact("=1.0.0"));
        assert_eq!(routed.workflows["order"].rollouts[0].candidate, version("2.0.0"));
    }

    /// Takes `records` in as a refresh from the store does, routing nowhere.
    fn adopt(rollouts: &Rollouts, records: Vec<RolloutRecord>) -> bool {
        rollouts.change(|known| adopt_newer(known, records), |_| {})
    }

    #[test]
    fn a_changed_rollout_is_routed_before_anyone_can_read_it() {
        let rollouts = Rollouts::default();
        rollouts.load(vec![rollout("canary", "2.0.0", 100, RolloutStatus::Running, 2)]);
        let rolled_back = || vec![rollout("canary", "2.0.0", 100, RolloutStatus::RolledBack, 3)];
        let mut routed_with = None;
        let changed = rollouts.change(
            |known| adopt_newer(known, rolled_back()),
            |records| {
                assert!(
                    rollouts.records.try_lock().is_none(),
                    "the change must not be readable before the routing made from it is in place"
                );
                routed_with = Some(records["canary"].status);
            },
        );
        assert!(changed);
        assert_eq!(
            routed_with,
            Some(RolloutStatus::RolledBack),
            "routing is made from the change"
        );
        let mut routed_again = false;
        let unchanged = rollouts.change(|known| adopt_newer(known, rolled_back()), |_| routed_again = true);
        assert!(!unchanged && !routed_again, "nothing changed, nothing to route");
    }

    #[test]
    fn only_a_record_with_more_transitions_replaces_the_one_held() {
        let rollouts = Rollouts::default();
        rollouts.load(vec![rollout("canary", "2.0.0", 100, RolloutStatus::Running, 2)]);
        assert!(!adopt(
            &rollouts,
            vec![rollout("canary", "2.0.0", 100, RolloutStatus::RolledBack, 2)]
        ));
        assert_eq!(rollouts.all()[0].status, RolloutStatus::Running);
        assert!(adopt(
            &rollouts,
            vec![rollout("canary", "2.0.0", 100, RolloutStatus::RolledBack, 3)]
        ));
        assert_eq!(rollouts.all()[0].status, RolloutStatus::RolledBack);
        assert!(
            !rollouts.watched.load().contains("order"),
            "a rolled-back rollout is no longer watched"
        );
    }

    #[test]
    fn neither_version_of_an_active_rollout_may_be_drained() {
        let rollouts = Rollouts::default();
        rollouts.load(vec![rollout("canary", "2.0.0", 100, RolloutStatus::Running, 1)]);
        let role = |text: &str| match rollouts.refusal_to_drain(&VersionKey::new("order", version(text))) {
            Some(RolloutError::VersionInRollout { role, .. }) => Some(role),
            Some(other) => panic!("unexpected refusal {other:?}"),
            None => None,
        };
        assert_eq!(role("2.0.0"), Some("candidate"));
        assert_eq!(role("1.0.0"), Some("stable"));
        assert_eq!(role("1.5.0"), None);
        adopt(
            &rollouts,
            vec![rollout("canary", "2.0.0", 100, RolloutStatus::RolledBack, 2)],
        );
        assert_eq!(role("2.0.0"), None, "a finished rollout holds nothing back");
    }
}
