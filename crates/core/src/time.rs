//! Time as the engine persists it: whole milliseconds since the Unix epoch, saturating instead of
//! wrapping.

use std::time::Duration;

/// `duration` in whole milliseconds, saturating at `u64::MAX` (585 million years) instead of
/// wrapping: the unit of every persisted time.
pub fn millis_saturating(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The time `duration` after `now_ms` (ms since the Unix epoch), saturating at the clock's
/// horizon (`u64::MAX`): a very long wait stays a very long wait, never a wrap to an early wake.
pub fn deadline_after(now_ms: u64, duration: Duration) -> u64 {
    now_ms.saturating_add(millis_saturating(duration))
}
