//! Latencies across worker processes on one PostgreSQL database: how long after a worker hands
//! its instances back (graceful stop) another runs their next step, how long after a worker is
//! killed with SIGKILL another takes its instances over, how long a signal sent through one
//! process takes to wake its instance in another, and how long a start through a process
//! without the workflow's code takes to run its first step on a worker with it (claim included).
//!
//! Run: `cargo run --release --example cluster_latency` (needs PostgreSQL: the server at
//! `STRATA_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`; the example
//! creates a database of its own there and drops it at the end).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata::prelude::*;

use strata::{Engine, InstanceFilter, Next, StepCtx, StepResult, WorkflowVersion};

#[path = "support/database.rs"]
mod database;

/// The workers' lease: a killed worker's instances are taken over after it runs out.
const LEASE: Duration = Duration::from_secs(1);
const TICKERS: u64 = 50;
/// Ticks each ticker runs, a durable sleep of `TICK` apart.
const TICKS: usize = 250;
const TICK: Duration = Duration::from_millis(20);
const PINGS: u64 = 200;

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// One tick: records which process ran it and when, then sleeps durably until the next.
async fn tick(_ctx: StepCtx, ticks: &mut Vec<(u32, u64)>) -> StepResult<u64> {
    ticks.push((std::process::id(), now_micros()));
    if ticks.len() == TICKS {
        return Ok(Next::complete(ticks.len() as u64));
    }
    Ok(Next::sleep(TICK, "tick"))
}

fn ticker() -> WorkflowVersion<u64, Vec<(u32, u64)>, u64> {
    WorkflowVersion::new("ticker", "1.0.0")
        .init(|_: u64| Vec::new())
        .step("tick", tick)
}

async fn wait_for_go(_ctx: StepCtx, _state: &mut u64) -> StepResult<u64> {
    Ok(Next::wait_signal("go", "woken"))
}

/// Completes with the time (µs since the epoch) its step ran after the signal.
async fn woken(_ctx: StepCtx, _state: &mut u64) -> StepResult<u64> {
    Ok(Next::complete(now_micros()))
}

/// Completes at once with the time (µs since the epoch) its first step ran.
async fn stamp_now(_ctx: StepCtx, _state: &mut u64) -> StepResult<u64> {
    Ok(Next::complete(now_micros()))
}

fn stamp() -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("stamp", "1.0.0")
        .init(|_: u64| 0)
        .step("stamp", stamp_now)
}

fn ping() -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("ping", "1.0.0")
        .init(|_: u64| 0)
        .signal_type::<u64>("go")
        .step("wait", wait_for_go)
        .step("woken", woken)
}

/// A worker process: with `tickers` > 0 or `pings` = 0 it has the ticker's code (and starts
/// that many), with `pings` > 0 the ping's and the stamp's (and starts that many pings); then
/// it runs until told `stop` on its standard input (it shuts down, handing its instances back,
/// and says `left` with the time) or until it is killed.
async fn worker(url: &str, tickers: u64, pings: u64) {
    let builder = Engine::builder().postgres(url).lease(LEASE);
    // The ping holder has no ticker code, so it never takes tickers over and is never killed.
    let builder = if pings > 0 {
        builder.register(ping()).register(stamp())
    } else {
        builder.register(ticker())
    };
    let engine = builder.open().await.expect("worker: open the engine");
    for n in 0..tickers {
        engine.start("ticker", &n).await.expect("worker: start a ticker");
    }
    for n in 0..pings {
        engine.start("ping", &n).await.expect("worker: start a ping");
    }
    println!("ready");
    let stdin = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
    let _ = stdin.await;
    engine.shutdown().await;
    println!("left {}", now_micros());
}

struct Worker {
    process: Child,
    stop: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Worker {
    fn spawn(url: &str, tickers: u64, pings: u64) -> Worker {
        let mut process = Command::new(std::env::current_exe().expect("this example's path"))
            .args(["worker", url, &tickers.to_string(), &pings.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a worker");
        let stop = process.stdin.take().expect("the worker's stdin");
        let lines = BufReader::new(process.stdout.take().expect("the worker's stdout")).lines();
        let mut worker = Worker { process, stop, lines };
        worker.expect("ready");
        worker
    }

    /// Reads the worker's output up to a line starting with `word`; returns the rest of it.
    fn expect(&mut self, word: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.expect("read the worker's output");
            if let Some(rest) = line.strip_prefix(word) {
                return rest.trim().to_string();
            }
        }
        panic!("the worker ended before saying '{word}'");
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }
}

/// Median, 90th percentile and maximum of `samples` (ms), as a line.
fn summary(mut samples: Vec<f64>) -> String {
    if samples.is_empty() {
        return "no samples".to_string();
    }
    samples.sort_by(f64::total_cmp);
    let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
    format!(
        "median {:7.1} ms   p90 {:7.1} ms   max {:7.1} ms   ({} samples)",
        at(0.5),
        at(0.9),
        samples[samples.len() - 1],
        samples.len()
    )
}

/// For each ticker that `from` ran last before `moment` (µs), the time from `moment` to its
/// first tick in another process (ms).
fn handovers(tickers: &[Vec<(u32, u64)>], from: u32, moment: u64) -> Vec<f64> {
    tickers
        .iter()
        .filter_map(|ticks| {
            let last_before = ticks.iter().rfind(|(_, at)| *at <= moment)?;
            if last_before.0 != from {
                return None;
            }
            let next = ticks.iter().find(|(pid, at)| *at > moment && *pid != from)?;
            Some((next.1.saturating_sub(moment)) as f64 / 1_000.0)
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    if arguments.get(1).map(String::as_str) == Some("worker") {
        let count = |index: usize| arguments[index].parse().expect("a count");
        return worker(&arguments[2], count(3), count(4)).await;
    }
    let server = database::server_url();
    let name = format!("strata_latency_{}", std::process::id());
    let database = database::ExampleDatabase::create(&server, &name).await;
    let url = database.url().to_string();
    println!("lease {LEASE:?}; workers claim every lease/3; {TICKERS} tickers ticking every {TICK:?}; {PINGS} pings");

    // B and C stand by (D holds the pings); A starts the tickers, then stops gracefully: B and C
    // run their next ticks.
    let mut standby = [Worker::spawn(&url, 0, 0), Worker::spawn(&url, 0, 0)];
    let mut pinger = Worker::spawn(&url, 0, PINGS);
    let mut a = Worker::spawn(&url, TICKERS, 0);
    tokio::time::sleep(Duration::from_millis(800)).await; // lets A tick a while
    writeln!(a.stop, "stop").expect("tell A to stop");
    let a_left: u64 = a.expect("left").parse().expect("A's leaving time");
    let _ = a.process.wait();

    // Whichever of B and C runs (most of) the tickers now is killed; the other takes them over
    // once the killed one's lease runs out.
    let console = Engine::builder().postgres(&url).open().await.expect("open the console");
    tokio::time::sleep(Duration::from_millis(800)).await; // lets the new holder tick a while
                                                          // Both standbys claim what A handed back (it announces it), so the tickers may be split:
                                                          // the one running the most is killed.
    let mut running: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for info in console
        .list(&InstanceFilter::workflow("ticker"))
        .expect("list the tickers")
    {
        if let Some((pid, _)) = info
            .state::<Vec<(u32, u64)>>()
            .ok()
            .and_then(|ticks| ticks.last().copied())
        {
            *running.entry(pid).or_default() += 1;
        }
    }
    let holder_pid = running
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .map(|(pid, _)| pid)
        .expect("a ticker has ticked");
    let victim = standby
        .iter()
        .position(|worker| worker.pid() == holder_pid)
        .expect("B or C holds the tickers");
    let killed = now_micros();
    let _ = standby[victim].process.kill();
    let _ = standby[victim].process.wait();
    let mut survivor = standby.into_iter().nth(1 - victim).expect("the other worker");

    // The console, which has no workflow code, sends the pings' signals through the database.
    let pings = console.list(&InstanceFilter::workflow("ping")).expect("list the pings");
    let mut sent = Vec::new();
    for info in &pings {
        let id = info.id();
        sent.push((id, now_micros()));
        console.signal(id, "go", &1u64).await.expect("send a signal");
        tokio::time::sleep(Duration::from_millis(5)).await; // one signal at a time
    }
    let mut woken = Vec::new();
    for (id, at) in sent {
        let ran: u64 = console
            .outcome(id)
            .await
            .expect("the ping's outcome")
            .output()
            .expect("completed");
        woken.push(ran.saturating_sub(at) as f64 / 1_000.0);
    }
    // Starts through the console, which has no code: accepted, claimed by the survivor at once
    // (NOTIFY), first step run there.
    let mut first_steps = Vec::new();
    for n in 0..PINGS {
        let sent = now_micros();
        let id = console.start("stamp", &n).await.expect("start through the console");
        let ran: u64 = console
            .outcome(id)
            .await
            .expect("the stamp's outcome")
            .output()
            .expect("completed");
        first_steps.push(ran.saturating_sub(sent) as f64 / 1_000.0);
    }
    let mut tickers = Vec::new();
    for info in console
        .list(&InstanceFilter::workflow("ticker"))
        .expect("list the tickers")
    {
        console.outcome(info.id()).await.expect("the ticker's outcome");
    }
    for info in console
        .list(&InstanceFilter::workflow("ticker"))
        .expect("list the tickers")
    {
        tickers.push(info.state::<Vec<(u32, u64)>>().expect("a ticker's state"));
    }
    println!(
        "graceful stop to next step elsewhere:  {}",
        summary(handovers(&tickers, a.pid(), a_left))
    );
    println!(
        "SIGKILL to takeover (first step):      {}",
        summary(handovers(&tickers, holder_pid, killed))
    );
    println!("signal via another process to wake:    {}", summary(woken));
    println!("start without code to first step there: {}", summary(first_steps));
    console.shutdown().await;
    writeln!(survivor.stop, "stop").expect("tell the survivor to stop");
    survivor.expect("left");
    let _ = survivor.process.wait();
    writeln!(pinger.stop, "stop").expect("tell the ping holder to stop");
    pinger.expect("left");
    let _ = pinger.process.wait();
}
