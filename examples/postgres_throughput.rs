//! Durable steps per second on PostgreSQL with 1, 2 and 4 worker processes, next to what the
//! server itself does (pgbench's simple-update transactions per second, same client count).
//!
//! Each worker process starts its share of 1 024 instances of a 60-step workflow and runs
//! them; every step is one commit, grouped with the other instances' steps into one
//! transaction. Then each starts its share of 8 192 instances that wait for a signal after their
//! first step: starts measured alone. Prints starts/s (while the steps run, and alone), steps/s
//! and pgbench's tps per process count.
//!
//! Run: `cargo run --release --example postgres_throughput` (needs PostgreSQL and `pgbench`:
//! the server at `STRATA_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`;
//! it creates databases of its own there and drops them).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strata::prelude::*;

use strata::{Durability, Engine, Next, StepCtx, StepResult, WorkflowVersion};

#[path = "support/database.rs"]
mod database;

const CONCURRENT: u64 = 1_024;
const STEPS: u32 = 60;

async fn count(_ctx: StepCtx, done: &mut u32) -> StepResult<u32> {
    *done += 1;
    Ok(if *done == STEPS {
        Next::complete(*done)
    } else {
        Next::goto("count")
    })
}

/// Starts measured on their own: an instance that waits for a signal after its first step.
const WAITERS: u64 = 8_192;

async fn wait(_ctx: StepCtx, _state: &mut u32) -> StepResult<u32> {
    Ok(Next::wait_signal("go", "wait"))
}

fn waiter() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new("waiter", "1.0.0")
        .init(|_: u32| 0)
        .signal_type::<u32>("go")
        .step("wait", wait)
}

/// Starts `count` instances of `workflow` from 64 concurrent callers; returns their ids.
async fn start_many(engine: &Engine, workflow: &'static str, count: u64) -> Vec<strata::InstanceId> {
    let mut starters = Vec::new();
    for chunk in 0..64 {
        let engine = engine.clone();
        starters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (chunk..count).step_by(64) {
                ids.push(engine.start(workflow, &(n as u32)).await.expect("start"));
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for starter in starters {
        ids.extend(starter.await.expect("starter"));
    }
    ids
}

fn counter() -> WorkflowVersion<u32, u32, u32> {
    WorkflowVersion::new("counter", "1.0.0")
        .init(|_: u32| 0)
        .step("count", count)
}

/// One worker process: starts `instances`, runs them to the end, prints its timings.
async fn worker(url: &str, instances: u64, waiters: u64) {
    let engine = Engine::builder()
        .postgres(url)
        .durability(Durability::Sync)
        .max_concurrent_steps(1_024)
        .register(counter())
        .register(waiter())
        .open()
        .await
        .expect("open");
    println!("ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let began = Instant::now();
    let ids = start_many(&engine, "counter", instances).await;
    let started = began.elapsed();
    for id in ids {
        engine.outcome(id).await.expect("outcome");
    }
    let finished = began.elapsed();
    println!("timing {} {}", started.as_secs_f64(), finished.as_secs_f64());
    // Then starts alone, when the parent says go again.
    line.clear();
    let _ = std::io::stdin().read_line(&mut line);
    let began = Instant::now();
    start_many(&engine, "waiter", waiters).await;
    println!("starts {}", began.elapsed().as_secs_f64());
    engine.shutdown().await;
}

/// Reads a worker's output up to the line starting with `prefix`; returns the rest of it.
fn read_line_starting(stdout: &mut std::io::BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let read = std::io::BufRead::read_line(stdout, &mut line).expect("a worker's output");
        assert!(read > 0, "a worker ended before printing '{prefix}'");
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            return rest.to_string();
        }
    }
}

/// pgbench's simple-update tps with `clients` clients for 10 s on a database of its own.
fn pgbench(server: &str, clients: u64) -> String {
    let url = database::database_url(server, "strata_pgbench");
    let init = Command::new("pgbench")
        .args(["-i", "-q", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(init, Ok(status) if status.success()) {
        return "pgbench not available".to_string();
    }
    let clients = clients.to_string();
    let output = Command::new("pgbench")
        .args(["-N", "-c", &clients, "-j", "2", "-T", "10", &url])
        .output();
    match output {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .find(|line| line.starts_with("tps"))
            .map(|line| line.to_string())
            .unwrap_or_else(|| "pgbench printed no tps".to_string()),
        Err(error) => format!("pgbench failed: {error}"),
    }
}

#[tokio::main]
async fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let server = database::server_url();
    if arguments.get(1).map(String::as_str) == Some("worker") {
        let count = |index: usize| arguments[index].parse().expect("a count");
        return worker(&arguments[2], count(3), count(4)).await;
    }
    let _pgbench = database::ExampleDatabase::create(&server, "strata_pgbench").await;
    println!("{CONCURRENT} concurrent instances of {STEPS} steps, Sync, one commit per step, grouped per transaction");
    for processes in [1u64, 2, 4] {
        let name = format!("strata_throughput_{}_{processes}", std::process::id());
        let database = database::ExampleDatabase::create(&server, &name).await;
        let url = database.url().to_string();
        let mut workers = Vec::new();
        for _ in 0..processes {
            let mut child = Command::new(std::env::current_exe().expect("path"))
                .args([
                    "worker",
                    &url,
                    &(CONCURRENT / processes).to_string(),
                    &(WAITERS / processes).to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn worker");
            let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
            let mut line = String::new();
            std::io::BufRead::read_line(&mut stdout, &mut line).expect("ready");
            workers.push((child, stdout));
        }
        // Every worker is open: start them together.
        for (child, _) in &mut workers {
            std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), b"go\n").expect("go");
        }
        let (mut start_max, mut finish_max, mut waiters_max) = (0.0f64, 0.0f64, 0.0f64);
        for (_, stdout) in &mut workers {
            let timing = read_line_starting(stdout, "timing ");
            let mut parts = timing.split(' ').map(|part| part.parse::<f64>().expect("seconds"));
            start_max = start_max.max(parts.next().expect("start"));
            finish_max = finish_max.max(parts.next().expect("finish"));
        }
        // Every worker has finished its steps: the starts-only phase, together again.
        for (child, _) in &mut workers {
            std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), b"go\n").expect("go");
        }
        for (mut child, mut stdout) in workers {
            let seconds = read_line_starting(&mut stdout, "starts ");
            waiters_max = waiters_max.max(seconds.parse::<f64>().expect("seconds"));
            let _ = child.wait();
        }
        let steps = (CONCURRENT * u64::from(STEPS)) as f64;
        println!(
            "{processes} process(es): starts {:>7.0}/s   steps {:>7.0}/s   (all done in {:.2} s)   starts alone {:>7.0}/s",
            CONCURRENT as f64 / start_max,
            steps / finish_max,
            finish_max,
            WAITERS as f64 / waiters_max
        );
        drop(database);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("pgbench -N (simple-update), 64 clients, 10 s: {}", pgbench(&server, 64));
}
