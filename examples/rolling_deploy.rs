//! A rolling deploy across worker processes sharing one PostgreSQL database.
//!
//! Workers A and B run order fulfilment 1.0.0 and take orders. The deploy replaces them one at
//! a time with C and D, which have 1.0.0 and 2.0.0: new orders go to 2.0.0, a stopped worker's
//! 1.0.0 orders are taken over at once by a worker that has the code, and no worker ever runs
//! a version it has no code for. This process is the operator's console: it has no workflow
//! code, sends the payments through the database, drains 1.0.0, and prints per version the live
//! and completed orders and which workers can run it, until 1.0.0 is drained and its code can go.
//!
//! Run: `cargo run --release --example rolling_deploy` (needs PostgreSQL: the server at
//! `STRATA_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`; the example
//! creates a database of its own there and drops it at the end).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use strata::prelude::*;

use strata::{Engine, InstanceFilter, InstanceStatus, StartOptions, VersionStatus};
use strata_workflows::order::{self, Line, OrderInput, Payment};

#[path = "support/database.rs"]
mod database;

const ORDERS_PER_WORKER: u64 = 12;

fn order_input(worker: &str, n: u64) -> OrderInput {
    let mut input = OrderInput::new(
        format!("{worker}-{n:02}"),
        format!("customer-{}", n % 7),
        vec![Line {
            sku: "kettle".into(),
            quantity: 1 + (n % 3) as u32,
            unit_price_cents: 3_900,
        }],
    );
    input.warehouse_delay_ms = 400 + (n % 4) * 200;
    input
}

/// A worker process: opens the engine with the versions it has code for, starts its orders,
/// and runs until told `stop` on its standard input (then it shuts down and hands its claims back).
async fn worker(url: &str, name: &str, versions: &str) {
    let mut builder = Engine::builder()
        .postgres(url)
        .lease(Duration::from_secs(3))
        .register(order::v1_0());
    if versions.contains('2') {
        builder = builder.register(order::v2_0());
    }
    let engine = builder.open().await.expect("worker: open the engine");
    println!("ready {}", engine.worker_id());
    for n in 0..ORDERS_PER_WORKER {
        let options = StartOptions::new().routing_key(format!("{name}-{n}"));
        engine
            .start_with(order::WORKFLOW, &order_input(name, n), options)
            .await
            .expect("worker: start an order");
    }
    println!("started");
    let stdin = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
    let _ = stdin.await;
    engine.shutdown().await;
}

/// A worker process of this example, and the pipe that stops it.
struct Worker {
    name: &'static str,
    id: String,
    process: Child,
    stop: ChildStdin,
}

fn spawn_worker(url: &str, name: &'static str, versions: &str) -> Worker {
    let mut process = Command::new(std::env::current_exe().expect("this example's path"))
        .args(["worker", name, versions])
        .env("STRATA_DATABASE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a worker process");
    let stop = process.stdin.take().expect("worker stdin");
    let mut lines = BufReader::new(process.stdout.take().expect("worker stdout")).lines();
    let mut id = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(ready) = line.strip_prefix("ready ") {
            id = ready.to_string();
        }
        if line == "started" {
            break;
        }
    }
    println!("  worker {name} up with {versions} as {id}");
    Worker {
        name,
        id,
        process,
        stop,
    }
}

fn stop_worker(mut worker: Worker) {
    let _ = writeln!(worker.stop, "stop");
    let _ = worker.process.wait();
    println!("  worker {} stopped; its claims are handed back", worker.name);
}

fn print_table(console: &Engine, names: &HashMap<String, &'static str>, started: Instant) {
    println!(
        "  t={:>4.1}s  version        status     live  completed  workers that can run it",
        started.elapsed().as_secs_f64()
    );
    for info in console.versions() {
        let workers: Vec<&str> = info
            .workers
            .iter()
            .map(|id| names.get(id).copied().unwrap_or("?"))
            .collect();
        let workers = if workers.is_empty() && info.counters.live > 0 {
            "none (its orders wait)".to_string()
        } else {
            workers.join(", ")
        };
        println!(
            "           {:<14} {:<10} {:>4}  {:>9}  {}",
            info.key.to_string(),
            format!("{:?}", info.status),
            info.counters.live,
            info.counters.completed,
            workers
        );
    }
}

/// Pays every order waiting for its payment, through the database (the console has no code).
async fn pay_waiting(console: &Engine) {
    let waiting = console
        .list(&InstanceFilter::workflow(order::WORKFLOW).with_status(InstanceStatus::WaitingSignal))
        .expect("list orders");
    for info in waiting {
        let Ok(state) = order::order_state(info.state_schema(), info.state_bytes()) else {
            continue;
        };
        let payment = Payment {
            amount_cents: state.input.total_cents(),
            reference: format!("pay-{}", state.input.order_id),
        };
        let _ = console.signal(info.id(), order::PAYMENT_SIGNAL, &payment).await;
    }
}

#[tokio::main]
async fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let server = database::server_url();
    if arguments.get(1).map(String::as_str) == Some("worker") {
        return worker(&server, &arguments[2], &arguments[3]).await;
    }
    let name = format!("strata_rolling_deploy_{}", std::process::id());
    let database = database::ExampleDatabase::create(&server, &name).await;
    let url = database.url().to_string();
    let started = Instant::now();
    let console = Engine::builder().postgres(&url).open().await.expect("open the console");
    let mut names: HashMap<String, &'static str> = HashMap::new();

    println!("Before the deploy: two workers with order fulfilment 1.0.0 take orders.");
    let a = spawn_worker(&url, "A", "1.0.0");
    let b = spawn_worker(&url, "B", "1.0.0");
    names.extend([(a.id.clone(), "A"), (b.id.clone(), "B")]);
    print_table(&console, &names, started);

    println!("\nThe deploy, one worker at a time: C has 1.0.0 and 2.0.0; new orders go to 2.0.0.");
    let c = spawn_worker(&url, "C", "1.0.0,2.0.0");
    names.insert(c.id.clone(), "C");
    print_table(&console, &names, started);
    stop_worker(a);
    let d = spawn_worker(&url, "D", "1.0.0,2.0.0");
    names.insert(d.id.clone(), "D");
    stop_worker(b);
    print_table(&console, &names, started);

    println!("\nOnly new workers run now. 1.0.0 takes no new orders; its last ones finish.");
    let status = console.drain(order::WORKFLOW, "1.0.0").await.expect("drain 1.0.0");
    println!("  drain 1.0.0: {status:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        pay_waiting(&console).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        print_table(&console, &names, started);
        let old = console.version(order::WORKFLOW, "1.0.0").expect("1.0.0");
        if old.status == VersionStatus::Drained || Instant::now() > deadline {
            break;
        }
    }
    let old = console.version(order::WORKFLOW, "1.0.0").expect("1.0.0");
    println!(
        "\n1.0.0: {:?}, {} live, {} completed; safe to remove its code: {}",
        old.status,
        old.counters.live,
        old.counters.completed,
        old.safe_to_remove()
    );
    stop_worker(c);
    stop_worker(d);
    console.shutdown().await;
}
