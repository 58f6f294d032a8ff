//! Ledger posting: posts a batch of entries to an account, one step per entry, and completes
//! with the balance. Each step is one durable commit, which makes it the benchmarks' step load.

use serde::{Deserialize, Serialize};
use strata::{Next, StepCtx, StepResult, WorkflowVersion};

/// The workflow's name.
pub const WORKFLOW: &str = "ledger";

/// What starting a posting takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInput {
    /// The account.
    pub account: u64,
    /// The amounts to post, in cents, one step each.
    pub amounts: Vec<i64>,
}

/// The state of a posting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    /// The account.
    pub account: u64,
    /// Amounts still to post.
    pub pending: Vec<i64>,
    /// The balance so far.
    pub balance: i64,
    /// Entries posted.
    pub posted: u32,
}

async fn post(_ctx: StepCtx, state: &mut LedgerState) -> StepResult<i64> {
    match state.pending.pop() {
        Some(amount) => {
            state.balance += amount;
            state.posted += 1;
            Ok(Next::goto("post"))
        }
        None => Ok(Next::complete(state.balance)),
    }
}

/// Version 1.0.0.
pub fn v1_0() -> WorkflowVersion<LedgerInput, LedgerState, i64> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(|input: LedgerInput| {
            let mut pending = input.amounts;
            pending.reverse();
            LedgerState {
                account: input.account,
                pending,
                balance: 0,
                posted: 0,
            }
        })
        .step("post", post)
}
