//! An instance's history: what happened to it, entry by entry, each written in the commit of the
//! change it records, so that history and state never disagree.
//!
//! Owns the stored form of an entry ([`HistoryEntry`]), what an entry says ([`HistoryEvent`],
//! [`StepEntry`], [`AttemptOutcome`], [`WokenBy`]) and the bound ([`HistoryBook`], kept in the
//! instance's record: the next entry's number and how many old entries were folded away, so that
//! a commit knows both without reading the store). The engine decides what to write; a store
//! keeps entries by instance and number.

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::codec::EncodeError;
use crate::instance::{decode_stored, MoveStamp};

/// How many entries an instance keeps unless the engine is told otherwise.
pub const DEFAULT_HISTORY_LIMIT: u32 = 1_000;

/// The fewest entries a bound may keep: the first (the start) and the newest.
pub const MIN_HISTORY_LIMIT: u32 = 2;

/// Where an instance's history stands. Entries are numbered from 0 (the start); the first is
/// always kept, and beyond the bound the oldest after it are folded away, counted in `folded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryBook {
    /// The number the next entry gets.
    pub next: u64,
    /// How many entries after the first were dropped to keep the bound: entries `1..=folded`.
    pub folded: u64,
}

/// The number a new entry gets, and the entry it pushes out of the bound, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The new entry's number.
    pub seq: u64,
    /// The entry to drop in the same commit.
    pub drop: Option<u64>,
}

impl HistoryBook {
    /// Numbers a new entry, keeping at most `limit` entries (at least [`MIN_HISTORY_LIMIT`]).
    pub fn append(&mut self, limit: u32) -> Appended {
        let seq = self.next;
        self.next += 1;
        let limit = u64::from(limit.max(MIN_HISTORY_LIMIT));
        let drop = (self.kept() > limit).then(|| {
            self.folded += 1;
            self.folded
        });
        Appended { seq, drop }
    }

    /// How many entries are kept.
    pub fn kept(&self) -> u64 {
        self.next.saturating_sub(self.folded)
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
    /// Encodes the entry in the stored format (MessagePack with named fields).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        rmp_serde::to_vec_named(self).map_err(|error| EncodeError {
            what: "history entry",
            message: error.to_string(),
        })
    }

    /// Decodes a stored entry.
    pub fn decode(bytes: &[u8]) -> Result<HistoryEntry, String> {
        decode_stored(bytes).map_err(|error| error.to_string())
    }
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HistoryEvent {
    /// The instance started.
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
    Step(StepEntry),
    /// An operator cancelled it.
    Cancelled,
    /// Its state was migrated to another schema without running a step (a background migration);
    /// a step's own migration is in its [`StepEntry`].
    Migrated {
        /// The schema before.
        from_schema: u32,
        /// The schema after.
        to_schema: u32,
    },
    /// It moved to another version at a step boundary.
    Moved(MoveStamp),
    /// It was quarantined: it cannot run until repaired.
    Quarantined {
        /// Why.
        reason: String,
    },
}

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEntry {
    /// The step.
    pub step: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The version that ran it.
    pub version: Version,
    /// The worker that ran it (a store many processes share), if known.
    pub worker: Option<String>,
    /// When the attempt began (ms since the Unix epoch).
    pub began_ms: u64,
    /// What woke the step.
    pub woken_by: WokenBy,
    /// The state's schema was migrated before the step ran: from this schema (to the version's).
    pub migrated_from_schema: Option<u32>,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// What woke a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WokenBy {
    /// The instance started: its entry step.
    Start,
    /// The previous step went on to this one.
    Previous,
    /// A durable sleep ended.
    Timer,
    /// A signal arrived, and this step consumed it.
    Signal {
        /// Its name.
        name: String,
        /// Its sequence number.
        seq: u64,
        /// The size of its encoded payload.
        bytes: u64,
    },
    /// An awaited signal did not arrive in time.
    Timeout {
        /// The signal's name.
        name: String,
    },
    /// The attempt before failed and the step's retry policy ran it again.
    Retry,
}

/// How a step attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// It went on to another step.
    Next {
        /// The next step.
        step: String,
    },
    /// It went to sleep.
    Sleep {
        /// Until when (ms since the Unix epoch).
        until_ms: u64,
        /// The step after the sleep.
        step: String,
    },
    /// It waits for a signal.
    AwaitSignal {
        /// The signal.
        name: String,
        /// When the wait times out, if it does (ms since the Unix epoch).
        timeout_at_ms: Option<u64>,
        /// The step the signal wakes.
        step: String,
    },
    /// The instance completed.
    Completed {
        /// The size of its encoded output.
        output_bytes: u64,
    },
    /// The instance failed (the step said so, or the retries ran out).
    Failed {
        /// Why.
        reason: String,
    },
    /// The attempt failed and a retry is scheduled.
    Retrying {
        /// The error.
        error: String,
        /// When the next attempt runs (ms since the Unix epoch).
        at_ms: u64,
    },
    /// The record cannot be run by its version: the instance was quarantined.
    Quarantined {
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_keeps_the_first_entry_and_the_newest_and_counts_what_it_folds() {
        let mut book = HistoryBook::default();
        let numbers: Vec<Appended> = (0..6).map(|_| book.append(4)).collect();
        let drops: Vec<Option<u64>> = numbers.iter().map(|appended| appended.drop).collect();
        assert_eq!(
            numbers.iter().map(|appended| appended.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
        assert_eq!(drops, [None, None, None, None, Some(1), Some(2)]);
        assert_eq!((book.kept(), book.folded), (4, 2), "entries 0, 3, 4 and 5 are kept");
    }

    #[test]
    fn a_bound_below_two_keeps_two() {
        let mut book = HistoryBook::default();
        assert_eq!(book.append(0).drop, None);
        assert_eq!(book.append(0).drop, None);
        assert_eq!(book.append(1).drop, Some(1));
        assert_eq!(book.kept(), 2);
    }

    #[test]
    fn an_entry_reads_back_as_written_and_damaged_bytes_give_an_error() {
        let entry = HistoryEntry {
            at_ms: 1_700_000_000_123,
            event: HistoryEvent::Step(StepEntry {
                step: "charge".to_string(),
                attempt: 2,
                version: Version::new(1, 0, 1),
                worker: Some("host-1/42".to_string()),
                began_ms: 1_700_000_000_100,
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
        let bytes = entry.encode().unwrap();
        assert_eq!(HistoryEntry::decode(&bytes).unwrap(), entry);
        assert!(HistoryEntry::decode(&bytes[..bytes.len() / 2]).is_err());
    }
}
