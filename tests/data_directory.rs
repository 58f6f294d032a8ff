//! One engine at a time uses a data directory: a second engine, in another process, is refused at
//! once with a typed error naming the process that holds it; once that process is gone the
//! directory opens. Within one process, a store still closing is waited for.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use strata::store::BackendFailure;

use common::*;
use strata::{EngineError, StoreError};

const HOLDER_DIR: &str = "STRATA_TEST_HOLDER_DIR";

/// The child: opens an engine on the directory, says so, and holds it until its standard input
/// closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by another_engine_holding_the_directory_is_refused_at_once_by_its_process_id"]
async fn hold_the_directory_until_stdin_closes() {
    let Ok(dir) = std::env::var(HOLDER_DIR) else {
        return;
    };
    let engine = builder(std::path::Path::new(&dir)).open().await.unwrap();
    println!("holding");
    std::io::stdout().flush().unwrap();
    tokio::task::spawn_blocking(|| {
        let mut rest = String::new();
        let _ = std::io::stdin().read_line(&mut rest);
    })
    .await
    .unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_engine_holding_the_directory_is_refused_at_once_by_its_process_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hold_the_directory_until_stdin_closes",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER_DIR, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the child said it holds the directory").unwrap();
        if line.ends_with("holding") {
            break;
        }
    }
    let started = std::time::Instant::now();
    match builder(dir.path()).open().await {
        Err(EngineError::Store(
            error @ StoreError::Backend {
                kind: BackendFailure::InUse,
                ..
            },
        )) => {
            let message = error.to_string();
            assert!(
                message.contains(&format!("process {}", holder.id())) && message.contains("stop that engine"),
                "{message}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("two engines opened one data directory"),
    }
    // Not the ten seconds this process waits for a store of its own that is closing.
    let took = started.elapsed();
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert!(took < std::time::Duration::from_secs(5), "the refusal waited {took:?}");
    let engine = builder(dir.path())
        .open()
        .await
        .expect("the directory opens once its holder is gone");
    engine.shutdown().await;
}
