//! Changing the shape of stored state while instances run, then moving some of them to a newer
//! version.
//!
//! 1. Order fulfilment 1.1.0 stores its state on schema 1 (a free-text address). The example
//!    fills a store with orders waiting for payment, and stops.
//! 2. The next deploy reads schema 2 (a structured address) — 1.1.0's logic on the new state
//!    type — and brings 2.0.0 and 3.0.0. A background migration rewrites the stored states, with
//!    a progress bar, while payments keep arriving and paid orders run on (each of those is
//!    migrated by its own step's commit). Addresses that do not parse are reported, not lost.
//! 3. A selection of waiting orders is planned for a move to 3.0.0 (dry run, with the reasons
//!    some cannot move), moved, paid, and finished on 3.0.0.
//!
//! Run: `cargo run --release --example migrate_state`

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use strata::prelude::*;

use indicatif::{ProgressBar, ProgressStyle};
use strata::migrate::MigrationState;
use strata::{Engine, EngineBuilder, InstanceFilter, InstanceId, InstanceStatus, MigrationJob, MoveRequest, Version};
use strata_workflows::order::{self, Line, OrderInput, OrderOutput, Payment};

const ORDERS: u64 = 20_000;

fn order_input(n: u64) -> OrderInput {
    let mut input = OrderInput::new(
        format!("M-{n:05}"),
        format!("customer-{}", n % 50),
        vec![Line {
            sku: "teapot".into(),
            quantity: 1 + (n % 3) as u32,
            unit_price_cents: 2_400,
        }],
    )
    .with_address(if n % 2_500 == 7 {
        // A few customers typed something that is not an address.
        format!("ring twice and ask for {n}")
    } else {
        format!("{} Canal Street, {} Amsterdam", 1 + n % 300, 1_000 + n % 90)
    });
    input.payment_timeout_ms = 3_600_000;
    input.warehouse_delay_ms = 200;
    input
}

fn payment(n: u64) -> Payment {
    let input = order_input(n);
    Payment {
        amount_cents: input.total_cents(),
        reference: format!("pay-{}", input.order_id),
    }
}

fn deploy(dir: &Path) -> EngineBuilder {
    let mut builder = Engine::builder()
        .data_dir(dir)
        .max_concurrent_steps(512)
        .register(order::v1_1_on_schema_2())
        .register(order::v2_0())
        .register(order::v3_0());
    for migration in order::migrations() {
        builder = builder.migration(migration);
    }
    for mapping in order::step_mappings() {
        builder = builder.step_mapping(mapping);
    }
    builder
}

fn schema_counts(engine: &Engine) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    let live = engine
        .list(&InstanceFilter::workflow(order::WORKFLOW))
        .expect("list")
        .into_iter()
        .filter(|info| !info.status.is_terminal());
    for info in live {
        *counts.entry(info.state_schema()).or_default() += 1;
    }
    counts
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();

    // 1. Orders on 1.1.0, state schema 1, waiting for payment.
    let engine = Engine::builder()
        .data_dir(dir.path())
        .register(order::v1_1())
        .open()
        .await?;
    let mut ids = Vec::with_capacity(ORDERS as usize);
    for n in 0..ORDERS {
        ids.push(engine.start(order::WORKFLOW, &order_input(n)).await?);
    }
    let waiting = InstanceFilter::workflow(order::WORKFLOW).with_status(InstanceStatus::WaitingSignal);
    while engine.list(&waiting)?.len() < ORDERS as usize {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "1. {ORDERS} orders on order@1.1.0 wait for payment; stored state schemas: {:?}",
        schema_counts(&engine)
    );
    engine.shutdown().await;

    // 2. The deploy: 1.1.0 now reads schema 2. Migrate in the background while orders run.
    let engine = deploy(dir.path()).open().await?;
    println!("2. deployed 1.1.0 on schema 2, 2.0.0 (schema 2), 3.0.0 (schema 3); migrating stored states");
    let payer = {
        let engine = engine.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            // Every 40th order is paid while the migration runs.
            for (n, id) in ids.iter().enumerate().step_by(40) {
                let _ = engine.signal(*id, order::PAYMENT_SIGNAL, &payment(n as u64)).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let job = engine.migrate_states(MigrationJob::new(order::WORKFLOW).batch_size(500).max_per_second(8_000))?;
    let bar = ProgressBar::new(ORDERS);
    bar.set_style(ProgressStyle::with_template(
        "   [{bar:40}] {pos}/{len} migrated · {msg}",
    )?);
    loop {
        let progress = job.progress();
        bar.set_position(progress.migrated);
        bar.set_message(format!(
            "{} remaining · {} failed · {:.0}/s",
            progress.remaining, progress.failed, progress.rate_per_second
        ));
        if progress.state == MigrationState::Finished {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish();
    payer.await?;
    let done = job.progress();
    println!(
        "   background migration: {} records migrated, {} failed; the rest were migrated by their own steps",
        done.migrated, done.failed
    );
    for failure in &done.failures {
        println!("   left as it was: #{} — {}", failure.id, failure.reason);
    }
    println!("   live states by schema now: {:?}", schema_counts(&engine));

    // 3. Move the orders of customer-3 to 3.0.0: a dry run first.
    let chosen: Vec<InstanceId> = (0..ORDERS)
        .filter(|n| n % 50 == 3 || n % 2_500 == 7)
        .map(|n| ids[n as usize])
        .collect();
    let naive = MoveRequest::new(order::WORKFLOW, Version::new(3, 0, 0)).ids(chosen.iter().copied());
    let request = naive.clone().map_step("charge", "capture_payment");
    for (title, request) in [
        ("without a step mapping", &naive),
        ("with charge → capture_payment", &request),
    ] {
        let plan = engine.plan_moves(request)?;
        println!(
            "3. plan {title}: {} of {} can move to order@3.0.0; {} cannot, for example:",
            plan.movable().count(),
            plan.checks.len(),
            plan.refused().count()
        );
        for check in plan.refused().take(3) {
            let reason = check
                .verdict
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            println!("   #{} at '{}': {reason}", check.id, check.step);
        }
    }
    let report = engine.move_instances(&request).await?;
    println!(
        "   moved {} orders, each batch one commit; {} left where they were",
        report.moved.len(),
        report.refused.len()
    );
    for id in &report.moved {
        let n = ids.iter().position(|candidate| candidate == id).unwrap_or_default() as u64;
        engine.signal(*id, order::PAYMENT_SIGNAL, &payment(n)).await?;
    }
    let mut finished_on: BTreeMap<String, usize> = BTreeMap::new();
    for id in &report.moved {
        let output: OrderOutput = engine.outcome(*id).await?.output()?;
        *finished_on.entry(output.finished_on).or_default() += 1;
    }
    println!("   the moved orders, once paid, finished on: {finished_on:?}");
    for version in ["1.1.0", "3.0.0"] {
        let info = engine.version(order::WORKFLOW, version)?;
        println!(
            "   order@{version}: {} live, {} completed, {} moved in, {} moved out",
            info.counters.live, info.counters.completed, info.counters.moved_in, info.counters.moved_out
        );
    }
    println!("done in {:.1}s", started.elapsed().as_secs_f64());
    engine.shutdown().await;
    Ok(())
}
