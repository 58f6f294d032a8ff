//! A candidate judged in shadow before it serves anyone, on cost, quality and agreement.
//!
//! The workflow is an assistant: it understands a question, then answers it, each step a
//! (simulated) model call that records the tokens it used, what it cost and — for the answer — a
//! quality score. 1.0.0 is stable. 2.0.0 uses a smaller model: far cheaper, but on two topics in
//! five it answers differently and worse. It is rolled out with a shadow stage first: for half
//! the questions 1.0.0 answers, 2.0.0 runs beside it unseen, and the gates compare the pairs —
//! the quality gate or the agreement gate (whichever has its sample first) rolls it back before
//! a single user got its answer. 2.1.0 tunes the small
//! model: it agrees with 1.0.0 and costs less, passes the shadow stage and the canary stages,
//! and is promoted. A stream of questions runs the whole time.
//!
//! Run: `cargo run --release --example shadow_canary`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::prelude::*;

use serde::{Deserialize, Serialize};
use strata::rollout::{RolloutStatus, Transition};
use strata::{
    Engine, Event, Gates, MeasureGate, MeasureKind, Next, RolloutSpec, Stage, StartOptions, StepCtx, StepResult,
    Version, WorkflowVersion,
};

const WORKFLOW: &str = "assistant";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Question {
    user: u64,
    topic: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reply {
    /// What the assistant decided the user wants.
    intent: String,
    /// Which model answered (differs between versions, and must not count as a difference).
    model: String,
}

/// The model a version calls: price per call, and how it does on a topic.
struct Model {
    name: &'static str,
    cost_per_call: f64,
    tokens_per_call: f64,
    /// Whether it misreads this topic (and how good its answer is then).
    misreads: fn(u64) -> bool,
}

fn model_of(version: &Version) -> Model {
    match (version.major, version.minor) {
        (2, 0) => Model {
            name: "small",
            cost_per_call: 0.002,
            tokens_per_call: 700.0,
            misreads: |topic| topic % 5 < 2,
        },
        (2, _) => Model {
            name: "small-tuned",
            cost_per_call: 0.004,
            tokens_per_call: 900.0,
            misreads: |_| false,
        },
        _ => Model {
            name: "large",
            cost_per_call: 0.010,
            tokens_per_call: 1_200.0,
            misreads: |_| false,
        },
    }
}

async fn understand(ctx: StepCtx, _question: &mut Question) -> StepResult<Reply> {
    let model = model_of(ctx.version());
    ctx.record("tokens", model.tokens_per_call);
    ctx.record("cost_usd", model.cost_per_call);
    Ok(Next::goto("answer"))
}

async fn answer(ctx: StepCtx, question: &mut Question) -> StepResult<Reply> {
    let model = model_of(ctx.version());
    let misread = (model.misreads)(question.topic);
    ctx.record("tokens", model.tokens_per_call);
    ctx.record("cost_usd", model.cost_per_call);
    ctx.record("quality", if misread { 0.45 } else { 0.92 });
    // A shadow's answer is computed but not sent: `ctx.is_shadow()` would skip the delivery.
    let intent = if misread { 99 } else { question.topic % 7 };
    Ok(Next::complete(Reply {
        intent: format!("intent-{intent}"),
        model: model.name.to_string(),
    }))
}

fn assistant(version: &str) -> WorkflowVersion<Question, Question, Reply> {
    WorkflowVersion::new(WORKFLOW, version)
        .init(|question| question)
        .measure("tokens", MeasureKind::Summed)
        .measure("cost_usd", MeasureKind::Summed)
        .measure("quality", MeasureKind::Averaged)
        .step("understand", understand)
        .step("answer", answer)
        // Two replies agree when they decided the same intent, whichever model wrote them.
        .compare_outputs(|stable: &Reply, candidate: &Reply| {
            if stable.intent == candidate.intent {
                Ok(())
            } else {
                Err(format!(
                    "intent {} where the stable decided {}",
                    candidate.intent, stable.intent
                ))
            }
        })
}

/// A shadow stage of 50 % of the stable's questions, then canary stages of 10, 50 and 100 %;
/// each held 1.5 s and needing 60 finished candidate instances (shadow ones in the shadow stage).
fn rollout(candidate: Version) -> RolloutSpec {
    let hold = Duration::from_millis(1_500);
    RolloutSpec::new(WORKFLOW, candidate, Version::new(1, 0, 0))
        .stage(Stage::shadow(50.0, hold, 60))
        .stage(Stage::new(10.0, hold, 60))
        .stage(Stage::new(50.0, hold, 60))
        .stage(Stage::new(100.0, hold, 60))
        .gates(Gates {
            max_error_rate_increase: Some(0.05),
            max_shadow_mismatch: Some(0.25),
            measures: vec![
                MeasureGate::new("quality").min(0.85).min_sample(60),
                MeasureGate::new("cost_usd").max_increase(0.2).min_sample(60),
            ],
            ..Gates::default()
        })
}

/// Asks questions until `stop`, about 300 a second, from 5 000 users; counts them.
async fn traffic(engine: Engine, stop: Arc<AtomicBool>, asked: Arc<AtomicU64>) {
    let mut user = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..15 {
            user = (user + 7_919) % 5_000;
            let question = Question { user, topic: user % 97 };
            let options = StartOptions::new().routing_key(format!("user-{user}"));
            if engine.start_with(WORKFLOW, &question, options).await.is_err() {
                return;
            }
            asked.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rollout's figures now: the candidate's against the stable's in the current stage.
fn figures(engine: &Engine, name: &str) -> Option<String> {
    let record = engine.rollout(name)?;
    if !record.status.is_active() {
        return None;
    }
    let (candidate, stable) = engine.rollout_figures(&record);
    let figure = |figures: &strata::rollout::Figures, measure: &str| {
        figures
            .measures
            .get(measure)
            .and_then(|figure| figure.value)
            .unwrap_or(f64::NAN)
    };
    let stage = if record.in_shadow_stage() {
        format!(
            "shadow: {} pairs, {} differ ({:.1} %)",
            candidate.pairs,
            candidate.mismatches,
            candidate.mismatch_rate().unwrap_or(0.0) * 100.0
        )
    } else {
        format!(
            "canary {} %: {} finished",
            record.candidate_share() / 100,
            candidate.finished
        )
    };
    Some(format!(
        "{stage} · cost/question {} ${:.4} vs 1.0.0 ${:.4} · quality {:.3} vs {:.3}",
        record.spec.candidate,
        figure(&candidate, "cost_usd"),
        figure(&stable, "cost_usd"),
        figure(&candidate, "quality"),
        figure(&stable, "quality"),
    ))
}

/// Prints the rollout's events, and its figures every half second, until it ends.
async fn follow(engine: &Engine, events: &mut tokio::sync::broadcast::Receiver<Event>, name: &str, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let line = tokio::select! {
            _ = tick.tick() => match figures(engine, name) {
                Some(line) => format!("   {line}"),
                None => continue,
            },
            event = events.recv() => match event {
                Ok(Event::RolloutStarted { name, candidate, .. }) => {
                    format!("rollout {name}: {candidate} runs in shadow beside 50 % of 1.0.0's questions")
                }
                Ok(Event::RolloutAdvanced { name, basis_points, stage }) => {
                    format!("rollout {name}: stage {stage} — the candidate now answers {} % of questions for real", basis_points / 100)
                }
                Ok(Event::RolloutPromoted { name, candidate }) => {
                    format!("rollout {name}: PROMOTED — {candidate} is the default, 1.0.0 drains")
                }
                Ok(Event::RolloutRolledBack { name, gate, reason }) => {
                    let gate = gate.map_or("an operator".to_string(), |gate| gate.field());
                    format!("rollout {name}: ROLLED BACK by {gate}: {reason}")
                }
                _ => continue,
            },
        };
        println!("t={:>4.1}s  {line}", started.elapsed().as_secs_f64());
        let status = engine.rollout(name).map(|record| record.status);
        if matches!(status, Some(RolloutStatus::Promoted | RolloutStatus::RolledBack)) && line.starts_with("rollout") {
            return;
        }
    }
}

/// Each version's figures over everything it did: real questions answered and their cost and
/// quality, and its shadow runs.
fn summary(engine: &Engine) {
    println!(
        "\n{:<8} {:>9} {:>14} {:>9} {:>8}",
        "version", "answered", "cost/question", "quality", "shadows"
    );
    for version in ["1.0.0", "2.0.0", "2.1.0"] {
        let Ok(info) = engine.version(WORKFLOW, version) else {
            continue;
        };
        let counters = &info.counters;
        let finished = counters.completed + counters.failed + counters.cancelled;
        let cost = counters
            .measures
            .get("cost_usd")
            .filter(|_| finished > 0)
            .map_or("-".to_string(), |total| {
                format!("${:.4}", total.sum() / finished as f64)
            });
        let quality = counters
            .measures
            .get("quality")
            .and_then(|total| total.mean())
            .map_or("-".to_string(), |mean| format!("{mean:.3}"));
        println!(
            "{version:<8} {finished:>9} {cost:>14} {quality:>9} {:>8}",
            counters.shadow.started
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::builder()
        .data_dir(dir.path())
        .register(assistant("1.0.0"))
        .open()
        .await?;
    // Pin the default, so that registering a newer version does not route to it by itself.
    engine
        .apply_config("strata.toml", "[workflows.assistant]\ndefault = \"=1.0.0\"\n")
        .await?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicU64::new(0));
    let mut events = engine.subscribe();
    let load = tokio::spawn(traffic(engine.clone(), stop.clone(), asked.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    engine.register(assistant("2.0.0"))?;
    engine.start_rollout(rollout(Version::new(2, 0, 0))).await?;
    follow(&engine, &mut events, "assistant@2.0.0", started).await;
    let served = engine.version(WORKFLOW, "2.0.0")?.counters.started;
    println!("   2.0.0 answered {served} questions for real: users never saw it");
    if let Some(pair) = engine
        .shadow_pairs("assistant@2.0.0")?
        .into_iter()
        .find(|pair| !pair.matched)
    {
        println!(
            "   a differing pair: question {} (1.0.0) and its shadow {}: {}",
            pair.real,
            pair.shadow,
            pair.diff.unwrap_or_default()
        );
    }

    println!("\n-- tuning the small model: 2.1.0 --\n");
    engine.register(assistant("2.1.0"))?;
    engine.start_rollout(rollout(Version::new(2, 1, 0))).await?;
    follow(&engine, &mut events, "assistant@2.1.0", started).await;
    stop.store(true, Ordering::Relaxed);
    load.await?;

    // The shadow stage's load: the share of the stable's questions that ran a shadow too.
    let record = engine.rollout("assistant@2.1.0").ok_or("the rollout is gone")?;
    if let Some(left_shadow) = record
        .history
        .iter()
        .find(|entry| entry.stage == 0 && matches!(entry.transition, Transition::Advanced { .. }))
    {
        if let Some(figures) = &left_shadow.figures {
            let shadows = engine.version(WORKFLOW, "2.1.0")?.counters.shadow.started;
            println!(
                "\nshadow stage of 2.1.0: {} of the stable's {} questions in it ran a shadow too ({:.1} %, the stage's share is 50 %); {} pairs compared, {} differed",
                shadows,
                figures.stable.finished.max(1),
                shadows as f64 * 100.0 / figures.stable.finished.max(1) as f64,
                figures.candidate.pairs,
                figures.candidate.mismatches
            );
        }
    }
    println!("{} questions asked in all", asked.load(Ordering::Relaxed));
    summary(&engine);
    engine.shutdown().await;
    Ok(())
}
