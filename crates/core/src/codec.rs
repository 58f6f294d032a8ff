//! The stored bytes' shared rules: what an encoding failure says, and the mark a store leaves in
//! place of a record it found damaged, so that every reader of records recognises one.

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
