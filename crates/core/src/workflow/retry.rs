//! Retry policy of one step: how many attempts, how long between them, how long each may take.

use std::time::Duration;

/// How a step is retried when an attempt fails, panics or times out.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first; 1 means no retry.
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Factor applied to the wait after every further failed attempt.
    pub backoff_multiplier: f64,
    /// Upper bound of the wait between attempts.
    pub max_backoff: Duration,
    /// Time limit of one attempt; an attempt that takes longer counts as failed.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            backoff_multiplier: 2.0,
            max_backoff: Duration::from_secs(60),
            attempt_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn no_retry() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// A policy with `max_attempts` attempts and exponential backoff starting at `initial_backoff`.
    pub fn exponential(max_attempts: u32, initial_backoff: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            ..RetryPolicy::default()
        }
    }

    /// Sets the time limit of one attempt.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Sets the upper bound of the wait between attempts.
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The wait before attempt number `next_attempt` (2 for the first retry): the initial
    /// backoff times the multiplier per further retry, never more than `max_backoff`. Any
    /// durations and multiplier (huge, zero, NaN) give a wait within `0..=max_backoff`.
    pub fn backoff_before(&self, next_attempt: u32) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(64) as i32;
        // `max` also turns a NaN multiplier into 1.
        let factor = self.backoff_multiplier.max(1.0).powi(exponent);
        let wait = self.initial_backoff.as_secs_f64() * factor;
        if wait.is_nan() || wait >= self.max_backoff.as_secs_f64() {
            // Reached the cap (or NaN from 0 × infinity): the cap, exactly.
            return self.max_backoff;
        }
        Duration::try_from_secs_f64(wait).unwrap_or(self.max_backoff)
    }

    /// Whether another attempt is allowed after attempt number `attempt` failed.
    pub fn allows_retry_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let policy =
            RetryPolicy::exponential(10, Duration::from_millis(100)).with_max_backoff(Duration::from_millis(500));
        assert_eq!(policy.backoff_before(2), Duration::from_millis(100));
        assert_eq!(policy.backoff_before(3), Duration::from_millis(200));
        assert_eq!(policy.backoff_before(4), Duration::from_millis(400));
        assert_eq!(policy.backoff_before(5), Duration::from_millis(500));
        assert!(policy.allows_retry_after(9));
        assert!(!policy.allows_retry_after(10));
    }

    #[test]
    fn extreme_policies_give_a_wait_within_the_cap_instead_of_panicking() {
        let huge = RetryPolicy::exponential(100, Duration::MAX).with_max_backoff(Duration::MAX);
        for attempt in [2, 3, 50, 100, u32::MAX] {
            assert_eq!(huge.backoff_before(attempt), Duration::MAX, "attempt {attempt}");
        }
        let mut steep = RetryPolicy::exponential(100, Duration::from_secs(1)).with_max_backoff(Duration::MAX);
        steep.backoff_multiplier = f64::INFINITY;
        assert_eq!(steep.backoff_before(2), Duration::from_secs(1));
        assert_eq!(steep.backoff_before(3), Duration::MAX);
        let mut odd = RetryPolicy::exponential(100, Duration::ZERO).with_max_backoff(Duration::from_secs(5));
        odd.backoff_multiplier = f64::INFINITY;
        assert_eq!(
            odd.backoff_before(3),
            Duration::from_secs(5),
            "0 × infinity is NaN: the cap"
        );
        odd.backoff_multiplier = f64::NAN;
        assert_eq!(odd.backoff_before(3), Duration::ZERO, "a NaN multiplier counts as 1");
    }

    #[test]
    fn no_retry_allows_a_single_attempt() {
        assert!(!RetryPolicy::no_retry().allows_retry_after(1));
    }
}
