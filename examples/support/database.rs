//! The PostgreSQL server the examples use, and the database of its own each creates there and
//! drops on every way out: at the end, on a panic, on Ctrl-C and on SIGTERM.

use std::sync::Mutex;

/// The server unless `STRATA_DATABASE_URL` names another: the one every machine of this
/// project runs (trust auth for user postgres).
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server's URL: `STRATA_DATABASE_URL`, else the default.
pub(crate) fn server_url() -> String {
    std::env::var("STRATA_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// Runs `sql` (creating or dropping a database, say) on the database of `url`.
async fn admin(url: &str, sql: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    client.batch_execute(sql).await.map_err(|error| error.to_string())
}

/// The URL of database `name` on the server of `server`.
pub(crate) fn database_url(server: &str, name: &str) -> String {
    let (host, _) = server
        .rsplit_once('/')
        .expect("STRATA_DATABASE_URL must end in /database");
    format!("{host}/{name}")
}

/// A database of the example's own, dropped when this value is (the end of `main`, or a panic
/// unwinding it) or when the example is interrupted (Ctrl-C, SIGTERM).
pub(crate) struct ExampleDatabase {
    server: String,
    name: String,
    url: String,
}

/// The databases created and not dropped yet, as (server, name): what an interrupt drops.
static HELD: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

impl ExampleDatabase {
    /// Creates database `name` on the server (dropping a leftover of that name first), or
    /// explains what the example needs and exits.
    pub(crate) async fn create(server: &str, name: &str) -> ExampleDatabase {
        drop_database(server, name).await;
        let url = create_database(server, name).await;
        let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.is_empty() {
            drop_held_on_interrupt();
        }
        held.push((server.to_string(), name.to_string()));
        ExampleDatabase {
            server: server.to_string(),
            name: name.to_string(),
            url,
        }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ExampleDatabase {
    fn drop(&mut self) {
        HELD.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|(_, name)| *name != self.name);
        // On a thread with a runtime of its own: this may run inside the example's runtime,
        // which cannot be blocked on from within.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped =
            std::thread::spawn(
                move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(drop_database(&server, &name)),
                    Err(error) => eprintln!("could not drop the example's database {name}: {error}"),
                },
            )
            .join();
        if dropped.is_err() {
            eprintln!("could not drop the example's database {}", self.name);
        }
    }
}

/// From now on, Ctrl-C or SIGTERM drops every database still held and exits with 130.
fn drop_held_on_interrupt() {
    use tokio::signal::unix::{signal, SignalKind};
    // Both handlers are in place when this returns, before the task first runs.
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        eprintln!("could not handle Ctrl-C: an interrupted example leaves its databases behind");
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        drop_held().await;
    });
}

/// Drops every database still held, then exits with 130.
async fn drop_held() {
    let held: Vec<(String, String)> =
        std::mem::take(&mut *HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    for (server, name) in held {
        drop_database(&server, &name).await;
    }
    eprintln!("interrupted: the example's databases are dropped");
    std::process::exit(130);
}

/// Creates database `name` on the server and returns its URL, or explains what the example
/// needs and exits.
async fn create_database(server: &str, name: &str) -> String {
    if let Err(error) = admin(server, &format!("CREATE DATABASE {name}")).await {
        eprintln!(
            "This example needs PostgreSQL. Could not create a database at {server}: {error}\n\
             Start a server (trust auth for user postgres at 127.0.0.1:5432), or set \
             STRATA_DATABASE_URL=postgres://user:password@host:port/database to a server whose user may create databases."
        );
        std::process::exit(1);
    }
    database_url(server, name)
}

/// Drops database `name` on the server (a failure is only reported).
async fn drop_database(server: &str, name: &str) {
    if let Err(error) = admin(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await {
        eprintln!("could not drop the example's database {name}: {error}");
    }
}
