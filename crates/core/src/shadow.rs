//! Shadow pairs: a real instance of a rollout's stable version and the shadow instance of its
//! candidate that ran beside it with the same input, compared once both have finished.
//!
//! Owns the pair record ([`ShadowPair`]), the comparison of two finished records
//! ([`compare`]: statuses, then outputs by the candidate's comparator or, by default, the stored
//! outputs' equality), and the short diff of two stored outputs ([`output_diff`]), read from
//! MessagePack without knowing their types.

use std::fmt::Write;

use semver::Version;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::instance::{InstanceId, InstanceRecord, InstanceStatus, Phase};
use crate::measure::MeasureTotals;

/// A compared pair, as stored (by rollout and real instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowPair {
    /// The rollout whose shadow stage ran the shadow.
    pub rollout: String,
    /// The real instance (the stable version's).
    pub real: InstanceId,
    /// The shadow instance (the candidate's).
    pub shadow: InstanceId,
    /// The stable version.
    pub stable: Version,
    /// The candidate.
    pub candidate: Version,
    /// When the pair was compared (ms of the engine's clock).
    pub compared_ms: u64,
    /// Whether they agree: the same status and, when both completed, outputs the comparator
    /// accepts.
    pub matched: bool,
    /// For a mismatch: what differs, in short.
    pub diff: Option<String>,
    /// How the real instance ended.
    pub real_status: InstanceStatus,
    /// How the shadow ended.
    pub shadow_status: InstanceStatus,
    /// The real instance's start to finish (ms).
    pub real_took_ms: u64,
    /// The shadow's start to finish (ms).
    pub shadow_took_ms: u64,
    /// What the real instance's steps recorded.
    pub real_measures: MeasureTotals,
    /// What the shadow's steps recorded.
    pub shadow_measures: MeasureTotals,
}

/// Compares two stored outputs: `Ok` when they agree, else what differs.
pub type OutputComparator = dyn Fn(&[u8], &[u8]) -> Result<(), String> + Send + Sync;

/// The pair of `real` and its `shadow`, both finished, compared at `now_ms` with `comparator`
/// (the candidate's; `None`: the stored outputs must be equal).
pub fn compare(
    rollout: &str,
    real: &InstanceRecord,
    shadow: &InstanceRecord,
    comparator: Option<&OutputComparator>,
    now_ms: u64,
) -> ShadowPair {
    let (real_status, shadow_status) = (
        InstanceStatus::of_phase(&real.phase),
        InstanceStatus::of_phase(&shadow.phase),
    );
    let diff = match (&real.phase, &shadow.phase) {
        (Phase::Completed { output: ours }, Phase::Completed { output: theirs }) => match comparator {
            Some(comparator) => comparator(ours, theirs).err(),
            None => output_diff(ours, theirs),
        },
        _ if real_status == shadow_status => None,
        _ => Some(format!(
            "the stable {} but the candidate {}",
            ended_as(&real.phase),
            ended_as(&shadow.phase)
        )),
    };
    ShadowPair {
        rollout: rollout.to_string(),
        real: real.id,
        shadow: shadow.id,
        stable: real.key.version.clone(),
        candidate: shadow.key.version.clone(),
        compared_ms: now_ms,
        matched: diff.is_none(),
        diff,
        real_status,
        shadow_status,
        real_took_ms: real.updated_at_ms.saturating_sub(real.created_at_ms),
        shadow_took_ms: shadow.updated_at_ms.saturating_sub(shadow.created_at_ms),
        real_measures: real.measures.clone(),
        shadow_measures: shadow.measures.clone(),
    }
}

fn ended_as(phase: &Phase) -> String {
    match phase {
        Phase::Completed { .. } => "completed".to_string(),
        Phase::Failed { reason } => format!("failed ({reason})"),
        Phase::Cancelled => "was cancelled".to_string(),
        other => format!("is {:?}", InstanceStatus::of_phase(other)).to_lowercase(),
    }
}

/// How many differences a diff names before it says how many more there are.
const DIFFERENCES_SHOWN: usize = 3;

/// What differs between two stored outputs (MessagePack), as `path: stable → candidate` for the
/// first few differing leaves; `None` when they are equal.
pub fn output_diff(stable: &[u8], candidate: &[u8]) -> Option<String> {
    if stable == candidate {
        return None;
    }
    let read = |bytes: &[u8]| crate::instance::decode_stored::<Value>(bytes).ok();
    let (Some(ours), Some(theirs)) = (read(stable), read(candidate)) else {
        return Some(format!(
            "the outputs differ ({} and {} bytes, not both readable)",
            stable.len(),
            candidate.len()
        ));
    };
    let mut differences = Vec::new();
    ours.differences(&theirs, "", &mut differences);
    if differences.is_empty() {
        // Equal values written differently (field order): not a difference.
        return None;
    }
    let mut text = differences
        .iter()
        .take(DIFFERENCES_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if differences.len() > DIFFERENCES_SHOWN {
        let _ = write!(text, "; and {} more", differences.len() - DIFFERENCES_SHOWN);
    }
    Some(text)
}

/// A MessagePack value of any shape, for diffs.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Integer(i128),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Value {
    fn show(&self) -> String {
        match self {
            Value::Nil => "null".to_string(),
            Value::Bool(value) => value.to_string(),
            Value::Integer(value) => value.to_string(),
            Value::Float(value) => value.to_string(),
            Value::Text(text) => format!("{text:?}"),
            Value::Bytes(bytes) => format!("{} bytes", bytes.len()),
            Value::List(items) => format!("a list of {}", items.len()),
            Value::Map(entries) => format!("a map of {}", entries.len()),
        }
    }

    fn key_text(&self) -> String {
        match self {
            Value::Text(text) => text.clone(),
            other => other.show(),
        }
    }

    /// Adds each differing leaf between `self` (the stable's) and `other` under `path`.
    fn differences(&self, other: &Value, path: &str, found: &mut Vec<String>) {
        let at = |path: &str| {
            if path.is_empty() {
                "output".to_string()
            } else {
                path.to_string()
            }
        };
        match (self, other) {
            (Value::Map(ours), Value::Map(theirs)) => {
                for (key, value) in ours {
                    let child = if path.is_empty() {
                        key.key_text()
                    } else {
                        format!("{path}.{}", key.key_text())
                    };
                    match theirs.iter().find(|(their_key, _)| their_key == key) {
                        Some((_, their_value)) => value.differences(their_value, &child, found),
                        None => found.push(format!("{child}: {} → absent", value.show())),
                    }
                }
                for (key, value) in theirs {
                    if !ours.iter().any(|(our_key, _)| our_key == key) {
                        let child = if path.is_empty() {
                            key.key_text()
                        } else {
                            format!("{path}.{}", key.key_text())
                        };
                        found.push(format!("{child}: absent → {}", value.show()));
                    }
                }
            }
            (Value::List(ours), Value::List(theirs)) if ours.len() == theirs.len() => {
                for (index, (value, their_value)) in ours.iter().zip(theirs).enumerate() {
                    value.differences(their_value, &format!("{}[{index}]", at(path)), found);
                }
            }
            (ours, theirs) if ours != theirs => {
                found.push(format!("{}: {} → {}", at(path), ours.show(), theirs.show()))
            }
            _ => {}
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("any MessagePack value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Integer(i128::from(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Integer(i128::from(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Ok(Value::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::Text(value.to_string()))
    }

    fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(value.to_vec()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Quote {
        total: u64,
        lines: Vec<&'static str>,
        note: Option<&'static str>,
    }

    fn stored<T: Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    #[test]
    fn a_diff_names_the_differing_fields_with_both_values() {
        let stable = stored(&Quote {
            total: 120,
            lines: vec!["a", "b"],
            note: None,
        });
        let candidate = stored(&Quote {
            total: 95,
            lines: vec!["a", "c"],
            note: Some("cheaper"),
        });
        assert_eq!(
            output_diff(&stable, &candidate).unwrap(),
            "total: 120 → 95; lines[1]: \"b\" → \"c\"; note: null → \"cheaper\""
        );
        assert_eq!(output_diff(&stable, &stable), None);
        assert_eq!(output_diff(&stored(&7u32), &stored(&8u32)).unwrap(), "output: 7 → 8");
        assert!(output_diff(&stable, &[0xc1]).unwrap().contains("not both readable"));
    }

    #[test]
    fn a_long_diff_says_how_many_more_differences_there_are() {
        let stable = stored(&vec![1, 2, 3, 4, 5]);
        let candidate = stored(&vec![9, 9, 9, 9, 9]);
        assert_eq!(
            output_diff(&stable, &candidate).unwrap(),
            "output[0]: 1 → 9; output[1]: 2 → 9; output[2]: 3 → 9; and 2 more"
        );
    }
}
