//! Times as people read them: now, an age (`3m 20s ago`), a span (`4m 10s`, `850ms`), and a moment before
//! or after now (`in 12m 3s`, `4s ago`).

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Milliseconds since the Unix epoch as an age (`3m 20s ago`).
pub(crate) fn age_of(ms: u64) -> String {
    let seconds = now_ms().saturating_sub(ms) / 1000;
    match seconds {
        0..=59 => format!("{seconds}s ago"),
        60..=3599 => format!("{}m {}s ago", seconds / 60, seconds % 60),
        3600..=86_399 => format!("{}h {}m ago", seconds / 3600, (seconds % 3600) / 60),
        _ => format!("{}d {}h ago", seconds / 86_400, (seconds % 86_400) / 3600),
    }
}

/// Milliseconds as a span: `850ms`, `12.4s`, `4m 10s`, `2h 5m`.
pub(crate) fn span(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000),
        _ => format!("{}h {}m", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

/// A moment (ms since the Unix epoch) from now: `in 12m 3s` ahead, an age behind.
pub(crate) fn relative(ms: u64) -> String {
    match ms.checked_sub(now_ms()) {
        Some(ahead) => format!("in {}", span(ahead)),
        None => age_of(ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_ages_and_moments_read_as_people_say_them() {
        assert_eq!(span(850), "850ms");
        assert_eq!(span(12_400), "12.4s");
        assert_eq!(span(250_000), "4m 10s");
        assert_eq!(span(7_500_000), "2h 5m");
        assert_eq!(age_of(now_ms() - 200_000), "3m 20s ago");
        assert!(
            relative(now_ms() + 90_500).starts_with("in 1m 3"),
            "{}",
            relative(now_ms() + 90_500)
        );
        assert_eq!(relative(now_ms() - 5_000), "5s ago");
    }
}
