//! "Did you mean": the nearest known name to a mistyped one, for the messages that refuse an
//! unknown field of a request body or a config section.

/// The known name nearest to `given`, if one is near enough to be a typo of it (at most a third
/// of its letters differ, and at least one).
pub fn nearest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = (given.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|name| (strsim::damerau_levenshtein(given, name), name))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// A deserializer's message with the nearest known name added where it refuses an unknown field
/// or variant (serde's "unknown field `x`, expected one of `a`, `b`" or "expected `a` or `b`").
pub fn explain_unknown(message: &str) -> String {
    let Some((given, expected)) = ["unknown field `", "unknown variant `", "unknown value `"]
        .iter()
        .find_map(|marker| {
            let start = message.find(marker)? + marker.len();
            let rest = &message[start..];
            let end = rest.find('`')?;
            Some((&rest[..end], &rest[end + 1..]))
        })
    else {
        return message.to_string();
    };
    // The expected names: every `quoted` word up to the end of that clause.
    let clause = expected.split(['\n', ';']).next().unwrap_or("");
    let known: Vec<&str> = clause.split('`').skip(1).step_by(2).collect();
    match nearest(given, known) {
        Some(name) => format!("{} (did you mean `{name}`?)", message.trim_end()),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_nearest_known_name_and_a_stranger_gets_none() {
        let gates = ["max_error_rate_increase", "max_latency_multiplier", "min_success_rate"];
        assert_eq!(nearest("min_sucess_rate", gates), Some("min_success_rate"));
        assert_eq!(nearest("max_error_rate", gates), None, "too far from any");
        assert_eq!(nearest("colour", ["color", "name"]), Some("color"));
        assert_eq!(nearest("zzz", ["color"]), None);
    }

    #[test]
    fn serde_messages_get_the_suggestion_and_others_are_left_alone() {
        let serde = "gates: unknown field `min_sucess_rate`, expected one of `max_error_rate_increase`, `min_success_rate` at line 1 column 40";
        assert_eq!(
            explain_unknown(serde),
            format!("{serde} (did you mean `min_success_rate`?)")
        );
        let variant = "unknown variant `move_bak`, expected `keep_running` or `move_back`";
        assert!(explain_unknown(variant).ends_with("(did you mean `move_back`?)"));
        let far = "unknown field `colour_scheme`, expected `name`";
        assert_eq!(explain_unknown(far), far);
        assert_eq!(explain_unknown("expected a number"), "expected a number");
    }
}
