//! The stored bytes' shared rules: what an encoding failure says, the mark a store leaves in
//! place of a record it found damaged, so that every reader of records recognises one, and how a
//! record a newer build wrote is read ([`AllowTrailing`]).

use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A record or value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not encode {what}: {message}")]
pub struct EncodeError {
    /// What was encoded.
    pub what: &'static str,
    /// Why it failed.
    pub message: String,
}

/// The first byte of a record the store found damaged: a MessagePack marker no encoder writes,
/// so nothing that reads records takes it for one.
const DAMAGED_RECORD_MARK: u8 = 0xc1;

/// What a store keeps in place of a record whose bytes it found damaged (a value that fails its
/// checksum): the mark, why (length-prefixed UTF-8), and the bytes as they read. It does not
/// decode as a record: the engine quarantines the instance, and reads say why.
pub fn damaged_record(reason: &str, raw: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(5 + reason.len() + raw.len());
    bytes.push(DAMAGED_RECORD_MARK);
    bytes.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    bytes.extend_from_slice(reason.as_bytes());
    bytes.extend_from_slice(raw);
    bytes
}

/// Why the store found this record damaged, if it is one [`damaged_record`] wrote.
pub fn damaged_record_reason(bytes: &[u8]) -> Option<String> {
    let (&DAMAGED_RECORD_MARK, rest) = bytes.split_first()? else {
        return None;
    };
    let length = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let reason = rest.get(4..4usize.checked_add(length)?)?;
    Some(String::from_utf8_lossy(reason).into_owned())
}

/// A `T` read from a MessagePack array (fields by position) or map (by name) that may hold more
/// than `T` knows: the elements after `T`'s fields, which a newer build appends to a record, are
/// skipped (a map's unknown names already are). So a worker that is not upgraded yet reads the
/// records an upgraded one wrote, as long as new fields go at the end. Fields missing at the end
/// take their `#[serde(default)]`, as they do without this.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowTrailing<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for AllowTrailing<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TrailingVisitor(PhantomData))
    }
}

/// Reads `T` from the array or map at hand, then skips what is left of the array.
struct TrailingVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for TrailingVisitor<T> {
    type Value = AllowTrailing<T>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a record as an array (by position) or a map (by name)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Self::Value, A::Error> {
        let value = T::deserialize(SeqAccessDeserializer::new(&mut sequence))?;
        while sequence.next_element::<IgnoredAny>()?.is_some() {}
        Ok(AllowTrailing(value))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(AllowTrailing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Known {
        number: u32,
        name: String,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(serde::Serialize)]
    struct Newer {
        number: u32,
        name: String,
        tags: Vec<String>,
        added: (u64, String),
        added_later: Vec<u8>,
    }

    fn read(bytes: &[u8]) -> Result<Known, rmp_serde::decode::Error> {
        crate::instance::decode_stored::<AllowTrailing<Known>>(bytes).map(|read| read.0)
    }

    #[test]
    fn fields_a_newer_build_appends_are_skipped_by_position_and_by_name() {
        let newer = Newer {
            number: 7,
            name: "seven".to_string(),
            tags: vec!["a".to_string()],
            added: (1, "x".to_string()),
            added_later: vec![1, 2, 3],
        };
        let known = Known {
            number: 7,
            name: "seven".to_string(),
            tags: vec!["a".to_string()],
        };
        let mut by_position = Vec::new();
        rmp_serde::encode::write(&mut by_position, &newer).unwrap();
        assert!(
            crate::instance::decode_stored::<Known>(&by_position).is_err(),
            "without it, a longer array is refused"
        );
        assert_eq!(read(&by_position).unwrap(), known);
        assert_eq!(read(&rmp_serde::to_vec_named(&newer).unwrap()).unwrap(), known);
    }

    #[test]
    fn fields_missing_at_the_end_take_their_default_and_damage_is_still_an_error() {
        let mut older = Vec::new();
        rmp_serde::encode::write(&mut older, &(7u32, "seven")).unwrap();
        assert_eq!(
            read(&older).unwrap(),
            Known {
                number: 7,
                name: "seven".to_string(),
                tags: Vec::new()
            }
        );
        assert!(read(&older[..older.len() - 2]).is_err(), "cut short");
        let mut wrong = Vec::new();
        rmp_serde::encode::write(&mut wrong, &("seven", 7u32)).unwrap();
        assert!(read(&wrong).is_err(), "a field of the wrong type");
        assert!(read(&[0xc1]).is_err());
    }
}
