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

strata_store::conformance_tests!(PostgresHarness(postgres::TestDatabase::create()));
