//! The definition API: how a user describes one version of a workflow.
//!
//! Owns [`WorkflowVersion`] (the typed builder), the step contract ([`StepCtx`], [`Next`],
//! [`StepError`]), [`RetryPolicy`] and [`UpgradePolicy`], and the type-erased form the runtime
//! executes. It knows nothing of storage, scheduling or routing.

mod definition;
mod retry;
mod step;

pub use definition::{DefinitionError, StepFn, WorkflowVersion};
pub(crate) use definition::{StepFailure, StepOutcome, VersionCode};
pub use retry::RetryPolicy;
pub use step::{Next, StepCtx, StepError, StepResult, WakeReason};

use serde::{Deserialize, Serialize};

/// What happens to an instance of a version when a newer version becomes the routing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum UpgradePolicy {
    /// The instance finishes on the version it started on (the default).
    #[default]
    Pinned,
    /// The instance may move to the routing target at a step boundary (state-migration issue).
    AutoUpgrade,
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}
