//! The cluster of a store that one process opens (the embedded store): a cluster of one worker.
//! Its heartbeat only notes the versions the worker has code for, a claim finds nothing (the
//! worker holds every live instance from the start), the worker always leads every role, and no
//! other worker holds, publishes or announces anything. With it the engine runs one mechanism for
//! one process and for many: the runtime never asks whether its store is shared.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_core::instance::{InstanceId, InstanceRecord, VersionKey};
use strata_core::time::millis_saturating;

use crate::{Claimed, Cluster, SignalRecord, StoreError, Wakeup, WorkerInfo};

/// The id of the one worker of a store one process opens.
pub const SOLO_WORKER_ID: &str = "local";

/// A cluster of one: the worker of the one process that opens the store.
#[derive(Debug)]
pub struct SoloCluster {
    started_at_ms: u64,
    heartbeat_ms: AtomicU64,
    versions: Mutex<Vec<VersionKey>>,
}

impl Default for SoloCluster {
    fn default() -> Self {
        SoloCluster::new()
    }
}

impl SoloCluster {
    /// The cluster of a store opened now.
    pub fn new() -> SoloCluster {
        let now = system_now_ms();
        SoloCluster {
            started_at_ms: now,
            heartbeat_ms: AtomicU64::new(now),
            versions: Mutex::new(Vec::new()),
        }
    }
}

fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis_saturating)
}

impl Cluster for SoloCluster {
    fn worker_id(&self) -> &str {
        SOLO_WORKER_ID
    }

    fn heartbeat(&self, versions: &[VersionKey], _lease: Duration) -> Result<(), StoreError> {
        self.heartbeat_ms.store(system_now_ms(), Ordering::Relaxed);
        let mut known = self.versions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        versions.clone_into(&mut known);
        Ok(())
    }

    fn claim(
        &self,
        _versions: &[VersionKey],
        _lease: Duration,
        _limit: usize,
        _load_through_ms: u64,
    ) -> Result<Claimed, StoreError> {
        Ok(Claimed::default())
    }

    fn leave(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn workers(&self, _lease: Duration) -> Result<Vec<WorkerInfo>, StoreError> {
        let versions = self
            .versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Ok(vec![WorkerInfo {
            id: SOLO_WORKER_ID.to_string(),
            host: String::new(),
            pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            heartbeat_ms: self.heartbeat_ms.load(Ordering::Relaxed),
            versions,
            alive: true,
        }])
    }

    fn lead(&self, _role: &str, _lease: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn oldest_live(&self) -> Result<Vec<(VersionKey, InstanceId, u64)>, StoreError> {
        Ok(Vec::new())
    }

    fn live_held_elsewhere(
        &self,
        _scope: &crate::ListScope,
        _keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        _limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        Ok(Vec::new())
    }

    fn publish_metrics(&self, _windows: &[(VersionKey, Vec<u8>)]) -> Result<(), StoreError> {
        Ok(())
    }

    fn metrics_of(&self, _key: &VersionKey, _lease: Duration) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(Vec::new())
    }

    fn uncovered_live(&self, _workflow: &str, _lease: Duration, _covered: &[(String, u64)]) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn drained_announced(&self, _keys: &[VersionKey]) -> Result<(), StoreError> {
        Ok(())
    }

    fn take_unannounced_drained(&self, _lease: Duration) -> Result<Vec<VersionKey>, StoreError> {
        Ok(Vec::new())
    }

    fn deliver_signal(&self, _signal: &SignalRecord) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn held_signals(&self) -> Result<Vec<SignalRecord>, StoreError> {
        Ok(Vec::new())
    }

    fn signals_of(&self, _instance: InstanceId) -> Result<Vec<SignalRecord>, StoreError> {
        Ok(Vec::new())
    }

    fn wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Wakeup>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_worker_leads_claims_nothing_and_lists_itself_with_the_versions_of_its_last_heartbeat() {
        let cluster = SoloCluster::new();
        let lease = Duration::from_secs(30);
        let key = VersionKey::new("order", semver::Version::new(1, 0, 0));
        cluster.heartbeat(std::slice::from_ref(&key), lease).unwrap();
        assert!(cluster.lead("rollouts", lease).unwrap());
        assert!(cluster
            .claim(std::slice::from_ref(&key), lease, 10, u64::MAX)
            .unwrap()
            .live
            .is_empty());
        let workers = cluster.workers(lease).unwrap();
        assert_eq!(workers.len(), 1);
        assert_eq!(
            (workers[0].id.as_str(), workers[0].versions.clone(), workers[0].alive),
            ("local", vec![key], true)
        );
        assert_eq!(cluster.uncovered_live("order", lease, &[]).unwrap(), 0);
    }
}
