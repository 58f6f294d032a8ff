//! Whole numbers in request bodies as JSON Schema counts them: `3` and `3.0` alike (the document
//! calls them `integer`, which both are), where serde would refuse the second.

use serde::{de::Error as _, Deserialize, Deserializer, Serialize};

/// A whole number from 0, written `3` or `3.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Whole(pub u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Whole, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        number
            .as_u64()
            .or_else(|| {
                number
                    .as_f64()
                    .filter(|value| value.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(value))
                    .map(|value| value as u64)
            })
            .map(Whole)
            .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number from 0")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_are_whole_numbers_and_others_are_refused() {
        let read = |text: &str| serde_json::from_str::<Whole>(text).map(|whole| whole.0);
        assert_eq!(read("3").unwrap(), 3);
        assert_eq!(read("3.0").unwrap(), 3);
        assert_eq!(read("1e3").unwrap(), 1000);
        for wrong in ["3.5", "-1", "-1.0", "\"3\"", "1e300"] {
            assert!(read(wrong).is_err(), "{wrong}");
        }
    }
}
