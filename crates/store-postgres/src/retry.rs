//! What counts as a broken connection or a read-only server, and how long and how often a call
//! is tried again over a new connection: the store rides out a terminated backend, a restarting
//! server, a dropped network or a failover without the engine noticing more than a pause; past
//! the retry window, an outage makes calls fail at once until the database answers again.

use std::time::Duration;

use deadpool_postgres::{Pool, PoolError};
use tokio_postgres::error::SqlState;

use strata_store::{BackendFailure, StoreError};

/// How long a call is retried over new connections before its error is returned.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(15);
/// The first pause between tries; each next one doubles, up to `LONGEST_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// How tokio-postgres words an error for a protocol message out of place.
const UNEXPECTED_MESSAGE: &str = "unexpected message from server";

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
        // No answer from the server: an I/O error under the client (refused, reset, timed out),
        // or a message the protocol did not expect there (seen through a pooler reusing a
        // server connection): tokio-postgres drops such a connection, and says so only in
        // words, its error kinds being private.
        None => {
            if error.to_string() == UNEXPECTED_MESSAGE {
                return true;
            }
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

/// Whether `error` says the server takes no writes (`25006`, a read-only transaction): a replica,
/// or a primary demoted in a failover. The connection is of no use for writing: a new one may
/// reach the new primary (a multi-host URL with `target_session_attrs=read-write`).
pub(crate) fn read_only(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
}

/// The connection broke while trying to `operation` (not retried yet).
pub(crate) fn connection_lost(operation: &str, reason: &str) -> StoreError {
    StoreError::backend(
        BackendFailure::Unreachable {
            retried_for: Duration::ZERO,
        },
        format!("lost the connection to the database while trying to {operation} ({reason}): check that the PostgreSQL server is up and reachable"),
    )
}

/// The server took no write while trying to `operation` (not retried yet).
pub(crate) fn read_only_failure(operation: &str) -> StoreError {
    StoreError::backend(
        BackendFailure::ReadOnly {
            retried_for: Duration::ZERO,
        },
        format!("the database is read-only (a replica, or a failover in progress?) while trying to {operation}: point the URL at the primary, or list every host with target_session_attrs=read-write"),
    )
}

/// How long a call that could not reach or write the database retried, if that is its error.
fn retried_for(error: &mut StoreError) -> Option<&mut Duration> {
    match error {
        StoreError::Backend {
            kind: BackendFailure::Unreachable { retried_for } | BackendFailure::ReadOnly { retried_for },
            ..
        } => Some(retried_for),
        _ => None,
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

/// Whether the database is in an outage: a call ran out of its `RETRY_FOR` window and no call
/// has succeeded since. Calls made meanwhile try once and fail at once (`Unreachable`,
/// `ReadOnly`), so that a caller waits at most one window however many calls queue behind one another (a start
/// behind a group commit riding out the outage), while the engine goes on trying at its own
/// pace (heartbeats, steps' next attempts). The first call that succeeds ends it.
pub(crate) struct Outage {
    /// When the call that ran out of its window began retrying, while the outage lasts.
    since: parking_lot::Mutex<Option<tokio::time::Instant>>,
    /// Whether some call failed to reach or write the database since the last success (always
    /// while `since` is set): the first such failure of an episode is the one warned of, and
    /// without it a call reads no lock.
    troubled: std::sync::atomic::AtomicBool,
    /// The store's connections, which a read-only answer empties of its idle ones.
    pool: Pool,
}

impl Outage {
    /// No outage yet, over `pool`'s connections.
    pub(crate) fn new(pool: Pool) -> Outage {
        Outage {
            since: parking_lot::Mutex::new(None),
            troubled: std::sync::atomic::AtomicBool::new(false),
            pool,
        }
    }

    /// A call found the database unreachable or read-only and retries: warned of once per
    /// episode.
    fn trouble(&self, error: &StoreError) {
        if !self.troubled.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tracing::warn!(%error, "the database could not be reached or written; retrying over new connections");
        }
    }

    /// The retries of a call starting now: the whole window, or one try during an outage.
    pub(crate) fn retry(self: &std::sync::Arc<Self>) -> Retry {
        // An outage is always preceded by trouble: without it, no lock on the way of a call.
        let outage = match self.troubled.load(std::sync::atomic::Ordering::Acquire) {
            true => *self.since.lock(),
            false => None,
        };
        let (began, give_up_after) = match outage {
            Some(since) => (since, Duration::ZERO),
            None => (tokio::time::Instant::now(), RETRY_FOR),
        };
        Retry {
            began,
            give_up_after,
            pause: FIRST_PAUSE,
            flushed: false,
            outage: self.clone(),
        }
    }

    /// Takes in a call's result: an `Unreachable` or `ReadOnly` after a whole window begins an
    /// outage, said once; a success ends one (and any trouble short of one), said once.
    pub(crate) fn observe<T>(&self, result: &Result<T, StoreError>) {
        if result.is_ok() && !self.troubled.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut since = self.since.lock();
        match result {
            Ok(_) => {
                if self.troubled.swap(false, std::sync::atomic::Ordering::AcqRel) && since.is_none() {
                    tracing::info!("the database is written again");
                }
                if let Some(began) = since.take() {
                    tracing::info!(
                        unreachable_ms = began.elapsed().as_millis() as u64,
                        "the database answers again"
                    );
                }
            }
            Err(
                error @ StoreError::Backend {
                    kind: BackendFailure::Unreachable { retried_for } | BackendFailure::ReadOnly { retried_for },
                    ..
                },
            ) if since.is_none() && *retried_for >= RETRY_FOR => {
                let now = tokio::time::Instant::now();
                *since = Some(now.checked_sub(*retried_for).unwrap_or(now));
                self.troubled.store(true, std::sync::atomic::Ordering::Release);
                tracing::warn!(
                    window_ms = RETRY_FOR.as_millis() as u64,
                    %error,
                    "the database could not be reached or written within the retry window: calls fail at once with this error until it can; the engine goes on trying"
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
    /// Whether this call has emptied the pool of read-only sessions already.
    flushed: bool,
    outage: std::sync::Arc<Outage>,
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
        if error
            .backend_failure()
            .is_some_and(|kind| matches!(kind, BackendFailure::ReadOnly { .. }))
        {
            // The failed try's connection is back in the pool by now: it and every idle one
            // may be sessions on the old primary, read-only for good. New ones find the
            // writable server; the first time, at once, whatever the window (the server may
            // have been writable for a while, and only these sessions not).
            self.outage.pool.retain(|_, _| false);
            if !self.flushed {
                self.flushed = true;
                return true;
            }
        }
        let Some(retried_for) = retried_for(error) else {
            return false;
        };
        let elapsed = self.began.elapsed();
        if elapsed >= self.give_up_after {
            *retried_for = elapsed;
            return false;
        }
        self.outage.trouble(error);
        tokio::time::sleep(self.pause.min(self.give_up_after - elapsed)).await;
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outage() -> std::sync::Arc<Outage> {
        let config: tokio_postgres::Config = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        let pool = Pool::builder(manager).max_size(1).build().unwrap();
        std::sync::Arc::new(Outage::new(pool))
    }

    fn lost(retried_for: Duration) -> Result<(), StoreError> {
        let mut error = connection_lost("commit", "connection refused");
        if let Some(retried) = super::retried_for(&mut error) {
            *retried = retried_for;
        }
        Err(error)
    }

    #[tokio::test]
    async fn after_a_call_ran_out_of_its_window_calls_try_once_until_one_succeeds() {
        let outage = outage();
        assert_eq!(outage.retry().give_up_after, RETRY_FOR, "no outage: the whole window");
        outage.observe(&lost(Duration::from_millis(10)));
        assert_eq!(outage.retry().give_up_after, RETRY_FOR, "a short failure is no outage");
        outage.observe(&lost(RETRY_FOR));
        let mut retry = outage.retry();
        let mut error = lost(Duration::ZERO).unwrap_err();
        assert!(!retry.again(&mut error).await, "one try during an outage");
        let Some(BackendFailure::Unreachable { retried_for }) = error.backend_failure() else {
            unreachable!()
        };
        assert!(
            retried_for >= RETRY_FOR,
            "says how long the database has been away: {retried_for:?}"
        );
        outage.observe(&Ok(()));
        assert_eq!(outage.retry().give_up_after, RETRY_FOR, "a success ends the outage");
    }

    /// The error tokio-postgres gives when a server answers the startup with a message the
    /// protocol does not expect there (here, ReadyForQuery where authentication belongs).
    async fn unexpected_message_error() -> tokio_postgres::Error {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut length = [0u8; 4];
            socket.read_exact(&mut length).await.unwrap();
            let mut startup = vec![0u8; u32::from_be_bytes(length) as usize - 4];
            socket.read_exact(&mut startup).await.unwrap();
            // ReadyForQuery, idle: 'Z', length 5, 'I'.
            socket.write_all(&[b'Z', 0, 0, 0, 5, b'I']).await.unwrap();
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
        });
        let url = format!("postgres://nobody@{address}/none");
        let Err(error) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
            panic!("the fake server accepted a connection");
        };
        server.abort();
        error
    }

    #[tokio::test]
    async fn a_message_out_of_place_counts_as_a_broken_connection_and_is_tried_again() {
        let error = unexpected_message_error().await;
        assert_eq!(
            error.to_string(),
            UNEXPECTED_MESSAGE,
            "tokio-postgres's wording changed"
        );
        assert!(connection_broke(&error));
        assert!(pool_broke(&PoolError::Backend(error)));
    }

    #[tokio::test]
    async fn a_read_only_answer_is_tried_again_at_once_over_new_connections_even_in_an_outage() {
        let outage = outage();
        outage.observe(&lost(RETRY_FOR));
        let mut retry = outage.retry();
        let mut error = read_only_failure("commit");
        assert!(
            retry.again(&mut error).await,
            "the stale sessions are dropped and tried once more"
        );
        assert!(!retry.again(&mut error).await, "then the outage's single try holds");
    }
}
