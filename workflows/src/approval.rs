//! Expense approval: a request waits for an approver's decision (a signal) for up to a day, then
//! completes approved, rejected or expired. Most of its life is idle waiting, which makes it the
//! load for the recovery and memory figures.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_core::workflow::{Next, StepCtx, StepResult, WorkflowVersion};

/// The workflow's name.
pub const WORKFLOW: &str = "approval";

/// The signal carrying the approver's decision (`true` approves).
pub const DECISION_SIGNAL: &str = "decision";

/// How long a request waits for a decision.
pub const DECISION_TIMEOUT: Duration = Duration::from_secs(86_400);

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// The approver approved.
    Approved,
    /// The approver rejected.
    Rejected,
    /// Nobody decided in time.
    Expired,
}

async fn request(_ctx: StepCtx, _amount_cents: &mut u64) -> StepResult<Decision> {
    Ok(Next::wait_signal_with_timeout(
        DECISION_SIGNAL,
        "decide",
        DECISION_TIMEOUT,
    ))
}

async fn decide(ctx: StepCtx, _amount_cents: &mut u64) -> StepResult<Decision> {
    if ctx.timed_out() {
        return Ok(Next::complete(Decision::Expired));
    }
    let approved: bool = ctx.signal()?.unwrap_or(false);
    Ok(Next::complete(if approved {
        Decision::Approved
    } else {
        Decision::Rejected
    }))
}

/// Version 1.0.0: the input and state are the amount in cents.
pub fn v1_0() -> WorkflowVersion<u64, u64, Decision> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(|amount_cents: u64| amount_cents)
        .signal_type::<bool>(DECISION_SIGNAL)
        .step("request", request)
        .step("decide", decide)
}
