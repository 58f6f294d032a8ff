//! The in-memory table of the resident live instances: their last committed record, their signal
//! inbox and the flags that serialise their steps. Sharded so that instances on different shards
//! never contend. An idle instance is evicted (its record stays in the store) and loaded again
//! when it comes due or is asked for: each shard counts its evictions, so that a record read from
//! the store before an eviction is never put in after it (it could be older than the store's).

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::instance::Outcome;
use crate::store::SignalRecord;
use strata_core::instance::{InstanceId, InstanceRecord};

const SHARDS: usize = 64;

/// The control signal that carries a cancel asked for through another process.
pub(crate) const CANCEL_SIGNAL: &str = "strata:cancel";

/// The control signal that carries a termination asked for through another process; its payload
/// is the reason, in UTF-8.
pub(crate) const TERMINATE_SIGNAL: &str = "strata:terminate";

/// Signal names starting with this are the engine's own.
pub(crate) const RESERVED_SIGNAL_PREFIX: &str = "strata:";

/// How an operator asked to end an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndRequest {
    /// Cancel it at its next step boundary: a running step finishes and its result commits first.
    Cancel,
    /// End it now: a running step is abandoned and nothing of it commits.
    Terminate {
        /// Why, as the operator said.
        reason: Box<str>,
    },
}

impl EndRequest {
    /// The control signal that carries this request to the process that holds the instance: its
    /// name and payload, which [`EndRequest::carried_by`] reads back there.
    pub(crate) fn control_signal(&self) -> (&'static str, Vec<u8>) {
        match self {
            EndRequest::Cancel => (CANCEL_SIGNAL, Vec::new()),
            EndRequest::Terminate { reason } => (TERMINATE_SIGNAL, reason.as_bytes().to_vec()),
        }
    }

    /// The end an operator asked for through another process, if `signal` carries one.
    pub(crate) fn carried_by(signal: &SignalRecord) -> Option<EndRequest> {
        match signal.name.as_str() {
            CANCEL_SIGNAL => Some(EndRequest::Cancel),
            TERMINATE_SIGNAL => Some(EndRequest::Terminate {
                reason: String::from_utf8_lossy(&signal.payload).into(),
            }),
            _ => None,
        }
    }

    /// The request that stands when `other` comes after `self`: a termination outranks a
    /// cancellation, and the first termination's reason is kept.
    pub(crate) fn then(self, other: EndRequest) -> EndRequest {
        match (self, other) {
            (EndRequest::Cancel, other) => other,
            (terminate, _) => terminate,
        }
    }
}

/// One live instance in memory.
pub(crate) struct Slot {
    /// The last committed record.
    pub record: InstanceRecord,
    /// Delivered signals not yet consumed, in sequence order.
    pub inbox: Vec<SignalRecord>,
    /// Sequence numbers of signals a step here consumed: a signal read back from a shared store
    /// while its deletion was committing is not taken in twice.
    pub consumed: Vec<u64>,
    /// A driver owns the instance; no other may run a step of it.
    pub running: bool,
    /// Something happened while a driver owned it; the driver must look again before leaving.
    pub rerun: bool,
    /// An operator asked to end it (cancel or terminate).
    pub end_requested: Option<EndRequest>,
    /// Its version's code is not registered.
    pub parked: bool,
    /// Commits of its steps that failed in a row: what the wait before the next attempt grows
    /// with while the store is unavailable.
    pub commit_failures: u32,
    /// Callers awaiting its outcome.
    pub waiters: Vec<oneshot::Sender<Outcome>>,
}

impl Slot {
    /// Records an operator's request to end the instance, with any made before it.
    pub(super) fn request_end(&mut self, request: EndRequest) {
        self.end_requested = Some(match self.end_requested.take() {
            Some(earlier) => earlier.then(request),
            None => request,
        });
    }

    /// Takes `signal` into the inbox in sequence order, unless it is there already or was
    /// consumed here; a control signal also asks for the end it carries. Returns `None` for a
    /// signal already known, else whether it asks to terminate.
    pub(crate) fn take_in(&mut self, signal: SignalRecord) -> Option<bool> {
        let known = self.inbox.iter().any(|held| held.seq == signal.seq) || self.consumed.contains(&signal.seq);
        if known {
            return None;
        }
        let request = EndRequest::carried_by(&signal);
        let terminates = matches!(request, Some(EndRequest::Terminate { .. }));
        if let Some(request) = request {
            self.request_end(request);
        }
        let at = self.inbox.partition_point(|held| held.seq < signal.seq);
        self.inbox.insert(at, signal);
        Some(terminates)
    }

    /// A slot for a record.
    pub(super) fn new(record: InstanceRecord, parked: bool) -> Self {
        Slot {
            record,
            inbox: Vec::new(),
            consumed: Vec::new(),
            running: false,
            rerun: false,
            end_requested: None,
            parked,
            commit_failures: 0,
            waiters: Vec::new(),
        }
    }
}

/// One shard: its slots and how many it evicted.
#[derive(Default)]
struct Shard {
    slots: HashMap<InstanceId, Slot>,
    evictions: u64,
}

/// Whether an instance is resident, or the shard's eviction count to load it against.
pub(crate) enum Presence {
    /// It is in the table.
    Resident,
    /// It is not: a record read from the store from now on may be put in with
    /// [`InstanceTable::insert_loaded`] if nothing of its shard is evicted meanwhile.
    Absent(u64),
}

/// The resident live instances, sharded by id.
pub(crate) struct InstanceTable {
    shards: Box<[Mutex<Shard>]>,
}

impl InstanceTable {
    /// An empty table.
    pub(super) fn new() -> Self {
        InstanceTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, id: InstanceId) -> &Mutex<Shard> {
        &self.shards[(id.0 % SHARDS as u64) as usize]
    }

    /// Inserts a slot (a new instance's, or one this worker just claimed).
    pub(super) fn insert(&self, slot: Slot) {
        self.shard(slot.record.id).lock().slots.insert(slot.record.id, slot);
    }

    /// Whether `id` is resident (see [`Presence`]).
    pub(super) fn presence(&self, id: InstanceId) -> Presence {
        let shard = self.shard(id).lock();
        if shard.slots.contains_key(&id) {
            Presence::Resident
        } else {
            Presence::Absent(shard.evictions)
        }
    }

    /// Puts in a slot loaded from the store after [`Presence::Absent`] gave `evictions`: not if
    /// the instance is resident (the table's record is never older than the store's), and not
    /// if its shard evicted anything since (the record read may be older than the store's now).
    /// `true` if the instance is resident now.
    pub(super) fn insert_loaded(&self, slot: Slot, evictions: u64) -> bool {
        let mut shard = self.shard(slot.record.id).lock();
        if shard.slots.contains_key(&slot.record.id) {
            return true;
        }
        if shard.evictions != evictions {
            return false;
        }
        shard.slots.insert(slot.record.id, slot);
        true
    }

    /// Whether `id` is resident.
    pub(super) fn contains(&self, id: InstanceId) -> bool {
        self.shard(id).lock().slots.contains_key(&id)
    }

    /// Runs `action` on a slot under its shard's lock; `None` if the instance is not resident.
    pub(super) fn with<R>(&self, id: InstanceId, action: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        self.shard(id).lock().slots.get_mut(&id).map(action)
    }

    /// Removes a slot (the instance finished, or another worker claimed it).
    pub(super) fn remove(&self, id: InstanceId) -> Option<Slot> {
        self.shard(id).lock().slots.remove(&id)
    }

    /// Evicts every slot `idle` accepts; returns how many.
    pub(super) fn evict(&self, mut idle: impl FnMut(&mut Slot) -> bool) -> usize {
        let mut evicted = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let before = shard.slots.len();
            shard.slots.retain(|_, slot| !idle(slot));
            let gone = before - shard.slots.len();
            if gone > 0 {
                shard.evictions += 1;
                evicted += gone;
            }
        }
        evicted
    }

    /// Visits every slot, shard by shard.
    pub(super) fn for_each(&self, mut visit: impl FnMut(&mut Slot)) {
        for shard in self.shards.iter() {
            for slot in shard.lock().slots.values_mut() {
                visit(slot);
            }
        }
    }

    /// How many instances are resident.
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().slots.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u64) -> Slot {
        let record = InstanceRecord::new(
            InstanceId(id),
            strata_core::instance::VersionKey::new("w", semver::Version::new(1, 0, 0)),
            strata_core::instance::Phase::Sleeping { until_ms: 5 },
            0,
        );
        Slot::new(record, false)
    }

    #[test]
    fn a_record_read_before_its_shard_evicted_anything_is_not_put_in_after() {
        let table = InstanceTable::new();
        let Presence::Absent(seen) = table.presence(InstanceId(1)) else {
            panic!("nothing is resident yet");
        };
        // Another instance of the same shard is evicted between the read and the insert.
        table.insert(slot(1 + SHARDS as u64));
        assert_eq!(table.evict(|_| true), 1);
        assert!(!table.insert_loaded(slot(1), seen), "read before the eviction");
        let Presence::Absent(now) = table.presence(InstanceId(1)) else {
            panic!("still not resident");
        };
        assert!(table.insert_loaded(slot(1), now));
        assert!(matches!(table.presence(InstanceId(1)), Presence::Resident));
        assert!(
            table.insert_loaded(slot(1), 0),
            "resident already: the table's record stays"
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn an_end_request_reads_back_from_its_control_signal_and_a_user_signal_is_none() {
        let carried = |name: &str, payload: Vec<u8>| SignalRecord {
            format: 2,
            instance: InstanceId(1),
            seq: 1,
            name: name.to_string(),
            payload,
        };
        for request in [
            EndRequest::Cancel,
            EndRequest::Terminate {
                reason: "stuck upstream".into(),
            },
        ] {
            let (name, payload) = request.control_signal();
            assert_eq!(EndRequest::carried_by(&carried(name, payload)), Some(request));
        }
        assert_eq!(EndRequest::carried_by(&carried("approve", Vec::new())), None);
    }

    #[test]
    fn a_termination_outranks_a_cancellation_and_keeps_its_first_reason() {
        let terminate = |reason: &str| EndRequest::Terminate { reason: reason.into() };
        assert_eq!(EndRequest::Cancel.then(terminate("a")), terminate("a"));
        assert_eq!(terminate("a").then(EndRequest::Cancel), terminate("a"));
        assert_eq!(terminate("a").then(terminate("b")), terminate("a"));
        assert_eq!(EndRequest::Cancel.then(EndRequest::Cancel), EndRequest::Cancel);
    }
}
