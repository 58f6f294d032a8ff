//! The operator's view of a deploy: an engine with its admin API and dashboard up, orders
//! flowing, and a watched rollout of a new version moving through its stages while you watch it
//! in the browser or steer it with the `strata` CLI.
//!
//! Run: `cargo run --release --example operator` and open the address it prints. It runs until
//! Ctrl-C (or for `STRATA_RUN_FOR` seconds); `STRATA_ADMIN_ADDRESS` picks another address than
//! 127.0.0.1:7700.

use std::time::Duration;
use strata::prelude::*;

use serde::{Deserialize, Serialize};
use strata::rollout::RolloutStatus;
use strata::{
    Engine, Event, Gates, Next, RolloutSpec, Stage, StartOptions, StepCtx, StepError, StepResult, Version,
    WorkflowVersion,
};

const WORKFLOW: &str = "fulfil";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    number: u64,
    items: u32,
}

async fn reserve(ctx: StepCtx, order: &mut Order) -> StepResult<u64> {
    // One order in a hundred is out of stock, on every version.
    if order.number % 100 == 42 {
        return Err(StepError::permanent(format!(
            "out of stock (reserving on {})",
            ctx.version()
        )));
    }
    // Packing takes a few seconds of durable sleep, so versions keep live instances.
    Ok(Next::sleep(
        Duration::from_millis(2_000 + u64::from(order.items) * 300),
        "ship",
    ))
}

async fn ship(_ctx: StepCtx, order: &mut Order) -> StepResult<u64> {
    Ok(Next::complete(order.number))
}

fn fulfil(version: &str) -> WorkflowVersion<Order, Order, u64> {
    WorkflowVersion::new(WORKFLOW, version)
        .init(|order| order)
        .step("reserve", reserve)
        .step("ship", ship)
}

fn rollout() -> RolloutSpec {
    let hold = Duration::from_secs(20);
    RolloutSpec::new(WORKFLOW, Version::new(2, 0, 0), Version::new(1, 0, 0))
        .stage(Stage::new(10.0, hold, 20))
        .stage(Stage::new(50.0, hold, 40))
        .stage(Stage::new(100.0, hold, 40))
        .gates(Gates {
            max_error_rate_increase: Some(0.05),
            min_success_rate: Some(0.9),
            max_consecutive_failures: Some(5),
            max_latency_multiplier: Some(3.0),
            measures: Vec::new(),
            max_shadow_mismatch: None,
        })
}

/// About twenty orders a second, until the engine stops taking them.
async fn orders(engine: Engine) {
    let mut number = 0u64;
    loop {
        number += 1;
        let order = Order {
            number,
            items: (number % 5) as u32 + 1,
        };
        let options = StartOptions::new().routing_key(format!("customer-{}", number % 500));
        if engine.start_with(WORKFLOW, &order, options).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    // The engine's log lines (each admin API change with who asked, rollout decisions) on stderr;
    // RUST_LOG narrows or widens them.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("strata=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("operator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::var("STRATA_ADMIN_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7700".to_string());
    let dir = tempfile::tempdir()?;
    let engine = Engine::builder()
        .data_dir(dir.path())
        .admin(address.parse()?)
        .register(fulfil("1.0.0"))
        .register(fulfil("2.0.0"))
        .open()
        .await?;
    engine
        .apply_config("strata.toml", "[workflows.fulfil]\ndefault = \"=1.0.0\"\n")
        .await?;
    let url = format!(
        "http://{}",
        engine.admin_address().ok_or("the admin API did not start")?
    );
    println!("dashboard:  {url}/");
    println!("admin API:  {url}/v1/versions   (OpenAPI document: {url}/v1/openapi.json)");
    println!();
    println!("orders flow to fulfil 1.0.0; a watched rollout of 2.0.0 starts in 5 s. Try:");
    println!("  export STRATA_ADMIN_URL={url}");
    println!("  strata versions                          # live / finished per version, safe to remove");
    println!("  strata rollout status fulfil@2.0.0       # stage, share, gate figures against 1.0.0");
    println!("  strata rollout pause fulfil@2.0.0        # hold it; resume or rollback likewise");
    println!("  strata instances list --workflow fulfil --status sleeping");
    println!("  strata versions fulfil 1.0.0 --drained --wait && strata retire fulfil 1.0.0");
    println!("  strata events --follow");
    println!("(`cargo run -p strata-cli -- ...` runs the CLI without installing it)");
    println!();
    let mut events = engine.subscribe();
    let traffic = tokio::spawn(orders(engine.clone()));
    let run_for = std::env::var("STRATA_RUN_FOR")
        .ok()
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .map(Duration::from_secs);
    let stop = async move {
        match run_for {
            Some(limit) => tokio::time::sleep(limit).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    let rollout_at = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(rollout_at);
    let mut rollout_started = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut rollout_at, if !rollout_started => {
                rollout_started = true;
                engine.start_rollout(rollout()).await?;
            }
            event = events.recv() => match event {
                Ok(Event::RolloutStarted { name, .. }) => println!("rollout {name} started: 2.0.0 gets 10 % of new orders"),
                Ok(Event::RolloutAdvanced { name, basis_points, .. }) => {
                    println!("rollout {name}: stage passed, 2.0.0 now gets {} %", basis_points / 100)
                }
                Ok(Event::RolloutPromoted { name, .. }) => println!("rollout {name}: promoted; 1.0.0 drains as its orders ship"),
                Ok(Event::RolloutRolledBack { name, gate, reason }) => println!("rollout {name}: rolled back by {gate:?}: {reason}"),
                Ok(Event::VersionDrained { key, .. }) => println!("{key} drained: its code can be removed"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                _ => {}
            },
        }
    }
    if let Some(record) = engine.rollout("fulfil@2.0.0") {
        let status = match record.status {
            RolloutStatus::Running | RolloutStatus::Paused => "still under way",
            RolloutStatus::Promoted => "promoted",
            RolloutStatus::RolledBack => "rolled back",
        };
        println!("stopping; the rollout is {status}");
    }
    engine.shutdown().await;
    traffic.await?;
    Ok(())
}
