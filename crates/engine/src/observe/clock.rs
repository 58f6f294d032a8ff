//! The engine's clock: every time the engine persists or waits for — durable sleeps, signal
//! timeouts, retry backoff, schedules, metrics windows, rollout holds — is read from it. The
//! system clock in production; a manual clock in tests, so that a three-day sleep or a ten-minute
//! hold passes when the test says so, not by sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// A receiver that changes whenever the clock jumps (a manual clock advanced); the system
    /// clock never signals, the engine re-evaluates on its own tick instead.
    fn jumps(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis_saturating)
    }
}

pub(crate) use strata_core::time::{deadline_after, millis_saturating};

/// A clock that only moves when told to: for tests of holds, windows and rollouts.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicU64,
    jumped: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: AtomicU64::new(start_ms),
            jumped: watch::Sender::new(start_ms),
        }
    }

    /// A clock standing at the system clock's now.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward by `by` and wakes whoever watches it.
    pub fn advance(&self, by: Duration) {
        let by = millis_saturating(by);
        let before = self
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| Some(now.saturating_add(by)))
            .unwrap_or_else(|now| now);
        self.jumped.send_replace(before.saturating_add(by));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::Acquire)
    }

    fn jumps(&self) -> Option<watch::Receiver<u64>> {
        Some(self.jumped.subscribe())
    }
}

/// Resolves when the clock behind `jumps` jumps; never, for a clock that does not jump.
pub(crate) async fn jumped(jumps: &mut Option<watch::Receiver<u64>>) {
    match jumps.as_mut() {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_deadline_is_never_before_now_and_exact_when_it_fits(now in any::<u64>(), seconds in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let duration = Duration::new(seconds, nanos);
            let deadline = deadline_after(now, duration);
            prop_assert!(deadline >= now);
            let exact = u128::from(now) + duration.as_millis();
            prop_assert_eq!(u128::from(deadline), exact.min(u128::from(u64::MAX)));
        }
    }

    #[test]
    fn the_longest_durations_saturate_at_the_horizon() {
        assert_eq!(millis_saturating(Duration::MAX), u64::MAX);
        assert_eq!(deadline_after(1_000, Duration::MAX), u64::MAX);
        let clock = ManualClock::new(u64::MAX - 5);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now_ms(), u64::MAX);
    }
}
