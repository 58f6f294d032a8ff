//! An instance's history: what happened to it, entry by entry, each written in the commit of the
//! change it records, so that history and state never disagree.
//!
//! Owns the stored form of an entry ([`HistoryEntry`]), what an entry says ([`HistoryEvent`],
//! [`StepEntry`], [`AttemptOutcome`], [`WokenBy`]) and where entries are kept ([`HistoryBook`]):
//! the newest ones in the instance's record itself, whose commit writes them at no extra cost,
//! and every [`HISTORY_CHUNK`] of them moved to the store as one chunk by the commit that fills
//! it. Beyond the bound the oldest chunks after the first (which holds the start) are dropped,
//! a span of them at a time where it can ([`HISTORY_FOLD_SPAN`]), and counted. The engine
//! decides what to write; a store keeps chunks by instance and number.
//!
//! An entry is stored in one of two forms, told apart by its first byte (a MessagePack array's
//! length): in full, `[at_ms, event]`, which any entry may take; or, for a step attempt (most
//! entries, each carried by every commit of the record until its chunk fills), compact
//! ([`COMPACT_STEP_MARK`]): its time as a gap from the first entry of its chunk, its step left
//! out when it is the one the entry before named, and its common wakes and outcome without
//! their variant names. A chunk's entries are read in order, each compact one with what the
//! ones before it say.

use std::borrow::Cow;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::codec::EncodeError;
pub use crate::instance::HistoryBook;
use crate::instance::{MoveStamp, MAX_STORED_DEPTH, TAIL_ROOM};

/// How many entries a chunk holds: the record keeps fewer than this, and the commit that adds
/// the last of a chunk moves the chunk to the store.
pub const HISTORY_CHUNK: u64 = 8;

/// How many entries an instance keeps unless the engine is told otherwise.
pub const DEFAULT_HISTORY_LIMIT: u32 = 1_000;

/// The fewest entries a bound may keep: the first chunk (with the start) and one more.
pub const MIN_HISTORY_LIMIT: u32 = 2 * HISTORY_CHUNK as u32;

/// How many entries the bound drops at once where it can: the span of chunks holding the oldest
/// entry after the first chunk. Spans are counted from the first entry after the first chunk,
/// so a store may keep a span's chunks under one key and delete it whole (the embedded store
/// does) rather than rewrite it at every chunk dropped.
pub const HISTORY_FOLD_SPAN: u64 = 8 * HISTORY_CHUNK;

/// The first entry of the span of chunks that holds entry `number`: 0 for the first chunk,
/// which the bound never drops, else a multiple of [`HISTORY_FOLD_SPAN`] after it.
pub fn fold_span_of(number: u64) -> u64 {
    if number < HISTORY_CHUNK {
        return 0;
    }
    HISTORY_CHUNK + (number - HISTORY_CHUNK) / HISTORY_FOLD_SPAN * HISTORY_FOLD_SPAN
}

/// What adding an entry asks of the commit that adds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// A chunk the entry filled, to store: its first entry's number and its entries.
    pub chunk: Option<(u64, Vec<u8>)>,
    /// The entries the bound drops, whole chunks from the first of one to the first after the
    /// last (empty when it drops none).
    pub dropped: std::ops::Range<u64>,
}

impl HistoryBook {
    /// Adds `entry`, keeping about `limit` entries (at least [`MIN_HISTORY_LIMIT`]). When a
    /// chunk fills and more are kept, the oldest after the first chunk are dropped: the whole
    /// [`HISTORY_FOLD_SPAN`] that holds the oldest once every chunk of it is stored before the
    /// one just filled, else that oldest chunk alone. So a history keeps at most `limit`
    /// entries and the tail's (fewer than a chunk), and just after a span is dropped, as few as
    /// `limit` less a span.
    pub fn append(&mut self, entry: &HistoryEntry, limit: u32) -> Result<Appended, EncodeError> {
        let before = self.tail.len();
        self.tail.reserve(TAIL_ROOM);
        let written = match &entry.event {
            HistoryEvent::Step(step) => self.write_step(entry, step),
            _ => entry.encode_into(&mut self.tail).map(|()| None),
        };
        match written {
            Ok(named_step_len) => self.named_step_len = named_step_len,
            Err(error) => {
                // An entry that fails to encode leaves the tail as it was.
                self.tail.truncate(before);
                return Err(error);
            }
        }
        self.next += 1;
        let mut appended = Appended::default();
        if self.next % HISTORY_CHUNK == 0 {
            appended.chunk = Some((self.next - HISTORY_CHUNK, std::mem::take(&mut self.tail)));
            // The next entry begins a chunk: it is read without the ones before it.
            self.named_step_len = None;
            let limit = u64::from(limit.max(MIN_HISTORY_LIMIT));
            if self.kept() > limit {
                appended.dropped = self.fold();
            }
        }
        Ok(appended)
    }

    /// Drops the oldest entries after the first chunk, as [`HistoryBook::append`] says, when a
    /// chunk has just been stored (every entry before `next` is); gives the entries dropped.
    fn fold(&mut self) -> std::ops::Range<u64> {
        let oldest = HISTORY_CHUNK + self.folded;
        let span_end = fold_span_of(oldest) + HISTORY_FOLD_SPAN;
        // The chunk just stored is always kept: a span ending with it is not dropped whole.
        let end = if span_end + HISTORY_CHUNK <= self.next {
            span_end
        } else {
            oldest + HISTORY_CHUNK
        };
        self.folded = end - HISTORY_CHUNK;
        oldest..end
    }

    /// Writes `entry`, the attempt `step`, to the tail: compact where the tail's first entry
    /// gives its time (in full otherwise); gives the length of the step its outcome names when
    /// that name ends the tail.
    fn write_step(&mut self, entry: &HistoryEntry, step: &StepEntry) -> Result<Option<u32>, EncodeError> {
        let gap_ms = first_entry_ms(&self.tail)
            .and_then(|first_ms| i64::try_from(i128::from(entry.at_ms) - i128::from(first_ms)).ok());
        let Some(gap_ms) = gap_ms else {
            entry.encode_into(&mut self.tail)?;
            return Ok(None);
        };
        let named_before =
            self.named_step_len == u32::try_from(step.step.len()).ok() && self.tail.ends_with(step.step.as_bytes());
        let compact = CompactStep {
            gap_ms,
            step: (!named_before).then_some(Cow::Borrowed(step.step.as_str())),
            attempt: step.attempt,
            took_ms: step.took_ms,
            woken_by: CompactWake::of(&step.woken_by),
            migrated_from_schema: step.migrated_from_schema,
            outcome: CompactOutcome::of(&step.outcome),
        };
        write_entry(&mut self.tail, &compact)?;
        Ok(step
            .outcome
            .next_step()
            .filter(|name| self.tail.ends_with(name.as_bytes()))
            .and_then(|name| u32::try_from(name.len()).ok()))
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

/// Appends an entry, in either stored form, to `bytes` (MessagePack by position).
fn write_entry(bytes: &mut Vec<u8>, entry: &impl Serialize) -> Result<(), EncodeError> {
    rmp_serde::encode::write(bytes, entry).map_err(|error| EncodeError {
        what: "history entry",
        message: error.to_string(),
    })
}

/// The first byte of a step entry in its compact form ([`CompactStep`], a MessagePack array of
/// seven); an entry in full begins with an array of two.
pub const COMPACT_STEP_MARK: u8 = 0x97;

/// The time of the first entry of a chunk (or tail) `bytes`, which a compact entry's gap is
/// counted from: 0 while there is none (the first entry's gap is its time); `None` when the
/// bytes do not begin with an entry's time.
fn first_entry_ms(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return Some(0);
    }
    let mut rest = bytes;
    match rmp::decode::read_marker(&mut rest) {
        Ok(rmp::Marker::FixArray(2)) => rmp::decode::read_int(&mut rest).ok(),
        Ok(marker) if rmp::Marker::to_u8(&marker) == COMPACT_STEP_MARK => rmp::decode::read_int::<i64, _>(&mut rest)
            .ok()
            .and_then(|gap| u64::try_from(gap).ok()),
        _ => None,
    }
}

/// A step entry in its compact stored form: a MessagePack array of seven, by position.
#[derive(Debug, Serialize, Deserialize)]
struct CompactStep<'a> {
    /// Its time less that of its chunk's first entry (the first entry: its time).
    gap_ms: i64,
    /// The step; `None`: the one the entry before it named (its outcome's next step).
    step: Option<Cow<'a, str>>,
    /// As in [`StepEntry`].
    attempt: u32,
    /// As in [`StepEntry`].
    took_ms: u64,
    /// What woke it.
    woken_by: CompactWake<'a>,
    /// As in [`StepEntry`].
    migrated_from_schema: Option<u32>,
    /// How it ended.
    outcome: CompactOutcome<'a>,
}

impl CompactStep<'_> {
    /// The entry, after `before` (the entries of its chunk before it, oldest first): its gap is
    /// from the first of them (from 0 when there is none), and a step it leaves out is the one
    /// the last of them named.
    fn into_entry(self, before: &[(u64, HistoryEntry)]) -> Result<HistoryEntry, String> {
        let first_ms = before.first().map_or(0, |(_, first)| first.at_ms);
        let at_ms = u64::try_from(i128::from(first_ms) + i128::from(self.gap_ms)).map_err(|_| {
            format!(
                "its time is {} ms from its chunk's first entry, before 1970",
                self.gap_ms
            )
        })?;
        let step = match self.step {
            Some(step) => step.into_owned(),
            None => before
                .last()
                .and_then(|(_, last)| last.named_step())
                .ok_or("it leaves its step out, and no entry before it names one")?
                .to_string(),
        };
        let woken_by = match self.woken_by {
            CompactWake::Code(code) => WAKE_CODES
                .get(usize::from(code))
                .cloned()
                .ok_or_else(|| format!("its wake code {code} is unknown"))?,
            CompactWake::Full(woken_by) => woken_by.into_owned(),
        };
        let outcome = match self.outcome {
            CompactOutcome::Next(step) => AttemptOutcome::Next {
                step: step.into_owned(),
            },
            CompactOutcome::Full(outcome) => outcome.into_owned(),
        };
        Ok(HistoryEntry {
            at_ms,
            event: HistoryEvent::Step(StepEntry {
                step,
                attempt: self.attempt,
                took_ms: self.took_ms,
                woken_by,
                migrated_from_schema: self.migrated_from_schema,
                outcome,
            }),
        })
    }
}

/// The wakes a compact entry writes as their position here.
const WAKE_CODES: [WokenBy; 5] = [
    WokenBy::Start,
    WokenBy::Previous,
    WokenBy::Timer,
    WokenBy::Retry,
    WokenBy::Revival,
];

/// What woke a step, in a compact entry: a position in [`WAKE_CODES`] for the wakes that carry
/// nothing, else the wake in full.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum CompactWake<'a> {
    Code(u8),
    Full(Cow<'a, WokenBy>),
}

impl<'a> CompactWake<'a> {
    fn of(woken_by: &'a WokenBy) -> Self {
        match WAKE_CODES.iter().position(|code| code == woken_by) {
            Some(position) => CompactWake::Code(position as u8),
            None => CompactWake::Full(Cow::Borrowed(woken_by)),
        }
    }
}

/// How a step ended, in a compact entry: the next step's name alone for
/// [`AttemptOutcome::Next`] (no other outcome is written as a string), else the outcome in full.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum CompactOutcome<'a> {
    Next(Cow<'a, str>),
    Full(Cow<'a, AttemptOutcome>),
}

impl<'a> CompactOutcome<'a> {
    fn of(outcome: &'a AttemptOutcome) -> Self {
        match outcome {
            AttemptOutcome::Next { step } => CompactOutcome::Next(Cow::Borrowed(step)),
            outcome => CompactOutcome::Full(Cow::Borrowed(outcome)),
        }
    }
}

/// The entries of a chunk (or a tail) whose first entry is number `first`, with their numbers.
pub fn decode_entries(first: u64, bytes: &[u8]) -> Result<Vec<(u64, HistoryEntry)>, String> {
    let mut entries = Vec::new();
    let mut rest = bytes;
    while let Some(&mark) = rest.first() {
        let number = first + entries.len() as u64;
        let mut deserializer = rmp_serde::Deserializer::new(&mut rest);
        deserializer.set_max_depth(MAX_STORED_DEPTH);
        let entry = if mark == COMPACT_STEP_MARK {
            CompactStep::deserialize(&mut deserializer)
                .map_err(|error| error.to_string())
                .and_then(|compact| compact.into_entry(&entries))
        } else {
            HistoryEntry::deserialize(&mut deserializer).map_err(|error| error.to_string())
        }
        .map_err(|reason| format!("history entry {number} does not decode: {reason}"))?;
        entries.push((number, entry));
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
    /// The step a step entry's outcome names (see [`AttemptOutcome::next_step`]); `None` for
    /// other entries.
    fn named_step(&self) -> Option<&str> {
        match &self.event {
            HistoryEvent::Step(step) => step.outcome.next_step(),
            _ => None,
        }
    }

    /// Appends the entry to `bytes` in its full stored form, `[at_ms, event]` (MessagePack by
    /// position: entries are many and small), which needs no entry before it. A history's own
    /// step entries are written compact ([`HistoryBook::append`]).
    pub fn encode_into(&self, bytes: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_entry(bytes, self)
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

/// How a step attempt ended. Every variant carries fields: a compact entry writes `Next` as its
/// step's name alone, so no other outcome may be written as a string (a unit variant would be).
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

impl AttemptOutcome {
    /// The step the instance runs next after this outcome, if it names one (now, after a sleep,
    /// or when a signal arrives).
    pub fn next_step(&self) -> Option<&str> {
        match self {
            AttemptOutcome::Next { step }
            | AttemptOutcome::Sleep { step, .. }
            | AttemptOutcome::AwaitSignal { step, .. } => Some(step),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_oneof, Just, Strategy};

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

    /// The chunks `book` drops while `entries` more are appended under `limit`, with the most
    /// entries it kept after any append.
    fn drops_appending(book: &mut HistoryBook, entries: u64, limit: u32) -> (Vec<u64>, u64) {
        let mut drops = Vec::new();
        let mut most_kept = 0;
        for _ in 0..entries {
            let at = book.next;
            drops.extend(
                book.append(&cancelled_at(at), limit)
                    .unwrap()
                    .dropped
                    .step_by(HISTORY_CHUNK as usize),
            );
            most_kept = most_kept.max(book.kept());
        }
        (drops, most_kept)
    }

    #[test]
    fn the_bound_drops_whole_chunks_after_the_first_and_counts_them() {
        let mut book = HistoryBook::default();
        let (drops, most_kept) = drops_appending(&mut book, 5 * HISTORY_CHUNK, 0);
        // A bound of 16 (the least): chunks 0 and the newest are kept, with the tail. No span
        // after the first chunk is stored whole before its chunks are due: one chunk at a time.
        assert_eq!(drops, [8, 16, 24]);
        assert_eq!((book.kept(), book.folded, most_kept), (16, 24, 23));
        // Far on, past several spans, the newest chunk is still kept after every fold.
        for _ in 0..25 * HISTORY_CHUNK {
            let at = book.next;
            book.append(&cancelled_at(at), 0).unwrap();
            if book.next % HISTORY_CHUNK == 0 {
                assert_eq!(book.kept(), 16, "after entry {at}");
            }
        }
    }

    #[test]
    fn beyond_the_bound_a_whole_stored_span_is_dropped_at_once() {
        let mut book = HistoryBook::default();
        let (drops, most_kept) = drops_appending(&mut book, 1_000, 1_000);
        assert!(drops.is_empty());
        let (drops, most_kept_after) = drops_appending(&mut book, 8, 1_000);
        // Entry 1 007 fills the chunk that puts 1 008 over the bound: the span 8..72 goes.
        assert_eq!(drops, (8..72).step_by(8).collect::<Vec<_>>());
        assert_eq!((book.kept(), book.folded), (944, 64));
        let (drops, _) = drops_appending(&mut book, 64, 1_000);
        assert_eq!(drops, (72..136).step_by(8).collect::<Vec<_>>());
        // At most the bound and a tail short of a chunk.
        assert_eq!(most_kept.max(most_kept_after), 1_000 + HISTORY_CHUNK - 1);
    }

    #[test]
    fn a_history_folded_a_chunk_at_a_time_before_drops_the_rest_of_its_span_then_whole_spans() {
        // As a build that dropped one chunk at a time left it: 8..24 folded.
        let mut book = HistoryBook {
            next: 120,
            folded: 16,
            ..HistoryBook::default()
        };
        let (drops, _) = drops_appending(&mut book, 8, 100);
        assert_eq!(drops, (24..72).step_by(8).collect::<Vec<_>>());
        assert_eq!((book.kept(), book.folded), (64, 64));
        let (drops, _) = drops_appending(&mut book, 48, 100);
        assert_eq!(drops, (72..136).step_by(8).collect::<Vec<_>>());
        assert_eq!(fold_span_of(7), 0);
        assert_eq!((fold_span_of(8), fold_span_of(71), fold_span_of(72)), (8, 8, 72));
    }

    fn step(name: &str, woken_by: WokenBy) -> HistoryEntry {
        step_at(1, name, woken_by, next("next"))
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

    fn step_at(at_ms: u64, name: &str, woken_by: WokenBy, outcome: AttemptOutcome) -> HistoryEntry {
        HistoryEntry {
            at_ms,
            event: HistoryEvent::Step(StepEntry {
                step: name.to_string(),
                attempt: 1,
                took_ms: 3,
                woken_by,
                migrated_from_schema: None,
                outcome,
            }),
        }
    }

    fn next(name: &str) -> AttemptOutcome {
        AttemptOutcome::Next { step: name.to_string() }
    }

    /// Appends `entries` to `book`, the record read again from the store before each entry whose
    /// flag in `read_again` is set; gives every chunk they filled, then the tail, decoded.
    fn appended_and_read(
        book: &mut HistoryBook,
        entries: &[HistoryEntry],
        read_again: &[bool],
    ) -> Vec<(u64, HistoryEntry)> {
        let mut read = Vec::new();
        for (number, entry) in entries.iter().enumerate() {
            if read_again.get(number) == Some(&true) {
                book.named_step_len = None;
            }
            if let Some((first, chunk)) = book.append(entry, 1_000).unwrap().chunk {
                read.extend(decode_entries(first, &chunk).unwrap());
            }
        }
        read.extend(book.tail_entries().unwrap());
        read
    }

    #[test]
    fn step_entries_are_written_compact_and_read_back_as_written() {
        let started = HistoryEntry {
            at_ms: 1_700_000_000_000,
            event: HistoryEvent::Started {
                version: Version::new(1, 0, 0),
                routed_by: crate::routing::RouteReason::Newest,
                routing_key: None,
                input_bytes: 20,
                schedule: None,
            },
        };
        let mut book = HistoryBook::default();
        book.append(&started, 1_000).unwrap();
        let before = book.tail.len();
        let first_step = step_at(1_700_000_000_004, "post", WokenBy::Start, next("post"));
        book.append(&first_step, 1_000).unwrap();
        let mut full = Vec::new();
        first_step.encode_into(&mut full).unwrap();
        // Time as a gap from the start, the wake as a code, the next step's name alone.
        assert_eq!(book.tail.len() - before, 16, "in full: {} bytes", full.len());
        let before = book.tail.len();
        book.append(
            &step_at(1_700_000_000_009, "post", WokenBy::Previous, next("post")),
            1_000,
        )
        .unwrap();
        assert_eq!(
            book.tail.len() - before,
            12,
            "the step the entry before named is left out"
        );

        let mut book = HistoryBook::default();
        let entries = [
            started.clone(),
            step_at(1_700_000_000_004, "reserve", WokenBy::Start, next("charge")),
            step_at(
                1_700_000_000_009,
                "charge",
                WokenBy::Previous,
                AttemptOutcome::Sleep {
                    until_ms: 1_700_000_060_000,
                    step: "ship".to_string(),
                },
            ),
            step_at(
                1_700_000_060_001,
                "ship",
                WokenBy::Timer,
                AttemptOutcome::AwaitSignal {
                    name: "delivered".to_string(),
                    timeout_at_ms: Some(1_700_100_000_000),
                    step: "close".to_string(),
                },
            ),
            // Not the step the entry before named.
            step_at(
                1_700_000_070_000,
                "audit",
                WokenBy::Signal {
                    name: "delivered".to_string(),
                    seq: 4,
                    bytes: 9,
                },
                next("close"),
            ),
            HistoryEntry {
                at_ms: 1_700_000_070_001,
                event: HistoryEvent::Claimed {
                    worker: "close".to_string(),
                },
            },
            // After an entry that is not a step, even one ending in the same bytes.
            step_at(
                1_700_000_070_002,
                "close",
                WokenBy::Timeout { name: "x".to_string() },
                AttemptOutcome::Retrying {
                    error: "closed".to_string(),
                    at_ms: 1_700_000_080_000,
                },
            ),
            // The clock went back: a gap before the chunk's first entry.
            step_at(1_699_999_999_000, "close", WokenBy::Retry, next("close")),
            // The first of the next chunk: its time and step in it.
            step_at(
                1_700_000_090_000,
                "close",
                WokenBy::Previous,
                AttemptOutcome::Completed { output_bytes: 7 },
            ),
            step_at(
                1_700_000_090_001,
                "close",
                WokenBy::Revival,
                AttemptOutcome::Failed {
                    reason: "no".to_string(),
                },
            ),
            step_at(
                1_700_000_090_002,
                "close",
                WokenBy::Previous,
                AttemptOutcome::Quarantined {
                    reason: "bad".to_string(),
                },
            ),
        ];
        let mut migrated = step_at(1_700_000_090_003, "", WokenBy::Previous, next(""));
        if let HistoryEvent::Step(step) = &mut migrated.event {
            step.migrated_from_schema = Some(2);
            step.attempt = 4_000_000;
            step.took_ms = u64::MAX;
        }
        let mut entries = entries.to_vec();
        entries.extend([migrated.clone(), migrated]);
        let read = appended_and_read(&mut book, &entries, &[]);
        assert_eq!(
            read,
            entries
                .into_iter()
                .enumerate()
                .map(|(number, entry)| (number as u64, entry))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_tail_an_earlier_build_wrote_in_full_reads_on_with_the_compact_entries_after_it() {
        let mut book = HistoryBook::default();
        let earlier = [
            step_at(1_700_000_000_000, "a", WokenBy::Start, next("b")),
            step_at(1_700_000_000_005, "b", WokenBy::Previous, next("c")),
        ];
        for entry in &earlier {
            entry.encode_into(&mut book.tail).unwrap();
            book.next += 1;
        }
        let later = [
            step_at(1_700_000_000_007, "c", WokenBy::Previous, next("d")),
            step_at(1_700_000_000_009, "d", WokenBy::Previous, next("e")),
        ];
        let read = appended_and_read(&mut book, &later, &[]);
        let all: Vec<_> = earlier
            .into_iter()
            .chain(later)
            .enumerate()
            .map(|(number, entry)| (number as u64, entry))
            .collect();
        assert_eq!(read, all);
    }

    #[test]
    fn a_record_read_again_writes_its_next_step_with_its_name_and_reads_the_same() {
        let mut book = HistoryBook::default();
        book.append(&step_at(5, "a", WokenBy::Start, next("b")), 1_000).unwrap();
        // As the record is read back from the store: what this process noted is gone.
        let mut read_back = HistoryBook {
            named_step_len: None,
            ..book.clone()
        };
        assert_eq!(read_back, book);
        let second = step_at(6, "b", WokenBy::Previous, next("c"));
        book.append(&second, 1_000).unwrap();
        read_back.append(&second, 1_000).unwrap();
        assert_eq!(
            read_back.tail.len(),
            book.tail.len() + 1,
            "its name (one byte) and its mark"
        );
        assert_eq!(read_back.tail_entries().unwrap(), book.tail_entries().unwrap());
    }

    #[test]
    fn a_compact_entry_that_cannot_be_read_says_which_and_why() {
        let mut book = HistoryBook::default();
        book.append(&step_at(2, "a", WokenBy::Previous, next("b")), 1_000)
            .unwrap();
        let second_starts = book.tail.len();
        book.append(&step_at(3, "b", WokenBy::Previous, next("c")), 1_000)
            .unwrap();
        // The second entry leaves its step out; read without the one before, it has none.
        let error = decode_entries(41, &book.tail[second_starts..]).unwrap_err();
        assert!(
            error.contains("history entry 41") && error.contains("leaves its step out"),
            "{error}"
        );
        // A wake code no build writes: the first entry's wake, `Previous`, is code 1, the last
        // such byte of the entry (its time is 2, its attempt 1, its time taken 3).
        let mut unknown_wake = book.tail[..second_starts].to_vec();
        let code = unknown_wake.iter().rposition(|&byte| byte == 1).unwrap();
        unknown_wake[code] = 9;
        let error = decode_entries(0, &unknown_wake).unwrap_err();
        assert!(error.contains("wake code 9"), "{error}");
    }

    fn any_wake() -> impl Strategy<Value = WokenBy> {
        prop_oneof![
            Just(WokenBy::Start),
            Just(WokenBy::Previous),
            Just(WokenBy::Timer),
            Just(WokenBy::Retry),
            Just(WokenBy::Revival),
            ("[a-c]{0,3}", any::<u64>(), any::<u64>()).prop_map(|(name, seq, bytes)| WokenBy::Signal {
                name,
                seq,
                bytes
            }),
            "[a-c]{0,3}".prop_map(|name| WokenBy::Timeout { name }),
        ]
    }

    fn any_outcome() -> impl Strategy<Value = AttemptOutcome> {
        prop_oneof![
            4 => "[a-c]{0,2}".prop_map(|step| AttemptOutcome::Next { step }),
            1 => (any::<u64>(), "[a-c]{0,2}").prop_map(|(until_ms, step)| AttemptOutcome::Sleep { until_ms, step }),
            1 => ("[a-c]{0,2}", any::<Option<u64>>(), "[a-c]{0,2}")
                .prop_map(|(name, timeout_at_ms, step)| AttemptOutcome::AwaitSignal { name, timeout_at_ms, step }),
            1 => any::<u64>().prop_map(|output_bytes| AttemptOutcome::Completed { output_bytes }),
            1 => "[a-c]{0,2}".prop_map(|reason| AttemptOutcome::Failed { reason }),
            1 => ("[a-c]{0,2}", any::<u64>()).prop_map(|(error, at_ms)| AttemptOutcome::Retrying { error, at_ms }),
            1 => "[a-c]{0,2}".prop_map(|reason| AttemptOutcome::Quarantined { reason }),
        ]
    }

    fn any_entry() -> impl Strategy<Value = HistoryEntry> {
        let step = (
            "[a-c]{0,2}",
            any::<u32>(),
            any::<u64>(),
            any_wake(),
            any::<Option<u32>>(),
            any_outcome(),
        )
            .prop_map(|(step, attempt, took_ms, woken_by, migrated_from_schema, outcome)| {
                HistoryEvent::Step(StepEntry {
                    step,
                    attempt,
                    took_ms,
                    woken_by,
                    migrated_from_schema,
                    outcome,
                })
            });
        let event = prop_oneof![
            6 => step,
            1 => Just(HistoryEvent::Cancelled),
            1 => "[a-c]{0,2}".prop_map(|worker| HistoryEvent::Claimed { worker }),
        ];
        // Times near each other (either way) and anywhere.
        let at_ms = prop_oneof![3 => 1_700_000_000_000u64..1_700_000_100_000, 1 => any::<u64>()];
        (at_ms, event).prop_map(|(at_ms, event)| HistoryEntry { at_ms, event })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the entries, each chunk and the tail read back as the entries appended,
        /// also when the record was read again from the store between two of them.
        #[test]
        fn any_entries_read_back_as_appended(
            entries in proptest::collection::vec(any_entry(), 0..40),
            read_again in proptest::collection::vec(proptest::prelude::any::<bool>(), 40),
        ) {
            let read = appended_and_read(&mut HistoryBook::default(), &entries, &read_again);
            let expected: Vec<_> = entries.into_iter().enumerate().map(|(number, entry)| (number as u64, entry)).collect();
            proptest::prop_assert_eq!(read, expected);
        }
    }
}
