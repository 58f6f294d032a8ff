//! One commit on PostgreSQL: a group of instances' ops gathered per kind of row and sent as one
//! transaction with one statement per kind (rows passed as arrays), fenced by each instance's
//! claim, residency decided inside it, and settled when a broken connection loses its answer.

use std::collections::HashMap;

use deadpool_postgres::Pool;

use crate::parameters::typed;
use crate::TOUCHED_VERSIONS_QUERY;
use crate::{encode, failed, pool_failed, signed, stored_version, unsigned, version_row_columns, version_text};
use strata_core::instance::EncodedInstance;
use strata_core::instance::{InstanceId, VersionKey};
use strata_core::measure::MeasureTotals;
use strata_core::version::VersionStatus;
use strata_store::residency::VersionWrite;
use strata_store::{Applied, AppliedConfig, CounterDelta, Op, StoreError};

/// The mark of commit `seq` of `worker` if it landed: the versions it drained.
pub(super) async fn commit_mark(
    client: &tokio_postgres::Client,
    worker: &str,
    seq: i64,
) -> Result<Option<Vec<String>>, StoreError> {
    let mark = client
        .query_typed_opt(
            "SELECT drained FROM strata_commit_marks WHERE worker = $1 AND seq = $2",
            typed![&worker, &seq],
        )
        .await
        .map_err(failed("look up a commit"))?;
    Ok(mark.map(|row| row.get(0)))
}

/// Why a commit failed: surely not applied, or with its answer lost (applied or not).
pub(super) enum CommitFailure {
    /// Nothing was applied.
    NotApplied(StoreError),
    /// The connection broke after COMMIT was sent.
    Unknown(StoreError),
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
    created_ms: i64,
    /// When it finished, once it has (retention counts from it).
    finished_ms: Option<i64>,
    record: Vec<u8>,
}

impl InstanceRow {
    /// The row of an encoded record.
    fn of(record: &EncodedInstance) -> InstanceRow {
        InstanceRow {
            id: signed(record.id.0),
            claim: signed(record.claim),
            workflow: record.key.workflow.clone(),
            version: record.key.version.to_string(),
            live: !record.finished,
            status: record.status.as_str(),
            due_ms: record.due_ms.map(signed),
            created_ms: signed(record.created_at_ms),
            finished_ms: record.finished.then(|| signed(record.updated_at_ms)),
            record: record.bytes.clone(),
        }
    }
}

/// History chunks to write and to drop, as statement arrays.
#[derive(Default)]
struct HistoryRows<'a> {
    added_instances: Vec<i64>,
    added_seqs: Vec<i64>,
    added_entries: Vec<&'a [u8]>,
    dropped_instances: Vec<i64>,
    dropped_seqs: Vec<i64>,
}

/// The upsert's new value of the measure totals column `$column` (`{"cost": [sum, count]}`):
/// the row's totals plus the write's, measure by measure, saturating as the engine does; the
/// row's own when the write adds none.
macro_rules! added_measures {
    ($column:literal) => {
        concat!(
            "CASE WHEN EXCLUDED.",
            $column,
            " = '{}'::jsonb THEN current.",
            $column,
            " ELSE (
                     SELECT COALESCE(jsonb_object_agg(name, total), '{}'::jsonb) FROM (
                         SELECT name, jsonb_build_array(
                             LEAST(GREATEST(SUM((total->>0)::numeric), -9223372036854775808), 9223372036854775807),
                             LEAST(SUM((total->>1)::numeric), 9223372036854775807)) AS total
                         FROM (SELECT * FROM jsonb_each(current.",
            $column,
            ")
                               UNION ALL SELECT * FROM jsonb_each(EXCLUDED.",
            $column,
            ")) AS added (name, total)
                         GROUP BY name) AS summed) END"
        )
    };
}

/// The new value of the measure totals column `$column` in the counters upsert: the row's totals
/// plus the write's (`adding`), or the row's own (`keeping`, a write that adds none).
macro_rules! measures_set {
    (adding, $column:literal) => {
        added_measures!($column)
    };
    (keeping, $column:literal) => {
        concat!("current.", $column)
    };
}

/// The upsert that adds a write's counter deltas to every version it touches, locks their rows
/// and returns them as they are now; `$how` is how it sets the measure totals
/// ([`measures_set`]).
macro_rules! write_counters {
    ($how:ident) => {
        concat!(
            "INSERT INTO strata_versions AS current (workflow, version, live, started, completed,
                 failed, cancelled, moved_in, moved_out, first_start_ms, last_start_ms, revived, measures,
                 shadow_started, shadow_completed, shadow_failed, shadow_cancelled, shadow_measures)
             SELECT workflow, version, live, started, completed, failed, cancelled, moved_in, moved_out,
                 first_start_ms, last_start_ms, revived, measures::jsonb,
                 shadow_started, shadow_completed, shadow_failed, shadow_cancelled, shadow_measures::jsonb
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                 $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[],
                 $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::text[])
                 AS given (workflow, version, live, started, completed, failed, cancelled, moved_in, moved_out,
                     first_start_ms, last_start_ms, revived, measures,
                     shadow_started, shadow_completed, shadow_failed, shadow_cancelled, shadow_measures)
             ON CONFLICT (workflow, version) DO UPDATE SET
                 live = GREATEST(current.live + EXCLUDED.live, 0),
                 started = current.started + EXCLUDED.started,
                 completed = current.completed + EXCLUDED.completed,
                 failed = current.failed + EXCLUDED.failed,
                 cancelled = current.cancelled + EXCLUDED.cancelled,
                 moved_in = current.moved_in + EXCLUDED.moved_in,
                 moved_out = current.moved_out + EXCLUDED.moved_out,
                 revived = current.revived + EXCLUDED.revived,
                 first_start_ms = LEAST(current.first_start_ms, EXCLUDED.first_start_ms),
                 last_start_ms = GREATEST(current.last_start_ms, EXCLUDED.last_start_ms),
                 measures = ",
            measures_set!($how, "measures"),
            ",
                 shadow_started = current.shadow_started + EXCLUDED.shadow_started,
                 shadow_completed = current.shadow_completed + EXCLUDED.shadow_completed,
                 shadow_failed = current.shadow_failed + EXCLUDED.shadow_failed,
                 shadow_cancelled = current.shadow_cancelled + EXCLUDED.shadow_cancelled,
                 shadow_measures = ",
            measures_set!($how, "shadow_measures"),
            "
             RETURNING ",
            version_row_columns!()
        )
    };
}

/// The counters upsert of a write that adds measure totals.
const WRITE_COUNTERS_ADDING_MEASURES: &str = write_counters!(adding);

/// The counters upsert of a write that adds none: the row's totals are kept as they are.
const WRITE_COUNTERS_KEEPING_MEASURES: &str = write_counters!(keeping);

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
pub(super) struct Writes {
    instances: Vec<InstanceRow>,
    /// Ended instances revived: live again, held by the committing worker.
    revivals: Vec<InstanceRow>,
    instance_index: HashMap<i64, usize>,
    signals: HashMap<(i64, i64), Option<Vec<u8>>>,
    counters: HashMap<VersionKey, CounterSum>,
    statuses: HashMap<VersionKey, VersionStatus>,
    fires: HashMap<String, i64>,
    configs: Vec<AppliedConfig>,
    /// Migration job records by workflow and worker (empty: the job's own record).
    jobs: HashMap<(String, String), Vec<u8>>,
    rollouts: HashMap<String, (Vec<u8>, i64)>,
    /// Compared shadow pairs by rollout and real instance.
    shadow_pairs: HashMap<(String, i64), Vec<u8>>,
    quarantines: Vec<(i64, String)>,
    /// History chunks by instance and first entry number: the chunk, or `None` to drop it.
    history: HashMap<(i64, i64), Option<Vec<u8>>>,
}

impl Writes {
    pub(super) fn of(ops: &[Op]) -> Result<Writes, StoreError> {
        let mut writes = Writes::default();
        for op in ops {
            match op {
                Op::ReviveInstance(record) => writes.revivals.push(InstanceRow::of(record)),
                Op::PutInstance(record) => {
                    let row = InstanceRow::of(record);
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
                    sum.delta.add(delta);
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
                    writes.jobs.insert(
                        (job.workflow.clone(), job.worker.clone()),
                        encode("migration job", job)?,
                    );
                }
                Op::PutRollout(rollout) => {
                    let revision = i64::try_from(rollout.history.len()).unwrap_or(i64::MAX);
                    writes
                        .rollouts
                        .insert(rollout.spec.name.clone(), (encode("rollout", rollout)?, revision));
                }
                Op::QuarantineRecord { id, reason } => writes.quarantines.push((signed(id.0), reason.clone())),
                Op::PutShadowPair(pair) => {
                    writes.shadow_pairs.insert(
                        (pair.rollout.clone(), signed(pair.real.0)),
                        encode("shadow pair", pair)?,
                    );
                }
                Op::PutHistoryChunk {
                    instance,
                    first,
                    entries,
                } => {
                    writes
                        .history
                        .insert((signed(instance.0), signed(*first)), Some(entries.clone()));
                }
                Op::DropHistoryChunk { instance, first } => {
                    writes.history.insert((signed(instance.0), signed(*first)), None);
                }
            }
        }
        Ok(writes)
    }

    /// Sends the writes in one transaction, number `seq` of `worker`: all of them or none. An
    /// instance row is written only while `worker` holds its claim with the token the record
    /// carries (a new row is inserted claimed by `worker`); if any is not, nothing is written and
    /// the error names them. The transaction leaves `worker`'s commit mark at `seq`.
    pub(super) async fn commit(&self, pool: &Pool, worker: &str, seq: i64) -> Result<Applied, CommitFailure> {
        let mut client = pool
            .get()
            .await
            .map_err(pool_failed("commit"))
            .map_err(CommitFailure::NotApplied)?;
        let transaction = client
            .transaction()
            .await
            .map_err(failed("begin"))
            .map_err(CommitFailure::NotApplied)?;
        let applied = self
            .write(&transaction, worker)
            .await
            .map_err(CommitFailure::NotApplied)?;
        let drained: Vec<String> = applied.drained.iter().map(ToString::to_string).collect();
        transaction
            .execute_typed(
                "INSERT INTO strata_commit_marks (worker, seq, drained) VALUES ($1, $2, $3)
                 ON CONFLICT (worker) DO UPDATE SET seq = EXCLUDED.seq, drained = EXCLUDED.drained",
                typed![&worker, &seq, &drained],
            )
            .await
            .map_err(failed("mark the commit"))
            .map_err(CommitFailure::NotApplied)?;
        match transaction.commit().await.map_err(failed("commit")) {
            Ok(()) => Ok(applied),
            // The connection broke with COMMIT sent: it may have landed or not.
            Err(error) if error.is_unavailable() => Err(CommitFailure::Unknown(error)),
            Err(error) => Err(CommitFailure::NotApplied(error)),
        }
    }

    /// What commit `seq` of `worker` did, if it landed: the versions it touched as they are now,
    /// and those it drained (kept in its mark). `None`: it did not land.
    pub(super) async fn landed(&self, pool: &Pool, worker: &str, seq: i64) -> Result<Option<Applied>, StoreError> {
        let client = pool.get().await.map_err(pool_failed("look up a commit"))?;
        let Some(drained) = commit_mark(&client, worker, seq).await? else {
            return Ok(None);
        };
        let keys = self.version_keys();
        let (workflows, versions) = crate::version_columns(&keys);
        let versions = client
            .query_typed(TOUCHED_VERSIONS_QUERY, typed![&workflows, &versions])
            .await
            .map_err(failed("read versions"))?
            .iter()
            .map(stored_version)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Applied {
            versions,
            drained: keys
                .into_iter()
                .filter(|key| drained.contains(&key.to_string()))
                .collect(),
        }))
    }

    /// The history chunks added and dropped, as the arrays the statements take.
    fn history_rows(&self) -> HistoryRows<'_> {
        let mut rows = HistoryRows::default();
        for (&(instance, seq), entries) in &self.history {
            match entries {
                Some(entries) => {
                    rows.added_instances.push(instance);
                    rows.added_seqs.push(seq);
                    rows.added_entries.push(entries);
                }
                None => {
                    rows.dropped_instances.push(instance);
                    rows.dropped_seqs.push(seq);
                }
            }
        }
        rows
    }

    /// History chunks of a write without instance rows (which otherwise carry them): one
    /// statement for those added, one for those dropped.
    async fn write_history(&self, transaction: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
        let rows = self.history_rows();
        if !rows.added_instances.is_empty() {
            transaction
                .execute_typed(
                    "INSERT INTO strata_history (instance, seq, entry)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bytea[])
                 ON CONFLICT (instance, seq) DO UPDATE SET entry = EXCLUDED.entry",
                    typed![&rows.added_instances, &rows.added_seqs, &rows.added_entries],
                )
                .await
                .map_err(failed("write history"))?;
        }
        if !rows.dropped_instances.is_empty() {
            transaction
                .execute_typed(
                    "DELETE FROM strata_history WHERE (instance, seq) IN
                 (SELECT * FROM UNNEST($1::bigint[], $2::bigint[]))",
                    typed![&rows.dropped_instances, &rows.dropped_seqs],
                )
                .await
                .map_err(failed("drop history"))?;
        }
        Ok(())
    }

    /// Makes the revived instances live again, held by `worker` under the claim each record
    /// carries (the row's previous fence plus one): only rows still ended with that fence, or
    /// the write fails whole with [`StoreError::NoLongerEnded`].
    async fn write_revivals(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        worker: &str,
    ) -> Result<(), StoreError> {
        let rows = &self.revivals;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let versions: Vec<&str> = rows.iter().map(|row| row.version.as_str()).collect();
        let statuses: Vec<&str> = rows.iter().map(|row| row.status).collect();
        let due: Vec<Option<i64>> = rows.iter().map(|row| row.due_ms).collect();
        let records: Vec<&[u8]> = rows.iter().map(|row| row.record.as_slice()).collect();
        let claims: Vec<i64> = rows.iter().map(|row| row.claim).collect();
        let written = transaction
            .query_typed(
                "UPDATE strata_instances AS current SET version = row.version, live = true, status = row.status,
                     due_ms = row.due_ms, record = row.record, fence = row.fence, owner = $7,
                     finished_ms = NULL, claimed_in = NULL
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::bigint[])
                     AS row (id, version, status, due_ms, record, fence)
                 WHERE current.id = row.id AND NOT current.live AND current.fence = row.fence - 1
                 RETURNING current.id",
                typed![&ids, &versions, &statuses, &due, &records, &claims, &worker],
            )
            .await
            .map_err(failed("revive instances"))?;
        if written.len() < ids.len() {
            let written: std::collections::HashSet<i64> = written.iter().map(|row| row.get(0)).collect();
            let ids = ids
                .iter()
                .filter(|id| !written.contains(id))
                .map(|id| InstanceId(unsigned(*id)))
                .collect();
            return Err(StoreError::NoLongerEnded { ids });
        }
        Ok(())
    }

    /// Every version whose counters or status the writes change, in one order.
    fn version_keys(&self) -> Vec<VersionKey> {
        let mut keys: Vec<VersionKey> = self.counters.keys().chain(self.statuses.keys()).cloned().collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The statements of the transaction, before its mark and its COMMIT.
    async fn write(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        worker: &str,
    ) -> Result<Applied, StoreError> {
        if !self.instances.is_empty() {
            // A row written under claim 0 is nobody's: the first worker with its version's code
            // claims it (a start accepted through a process without that code).
            let ids: Vec<i64> = self.instances.iter().map(|row| row.id).collect();
            let workflows: Vec<&str> = self.instances.iter().map(|row| row.workflow.as_str()).collect();
            let versions: Vec<&str> = self.instances.iter().map(|row| row.version.as_str()).collect();
            let live: Vec<bool> = self.instances.iter().map(|row| row.live).collect();
            let statuses: Vec<&str> = self.instances.iter().map(|row| row.status).collect();
            let due: Vec<Option<i64>> = self.instances.iter().map(|row| row.due_ms).collect();
            let records: Vec<&[u8]> = self.instances.iter().map(|row| row.record.as_slice()).collect();
            let claims: Vec<i64> = self.instances.iter().map(|row| row.claim).collect();
            let created: Vec<i64> = self.instances.iter().map(|row| row.created_ms).collect();
            let finished_at: Vec<Option<i64>> = self.instances.iter().map(|row| row.finished_ms).collect();
            // The history chunks go in the same statement (no round trip of their own): if an
            // instance row is refused, the transaction is rolled back with them. A statement is
            // planned at every execution (unnamed, as PgBouncer's transaction mode requires), so
            // each commit sends only the CTEs it needs: an instance's commit carries no chunk
            // seven times in eight, and a drop only beyond the bound, so a group of many
            // instances' commits mostly adds chunks and drops none.
            let history = self.history_rows();
            // The statement, and how many of the parameters below it takes.
            let (statement, taken) = match (history.added_instances.is_empty(), history.dropped_instances.is_empty()) {
                (true, true) => (WRITE_INSTANCES, 11),
                (false, true) => (WRITE_INSTANCES_ADDING_HISTORY.as_str(), 14),
                (_, false) => (WRITE_INSTANCES_WITH_HISTORY.as_str(), 16),
            };
            // The instance columns are $1..$11, the history's $12..$16.
            let parameters = typed![
                &ids,
                &workflows,
                &versions,
                &live,
                &statuses,
                &due,
                &records,
                &claims,
                &created,
                &finished_at,
                &worker,
                &history.added_instances,
                &history.added_seqs,
                &history.added_entries,
                &history.dropped_instances,
                &history.dropped_seqs,
            ];
            let written = transaction
                .query_typed(statement, &parameters[..taken])
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
            if self.instances.iter().any(|row| row.claim == 0) {
                // Wakes the workers, so one with the code claims the new rows now, not at its
                // next heartbeat (delivered at COMMIT, once per transaction).
                transaction
                    .execute_typed(
                        "SELECT pg_notify($1, $2)",
                        typed![&crate::WAKE_CHANNEL, &crate::CLAIMABLE_PAYLOAD],
                    )
                    .await
                    .map_err(failed("announce claimable instances"))?;
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
                transaction
                    .execute_typed("DELETE FROM strata_signals WHERE instance = ANY($1)", typed![&finished])
                    .await
                    .map_err(failed("delete signals"))?;
            }
        }
        if !self.revivals.is_empty() {
            self.write_revivals(transaction, worker).await?;
        }
        let (stored, deleted): (Vec<_>, Vec<_>) = self.signals.iter().partition(|(_, record)| record.is_some());
        if !stored.is_empty() {
            let instances: Vec<i64> = stored.iter().map(|((instance, _), _)| *instance).collect();
            let seqs: Vec<i64> = stored.iter().map(|((_, seq), _)| *seq).collect();
            let records: Vec<&[u8]> = stored.iter().filter_map(|(_, record)| record.as_deref()).collect();
            transaction
                .execute_typed(
                    "INSERT INTO strata_signals (instance, seq, record)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bytea[])
                 ON CONFLICT (instance, seq) DO UPDATE SET record = EXCLUDED.record",
                    typed![&instances, &seqs, &records],
                )
                .await
                .map_err(failed("write signals"))?;
        }
        if !deleted.is_empty() {
            let instances: Vec<i64> = deleted.iter().map(|((instance, _), _)| *instance).collect();
            let seqs: Vec<i64> = deleted.iter().map(|((_, seq), _)| *seq).collect();
            transaction
                .execute_typed(
                    "DELETE FROM strata_signals WHERE (instance, seq) IN
                 (SELECT * FROM UNNEST($1::bigint[], $2::bigint[]))",
                    typed![&instances, &seqs],
                )
                .await
                .map_err(failed("delete signals"))?;
        }
        if self.instances.is_empty() {
            self.write_history(transaction).await?;
        }
        let applied = self.decide_residency(transaction, worker).await?;
        for (schedule, fire_ms) in &self.fires {
            // Only a later fire than the one handled: of processes racing for a fire, one wins.
            let written = transaction
                .execute_typed(
                    "INSERT INTO strata_schedule_fires AS handled (schedule, fire_ms) VALUES ($1, $2)
                 ON CONFLICT (schedule) DO UPDATE SET fire_ms = EXCLUDED.fire_ms
                 WHERE handled.fire_ms < EXCLUDED.fire_ms",
                    typed![schedule, fire_ms],
                )
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
            let written = transaction
                .execute_typed(
                    "INSERT INTO strata_configs (generation, source, text, applied_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (generation) DO NOTHING",
                    typed![
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
        for ((workflow, worker), record) in &self.jobs {
            if worker.is_empty() {
                transaction
                    .execute_typed(
                        "INSERT INTO strata_migration_jobs (workflow, record) VALUES ($1, $2)
                     ON CONFLICT (workflow) DO UPDATE SET record = EXCLUDED.record",
                        typed![workflow, record],
                    )
                    .await
                    .map_err(failed("write migration job"))?;
            } else {
                transaction
                    .execute_typed(
                        "INSERT INTO strata_migration_shares (workflow, worker, record) VALUES ($1, $2, $3)
                     ON CONFLICT (workflow, worker) DO UPDATE SET record = EXCLUDED.record",
                        typed![workflow, worker, record],
                    )
                    .await
                    .map_err(failed("write migration share"))?;
            }
        }
        for (name, (record, revision)) in &self.rollouts {
            // Only a write made from the newest copy: one more transition than the stored one.
            let written = transaction
                .execute_typed(
                    "INSERT INTO strata_rollouts AS stored (name, record, revision) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record, revision = EXCLUDED.revision
                 WHERE stored.revision < EXCLUDED.revision",
                    typed![name, record, revision],
                )
                .await
                .map_err(failed("write rollout"))?;
            if written == 0 {
                return Err(StoreError::RolloutChanged { name: name.clone() });
            }
        }
        for ((rollout, real), record) in &self.shadow_pairs {
            transaction
                .execute_typed(
                    "INSERT INTO strata_shadow_pairs (rollout, real_id, record) VALUES ($1, $2, $3)
                 ON CONFLICT (rollout, real_id) DO UPDATE SET record = EXCLUDED.record",
                    typed![rollout, real, record],
                )
                .await
                .map_err(failed("write shadow pair"))?;
        }
        for (id, reason) in &self.quarantines {
            transaction
                .execute_typed(
                    "INSERT INTO strata_quarantine (id, reason, raw)
                 VALUES ($1, $2, COALESCE((SELECT record FROM strata_instances WHERE id = $1), ''::bytea))
                 ON CONFLICT (id) DO UPDATE SET reason = EXCLUDED.reason, raw = EXCLUDED.raw",
                    typed![id, reason],
                )
                .await
                .map_err(failed("quarantine"))?;
            transaction
                .execute_typed("DELETE FROM strata_instances WHERE id = $1", typed![id])
                .await
                .map_err(failed("quarantine"))?;
        }
        Ok(applied)
    }

    /// Writes counters and statuses and decides residency, in the transaction, in as few
    /// statements as the write needs: one upsert adds every touched version's counter deltas
    /// (zero for a status-only change) and locks its row, in key order so that workers never
    /// deadlock, returning the row as it is now; a start on a version the write leaves not
    /// `Active`, a retirement with live instances and a retired version made active are refused;
    /// a `Draining` version left with no live instance becomes `Drained` (a statement only when
    /// one is).
    async fn decide_residency(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        worker: &str,
    ) -> Result<Applied, StoreError> {
        let keys = self.version_keys();
        if keys.is_empty() {
            return Ok(Applied::default());
        }
        let (workflows, versions) = crate::version_columns(&keys);
        let zero = CounterSum::default();
        let sums: Vec<&CounterSum> = keys.iter().map(|key| self.counters.get(key).unwrap_or(&zero)).collect();
        let column =
            |value: fn(&CounterDelta) -> i64| -> Vec<i64> { sums.iter().map(|sum| value(&sum.delta)).collect() };
        let first: Vec<Option<i64>> = sums.iter().map(|sum| sum.first_start_ms).collect();
        let last: Vec<Option<i64>> = sums.iter().map(|sum| sum.last_start_ms).collect();
        let texts = |totals: fn(&CounterDelta) -> &MeasureTotals| -> Vec<String> {
            sums.iter()
                .map(|sum| crate::measures_to_text(totals(&sum.delta)))
                .collect()
        };
        let measures = texts(|delta| &delta.measures);
        let shadow_measures = texts(|delta| &delta.shadow.measures);
        // The totals' sums are a large expression that PostgreSQL plans at every execution
        // (statements are unnamed, for PgBouncer): a write without measures sends the upsert
        // that keeps the row's totals as they are.
        let adds_measures = sums
            .iter()
            .any(|sum| !sum.delta.measures.is_empty() || !sum.delta.shadow.measures.is_empty());
        let statement = if adds_measures {
            WRITE_COUNTERS_ADDING_MEASURES
        } else {
            WRITE_COUNTERS_KEEPING_MEASURES
        };
        let mut stored = transaction
            .query_typed(
                statement,
                typed![
                    &workflows,
                    &versions,
                    &column(|delta| delta.live),
                    &column(|delta| signed(delta.started)),
                    &column(|delta| signed(delta.completed)),
                    &column(|delta| signed(delta.failed)),
                    &column(|delta| signed(delta.cancelled)),
                    &column(|delta| signed(delta.moved_in)),
                    &column(|delta| signed(delta.moved_out)),
                    &first,
                    &last,
                    &column(|delta| signed(delta.revived)),
                    &measures,
                    &column(|delta| signed(delta.shadow.started)),
                    &column(|delta| signed(delta.shadow.completed)),
                    &column(|delta| signed(delta.shadow.failed)),
                    &column(|delta| signed(delta.shadow.cancelled)),
                    &shadow_measures,
                ],
            )
            .await
            .map_err(failed("write counters"))?
            .iter()
            .map(stored_version)
            .collect::<Result<Vec<_>, _>>()?;
        // The residency rule, on the rows as the upsert left them (their status still the one
        // before this write).
        // A version this write drains: drained with the status the write sets (one status write,
        // as on every backend), or by the counters it changes (the drain is the write's status).
        let mut draining: Vec<VersionKey> = Vec::new();
        let mut drained: Vec<VersionKey> = Vec::new();
        // Versions whose drain the write undoes by counters alone (revived instances).
        let mut undrained: Vec<VersionKey> = Vec::new();
        // The status a write that sets one leaves, by the rule.
        let mut decided: HashMap<&VersionKey, VersionStatus> = HashMap::new();
        for version in &stored {
            let sum = self.counters.get(&version.key);
            let write = VersionWrite {
                before: version.status,
                set: self.statuses.get(&version.key).copied(),
                starts: sum.is_some_and(|sum| sum.delta.started > 0),
                arrivals: sum.is_some_and(|sum| sum.delta.moved_in > 0 || sum.delta.revived > 0),
                live_after: version.counters.live,
            };
            let decision = strata_store::residency::decide(&version.key, write)?;
            if let Some((key, status)) = self.statuses.get_key_value(&version.key) {
                decided.insert(key, decision.status.unwrap_or(*status));
            }
            if decision.drains {
                if self.statuses.contains_key(&version.key) {
                    drained.push(version.key.clone());
                } else {
                    draining.push(version.key.clone());
                }
            } else if decision.undrains && !self.statuses.contains_key(&version.key) {
                undrained.push(version.key.clone());
            }
        }
        for (key, status) in &decided {
            let key = *key;
            // A status written anew is no longer one a worker drained and has to announce,
            // unless this write drains it.
            let (status, drained_by) = if drained.contains(key) {
                (VersionStatus::Drained, Some(worker.to_string()))
            } else {
                (*status, None)
            };
            let changes: i64 = transaction
                .query_typed_one(
                    "UPDATE strata_versions SET status = $3, status_changes = status_changes + 1,
                     drained_by = $4
                 WHERE workflow = $1 AND version = $2 RETURNING status_changes",
                    typed![
                        &key.workflow,
                        &key.version.to_string(),
                        &version_text(status),
                        &drained_by
                    ],
                )
                .await
                .map_err(failed("write version status"))?
                .get(0);
            if let Some(version) = stored.iter_mut().find(|version| version.key == *key) {
                version.status = Some(status);
                version.status_changes = unsigned(changes);
            }
        }
        if !undrained.is_empty() {
            let (workflows, versions) = crate::version_columns(&undrained);
            for row in transaction
                .query_typed(
                    "UPDATE strata_versions SET status = 'draining', drained_by = NULL, status_changes = status_changes + 1
                 WHERE (workflow, version) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
                   AND status = 'drained' AND live > 0
                 RETURNING workflow, version, status_changes",
                    typed![&workflows, &versions],
                )
                .await
                .map_err(failed("undo drains"))?
            {
                set_status(&mut stored, &row, VersionStatus::Draining);
            }
        }
        if draining.is_empty() {
            return Ok(Applied {
                versions: stored,
                drained,
            });
        }
        let (workflows, versions) = crate::version_columns(&draining);
        // Recorded with the worker that drained it, until it has announced it (see
        // `Cluster::take_unannounced_drained`).
        for row in transaction
            .query_typed(
                "UPDATE strata_versions SET status = 'drained', drained_by = $3, status_changes = status_changes + 1
             WHERE (workflow, version) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
               AND status = 'draining' AND live = 0
             RETURNING workflow, version, status_changes",
                typed![&workflows, &versions, &worker],
            )
            .await
            .map_err(failed("drain versions"))?
        {
            if let Some(key) = set_status(&mut stored, &row, VersionStatus::Drained) {
                drained.push(key);
            }
        }
        Ok(Applied {
            versions: stored,
            drained,
        })
    }
}

/// Records on `stored` the status a statement returning `workflow, version, status_changes` set
/// on one version row; the version's key, if `stored` has it.
fn set_status(
    stored: &mut [strata_store::StoredVersion],
    row: &tokio_postgres::Row,
    status: VersionStatus,
) -> Option<VersionKey> {
    let (workflow, version, changes): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
    let stored = stored
        .iter_mut()
        .find(|stored| stored.key.workflow == workflow && stored.key.version.to_string() == version)?;
    stored.status = Some(status);
    stored.status_changes = unsigned(changes);
    Some(stored.key.clone())
}

/// The writes of a commit's instance rows ($1..$10 their columns, $11 the worker), each only
/// if the row is still the writer's (owner and fence), answering the ids written.
const WRITE_INSTANCES: &str = "INSERT INTO strata_instances AS current
     (id, workflow, version, live, status, due_ms, record, fence, created_ms, finished_ms, owner)
 SELECT row.*, CASE WHEN row.fence = 0 THEN NULL ELSE $11 END
 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bigint[],
     $7::bytea[], $8::bigint[], $9::bigint[], $10::bigint[])
     AS row (id, workflow, version, live, status, due_ms, record, fence, created_ms, finished_ms)
 ON CONFLICT (id) DO UPDATE SET workflow = EXCLUDED.workflow, version = EXCLUDED.version,
     live = EXCLUDED.live, status = EXCLUDED.status, due_ms = EXCLUDED.due_ms, record = EXCLUDED.record,
     created_ms = EXCLUDED.created_ms, finished_ms = EXCLUDED.finished_ms
 WHERE current.owner = EXCLUDED.owner AND current.fence = EXCLUDED.fence
 RETURNING id";

/// [`WRITE_INSTANCES`] after [`HISTORY_ADDED_CTE`]: a commit's instance rows with the history
/// chunks it adds, in one statement. Put together once.
static WRITE_INSTANCES_ADDING_HISTORY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("WITH {HISTORY_ADDED_CTE} {WRITE_INSTANCES}"));

/// [`WRITE_INSTANCES`] after [`HISTORY_ADDED_CTE`] and [`HISTORY_DROPPED_CTE`]: a commit's
/// instance rows with the history chunks it adds and drops, in one statement. Put together once.
static WRITE_INSTANCES_WITH_HISTORY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("WITH {HISTORY_ADDED_CTE}, {HISTORY_DROPPED_CTE} {WRITE_INSTANCES}"));

/// The CTE that adds a commit's history chunks ($12..$14) in the statement that writes its
/// instance rows, so that a refused row rolls them back with it.
const HISTORY_ADDED_CTE: &str = "history_added AS (
     INSERT INTO strata_history (instance, seq, entry)
     SELECT * FROM UNNEST($12::bigint[], $13::bigint[], $14::bytea[])
     ON CONFLICT (instance, seq) DO UPDATE SET entry = EXCLUDED.entry)";

/// The CTE that drops a commit's history chunks ($15..$16) in the statement that writes its
/// instance rows.
const HISTORY_DROPPED_CTE: &str = "history_dropped AS (
     DELETE FROM strata_history WHERE (instance, seq) IN
     (SELECT * FROM UNNEST($15::bigint[], $16::bigint[])))";
