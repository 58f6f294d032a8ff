//! The definition API: how a user describes one version of a workflow.
//!
//! Owns [`WorkflowVersion`] (the typed builder), the step contract ([`StepCtx`], [`Next`],
//! [`StepError`]), [`RetryPolicy`] and [`UpgradePolicy`], and the type-erased form the runtime
//! executes. It knows nothing of storage, scheduling or routing.

mod definition;
mod retry;
mod step;

pub use definition::{valid_measure_name, DefinitionError, StepFn, WorkflowVersion};
pub use definition::{InitFailure, StepFailure, StepOutcome, VersionCode};
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

/// Runs user code outside a step — an `init`, a migration, a `Serialize`/`Deserialize` impl of
/// an input, payload, state or output type — so that a panic in it never unwinds through the
/// engine: it becomes `Err` with the panic's message, for a typed error naming what panicked.
pub fn catch_user_panic<T>(code: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(code)).map_err(|panic| panic_message(&panic))
}

/// Encodes a value of a user type (MessagePack, named fields); its `Serialize` panicking is an
/// error like any other.
pub fn encode_user<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    catch_user_panic(|| rmp_serde::to_vec_named(value))
        .map_err(|message| format!("its Serialize impl panicked: {message}"))?
        .map_err(|error| error.to_string())
}

/// Decodes a value of a user type; its `Deserialize` panicking is an error like any other.
pub fn decode_user<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    catch_user_panic(|| crate::instance::decode_stored(bytes))
        .map_err(|message| format!("its Deserialize impl panicked: {message}"))?
        .map_err(|error: rmp_serde::decode::Error| error.to_string())
}

/// The message of a caught panic.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}
