//! The store conformance kit (`strata_store::conformance`) on PostgreSQL: a database of each
//! test's own on the server `STRATA_TEST_DATABASE_URL` names (the project's default otherwise);
//! without a server the tests fail, saying how to provide one.

use std::sync::Arc;

use strata_store::conformance::Harness;
use strata_store::Store;
use strata_store_postgres::PostgresStore;

#[allow(dead_code, unreachable_pub)]
#[path = "../../../tests/common/postgres.rs"]
mod postgres;

/// A database of the test's own.
struct PostgresHarness(postgres::TestDatabase);

impl Harness for PostgresHarness {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(PostgresStore::connect(&self.0.url).expect("connect to the test database"))
    }
}

strata_store::conformance_tests!(PostgresHarness(postgres::TestDatabase::create());
    pinned_instances_come_back_on_their_version,
    a_start_is_refused_when_its_write_leaves_the_version_not_active,
    retiring_is_refused_while_instances_live,
    the_write_that_ends_the_last_instance_of_a_draining_version_drains_it_and_alone_reports_it,
    a_retired_version_stays_retired_and_every_status_write_counts,
    timers_come_back_with_their_due_time,
    signals_are_kept_until_deleted_and_come_back_with_their_instance,
    a_finished_instance_leaves_the_live_ones_and_is_read_and_listed,
    retention_removes_only_finished_instances_due_and_remembers_the_highest_id,
    every_config_generation_is_kept_once,
    a_schedule_fire_is_handled_once,
    a_rollout_written_from_an_older_copy_is_refused,
    migration_jobs_are_kept_by_workflow_and_worker,
    moves_count_on_both_versions,
    a_live_record_that_does_not_decode_is_set_apart_with_its_reason,
    ids_are_never_handed_out_twice,
    a_refused_write_changes_nothing,
);
