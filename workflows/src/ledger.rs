//! Ledger posting: posts a number of entries to an account, one step per entry, and completes
//! with the balance. Each step is one durable commit of a small, fixed-size state, which makes it
//! the benchmarks' step load.

use serde::{Deserialize, Serialize};
use strata_core::measure::MeasureKind;
use strata_core::workflow::{Next, StepCtx, StepResult, WorkflowVersion};

/// The workflow's name.
pub const WORKFLOW: &str = "ledger";

/// What starting a posting takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInput {
    /// The account.
    pub account: u64,
    /// How many entries to post, one step each.
    pub entries: u32,
}

/// The state of a posting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    /// The account.
    pub account: u64,
    /// Entries in the batch.
    pub entries: u32,
    /// Entries posted so far.
    pub posted: u32,
    /// The balance so far, in cents.
    pub balance: i64,
}

/// The amount of entry `entry` of `account`'s batch, in cents: a fixed, mixed-sign series.
pub fn amount(account: u64, entry: u32) -> i64 {
    if entry % 3 == 0 {
        -(i64::from(entry) + account as i64)
    } else {
        i64::from(entry) * 10
    }
}

/// The balance a batch of `entries` for `account` ends with.
pub fn expected_balance(account: u64, entries: u32) -> i64 {
    (0..entries).map(|entry| amount(account, entry)).sum()
}

async fn post(_ctx: StepCtx, state: &mut LedgerState) -> StepResult<i64> {
    if state.posted == state.entries {
        return Ok(Next::complete(state.balance));
    }
    state.balance += amount(state.account, state.posted);
    state.posted += 1;
    Ok(Next::goto("post"))
}

/// A posting's state before its first entry.
fn initial(input: LedgerInput) -> LedgerState {
    LedgerState {
        account: input.account,
        entries: input.entries,
        posted: 0,
        balance: 0,
    }
}

/// Version 1.0.0.
pub fn v1_0() -> WorkflowVersion<LedgerInput, LedgerState, i64> {
    WorkflowVersion::new(WORKFLOW, "1.0.0").init(initial).step("post", post)
}

/// A posting that also records three measures, as a step calling a metered service would: the
/// amount moved, a fee and a score.
async fn post_metered(ctx: StepCtx, state: &mut LedgerState) -> StepResult<i64> {
    if state.posted < state.entries {
        ctx.record("moved_cents", amount(state.account, state.posted).abs() as f64);
        ctx.record("fee", 0.0025);
        ctx.record("score", 1.0);
    }
    post(ctx, state).await
}

/// Version 1.0.0 whose steps record three measures each: the step load of the measurements of
/// what recording costs (`examples/commit_cost.rs metered`).
pub fn v1_0_metered() -> WorkflowVersion<LedgerInput, LedgerState, i64> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(initial)
        .measure("moved_cents", MeasureKind::Summed)
        .measure("fee", MeasureKind::Summed)
        .measure("score", MeasureKind::Averaged)
        .step("post", post_metered)
}
