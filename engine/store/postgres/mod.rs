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

mod schema;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::{
    Applied, AppliedConfig, Claimed, Cluster, CorruptRecord, CounterDelta, DatabaseProblem, IdKind, MigrationJobRecord,
    Op, RecoveredState, SignalRecord, Store, StoreError, StoreStats, StoredVersion, VersionCounters, WorkerInfo,
};
use crate::instance::{InstanceId, InstanceRecord, VersionKey, RECORD_FORMAT};
use crate::registry::VersionStatus;

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
    wakeups: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<InstanceId>>>,
    applies: AtomicU64,
}

/// The channel on which a delivered signal names its instance.
const WAKE_CHANNEL: &str = "strata_wake";

/// Listens on `WAKE_CHANNEL` on a connection of its own and forwards each named instance, until
/// nobody receives; reconnects with backoff when the connection drops (what is missed meanwhile,
/// the holders' polls find).
async fn listen(config: tokio_postgres::Config, wakeups: tokio::sync::mpsc::UnboundedSender<InstanceId>) {
    let mut backoff = Duration::from_millis(100);
    while !wakeups.is_closed() {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                backoff = Duration::from_millis(100);
                let forward = wakeups.clone();
                let messages = tokio::spawn(async move {
                    while let Some(message) = std::future::poll_fn(|context| connection.poll_message(context)).await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(notification)) => {
                                if let Ok(id) = notification.payload().parse::<u64>() {
                                    if forward.send(InstanceId(id)).is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(error = %describe(&error), "the listening connection failed");
                                return;
                            }
                        }
                    }
                });
                if let Err(error) = client.batch_execute(&format!("LISTEN {WAKE_CHANNEL}")).await {
                    tracing::warn!(error = %describe(&error), "could not listen for wake-ups");
                }
                let _ = messages.await;
            }
            Err(error) => tracing::warn!(error = %describe(&error), "could not open the listening connection"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The database's clock in ms since the Unix epoch: leases are compared on one clock, whatever
/// the hosts' clocks say.
const DATABASE_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

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

pub(crate) fn failed(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |error| StoreError::Backend {
        operation,
        message: describe(&error),
    }
}

fn pool_failed(operation: &'static str) -> impl Fn(PoolError) -> StoreError {
    move |error| StoreError::Backend {
        operation,
        message: match &error {
            PoolError::Backend(error) => describe(error),
            other => format!("{other}; check that the PostgreSQL server is up"),
        },
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

/// Why the first connection failed, in terms an operator can act on.
fn connect_failed(target: &str, error: PoolError) -> StoreError {
    let database_error = |problem, reason, hint| StoreError::Database {
        target: target.to_string(),
        problem,
        reason,
        hint,
    };
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
    rmp_serde::from_slice(bytes).map_err(|error| StoreError::Backend {
        operation: "read",
        message: format!("a {what} record does not decode: {error}"),
    })
}

/// A stored number as the `u64` the engine uses (ids, times and counts are never negative).
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A `u64` as the `bigint` PostgreSQL stores (times past the year 292 million saturate).
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`),
    /// creates or upgrades Strata's tables, and checks the record format. Fails with
    /// [`StoreError::Database`] naming the problem (bad URL, server unreachable, credentials
    /// refused, no such database) before anything runs, or [`StoreError::NewerSchema`] /
    /// [`StoreError::NewerFormat`] if a newer Strata wrote the database.
    pub fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config =
            url.parse()
                .map_err(|error: tokio_postgres::Error| StoreError::Database {
                    target: "(the URL given)".to_string(),
                    problem: DatabaseProblem::InvalidUrl,
                    reason: error.to_string(),
                    hint: "give a URL like postgres://user:password@host:5432/database",
                })?;
        let target = describe_target(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("strata-postgres")
            .enable_all()
            .build()
            .map_err(|error| StoreError::Backend {
                operation: "start the PostgreSQL client",
                message: error.to_string(),
            })?;
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
            .map_err(|error| StoreError::Backend {
                operation: "create the connection pool",
                message: error.to_string(),
            })?;
        let (wake, wakeups) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(listen(config.clone(), wake));
        let store = PostgresStore {
            runtime: Some(runtime),
            pool,
            target,
            worker_id: new_worker_id(),
            wakeups: parking_lot::Mutex::new(Some(wakeups)),
            applies: AtomicU64::new(0),
        };
        let pool = store.pool.clone();
        let target = store.target.clone();
        store.run(async move {
            let mut client = pool.get().await.map_err(|error| connect_failed(&target, error))?;
            schema::migrate(&mut client).await?;
            check_record_format(&client).await
        })?;
        tracing::info!(database = %store.target, schema = schema::SCHEMA_VERSION, "opened the PostgreSQL store");
        Ok(store)
    }

    /// The database, as `user@host:port/database`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `work` on the store's runtime and waits for it on a plain channel, so any thread —
    /// the commit thread, a task of the caller's runtime — may call it.
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(StoreError::Backend {
                operation: "query",
                message: "the PostgreSQL store is closed".to_string(),
            });
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = sender.send(work.await);
        });
        receiver.recv().unwrap_or_else(|_| {
            Err(StoreError::Backend {
                operation: "query",
                message: "the database call ended without an answer".to_string(),
            })
        })
    }

    /// Runs one query on a pooled connection and maps its rows.
    fn query<T: Send + 'static>(
        &self,
        operation: &'static str,
        sql: &'static str,
        parameters: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>,
        map: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<Vec<T>, StoreError> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_failed(operation))?;
            let statement = client.prepare_cached(sql).await.map_err(failed(operation))?;
            let borrowed: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                parameters.iter().map(|parameter| &**parameter as _).collect();
            let rows = client.query(&statement, &borrowed).await.map_err(failed(operation))?;
            rows.iter().map(map).collect()
        })
    }

    /// Live or finished instance records that `keep` accepts, at most `limit`, in id order, read
    /// in pages.
    fn page_instances(
        &self,
        live: bool,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut found = Vec::new();
        let mut after = -1i64;
        while found.len() < limit {
            let page = self.query(
                "read instances",
                "SELECT id, record FROM strata_instances WHERE live = $1 AND id > $2 ORDER BY id LIMIT $3",
                vec![Box::new(live), Box::new(after), Box::new(PAGE)],
                |row| Ok((row.get::<_, i64>(0), row.get::<_, Vec<u8>>(1))),
            )?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = *last;
            for (_, bytes) in page {
                match InstanceRecord::decode(&bytes) {
                    Ok(record) if found.len() < limit && keep(&record) => found.push(record),
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
        .query_opt("SELECT value FROM strata_meta WHERE key = 'record_format'", &[])
        .await
        .map_err(failed("read the record format"))?;
    let found = row.map(|row| row.get::<_, i64>(0));
    if let Some(found) = found {
        if found > i64::from(RECORD_FORMAT) {
            return Err(StoreError::NewerFormat {
                found: found as u32,
                supported: RECORD_FORMAT,
            });
        }
    }
    if found != Some(i64::from(RECORD_FORMAT)) {
        client
            .execute(
                "INSERT INTO strata_meta (key, value) VALUES ('record_format', $1)
                 ON CONFLICT (key) DO UPDATE SET value = GREATEST(strata_meta.value, EXCLUDED.value)",
                &[&i64::from(RECORD_FORMAT)],
            )
            .await
            .map_err(failed("write the record format"))?;
    }
    Ok(())
}

/// One instance row to write.
struct InstanceRow {
    id: i64,
    claim: i64,
    workflow: String,
    version: String,
    live: bool,
    status: &'static str,
    due_ms: Option<i64>,
    record: Vec<u8>,
}

/// A version's counter changes summed over a group, with its earliest and latest start.
#[derive(Default)]
struct CounterSum {
    delta: CounterDelta,
    first_start_ms: Option<i64>,
    last_start_ms: Option<i64>,
}

/// The writes of one group of commits, gathered per kind of row so that one transaction sends
/// each kind as one statement over arrays. Writes to the same row keep the last one, as applying
/// the ops in order would.
#[derive(Default)]
struct Writes {
    instances: Vec<InstanceRow>,
    instance_index: HashMap<i64, usize>,
    signals: HashMap<(i64, i64), Option<Vec<u8>>>,
    counters: HashMap<VersionKey, CounterSum>,
    statuses: HashMap<VersionKey, VersionStatus>,
    fires: HashMap<String, i64>,
    configs: Vec<AppliedConfig>,
    jobs: HashMap<String, Vec<u8>>,
    rollouts: HashMap<String, (Vec<u8>, i64)>,
    quarantines: Vec<(i64, String)>,
}

impl Writes {
    fn of(ops: &[Op]) -> Result<Writes, StoreError> {
        let mut writes = Writes::default();
        for op in ops {
            match op {
                Op::PutInstance(record) => {
                    let row = InstanceRow {
                        id: signed(record.id.0),
                        claim: signed(record.claim),
                        workflow: record.key.workflow.clone(),
                        version: record.key.version.to_string(),
                        live: !record.finished,
                        status: record.status.as_str(),
                        due_ms: record.due_ms.map(signed),
                        record: record.bytes.clone(),
                    };
                    match writes.instance_index.get(&row.id) {
                        Some(&index) => writes.instances[index] = row,
                        None => {
                            writes.instance_index.insert(row.id, writes.instances.len());
                            writes.instances.push(row);
                        }
                    }
                }
                Op::PutSignal(signal) => {
                    let key = (signed(signal.instance.0), signed(signal.seq));
                    writes.signals.insert(key, Some(encode("signal", signal)?));
                }
                Op::DeleteSignal { instance, seq } => {
                    writes.signals.insert((signed(instance.0), signed(*seq)), None);
                }
                Op::AdjustCounters { key, delta } => {
                    let sum = writes.counters.entry(key.clone()).or_default();
                    sum.delta.live += delta.live;
                    sum.delta.started += delta.started;
                    sum.delta.completed += delta.completed;
                    sum.delta.failed += delta.failed;
                    sum.delta.cancelled += delta.cancelled;
                    sum.delta.moved_in += delta.moved_in;
                    sum.delta.moved_out += delta.moved_out;
                    if let Some(at) = delta.started_at_ms.map(signed) {
                        sum.first_start_ms = Some(sum.first_start_ms.map_or(at, |first| first.min(at)));
                        sum.last_start_ms = Some(sum.last_start_ms.map_or(at, |last| last.max(at)));
                    }
                }
                Op::PutVersionStatus { key, status } => {
                    writes.statuses.insert(key.clone(), *status);
                }
                Op::PutScheduleFire { schedule, fire_ms } => {
                    writes.fires.insert(schedule.clone(), signed(*fire_ms));
                }
                Op::PutConfig(config) => writes.configs.push(config.clone()),
                Op::PutMigrationJob(job) => {
                    writes.jobs.insert(job.workflow.clone(), encode("migration job", job)?);
                }
                Op::PutRollout(rollout) => {
                    let revision = i64::try_from(rollout.history.len()).unwrap_or(i64::MAX);
                    writes
                        .rollouts
                        .insert(rollout.spec.name.clone(), (encode("rollout", rollout)?, revision));
                }
                Op::QuarantineRecord { id, reason } => writes.quarantines.push((signed(id.0), reason.clone())),
            }
        }
        Ok(writes)
    }

    /// Sends the writes in one transaction: all of them or none. An instance row is written only
    /// while `worker` holds its claim with the token the record carries (a new row is inserted
    /// claimed by `worker`); if any is not, nothing is written and the error names them.
    async fn commit(mut self, pool: Pool, worker: String) -> Result<Applied, StoreError> {
        let mut client = pool.get().await.map_err(pool_failed("commit"))?;
        let transaction = client.transaction().await.map_err(failed("begin"))?;
        let run = |sql: &'static str| async { transaction.prepare_cached(sql).await.map_err(failed("commit")) };
        if !self.instances.is_empty() {
            let statement = run("INSERT INTO strata_instances AS current
                     (id, workflow, version, live, status, due_ms, record, fence, owner)
                 SELECT *, $9 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bigint[],
                     $7::bytea[], $8::bigint[])
                 ON CONFLICT (id) DO UPDATE SET workflow = EXCLUDED.workflow, version = EXCLUDED.version,
                     live = EXCLUDED.live, status = EXCLUDED.status, due_ms = EXCLUDED.due_ms, record = EXCLUDED.record
                 WHERE current.owner = EXCLUDED.owner AND current.fence = EXCLUDED.fence
                 RETURNING id")
            .await?;
            let ids: Vec<i64> = self.instances.iter().map(|row| row.id).collect();
            let workflows: Vec<&str> = self.instances.iter().map(|row| row.workflow.as_str()).collect();
            let versions: Vec<&str> = self.instances.iter().map(|row| row.version.as_str()).collect();
            let live: Vec<bool> = self.instances.iter().map(|row| row.live).collect();
            let statuses: Vec<&str> = self.instances.iter().map(|row| row.status).collect();
            let due: Vec<Option<i64>> = self.instances.iter().map(|row| row.due_ms).collect();
            let records: Vec<&[u8]> = self.instances.iter().map(|row| row.record.as_slice()).collect();
            let claims: Vec<i64> = self.instances.iter().map(|row| row.claim).collect();
            let written = transaction
                .query(
                    &statement,
                    &[
                        &ids, &workflows, &versions, &live, &statuses, &due, &records, &claims, &worker,
                    ],
                )
                .await
                .map_err(failed("write instances"))?;
            if written.len() < ids.len() {
                let written: std::collections::HashSet<i64> = written.iter().map(|row| row.get(0)).collect();
                let lost = ids
                    .iter()
                    .filter(|id| !written.contains(id))
                    .map(|id| InstanceId(unsigned(*id)))
                    .collect();
                return Err(StoreError::ClaimLost { ids: lost });
            }
            // A finished instance takes no more signals: delete all of them, also any another
            // process delivered that the holder had not taken in yet.
            let finished: Vec<i64> = self
                .instances
                .iter()
                .filter(|row| !row.live)
                .map(|row| row.id)
                .collect();
            if !finished.is_empty() {
                let statement = run("DELETE FROM strata_signals WHERE instance = ANY($1)").await?;
                transaction
                    .execute(&statement, &[&finished])
                    .await
                    .map_err(failed("delete signals"))?;
            }
        }
        let (stored, deleted): (Vec<_>, Vec<_>) = std::mem::take(&mut self.signals)
            .into_iter()
            .partition(|(_, record)| record.is_some());
        if !stored.is_empty() {
            let statement = run("INSERT INTO strata_signals (instance, seq, record)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bytea[])
                 ON CONFLICT (instance, seq) DO UPDATE SET record = EXCLUDED.record")
            .await?;
            let instances: Vec<i64> = stored.iter().map(|((instance, _), _)| *instance).collect();
            let seqs: Vec<i64> = stored.iter().map(|((_, seq), _)| *seq).collect();
            let records: Vec<&[u8]> = stored.iter().filter_map(|(_, record)| record.as_deref()).collect();
            transaction
                .execute(&statement, &[&instances, &seqs, &records])
                .await
                .map_err(failed("write signals"))?;
        }
        if !deleted.is_empty() {
            let statement = run("DELETE FROM strata_signals WHERE (instance, seq) IN
                 (SELECT * FROM UNNEST($1::bigint[], $2::bigint[]))")
            .await?;
            let instances: Vec<i64> = deleted.iter().map(|((instance, _), _)| *instance).collect();
            let seqs: Vec<i64> = deleted.iter().map(|((_, seq), _)| *seq).collect();
            transaction
                .execute(&statement, &[&instances, &seqs])
                .await
                .map_err(failed("delete signals"))?;
        }
        let applied = self.decide_residency(&transaction).await?;
        for (schedule, fire_ms) in &self.fires {
            // Only a later fire than the one handled: of processes racing for a fire, one wins.
            let statement = run(
                "INSERT INTO strata_schedule_fires AS handled (schedule, fire_ms) VALUES ($1, $2)
                 ON CONFLICT (schedule) DO UPDATE SET fire_ms = EXCLUDED.fire_ms
                 WHERE handled.fire_ms < EXCLUDED.fire_ms",
            )
            .await?;
            let written = transaction
                .execute(&statement, &[schedule, fire_ms])
                .await
                .map_err(failed("write schedule fire"))?;
            if written == 0 {
                return Err(StoreError::FireTaken {
                    schedule: schedule.clone(),
                    fire_ms: unsigned(*fire_ms),
                });
            }
        }
        for config in &self.configs {
            let statement = run(
                "INSERT INTO strata_configs (generation, source, text, applied_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (generation) DO NOTHING",
            )
            .await?;
            let written = transaction
                .execute(
                    &statement,
                    &[
                        &signed(config.generation),
                        &config.source,
                        &config.text,
                        &signed(config.applied_at_ms),
                    ],
                )
                .await
                .map_err(failed("write config"))?;
            if written == 0 {
                return Err(StoreError::ConfigTaken {
                    generation: config.generation,
                });
            }
        }
        for (workflow, record) in &self.jobs {
            let statement = run("INSERT INTO strata_migration_jobs (workflow, record) VALUES ($1, $2)
                 ON CONFLICT (workflow) DO UPDATE SET record = EXCLUDED.record")
            .await?;
            transaction
                .execute(&statement, &[workflow, record])
                .await
                .map_err(failed("write migration job"))?;
        }
        for (name, (record, revision)) in &self.rollouts {
            // Only a write made from the newest copy: one more transition than the stored one.
            let statement = run(
                "INSERT INTO strata_rollouts AS stored (name, record, revision) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record, revision = EXCLUDED.revision
                 WHERE stored.revision < EXCLUDED.revision",
            )
            .await?;
            let written = transaction
                .execute(&statement, &[name, record, revision])
                .await
                .map_err(failed("write rollout"))?;
            if written == 0 {
                return Err(StoreError::RolloutChanged { name: name.clone() });
            }
        }
        for (id, reason) in &self.quarantines {
            let statement = run("INSERT INTO strata_quarantine (id, reason, raw)
                 VALUES ($1, $2, COALESCE((SELECT record FROM strata_instances WHERE id = $1), ''::bytea))
                 ON CONFLICT (id) DO UPDATE SET reason = EXCLUDED.reason, raw = EXCLUDED.raw")
            .await?;
            transaction
                .execute(&statement, &[id, reason])
                .await
                .map_err(failed("quarantine"))?;
            let statement = run("DELETE FROM strata_instances WHERE id = $1").await?;
            transaction
                .execute(&statement, &[id])
                .await
                .map_err(failed("quarantine"))?;
        }
        transaction.commit().await.map_err(failed("commit"))?;
        Ok(applied)
    }

    /// Writes counters and statuses and decides residency, in the transaction: every touched
    /// version row is locked (in one order, so that workers never deadlock), a start on a version
    /// not `Active` and a retirement with live instances are refused, and a `Draining` version
    /// left with no live instance becomes `Drained`.
    async fn decide_residency(&self, transaction: &deadpool_postgres::Transaction<'_>) -> Result<Applied, StoreError> {
        let run = |sql: &'static str| async { transaction.prepare_cached(sql).await.map_err(failed("commit")) };
        let mut keys: Vec<&VersionKey> = self.counters.keys().chain(self.statuses.keys()).collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Applied::default());
        }
        let key_workflows: Vec<&str> = keys.iter().map(|key| key.workflow.as_str()).collect();
        let key_versions: Vec<String> = keys.iter().map(|key| key.version.to_string()).collect();
        let statement = run("INSERT INTO strata_versions (workflow, version)
             SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING")
        .await?;
        transaction
            .execute(&statement, &[&key_workflows, &key_versions])
            .await
            .map_err(failed("lock versions"))?;
        let statement = run("SELECT workflow, version, status FROM strata_versions
             WHERE (workflow, version) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
             ORDER BY workflow, version FOR UPDATE")
        .await?;
        let locked = transaction
            .query(&statement, &[&key_workflows, &key_versions])
            .await
            .map_err(failed("lock versions"))?;
        for row in &locked {
            let status = row.get::<_, Option<String>>(2).as_deref().and_then(status_from_text);
            let Some(status) = status.filter(|status| *status != VersionStatus::Active) else {
                continue;
            };
            let (workflow, version): (String, String) = (row.get(0), row.get(1));
            let starts = self.counters.iter().find(|(key, sum)| {
                sum.delta.started > 0 && key.workflow == workflow && key.version.to_string() == version
            });
            if let Some((key, _)) = starts {
                return Err(StoreError::VersionNotAccepting {
                    key: key.clone(),
                    status,
                });
            }
        }
        if !self.counters.is_empty() {
            let statement = run(
                "INSERT INTO strata_versions AS current (workflow, version, live, started, completed,
                     failed, cancelled, moved_in, moved_out, first_start_ms, last_start_ms)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[])
                 ON CONFLICT (workflow, version) DO UPDATE SET
                     live = GREATEST(current.live + EXCLUDED.live, 0),
                     started = current.started + EXCLUDED.started,
                     completed = current.completed + EXCLUDED.completed,
                     failed = current.failed + EXCLUDED.failed,
                     cancelled = current.cancelled + EXCLUDED.cancelled,
                     moved_in = current.moved_in + EXCLUDED.moved_in,
                     moved_out = current.moved_out + EXCLUDED.moved_out,
                     first_start_ms = LEAST(current.first_start_ms, EXCLUDED.first_start_ms),
                     last_start_ms = GREATEST(current.last_start_ms, EXCLUDED.last_start_ms)",
            )
            .await?;
            let sums: Vec<(&VersionKey, &CounterSum)> = self.counters.iter().collect();
            let workflows: Vec<&str> = sums.iter().map(|(key, _)| key.workflow.as_str()).collect();
            let versions: Vec<String> = sums.iter().map(|(key, _)| key.version.to_string()).collect();
            let column = |value: fn(&CounterDelta) -> i64| -> Vec<i64> {
                sums.iter().map(|(_, sum)| value(&sum.delta)).collect()
            };
            let live = column(|delta| delta.live);
            let started = column(|delta| signed(delta.started));
            let completed = column(|delta| signed(delta.completed));
            let failed_count = column(|delta| signed(delta.failed));
            let cancelled = column(|delta| signed(delta.cancelled));
            let moved_in = column(|delta| signed(delta.moved_in));
            let moved_out = column(|delta| signed(delta.moved_out));
            let first: Vec<Option<i64>> = sums.iter().map(|(_, sum)| sum.first_start_ms).collect();
            let last: Vec<Option<i64>> = sums.iter().map(|(_, sum)| sum.last_start_ms).collect();
            transaction
                .execute(
                    &statement,
                    &[
                        &workflows,
                        &versions,
                        &live,
                        &started,
                        &completed,
                        &failed_count,
                        &cancelled,
                        &moved_in,
                        &moved_out,
                        &first,
                        &last,
                    ],
                )
                .await
                .map_err(failed("write counters"))?;
        }
        for (key, status) in &self.statuses {
            let statement = run(
                "UPDATE strata_versions SET status = $3 WHERE workflow = $1 AND version = $2
                 RETURNING live",
            )
            .await?;
            let row = transaction
                .query_one(
                    &statement,
                    &[&key.workflow, &key.version.to_string(), &version_text(*status)],
                )
                .await
                .map_err(failed("write version status"))?;
            let live = unsigned(row.get(0));
            if *status == VersionStatus::Retired && live > 0 {
                return Err(StoreError::LiveInstances { key: key.clone(), live });
            }
        }
        let statement = run("UPDATE strata_versions SET status = 'drained'
             WHERE (workflow, version) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
               AND status = 'draining' AND live = 0
             RETURNING workflow, version")
        .await?;
        let drained = transaction
            .query(&statement, &[&key_workflows, &key_versions])
            .await
            .map_err(failed("drain versions"))?
            .iter()
            .map(|row| {
                let (workflow, version): (String, String) = (row.get(0), row.get(1));
                keys.iter()
                    .find(|key| key.workflow == workflow && key.version.to_string() == version)
                    .map(|key| (*key).clone())
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        let statement = run(TOUCHED_VERSIONS_QUERY).await?;
        let versions = transaction
            .query(&statement, &[&key_workflows, &key_versions])
            .await
            .map_err(failed("read versions"))?
            .iter()
            .map(stored_version)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Applied { versions, drained })
    }
}

impl Store for PostgresStore {
    #[tracing::instrument(level = "trace", skip_all, fields(ops = ops.len()))]
    fn apply(&self, ops: &[Op]) -> Result<Applied, StoreError> {
        let writes = Writes::of(ops)?;
        let applied = self.run(writes.commit(self.pool.clone(), self.worker_id.clone()))?;
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
    fn recover(&self) -> Result<RecoveredState, StoreError> {
        let mut state = RecoveredState::default();
        for stored in Store::versions(self)? {
            if let Some(status) = stored.status {
                state.statuses.push((stored.key.clone(), status));
            }
            state.counters.push((stored.key, stored.counters));
        }
        Ok(state)
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

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }

    fn load_instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        let found = self.query(
            "load instance",
            "SELECT record FROM strata_instances WHERE id = $1",
            vec![Box::new(signed(id.0))],
            |row| {
                InstanceRecord::decode(row.get(0)).map_err(|message| StoreError::Backend {
                    operation: "load instance",
                    message,
                })
            },
        )?;
        Ok(found.into_iter().next())
    }

    fn live_instances(
        &self,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.page_instances(true, keep, limit)
    }

    fn finished_instances(
        &self,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.page_instances(false, keep, limit)
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
            "SELECT record FROM strata_migration_jobs ORDER BY workflow",
        )
    }

    fn rollouts(&self) -> Result<Vec<crate::rollout::RolloutRecord>, StoreError> {
        self.records("rollout", "SELECT record FROM strata_rollouts ORDER BY name")
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

/// Every version row.
const ALL_VERSIONS_QUERY: &str = "SELECT workflow, version, status, live, started, completed, failed, cancelled,
    moved_in, moved_out, first_start_ms, last_start_ms FROM strata_versions ORDER BY workflow, version";

/// The version rows of the keys in `$1` (workflows) and `$2` (versions).
const TOUCHED_VERSIONS_QUERY: &str = "SELECT workflow, version, status, live, started, completed, failed, cancelled,
    moved_in, moved_out, first_start_ms, last_start_ms FROM strata_versions
    WHERE (workflow, version) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))";

/// A `strata_versions` row read by `ALL_VERSIONS_QUERY` or `TOUCHED_VERSIONS_QUERY`.
fn stored_version(row: &tokio_postgres::Row) -> Result<StoredVersion, StoreError> {
    let workflow: String = row.get(0);
    let version: String = row.get(1);
    let version = semver::Version::parse(&version).map_err(|error| StoreError::Backend {
        operation: "read versions",
        message: format!("stored version '{version}' of '{workflow}' does not parse: {error}"),
    })?;
    let status: Option<String> = row.get(2);
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
            first_start_ms: row.get::<_, Option<i64>>(10).map(unsigned),
            last_start_ms: row.get::<_, Option<i64>>(11).map(unsigned),
        },
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
    signed(crate::observe::millis_saturating(lease))
}

impl Cluster for PostgresStore {
    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn heartbeat(&self, versions: &[VersionKey], _lease: Duration) -> Result<(), StoreError> {
        let names: Vec<String> = versions.iter().map(ToString::to_string).collect();
        let pool = self.pool.clone();
        let worker = self.worker_id.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_failed("heartbeat"))?;
            let statement = client
                .prepare_cached(&format!(
                    "INSERT INTO strata_workers (id, host, pid, started_at_ms, heartbeat_ms, versions)
                     VALUES ($1, $2, $3, {DATABASE_NOW_MS}, {DATABASE_NOW_MS}, $4)
                     ON CONFLICT (id) DO UPDATE SET heartbeat_ms = {DATABASE_NOW_MS}, versions = EXCLUDED.versions"
                ))
                .await
                .map_err(failed("heartbeat"))?;
            client
                .execute(
                    &statement,
                    &[&worker, &host_name(), &i64::from(std::process::id()), &names],
                )
                .await
                .map_err(failed("heartbeat"))?;
            Ok(())
        })
    }

    fn claim(&self, versions: &[VersionKey], lease: Duration, limit: usize) -> Result<Claimed, StoreError> {
        let (workflows, version_texts) = version_columns(versions);
        let pool = self.pool.clone();
        let worker = self.worker_id.clone();
        let lease = lease_ms(lease);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.run(async move {
            let client = pool.get().await.map_err(pool_failed("claim"))?;
            // An instance is claimable when no worker with a current lease holds it. Taking the
            // claim raises its fencing token, so the previous holder's writes no longer land.
            let statement = client
                .prepare_cached(&format!(
                    "WITH claimable AS (
                         SELECT i.id FROM strata_instances i
                         WHERE i.live
                           AND (i.workflow, i.version) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
                           AND i.owner IS DISTINCT FROM $3
                           AND NOT EXISTS (
                               SELECT 1 FROM strata_workers w
                               WHERE w.id = i.owner AND w.stopped_at_ms IS NULL
                                 AND w.heartbeat_ms >= {DATABASE_NOW_MS} - $4)
                         ORDER BY i.id
                         LIMIT $5
                         FOR UPDATE OF i SKIP LOCKED)
                     UPDATE strata_instances i SET owner = $3, fence = i.fence + 1
                     FROM claimable WHERE i.id = claimable.id
                     RETURNING i.id, i.fence, i.record"
                ))
                .await
                .map_err(failed("claim"))?;
            let rows = client
                .query(&statement, &[&workflows, &version_texts, &worker, &lease, &limit])
                .await
                .map_err(failed("claim"))?;
            let claimed: Vec<(i64, i64, Vec<u8>)> =
                rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect();
            let ids: Vec<i64> = claimed.iter().map(|(id, ..)| *id).collect();
            let statement = client
                .prepare_cached("SELECT record FROM strata_signals WHERE instance = ANY($1) ORDER BY instance, seq")
                .await
                .map_err(failed("claim"))?;
            let signals = client
                .query(&statement, &[&ids])
                .await
                .map_err(failed("claim"))?
                .iter()
                .map(|row| decode::<SignalRecord>("signal", row.get(0)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((claimed, signals))
        })?;
        let (records, signals) = rows;
        let mut claimed = Claimed {
            signals,
            ..Claimed::default()
        };
        for (id, fence, bytes) in records {
            let id = InstanceId(unsigned(id));
            match super::decode_live_record(id, &bytes) {
                Ok(mut record) => {
                    record.claim = unsigned(fence);
                    claimed.live.push(record);
                }
                Err(corrupt) => claimed.corrupt.push(corrupt),
            }
        }
        Ok(claimed)
    }

    fn leave(&self) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let worker = self.worker_id.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_failed("leave"))?;
            let transaction = client.transaction().await.map_err(failed("leave"))?;
            transaction
                .execute(
                    "UPDATE strata_instances SET owner = NULL WHERE owner = $1 AND live",
                    &[&worker],
                )
                .await
                .map_err(failed("leave"))?;
            transaction
                .execute(
                    &format!("UPDATE strata_workers SET stopped_at_ms = {DATABASE_NOW_MS} WHERE id = $1"),
                    &[&worker],
                )
                .await
                .map_err(failed("leave"))?;
            transaction.commit().await.map_err(failed("leave"))
        })
    }

    fn deliver_signal(&self, signal: &SignalRecord) -> Result<bool, StoreError> {
        let record = encode("signal", signal)?;
        let (instance, seq) = (signed(signal.instance.0), signed(signal.seq));
        let pool = self.pool.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_failed("deliver signal"))?;
            let transaction = client.transaction().await.map_err(failed("deliver signal"))?;
            // The instance row is locked while the signal goes in, so a finish committing at the
            // same time either comes first (nothing stored) or sees the signal.
            let stored = transaction
                .execute(
                    "INSERT INTO strata_signals (instance, seq, record)
                     SELECT $1, $2, $3 WHERE EXISTS
                         (SELECT 1 FROM strata_instances WHERE id = $1 AND live FOR SHARE)",
                    &[&instance, &seq, &record],
                )
                .await
                .map_err(failed("deliver signal"))?;
            if stored == 1 {
                transaction
                    .execute("SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &instance.to_string()])
                    .await
                    .map_err(failed("wake the holder"))?;
            }
            transaction.commit().await.map_err(failed("deliver signal"))?;
            Ok(stored == 1)
        })
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

    fn wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<InstanceId>> {
        self.wakeups.lock().take()
    }

    fn lead(&self, role: &str, lease: Duration) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO strata_leases AS current (role, holder, until_ms) VALUES ($1, $2, {DATABASE_NOW_MS} + $3)
             ON CONFLICT (role) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms
             WHERE current.holder = EXCLUDED.holder OR current.until_ms < {DATABASE_NOW_MS}
             RETURNING holder"
        );
        let (pool, role, worker, lease) = (
            self.pool.clone(),
            role.to_string(),
            self.worker_id.clone(),
            lease_ms(lease),
        );
        self.run(async move {
            let client = pool.get().await.map_err(pool_failed("lead"))?;
            let rows = client
                .query(&sql, &[&role, &worker, &lease])
                .await
                .map_err(failed("lead"))?;
            Ok(!rows.is_empty())
        })
    }

    fn workers(&self, lease: Duration) -> Result<Vec<WorkerInfo>, StoreError> {
        let sql = format!(
            "SELECT id, host, pid, started_at_ms, heartbeat_ms, versions,
                    stopped_at_ms IS NULL AND heartbeat_ms >= {DATABASE_NOW_MS} - $1
             FROM strata_workers ORDER BY started_at_ms, id"
        );
        let pool = self.pool.clone();
        let lease = lease_ms(lease);
        let rows = self.run(async move {
            let client = pool.get().await.map_err(pool_failed("read workers"))?;
            let rows = client.query(&sql, &[&lease]).await.map_err(failed("read workers"))?;
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
