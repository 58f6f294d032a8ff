//! The PostgreSQL backend: Strata's records in tables of a database many engine processes can
//! share. Each commit is one transaction; a group of instances' commits is one transaction with
//! one statement per kind of write (rows passed as arrays), so steps per second exceed the
//! server's transactions per second.
//!
//! The `Store` seam is synchronous (it is called from the commit thread and from the engine's
//! synchronous reads), and the async client must not be blocked on inside the caller's tokio
//! runtime. So the store owns a small runtime of its own, where the connection pool lives: a
//! call hands its work to that runtime and waits on a plain channel. The pool replaces a broken
//! connection (killed backend, restarted server) with a new one on the next call.
//!
//! Records are the same MessagePack as on sled; the columns beside them are what the database
//! must query (liveness, version, status, due time, and the claim of a worker).

mod commit;
mod parameters;
mod retry;
mod schema;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use commit::{CommitFailure, Writes};
use parameters::typed;
use retry::{Outage, Retry};

use strata_core::instance::{InstanceId, InstanceRecord, VersionKey, RECORD_FORMAT};
use strata_core::version::VersionStatus;
use strata_store::{
    Applied, AppliedConfig, BackendFailure, Claimed, Cluster, CorruptRecord, DatabaseProblem, IdKind,
    MigrationJobRecord, Op, RecoveredState, SignalRecord, Store, StoreError, StoreStats, StoredHistoryChunk,
    StoredVersion, VersionCounters, Wakeup, WorkerInfo,
};

/// Connections a store keeps at most: the commit thread, reads, and room for a slow one.
const POOL_SIZE: usize = 4;
/// How long a call waits for a connection, or for a new one to be made, before it fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished instances read per round trip while listing.
const PAGE: i64 = 512;
/// How many numbers one `nextval` of an id sequence reserves (the sequences' increment).
const ID_BLOCK: u64 = 1024;

/// The PostgreSQL-backed store.
pub struct PostgresStore {
    /// The runtime the pool and every query run on; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// `user@host:port/database`, for messages.
    target: String,
    /// This process's worker id: the owner of the claims it takes.
    worker_id: String,
    /// Wake-ups from the listening connection, until `Cluster::wakeups` takes them.
    wakeups: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Wakeup>>>,
    applies: AtomicU64,
    /// Numbers this worker's commits and claims, to find them again by their marks.
    sequence: AtomicU64,
    /// Writes whose answer a broken connection lost and that could not be looked up yet.
    unsettled: std::sync::Arc<Unsettled>,
    /// Whether the database is unreachable beyond a call's retry window, as the calls found.
    outage: std::sync::Arc<Outage>,
}

/// What this worker wrote and does not know the fate of, or knows went wrong.
#[derive(Default)]
struct Unsettled {
    /// A commit whose outcome is unknown: looked up before the next commit.
    commit: parking_lot::Mutex<Option<i64>>,
    /// Claims whose answer was lost: the rows they took are taken in by the next claim.
    claims: parking_lot::Mutex<Vec<i64>>,
    /// Signal deliveries answered: their marks are deleted at the next heartbeat.
    delivered: parking_lot::Mutex<Vec<i64>>,
    /// Set when a commit reported failed turned out to have landed.
    diverged: parking_lot::Mutex<Option<String>>,
}

/// The channel on which a delivered signal names its instance, and a commit that wrote
/// instances nobody holds says `CLAIMABLE_PAYLOAD`.
const WAKE_CHANNEL: &str = "strata_wake";

/// The payload announcing instances nobody holds.
const CLAIMABLE_PAYLOAD: &str = "claimable";

/// How long the listener waits for the notification it sends itself after LISTEN (and for its
/// session while another connection holds a transaction open).
const HEARING_CHECK: Duration = Duration::from_secs(2);

/// Listens on `WAKE_CHANNEL` on a connection of its own and forwards each named instance, until
/// nobody receives; reconnects with backoff when the connection drops or LISTEN fails (what is
/// missed meanwhile, the holders' polls find). Says so once per episode (see `ListenRetry`).
/// Each connection is checked first: one that does not keep its server session between
/// transactions (a transaction pooler) or does not hear a notification it sends itself never
/// hears wake-ups, and the listener stops, saying so once: the worker then finds signalled and
/// claimable instances at its heartbeats.
async fn listen(config: tokio_postgres::Config, wakeups: tokio::sync::mpsc::UnboundedSender<Wakeup>) {
    let mut retry = ListenRetry::default();
    while !wakeups.is_closed() {
        let failure = match config.connect(NoTls).await {
            Ok((client, connection)) => {
                let (heard, hearing) = tokio::sync::oneshot::channel();
                let messages = tokio::spawn(forward_wakeups(connection, wakeups.clone(), heard));
                let can_listen = match keeps_its_session(&client, &config).await {
                    Ok(true) => hears_itself(&client, hearing).await,
                    other => other,
                };
                match can_listen {
                    Ok(true) => {
                        if let Some(failures) = retry.listening() {
                            tracing::info!(failures, "listening for wake-ups again");
                        }
                        match messages.await {
                            Ok(Some(error)) => format!("the listening connection failed: {error}"),
                            Ok(None) | Err(_) => "the listening connection was closed".to_string(),
                        }
                    }
                    Ok(false) => {
                        messages.abort();
                        tracing::warn!(
                            database = %describe_target(&config),
                            "wake-ups are not heard over this connection: it does not carry LISTEN/NOTIFY (a transaction pooler, such as PgBouncer with pool_mode = transaction?). Signalled and claimable instances are found at each heartbeat instead; give EngineBuilder::postgres_listen_url a direct connection to the database to hear them at once"
                        );
                        return;
                    }
                    Err(error) => {
                        messages.abort();
                        format!("could not listen: {}", describe(&error))
                    }
                }
            }
            Err(error) => format!("could not open the listening connection: {}", describe(&error)),
        };
        if wakeups.is_closed() {
            break;
        }
        let (delay, first) = retry.failed();
        if first {
            tracing::warn!(
                error = %failure,
                "wake-ups are not heard: signalled and claimable instances are found by polling until listening works again (retrying with backoff up to 5 s)"
            );
        } else {
            tracing::debug!(error = %failure, retry_in_ms = delay.as_millis() as u64, "still not listening for wake-ups");
        }
        tokio::time::sleep(delay).await;
    }
}

/// Whether `client` keeps one server session from one transaction to the next, as LISTEN needs:
/// a transaction pooler (PgBouncer with `pool_mode = transaction`) gives the next transaction
/// whichever session is free. Found out by holding a transaction open on a second connection
/// (a pooler hands it the session `client` just used) and asking `client` for its session again.
async fn keeps_its_session(
    client: &tokio_postgres::Client,
    config: &tokio_postgres::Config,
) -> Result<bool, tokio_postgres::Error> {
    async fn session(client: &tokio_postgres::Client) -> Result<Option<String>, tokio_postgres::Error> {
        let messages = client.simple_query("SELECT pg_backend_pid()").await?;
        Ok(messages.iter().find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        }))
    }
    let first = session(client).await?;
    let (other, connection) = config.connect(NoTls).await?;
    let driven = tokio::spawn(connection);
    // A pooler with no free session for the second connection: nothing to tell from; the
    // notification check decides.
    match tokio::time::timeout(HEARING_CHECK, other.batch_execute("BEGIN; SELECT 1")).await {
        Ok(begun) => begun?,
        Err(_) => {
            driven.abort();
            return Ok(true);
        }
    }
    // A pooler with no other free session makes `client` wait for the held one: as telling.
    let again = tokio::time::timeout(HEARING_CHECK, session(client)).await;
    let _ = other.batch_execute("ROLLBACK").await;
    drop(other);
    let _ = driven.await;
    Ok(matches!(again, Ok(Ok(pid)) if pid == first))
}

/// LISTENs on `client`, then notifies itself: whether that notification arrives (through
/// `hearing`) within `HEARING_CHECK`.
async fn hears_itself(
    client: &tokio_postgres::Client,
    hearing: tokio::sync::oneshot::Receiver<()>,
) -> Result<bool, tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "LISTEN {WAKE_CHANNEL}; NOTIFY {WAKE_CHANNEL}, '{HEARING_PAYLOAD}'"
        ))
        .await?;
    Ok(matches!(tokio::time::timeout(HEARING_CHECK, hearing).await, Ok(Ok(()))))
}

/// The payload of the notification the listener sends itself.
const HEARING_PAYLOAD: &str = "hearing";

/// Forwards the wake-ups a listening connection receives until it ends; returns its error, if
/// any. The listener's own notification goes to `heard`.
async fn forward_wakeups(
    mut connection: tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    forward: tokio::sync::mpsc::UnboundedSender<Wakeup>,
    heard: tokio::sync::oneshot::Sender<()>,
) -> Option<String> {
    let mut heard = Some(heard);
    while let Some(message) = std::future::poll_fn(|context| connection.poll_message(context)).await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(notification)) => {
                let wakeup = match notification.payload() {
                    HEARING_PAYLOAD => {
                        if let Some(heard) = heard.take() {
                            let _ = heard.send(());
                        }
                        None
                    }
                    CLAIMABLE_PAYLOAD => Some(Wakeup::Claimable),
                    payload => payload.parse::<u64>().ok().map(|id| Wakeup::Signal(InstanceId(id))),
                };
                if let Some(wakeup) = wakeup {
                    if forward.send(wakeup).is_err() {
                        return None;
                    }
                }
            }
            Ok(_) => {}
            Err(error) => return Some(describe(&error)),
        }
    }
    None
}

/// The wake-up listener's retries: the delay doubles with each failure (from 100 ms up to 5 s)
/// and starts over only once LISTEN succeeded, not at a connect that LISTEN then fails on (a
/// pooler that accepts logins but has no server for them); an episode of failures is one warning.
#[derive(Debug, Default)]
struct ListenRetry {
    /// Failures since listening last succeeded.
    failures: u32,
}

impl ListenRetry {
    const FIRST_DELAY: Duration = Duration::from_millis(100);
    const MAX_DELAY: Duration = Duration::from_secs(5);

    /// LISTEN succeeded: returns how many failures this ends, if any.
    fn listening(&mut self) -> Option<u32> {
        let ended = std::mem::take(&mut self.failures);
        (ended > 0).then_some(ended)
    }

    /// An attempt failed or a listening connection ended: how long to wait before the next, and
    /// whether this failure starts an episode (the one to warn of).
    fn failed(&mut self) -> (Duration, bool) {
        self.failures = self.failures.saturating_add(1);
        let delay = strata_core::workflow::RetryPolicy::exponential(u32::MAX, Self::FIRST_DELAY)
            .with_max_backoff(Self::MAX_DELAY)
            .backoff_before(self.failures.saturating_add(1));
        (delay, self.failures == 1)
    }
}

/// The database's clock in ms since the Unix epoch: leases are compared on one clock, whatever
/// the hosts' clocks say.
const DATABASE_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// The condition that the worker row `alias` is alive: not stopped, and heartbeating within its
/// own lease (else `default_lease`, a parameter such as `$4`), on the database's clock. Every
/// query that judges whether a worker is alive uses it.
fn worker_alive(alias: &str, default_lease: &str) -> String {
    format!(
        "{alias}.stopped_at_ms IS NULL \
         AND {alias}.heartbeat_ms >= {DATABASE_NOW_MS} - COALESCE({alias}.lease_ms, {default_lease})"
    )
}

/// A recursive common table expression `holders(owner)`: each distinct holder of live instances,
/// then one NULL that ends the recursion. A skip scan of `strata_instances_owner_claim`: one index
/// probe per holder, however many instances each holds.
const HOLDERS: &str = "holders(owner) AS (
    (SELECT owner FROM strata_instances WHERE live AND owner IS NOT NULL ORDER BY owner LIMIT 1)
    UNION ALL
    SELECT (SELECT i.owner FROM strata_instances i WHERE i.live AND i.owner > h.owner ORDER BY i.owner LIMIT 1)
    FROM holders h WHERE h.owner IS NOT NULL)";

/// The holders of live instances that no worker with a current lease is (other than `worker`),
/// and whether any live instance has no holder: what a claim may take. Reads one index entry per
/// distinct holder (a skip scan of `strata_instances_owner_claim`), not the instances.
async fn lost_holders(
    client: &tokio_postgres::Client,
    worker: &str,
    lease: i64,
) -> Result<(Vec<String>, bool), StoreError> {
    let rows = client
        .query_typed(
            &format!(
                "WITH RECURSIVE {HOLDERS}
                 SELECT h.owner FROM holders h
                 WHERE h.owner IS NOT NULL AND h.owner <> $1
                   AND NOT EXISTS (SELECT 1 FROM strata_workers w WHERE w.id = h.owner AND {alive})
                 UNION ALL
                 SELECT NULL WHERE EXISTS (SELECT 1 FROM strata_instances WHERE live AND owner IS NULL)",
                alive = worker_alive("w", "$2"),
            ),
            typed![&worker, &lease],
        )
        .await
        .map_err(failed("claim"))?;
    let mut lost = Vec::new();
    let mut unowned = false;
    for row in &rows {
        match row.get::<_, Option<String>>(0) {
            Some(owner) => lost.push(owner),
            None => unowned = true,
        }
    }
    Ok((lost, unowned))
}

/// A worker id unique among the processes sharing a database: host, process id and a random part.
fn new_worker_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    format!("{}-{}-{:08x}", host_name(), std::process::id(), hasher.finish() as u32)
}

/// This machine's host name, as the kernel reports it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// A tokio-postgres error in words: the server's message and SQLSTATE code, or the client's
/// error with its cause (an I/O error, say).
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// Maps a client error of `operation`: a broken connection (retried over a new one) or the
/// server refusing the request.
pub(crate) fn failed(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |error| {
        if retry::read_only(&error) {
            retry::read_only_failure(operation)
        } else if retry::connection_broke(&error) {
            retry::connection_lost(operation, &describe(&error))
        } else {
            StoreError::failed(operation, describe(&error))
        }
    }
}

/// Maps a failure to get a connection for `operation`.
fn pool_failed(operation: &'static str) -> impl Fn(PoolError) -> StoreError {
    move |error| {
        let reason = match &error {
            PoolError::Backend(error) => describe(error),
            other => other.to_string(),
        };
        if retry::pool_broke(&error) {
            retry::connection_lost(operation, &reason)
        } else {
            StoreError::failed(operation, format!("{reason}; check that the PostgreSQL server is up"))
        }
    }
}

/// `user@host:port/database` of a parsed URL.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("(default user)");
    let database = config.get_dbname().unwrap_or("(default database)");
    format!("{user}@{host}:{port}/{database}")
}

/// The database cannot be used as configured: which (`user@host:port/database`, never the
/// password), why, and what to check.
fn database_unusable(target: &str, problem: DatabaseProblem, reason: &str, hint: &str) -> StoreError {
    StoreError::backend(
        BackendFailure::Unusable(problem),
        format!("cannot use the PostgreSQL database {target}: {reason}; {hint}"),
    )
}

/// This engine's memory may be behind the database: it refuses further writes.
fn diverged(reason: &str) -> StoreError {
    StoreError::backend(
        BackendFailure::Diverged,
        format!("{reason}; restart the engine: it reloads everything from the database"),
    )
}

/// Why the first connection failed, in terms an operator can act on.
fn connect_failed(target: &str, error: PoolError) -> StoreError {
    let database_error = |problem, reason: String, hint: &str| database_unusable(target, problem, &reason, hint);
    let unreachable = "check that PostgreSQL runs at that host and port and accepts TCP connections from here";
    match error {
        PoolError::Backend(error) => {
            let reason = describe(&error);
            match error.code() {
                Some(code)
                    if *code == SqlState::INVALID_PASSWORD
                        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
                {
                    database_error(
                        DatabaseProblem::Authentication,
                        reason,
                        "check the user and password in the URL (postgres://user:password@host/database)",
                    )
                }
                Some(code) if *code == SqlState::INVALID_CATALOG_NAME => database_error(
                    DatabaseProblem::MissingDatabase,
                    reason,
                    "create it (createdb NAME) or name an existing database in the URL",
                ),
                Some(_) => database_error(DatabaseProblem::Other, reason, "see the server's message"),
                None => database_error(DatabaseProblem::Unreachable, reason, unreachable),
            }
        }
        PoolError::Timeout(_) => database_error(
            DatabaseProblem::Unreachable,
            format!("no connection within {CONNECT_TIMEOUT:?}"),
            unreachable,
        ),
        other => database_error(DatabaseProblem::Other, other.to_string(), unreachable),
    }
}

fn version_text(status: VersionStatus) -> &'static str {
    match status {
        VersionStatus::Active => "active",
        VersionStatus::Draining => "draining",
        VersionStatus::Drained => "drained",
        VersionStatus::Retired => "retired",
    }
}

fn status_from_text(text: &str) -> Option<VersionStatus> {
    Some(match text {
        "active" => VersionStatus::Active,
        "draining" => VersionStatus::Draining,
        "drained" => VersionStatus::Drained,
        "retired" => VersionStatus::Retired,
        _ => return None,
    })
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(value).map_err(|error| StoreError::Encode {
        what,
        message: error.to_string(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    strata_core::instance::decode_stored(bytes)
        .map_err(|error| StoreError::failed("read", format!("a {what} record does not decode: {error}")))
}

/// A stored number as the `u64` the engine uses (ids, times and counts are never negative).
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Hands a held row over in `claimed`: its record decoded with the claim it is held by (`fence`),
/// set apart when it does not decode, or listed as left in the store when it was not read.
fn hand_over(claimed: &mut Claimed, id: i64, fence: i64, bytes: Option<Vec<u8>>) {
    let id = InstanceId(unsigned(id));
    let Some(bytes) = bytes else {
        claimed.left.push(id);
        return;
    };
    match strata_store::decode_live_record(id, &bytes) {
        Ok(mut record) => {
            record.claim = unsigned(fence);
            claimed.live.push(record);
        }
        Err(corrupt) => claimed.corrupt.push(corrupt),
    }
}

/// A `u64` as the `bigint` PostgreSQL stores (times past the year 292 million saturate).
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`),
    /// creates or upgrades Strata's tables, and checks the record format. Fails with
    /// [`BackendFailure::Unusable`] naming the problem (bad URL, server unreachable, credentials
    /// refused, no such database) before anything runs, or [`BackendFailure::Newer`] if a newer
    /// Strata wrote the database (its schema or record format).
    pub fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        Self::connect_with(url, None)
    }

    /// Like [`PostgresStore::connect`], with the wake-ups (LISTEN) on a connection to
    /// `listen_url` when given: a direct URL to the same database where `url` goes through a
    /// transaction pooler, which cannot carry LISTEN.
    pub fn connect_with(url: &str, listen_url: Option<&str>) -> Result<PostgresStore, StoreError> {
        let parse = |url: &str, which: &str| -> Result<tokio_postgres::Config, StoreError> {
            url.parse().map_err(|error: tokio_postgres::Error| {
                database_unusable(
                    &format!("(the {which} given)"),
                    DatabaseProblem::InvalidUrl,
                    &error.to_string(),
                    "give a URL like postgres://user:password@host:5432/database",
                )
            })
        };
        let config = parse(url, "URL")?;
        let listen_config = match listen_url {
            Some(listen_url) => parse(listen_url, "listen URL")?,
            None => config.clone(),
        };
        let target = describe_target(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("strata-postgres")
            .enable_all()
            .build()
            .map_err(|error| StoreError::failed("start the PostgreSQL client", error))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| StoreError::failed("create the connection pool", error))?;
        let (wake, wakeups) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(listen(listen_config, wake));
        let outage_pool = pool.clone();
        let store = PostgresStore {
            runtime: Some(runtime),
            pool,
            target,
            worker_id: new_worker_id(),
            wakeups: parking_lot::Mutex::new(Some(wakeups)),
            applies: AtomicU64::new(0),
            sequence: AtomicU64::new(1),
            unsettled: std::sync::Arc::default(),
            outage: std::sync::Arc::new(Outage::new(outage_pool)),
        };
        // A connection that breaks once the database answered is tried again, as any call's
        // (the schema's migration is one transaction); one that cannot be had at all fails the
        // open at once, saying why.
        let target = store.target.clone();
        store.run(move |pool| {
            let target = target.clone();
            async move {
                let mut client = pool.get().await.map_err(|error| connect_failed(&target, error))?;
                schema::migrate(&mut client).await?;
                check_record_format(&client).await
            }
        })?;
        tracing::info!(database = %store.target, schema = schema::SCHEMA_VERSION, "opened the PostgreSQL store");
        Ok(store)
    }

    /// The database, as `user@host:port/database`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The next number of a commit or a claim of this worker.
    fn next_seq(&self) -> i64 {
        signed(self.sequence.fetch_add(1, Ordering::Relaxed))
    }

    /// Refuses a write once this engine's memory may be behind the database.
    fn refuse_if_diverged(&self) -> Result<(), StoreError> {
        match self.unsettled.diverged.lock().as_ref() {
            Some(reason) => Err(diverged(reason)),
            None => Ok(()),
        }
    }

    /// Runs the work `attempt` makes with the pool, and again while the connection breaks, for up
    /// to `RETRY_FOR`: for calls that may run twice (reads, heartbeats, idempotent writes).
    fn run<T, Attempt, Work>(&self, attempt: Attempt) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Attempt: Fn(Pool) -> Work + Send + Sync + 'static,
        Work: Future<Output = Result<T, StoreError>> + Send,
    {
        let pool = self.pool.clone();
        let mut retry = self.outage.retry();
        self.run_once(async move { retry.until_done(|| attempt(pool.clone())).await })
    }

    /// Runs `work` on the store's runtime and waits for it on a plain channel, so any thread —
    /// the commit thread, a task of the caller's runtime — may call it.
    fn run_once<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(StoreError::failed("query", "the PostgreSQL store is closed"));
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let outage = self.outage.clone();
        runtime.spawn(async move {
            let result = work.await;
            outage.observe(&result);
            let _ = sender.send(result);
        });
        // Called from a task of a multi-threaded runtime (the engine's), the wait hands that
        // worker thread's other tasks to another one first, so that a call riding out a broken
        // connection for seconds stalls nothing else.
        let in_worker_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let answer = if in_worker_thread {
            tokio::task::block_in_place(|| receiver.recv())
        } else {
            receiver.recv()
        };
        answer.unwrap_or_else(|_| Err(StoreError::failed("query", "the database call ended without an answer")))
    }

    /// Runs one query on a pooled connection and maps its rows.
    fn query<T: Send + 'static>(
        &self,
        operation: &'static str,
        sql: impl Into<String>,
        parameters: Vec<Box<dyn parameters::Parameter + Send>>,
        map: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError> + Send + Sync + 'static,
    ) -> Result<Vec<T>, StoreError> {
        let shared = std::sync::Arc::new((sql.into(), parameters, map));
        self.run(move |pool| {
            let shared = shared.clone();
            async move {
                let (sql, parameters, map) = &*shared;
                let client = pool.get().await.map_err(pool_failed(operation))?;
                let typed: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), tokio_postgres::types::Type)> = parameters
                    .iter()
                    .map(|parameter| (&**parameter as _, parameter.sql_type()))
                    .collect();
                let rows = client.query_typed(sql, &typed).await.map_err(failed(operation))?;
                rows.iter().map(map).collect()
            }
        })
    }

    /// Live or finished instance records that `keep` accepts, at most `limit`, in id order, read
    /// in pages.
    fn page_instances(
        &self,
        live: bool,
        scope: &strata_store::ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        // The database narrows by workflow and version (for finished ones with the index
        // strata_instances_by_workflow); `keep` decides the rest.
        let mut found = Vec::new();
        let newest_first = scope.newest_first;
        let mut after = match (scope.after, newest_first) {
            (Some(after), _) => signed(after.0),
            (None, false) => -1,
            (None, true) => i64::MAX,
        };
        let workflow = scope.workflow.clone();
        let version = scope.version.as_ref().map(ToString::to_string);
        let holder = (live && scope.held_here).then(|| self.worker_id.clone());
        let sql = if newest_first {
            "SELECT id, record, fence FROM strata_instances
             WHERE live = $1 AND id < $2 AND ($3::text IS NULL OR workflow = $3) AND ($4::text IS NULL OR version = $4)
               AND ($6::text IS NULL OR owner = $6)
             ORDER BY id DESC LIMIT $5"
        } else {
            "SELECT id, record, fence FROM strata_instances
             WHERE live = $1 AND id > $2 AND ($3::text IS NULL OR workflow = $3) AND ($4::text IS NULL OR version = $4)
               AND ($6::text IS NULL OR owner = $6)
             ORDER BY id LIMIT $5"
        };
        while found.len() < limit {
            let page = self.query(
                "read instances",
                sql,
                vec![
                    Box::new(live),
                    Box::new(after),
                    Box::new(workflow.clone()),
                    Box::new(version.clone()),
                    Box::new(PAGE),
                    Box::new(holder.clone()),
                ],
                |row| Ok((row.get::<_, i64>(0), row.get::<_, Vec<u8>>(1), row.get::<_, i64>(2))),
            )?;
            let Some((last, ..)) = page.last() else {
                break;
            };
            after = *last;
            for (_, bytes, fence) in page {
                match InstanceRecord::decode(&bytes) {
                    Ok(mut record) if found.len() < limit && keep(&record) => {
                        record.claim = unsigned(fence);
                        found.push(record);
                    }
                    Ok(_) => {}
                    Err(reason) => tracing::warn!(%reason, "skipping an instance record that does not decode"),
                }
            }
        }
        Ok(found)
    }

    /// Decodes every `record` column of a query.
    fn records<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        what: &'static str,
        sql: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.query("read", sql, Vec::new(), move |row| decode(what, row.get(0)))
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a caller's async context forbids; this does not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Raises the stored record format to this build's, or refuses a newer one.
async fn check_record_format(client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let row = client
        .query_typed_opt("SELECT value FROM strata_meta WHERE key = 'record_format'", typed![])
        .await
        .map_err(failed("read the record format"))?;
    let found = row.map(|row| row.get::<_, i64>(0));
    if let Some(found) = found {
        if found > i64::from(RECORD_FORMAT) {
            return Err(StoreError::newer_format(found as u32, RECORD_FORMAT));
        }
    }
    if found != Some(i64::from(RECORD_FORMAT)) {
        client
            .execute_typed(
                "INSERT INTO strata_meta (key, value) VALUES ('record_format', $1)
                 ON CONFLICT (key) DO UPDATE SET value = GREATEST(strata_meta.value, EXCLUDED.value)",
                typed![&i64::from(RECORD_FORMAT)],
            )
            .await
            .map_err(failed("write the record format"))?;
    }
    Ok(())
}

impl Store for PostgresStore {
    #[tracing::instrument(level = "trace", skip_all, fields(ops = ops.len()))]
    fn apply(&self, ops: &[Op]) -> Result<Applied, StoreError> {
        self.refuse_if_diverged()?;
        let writes = Writes::of(ops)?;
        let (pool, worker, unsettled, seq) = (
            self.pool.clone(),
            self.worker_id.clone(),
            self.unsettled.clone(),
            self.next_seq(),
        );
        let mut retry = self.outage.retry();
        let applied = self.run_once(async move {
            settle_commit(&pool, &worker, &unsettled, &mut retry).await?;
            loop {
                let mut error = match writes.commit(&pool, &worker, seq).await {
                    Ok(applied) => return Ok(applied),
                    Err(CommitFailure::NotApplied(error)) => error,
                    Err(CommitFailure::Unknown(error)) => {
                        // The mark says whether it landed; until it can be read, it is unsettled.
                        match retry.until_done(|| writes.landed(&pool, &worker, seq)).await {
                            Ok(Some(applied)) => {
                                tracing::info!(
                                    commit = seq,
                                    "a commit's answer was lost with its connection; its mark says it landed"
                                );
                                return Ok(applied);
                            }
                            Ok(None) => error,
                            Err(lookup) => {
                                *unsettled.commit.lock() = Some(seq);
                                return Err(lookup);
                            }
                        }
                    }
                };
                if !retry.again(&mut error).await {
                    return Err(error);
                }
            }
        });
        if let Err(
            error @ StoreError::Backend {
                kind: BackendFailure::Diverged,
                ..
            },
        ) = &applied
        {
            tracing::error!(%error, "this engine's memory may be behind the database; it stops writing and lets its claims run out");
        }
        let applied = applied?;
        self.applies.fetch_add(1, Ordering::Relaxed);
        Ok(applied)
    }

    fn versions(&self) -> Result<Vec<StoredVersion>, StoreError> {
        self.query("read versions", ALL_VERSIONS_QUERY, Vec::new(), stored_version)
    }

    /// A committed transaction is durable (the server's `synchronous_commit`): nothing to do.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Counters and statuses; live instances come from [`Cluster::claim`].
    fn recover(&self, _through_ms: u64) -> Result<RecoveredState, StoreError> {
        Ok(RecoveredState {
            versions: Store::versions(self)?,
            ..RecoveredState::default()
        })
    }

    fn reserve_ids(&self, kind: IdKind) -> Result<std::ops::Range<u64>, StoreError> {
        let sql = match kind {
            IdKind::Instance => "SELECT nextval('strata_instance_blocks')",
            IdKind::Signal => "SELECT nextval('strata_signal_blocks')",
        };
        let first = self.query("reserve ids", sql, Vec::new(), |row| Ok(unsigned(row.get(0))))?;
        let first = first.first().copied().unwrap_or(1);
        Ok(first..first + ID_BLOCK)
    }

    fn cluster(&self) -> &dyn Cluster {
        self
    }

    fn due_held(
        &self,
        after: Option<(u64, InstanceId)>,
        through_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InstanceId)>, StoreError> {
        let (after_wake, after_id) = after.map_or((-1, -1), |(wake, id)| (signed(wake), signed(id.0)));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            "read due instances",
            // Waiting rows by the index; ready ones (wake time 0: running instances, few) read
            // apart, only when the range begins at 0.
            format!(
                "SELECT wake, id FROM (
                     SELECT {wake} AS wake, id FROM strata_instances
                     WHERE live AND owner = $1 AND status <> 'ready' AND ({wake}, id) > ($2, $3) AND {wake} <= $4
                     {ready}
                 ) due ORDER BY wake, id LIMIT $5",
                wake = schema::WAITING_WAKE,
                ready = if after_wake <= 0 {
                    "UNION ALL SELECT 0::bigint, id FROM strata_instances
                     WHERE live AND owner = $1 AND status = 'ready' AND (0::bigint, id) > ($2, $3)"
                } else {
                    ""
                },
            ),
            vec![
                Box::new(self.worker_id.clone()),
                Box::new(after_wake),
                Box::new(after_id),
                Box::new(signed(through_ms)),
                Box::new(limit),
            ],
            |row| {
                let wake: i64 = row.get(0);
                let wake = if wake == i64::MAX {
                    strata_core::instance::WAKE_NEVER
                } else {
                    unsigned(wake)
                };
                Ok((wake, InstanceId(unsigned(row.get(1)))))
            },
        )
    }

    fn load_held(&self, ids: &[InstanceId]) -> Result<Claimed, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|id| signed(id.0)).collect();
        let rows = self.query(
            "load held instances",
            "SELECT id, fence, record, owner IS NOT DISTINCT FROM $2 FROM strata_instances
             WHERE id = ANY($1) AND live ORDER BY id",
            vec![Box::new(ids), Box::new(self.worker_id.clone())],
            |row| {
                Ok((
                    row.get::<_, i64>(0),
                    row.get::<_, i64>(1),
                    row.get::<_, Vec<u8>>(2),
                    row.get::<_, bool>(3),
                ))
            },
        )?;
        let (rows, elsewhere): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(.., mine)| *mine);
        let held: Vec<i64> = rows.iter().map(|(id, ..)| *id).collect();
        let mut claimed = Claimed {
            // Another worker's record that does not decode is that worker's to set apart.
            elsewhere: elsewhere
                .into_iter()
                .filter_map(|(id, _, bytes, _)| strata_store::decode_live_record(InstanceId(unsigned(id)), &bytes).ok())
                .collect(),
            ..Claimed::default()
        };
        if !held.is_empty() {
            claimed.signals = self.query(
                "load held instances",
                "SELECT record FROM strata_signals WHERE instance = ANY($1) ORDER BY instance, seq",
                vec![Box::new(held)],
                |row| decode("signal", row.get(0)),
            )?;
        }
        for (id, fence, bytes, _) in rows {
            hand_over(&mut claimed, id, fence, Some(bytes));
        }
        Ok(claimed)
    }

    fn load_instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        let found = self.query(
            "load instance",
            "SELECT record, fence FROM strata_instances WHERE id = $1",
            vec![Box::new(signed(id.0))],
            |row| {
                let mut record = InstanceRecord::decode(row.get(0))
                    .map_err(|message| StoreError::failed("load instance", message))?;
                record.claim = unsigned(row.get(1));
                Ok(record)
            },
        )?;
        Ok(found.into_iter().next())
    }

    fn live_instances(
        &self,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.page_instances(true, &strata_store::ListScope::default(), keep, limit)
    }

    fn finished_instances(
        &self,
        scope: &strata_store::ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.page_instances(false, scope, keep, limit)
    }

    fn expire_finished(&self, finished_before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        // Ids come from sequences, so removing rows never lets one be issued again.
        let removed = self.query(
            "remove expired instances",
            "WITH expired AS (
                 SELECT id FROM strata_instances
                 WHERE NOT live AND finished_ms < $1
                 ORDER BY finished_ms, id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED),
             removed AS (DELETE FROM strata_instances i USING expired WHERE i.id = expired.id RETURNING i.id),
             history AS (DELETE FROM strata_history h USING removed WHERE h.instance = removed.id),
             pairs AS (DELETE FROM strata_shadow_pairs p USING removed WHERE p.real_id = removed.id),
             mark AS (
                 INSERT INTO strata_retention (highest_removed) SELECT max(id) FROM removed HAVING count(*) > 0
                 ON CONFLICT (single) DO UPDATE
                 SET highest_removed = GREATEST(strata_retention.highest_removed, EXCLUDED.highest_removed))
             SELECT id FROM removed",
            vec![
                Box::new(signed(finished_before_ms)),
                Box::new(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
            |row| Ok(row.get::<_, i64>(0)),
        )?;
        Ok(removed.len() as u64)
    }

    fn highest_removed_id(&self) -> Result<u64, StoreError> {
        let highest = self.query(
            "read the highest removed id",
            "SELECT highest_removed FROM strata_retention",
            Vec::new(),
            |row| Ok(unsigned(row.get::<_, i64>(0))),
        )?;
        Ok(highest.into_iter().next().unwrap_or(0))
    }

    fn history(&self, instance: InstanceId) -> Result<Vec<StoredHistoryChunk>, StoreError> {
        self.query(
            "read history",
            "SELECT seq, entry FROM strata_history WHERE instance = $1 ORDER BY seq",
            vec![Box::new(signed(instance.0))],
            |row| {
                Ok(StoredHistoryChunk {
                    first: unsigned(row.get(0)),
                    entries: row.get(1),
                })
            },
        )
    }

    fn quarantined(&self) -> Result<Vec<CorruptRecord>, StoreError> {
        self.query(
            "read quarantine",
            "SELECT id, reason FROM strata_quarantine ORDER BY id",
            Vec::new(),
            |row| {
                Ok(CorruptRecord {
                    id: InstanceId(unsigned(row.get(0))),
                    reason: row.get(1),
                })
            },
        )
    }

    fn config_history(&self) -> Result<Vec<AppliedConfig>, StoreError> {
        self.query(
            "read config history",
            "SELECT generation, source, text, applied_at_ms FROM strata_configs ORDER BY generation",
            Vec::new(),
            applied_config,
        )
    }

    fn latest_config(&self) -> Result<Option<AppliedConfig>, StoreError> {
        let latest = self.query(
            "read the config in force",
            "SELECT generation, source, text, applied_at_ms FROM strata_configs ORDER BY generation DESC LIMIT 1",
            Vec::new(),
            applied_config,
        )?;
        Ok(latest.into_iter().next())
    }

    fn schedule_fires(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.query(
            "read schedule fires",
            "SELECT schedule, fire_ms FROM strata_schedule_fires ORDER BY schedule",
            Vec::new(),
            |row| Ok((row.get(0), unsigned(row.get(1)))),
        )
    }

    fn migration_jobs(&self) -> Result<Vec<MigrationJobRecord>, StoreError> {
        self.records(
            "migration job",
            "SELECT record FROM strata_migration_jobs
             UNION ALL SELECT record FROM strata_migration_shares",
        )
    }

    fn rollouts(&self) -> Result<Vec<strata_core::rollout::RolloutRecord>, StoreError> {
        self.records("rollout", "SELECT record FROM strata_rollouts ORDER BY name")
    }

    fn shadow_pairs(&self, rollout: &str) -> Result<Vec<strata_core::shadow::ShadowPair>, StoreError> {
        self.query(
            "read shadow pairs",
            "SELECT record FROM strata_shadow_pairs WHERE rollout = $1 ORDER BY real_id",
            vec![Box::new(rollout.to_string())],
            |row| {
                strata_core::instance::decode_stored(row.get(0))
                    .map_err(|error| StoreError::failed("read shadow pairs", error))
            },
        )
    }

    fn stats(&self) -> StoreStats {
        let applies = self.applies.load(Ordering::Relaxed);
        // Each applied transaction is durable when it commits.
        StoreStats {
            applies,
            syncs: applies,
        }
    }
}

/// Looks up the commit whose outcome a broken connection hid, before the next commit overwrites
/// its mark: not landed, and the engine, told it failed, is right; landed, and the engine's memory
/// is behind the store, which from then on refuses writes.
async fn settle_commit(pool: &Pool, worker: &str, unsettled: &Unsettled, retry: &mut Retry) -> Result<(), StoreError> {
    let Some(seq) = *unsettled.commit.lock() else {
        return Ok(());
    };
    let landed = retry
        .until_done(|| async {
            let client = pool.get().await.map_err(pool_failed("look up a commit"))?;
            commit::commit_mark(&client, worker, seq).await
        })
        .await?;
    *unsettled.commit.lock() = None;
    if landed.is_some() {
        let reason =
            format!("commit {seq} of worker {worker} was reported failed when its connection broke, but it had landed");
        let error = diverged(&reason);
        *unsettled.diverged.lock() = Some(reason);
        return Err(error);
    }
    Ok(())
}

/// The columns of a `strata_versions` row that `stored_version` reads, in its order.
macro_rules! version_row_columns {
    () => {
        "workflow, version, status, live, started, completed, failed, cancelled, moved_in, moved_out,
         first_start_ms, last_start_ms, status_changes, revived, measures::text,
         shadow_started, shadow_completed, shadow_failed, shadow_cancelled, shadow_measures::text"
    };
}
pub(crate) use version_row_columns;

/// Every version row.
const ALL_VERSIONS_QUERY: &str = concat!(
    "SELECT ",
    version_row_columns!(),
    " FROM strata_versions ORDER BY workflow, version"
);

/// The version rows of the keys in `$1` (workflows) and `$2` (versions).
const TOUCHED_VERSIONS_QUERY: &str = concat!(
    "SELECT ",
    version_row_columns!(),
    " FROM strata_versions WHERE (workflow, version) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
);

/// A version's measure totals as the `measures` column holds them: `{"cost": [sum, count]}`.
fn measures_from_text(text: &str) -> Result<strata_core::measure::MeasureTotals, String> {
    let read: std::collections::BTreeMap<String, (i64, u64)> =
        serde_json::from_str(text).map_err(|error| format!("'{text}' does not read as totals: {error}"))?;
    Ok(read
        .into_iter()
        .map(|(name, (sum_units, count))| (name, strata_core::measure::MeasureTotal { sum_units, count }))
        .collect())
}

/// Measure totals as the `measures` column takes them.
pub(crate) fn measures_to_text(totals: &strata_core::measure::MeasureTotals) -> String {
    let pairs: std::collections::BTreeMap<&str, (i64, u64)> = totals
        .iter()
        .map(|(name, total)| (name.as_str(), (total.sum_units, total.count)))
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "{}".to_string())
}

/// A `strata_versions` row of the columns `version_row_columns!` lists.
fn stored_version(row: &tokio_postgres::Row) -> Result<StoredVersion, StoreError> {
    let workflow: String = row.get(0);
    let version: String = row.get(1);
    let version = semver::Version::parse(&version).map_err(|error| {
        StoreError::failed(
            "read versions",
            format!("stored version '{version}' of '{workflow}' does not parse: {error}"),
        )
    })?;
    let status: Option<String> = row.get(2);
    let measures_at = |index: usize| {
        measures_from_text(row.get(index)).map_err(|reason| {
            StoreError::failed(
                "read versions",
                format!("the measures of {workflow} {version}: {reason}"),
            )
        })
    };
    let measures = measures_at(14)?;
    let shadow = strata_core::version::ShadowCounters {
        started: unsigned(row.get(15)),
        completed: unsigned(row.get(16)),
        failed: unsigned(row.get(17)),
        cancelled: unsigned(row.get(18)),
        measures: measures_at(19)?,
    };
    Ok(StoredVersion {
        key: VersionKey::new(workflow, version),
        status: status.as_deref().and_then(status_from_text),
        counters: VersionCounters {
            live: unsigned(row.get(3)),
            started: unsigned(row.get(4)),
            completed: unsigned(row.get(5)),
            failed: unsigned(row.get(6)),
            cancelled: unsigned(row.get(7)),
            moved_in: unsigned(row.get(8)),
            moved_out: unsigned(row.get(9)),
            revived: unsigned(row.get(13)),
            first_start_ms: row.get::<_, Option<i64>>(10).map(unsigned),
            last_start_ms: row.get::<_, Option<i64>>(11).map(unsigned),
            measures,
            shadow,
        },
        status_changes: unsigned(row.get(12)),
    })
}

/// A `strata_configs` row read as `generation, source, text, applied_at_ms`.
fn applied_config(row: &tokio_postgres::Row) -> Result<AppliedConfig, StoreError> {
    Ok(AppliedConfig {
        generation: unsigned(row.get(0)),
        source: row.get(1),
        text: row.get(2),
        applied_at_ms: unsigned(row.get(3)),
    })
}

/// Version keys as the two text arrays the claim query compares rows with.
fn version_columns(versions: &[VersionKey]) -> (Vec<String>, Vec<String>) {
    versions
        .iter()
        .map(|key| (key.workflow.clone(), key.version.to_string()))
        .unzip()
}

fn lease_ms(lease: Duration) -> i64 {
    signed(strata_core::time::millis_saturating(lease))
}

impl Cluster for PostgresStore {
    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn heartbeat(&self, versions: &[VersionKey], lease: Duration) -> Result<(), StoreError> {
        let lease = lease_ms(lease);
        self.refuse_if_diverged()?;
        let names: Vec<String> = versions.iter().map(ToString::to_string).collect();
        let worker = self.worker_id.clone();
        // Signals whose sender has its answer need their delivery marks no more.
        let delivered = std::sync::Arc::new(std::mem::take(&mut *self.unsettled.delivered.lock()));
        let beat = delivered.clone();
        let result = self.run(move |pool| {
            let (names, worker, delivered) = (names.clone(), worker.clone(), beat.clone());
            async move {
                let client = pool.get().await.map_err(pool_failed("heartbeat"))?;
                if !delivered.is_empty() {
                    client
                        .execute_typed(
                            "DELETE FROM strata_delivery_marks WHERE seq = ANY($1)",
                            typed![&*delivered],
                        )
                        .await
                        .map_err(failed("heartbeat"))?;
                }
                client
                    .execute_typed(
                        &format!(
                        "INSERT INTO strata_workers (id, host, pid, started_at_ms, heartbeat_ms, versions, lease_ms)
                     VALUES ($1, $2, $3, {DATABASE_NOW_MS}, {DATABASE_NOW_MS}, $4, $5)
                     ON CONFLICT (id) DO UPDATE SET heartbeat_ms = {DATABASE_NOW_MS}, versions = EXCLUDED.versions,
                         lease_ms = EXCLUDED.lease_ms"
                    ),
                        typed![&worker, &host_name(), &i64::from(std::process::id()), &names, &lease],
                    )
                    .await
                    .map_err(failed("heartbeat"))?;
                Ok(())
            }
        });
        if result.is_err() {
            self.unsettled.delivered.lock().extend(delivered.iter());
        }
        result
    }

    fn claim(
        &self,
        versions: &[VersionKey],
        lease: Duration,
        limit: usize,
        load_through_ms: u64,
    ) -> Result<Claimed, StoreError> {
        self.refuse_if_diverged()?;
        let through = signed(load_through_ms);
        let (workflows, version_texts) = version_columns(versions);
        let pool = self.pool.clone();
        let worker = self.worker_id.clone();
        let lease = lease_ms(lease);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (unsettled, seq) = (self.unsettled.clone(), self.next_seq());
        let mut retry = self.outage.retry();
        let rows = self.run_once(async move {
            // Claims whose answer a broken connection lost (this one's too, after a failed try):
            // the rows they took are this worker's, and taken in now.
            let mut lost: Vec<i64> = unsettled.claims.lock().clone();
            loop {
                let attempt = async {
                    let client = pool.get().await.map_err(pool_failed("claim"))?;
                    // Each claimed row with its record if it is due by `through` (else it is
                    // left in the store, held, unread).
                    let mut claimed: Vec<(i64, i64, Option<Vec<u8>>)> = Vec::new();
                    if !lost.is_empty() {
                        // Stamped with this claim's number: whatever a claim hands over carries it.
                        let rows = client
                            .query_typed(
                                &format!(
                                    "UPDATE strata_instances SET claimed_in = $3
                                 WHERE owner = $1 AND live AND claimed_in = ANY($2)
                                 RETURNING id, fence, CASE WHEN {wake} <= $4 THEN record END",
                                    wake = schema::wake_of("strata_instances")
                                ),
                                typed![&worker, &lost, &seq, &through],
                            )
                            .await
                            .map_err(failed("claim"))?;
                        claimed.extend(rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))));
                    }
                    // An instance is claimable when no worker with a current lease holds it.
                    // Its holders are few: find the lost ones first (index probes), so a worker
                    // whose peers are all alive reads no instance row at every heartbeat.
                    let (lost_owners, unowned) = lost_holders(&client, &worker, lease).await?;
                    if !lost_owners.is_empty() || unowned {
                        // Taking the claim raises its fencing token, so the previous holder's
                        // writes no longer land, and stamps it with the claim's number. The
                        // holder is checked again here: it may have come back since. (This
                        // worker is never among the lost holders.)
                        let rows = client
                            .query_typed(
                                &format!(
                                    "WITH claimable AS (
                                     SELECT i.id FROM strata_instances i
                                     WHERE i.live
                                       AND (i.owner = ANY($8) OR (i.owner IS NULL AND $9))
                                       AND (i.workflow, i.version) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
                                       AND NOT EXISTS (
                                           SELECT 1 FROM strata_workers w
                                           WHERE w.id = i.owner AND {alive})
                                     ORDER BY i.id
                                     LIMIT $5
                                     FOR UPDATE OF i SKIP LOCKED)
                                 UPDATE strata_instances i SET owner = $3, fence = i.fence + 1, claimed_in = $6
                                 FROM claimable WHERE i.id = claimable.id
                                 RETURNING i.id, i.fence, CASE WHEN {wake} <= $7 THEN i.record END",
                                    alive = worker_alive("w", "$4"),
                                    wake = schema::wake_of("i"),
                                ),
                                typed![
                                    &workflows,
                                    &version_texts,
                                    &worker,
                                    &lease,
                                    &limit,
                                    &seq,
                                    &through,
                                    &lost_owners,
                                    &unowned
                                ],
                            )
                            .await
                            .map_err(failed("claim"))?;
                        claimed.extend(rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))));
                    }
                    let ids: Vec<i64> = claimed
                        .iter()
                        .filter(|(_, _, record)| record.is_some())
                        .map(|(id, ..)| *id)
                        .collect();
                    // Most heartbeats claim nothing: no round trip for no signals.
                    let signals = if ids.is_empty() {
                        Vec::new()
                    } else {
                        client
                            .query_typed(
                                "SELECT record FROM strata_signals WHERE instance = ANY($1) ORDER BY instance, seq",
                                typed![&ids],
                            )
                            .await
                            .map_err(failed("claim"))?
                            .iter()
                            .map(|row| decode::<SignalRecord>("signal", row.get(0)))
                            .collect::<Result<Vec<_>, _>>()?
                    };
                    Ok((claimed, signals))
                };
                let mut error = match attempt.await {
                    Ok(found) => {
                        unsettled.claims.lock().retain(|earlier| !lost.contains(earlier));
                        return Ok(found);
                    }
                    Err(error) => error,
                };
                if !lost.contains(&seq) {
                    lost.push(seq);
                }
                if !retry.again(&mut error).await {
                    unsettled.claims.lock().push(seq);
                    return Err(error);
                }
            }
        })?;
        let (records, signals) = rows;
        let mut claimed = Claimed {
            number: unsigned(seq),
            signals,
            ..Claimed::default()
        };
        for (id, fence, bytes) in records {
            hand_over(&mut claimed, id, fence, bytes);
        }
        Ok(claimed)
    }

    fn leave(&self) -> Result<(), StoreError> {
        let worker = self.worker_id.clone();
        self.run(move |pool| {
            let worker = worker.clone();
            async move {
                let mut client = pool.get().await.map_err(pool_failed("leave"))?;
                let transaction = client.transaction().await.map_err(failed("leave"))?;
                transaction
                    .execute_typed(
                        "UPDATE strata_instances SET owner = NULL WHERE owner = $1 AND live",
                        typed![&worker],
                    )
                    .await
                    .map_err(failed("leave"))?;
                // It announced every version it drained (its drivers have all ended).
                transaction
                    .execute_typed(
                        "UPDATE strata_versions SET drained_by = NULL WHERE drained_by = $1",
                        typed![&worker],
                    )
                    .await
                    .map_err(failed("leave"))?;
                // Roles it leads (evaluating rollouts) pass to another worker at its next heartbeat.
                transaction
                    .execute_typed("DELETE FROM strata_leases WHERE holder = $1", typed![&worker])
                    .await
                    .map_err(failed("leave"))?;
                // The others claim what it handed back now, not at their next heartbeat.
                transaction
                    .execute_typed("SELECT pg_notify($1, $2)", typed![&WAKE_CHANNEL, &CLAIMABLE_PAYLOAD])
                    .await
                    .map_err(failed("leave"))?;
                transaction
                    .execute_typed(
                        &format!("UPDATE strata_workers SET stopped_at_ms = {DATABASE_NOW_MS} WHERE id = $1"),
                        typed![&worker],
                    )
                    .await
                    .map_err(failed("leave"))?;
                transaction.commit().await.map_err(failed("leave"))
            }
        })
    }

    fn deliver_signal(&self, signal: &SignalRecord) -> Result<bool, StoreError> {
        let record = encode("signal", signal)?;
        let (instance, seq) = (signed(signal.instance.0), signed(signal.seq));
        let (pool, worker) = (self.pool.clone(), self.worker_id.clone());
        let mut retry = self.outage.retry();
        let delivered = self.run_once(async move {
            // Set once a try's COMMIT lost its answer: the delivery's mark says if it landed.
            let mut maybe_landed = false;
            loop {
                let attempt = async {
                    let mut client = pool.get().await.map_err(pool_failed("deliver signal"))?;
                    if maybe_landed {
                        let marked = client
                            .query_typed_opt("SELECT 1 FROM strata_delivery_marks WHERE seq = $1", typed![&seq])
                            .await
                            .map_err(failed("look up a delivery"))?;
                        if marked.is_some() {
                            return Ok(true);
                        }
                    }
                    let transaction = client.transaction().await.map_err(failed("deliver signal"))?;
                    // The instance row is locked while the signal goes in, so a finish committing
                    // at the same time either comes first (nothing stored) or sees the signal.
                    let stored = transaction
                        .execute_typed(
                            "INSERT INTO strata_signals (instance, seq, record)
                             SELECT $1, $2, $3 WHERE EXISTS
                                 (SELECT 1 FROM strata_instances WHERE id = $1 AND live FOR SHARE)",
                            typed![&instance, &seq, &record],
                        )
                        .await
                        .map_err(failed("deliver signal"))?;
                    if stored == 1 {
                        transaction
                            .execute_typed(
                                "INSERT INTO strata_delivery_marks (seq, worker) VALUES ($1, $2)",
                                typed![&seq, &worker],
                            )
                            .await
                            .map_err(failed("mark the delivery"))?;
                        transaction
                            .execute_typed("SELECT pg_notify($1, $2)", typed![&WAKE_CHANNEL, &instance.to_string()])
                            .await
                            .map_err(failed("wake the holder"))?;
                    }
                    maybe_landed = true;
                    transaction.commit().await.map_err(failed("deliver signal"))?;
                    Ok(stored == 1)
                };
                let mut error = match attempt.await {
                    Ok(delivered) => return Ok(delivered),
                    Err(error) => error,
                };
                if !retry.again(&mut error).await {
                    return Err(error);
                }
            }
        })?;
        if delivered {
            self.unsettled.delivered.lock().push(seq);
        }
        Ok(delivered)
    }

    fn held_signals(&self) -> Result<Vec<SignalRecord>, StoreError> {
        let worker = self.worker_id.clone();
        self.query(
            "read held signals",
            "SELECT s.record FROM strata_signals s JOIN strata_instances i ON i.id = s.instance
             WHERE i.owner = $1 AND i.live ORDER BY s.instance, s.seq",
            vec![Box::new(worker)],
            |row| decode("signal", row.get(0)),
        )
    }

    fn signals_of(&self, instance: InstanceId) -> Result<Vec<SignalRecord>, StoreError> {
        self.query(
            "read signals",
            "SELECT record FROM strata_signals WHERE instance = $1 ORDER BY seq",
            vec![Box::new(signed(instance.0))],
            |row| decode("signal", row.get(0)),
        )
    }

    fn wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Wakeup>> {
        self.wakeups.lock().take()
    }

    fn lead(&self, role: &str, lease: Duration) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO strata_leases AS current (role, holder, until_ms) VALUES ($1, $2, {DATABASE_NOW_MS} + $3)
             ON CONFLICT (role) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms
             WHERE current.holder = EXCLUDED.holder OR current.until_ms < {DATABASE_NOW_MS}
             RETURNING holder"
        );
        self.refuse_if_diverged()?;
        let (role, worker, lease) = (role.to_string(), self.worker_id.clone(), lease_ms(lease));
        let call = std::sync::Arc::new((sql, role, worker));
        self.run(move |pool| {
            let call = call.clone();
            async move {
                let (sql, role, worker) = &*call;
                let client = pool.get().await.map_err(pool_failed("lead"))?;
                let rows = client
                    .query_typed(sql, typed![role, worker, &lease])
                    .await
                    .map_err(failed("lead"))?;
                Ok(!rows.is_empty())
            }
        })
    }

    fn uncovered_live(&self, workflow: &str, lease: Duration, covered: &[(String, u64)]) -> Result<u64, StoreError> {
        let (workers, claims): (Vec<String>, Vec<i64>) = covered
            .iter()
            .map(|(worker, claim)| (worker.clone(), signed(*claim)))
            .unzip();
        // By holder, as a claim finds them (a skip scan: one probe per distinct holder): a live
        // holder's rows claimed after its share are a range of `strata_instances_owner_claim`; a
        // lost holder's rows and the unheld ones count if a live worker runs their version.
        let sql = std::sync::Arc::new(format!(
            "WITH RECURSIVE {HOLDERS},
             alive AS (SELECT w.id, w.versions FROM strata_workers w WHERE {alive}),
             runnable AS (SELECT DISTINCT unnest(versions) AS version FROM alive),
             covered AS (SELECT * FROM UNNEST($3::text[], $4::bigint[]) AS covered(worker, claim))
             SELECT (COALESCE(sum(
                 CASE WHEN EXISTS (SELECT 1 FROM alive WHERE alive.id = h.owner)
                      THEN (SELECT count(*) FROM strata_instances i
                            WHERE i.live AND i.owner = h.owner AND i.workflow = $1
                              AND i.claimed_in > COALESCE((SELECT claim FROM covered WHERE covered.worker = h.owner), -1))
                      ELSE (SELECT count(*) FROM strata_instances i
                            WHERE i.live AND i.owner = h.owner AND i.workflow = $1
                              AND i.workflow || '@' || i.version IN (SELECT version FROM runnable))
                 END), 0)
               + (SELECT count(*) FROM strata_instances i
                  WHERE i.live AND i.owner IS NULL AND i.workflow = $1
                    AND i.workflow || '@' || i.version IN (SELECT version FROM runnable)))::bigint
             FROM holders h WHERE h.owner IS NOT NULL",
            alive = worker_alive("w", "$2")
        ));
        let (workflow, lease) = (workflow.to_string(), lease_ms(lease));
        self.run(move |pool| {
            let (sql, workflow, workers, claims) = (sql.clone(), workflow.clone(), workers.clone(), claims.clone());
            async move {
                let operation = "count live instances a migration has not covered";
                let mut client = pool.get().await.map_err(pool_failed(operation))?;
                let transaction = client.transaction().await.map_err(failed(operation))?;
                // The planner guesses a hundred holders and thousands of rows under each, which
                // puts the statement over `jit_above_cost`: compiling it took 340 ms of the 342
                // at 1 000 000 rows. Off for this transaction only (a pooler's connection is
                // shared).
                transaction
                    .batch_execute("SET LOCAL jit = off")
                    .await
                    .map_err(failed(operation))?;
                let rows = transaction
                    .query_typed(sql.as_str(), typed![&workflow, &lease, &workers, &claims])
                    .await
                    .map_err(failed(operation))?;
                transaction.commit().await.map_err(failed(operation))?;
                Ok(rows.first().map_or(0, |row| unsigned(row.get::<_, i64>(0))))
            }
        })
    }

    fn drained_announced(&self, keys: &[VersionKey]) -> Result<(), StoreError> {
        let (workflows, versions) = version_columns(keys);
        self.query(
            "mark drained versions announced",
            "UPDATE strata_versions SET drained_by = NULL
             WHERE (workflow, version) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) AND drained_by = $3",
            vec![
                Box::new(workflows),
                Box::new(versions),
                Box::new(self.worker_id.clone()),
            ],
            |_| Ok(()),
        )?;
        Ok(())
    }

    fn take_unannounced_drained(&self, lease: Duration) -> Result<Vec<VersionKey>, StoreError> {
        let taken = self.query(
            "take unannounced drained versions",
            format!(
                "UPDATE strata_versions v SET drained_by = NULL
                 WHERE v.status = 'drained' AND v.drained_by IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM strata_workers w WHERE w.id = v.drained_by AND {})
                 RETURNING v.workflow, v.version",
                worker_alive("w", "$1")
            ),
            vec![Box::new(lease_ms(lease))],
            |row| Ok((row.get::<_, String>(0), row.get::<_, String>(1))),
        )?;
        Ok(taken
            .into_iter()
            .filter_map(|(workflow, version)| {
                semver::Version::parse(&version)
                    .ok()
                    .map(|version| VersionKey::new(workflow, version))
            })
            .collect())
    }

    fn live_held_elsewhere(
        &self,
        scope: &strata_store::ListScope,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.page_instances(true, scope, keep, limit)
    }

    fn oldest_live(&self) -> Result<Vec<(VersionKey, InstanceId, u64)>, StoreError> {
        // Rows written before schema 4 have no start time: they are the oldest, and their
        // records say when they started.
        let oldest = self.query(
            "read the oldest live instances",
            "SELECT DISTINCT ON (workflow, version) workflow, version, id, created_ms FROM strata_instances
             WHERE live ORDER BY workflow, version, created_ms NULLS FIRST, id",
            Vec::new(),
            |row| {
                let (workflow, version): (String, String) = (row.get(0), row.get(1));
                Ok((workflow, version, row.get::<_, i64>(2), row.get::<_, Option<i64>>(3)))
            },
        )?;
        let mut found = Vec::new();
        for (workflow, version, id, created) in oldest {
            let Ok(version) = semver::Version::parse(&version) else {
                continue;
            };
            let id = InstanceId(unsigned(id));
            let created = match created {
                Some(created) => unsigned(created),
                None => match self.load_instance(id)? {
                    Some(record) => record.created_at_ms,
                    None => continue,
                },
            };
            found.push((VersionKey::new(workflow, version), id, created));
        }
        Ok(found)
    }

    fn publish_metrics(&self, windows: &[(VersionKey, Vec<u8>)]) -> Result<(), StoreError> {
        if windows.is_empty() {
            return Ok(());
        }
        let (workflows, versions) = version_columns(&windows.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>());
        let blobs: Vec<Vec<u8>> = windows.iter().map(|(_, window)| window.clone()).collect();
        let call = std::sync::Arc::new((self.worker_id.clone(), workflows, versions, blobs));
        self.run(move |pool| {
            let call = call.clone();
            async move {
                let (worker, workflows, versions, blobs) = &*call;
                let client = pool.get().await.map_err(pool_failed("publish metrics"))?;
                client
                    .execute_typed(
                        "INSERT INTO strata_worker_metrics (worker, workflow, version, metrics)
                         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bytea[])
                         ON CONFLICT (worker, workflow, version) DO UPDATE SET metrics = EXCLUDED.metrics",
                        typed![worker, workflows, versions, blobs],
                    )
                    .await
                    .map_err(failed("publish metrics"))?;
                Ok(())
            }
        })
    }

    fn metrics_of(&self, key: &VersionKey, lease: Duration) -> Result<Vec<Vec<u8>>, StoreError> {
        let sql = format!(
            "SELECT m.metrics FROM strata_worker_metrics m JOIN strata_workers w ON w.id = m.worker
             WHERE m.workflow = $1 AND m.version = $2 AND m.worker <> $3 AND {alive}",
            alive = worker_alive("w", "$4")
        );
        let call = std::sync::Arc::new((
            sql,
            key.workflow.clone(),
            key.version.to_string(),
            self.worker_id.clone(),
        ));
        let lease = lease_ms(lease);
        self.run(move |pool| {
            let call = call.clone();
            async move {
                let (sql, workflow, version, worker) = &*call;
                let client = pool.get().await.map_err(pool_failed("read metrics"))?;
                let rows = client
                    .query_typed(sql.as_str(), typed![workflow, version, worker, &lease])
                    .await
                    .map_err(failed("read metrics"))?;
                Ok(rows.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect())
            }
        })
    }

    fn workers(&self, lease: Duration) -> Result<Vec<WorkerInfo>, StoreError> {
        let sql = format!(
            "SELECT w.id, w.host, w.pid, w.started_at_ms, w.heartbeat_ms, w.versions, {alive}
             FROM strata_workers w ORDER BY w.started_at_ms, w.id",
            alive = worker_alive("w", "$1")
        );
        let lease = lease_ms(lease);
        let sql = std::sync::Arc::new(sql);
        let rows = self.run(move |pool| {
            let sql = sql.clone();
            async move {
                let client = pool.get().await.map_err(pool_failed("read workers"))?;
                let rows = client
                    .query_typed(sql.as_str(), typed![&lease])
                    .await
                    .map_err(failed("read workers"))?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        (
                            row.get::<_, String>(0),
                            row.get::<_, String>(1),
                            row.get::<_, i64>(2),
                            row.get::<_, i64>(3),
                            row.get::<_, i64>(4),
                            row.get::<_, Vec<String>>(5),
                            row.get::<_, bool>(6),
                        )
                    })
                    .collect::<Vec<_>>())
            }
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, host, pid, started, heartbeat, versions, alive)| WorkerInfo {
                id,
                host,
                pid: u32::try_from(pid).unwrap_or(0),
                started_at_ms: unsigned(started),
                heartbeat_ms: unsigned(heartbeat),
                versions: versions.iter().filter_map(|text| text.parse().ok()).collect(),
                alive,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_retries_back_off_until_listen_succeeds_and_warn_once_per_episode() {
        let mut retry = ListenRetry::default();
        // A pooler that accepts every login but has no server: each attempt connects, then
        // LISTEN fails. Connecting is no success: the delay keeps growing.
        let attempts: Vec<(Duration, bool)> = (0..8).map(|_| retry.failed()).collect();
        let delays: Vec<u64> = attempts.iter().map(|(delay, _)| delay.as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let warnings = attempts.iter().filter(|(_, first)| *first).count();
        assert_eq!(warnings, 1, "one warning for the episode");
        assert_eq!(retry.listening(), Some(8), "listening again ends the episode");
        assert_eq!(retry.listening(), None);
        // The listening connection drops later: a new episode, from the first delay.
        assert_eq!(retry.failed(), (Duration::from_millis(100), true));
        for _ in 0..100 {
            assert!(retry.failed().0 <= Duration::from_secs(5));
        }
    }
}
