//! The sled store's record format 1, frozen: the layouts and keys an engine built before format 2
//! wrote. The current build reads these records as they are (every field added since has a
//! default) and rewrites each in the current format at its next commit. This module only writes
//! format 1, so that tests can build a store exactly as an older Strata left it.

use serde::{Deserialize, Serialize};

use strata_core::instance::{InstanceId, Phase, ScheduledFire, StateEnvelope, VersionKey};
use strata_core::version::VersionStatus;

/// An instance record as format 1 wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecordV1 {
    /// Always 1.
    pub format: u32,
    /// The instance's id.
    pub id: InstanceId,
    /// Its workflow and pinned version.
    pub key: VersionKey,
    /// The cursor.
    pub step: String,
    /// The attempt number of the next run of `step`.
    pub attempt: u32,
    /// Committed step visits.
    pub visits: u64,
    /// Where the instance is between steps.
    pub phase: Phase,
    /// The state.
    pub state: StateEnvelope,
    /// The sticky routing key.
    pub routing_key: Option<String>,
    /// The schedule fire that started it.
    pub scheduled: Option<ScheduledFire>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// Start time (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Last commit time (ms since the Unix epoch).
    pub updated_at_ms: u64,
}

/// A pending signal as format 1 wrote it (no format field).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalRecordV1 {
    /// The instance it was sent to.
    pub instance: InstanceId,
    /// Its sequence number.
    pub seq: u64,
    /// Its name.
    pub name: String,
    /// Its payload.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Per-version counters as format 1 wrote them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CountersV1 {
    /// Live instances.
    pub live: u64,
    /// Started instances.
    pub started: u64,
    /// Completed instances.
    pub completed: u64,
    /// Failed instances.
    pub failed: u64,
    /// Cancelled instances.
    pub cancelled: u64,
    /// First start (ms).
    pub first_start_ms: Option<u64>,
    /// Last start (ms).
    pub last_start_ms: Option<u64>,
}

#[derive(Serialize)]
struct CounterEntryV1<'a> {
    key: &'a VersionKey,
    counters: &'a CountersV1,
}

#[derive(Serialize)]
struct StatusEntryV1<'a> {
    key: &'a VersionKey,
    status: &'a VersionStatus,
}

/// One raw key/value pair of the store.
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// What a format-1 store holds, to be written as raw key/value pairs.
#[derive(Debug, Clone, Default)]
pub struct Format1Contents {
    /// Live instance records.
    pub live: Vec<InstanceRecordV1>,
    /// Finished instance records.
    pub finished: Vec<InstanceRecordV1>,
    /// Pending signals.
    pub signals: Vec<SignalRecordV1>,
    /// Per-version counters.
    pub counters: Vec<(VersionKey, CountersV1)>,
    /// Per-version statuses.
    pub statuses: Vec<(VersionKey, VersionStatus)>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(value).map_err(|error| error.to_string())
}

fn id_key(prefix: &[u8], id: InstanceId) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

fn version_key(prefix: &[u8], key: &VersionKey) -> Vec<u8> {
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(key.workflow.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.version.to_string().as_bytes());
    bytes
}

impl Format1Contents {
    /// The key/value pairs a format-1 sled store holds for these contents, format marker included.
    pub fn entries(&self) -> Result<Vec<RawEntry>, String> {
        let mut entries = vec![(b"m/format".to_vec(), encode(&1u32)?)];
        for record in &self.live {
            entries.push((id_key(b"i/", record.id), encode(record)?));
        }
        for record in &self.finished {
            entries.push((id_key(b"d/", record.id), encode(record)?));
        }
        for signal in &self.signals {
            let mut key = id_key(b"s/", signal.instance);
            key.extend_from_slice(&signal.seq.to_be_bytes());
            entries.push((key, encode(signal)?));
        }
        for (key, counters) in &self.counters {
            entries.push((version_key(b"c/", key), encode(&CounterEntryV1 { key, counters })?));
        }
        for (key, status) in &self.statuses {
            entries.push((version_key(b"v/", key), encode(&StatusEntryV1 { key, status })?));
        }
        Ok(entries)
    }
}
