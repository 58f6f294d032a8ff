//! Rolling out order fulfilment 2.0.0 by editing the config file of a running engine.
//!
//! The example plays the operator: it rewrites `strata.toml` step by step — 0 % → 10 % → 50 % →
//! an invalid edit (rejected; the 50 % rollout stays in force) → the kill switch → 100 % — and
//! after each step starts 2 000 orders for different customers and prints the share each version
//! got, with the config generation in force.
//!
//! Run: `cargo run --release --example flag_rollout`

use std::path::Path;
use std::time::{Duration, Instant};
use strata::prelude::*;

use strata::{Engine, Event, StartOptions};
use strata_workflows::order::{self, Line, OrderInput};

const ORDERS_PER_STEP: usize = 2_000;

fn config(percent: f64, flag_enabled: bool) -> String {
    format!(
        r#"[flags.payment-first]
enabled = {flag_enabled}

[workflows.order]
default = "^1"

[[workflows.order.rollouts]]
candidate = "2.0.0"
percent = {percent}
flag = "payment-first"
"#
    )
}

/// Saves the file as an editor does: a new file renamed over the old one.
fn save(path: &Path, text: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("toml.new");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

async fn wait_for_verdict(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Event {
    loop {
        match events.recv().await {
            Ok(event @ (Event::ConfigApplied { .. } | Event::ConfigRejected { .. })) => return event,
            Ok(_) => {}
            Err(error) => panic!("event stream: {error}"),
        }
    }
}

/// Starts one order per customer; returns, per customer, whether it got 2.0.0.
async fn start_orders(engine: &Engine, step: usize) -> Result<Vec<bool>, strata::EngineError> {
    let mut on_new = Vec::with_capacity(ORDERS_PER_STEP);
    for customer in 0..ORDERS_PER_STEP {
        let input = OrderInput::new(
            format!("S{step}-{customer}"),
            format!("customer-{customer}"),
            vec![Line {
                sku: "lamp".into(),
                quantity: 1,
                unit_price_cents: 2_500,
            }],
        );
        let options = StartOptions::new().routing_key(format!("customer-{customer}"));
        let id = engine.start_with(order::WORKFLOW, &input, options).await?;
        on_new.push(engine.instance(id)?.version().major == 2);
    }
    Ok(on_new)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("strata-flag-rollout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("strata.toml");
    save(&config_path, &config(0.0, true))?;
    let engine = Engine::builder()
        .data_dir(dir.join("data"))
        .durability(strata::Durability::Buffered {
            interval: Duration::from_millis(50),
        })
        .register(order::v1_1())
        .register(order::v2_0())
        .config_file(&config_path)
        .open()
        .await?;
    let mut events = engine.subscribe();
    println!("engine running; watching {}\n", config_path.display());
    println!(
        "  {:<28} {:<18} {:>3}   {:>8}  {:>8}   moved back",
        "step", "config", "gen", "1.1.0", "2.0.0"
    );
    let mut previous: Option<Vec<bool>> = None;

    let steps: [(&str, String); 6] = [
        ("start: 0 %", config(0.0, true)),
        ("raise to 10 %", config(10.0, true)),
        ("raise to 50 %", config(50.0, true)),
        ("typo: percent = 500", config(500.0, true)),
        ("kill switch: flag off", config(50.0, false)),
        ("flag on, 100 %", config(100.0, true)),
    ];
    for (index, (label, text)) in steps.iter().enumerate() {
        let verdict = if index == 0 {
            "applied".to_string() // applied at open
        } else {
            let written = Instant::now();
            save(&config_path, text)?;
            match wait_for_verdict(&mut events).await {
                Event::ConfigApplied { .. } => format!("applied in {} ms", written.elapsed().as_millis()),
                Event::ConfigRejected { reason, .. } => {
                    println!("    rejected: {reason}");
                    "REJECTED".to_string()
                }
                _ => unreachable!(),
            }
        };
        let generation = engine.config_history()?.last().map_or(0, |config| config.generation);
        let on_new = start_orders(&engine, index).await?;
        let new = on_new.iter().filter(|on_new| **on_new).count();
        let share = |count: usize| 100.0 * count as f64 / ORDERS_PER_STEP as f64;
        // Customers on 2.0.0 at the previous step who got 1.1.0 now (only the kill switch may do that).
        let moved_back = previous.as_ref().map_or(0, |before| {
            before.iter().zip(&on_new).filter(|(was, is)| **was && !**is).count()
        });
        println!(
            "  {label:<28} {verdict:<18} {generation:>3}   {:>6.1} %  {:>6.1} %   {moved_back}",
            share(ORDERS_PER_STEP - new),
            share(new)
        );
        previous = Some(on_new);
    }
    println!(
        "\nraising the percentage moved no customer back; the rejected edit changed nothing; the kill switch did."
    );
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
