//! The idle in-flight load of the recovery and memory measurements (`examples/footprint.rs`,
//! `benches/recovery.rs`): approval requests, each waiting for its decision.

use std::time::Duration;

use strata_workflows::approval;

/// Starts `count` requests from 64 concurrent callers and returns once every one of them is
/// waiting for its decision: the idle in-flight load of the recovery and memory measurements.
pub(crate) async fn start_waiting_requests(engine: &strata::Engine, count: usize) -> Result<(), strata::EngineError> {
    let callers: Vec<_> = (0..64)
        .map(|caller| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for amount_cents in (caller..count).step_by(64) {
                    engine.start(approval::WORKFLOW, &(amount_cents as u64)).await?;
                }
                Ok::<(), strata::EngineError>(())
            })
        })
        .collect();
    for caller in callers {
        caller.await.map_err(|_| strata::EngineError::ShuttingDown)??;
    }
    let mut events = engine.subscribe();
    while count_waiting(engine)? < count {
        // Re-count after the next event or, at the latest, after 100 ms.
        let _ = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
    }
    Ok(())
}

/// How many requests wait for their decision, counted a page at a time (a listing of millions
/// at once would hold every record in memory).
fn count_waiting(engine: &strata::Engine) -> Result<usize, strata::EngineError> {
    let waiting =
        strata::InstanceFilter::workflow(approval::WORKFLOW).with_status(strata::InstanceStatus::WaitingSignal);
    let mut counted = 0;
    let mut page = engine.list_limited(&waiting, PAGE)?;
    loop {
        counted += page.len();
        match page.last() {
            Some(last) if page.len() == PAGE => {
                page = engine.list_limited(&waiting.clone().after(last.record.id), PAGE)?
            }
            _ => return Ok(counted),
        }
    }
}

/// How many instances one listing of [`count_waiting`] returns at most.
const PAGE: usize = 10_000;
