//! How the embedded store keeps an instance's history chunks: several chunks to one key.
//!
//! The engine hands over a chunk of [`HISTORY_CHUNK`] entries every eighth commit of an
//! instance. A key of its own per chunk made each of those commits insert a key that stays, and
//! sled pays for a new key with a copy of its leaf and, every few keys, a split: the history's
//! chunks took a fifth to a quarter of the step throughput at 64 concurrent instances (issue
//! #23). So the first chunk (with the start, which the bound never drops) has a key of its own,
//! and the chunks after it share one key per
//! [`HISTORY_FOLD_SPAN`](strata_core::history::HISTORY_FOLD_SPAN) entries, the span the bound
//! drops at once: a chunk's commit rewrites its segment's value, a key sled already holds, and
//! the bound's drop of a whole span leaves its segment empty, which removes the key.
//!
//! A segment's value is [`SEGMENT_MARK`] followed by its chunks, each as its first entry's number
//! (u64), its length (u32), both big-endian, and its bytes. The key ends with the number of the
//! segment's first entry slot ([`fold_span_of`]), so segments sort in entry order. A value without the mark is a
//! chunk as builds before wrote it, under its own first entry's number; it is read as it is, and
//! one at a segment's key is taken into the segment when the segment is next written. Owns the
//! segments' keys, their values' encoding, folding a commit's chunk writes and drops into
//! segment values, and the segments being filled that a chunk appends to without reading them
//! back ([`FilledSegments`]).

use std::collections::HashMap;

use strata_core::history::{fold_span_of, HISTORY_CHUNK};
use strata_core::instance::InstanceId;
use strata_store::{StoreError, StoredHistoryChunk};

/// The first byte of a segment's value. MessagePack never uses it, and a chunk (entries as
/// MessagePack arrays) never begins with it.
const SEGMENT_MARK: u8 = 0xc1;

/// Bytes before a chunk's entries in a segment: its first entry's number and its length.
const PIECE_HEADER: usize = 12;

/// One chunk in a segment's value: where it lies (its header included), its first entry's
/// number and its entries; `None` where the value is cut short.
type Piece<'a> = Option<(std::ops::Range<usize>, u64, &'a [u8])>;

/// The chunks in a segment's value, in order, each as a [`Piece`]; a cut stops the walk after
/// its `None`.
fn pieces(value: &[u8]) -> impl Iterator<Item = Piece<'_>> {
    let mut at = 1;
    let mut cut = false;
    std::iter::from_fn(move || {
        if cut || at >= value.len() {
            return None;
        }
        let piece = value.get(at..at + PIECE_HEADER).and_then(|header| {
            let first = u64::from_be_bytes(header[..8].try_into().ok()?);
            let length = u32::from_be_bytes(header[8..].try_into().ok()?) as usize;
            let end = (at + PIECE_HEADER).checked_add(length)?;
            let entries = value.get(at + PIECE_HEADER..end)?;
            Some((at..end, first, entries))
        });
        match &piece {
            Some((range, ..)) => at = range.end,
            None => cut = true,
        }
        Some(piece)
    })
}

/// The chunks a stored value holds: a segment's, or a chunk as builds before wrote it (under
/// the number `key_number` its key ends with). A segment cut short yields the chunks before the
/// cut and, for the rest, one chunk that will not decode, so the reader names the damage.
pub(crate) fn chunks_of(key_number: u64, value: &[u8]) -> Vec<StoredHistoryChunk> {
    if value.first() != Some(&SEGMENT_MARK) {
        return vec![StoredHistoryChunk {
            first: key_number,
            entries: value.to_vec(),
        }];
    }
    let mut chunks: Vec<StoredHistoryChunk> = Vec::new();
    for piece in pieces(value) {
        let chunk = match piece {
            Some((_, first, entries)) => StoredHistoryChunk {
                first,
                entries: entries.to_vec(),
            },
            None => StoredHistoryChunk {
                first: chunks.last().map_or(key_number, |chunk| chunk.first + HISTORY_CHUNK),
                entries: vec![SEGMENT_MARK],
            },
        };
        chunks.push(chunk);
    }
    chunks
}

/// The value of a segment that holds no chunk yet, with room for a span's chunks.
fn new_segment() -> Vec<u8> {
    let mut value = Vec::with_capacity(NEW_SEGMENT_ROOM);
    value.push(SEGMENT_MARK);
    value
}

/// Appends the chunk whose first entry is `first` to a segment's value.
fn push_piece(value: &mut Vec<u8>, first: u64, entries: &[u8]) {
    value.reserve(PIECE_HEADER + entries.len());
    value.extend_from_slice(&first.to_be_bytes());
    value.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    value.extend_from_slice(entries);
}

/// What one write does to the history keys: segments' values as they will be after it, each read
/// once from the tree when the write first touches it, and changed in place. The read is outside
/// the commit log's lock: every write that carries history comes from the engine's one commit
/// thread, so no other write changes a segment between the read and the write.
#[derive(Default)]
pub(crate) struct SegmentWrites {
    /// By instance and segment number: the segment's value after this write.
    segments: HashMap<(InstanceId, u64), Vec<u8>>,
    /// Keys of chunks as builds before wrote them, each under its own number, that a drop
    /// removes.
    removed_old_chunks: Vec<(InstanceId, u64)>,
}

/// Reads the value under the history key of `instance` ending with `number`, if any: how
/// [`SegmentWrites`] reads the store.
pub(crate) type ReadHistoryKey<'a> = &'a mut dyn FnMut(InstanceId, u64) -> Result<Option<Vec<u8>>, StoreError>;

/// Room a segment begun by a write is given: a span's eight chunks of compact step entries
/// (12 to 20 bytes each) with their headers, so the chunks after the first seldom move it.
const NEW_SEGMENT_ROOM: usize = 1 + 8 * (PIECE_HEADER + 8 * 16);

/// How many instances [`FilledSegments`] holds a segment for, at most: about 1 KB each, so at
/// most a few megabytes, and enough for every instance of a thousand stepping at once.
const FILLED_SEGMENTS_HELD: usize = 2048;

/// The segment each instance last wrote a chunk into, as the tree holds it after that write:
/// the next chunk appends to it without reading it back from the tree. A write takes an
/// instance's segment out ([`FilledSegments::take`]) and gives it back only after the write
/// is durable ([`FilledSegments::keep`]), so a failed write leaves nothing held that the tree
/// does not hold. Holds [`FILLED_SEGMENTS_HELD`] instances at most; an instance that finishes
/// or is removed is let go.
#[derive(Default)]
pub(crate) struct FilledSegments {
    /// By instance: its segment's number and value.
    held: HashMap<InstanceId, (u64, Vec<u8>)>,
}

impl FilledSegments {
    /// The value of segment `number` of `instance`, if held, taken out.
    pub(crate) fn take(&mut self, instance: InstanceId, number: u64) -> Option<Vec<u8>> {
        if self.held.get(&instance).is_some_and(|(held, _)| *held == number) {
            return self.held.remove(&instance).map(|(_, value)| value);
        }
        None
    }

    /// Holds `value` as segment `number` of `instance`, as a durable write left it (`None`:
    /// the write removed the segment).
    pub(crate) fn keep(&mut self, instance: InstanceId, number: u64, value: Option<Vec<u8>>) {
        let Some(value) = value else {
            if self.held.get(&instance).is_some_and(|(held, _)| *held == number) {
                self.held.remove(&instance);
            }
            return;
        };
        // An instance fills its newest segment; a write that also rewrote an older one (the
        // first chunk's, or one the bound drops from) leaves the newest held.
        if self.held.get(&instance).is_some_and(|(held, _)| *held > number) {
            return;
        }
        if self.held.len() >= FILLED_SEGMENTS_HELD && !self.held.contains_key(&instance) {
            let other = self.held.keys().next().copied();
            if let Some(other) = other {
                self.held.remove(&other);
            }
        }
        self.held.insert(instance, (number, value));
    }

    /// Lets go of the segment of `instance`, which will not write history soon (it finished)
    /// or any more (it was removed).
    pub(crate) fn forget(&mut self, instance: InstanceId) {
        self.held.remove(&instance);
    }

    /// How many instances have a segment held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// The number of the segment held for `instance`, and the chunks in it.
    #[cfg(test)]
    pub(crate) fn held_of(&self, instance: InstanceId) -> Option<(u64, usize)> {
        let (number, value) = self.held.get(&instance)?;
        Some((*number, pieces(value).count()))
    }
}

impl SegmentWrites {
    /// Adds the chunk of `instance` whose first entry is `first` to its segment (chunks come in
    /// order, each once).
    pub(crate) fn put(
        &mut self,
        read: ReadHistoryKey<'_>,
        instance: InstanceId,
        first: u64,
        entries: &[u8],
    ) -> Result<(), StoreError> {
        let number = fold_span_of(first);
        // A chunk that begins its segment finds it empty: only chunks after it go in it, and the
        // key holds no chunk a build before wrote, which would be this one, stored already.
        let value = if first == number {
            self.segments.entry((instance, number)).or_insert_with(new_segment)
        } else {
            self.segment(read, instance, number)?
        };
        push_piece(value, first, entries);
        Ok(())
    }

    /// Drops the chunk of `instance` whose first entry is `first`: from its segment, or its own
    /// key if a build before wrote it there.
    pub(crate) fn drop_chunk(
        &mut self,
        read: ReadHistoryKey<'_>,
        instance: InstanceId,
        first: u64,
    ) -> Result<(), StoreError> {
        let segment = fold_span_of(first);
        let value = self.segment(read, instance, segment)?;
        let held = pieces(value).find_map(|piece| piece.filter(|(_, piece_first, _)| *piece_first == first));
        match held.map(|(range, ..)| range) {
            Some(range) => {
                value.drain(range);
            }
            None if first != segment => self.removed_old_chunks.push((instance, first)),
            None => {}
        }
        Ok(())
    }

    /// The writes to make, as (instance, key number, value; `None` removes the key).
    pub(crate) fn into_writes(self) -> impl Iterator<Item = (InstanceId, u64, Option<Vec<u8>>)> {
        let segments = self.segments.into_iter().map(|((instance, number), value)| {
            // A segment whose chunks were all dropped is its mark alone.
            let value = (value.len() > 1).then_some(value);
            (instance, number, value)
        });
        let removed = self
            .removed_old_chunks
            .into_iter()
            .map(|(instance, number)| (instance, number, None));
        segments.chain(removed)
    }

    /// A segment's value as this write leaves it so far, read from the store the first time (a
    /// chunk a build before wrote under the segment's key becomes its first).
    fn segment(
        &mut self,
        read: ReadHistoryKey<'_>,
        instance: InstanceId,
        number: u64,
    ) -> Result<&mut Vec<u8>, StoreError> {
        use std::collections::hash_map::Entry;
        match self.segments.entry((instance, number)) {
            Entry::Occupied(held) => Ok(held.into_mut()),
            Entry::Vacant(vacant) => {
                let value = match read(instance, number)? {
                    Some(value) if value.first() == Some(&SEGMENT_MARK) => value,
                    Some(old_chunk) => {
                        let mut value = vec![SEGMENT_MARK];
                        push_piece(&mut value, number, &old_chunk);
                        value
                    }
                    None => new_segment(),
                };
                Ok(vacant.insert(value))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use strata_core::history::HISTORY_FOLD_SPAN;

    /// History keys in memory, as a tree would hold them.
    #[derive(Default)]
    struct Keys(BTreeMap<(InstanceId, u64), Vec<u8>>);

    impl Keys {
        fn read(&self) -> impl Fn(InstanceId, u64) -> Result<Option<Vec<u8>>, StoreError> + '_ {
            |instance, number| Ok(self.0.get(&(instance, number)).cloned())
        }

        fn apply(&mut self, writes: SegmentWrites) {
            for (instance, number, value) in writes.into_writes() {
                match value {
                    Some(value) => self.0.insert((instance, number), value),
                    None => self.0.remove(&(instance, number)),
                };
            }
        }

        /// Every chunk of `instance`, in entry order, as the store reads them.
        fn chunks(&self, instance: InstanceId) -> Vec<(u64, Vec<u8>)> {
            let mut chunks: Vec<(u64, Vec<u8>)> = self
                .0
                .range((instance, 0)..=(instance, u64::MAX))
                .flat_map(|((_, number), value)| chunks_of(*number, value))
                .map(|chunk| (chunk.first, chunk.entries))
                .collect();
            chunks.sort_by_key(|(first, _)| *first);
            chunks
        }
    }

    fn bytes_of(first: u64) -> Vec<u8> {
        vec![0x90 + (first / HISTORY_CHUNK % 16) as u8; 3]
    }

    #[test]
    fn the_first_chunk_has_a_key_of_its_own_and_the_rest_share_one_per_segment() {
        assert_eq!(fold_span_of(0), 0);
        assert_eq!(fold_span_of(8), 8);
        assert_eq!(fold_span_of(8 + 8 * 7), 8);
        assert_eq!(fold_span_of(8 + 8 * 8), 8 + 64);
        let id = InstanceId(3);
        let mut keys = Keys::default();
        for first in (0..200).step_by(HISTORY_CHUNK as usize) {
            let mut writes = SegmentWrites::default();
            writes.put(&mut keys.read(), id, first, &bytes_of(first)).unwrap();
            keys.apply(writes);
        }
        let expected: Vec<(u64, Vec<u8>)> = (0..200).step_by(8).map(|first| (first, bytes_of(first))).collect();
        assert_eq!(keys.chunks(id), expected);
        assert_eq!(
            keys.0.keys().map(|(_, number)| *number).collect::<Vec<_>>(),
            [0, 8, 72, 136],
            "25 chunks in four keys"
        );
        assert_eq!(keys.chunks(InstanceId(4)), Vec::new(), "another instance's");
    }

    #[test]
    fn chunks_written_and_dropped_in_one_write_leave_what_separate_writes_would() {
        let id = InstanceId(1);
        let mut keys = Keys::default();
        let mut writes = SegmentWrites::default();
        for first in [0, 8, 16, 24] {
            writes.put(&mut keys.read(), id, first, &bytes_of(first)).unwrap();
        }
        writes.drop_chunk(&mut keys.read(), id, 8).unwrap();
        keys.apply(writes);
        assert_eq!(
            keys.chunks(id),
            [(0, bytes_of(0)), (16, bytes_of(16)), (24, bytes_of(24))]
        );
        let mut writes = SegmentWrites::default();
        writes.drop_chunk(&mut keys.read(), id, 16).unwrap();
        writes.drop_chunk(&mut keys.read(), id, 24).unwrap();
        keys.apply(writes);
        assert_eq!(keys.chunks(id), [(0, bytes_of(0))]);
        assert_eq!(keys.0.len(), 1, "an emptied segment's key is removed");
    }

    #[test]
    fn the_span_the_bound_drops_at_once_is_one_segment_whose_key_goes() {
        let id = InstanceId(2);
        let mut keys = Keys::default();
        let mut writes = SegmentWrites::default();
        for first in (0..HISTORY_CHUNK + 2 * HISTORY_FOLD_SPAN).step_by(HISTORY_CHUNK as usize) {
            writes.put(&mut keys.read(), id, first, &bytes_of(first)).unwrap();
        }
        keys.apply(writes);
        let mut writes = SegmentWrites::default();
        for first in (HISTORY_CHUNK..HISTORY_CHUNK + HISTORY_FOLD_SPAN).step_by(HISTORY_CHUNK as usize) {
            writes.drop_chunk(&mut keys.read(), id, first).unwrap();
        }
        keys.apply(writes);
        assert_eq!(
            keys.0.keys().map(|(_, number)| *number).collect::<Vec<_>>(),
            [0, HISTORY_CHUNK + HISTORY_FOLD_SPAN],
            "the first chunk's key and the next span's"
        );
        assert_eq!(keys.chunks(id).len() as u64, 1 + HISTORY_FOLD_SPAN / HISTORY_CHUNK);
    }

    #[test]
    fn chunks_a_build_before_wrote_under_their_own_keys_are_read_taken_in_and_dropped() {
        let id = InstanceId(2);
        let mut keys = Keys::default();
        // As builds before kept them: one key per chunk, the plain entries.
        for first in [0, 8, 16, 24] {
            keys.0.insert((id, first), bytes_of(first));
        }
        assert_eq!(keys.chunks(id).len(), 4);
        let mut writes = SegmentWrites::default();
        writes.put(&mut keys.read(), id, 32, &bytes_of(32)).unwrap();
        keys.apply(writes);
        let expected: Vec<(u64, Vec<u8>)> = [0, 8, 16, 24, 32].map(|first| (first, bytes_of(first))).to_vec();
        assert_eq!(keys.chunks(id), expected, "the old chunk at the segment's key taken in");
        let mut writes = SegmentWrites::default();
        for first in [8, 16] {
            writes.drop_chunk(&mut keys.read(), id, first).unwrap();
        }
        keys.apply(writes);
        assert_eq!(
            keys.chunks(id),
            [(0, bytes_of(0)), (24, bytes_of(24)), (32, bytes_of(32))]
        );
        assert_eq!(
            keys.0.keys().map(|(_, number)| *number).collect::<Vec<_>>(),
            [0, 8, 24],
            "16's own key removed"
        );
    }

    #[test]
    fn a_chunk_that_begins_its_segment_is_written_without_reading_the_segment() {
        let id = InstanceId(6);
        let mut keys = Keys::default();
        let mut reads: Vec<u64> = Vec::new();
        for first in (0..88).step_by(HISTORY_CHUNK as usize) {
            let mut writes = SegmentWrites::default();
            let mut read = |instance: InstanceId, number: u64| {
                reads.push(first);
                Ok(keys.0.get(&(instance, number)).cloned())
            };
            writes.put(&mut read, id, first, &bytes_of(first)).unwrap();
            keys.apply(writes);
        }
        let expected: Vec<(u64, Vec<u8>)> = (0..88).step_by(8).map(|first| (first, bytes_of(first))).collect();
        assert_eq!(keys.chunks(id), expected);
        let read_for: Vec<u64> = (16..72).step_by(8).chain([80]).collect();
        assert_eq!(reads, read_for, "0, 8 and 72 begin their segments");
    }

    #[test]
    fn a_filled_segment_is_given_back_once_for_its_own_number_and_the_held_are_bounded() {
        let id = InstanceId(9);
        let mut filled = FilledSegments::default();
        filled.keep(id, 8, Some(vec![SEGMENT_MARK, 1]));
        assert_eq!(filled.take(id, 72), None, "another segment of the instance");
        assert_eq!(filled.take(InstanceId(10), 8), None, "another instance");
        assert_eq!(filled.take(id, 8), Some(vec![SEGMENT_MARK, 1]));
        assert_eq!(
            filled.take(id, 8),
            None,
            "taken out: a write gives it back only once durable"
        );
        filled.keep(id, 8, Some(vec![SEGMENT_MARK, 2]));
        filled.keep(id, 0, Some(vec![SEGMENT_MARK, 3]));
        assert_eq!(filled.take(id, 0), None, "the newest segment stays held");
        filled.keep(id, 72, None);
        assert_eq!(filled.len(), 1, "removing another segment leaves the held one");
        filled.keep(id, 8, None);
        assert_eq!(filled.len(), 0, "a removed segment is not held");
        for instance in 0..FILLED_SEGMENTS_HELD as u64 + 10 {
            filled.keep(InstanceId(instance), 8, Some(vec![SEGMENT_MARK]));
        }
        assert_eq!(filled.len(), FILLED_SEGMENTS_HELD);
        filled.forget(InstanceId(FILLED_SEGMENTS_HELD as u64 + 9));
        assert_eq!(filled.len(), FILLED_SEGMENTS_HELD - 1, "the newest is held, and let go");
    }

    #[test]
    fn a_segment_cut_short_keeps_the_chunks_before_the_cut_and_names_the_rest_damaged() {
        let mut value = vec![SEGMENT_MARK];
        push_piece(&mut value, 8, &bytes_of(8));
        push_piece(&mut value, 16, &bytes_of(16));
        let read = chunks_of(8, &value[..value.len() - 2]);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].entries, bytes_of(8));
        assert_eq!(read[1].first, 16);
        assert_eq!(read[1].entries, [SEGMENT_MARK], "does not decode as entries");
    }
}
