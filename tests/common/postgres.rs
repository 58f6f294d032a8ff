//! Fresh PostgreSQL databases for tests, one per test, on the server `STRATA_TEST_DATABASE_URL`
//! names (default `postgres://postgres@127.0.0.1:5432/postgres`, the server every machine of
//! this project runs). A test that needs PostgreSQL fails, saying how to provide it, when no
//! server answers; it never skips.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server tests use unless `STRATA_TEST_DATABASE_URL` names another.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test and dropped when it ends.
pub struct TestDatabase {
    /// The URL of the database.
    pub url: String,
    name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("STRATA_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// Runs `sql` on the admin database, on a runtime of its own (tests call this from async code).
fn admin(admin_url: &str, sql: String) -> Result<(), String> {
    let admin_url = admin_url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                .await
                .map_err(|error| format!("{error}: {:?}", std::error::Error::source(&error)))?;
            tokio::spawn(connection);
            client
                .batch_execute(&sql)
                .await
                .map_err(|error| match error.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => error.to_string(),
                })
        })
    })
    .join()
    .map_err(|_| "the admin thread panicked".to_string())?
}

/// The URL of database `name` on the server of `admin_url`.
fn database_url(admin_url: &str, name: &str) -> String {
    match admin_url.rsplit_once('/') {
        Some((server, _)) if server.contains("://") && server.len() > "postgres://".len() => format!("{server}/{name}"),
        _ => panic!("STRATA_TEST_DATABASE_URL must end in /database, like {DEFAULT_ADMIN_URL}"),
    }
}

impl TestDatabase {
    /// Creates an empty database of its own for this test.
    pub fn create() -> TestDatabase {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let admin_url = admin_url();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let name = format!(
            "strata_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(error) = admin(&admin_url, format!("CREATE DATABASE {name}")) {
            panic!(
                "cannot create a test database on the PostgreSQL server at {admin_url}: {error}\n\
                 The PostgreSQL tests need a server whose user may create databases: start one at \
                 127.0.0.1:5432 with trust authentication for user postgres (this project's machines \
                 and CI have it), or set STRATA_TEST_DATABASE_URL=postgres://user:password@host:port/postgres"
            );
        }
        TestDatabase {
            url: database_url(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user the URL names.
    pub fn user(&self) -> String {
        let config: tokio_postgres::Config = self.url.parse().expect("the test database's URL parses");
        config.get_user().unwrap_or("postgres").to_string()
    }

    /// The server's address (host and port of the URL), to put a proxy in front of it.
    pub fn server(&self) -> std::net::SocketAddr {
        let config: tokio_postgres::Config = self.url.parse().expect("the test database's URL parses");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .ok()
            .and_then(|mut addresses| addresses.next())
            .expect("the test server's address resolves")
    }

    /// Runs SQL on this test's database (to inspect it, or to break it on purpose).
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        admin(&self.url, sql.to_string())
    }

    /// The number the query returns (its first column of its first row, as a bigint).
    pub fn count(&self, sql: &str) -> i64 {
        let (url, sql) = (self.url.clone(), sql.to_string());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0)
            })
        })
        .join()
        .unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let dropped = admin(
            &self.admin_url,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        if let Err(error) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}
