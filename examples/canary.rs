//! A watched canary: the engine rolls a new version out in stages, compares it with the stable
//! version as instances finish, rolls it back by itself when it is worse, and promotes a fixed
//! version through every stage.
//!
//! The workflow quotes shipping prices. 1.4.0 is stable (a carrier call fails now and then);
//! 2.0.0 switches carriers and mishandles one postcode region, failing far more often; 2.0.1
//! fixes that. A stream of quotes runs the whole time.
//!
//! Run: `cargo run --release --example canary`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::prelude::*;

use serde::{Deserialize, Serialize};
use strata::rollout::{RolloutStatus, Transition};
use strata::{
    Engine, Event, Gates, Next, RolloutSpec, Stage, StartOptions, StepCtx, StepError, StepResult, Version,
    WorkflowVersion,
};

const WORKFLOW: &str = "quote";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct QuoteRequest {
    customer: u64,
    postcode: String,
    weight_grams: u64,
}

async fn price(ctx: StepCtx, request: &mut QuoteRequest) -> StepResult<u64> {
    let version = ctx.version().to_string();
    // 1 in 100 carrier calls fails on every version.
    if request.customer % 100 == 42 {
        return Err(StepError::permanent("carrier timeout"));
    }
    // 2.0.0's new carrier integration cannot price postcodes starting with 9.
    if version == "2.0.0" && request.postcode.starts_with('9') {
        return Err(StepError::permanent(format!(
            "no tariff for postcode {}",
            request.postcode
        )));
    }
    Ok(Next::complete(500 + request.weight_grams / 10))
}

fn quote(version: &str) -> WorkflowVersion<QuoteRequest, QuoteRequest, u64> {
    WorkflowVersion::new(WORKFLOW, version)
        .init(|request| request)
        .step("price", price)
}

fn rollout(candidate: Version) -> RolloutSpec {
    let hold = Duration::from_millis(1_500);
    RolloutSpec::new(WORKFLOW, candidate, Version::new(1, 4, 0))
        .stage(Stage::new(5.0, hold, 40))
        .stage(Stage::new(25.0, hold, 40))
        .stage(Stage::new(50.0, hold, 40))
        .stage(Stage::new(100.0, hold, 40))
        .gates(Gates {
            max_error_rate_increase: Some(0.05),
            min_success_rate: Some(0.9),
            max_consecutive_failures: Some(8),
            max_latency_multiplier: None,
            measures: Vec::new(),
            max_shadow_mismatch: None,
        })
}

/// Starts quotes until `stop`, about 400 a second, from 10 000 customers.
async fn traffic(engine: Engine, stop: Arc<AtomicBool>) {
    let mut customer = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..20 {
            customer = (customer + 7_919) % 10_000;
            let request = QuoteRequest {
                customer,
                postcode: format!("{}{:04}", customer % 10, customer),
                weight_grams: 1_000 + customer % 5_000,
            };
            let options = StartOptions::new().routing_key(format!("customer-{customer}"));
            if engine.start_with(WORKFLOW, &request, options).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn figures(engine: &Engine, version: &str) -> String {
    match engine.metrics(WORKFLOW, version, Duration::from_secs(10)) {
        Ok(window) => format!(
            "{version}: {:>4} done, {:>3} failed ({:>5.1} %)",
            window.finished(),
            window.failed,
            window.error_rate().unwrap_or(0.0) * 100.0
        ),
        Err(_) => format!("{version}: -"),
    }
}

/// Prints the rollout's events, and both versions' figures every second, until it ends.
async fn follow(engine: &Engine, events: &mut tokio::sync::broadcast::Receiver<Event>, name: &str, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let line = tokio::select! {
            _ = tick.tick() => {
                let shown: Vec<String> = ["1.4.0", "2.0.0", "2.0.1"].iter().map(|version| figures(engine, version)).collect();
                format!("   last 10 s  {}", shown.join("  |  "))
            }
            event = events.recv() => match event {
                Ok(Event::RolloutStarted { name, candidate, .. }) => format!("rollout {name}: {candidate} gets 5 %"),
                Ok(Event::RolloutAdvanced { name, basis_points, .. }) => {
                    format!("rollout {name}: stage passed, candidate now gets {} %", basis_points / 100)
                }
                Ok(Event::RolloutPromoted { name, candidate }) => {
                    format!("rollout {name}: PROMOTED — {candidate} is the default, 1.4.0 drains")
                }
                Ok(Event::RolloutRolledBack { name, gate, reason }) => {
                    format!("rollout {name}: ROLLED BACK by gate {gate:?}: {reason}")
                }
                Ok(Event::VersionDrained { key, .. }) => format!("{key} drained: its code can be removed"),
                _ => continue,
            },
        };
        println!("t={:>5.1}s  {line}", started.elapsed().as_secs_f64());
        let status = engine.rollout(name).map(|record| record.status);
        if matches!(status, Some(RolloutStatus::Promoted | RolloutStatus::RolledBack)) && line.starts_with("rollout") {
            return;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::builder()
        .data_dir(dir.path())
        .register(quote("1.4.0"))
        .open()
        .await?;
    // Pin the default, so that registering a newer version does not route to it by itself.
    engine
        .apply_config("strata.toml", "[workflows.quote]\ndefault = \"=1.4.0\"\n")
        .await?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut events = engine.subscribe();
    let load = tokio::spawn(traffic(engine.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    engine.register(quote("2.0.0"))?;
    engine.start_rollout(rollout(Version::new(2, 0, 0))).await?;
    follow(&engine, &mut events, "quote@2.0.0", started).await;

    println!("\n-- deploying the fix, 2.0.1 --\n");
    engine.register(quote("2.0.1"))?;
    engine.start_rollout(rollout(Version::new(2, 0, 1))).await?;
    follow(&engine, &mut events, "quote@2.0.1", started).await;
    // The old default drains once its last in-flight quote finishes.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(Event::VersionDrained { key, .. }) => return Some(key),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                _ => {}
            }
        }
    })
    .await;
    if let Ok(Some(key)) = drained {
        println!(
            "t={:>5.1}s  {key} drained: its code can be removed",
            started.elapsed().as_secs_f64()
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.await?;

    println!("\nrollout history of '{WORKFLOW}':");
    for record in engine.rollout_history(WORKFLOW) {
        let steps: Vec<String> = record
            .history
            .iter()
            .map(|entry| match &entry.transition {
                Transition::Advanced { stage } => format!("stage {stage}"),
                Transition::RolledBack {
                    gate,
                    candidate,
                    stable,
                    ..
                } => format!(
                    "rolled back ({gate:?}; candidate {}/{} failed, stable {}/{} failed)",
                    candidate.failed, candidate.finished, stable.failed, stable.finished
                ),
                other => format!("{other:?}").to_lowercase(),
            })
            .collect();
        println!("  {}: {}", record.spec.name, steps.join(" → "));
    }
    println!("\nPrometheus excerpt (Engine::metrics_text):");
    for line in engine.metrics_text().lines() {
        if line.starts_with("strata_instances_failed_total") || line.starts_with("strata_rollout_candidate_share") {
            println!("  {line}");
        }
    }
    engine.shutdown().await;
    Ok(())
}
