//! The PostgreSQL server the examples use, and the database of its own each creates there.

/// The server unless `STRATA_DATABASE_URL` names another: the one every machine of this
/// project runs (trust auth for user postgres).
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server's URL: `STRATA_DATABASE_URL`, else the default.
pub fn server_url() -> String {
    std::env::var("STRATA_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// Runs `sql` (creating or dropping a database, say) on the database of `url`.
pub async fn admin(url: &str, sql: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    client.batch_execute(sql).await.map_err(|error| error.to_string())
}

/// The URL of database `name` on the server of `server`.
pub fn database_url(server: &str, name: &str) -> String {
    let (host, _) = server
        .rsplit_once('/')
        .expect("STRATA_DATABASE_URL must end in /database");
    format!("{host}/{name}")
}

/// Creates database `name` on the server and returns its URL, or explains what the example
/// needs and exits.
pub async fn create_database(server: &str, name: &str) -> String {
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
pub async fn drop_database(server: &str, name: &str) {
    if let Err(error) = admin(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await {
        eprintln!("could not drop the example's database {name}: {error}");
    }
}
