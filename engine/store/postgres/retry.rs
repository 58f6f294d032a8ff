//! What counts as a broken connection, and how long and how often a call is tried again over a
//! new one: the store rides out a terminated backend, a restarting server or a dropped network
//! without the engine noticing more than a pause.

use std::time::Duration;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// How long a call is retried over new connections before its error is returned.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(15);
/// The first pause between tries; each next one doubles, up to `LONGEST_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Whether `error` means the connection, not the request, failed: the same request may work
/// over a new connection.
pub(crate) fn connection_broke(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        // No answer from the server: an I/O error under the client (refused, reset, timed out).
        None => {
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                if cause.is::<std::io::Error>() {
                    return true;
                }
                source = cause.source();
            }
            false
        }
    }
}

/// Whether a pool error means no connection could be had right now.
pub(crate) fn pool_broke(error: &PoolError) -> bool {
    match error {
        PoolError::Backend(error) => connection_broke(error),
        PoolError::Timeout(_) => true,
        _ => false,
    }
}

/// Whether a call that failed with `error` may be tried again over a new connection.
pub(crate) fn retryable(error: &StoreError) -> bool {
    matches!(error, StoreError::ConnectionLost { .. })
}

/// Whether the database is in an outage: a call ran out of its `RETRY_FOR` window and no call
/// has succeeded since. Calls made meanwhile try once and fail at once with `ConnectionLost`, so
/// that a caller waits at most one window however many calls queue behind one another (a start
/// behind a group commit riding out the outage), while the engine goes on trying at its own
/// pace (heartbeats, steps' next attempts). The first call that succeeds ends it.
#[derive(Default)]
pub(crate) struct Outage {
    /// When the call that ran out of its window began retrying, while the outage lasts.
    since: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl Outage {
    /// The retries of a call starting now: the whole window, or one try during an outage.
    pub(crate) fn retry(&self) -> Retry {
        match *self.since.lock() {
            Some(since) => Retry {
                began: since,
                give_up_after: Duration::ZERO,
                pause: FIRST_PAUSE,
                tries: 0,
            },
            None => Retry {
                began: tokio::time::Instant::now(),
                give_up_after: RETRY_FOR,
                pause: FIRST_PAUSE,
                tries: 0,
            },
        }
    }

    /// Takes in a call's result: a `ConnectionLost` (the call ran out of its window) begins an
    /// outage, said once; a success ends one, said once.
    pub(crate) fn observe<T>(&self, result: &Result<T, StoreError>) {
        let mut since = self.since.lock();
        match result {
            Ok(_) => {
                if let Some(began) = since.take() {
                    tracing::info!(
                        unreachable_ms = began.elapsed().as_millis() as u64,
                        "the database answers again"
                    );
                }
            }
            Err(StoreError::ConnectionLost { retried_for, .. }) if since.is_none() => {
                let now = tokio::time::Instant::now();
                *since = Some(now.checked_sub(*retried_for).unwrap_or(now));
                tracing::warn!(
                    window_ms = RETRY_FOR.as_millis() as u64,
                    "the database did not answer within the retry window: calls fail at once with ConnectionLost until it answers again; the engine goes on trying"
                );
            }
            Err(_) => {}
        }
    }
}

/// The tries of one call: pauses growing from `FIRST_PAUSE`, until `give_up_after` has passed
/// since `began`.
pub(crate) struct Retry {
    began: tokio::time::Instant,
    give_up_after: Duration,
    pause: Duration,
    tries: u32,
}

impl Retry {
    /// Runs `attempt` until it succeeds, fails other than by a broken connection, or the time is
    /// up (the time of every call sharing this `Retry`).
    pub(crate) async fn until_done<T, Work>(&mut self, mut attempt: impl FnMut() -> Work) -> Result<T, StoreError>
    where
        Work: std::future::Future<Output = Result<T, StoreError>>,
    {
        loop {
            let mut error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !self.again(&mut error).await {
                return Err(error);
            }
        }
    }

    /// After a failed try: waits the next pause and says true if the call is to be tried again,
    /// or says false if `error` is not a broken connection or the time is up. The error kept
    /// then says how long the store tried.
    pub(crate) async fn again(&mut self, error: &mut StoreError) -> bool {
        let StoreError::ConnectionLost {
            retried_for,
            operation,
            reason,
        } = error
        else {
            return false;
        };
        let elapsed = self.began.elapsed();
        if elapsed >= self.give_up_after {
            *retried_for = elapsed;
            return false;
        }
        self.tries += 1;
        if self.tries == 1 {
            tracing::warn!(operation = *operation, %reason, "the database connection broke; retrying over a new one");
        }
        tokio::time::sleep(self.pause.min(self.give_up_after - elapsed)).await;
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        true
    }
}
