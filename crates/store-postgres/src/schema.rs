//! Strata's own tables in PostgreSQL and the versioned migrations that create and upgrade them.
//!
//! Migrations are numbered from 1 and applied in order inside one transaction that first takes a
//! transaction-scoped advisory lock, so engines starting at once on an empty database serialise
//! here and all succeed; `strata_schema` records each applied number. A database whose newest
//! applied migration is above this build's is refused: a newer Strata wrote it.

use crate::parameters::typed;
use tokio_postgres::Client;

use crate::failed;
use strata_store::StoreError;

/// The key of the advisory lock held while migrations run (any fixed number; "STRATA" in ASCII).
const MIGRATION_LOCK: i64 = 0x5354_5241_5441;

/// Each migration: its number, what it does, and its SQL.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "instances, signals, versions, history, workers", V1),
    (2, "id blocks shared by every worker, claims by owner", V2),
    (3, "rollout revisions, role leases", V3),
    (
        4,
        "marks that settle writes whose answer a broken connection lost, worker leases and metrics",
        V4,
    ),
    (5, "each worker's share of a background migration", V5),
    (6, "finished instances by finish time, for retention", V6),
    (7, "which worker drained a version and has not announced it yet", V7),
    (8, "how many times each version's status was written", V8),
    (9, "each instance's history", V9),
    (10, "how many ended instances were revived on each version", V10),
    (11, "each version's measure totals, and its shadow instances apart", V11),
    (12, "waiting instances by holder and wake time", V12),
    (13, "two indexes of live instances no statement reads any more", V13),
    (14, "claims by owner and claim number", V14),
];

/// The newest schema this build knows.
pub(crate) const SCHEMA_VERSION: i32 = 14;

/// Schema 1. Instances keep their encoded record (the same MessagePack as on sled) beside the
/// columns the database must query: liveness, version, status, due time and the claim.
const V1: &str = "
CREATE TABLE strata_meta (
    key text PRIMARY KEY,
    value bigint NOT NULL
);
CREATE TABLE strata_instances (
    id bigint PRIMARY KEY,
    workflow text NOT NULL,
    version text NOT NULL,
    live boolean NOT NULL,
    status text NOT NULL,
    due_ms bigint,
    owner text,
    lease_until_ms bigint,
    fence bigint NOT NULL DEFAULT 0,
    record bytea NOT NULL
);
CREATE INDEX strata_instances_live ON strata_instances (workflow, version) WHERE live;
CREATE INDEX strata_instances_due ON strata_instances (due_ms) WHERE live AND due_ms IS NOT NULL;
CREATE INDEX strata_instances_finished ON strata_instances (id) WHERE NOT live;
CREATE TABLE strata_quarantine (
    id bigint PRIMARY KEY,
    reason text NOT NULL,
    raw bytea NOT NULL
);
CREATE TABLE strata_signals (
    instance bigint NOT NULL,
    seq bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (instance, seq)
);
CREATE TABLE strata_versions (
    workflow text NOT NULL,
    version text NOT NULL,
    status text,
    live bigint NOT NULL DEFAULT 0,
    started bigint NOT NULL DEFAULT 0,
    completed bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    moved_in bigint NOT NULL DEFAULT 0,
    moved_out bigint NOT NULL DEFAULT 0,
    first_start_ms bigint,
    last_start_ms bigint,
    PRIMARY KEY (workflow, version)
);
CREATE TABLE strata_configs (
    generation bigint PRIMARY KEY,
    source text NOT NULL,
    text text NOT NULL,
    applied_at_ms bigint NOT NULL
);
CREATE TABLE strata_schedule_fires (
    schedule text PRIMARY KEY,
    fire_ms bigint NOT NULL
);
CREATE TABLE strata_migration_jobs (
    workflow text PRIMARY KEY,
    record bytea NOT NULL
);
CREATE TABLE strata_rollouts (
    name text PRIMARY KEY,
    record bytea NOT NULL
);
CREATE TABLE strata_workers (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid bigint NOT NULL,
    started_at_ms bigint NOT NULL,
    heartbeat_ms bigint NOT NULL,
    versions text[] NOT NULL,
    stopped_at_ms bigint
);
";

/// Schema 2. Ids and signal numbers come in blocks of 1024 from sequences, so workers never
/// collide (a block starts at the value `nextval` returns); the sequences start above the ids
/// already stored. Claims are looked up by owner.
const V2: &str = "
CREATE SEQUENCE strata_instance_blocks INCREMENT BY 1024 START WITH 1;
SELECT setval('strata_instance_blocks',
    GREATEST((SELECT max(id) FROM strata_instances), (SELECT max(id) FROM strata_quarantine), 0) + 1, false);
CREATE SEQUENCE strata_signal_blocks INCREMENT BY 1024 START WITH 1;
SELECT setval('strata_signal_blocks', COALESCE((SELECT max(seq) FROM strata_signals), 0) + 1, false);
CREATE INDEX strata_instances_owner ON strata_instances (owner) WHERE live;
";

/// Schema 3. A rollout's revision (its number of transitions) makes its writes compare-and-set;
/// a role lease lets one worker at a time do what must be done once (evaluate rollouts).
const V3: &str = "
ALTER TABLE strata_rollouts ADD COLUMN revision bigint NOT NULL DEFAULT 0;
CREATE TABLE strata_leases (
    role text PRIMARY KEY,
    holder text NOT NULL,
    until_ms bigint NOT NULL
);
";

/// Schema 4. When a connection breaks while a write commits, the writer cannot tell from the
/// client whether it landed; a mark written in the same transaction tells it. A worker's
/// commits run one after another, so one row per worker holds its newest commit's number (and
/// the versions that commit drained, to announce them); each signal delivery leaves a mark until
/// its sender has its answer; a claim stamps the rows it takes with its number. Each worker
/// records its own lease, by which every other judges whether it is alive, and publishes its
/// metrics windows per version for the worker that evaluates rollouts. Instances keep their start
/// time in a column, so the oldest live one of each version is found in the whole cluster (rows
/// from before leave it empty).
const V4: &str = "
CREATE TABLE strata_commit_marks (
    worker text PRIMARY KEY,
    seq bigint NOT NULL,
    drained text[] NOT NULL
);
CREATE TABLE strata_delivery_marks (
    seq bigint PRIMARY KEY,
    worker text NOT NULL
);
ALTER TABLE strata_instances ADD COLUMN claimed_in bigint;
ALTER TABLE strata_workers ADD COLUMN lease_ms bigint;
ALTER TABLE strata_instances ADD COLUMN created_ms bigint;
CREATE INDEX strata_instances_oldest ON strata_instances (workflow, version, created_ms, id) WHERE live;
CREATE TABLE strata_worker_metrics (
    worker text NOT NULL,
    workflow text NOT NULL,
    version text NOT NULL,
    metrics bytea NOT NULL,
    PRIMARY KEY (worker, workflow, version)
);
";

/// Schema 5: a background migration runs on every worker with the workflow's code, each over
/// the instances it holds; each worker's progress is its own row, so no two workers write one.
const V5: &str = "
CREATE TABLE strata_migration_shares (
    workflow text NOT NULL,
    worker text NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (workflow, worker)
);
";

/// Schema 6: when each instance finished, indexed, so retention removes the oldest without a
/// scan. Rows finished before it count from their start time (an earlier bound).
const V6: &str = "
ALTER TABLE strata_instances ADD COLUMN finished_ms bigint;
UPDATE strata_instances SET finished_ms = COALESCE(created_ms, 0) WHERE NOT live;
CREATE INDEX strata_instances_by_finish ON strata_instances (finished_ms, id) WHERE NOT live;
CREATE INDEX strata_instances_by_workflow ON strata_instances (workflow, id) WHERE NOT live;
CREATE TABLE strata_retention (
    single boolean PRIMARY KEY DEFAULT true CHECK (single),
    highest_removed bigint NOT NULL
);
";

/// Schema 7: the worker whose commit drained a version, until it has announced `Drained`; the
/// worker evaluating rollouts announces it if that worker stopped first. Rows drained before it
/// count as announced.
const V7: &str = "
ALTER TABLE strata_versions ADD COLUMN drained_by text;
";

/// Schema 8: how many times each version's status was written. A drain can be undone, so a
/// status no longer only moves forward: of two reads of one version, the one with more changes
/// is newer. Rows from before it start at 0.
const V8: &str = "
ALTER TABLE strata_versions ADD COLUMN status_changes bigint NOT NULL DEFAULT 0;
";

/// Schema 9: each instance's history, in chunks of entries (`seq`: the first entry's number),
/// written in the commit that fills a chunk and removed with the instance.
const V9: &str = "
CREATE TABLE strata_history (
    instance bigint NOT NULL,
    seq bigint NOT NULL,
    entry bytea NOT NULL,
    PRIMARY KEY (instance, seq)
);
";

/// Schema 10: how many ended (failed or cancelled) instances were revived on each version.
const V10: &str = "
ALTER TABLE strata_versions ADD COLUMN revived bigint NOT NULL DEFAULT 0;
";

/// Schema 11: what each version's finished instances recorded of its measures, by measure:
/// `{"cost": [sum in millionths, count]}`, added to by the commits that finish instances; and
/// what its shadow instances (a rollout's shadow stage) did, counted apart from its real ones.
const V11: &str = "
ALTER TABLE strata_versions ADD COLUMN measures jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE strata_versions ADD COLUMN shadow_started bigint NOT NULL DEFAULT 0;
ALTER TABLE strata_versions ADD COLUMN shadow_completed bigint NOT NULL DEFAULT 0;
ALTER TABLE strata_versions ADD COLUMN shadow_failed bigint NOT NULL DEFAULT 0;
ALTER TABLE strata_versions ADD COLUMN shadow_cancelled bigint NOT NULL DEFAULT 0;
ALTER TABLE strata_versions ADD COLUMN shadow_measures jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE TABLE strata_shadow_pairs (
    rollout text NOT NULL,
    real_id bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (rollout, real_id)
);
CREATE INDEX strata_shadow_pairs_real ON strata_shadow_pairs (real_id);
";

/// Schema 12. A worker loads the idle instances it holds as they come due: those that wait
/// (`status <> 'ready'`) by holder and wake time (`Phase::wake_ms`: its timer's due time, else the
/// largest bigint), from an index, so the read costs what it returns. Ready rows are left out of
/// it, so a step's update of a running instance maintains no entry of it.
const V12: &str = "
CREATE INDEX strata_instances_wake ON strata_instances (owner, (COALESCE(due_ms, 9223372036854775807)), id) WHERE live AND status <> 'ready';
";

/// Schema 13. Every live row's insert and most of its updates maintained two indexes that no
/// statement reads any more: `strata_instances_due` (by due time, for all holders; a worker reads
/// what is due by `strata_instances_wake`, its own) and `strata_instances_live` (by workflow and
/// version, which `strata_instances_oldest` begins with, under the same condition).
const V13: &str = "
DROP INDEX IF EXISTS strata_instances_due;
DROP INDEX IF EXISTS strata_instances_live;
";

/// Schema 14. Claims by owner and the claim that took them (`claimed_in`), in place of by owner
/// alone: what a background migration's shares have not covered is, for each live holder, its rows
/// claimed after its share, a range of this index, where it was every live row of the workflow.
/// The index stays one entry per live row; `claimed_in` changes only when `owner` does, or when a
/// lost claim's answer is taken in again.
const V14: &str = "
CREATE INDEX strata_instances_owner_claim ON strata_instances (owner, claimed_in) WHERE live;
DROP INDEX IF EXISTS strata_instances_owner;
";

/// The wake time of a live row (`Phase::wake_ms`) of `strata_instances` named `row` in a
/// statement: 0 when ready, else what `strata_instances_wake` indexes.
pub(crate) fn wake_of(row: &str) -> String {
    format!("(CASE WHEN {row}.status = 'ready' THEN 0 ELSE COALESCE({row}.due_ms, 9223372036854775807) END)")
}

/// The wake time of a waiting row, as `strata_instances_wake` indexes it.
pub(crate) const WAITING_WAKE: &str = "COALESCE(due_ms, 9223372036854775807)";

/// Brings the database to `SCHEMA_VERSION`, or refuses one written by a newer Strata.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let transaction = client.transaction().await.map_err(failed("migrate schema"))?;
    transaction
        .execute_typed("SELECT pg_advisory_xact_lock($1)", typed![&MIGRATION_LOCK])
        .await
        .map_err(failed("lock schema"))?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS strata_schema (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(failed("create schema table"))?;
    let row = transaction
        .query_typed_one("SELECT COALESCE(max(version), 0) FROM strata_schema", typed![])
        .await
        .map_err(failed("read schema version"))?;
    let found: i32 = row.get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::backend(
            strata_store::BackendFailure::Newer,
            format!("the PostgreSQL database has Strata schema {found}, but this build knows schemas up to {SCHEMA_VERSION}; upgrade Strata to use it"),
        ));
    }
    for (number, description, sql) in MIGRATIONS.iter().filter(|(number, ..)| *number > found) {
        tracing::info!(schema = number, description, "applying a PostgreSQL schema migration");
        transaction.batch_execute(sql).await.map_err(failed("migrate schema"))?;
        transaction
            .execute_typed(
                "INSERT INTO strata_schema (version, description) VALUES ($1, $2)",
                typed![number, description],
            )
            .await
            .map_err(failed("record schema version"))?;
    }
    transaction.commit().await.map_err(failed("migrate schema"))
}
