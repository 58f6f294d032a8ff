//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod child;
pub mod pgbouncer;
pub mod postgres;
pub mod probe;
pub mod proxy;
pub mod tally;

use std::path::Path;
use std::time::Duration;
use strata::prelude::*;

use strata::{Durability, Engine, EngineBuilder, Event, InstanceId, InstanceStatus};
use strata_workflows::order::{Line, OrderInput, Payment};
use strata_workflows::{ledger, onboarding, order};
use tokio::sync::broadcast;

/// A builder on `dir` with fast commit retries.
pub fn builder(dir: &Path) -> EngineBuilder {
    Engine::builder()
        .data_dir(dir)
        .durability(Durability::Sync)
        .commit_retry_delay(Duration::from_millis(10))
}

/// Where a test's engine keeps its data: the embedded sled store in a temporary directory, or a
/// fresh PostgreSQL database. Opening it again (another `builder()`) reopens the same data.
pub enum Backend {
    /// sled in this directory.
    Sled(tempfile::TempDir),
    /// A database of the test's own.
    Postgres(postgres::TestDatabase),
    /// A database of the test's own, through PgBouncer (in transaction pooling mode, the
    /// wake-ups on a direct connection, as the README says to configure it).
    Pooled(postgres::TestDatabase, pgbouncer::PgBouncer),
}

impl Backend {
    /// An empty sled store.
    pub fn sled() -> Backend {
        Backend::Sled(tempfile::tempdir().expect("temporary directory"))
    }

    /// An empty PostgreSQL database (fails, saying how to provide one, without a server).
    pub fn postgres() -> Backend {
        Backend::Postgres(postgres::TestDatabase::create())
    }

    /// An empty PostgreSQL database behind PgBouncer in pooling mode `mode`.
    pub fn pooled(mode: pgbouncer::PoolMode) -> Backend {
        let database = postgres::TestDatabase::create();
        let bouncer = pgbouncer::PgBouncer::start(mode, database.server(), &database.user());
        Backend::Pooled(database, bouncer)
    }

    /// The store itself, opened alone (the engines on it must be shut down first for sled).
    pub fn store(&self) -> std::sync::Arc<dyn strata::Store> {
        match self {
            Backend::Sled(dir) => std::sync::Arc::new(strata::SledStore::open(dir.path()).expect("open sled")),
            Backend::Postgres(database) => {
                std::sync::Arc::new(strata::PostgresStore::connect(&database.url).expect("connect"))
            }
            Backend::Pooled(database, bouncer) => std::sync::Arc::new(
                strata::PostgresStore::connect_with(
                    &bouncer.url(&database.user(), database.name()),
                    bouncer.listen_url(database),
                )
                .expect("connect through PgBouncer"),
            ),
        }
    }

    /// How many signals the store holds for `instances`, read as each backend keeps them: the
    /// embedded store hands every pending signal over at recovery, a shared one per instance.
    pub fn stored_signals(&self, instances: &[strata::InstanceId]) -> usize {
        let store = self.store();
        match self {
            Backend::Sled(_) => store
                .recover(u64::MAX)
                .expect("recover")
                .signals
                .iter()
                .filter(|signal| instances.contains(&signal.instance))
                .count(),
            _ => instances
                .iter()
                .map(|id| store.cluster().signals_of(*id).expect("read signals").len())
                .sum(),
        }
    }

    /// An engine on this backend with tally 1.0.0 registered.
    pub async fn with_tally(&self) -> Engine {
        self.builder()
            .register(tally::on_schema_1("1.0.0"))
            .open()
            .await
            .expect("open an engine with tally 1.0.0")
    }

    /// A builder on this backend with fast commit retries.
    pub fn builder(&self) -> EngineBuilder {
        let builder = Engine::builder()
            .durability(Durability::Sync)
            .commit_retry_delay(Duration::from_millis(10));
        match self {
            Backend::Sled(dir) => builder.data_dir(dir.path()),
            Backend::Postgres(database) => builder.postgres(&database.url),
            Backend::Pooled(database, bouncer) => {
                let builder = builder.postgres(bouncer.url(&database.user(), database.name()));
                match bouncer.listen_url(database) {
                    Some(direct) => builder.postgres_listen_url(direct),
                    None => builder,
                }
            }
        }
    }
}

/// Generates, for each named `async fn(Backend)`, one test on sled, one on PostgreSQL and two on
/// PostgreSQL through PgBouncer (session and transaction pooling), in modules `sled`, `postgres`,
/// `session_pooled` and `transaction_pooled`, so the stores cannot drift apart.
#[macro_export]
macro_rules! on_both_stores {
    ($($behaviour:ident),* $(,)?) => {
        $crate::on_sled_and_postgres!($($behaviour),*);
        mod session_pooled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour($crate::common::Backend::pooled($crate::common::pgbouncer::PoolMode::Session)).await
                }
            )*
        }
        mod transaction_pooled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour($crate::common::Backend::pooled($crate::common::pgbouncer::PoolMode::Transaction)).await
                }
            )*
        }
    };
}

/// Runs each behaviour (an async fn taking a [`Backend`]) as two tests: on the embedded sled store
/// and on a PostgreSQL database of its own.
#[macro_export]
macro_rules! on_sled_and_postgres {
    ($($behaviour:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour($crate::common::Backend::sled()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour($crate::common::Backend::postgres()).await
                }
            )*
        }
    };
}

/// A builder with every workflow version of `strata-workflows` registered.
pub fn builder_with_all(dir: &Path) -> EngineBuilder {
    with_all(builder(dir))
}

/// `builder` with every workflow version of `strata-workflows` registered.
pub fn with_all(builder: EngineBuilder) -> EngineBuilder {
    builder
        .register(order::v1_0())
        .register(order::v1_1())
        .register(order::v2_0())
        .register(onboarding::v1_0())
        .register(ledger::v1_0())
}

/// An order of two lines with short delays.
pub fn small_order(id: u64) -> OrderInput {
    let mut input = OrderInput::new(
        format!("o-{id}"),
        format!("c-{}", id % 7),
        vec![
            Line {
                sku: "book".into(),
                quantity: 2,
                unit_price_cents: 1_250,
            },
            Line {
                sku: "pen".into(),
                quantity: 1,
                unit_price_cents: 300 + id,
            },
        ],
    );
    input.warehouse_delay_ms = 20;
    input
}

/// The payment that pays `input` in full.
pub fn full_payment(input: &OrderInput) -> Payment {
    Payment {
        amount_cents: input.total_cents(),
        reference: format!("pay-{}", input.order_id),
    }
}

/// Whether `path` is a segment of an embedded store's commit log: appended (`.log2`) or
/// compacted (`.log2c`).
pub fn is_log_segment(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension == "log2" || extension == "log2c")
}

/// Deletes sled's files from an embedded store's directory, as if lost, leaving the commit log.
pub fn lose_sled_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "db" || name == "conf" || name.starts_with("snap.") || name == "blobs" {
            if entry.file_type().unwrap().is_dir() {
                std::fs::remove_dir_all(entry.path()).unwrap();
            } else {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
}

/// Waits (bounded) for the first event matching `wanted`.
pub async fn wait_for_event(events: &mut broadcast::Receiver<Event>, wanted: impl Fn(&Event) -> bool) -> Event {
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => panic!("the expected event did not arrive within 30 s"),
            received = events.recv() => match received {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => panic!("test subscriber lagged by {missed} events"),
                Err(broadcast::error::RecvError::Closed) => panic!("event stream closed"),
            },
        }
    }
}

/// Waits (bounded) until `condition` holds, re-checking it every couple of milliseconds.
pub async fn wait_until(engine: &Engine, condition: impl Fn(&Engine) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition(engine) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 30 s"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (bounded) until instance `id` has `status`.
pub async fn wait_for_status(engine: &Engine, id: InstanceId, status: InstanceStatus) {
    wait_until(engine, |engine| {
        engine.instance(id).map(|info| info.status).ok() == Some(status)
    })
    .await;
}

/// Awaits an outcome with a bound, so a broken engine fails the test instead of hanging it.
pub async fn outcome_within(engine: &Engine, id: InstanceId) -> strata::Outcome {
    tokio::time::timeout(Duration::from_secs(30), engine.outcome(id))
        .await
        .expect("instance did not finish within 30 s")
        .expect("outcome")
}
