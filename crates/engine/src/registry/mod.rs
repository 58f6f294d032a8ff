//! Which versions are loaded, their lifecycle (`Active` → `Draining` → `Drained` → `Retired`) and
//! their live counts: residency. Owns the in-memory copy of the per-version counters, kept equal
//! to the stored ones by applying the same deltas after each commit. It never touches the store.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use semver::Version;

pub use strata_core::version::VersionStatus;

use crate::observe::VersionMetrics;
use crate::store::{StoredVersion, VersionCounters};
use strata_core::instance::{InstanceId, VersionKey};
use strata_core::routing::{self, VersionRequest};
use strata_core::workflow::VersionCode;

/// A registry failure, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The same version was registered twice.
    #[error("{key} is already registered; a version's code is immutable, register a new version instead")]
    AlreadyRegistered {
        /// The version.
        key: VersionKey,
    },
    /// No version of the workflow is known.
    #[error("unknown workflow '{workflow}'; register a version of it first")]
    UnknownWorkflow {
        /// The workflow.
        workflow: String,
    },
    /// The workflow is known but not that version.
    #[error("unknown version {key}; known versions: {known}")]
    UnknownVersion {
        /// The version asked for.
        key: VersionKey,
        /// The versions that are known, comma-separated.
        known: String,
    },
    /// No registered, active version matches the request.
    #[error("no version of '{workflow}' can take new instances for request '{request}'; versions: {known}")]
    NoRoutableVersion {
        /// The workflow.
        workflow: String,
        /// The request, as text.
        request: String,
        /// The versions and their statuses.
        known: String,
    },
    /// The version is retired: it cannot be made active again.
    #[error("{key} is retired for good and cannot take new instances again; register a new version instead")]
    Retired {
        /// The version.
        key: VersionKey,
    },
    /// No live worker has the version's code, so it cannot be made active again.
    #[error("{key} cannot take new instances again: no live worker has its code registered; register its code (or start a worker that has it) first")]
    CodeNotRegistered {
        /// The version.
        key: VersionKey,
    },
    /// The version still has live instances.
    #[error("{key} still has {live} live instance(s); drain it and wait for them to finish (or cancel them) before retiring it")]
    LiveInstances {
        /// The version.
        key: VersionKey,
        /// How many are live.
        live: u64,
    },
}

/// What the registry knows about one version, as reported by `Engine::versions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version.
    pub key: VersionKey,
    /// Its lifecycle status.
    pub status: VersionStatus,
    /// Whether its code is registered in this process.
    pub registered: bool,
    /// Whether new instances may start on it now: it is `Active` and its code is registered
    /// here or, with a store many processes share, in some live worker.
    pub accepts_starts: bool,
    /// Its counts.
    pub counters: VersionCounters,
    /// Its oldest live instance and that instance's start time (ms since the Unix epoch), in the
    /// whole store (with a shared store, whichever worker holds it).
    pub oldest_live: Option<(InstanceId, u64)>,
    /// The live workers that have its code and so can run its instances: with a store many
    /// processes share, every worker whose lease is current; with one only this process opens,
    /// `local` if its code is registered. Live instances and no worker: they wait for one.
    pub workers: Vec<String>,
    /// The measures it declares, when its code is registered here.
    pub declared_measures: Vec<strata_core::measure::MeasureSpec>,
}

impl VersionInfo {
    /// Whether the version's code can be deleted: no live instance and no new one can arrive.
    pub fn safe_to_remove(&self) -> bool {
        matches!(self.status, VersionStatus::Drained | VersionStatus::Retired) && self.counters.live == 0
    }
}

struct VersionEntry {
    code: Option<Arc<dyn VersionCode>>,
    /// Whether some live worker sharing the store (this one included) has its code, so a start
    /// here can be accepted for that worker to run even without the code here.
    runs_in_cluster: bool,
    status: VersionStatus,
    /// How many times the store has written its status, as of `status`.
    status_changes: u64,
    counters: VersionCounters,
    /// Starts that picked this version and are not yet committed.
    starting: u64,
    /// Its metrics since open.
    metrics: Arc<VersionMetrics>,
}

impl VersionEntry {
    fn unloaded(status: VersionStatus, counters: VersionCounters) -> Self {
        VersionEntry {
            code: None,
            runs_in_cluster: false,
            status,
            status_changes: 0,
            counters,
            starting: 0,
            metrics: Arc::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.counters.live == 0 && self.starting == 0
    }

    /// Whether new instances may start on it: `Active`, and some live worker has its code.
    fn takes_starts(&self) -> bool {
        self.status == VersionStatus::Active && (self.code.is_some() || self.runs_in_cluster)
    }
}

/// The version a start picked, reserved until `Registry::end_start`.
pub(crate) struct ReservedStart {
    /// The version.
    pub key: VersionKey,
    /// Its code, when registered here; `None` when only another worker has it (the start is
    /// accepted for that worker to build and run).
    pub code: Option<Arc<dyn VersionCode>>,
}

/// How much has happened to a version's counters: every counter write raises it.
fn activity(counters: &VersionCounters) -> u64 {
    counters.started
        + counters.completed
        + counters.failed
        + counters.cancelled
        + counters.moved_in
        + counters.moved_out
        + counters.revived
        + counters.shadow.started
        + counters.shadow.finished()
}

/// The versions known to an engine: registered code, statuses and counters.
#[derive(Default)]
pub(crate) struct Registry {
    versions: RwLock<HashMap<VersionKey, VersionEntry>>,
}

fn describe(versions: &HashMap<VersionKey, VersionEntry>, workflow: &str) -> String {
    let mut known: Vec<_> = versions
        .iter()
        .filter(|(key, _)| key.workflow == workflow)
        .map(|(key, entry)| {
            let loaded = if entry.code.is_some() {
                ""
            } else {
                ", code not registered"
            };
            (
                key.version.clone(),
                format!("{} ({:?}{loaded})", key.version, entry.status),
            )
        })
        .collect();
    known.sort();
    if known.is_empty() {
        return "none".to_string();
    }
    known.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join(", ")
}

impl Registry {
    /// Loads persisted statuses and counters, before any code is registered.
    pub(crate) fn load(&self, stored: Vec<StoredVersion>) {
        let mut versions = self.versions.write();
        for version in stored {
            let status = version.status.unwrap_or(VersionStatus::Active);
            let entry = versions
                .entry(version.key)
                .or_insert_with(|| VersionEntry::unloaded(status, VersionCounters::default()));
            entry.counters = version.counters;
            entry.status = status;
            entry.status_changes = version.status_changes;
        }
    }

    /// Adds a version's code. A version unknown so far starts `Active`; a known one keeps its status.
    pub(crate) fn register(&self, code: Arc<dyn VersionCode>) -> Result<VersionKey, RegistryError> {
        let key = VersionKey::new(code.workflow().to_string(), (**code.version()).clone());
        let mut versions = self.versions.write();
        let entry = versions
            .entry(key.clone())
            .or_insert_with(|| VersionEntry::unloaded(VersionStatus::Active, VersionCounters::default()));
        if entry.code.is_some() {
            return Err(RegistryError::AlreadyRegistered { key });
        }
        entry.code = Some(code);
        Ok(key)
    }

    /// The code of a version, if registered.
    pub(crate) fn code(&self, key: &VersionKey) -> Option<Arc<dyn VersionCode>> {
        self.versions.read().get(key).and_then(|entry| entry.code.clone())
    }

    /// The code and status of a version, if its code is registered.
    pub(crate) fn code_and_status(&self, key: &VersionKey) -> Option<(Arc<dyn VersionCode>, VersionStatus)> {
        let versions = self.versions.read();
        let entry = versions.get(key)?;
        Some((entry.code.clone()?, entry.status))
    }

    /// The newest registered, active version of `workflow`: where an unrouted start goes.
    pub(crate) fn newest_active(&self, workflow: &str) -> Option<Version> {
        self.versions
            .read()
            .iter()
            .filter(|(key, entry)| {
                key.workflow == workflow && entry.code.is_some() && entry.status == VersionStatus::Active
            })
            .map(|(key, _)| key.version.clone())
            .max()
    }

    /// The code and the metrics of a version, in one lookup (the step path's).
    pub(crate) fn code_and_metrics(&self, key: &VersionKey) -> Option<(Arc<dyn VersionCode>, Arc<VersionMetrics>)> {
        let versions = self.versions.read();
        let entry = versions.get(key)?;
        Some((entry.code.clone()?, entry.metrics.clone()))
    }

    /// The status of a version (`Active` for an unknown one).
    pub(crate) fn status(&self, key: &VersionKey) -> VersionStatus {
        self.versions
            .read()
            .get(key)
            .map_or(VersionStatus::Active, |entry| entry.status)
    }

    /// The counters of a version (zero for an unknown one).
    pub(crate) fn counters(&self, key: &VersionKey) -> VersionCounters {
        self.versions
            .read()
            .get(key)
            .map(|entry| entry.counters.clone())
            .unwrap_or_default()
    }

    /// The metrics of a version known to the registry.
    pub(crate) fn metrics(&self, key: &VersionKey) -> Option<Arc<VersionMetrics>> {
        self.versions.read().get(key).map(|entry| entry.metrics.clone())
    }

    /// Whether a version's code is registered.
    pub(crate) fn is_registered(&self, key: &VersionKey) -> bool {
        self.versions.read().get(key).is_some_and(|entry| entry.code.is_some())
    }

    /// Picks the version a new instance of `workflow` starts on and reserves a start on it, so it
    /// cannot become `Drained` before the start commits. Call `end_start` afterwards. With a
    /// store many processes share, the versions only another live worker has code for count too.
    pub(crate) fn reserve_start(
        &self,
        workflow: &str,
        request: &VersionRequest,
    ) -> Result<ReservedStart, RegistryError> {
        let mut versions = self.versions.write();
        if !versions.keys().any(|key| key.workflow == workflow) {
            return Err(RegistryError::UnknownWorkflow {
                workflow: workflow.to_string(),
            });
        }
        let candidates = versions
            .iter()
            .filter(|(key, entry)| key.workflow == workflow && entry.takes_starts());
        let chosen = routing::pick(candidates.map(|(key, _)| &key.version), request).cloned();
        let Some(version) = chosen else {
            return Err(RegistryError::NoRoutableVersion {
                workflow: workflow.to_string(),
                request: request.to_string(),
                known: describe(&versions, workflow),
            });
        };
        let key = VersionKey::new(workflow, version);
        let entry = versions.get_mut(&key).ok_or_else(|| RegistryError::UnknownVersion {
            key: key.clone(),
            known: String::new(),
        })?;
        entry.starting += 1;
        let code = entry.code.clone();
        Ok(ReservedStart { key, code })
    }

    /// Ends a reservation made by `reserve_start` (the start committed or failed).
    pub(crate) fn end_start(&self, key: &VersionKey) {
        if let Some(entry) = self.versions.write().get_mut(key) {
            entry.starting = entry.starting.saturating_sub(1);
        }
    }

    /// Takes a version's counters and status as the store holds them (after a write of this
    /// process, or read for the cluster's figures); returns whether the status changed. Figures
    /// older than the ones held are ignored: counter activity only grows and every status write
    /// raises `status_changes` (with equal changes, as in records older than the count, a status
    /// only moves on: `Active` → `Draining` → `Drained` → `Retired`), so reports that arrive out
    /// of order, or a read that a later write overtook, never undo a newer figure.
    pub(crate) fn adopt(&self, stored: &StoredVersion) -> bool {
        let mut versions = self.versions.write();
        let entry = versions
            .entry(stored.key.clone())
            .or_insert_with(|| VersionEntry::unloaded(VersionStatus::Active, VersionCounters::default()));
        if activity(&stored.counters) >= activity(&entry.counters) {
            entry.counters = stored.counters.clone();
        }
        let status = stored.status.unwrap_or(VersionStatus::Active);
        let newer = match stored.status_changes.cmp(&entry.status_changes) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => status.lifecycle_rank() > entry.status.lifecycle_rank(),
            std::cmp::Ordering::Less => false,
        };
        if !newer {
            return false;
        }
        let changed = entry.status != status;
        entry.status = status;
        entry.status_changes = stored.status_changes;
        changed
    }

    fn entry<'a>(
        versions: &'a HashMap<VersionKey, VersionEntry>,
        key: &VersionKey,
    ) -> Result<&'a VersionEntry, RegistryError> {
        versions.get(key).ok_or_else(|| RegistryError::UnknownVersion {
            key: key.clone(),
            known: describe(versions, &key.workflow),
        })
    }

    /// Whether draining `key` changes anything (it is `Active`); fails for an unknown version.
    pub(crate) fn can_drain(&self, key: &VersionKey) -> Result<bool, RegistryError> {
        let versions = self.versions.read();
        Ok(Self::entry(&versions, key)?.status == VersionStatus::Active)
    }

    /// Whether making `key` active again changes anything (it is `Draining` or `Drained`); fails
    /// for an unknown version, a retired one and one whose code no live worker has (its code may
    /// be gone: register it again first).
    pub(crate) fn can_activate(&self, key: &VersionKey) -> Result<bool, RegistryError> {
        let versions = self.versions.read();
        let entry = Self::entry(&versions, key)?;
        match entry.status {
            VersionStatus::Active => Ok(false),
            VersionStatus::Retired => Err(RegistryError::Retired { key: key.clone() }),
            VersionStatus::Draining | VersionStatus::Drained if entry.code.is_some() || entry.runs_in_cluster => {
                Ok(true)
            }
            VersionStatus::Draining | VersionStatus::Drained => {
                Err(RegistryError::CodeNotRegistered { key: key.clone() })
            }
        }
    }

    /// Whether retiring `key` changes anything (it is not `Retired` yet); fails for an unknown
    /// version and for one with live instances or starts in flight here (the store checks again).
    pub(crate) fn can_retire(&self, key: &VersionKey) -> Result<bool, RegistryError> {
        let versions = self.versions.read();
        let entry = Self::entry(&versions, key)?;
        if !entry.is_empty() {
            return Err(RegistryError::LiveInstances {
                key: key.clone(),
                live: entry.counters.live + entry.starting,
            });
        }
        Ok(entry.status != VersionStatus::Retired)
    }

    /// `Draining` versions with no live instance: left so by an older build that crashed between
    /// the last finish and the status commit; writing their status again lets the store drain them.
    pub(crate) fn draining_and_empty(&self) -> Vec<VersionKey> {
        self.versions
            .read()
            .iter()
            .filter(|(_, entry)| entry.status == VersionStatus::Draining && entry.counters.live == 0)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Every known version, sorted by workflow and version.
    pub(crate) fn snapshot(&self) -> Vec<VersionInfo> {
        let versions = self.versions.read();
        let mut infos: Vec<VersionInfo> = versions
            .iter()
            .map(|(key, entry)| VersionInfo {
                key: key.clone(),
                status: entry.status,
                registered: entry.code.is_some(),
                accepts_starts: entry.takes_starts(),
                counters: entry.counters.clone(),
                oldest_live: None,
                workers: Vec::new(),
                declared_measures: entry
                    .code
                    .as_ref()
                    .map(|code| code.measures().to_vec())
                    .unwrap_or_default(),
            })
            .collect();
        infos.sort_by(|left, right| left.key.cmp(&right.key));
        infos
    }

    /// What the routing table needs to know about every version.
    pub(crate) fn version_states(&self) -> Vec<strata_core::routing::VersionState> {
        self.versions
            .read()
            .iter()
            .map(|(key, entry)| strata_core::routing::VersionState {
                workflow: key.workflow.clone(),
                version: key.version.clone(),
                routable: entry.takes_starts(),
            })
            .collect()
    }

    /// Takes in which versions some live worker sharing the store has code for (`running`);
    /// returns whether that changed where starts may go.
    pub(crate) fn set_running_in_cluster(&self, running: &std::collections::HashSet<VersionKey>) -> bool {
        let mut changed = false;
        let mut versions = self.versions.write();
        for key in running {
            // A version another worker registered before any instance of it was stored.
            versions
                .entry(key.clone())
                .or_insert_with(|| VersionEntry::unloaded(VersionStatus::Active, VersionCounters::default()));
        }
        for (key, entry) in versions.iter_mut() {
            let elsewhere = running.contains(key);
            if entry.runs_in_cluster != elsewhere {
                let before = entry.takes_starts();
                entry.runs_in_cluster = elsewhere;
                changed |= before != entry.takes_starts();
            }
        }
        changed
    }

    /// The known versions of `workflow`, described for an error message.
    pub(crate) fn describe_workflow(&self, workflow: &str) -> String {
        describe(&self.versions.read(), workflow)
    }

    /// Refuses a workflow no version of which is known, and a version of it that is not known:
    /// a filter naming either can only be a mistake.
    pub(crate) fn check_known(&self, workflow: &str, version: Option<&Version>) -> Result<(), RegistryError> {
        let versions = self.versions.read();
        match version {
            Some(version) => Self::entry(&versions, &VersionKey::new(workflow, version.clone())).map(|_| ()),
            None if versions.keys().any(|key| key.workflow == workflow) => Ok(()),
            None => Err(RegistryError::UnknownWorkflow {
                workflow: workflow.to_string(),
            }),
        }
    }

    /// Whether any version of `workflow` is known.
    pub(crate) fn knows_workflow(&self, workflow: &str) -> bool {
        self.versions.read().keys().any(|key| key.workflow == workflow)
    }

    /// Whether this process has the code of some version of `workflow` (not only knows it from
    /// the store).
    pub(crate) fn has_code_for(&self, workflow: &str) -> bool {
        self.versions
            .read()
            .iter()
            .any(|(key, entry)| key.workflow == workflow && entry.code.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::workflow::{Next, StepCtx, StepResult, WorkflowVersion};

    async fn only(_ctx: StepCtx, _state: &mut u32) -> StepResult<u32> {
        Ok(Next::complete(0))
    }

    fn code(version: &str) -> Arc<dyn VersionCode> {
        WorkflowVersion::new("w", version)
            .init(|value: u32| value)
            .step("only", only)
            .into_code()
            .unwrap()
    }

    fn key(version: &str) -> VersionKey {
        VersionKey::new("w", Version::parse(version).unwrap())
    }

    /// `version` with `started` instances of which `live` still live, its status reached by
    /// moving forward only (one change per step from `Active`).
    fn stored(version: &str, started: u64, live: u64, status: Option<VersionStatus>) -> StoredVersion {
        let changes = status.map_or(0, |status| u64::from(status.lifecycle_rank()));
        stamped(version, started, live, status, changes)
    }

    /// Like `stored`, with the status written `status_changes` times.
    fn stamped(
        version: &str,
        started: u64,
        live: u64,
        status: Option<VersionStatus>,
        status_changes: u64,
    ) -> StoredVersion {
        StoredVersion {
            key: key(version),
            counters: VersionCounters {
                live,
                started,
                completed: started - live,
                ..VersionCounters::default()
            },
            status,
            status_changes,
        }
    }

    #[test]
    fn the_store_figures_replace_the_registry_s_and_say_when_the_status_changed() {
        let registry = Registry::default();
        registry.register(code("1.0.0")).unwrap();
        assert!(!registry.adopt(&stored("1.0.0", 3, 3, None)), "no status is Active");
        assert_eq!(registry.counters(&key("1.0.0")).live, 3);
        assert!(registry.adopt(&stored("1.0.0", 3, 0, Some(VersionStatus::Drained))));
        assert_eq!(registry.snapshot()[0].status, VersionStatus::Drained);
        assert_eq!(registry.counters(&key("1.0.0")).completed, 3);
        assert!(
            !registry.can_drain(&key("1.0.0")).unwrap(),
            "only an Active version drains"
        );
    }

    #[test]
    fn only_known_workflows_and_versions_pass_the_check() {
        let registry = Registry::default();
        registry.adopt(&stored("1.0.0", 1, 0, None));
        let workflow = key("1.0.0").workflow;
        assert!(registry.check_known(&workflow, None).is_ok());
        assert!(registry.check_known(&workflow, Some(&key("1.0.0").version)).is_ok());
        assert!(matches!(
            registry.check_known(&workflow, Some(&semver::Version::new(9, 0, 0))),
            Err(RegistryError::UnknownVersion { .. })
        ));
        assert!(matches!(
            registry.check_known("nope", None),
            Err(RegistryError::UnknownWorkflow { .. })
        ));
    }

    #[test]
    fn older_figures_arriving_late_never_undo_newer_ones() {
        let registry = Registry::default();
        registry.register(code("1.0.0")).unwrap();
        registry.adopt(&stored("1.0.0", 5, 1, Some(VersionStatus::Draining)));
        assert!(!registry.adopt(&stored("1.0.0", 4, 2, Some(VersionStatus::Active))));
        assert_eq!(registry.counters(&key("1.0.0")).live, 1, "the older count is ignored");
        assert_eq!(
            registry.status(&key("1.0.0")),
            VersionStatus::Draining,
            "a status never goes back"
        );
    }

    #[test]
    fn a_drain_undone_is_taken_in_and_a_late_read_of_the_drain_does_not_bring_it_back() {
        let registry = Registry::default();
        registry.register(code("1.0.0")).unwrap();
        assert!(registry.adopt(&stamped("1.0.0", 2, 1, Some(VersionStatus::Draining), 1)));
        assert!(registry.can_activate(&key("1.0.0")).unwrap());
        assert!(
            registry.adopt(&stamped("1.0.0", 2, 1, Some(VersionStatus::Active), 2)),
            "the status written later is taken, although it goes back"
        );
        assert_eq!(registry.status(&key("1.0.0")), VersionStatus::Active);
        assert!(!registry.adopt(&stamped("1.0.0", 2, 1, Some(VersionStatus::Draining), 1)));
        assert_eq!(registry.status(&key("1.0.0")), VersionStatus::Active);
        assert!(!registry.can_activate(&key("1.0.0")).unwrap(), "already active");
        assert_eq!(registry.newest_active("w"), Some(Version::new(1, 0, 0)));
    }

    #[test]
    fn only_a_draining_or_drained_version_whose_code_some_worker_has_can_be_made_active_again() {
        let registry = Registry::default();
        registry.adopt(&stored("1.0.0", 1, 0, Some(VersionStatus::Drained)));
        assert!(matches!(
            registry.can_activate(&key("1.0.0")),
            Err(RegistryError::CodeNotRegistered { .. })
        ));
        registry.set_running_in_cluster(&[key("1.0.0")].into_iter().collect());
        assert!(
            registry.can_activate(&key("1.0.0")).unwrap(),
            "another worker has its code"
        );
        registry.adopt(&stored("2.0.0", 1, 0, Some(VersionStatus::Retired)));
        registry.register(code("2.0.0")).unwrap();
        assert!(matches!(
            registry.can_activate(&key("2.0.0")),
            Err(RegistryError::Retired { .. })
        ));
        assert!(matches!(
            registry.can_activate(&key("3.0.0")),
            Err(RegistryError::UnknownVersion { .. })
        ));
    }

    #[test]
    fn a_version_with_live_instances_or_a_start_in_flight_cannot_be_retired() {
        let registry = Registry::default();
        registry.register(code("1.0.0")).unwrap();
        registry.reserve_start("w", &VersionRequest::Newest).unwrap();
        assert!(matches!(
            registry.can_retire(&key("1.0.0")),
            Err(RegistryError::LiveInstances { live: 1, .. })
        ));
        registry.end_start(&key("1.0.0"));
        registry.adopt(&stored("1.0.0", 2, 2, Some(VersionStatus::Draining)));
        assert!(matches!(
            registry.can_retire(&key("1.0.0")),
            Err(RegistryError::LiveInstances { live: 2, .. })
        ));
        registry.adopt(&stored("1.0.0", 2, 0, Some(VersionStatus::Drained)));
        assert!(registry.can_retire(&key("1.0.0")).unwrap());
        registry.can_retire(&key("9.0.0")).unwrap_err();
    }

    #[test]
    fn only_active_registered_versions_are_routed_to() {
        let registry = Registry::default();
        registry.load(vec![stored("3.0.0", 0, 0, Some(VersionStatus::Active))]);
        registry.register(code("1.0.0")).unwrap();
        registry.register(code("2.0.0")).unwrap();
        registry.adopt(&stored("2.0.0", 0, 0, Some(VersionStatus::Drained)));
        // 3.0.0 is known from the store but its code is not registered; 2.0.0 is drained.
        let chosen = registry.reserve_start("w", &VersionRequest::Newest).unwrap();
        assert_eq!(chosen.key.version.to_string(), "1.0.0");
        assert!(chosen.code.is_some());
    }

    #[test]
    fn a_version_only_another_live_worker_runs_takes_starts_without_code_here() {
        let registry = Registry::default();
        registry.load(vec![stored("2.0.0", 0, 0, Some(VersionStatus::Active))]);
        registry.register(code("1.0.0")).unwrap();
        // 3.0.0 is known only from the worker that registered it.
        let running: std::collections::HashSet<VersionKey> = [key("1.0.0"), key("2.0.0"), key("3.0.0")].into();
        assert!(
            registry.set_running_in_cluster(&running),
            "2.0.0 and 3.0.0 became routable"
        );
        assert!(
            !registry.set_running_in_cluster(&running),
            "nothing changed the second time"
        );
        let chosen = registry.reserve_start("w", &VersionRequest::Newest).unwrap();
        assert_eq!(chosen.key, key("3.0.0"));
        assert!(
            chosen.code.is_none(),
            "the start is accepted for the worker with the code"
        );
        registry.end_start(&key("3.0.0"));
        let preferred = VersionRequest::Preferred(Version::new(2, 0, 0));
        assert_eq!(registry.reserve_start("w", &preferred).unwrap().key, key("2.0.0"));
        registry.end_start(&key("2.0.0"));
        // Its worker left: starts go back to the version this process runs.
        assert!(registry.set_running_in_cluster(&[key("1.0.0")].into()));
        let chosen = registry.reserve_start("w", &VersionRequest::Newest).unwrap();
        assert_eq!(chosen.key, key("1.0.0"));
    }

    #[test]
    fn draining_versions_left_empty_are_found_for_the_store_to_drain() {
        let registry = Registry::default();
        registry.load(vec![
            stored("1.0.0", 4, 0, Some(VersionStatus::Draining)),
            stored("2.0.0", 4, 1, Some(VersionStatus::Draining)),
        ]);
        assert_eq!(registry.draining_and_empty(), vec![key("1.0.0")]);
    }
}
