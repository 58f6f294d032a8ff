//! An instance's history: what happened to it, entry by entry, each written in the commit of the
//! change it records, so that history and state never disagree.
//!
//! Owns the stored form of an entry ([`HistoryEntry`]), what an entry says ([`HistoryEvent`],
//! [`StepEntry`], [`AttemptOutcome`], [`WokenBy`]) and where entries are kept ([`HistoryBook`]):
//! the newest ones in the instance's record itself, whose commit writes them at no extra cost,
//! and every [`HISTORY_CHUNK`] of them moved to the store as one chunk by the commit that fills
//! it. Beyond the bound the oldest chunks after the first (which holds the start) are dropped
//! and counted. The engine decides what to write; a store keeps chunks by instance and number.

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::codec::EncodeError;
pub use crate::instance::HistoryBook;
use crate::instance::{MoveStamp, MAX_STORED_DEPTH};

/// How many entries a chunk holds: the record keeps fewer than this, and the commit that adds
/// the last of a chunk moves the chunk to the store.
pub const HISTORY_CHUNK: u64 = 8;

/// How many entries an instance keeps unless the engine is told otherwise.
pub const DEFAULT_HISTORY_LIMIT: u32 = 1_000;

/// The fewest entries a bound may keep: the first chunk (with the start) and one more.
pub const MIN_HISTORY_LIMIT: u32 = 2 * HISTORY_CHUNK as u32;

/// What adding an entry asks of the commit that adds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// A chunk the entry filled, to store: its first entry's number and its entries.
    pub chunk: Option<(u64, Vec<u8>)>,
    /// The first entry number of a chunk the bound drops.
    pub drop: Option<u64>,
}

impl HistoryBook {
    /// Adds `entry`, keeping at most about `limit` entries (at least [`MIN_HISTORY_LIMIT`];
    /// whole chunks are dropped, so the history may hold up to a chunk more).
    pub fn append(&mut self, entry: &HistoryEntry, limit: u32) -> Result<Appended, EncodeError> {
        let before = self.tail.len();
        if let Err(error) = entry.encode_into(&mut self.tail) {
            // An entry that fails to encode leaves the tail as it was.
            self.tail.truncate(before);
            return Err(error);
        }
        self.next += 1;
        let mut appended = Appended::default();
        if self.next % HISTORY_CHUNK == 0 {
            appended.chunk = Some((self.next - HISTORY_CHUNK, std::mem::take(&mut self.tail)));
            let limit = u64::from(limit.max(MIN_HISTORY_LIMIT));
            if self.kept() > limit {
                appended.drop = Some(HISTORY_CHUNK + self.folded);
                self.folded += HISTORY_CHUNK;
            }
        }
        Ok(appended)
    }

    /// How many entries are kept.
    pub fn kept(&self) -> u64 {
        self.next.saturating_sub(self.folded)
    }

    /// The number of the first entry in `tail`.
    pub fn tail_first(&self) -> u64 {
        self.next - self.next % HISTORY_CHUNK
    }

    /// The entries in `tail`, with their numbers.
    pub fn tail_entries(&self) -> Result<Vec<(u64, HistoryEntry)>, String> {
        decode_entries(self.tail_first(), &self.tail)
    }
}

/// The entries of a chunk (or a tail) whose first entry is number `first`, with their numbers.
pub fn decode_entries(first: u64, bytes: &[u8]) -> Result<Vec<(u64, HistoryEntry)>, String> {
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut deserializer = rmp_serde::Deserializer::new(&mut rest);
        deserializer.set_max_depth(MAX_STORED_DEPTH);
        let entry = HistoryEntry::deserialize(&mut deserializer).map_err(|error| {
            format!(
                "history entry {} does not decode: {error}",
                first + entries.len() as u64
            )
        })?;
        entries.push((first + entries.len() as u64, entry));
    }
    Ok(entries)
}

/// Says of the first step an instance ran after each revival that the revival woke it
/// ([`WokenBy::Revival`]): its commit stored `Previous`. `entries` are in order, oldest first;
/// the step is the first `Step` entry after a `Revived` one.
pub fn mark_revived_steps<'a>(entries: impl IntoIterator<Item = &'a mut HistoryEntry>) {
    let mut after_revival = false;
    for entry in entries {
        match &mut entry.event {
            HistoryEvent::Revived(_) => after_revival = true,
            HistoryEvent::Step(step) => {
                if after_revival && step.woken_by == WokenBy::Previous {
                    step.woken_by = WokenBy::Revival;
                }
                after_revival = false;
            }
            _ => {}
        }
    }
}

/// One entry of an instance's history, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened (ms since the Unix epoch): for a step attempt, when the attempt ended.
    pub at_ms: u64,
    /// What happened.
    pub event: HistoryEvent,
}

impl HistoryEntry {
    /// Appends the entry to `bytes` in the stored format (compact MessagePack: entries are many
    /// and small, and each is read back by position).
    pub fn encode_into(&self, bytes: &mut Vec<u8>) -> Result<(), EncodeError> {
        rmp_serde::encode::write(bytes, self).map_err(|error| EncodeError {
            what: "history entry",
            message: error.to_string(),
        })
    }
}

/// What an entry records. Stored by short variant names: entries are many and small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HistoryEvent {
    /// The instance started.
    #[serde(rename = "start")]
    Started {
        /// The version it was pinned to.
        version: Version,
        /// Why routing chose that version.
        routed_by: crate::routing::RouteReason,
        /// The routing key the caller gave, if any.
        routing_key: Option<String>,
        /// The size of its encoded input.
        input_bytes: u64,
        /// The schedule that started it, if one did.
        schedule: Option<String>,
    },
    /// A step ran once.
    #[serde(rename = "s")]
    Step(StepEntry),
    /// A worker took the instance over (a store many processes share): the steps after ran
    /// there.
    #[serde(rename = "w")]
    Claimed {
        /// The worker.
        worker: String,
    },
    /// An operator cancelled it.
    #[serde(rename = "c")]
    Cancelled,
    /// Its state was migrated to another schema without running a step (a background migration);
    /// a step's own migration is in its [`StepEntry`].
    #[serde(rename = "m")]
    Migrated {
        /// The schema before.
        from_schema: u32,
        /// The schema after.
        to_schema: u32,
    },
    /// It moved to another version at a step boundary.
    #[serde(rename = "mv")]
    Moved(MoveStamp),
    /// It was quarantined: it cannot run until repaired.
    #[serde(rename = "q")]
    Quarantined {
        /// Why.
        reason: String,
    },
    /// An operator revived it after it had failed or been cancelled: it is live again.
    #[serde(rename = "rv")]
    Revived(ReviveStamp),
    /// It was accepted through a process without its version's code, and its input built no
    /// state on the worker with the code: it failed before its first step.
    #[serde(rename = "nb")]
    BeginFailed {
        /// Why.
        reason: String,
    },
    /// It ended with signals it had not consumed: they were deleted in the commit that ended it.
    #[serde(rename = "sd")]
    SignalsDropped {
        /// Each of them, in sequence order.
        signals: Vec<SignalNote>,
    },
    /// An operator terminated it: it ended at once, cancelled, without running another step.
    #[serde(rename = "t")]
    Terminated {
        /// Why, as the operator said.
        reason: String,
        /// The step whose running attempt was abandoned (its result, if it had one, never
        /// committed); `None`: no step was running.
        abandoned_step: Option<String>,
    },
}

/// A signal as the history names it: its name, sequence number and payload size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalNote {
    /// Its name.
    pub name: String,
    /// Its sequence number.
    pub seq: u64,
    /// The size of its encoded payload.
    pub bytes: u64,
}

/// A revival: how the instance had ended, and where it was taken up again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviveStamp {
    /// The version it had ended on.
    pub from: Version,
    /// The version it is live on again (the same one, or a fix).
    pub to: Version,
    /// Its cursor when it ended (the step that failed, or the one it was cancelled before).
    pub from_step: String,
    /// The step it runs next.
    pub to_step: String,
    /// Its state's schema when it ended.
    pub from_schema: u32,
    /// Its state's schema now (the target version's).
    pub to_schema: u32,
    /// Why it had failed; `None`: it had been cancelled.
    pub failure: Option<String>,
}

/// One attempt of a step, on the version the instance was on then (its start's, or its last
/// move's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEntry {
    /// The step.
    pub step: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// How long the attempt took (ms): it began this long before the entry's time.
    pub took_ms: u64,
    /// What woke the step.
    pub woken_by: WokenBy,
    /// The state's schema was migrated before the step ran: from this schema (to the version's).
    pub migrated_from_schema: Option<u32>,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// What woke a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WokenBy {
    /// The instance started: its entry step.
    #[serde(rename = "s")]
    Start,
    /// The previous step went on to this one.
    #[serde(rename = "p")]
    Previous,
    /// A durable sleep ended.
    #[serde(rename = "t")]
    Timer,
    /// A signal arrived, and this step consumed it.
    #[serde(rename = "sig")]
    Signal {
        /// Its name.
        name: String,
        /// Its sequence number.
        seq: u64,
        /// The size of its encoded payload.
        bytes: u64,
    },
    /// An awaited signal did not arrive in time.
    #[serde(rename = "to")]
    Timeout {
        /// The signal's name.
        name: String,
    },
    /// The attempt before failed and the step's retry policy ran it again.
    #[serde(rename = "r")]
    Retry,
    /// An operator revived the instance: this is the first step it ran again. Said when the
    /// history is read, from the `Revived` entry before the step (whose commit stores
    /// `Previous`, as the revived record's wake is the step it resumes at).
    #[serde(rename = "rv")]
    Revival,
}

/// How a step attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// It went on to another step.
    #[serde(rename = "n")]
    Next {
        /// The next step.
        step: String,
    },
    /// It went to sleep.
    #[serde(rename = "sl")]
    Sleep {
        /// Until when (ms since the Unix epoch).
        until_ms: u64,
        /// The step after the sleep.
        step: String,
    },
    /// It waits for a signal.
    #[serde(rename = "a")]
    AwaitSignal {
        /// The signal.
        name: String,
        /// When the wait times out, if it does (ms since the Unix epoch).
        timeout_at_ms: Option<u64>,
        /// The step the signal wakes.
        step: String,
    },
    /// The instance completed.
    #[serde(rename = "c")]
    Completed {
        /// The size of its encoded output.
        output_bytes: u64,
    },
    /// The instance failed (the step said so, or the retries ran out).
    #[serde(rename = "f")]
    Failed {
        /// Why.
        reason: String,
    },
    /// The attempt failed and a retry is scheduled.
    #[serde(rename = "r")]
    Retrying {
        /// The error.
        error: String,
        /// When the next attempt runs (ms since the Unix epoch).
        at_ms: u64,
    },
    /// The record cannot be run by its version: the instance was quarantined.
    #[serde(rename = "q")]
    Quarantined {
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancelled_at(at_ms: u64) -> HistoryEntry {
        HistoryEntry {
            at_ms,
            event: HistoryEvent::Cancelled,
        }
    }

    #[test]
    fn entries_stay_in_the_record_until_a_chunk_is_full_and_read_back_with_their_numbers() {
        let mut book = HistoryBook::default();
        for at in 0..HISTORY_CHUNK - 1 {
            assert_eq!(book.append(&cancelled_at(at), 100).unwrap(), Appended::default());
        }
        let tail = book.tail_entries().unwrap();
        assert_eq!(tail.len() as u64, HISTORY_CHUNK - 1);
        assert_eq!(tail[3], (3, cancelled_at(3)));
        let filled = book.append(&cancelled_at(7), 100).unwrap();
        let (first, chunk) = filled.chunk.expect("the eighth entry fills the first chunk");
        assert_eq!(first, 0);
        let entries = decode_entries(first, &chunk).unwrap();
        assert_eq!(entries.len() as u64, HISTORY_CHUNK);
        assert_eq!(entries[7], (7, cancelled_at(7)));
        assert!(book.tail.is_empty());
        book.append(&cancelled_at(8), 100).unwrap();
        assert_eq!(book.tail_entries().unwrap(), [(8, cancelled_at(8))]);
    }

    #[test]
    fn the_bound_drops_whole_chunks_after_the_first_and_counts_them() {
        let mut book = HistoryBook::default();
        let mut drops = Vec::new();
        for at in 0..5 * HISTORY_CHUNK {
            if let Some(first) = book.append(&cancelled_at(at), 0).unwrap().drop {
                drops.push(first);
            }
        }
        // A bound of 16 (the least): chunks 0 and the newest are kept, with the tail.
        assert_eq!(drops, [8, 16, 24]);
        assert_eq!((book.kept(), book.folded), (16, 24));
    }

    fn step(name: &str, woken_by: WokenBy) -> HistoryEntry {
        HistoryEntry {
            at_ms: 1,
            event: HistoryEvent::Step(StepEntry {
                step: name.to_string(),
                attempt: 1,
                took_ms: 0,
                woken_by,
                migrated_from_schema: None,
                outcome: AttemptOutcome::Next {
                    step: "next".to_string(),
                },
            }),
        }
    }

    fn woken(entries: &[HistoryEntry]) -> Vec<WokenBy> {
        entries
            .iter()
            .filter_map(|entry| match &entry.event {
                HistoryEvent::Step(step) => Some(step.woken_by.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_step_after_a_revival_is_said_to_be_woken_by_it_and_no_other() {
        let revived = HistoryEntry {
            at_ms: 1,
            event: HistoryEvent::Revived(ReviveStamp {
                from: Version::new(1, 0, 0),
                to: Version::new(1, 0, 1),
                from_step: "b".to_string(),
                to_step: "b".to_string(),
                from_schema: 1,
                to_schema: 1,
                failure: None,
            }),
        };
        let claimed = HistoryEntry {
            at_ms: 1,
            event: HistoryEvent::Claimed {
                worker: "w2".to_string(),
            },
        };
        let mut entries = vec![
            step("a", WokenBy::Start),
            step("b", WokenBy::Previous),
            cancelled_at(1),
            revived.clone(),
            claimed,
            step("b", WokenBy::Previous),
            step("c", WokenBy::Previous),
            revived,
            step("c", WokenBy::Retry),
        ];
        mark_revived_steps(&mut entries);
        assert_eq!(
            woken(&entries),
            [
                WokenBy::Start,
                WokenBy::Previous,
                WokenBy::Revival,
                WokenBy::Previous,
                WokenBy::Retry
            ],
            "past a claim; only the first step after; a retry stays a retry"
        );
    }

    #[test]
    fn a_damaged_chunk_says_which_entry_does_not_decode() {
        let mut bytes = Vec::new();
        cancelled_at(1).encode_into(&mut bytes).unwrap();
        bytes.extend_from_slice(&[0xc1, 0x00]);
        let error = decode_entries(10, &bytes).unwrap_err();
        assert!(error.contains("history entry 11"), "{error}");
    }

    #[test]
    fn an_entry_reads_back_as_written_and_damaged_bytes_give_an_error() {
        let entry = HistoryEntry {
            at_ms: 1_700_000_000_123,
            event: HistoryEvent::Step(StepEntry {
                step: "charge".to_string(),
                attempt: 2,
                took_ms: 23,
                woken_by: WokenBy::Signal {
                    name: "paid".to_string(),
                    seq: 7,
                    bytes: 12,
                },
                migrated_from_schema: Some(1),
                outcome: AttemptOutcome::Retrying {
                    error: "card declined".to_string(),
                    at_ms: 1_700_000_001_123,
                },
            }),
        };
        let mut bytes = Vec::new();
        entry.encode_into(&mut bytes).unwrap();
        assert_eq!(decode_entries(5, &bytes).unwrap(), [(5, entry)]);
        assert!(decode_entries(5, &bytes[..bytes.len() / 2]).is_err());
    }
}
