//! A TCP proxy between an engine and the PostgreSQL server that breaks the connections on
//! demand, the way networks and servers do: it cuts every connection, refuses new ones for a
//! while, or lets a transaction's COMMIT reach the server and cuts the connection before the
//! answer gets back (the one case a client cannot tell apart from a commit that did not land).
//!
//! It reads the server's side of the wire protocol as messages (a type byte, a length, a body):
//! the clients here never ask for TLS, so every byte from the server is a framed message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Default)]
struct Faults {
    /// COMMIT answers still to swallow (each cuts its connection).
    swallow_commits: AtomicUsize,
    /// COMMIT answers swallowed so far.
    swallowed: AtomicUsize,
    /// New connections are closed at once while set.
    refusing: AtomicBool,
    /// Connections refused so far.
    refused: AtomicUsize,
    /// Connections made so far.
    accepted: AtomicUsize,
}

/// The proxy: connect to [`FaultyProxy::url`] instead of the server.
pub struct FaultyProxy {
    address: SocketAddr,
    faults: Arc<Faults>,
    cut: watch::Sender<u64>,
}

impl FaultyProxy {
    /// Listens on a free local port and forwards each connection to `upstream`, on a thread and
    /// runtime of its own: the engine's synchronous store calls may block the test's runtime.
    pub async fn start(upstream: SocketAddr) -> FaultyProxy {
        let faults = Arc::new(Faults::default());
        let (cut, _) = watch::channel(0u64);
        let (bound, address) = tokio::sync::oneshot::channel();
        let (shared, cuts) = (faults.clone(), cut.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
                let _ = bound.send(listener.local_addr().expect("the proxy's address"));
                while let Ok((client, _)) = listener.accept().await {
                    if shared.refusing.load(Ordering::SeqCst) {
                        shared.refused.fetch_add(1, Ordering::SeqCst);
                        drop(client);
                        continue;
                    }
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(forward(client, upstream, shared.clone(), cuts.subscribe()));
                }
            });
        });
        FaultyProxy {
            address: address.await.expect("the proxy started"),
            faults,
            cut,
        }
    }

    /// A URL for database `database` through the proxy, for `user`.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@{}/{database}", self.address)
    }

    /// Cuts every open connection now.
    pub fn cut_all(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// Lets the next `count` COMMITs land on the server and cuts each one's connection before its
    /// answer reaches the client.
    pub fn lose_commit_answers(&self, count: usize) {
        self.faults.swallow_commits.store(count, Ordering::SeqCst);
    }

    /// COMMIT answers lost so far.
    pub fn commit_answers_lost(&self) -> usize {
        self.faults.swallowed.load(Ordering::SeqCst)
    }

    /// While `refusing`, cuts every connection and closes each new one at once, as a server
    /// that is down or restarting does.
    pub fn refuse(&self, refusing: bool) {
        self.faults.refusing.store(refusing, Ordering::SeqCst);
        if refusing {
            self.cut_all();
        }
    }

    /// Connections refused so far.
    pub fn refused(&self) -> usize {
        self.faults.refused.load(Ordering::SeqCst)
    }

    /// Connections forwarded so far.
    pub fn accepted(&self) -> usize {
        self.faults.accepted.load(Ordering::SeqCst)
    }
}

/// Forwards one connection until either side closes it or the proxy cuts it.
async fn forward(client: TcpStream, upstream: SocketAddr, faults: Arc<Faults>, mut cut: watch::Receiver<u64>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    // Small messages go out at once, as between client and server directly.
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_reads, mut client_writes) = client.into_split();
    let (mut server_reads, mut server_writes) = server.into_split();
    let requests = tokio::io::copy(&mut client_reads, &mut server_writes);
    let answers = async {
        loop {
            let mut header = [0u8; 5];
            server_reads.read_exact(&mut header).await?;
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut message = header.to_vec();
            message.resize(5 + length.saturating_sub(4), 0);
            server_reads.read_exact(&mut message[5..]).await?;
            // CommandComplete with tag COMMIT: the transaction has landed.
            if header[0] == b'C' && message[5..].starts_with(b"COMMIT\0") && take_one(&faults.swallow_commits) {
                faults.swallowed.fetch_add(1, Ordering::SeqCst);
                return Ok::<(), std::io::Error>(());
            }
            client_writes.write_all(&message).await?;
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = answers => {}
        _ = cut.changed() => {}
    }
}

/// Takes one from `counter` if it is above zero.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
        .is_ok()
}
