//! The step load of the step-path measurements (`benches/durable_steps.rs`, `benches/metrics.rs`,
//! `examples/commit_cost.rs`): ledger postings, one durable step commit per entry.

use strata_workflows::ledger::{self, LedgerInput};

/// Runs `instances` ledger postings of `entries` entries each, all at once, to completion.
pub(crate) async fn post_ledgers(
    engine: &strata::Engine,
    instances: usize,
    entries: u32,
) -> Result<(), strata::EngineError> {
    let postings: Vec<_> = (0..instances)
        .map(|account| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let input = LedgerInput {
                    account: account as u64,
                    entries,
                };
                let id = engine.start(ledger::WORKFLOW, &input).await?;
                engine.outcome(id).await
            })
        })
        .collect();
    for posting in postings {
        posting.await.map_err(|_| strata::EngineError::ShuttingDown)??;
    }
    Ok(())
}
