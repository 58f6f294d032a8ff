//! The store conformance kit (`strata_store::conformance`) on PostgreSQL: a database of each
//! test's own on the server `STRATA_TEST_DATABASE_URL` names (the project's default otherwise),
//! reached directly (`direct`) and through PgBouncer in transaction pooling mode
//! (`transaction_pooled`, wake-ups on a direct connection, as the README says to configure it);
//! without a server the tests fail, saying how to provide one.

use std::sync::Arc;

use strata_store::conformance::Harness;
use strata_store::Store;
use strata_store_postgres::PostgresStore;

#[allow(dead_code, unreachable_pub)]
#[path = "../../../tests/common/postgres.rs"]
mod postgres;

#[allow(dead_code, unreachable_pub)]
#[path = "../../../tests/common/pgbouncer.rs"]
mod pgbouncer;

/// A database of the test's own.
struct PostgresHarness(postgres::TestDatabase);

impl Harness for PostgresHarness {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(PostgresStore::connect(&self.0.url).expect("connect to the test database"))
    }
}

/// A database of the test's own, through a PgBouncer of its own in transaction pooling mode.
struct PooledHarness {
    database: postgres::TestDatabase,
    bouncer: pgbouncer::PgBouncer,
}

impl PooledHarness {
    fn start() -> PooledHarness {
        let database = postgres::TestDatabase::create();
        let bouncer =
            pgbouncer::PgBouncer::start(pgbouncer::PoolMode::Transaction, database.server(), &database.user());
        PooledHarness { database, bouncer }
    }
}

impl Harness for PooledHarness {
    fn open(&self) -> Arc<dyn Store> {
        let url = self.bouncer.url(&self.database.user(), self.database.name());
        Arc::new(
            PostgresStore::connect_with(&url, self.bouncer.listen_url(&self.database))
                .expect("connect to the test database through PgBouncer"),
        )
    }
}

mod direct {
    strata_store::conformance_tests!(super::PostgresHarness(super::postgres::TestDatabase::create()));
}

mod transaction_pooled {
    strata_store::conformance_tests!(super::PooledHarness::start());
}
