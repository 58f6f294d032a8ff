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
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}

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
        let now = self.now.fetch_add(by.as_millis() as u64, Ordering::AcqRel) + by.as_millis() as u64;
        self.jumped.send_replace(now);
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
