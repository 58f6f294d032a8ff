//! PgBouncer (Debian's package, `./test-all` installs it) in front of the test server, in session
//! or transaction pooling mode, started for one test on a port of its own and stopped when
//! dropped. A test that needs it fails, saying how to install it, when it is missing.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How PgBouncer shares server sessions among its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server session per client connection, for as long as it lasts.
    Session,
    /// A server session per transaction: the next transaction of the same client may get another.
    Transaction,
}

/// A running PgBouncer.
pub struct PgBouncer {
    process: Child,
    mode: PoolMode,
    address: SocketAddr,
    _files: tempfile::TempDir,
}

/// Where Debian installs it.
const PROGRAM: &str = "/usr/sbin/pgbouncer";

impl PgBouncer {
    /// Starts PgBouncer in `mode` in front of the PostgreSQL server at `server`, trusting user
    /// `user`, and waits until it accepts connections.
    pub fn start(mode: PoolMode, server: SocketAddr, user: &str) -> PgBouncer {
        assert!(
            std::path::Path::new(PROGRAM).exists(),
            "PgBouncer is not installed ({PROGRAM}): ./test-all installs it, or apt-get install pgbouncer"
        );
        let files = tempfile::tempdir().expect("a directory for PgBouncer's files");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let users = files.path().join("users.txt");
        std::fs::write(&users, format!("\"{user}\" \"\"\n")).expect("write PgBouncer's users");
        let mode_name = match mode {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        };
        let config = files.path().join("pgbouncer.ini");
        let mut file = std::fs::File::create(&config).expect("write PgBouncer's config");
        write!(
            file,
            "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = {mode_name}\n\
             max_client_conn = 1000\ndefault_pool_size = 20\nserver_login_retry = 1\n\
             ignore_startup_parameters = extra_float_digits,options\n",
            server.ip(),
            server.port(),
            users.display()
        )
        .expect("write PgBouncer's config");
        drop(file);
        // Readable by the user it runs as when started as root (it refuses to run as root).
        for path in [files.path(), users.as_path(), config.as_path()] {
            let mode = if path.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        }
        let mut command = Command::new(PROGRAM);
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            command.args(["-u", "postgres"]);
        }
        let process = command
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start PgBouncer");
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not listen on {address} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        PgBouncer {
            process,
            mode,
            address,
            _files: files,
        }
    }

    /// A URL for database `database` through PgBouncer, for `user`.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@{}/{database}", self.address)
    }

    /// The direct URL the wake-ups need beside this pooler (in transaction mode), as the README
    /// says to configure it; none in session mode, which carries LISTEN.
    pub fn listen_url<'a>(&self, database: &'a super::postgres::TestDatabase) -> Option<&'a str> {
        (self.mode == PoolMode::Transaction).then_some(database.url.as_str())
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
