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
    AppliedConfig, CorruptRecord, CounterDelta, DatabaseProblem, MigrationJobRecord, Op, RecoveredState, Store,
    StoreError, StoreStats, VersionCounters,
};
use crate::instance::{InstanceId, InstanceRecord, VersionKey, RECORD_FORMAT};
use crate::registry::VersionStatus;

/// Connections a store keeps at most: the commit thread, reads, and room for a slow one.
const POOL_SIZE: usize = 4;
/// How long a call waits for a connection, or for a new one to be made, before it fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished instances read per round trip while listing.
const PAGE: i64 = 512;

/// The PostgreSQL-backed store.
pub struct PostgresStore {
    /// The runtime the pool and every query run on; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// `user@host:port/database`, for messages.
    target: String,
    applies: AtomicU64,
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

fn failed(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
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
            config,
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
        let store = PostgresStore {
            runtime: Some(runtime),
            pool,
            target,
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

    /// Every instance row's version and counts.
    fn versions(&self) -> Result<Vec<(VersionKey, Option<VersionStatus>, VersionCounters)>, StoreError> {
        self.query(
            "read versions",
            "SELECT workflow, version, status, live, started, completed, failed, cancelled, moved_in, moved_out,
                    first_start_ms, last_start_ms
             FROM strata_versions",
            Vec::new(),
            |row| {
                let workflow: String = row.get(0);
                let version: String = row.get(1);
                let version = semver::Version::parse(&version).map_err(|error| StoreError::Backend {
                    operation: "read versions",
                    message: format!("stored version '{version}' of '{workflow}' does not parse: {error}"),
                })?;
                let status: Option<String> = row.get(2);
                let counters = VersionCounters {
                    live: unsigned(row.get(3)),
                    started: unsigned(row.get(4)),
                    completed: unsigned(row.get(5)),
                    failed: unsigned(row.get(6)),
                    cancelled: unsigned(row.get(7)),
                    moved_in: unsigned(row.get(8)),
                    moved_out: unsigned(row.get(9)),
                    first_start_ms: row.get::<_, Option<i64>>(10).map(unsigned),
                    last_start_ms: row.get::<_, Option<i64>>(11).map(unsigned),
                };
                Ok((
                    VersionKey::new(workflow, version),
                    status.as_deref().and_then(status_from_text),
                    counters,
                ))
            },
        )
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
    rollouts: HashMap<String, Vec<u8>>,
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
                    writes
                        .rollouts
                        .insert(rollout.spec.name.clone(), encode("rollout", rollout)?);
                }
                Op::QuarantineRecord { id, reason } => writes.quarantines.push((signed(id.0), reason.clone())),
            }
        }
        Ok(writes)
    }

    /// Sends the writes in one transaction: all of them or none.
    async fn commit(self, pool: Pool) -> Result<(), StoreError> {
        let mut client = pool.get().await.map_err(pool_failed("commit"))?;
        let transaction = client.transaction().await.map_err(failed("begin"))?;
        let run = |sql: &'static str| async { transaction.prepare_cached(sql).await.map_err(failed("commit")) };
        if !self.instances.is_empty() {
            let statement = run("INSERT INTO strata_instances (id, workflow, version, live, status, due_ms, record)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bigint[], $7::bytea[])
                 ON CONFLICT (id) DO UPDATE SET workflow = EXCLUDED.workflow, version = EXCLUDED.version,
                     live = EXCLUDED.live, status = EXCLUDED.status, due_ms = EXCLUDED.due_ms, record = EXCLUDED.record")
            .await?;
            let ids: Vec<i64> = self.instances.iter().map(|row| row.id).collect();
            let workflows: Vec<&str> = self.instances.iter().map(|row| row.workflow.as_str()).collect();
            let versions: Vec<&str> = self.instances.iter().map(|row| row.version.as_str()).collect();
            let live: Vec<bool> = self.instances.iter().map(|row| row.live).collect();
            let statuses: Vec<&str> = self.instances.iter().map(|row| row.status).collect();
            let due: Vec<Option<i64>> = self.instances.iter().map(|row| row.due_ms).collect();
            let records: Vec<&[u8]> = self.instances.iter().map(|row| row.record.as_slice()).collect();
            transaction
                .execute(
                    &statement,
                    &[&ids, &workflows, &versions, &live, &statuses, &due, &records],
                )
                .await
                .map_err(failed("write instances"))?;
        }
        let (stored, deleted): (Vec<_>, Vec<_>) = self.signals.into_iter().partition(|(_, record)| record.is_some());
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
                "INSERT INTO strata_versions (workflow, version, status) VALUES ($1, $2, $3)
                 ON CONFLICT (workflow, version) DO UPDATE SET status = EXCLUDED.status",
            )
            .await?;
            transaction
                .execute(
                    &statement,
                    &[&key.workflow, &key.version.to_string(), &version_text(*status)],
                )
                .await
                .map_err(failed("write version status"))?;
        }
        for (schedule, fire_ms) in &self.fires {
            let statement = run("INSERT INTO strata_schedule_fires (schedule, fire_ms) VALUES ($1, $2)
                 ON CONFLICT (schedule) DO UPDATE SET fire_ms = EXCLUDED.fire_ms")
            .await?;
            transaction
                .execute(&statement, &[schedule, fire_ms])
                .await
                .map_err(failed("write schedule fire"))?;
        }
        for config in &self.configs {
            let statement = run(
                "INSERT INTO strata_configs (generation, source, text, applied_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (generation) DO UPDATE SET source = EXCLUDED.source, text = EXCLUDED.text,
                     applied_at_ms = EXCLUDED.applied_at_ms",
            )
            .await?;
            transaction
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
        }
        for (table_statement, rows, operation) in [
            (
                "INSERT INTO strata_migration_jobs (workflow, record) VALUES ($1, $2)
                 ON CONFLICT (workflow) DO UPDATE SET record = EXCLUDED.record",
                &self.jobs,
                "write migration job",
            ),
            (
                "INSERT INTO strata_rollouts (name, record) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
                &self.rollouts,
                "write rollout",
            ),
        ] {
            for (name, record) in rows {
                let statement = run(table_statement).await?;
                transaction
                    .execute(&statement, &[name, record])
                    .await
                    .map_err(failed(operation))?;
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
        transaction.commit().await.map_err(failed("commit"))
    }
}

impl Store for PostgresStore {
    #[tracing::instrument(level = "trace", skip_all, fields(ops = ops.len()))]
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let writes = Writes::of(ops)?;
        self.run(writes.commit(self.pool.clone()))?;
        self.applies.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A committed transaction is durable (the server's `synchronous_commit`): nothing to do.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn recover(&self) -> Result<RecoveredState, StoreError> {
        let mut state = RecoveredState::default();
        let live = self.query(
            "read live instances",
            "SELECT id, record FROM strata_instances WHERE live ORDER BY id",
            Vec::new(),
            |row| Ok((InstanceId(unsigned(row.get(0))), row.get::<_, Vec<u8>>(1))),
        )?;
        for (id, bytes) in live {
            match super::decode_live_record(id, &bytes) {
                Ok(record) => state.live.push(record),
                Err(corrupt) => state.corrupt.push(corrupt),
            }
        }
        state.signals = self.records("signal", "SELECT record FROM strata_signals ORDER BY instance, seq")?;
        for (key, status, counters) in self.versions()? {
            if let Some(status) = status {
                state.statuses.push((key.clone(), status));
            }
            state.counters.push((key, counters));
        }
        let next = self.query(
            "read the highest ids",
            "SELECT GREATEST((SELECT max(id) FROM strata_instances), (SELECT max(id) FROM strata_quarantine), 0) + 1,
                    COALESCE((SELECT max(seq) FROM strata_signals), 0) + 1",
            Vec::new(),
            |row| Ok((unsigned(row.get(0)), unsigned(row.get(1)))),
        )?;
        (state.next_instance_id, state.next_signal_seq) = next.first().copied().unwrap_or((1, 1));
        Ok(state)
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

    fn finished_instances(
        &self,
        keep: &mut dyn FnMut(&InstanceRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut found = Vec::new();
        let mut after = -1i64;
        while found.len() < limit {
            let page = self.query(
                "read finished instances",
                "SELECT id, record FROM strata_instances WHERE NOT live AND id > $1 ORDER BY id LIMIT $2",
                vec![Box::new(after), Box::new(PAGE)],
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
                    Err(reason) => {
                        tracing::warn!(%reason, "skipping a finished instance record that does not decode")
                    }
                }
            }
        }
        Ok(found)
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
            |row| {
                Ok(AppliedConfig {
                    generation: unsigned(row.get(0)),
                    source: row.get(1),
                    text: row.get(2),
                    applied_at_ms: unsigned(row.get(3)),
                })
            },
        )
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
