//! Investigating and repairing failed instances.
//!
//! 1. Checkout 1.0.0 has a bug: it matches coupon codes case-sensitively, so orders whose
//!    customers typed a coupon in lower case fail after three attempts of `charge`.
//! 2. The history of one failed order shows what happened to it: its start, each step attempt,
//!    the error of each failed one and when the retry ran.
//! 3. The fix ships as 1.0.1. A dry run says which failed orders would be revived on it and
//!    where (and why a completed one would not be); then they are revived, in batches of one
//!    commit, at the step that failed, and complete on 1.0.1.
//! 4. Both versions' counters and the revived order's history show what happened.
//!
//! It runs on the embedded sled store in a temporary directory. Run:
//! `cargo run --release --example repair`

use std::time::Duration;
use strata::prelude::*;

use strata::history::{AttemptOutcome, HistoryEntry, HistoryEvent, WokenBy};
use strata::migrate::ReviveRequest;
use strata::{
    Engine, HistoryRequest, InstanceId, InstanceStatus, Next, RetryPolicy, StepCtx, StepError, StepResult, Version,
    WorkflowVersion,
};

const WORKFLOW: &str = "checkout";
const ORDERS: u32 = 24;

/// An order as the checkout keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Order {
    number: u32,
    cents: u64,
    coupon: Option<String>,
    charged: Option<u64>,
}

fn order(number: u32) -> Order {
    Order {
        number,
        cents: 2_000 + u64::from(number) * 150,
        coupon: match number % 4 {
            0 => Some("SPRING10".to_string()),
            // Typed in lower case: 1.0.0 does not recognise it.
            1 => Some("spring10".to_string()),
            _ => None,
        },
        charged: None,
    }
}

async fn reserve(_ctx: StepCtx, _order: &mut Order) -> StepResult<u64> {
    Ok(Next::goto("charge"))
}

/// The price after the coupon, or why the coupon is refused; `case_sensitive` is 1.0.0's bug.
fn price(order: &Order, case_sensitive: bool) -> Result<u64, String> {
    match &order.coupon {
        None => Ok(order.cents),
        Some(code) if code == "SPRING10" || (!case_sensitive && code.eq_ignore_ascii_case("SPRING10")) => {
            Ok(order.cents * 9 / 10)
        }
        Some(code) => Err(format!("coupon '{code}' not recognised")),
    }
}

async fn charge_v1(_ctx: StepCtx, order: &mut Order) -> StepResult<u64> {
    let cents = price(order, true).map_err(StepError::retryable)?;
    order.charged = Some(cents);
    Ok(Next::goto("ship"))
}

async fn charge_v1_0_1(_ctx: StepCtx, order: &mut Order) -> StepResult<u64> {
    let cents = price(order, false).map_err(StepError::retryable)?;
    order.charged = Some(cents);
    Ok(Next::goto("ship"))
}

async fn ship(_ctx: StepCtx, order: &mut Order) -> StepResult<u64> {
    Ok(Next::complete(order.charged.unwrap_or(order.cents)))
}

/// Checkout `version`: 1.0.0 with the bug, any other with the fix.
fn checkout(version: &str) -> WorkflowVersion<Order, Order, u64> {
    let retry = RetryPolicy::exponential(3, Duration::from_millis(20));
    let reserved = WorkflowVersion::new(WORKFLOW, version)
        .init(|order: Order| order)
        .step("reserve", reserve);
    let charging = if version == "1.0.0" {
        reserved.step_with_retry("charge", charge_v1, retry)
    } else {
        reserved.step_with_retry("charge", charge_v1_0_1, retry)
    };
    charging.step("ship", ship)
}

fn describe(entry: &HistoryEntry, started_ms: u64) -> String {
    let at = format!("+{:>5} ms", entry.at_ms.saturating_sub(started_ms));
    let what = match &entry.event {
        HistoryEvent::Started { version, .. } => format!("started on {version}"),
        HistoryEvent::Step(step) => {
            let woken = match step.woken_by {
                WokenBy::Start => "the start",
                WokenBy::Previous => "the previous step",
                WokenBy::Retry => "a retry",
                WokenBy::Timer => "its timer",
                _ => "a signal",
            };
            let outcome = match &step.outcome {
                AttemptOutcome::Next { step } => format!("went on to {step}"),
                AttemptOutcome::Completed { .. } => "completed".to_string(),
                AttemptOutcome::Failed { reason } => format!("FAILED the instance: {reason}"),
                AttemptOutcome::Retrying { error, at_ms } => {
                    format!("error: {error} (retry in {} ms)", at_ms.saturating_sub(entry.at_ms))
                }
                other => format!("{other:?}"),
            };
            format!(
                "step {} attempt {} ({} ms, woken by {woken}): {outcome}",
                step.step, step.attempt, step.took_ms
            )
        }
        HistoryEvent::Revived(stamp) => format!(
            "revived: {} -> {}, taken up at {} (it had {})",
            stamp.from,
            stamp.to,
            stamp.to_step,
            stamp
                .failure
                .as_deref()
                .map_or("been cancelled".to_string(), |why| format!("failed: {why}"))
        ),
        other => format!("{other:?}"),
    };
    format!("    {at}  {what}")
}

fn print_history(engine: &Engine, id: InstanceId) {
    let history = engine.history(id, &HistoryRequest::default()).expect("the history");
    let entries: Vec<HistoryEntry> = history.entries.into_iter().filter_map(|item| item.entry.ok()).collect();
    let started_ms = entries.first().map_or(0, |entry| entry.at_ms);
    for entry in &entries {
        println!("{}", describe(entry, started_ms));
    }
}

fn print_counters(engine: &Engine) {
    println!("  version         status     started  completed  failed  revived  live");
    for info in engine.versions() {
        println!(
            "  {:<15} {:<10} {:>7}  {:>9}  {:>6}  {:>7}  {:>4}",
            info.key.to_string(),
            format!("{:?}", info.status),
            info.counters.started,
            info.counters.completed,
            info.counters.failed,
            info.counters.revived,
            info.counters.live
        );
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let engine = Engine::builder()
        .data_dir(dir.path())
        .register(checkout("1.0.0"))
        .open()
        .await
        .expect("the engine opens");

    println!("1. {ORDERS} orders on checkout 1.0.0, which matches coupon codes case-sensitively");
    let mut ids = Vec::new();
    for number in 1..=ORDERS {
        ids.push(engine.start(WORKFLOW, &order(number)).await.expect("the order starts"));
    }
    let mut failed = Vec::new();
    for id in &ids {
        let outcome = engine.outcome(*id).await.expect("the order ends");
        if outcome.status() == InstanceStatus::Failed {
            failed.push(*id);
        }
    }
    println!("   {} completed, {} failed", ids.len() - failed.len(), failed.len());

    let first = failed[0];
    println!("\n2. What happened to order #{first}:");
    print_history(&engine, first);

    println!("\n3. The fix ships as 1.0.1 (coupon codes in any case). The dry run first:");
    engine.register(checkout("1.0.1")).expect("1.0.1 registers");
    let request = ReviveRequest::new(WORKFLOW)
        .on_version(Version::new(1, 0, 1))
        .reason_contains("not recognised")
        .batch_size(4);
    let plan = engine.plan_revive(&request).expect("the plan");
    for check in plan.checks.iter().take(3) {
        println!(
            "   #{:<3} {} ({}) at {:<7} -> {}",
            check.id,
            check.from,
            check.failure.as_deref().unwrap_or("cancelled"),
            check.step,
            match &check.verdict {
                Ok(step) => format!("revive on {} at {step}", check.target),
                Err(why) => format!("refused: {why}"),
            }
        );
    }
    println!(
        "   ... {} of {} can be revived",
        plan.revivable().count(),
        plan.checks.len()
    );
    let completed = ids
        .iter()
        .find(|id| !failed.contains(id))
        .copied()
        .expect("a completed order");
    let by_id = engine
        .plan_revive(&ReviveRequest::new(WORKFLOW).ids([completed]))
        .expect("the plan");
    if let Some(check) = by_id.checks.first() {
        if let Err(why) = &check.verdict {
            println!("   (order #{completed}, chosen by id, would be refused: {why})");
        }
    }

    let report = engine.revive(&request).await.expect("the revival");
    println!(
        "   revived {} orders, {} refused",
        report.revived.len(),
        report.refused.len()
    );
    let mut cents = 0;
    for id in &report.revived {
        cents += engine.output::<u64>(*id).await.expect("a revived order completes");
    }
    println!(
        "   all {} completed on 1.0.1, charging {} cents in all",
        report.revived.len(),
        cents
    );

    println!("\n4. The counters: 1.0.0 keeps its failures, 1.0.1 counts what came back");
    print_counters(&engine);
    println!("\n   Order #{first} now:");
    print_history(&engine, first);
    engine.shutdown().await;
}
