//! Strata through PgBouncer (issue #21): in session mode the wake-ups are heard through the
//! pooler; in transaction mode LISTEN cannot be carried, and the engine says so once and finds
//! signalled instances at its heartbeats, unless a direct listen URL is given. (The behaviour
//! suite's `pooled` half and `tests/rolling_deploy.rs` run whole workloads through transaction
//! pooling.)

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use strata::prelude::*;

use common::pgbouncer::{PgBouncer, PoolMode};
use common::postgres::TestDatabase;
use common::*;
use strata::{Engine, StartOptions};

/// The warnings every engine of this test binary logged, as text.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<u8>>>);

impl Warnings {
    fn contain(&self, text: &str) -> bool {
        String::from_utf8_lossy(&self.0.lock().unwrap()).contains(text)
    }
}

impl std::io::Write for Warnings {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the warnings of every thread (the store logs from its own runtime's threads).
fn warnings() -> Warnings {
    static CAPTURED: OnceLock<Warnings> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let warnings = Warnings::default();
            let writer = warnings.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            warnings
        })
        .clone()
}

/// Heartbeats 40 s apart (lease 120 s): a signal sent through another engine reaches the holder
/// within the 30 s `outcome_within` allows only by a wake-up.
const WAKE_UPS_ONLY: Duration = Duration::from_secs(120);

/// A tally instance waiting on a holder (opened with `builder` and lease `lease`) gets its signal
/// through another engine on `url` and finishes; `before` runs on the holder before the signal.
async fn signal_through_another_engine(
    builder: strata::EngineBuilder,
    lease: Duration,
    url: &str,
    before: impl AsyncFnOnce(&Engine),
) {
    let holder = builder
        .lease(lease)
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let console = Engine::builder().postgres(url).open().await.unwrap();
    let id = tally::start_waiting(&holder, [1u64], StartOptions::new()).await[0];
    before(&holder).await;
    console.signal(id, tally::GO, &()).await.unwrap();
    outcome_within(&holder, id).await;
    console.shutdown().await;
    holder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_session_pooler_wake_ups_are_heard() {
    let database = TestDatabase::create();
    let bouncer = PgBouncer::start(PoolMode::Session, database.server(), &database.user());
    let url = bouncer.url(&database.user(), database.name());
    signal_through_another_engine(
        Engine::builder().postgres(&url),
        WAKE_UPS_ONLY,
        &url,
        async |_: &Engine| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_transaction_pooler_without_a_listen_url_the_engine_says_so_and_finds_signals_at_its_heartbeats() {
    let warnings = warnings();
    let database = TestDatabase::create();
    let bouncer = PgBouncer::start(PoolMode::Transaction, database.server(), &database.user());
    let url = bouncer.url(&database.user(), database.name());
    let heard_of = async |holder: &Engine| {
        wait_until(holder, |_| {
            warnings.contain("wake-ups are not heard over this connection")
        })
        .await;
        assert!(warnings.contain("postgres_listen_url"), "the warning says what to do");
    };
    signal_through_another_engine(
        Engine::builder().postgres(&url),
        Duration::from_millis(600),
        &url,
        heard_of,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_transaction_pooler_a_direct_listen_url_hears_the_wake_ups() {
    let database = TestDatabase::create();
    let bouncer = PgBouncer::start(PoolMode::Transaction, database.server(), &database.user());
    let url = bouncer.url(&database.user(), database.name());
    let builder = Engine::builder().postgres(&url).postgres_listen_url(&database.url);
    signal_through_another_engine(builder, WAKE_UPS_ONLY, &url, async |_: &Engine| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_url_without_postgres_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Engine::builder()
        .data_dir(dir.path())
        .postgres_listen_url("postgres://postgres@127.0.0.1/postgres")
        .open()
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(refused, strata::EngineError::ListenUrlWithoutPostgres),
        "{refused}"
    );
}
