//! Deploying a new workflow version while instances run.
//!
//! Process 1 runs order fulfilment 1.0.0 and starts orders that wait for payments and for the
//! warehouse (durable signals and timers), then exits with them in flight. Process 2 — the
//! "deploy" — opens the same sled directory with 1.0.0 and 2.0.0 registered: old orders finish
//! on 1.0.0, new ones start on 2.0.0, and a live table shows both until 1.0.0 is drained and its
//! code can be removed.
//!
//! Run: `cargo run --release --example live_upgrade`

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use strata::prelude::*;

use strata::{Engine, Event, InstanceFilter, InstanceId, InstanceStatus};
use strata_workflows::order::{self, Line, OrderInput, OrderOutput, OrderState, Payment};

const OLD_ORDERS: u64 = 40;
const NEW_ORDERS: u64 = 20;

fn order_input(n: u64) -> OrderInput {
    let mut input = OrderInput::new(
        format!("A-{n:03}"),
        format!("customer-{}", n % 9),
        vec![
            Line {
                sku: "kettle".into(),
                quantity: 1,
                unit_price_cents: 3_900,
            },
            Line {
                sku: if n % 5 == 0 { "flaky-mug".into() } else { "mug".into() },
                quantity: 2,
                unit_price_cents: 850,
            },
        ],
    );
    input.warehouse_delay_ms = 1_000 + (n % 4) * 700;
    // A few customers never pay: their orders time out on their own, on a durable timer.
    input.payment_timeout_ms = if n % 10 == 3 { 4_000 } else { 120_000 };
    input
}

fn payment(state: &OrderState) -> Payment {
    Payment {
        amount_cents: state.input.total_cents(),
        reference: format!("pay-{}", state.input.order_id),
    }
}

fn print_table(engine: &Engine, elapsed: Duration) {
    println!(
        "  t={:>5.1}s  version        status     live  completed  failed  oldest live",
        elapsed.as_secs_f64()
    );
    for info in engine.versions() {
        let oldest = info.oldest_live.map_or("-".to_string(), |(id, _)| format!("#{id}"));
        let status = format!("{:?}", info.status);
        println!(
            "           {:<14} {:<10} {:>4}  {:>9}  {:>6}  {}",
            info.key.to_string(),
            status,
            info.counters.live,
            info.counters.completed,
            info.counters.failed,
            oldest
        );
    }
}

async fn pay(engine: &Engine, id: InstanceId) {
    let Ok(info) = engine.instance(id) else {
        return;
    };
    if info.status.is_terminal() {
        return;
    }
    let state: OrderState = order::order_state(info.state_schema(), info.state_bytes()).expect("order state");
    if state.input.payment_timeout_ms < 10_000 {
        return; // this customer never pays
    }
    if let Err(error) = engine.signal(id, order::PAYMENT_SIGNAL, &payment(&state)).await {
        eprintln!("signal to #{id} failed: {error}");
    }
}

/// Process 1: only 1.0.0 is deployed.
async fn run_first_deployment(dir: &Path) -> Result<(), strata::EngineError> {
    let started = Instant::now();
    let engine = Engine::builder().data_dir(dir).register(order::v1_0()).open().await?;
    println!("process 1 (pid {}): order 1.0.0 deployed", std::process::id());
    let mut ids = Vec::new();
    for n in 0..OLD_ORDERS {
        ids.push(engine.start(order::WORKFLOW, &order_input(n)).await?);
    }
    // Half of the customers pay now: those orders go on to the warehouse's durable sleep.
    for id in ids.iter().step_by(2) {
        pay(&engine, *id).await;
    }
    let waiting = |engine: &Engine| {
        engine.list(&InstanceFilter::workflow(order::WORKFLOW)).map(|all| {
            let mut counts: HashMap<InstanceStatus, usize> = HashMap::new();
            for info in all {
                *counts.entry(info.status).or_default() += 1;
            }
            counts
        })
    };
    let mut events = engine.subscribe();
    // Let the paid orders reach the warehouse step before the process goes away.
    while waiting(&engine)?.get(&InstanceStatus::Sleeping).copied().unwrap_or(0) < (OLD_ORDERS / 2) as usize {
        let _ = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
    }
    print_table(&engine, started.elapsed());
    let counts = waiting(&engine)?;
    println!(
        "process 1 exits with {} orders in flight: {} waiting for payment, {} in the warehouse (durable timers)\n",
        live_orders(&engine),
        counts.get(&InstanceStatus::WaitingSignal).unwrap_or(&0),
        counts.get(&InstanceStatus::Sleeping).unwrap_or(&0),
    );
    engine.shutdown().await;
    Ok(())
}

/// The orders in flight, on every version (those idle beyond the residency horizon wait in the
/// store, not in memory).
fn live_orders(engine: &Engine) -> u64 {
    engine
        .versions()
        .iter()
        .filter(|info| info.key.workflow == order::WORKFLOW)
        .map(|info| info.counters.live)
        .sum()
}

/// Process 2: 2.0.0 is deployed beside 1.0.0 on the same store.
async fn run_second_deployment(dir: &Path) -> Result<(), strata::EngineError> {
    let started = Instant::now();
    let engine = Engine::builder()
        .data_dir(dir)
        .register(order::v1_0())
        .register(order::v2_0())
        .open()
        .await?;
    let mut events = engine.subscribe();
    println!(
        "process 2 (pid {}): order 1.0.0 and 2.0.0 deployed, same data directory",
        std::process::id()
    );
    let old: Vec<InstanceId> = engine
        .list(&InstanceFilter::workflow(order::WORKFLOW))?
        .iter()
        .map(|info| info.id())
        .collect();
    println!(
        "recovered {} live orders, all pinned to 1.0.0; draining 1.0.0\n",
        live_orders(&engine)
    );
    engine.drain(order::WORKFLOW, "1.0.0").await?;
    let mut new = Vec::new();
    for n in 0..NEW_ORDERS {
        new.push(engine.start(order::WORKFLOW, &order_input(100 + n)).await?);
    }
    for id in &new {
        pay(&engine, *id).await;
    }
    let mut unpaid: Vec<InstanceId> = old.clone();
    let mut drained_at = None;
    let mut last_table = Instant::now() - Duration::from_secs(1);
    loop {
        // The remaining 1.0.0 customers pay, a few at a time.
        for id in unpaid.drain(..unpaid.len().min(4)) {
            pay(&engine, id).await;
        }
        if last_table.elapsed() >= Duration::from_millis(1_000) {
            print_table(&engine, started.elapsed());
            last_table = Instant::now();
        }
        if drained_at.is_some() && live_orders(&engine) == 0 {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(250), events.recv()).await {
            Ok(Ok(Event::VersionDrained { key, counters })) => {
                println!(
                    "\n  >> {key} drained after {:.1}s: 0 live, {} completed, {} failed — its code can be removed\n",
                    started.elapsed().as_secs_f64(),
                    counters.completed,
                    counters.failed
                );
                drained_at = Some(started.elapsed());
            }
            _ => continue,
        }
    }
    print_table(&engine, started.elapsed());
    let mut finished_on: HashMap<(bool, String, String), u64> = HashMap::new();
    for (is_old, ids) in [(true, &old), (false, &new)] {
        for id in ids {
            let output: OrderOutput = engine.output(*id).await?;
            *finished_on
                .entry((is_old, output.finished_on, output.status))
                .or_default() += 1;
        }
    }
    println!();
    let mut lines: Vec<_> = finished_on.into_iter().collect();
    lines.sort();
    for ((is_old, version, status), count) in lines.into_iter().rev() {
        let group = if is_old {
            "started before the deploy"
        } else {
            "started after the deploy "
        };
        println!("  {count:>3} orders {group} finished on {version}: {status}");
    }
    let info = engine.version(order::WORKFLOW, "1.0.0")?;
    println!(
        "\norder@1.0.0: status {:?}, {} live, safe to remove: {}",
        info.status,
        info.counters.live,
        if info.safe_to_remove() { "yes" } else { "no" }
    );
    engine.shutdown().await;
    Ok(())
}

fn run_phase(phase: &str, dir: &Path) {
    let status = Command::new(std::env::current_exe().expect("own path"))
        .args(["--phase", phase, "--dir"])
        .arg(dir)
        .status()
        .expect("start the deployment process");
    assert!(status.success(), "deployment process '{phase}' failed: {status}");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, phase, dir_flag, dir] = args.as_slice() {
        if flag == "--phase" && dir_flag == "--dir" {
            let dir = PathBuf::from(dir);
            match phase.as_str() {
                "first" => run_first_deployment(&dir).await?,
                _ => run_second_deployment(&dir).await?,
            }
            return Ok(());
        }
    }
    let dir = std::env::temp_dir().join(format!("strata-live-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("Strata live upgrade — data directory {}\n", dir.display());
    let started = Instant::now();
    run_phase("first", &dir);
    run_phase("second", &dir);
    println!("done in {:.1}s", started.elapsed().as_secs_f64());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
