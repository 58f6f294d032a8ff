//! `probe`, a one-step workflow for rollout tests: 1.0.0 is stable, 2.0.0 fails every second
//! instance, 2.0.1 is healthy, 2.0.2 is healthy but slow. An input with `wait` set waits for the
//! `go` signal first, to keep instances live.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata::{Next, StepCtx, StepError, StepResult, WorkflowVersion};

/// The workflow's name.
pub const WORKFLOW: &str = "probe";

/// A probe's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    /// Its number; the faulty version fails even numbers.
    pub n: u64,
    /// Wait for `go` before the work.
    pub wait: bool,
}

async fn begin(_ctx: StepCtx, state: &mut Probe) -> StepResult<u64> {
    if state.wait {
        return Ok(Next::wait_signal("go", "work"));
    }
    Ok(Next::goto("work"))
}

async fn work(ctx: StepCtx, state: &mut Probe) -> StepResult<u64> {
    match ctx.version().to_string().as_str() {
        "2.0.0" if state.n % 2 == 0 => Err(StepError::permanent(format!("probe {} broke", state.n))),
        "2.0.2" => {
            tokio::time::sleep(Duration::from_millis(15)).await; // the slowness under test
            Ok(Next::complete(state.n))
        }
        _ => Ok(Next::complete(state.n)),
    }
}

/// `version` of the probe (its behaviour is chosen by the version, see the module doc).
pub fn version(version: &str) -> WorkflowVersion<Probe, Probe, u64> {
    WorkflowVersion::new(WORKFLOW, version)
        .init(|probe| probe)
        .step("begin", begin)
        .step("work", work)
}
