//! The engine's error type: every failure a caller of the `Engine` facade can see.
//!
//! It is the one place the errors of the crates below meet (store, config, definitions,
//! routing). It also holds the setup errors of the parts the umbrella crate assembles above the
//! engine (the admin server's address and tokens, a PostgreSQL listen URL): `open` returns them,
//! so they are the engine's to name, though the engine knows neither part.

use crate::registry::RegistryError;
use crate::store::StoreError;
use strata_config::ConfigError;
use strata_core::instance::{InstanceId, VersionKey};
use strata_core::routing::RoutingError;
use strata_core::workflow::DefinitionError;

/// An error from the engine, saying what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A workflow definition is invalid.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// A version lookup or lifecycle change failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A config file that cannot take effect; the config in force is unchanged.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Routing rules that cannot take effect; the rules in force are unchanged.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// A rollout cannot start or take the operation.
    #[error(transparent)]
    Rollout(#[from] strata_core::rollout::RolloutError),
    /// A state migration was refused at registration.
    #[error(transparent)]
    Migration(#[from] crate::migrate::MigrationError),
    /// The store holds live instances of versions whose code is not registered.
    #[error("the store holds live instances of versions that are not registered: {}; register their code, or let the engine park them with EngineBuilder::park_unregistered(true)", describe_missing(.missing))]
    MissingVersions {
        /// Each missing version and its live instance count.
        missing: Vec<(VersionKey, u64)>,
    },
    /// No instance has this id.
    #[error("no instance {id} exists in this store")]
    UnknownInstance {
        /// The id.
        id: InstanceId,
    },
    /// The instance finished and was removed after the retention period.
    #[error("instance {id} finished and was removed after the retention period (or it never existed); raise `retention` to keep finished instances longer")]
    InstanceRemoved {
        /// The id.
        id: InstanceId,
    },
    /// A termination was asked for without a reason.
    #[error("terminating instance {id} needs a reason: say why, it is kept in the instance's history")]
    TerminateWithoutReason {
        /// The instance.
        id: InstanceId,
    },
    /// The instance has finished and takes no more signals or cancellations.
    #[error(
        "instance {id} has already finished ({status}); it takes no more signals and cannot be cancelled or terminated"
    )]
    InstanceFinished {
        /// The id.
        id: InstanceId,
        /// How it finished.
        status: String,
    },
    /// The instance failed (from `Outcome::output`).
    #[error("the instance failed: {reason}")]
    InstanceFailed {
        /// Why.
        reason: String,
    },
    /// The instance was cancelled (from `Outcome::output`).
    #[error("the instance was cancelled")]
    InstanceCancelled,
    /// A value could not be encoded.
    #[error("could not encode the {what}: {reason}")]
    Encode {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A value could not be decoded.
    #[error("the {what} does not decode: {reason}; check that the type matches the workflow version's")]
    Decode {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A start's input does not decode as the chosen version's input type.
    #[error("the input does not decode as the input of {key}: {reason}; nothing was started")]
    InputDecode {
        /// The version chosen.
        key: VersionKey,
        /// Why.
        reason: String,
    },
    /// The version's `init` panicked or built a state that does not encode.
    #[error(
        "the init of {key} failed: {reason}; nothing was started (fix the init function or the state's Serialize impl)"
    )]
    Init {
        /// The version chosen.
        key: VersionKey,
        /// Why.
        reason: String,
    },
    /// An engine operation ended without an answer: a defect of Strata, not of the caller.
    #[error("the engine's {operation} ended without an answer ({reason}); this is a defect of Strata, please report it — what it committed before stays committed")]
    Internal {
        /// What was being done.
        operation: &'static str,
        /// What is known of why.
        reason: String,
    },
    /// A signal's payload does not decode as the type its instance's version declared.
    #[error("signal '{name}' to instance {id} does not decode as the payload {key} declares: {reason}; nothing was delivered")]
    SignalDecode {
        /// The instance.
        id: InstanceId,
        /// The signal.
        name: String,
        /// The instance's version.
        key: VersionKey,
        /// Why.
        reason: String,
    },
    /// A version or version requirement given by the caller does not parse.
    #[error("'{version}' is not a valid {expected} for workflow '{workflow}': {reason}")]
    InvalidVersion {
        /// The workflow.
        workflow: String,
        /// What was expected: a version (like 2.0.0) or a version requirement (like ^1).
        expected: &'static str,
        /// The text given.
        version: String,
        /// Why.
        reason: String,
    },
    /// Signal names starting with `strata:` are the engine's own.
    #[error("signal name '{name}' starts with 'strata:', which the engine keeps for its own control signals; choose another name")]
    ReservedSignalName {
        /// The name given.
        name: String,
    },
    /// The engine is shutting down or shut down.
    #[error("the engine is shutting down; nothing new is accepted")]
    ShuttingDown,
    /// The builder was given no data directory and no store.
    #[error("the engine needs a store: call EngineBuilder::data_dir(path), EngineBuilder::postgres(url) or EngineBuilder::store(store)")]
    NoStore,
    /// The builder was given a store and told to open another (a data directory or PostgreSQL).
    #[error("the engine was given two stores: EngineBuilder::store(store) and a store to open (data_dir or postgres); keep one")]
    StoreGivenTwice,
    /// The admin API was asked to listen beyond this host without a token to guard it.
    #[error("the admin API would listen on {address}, reachable from other hosts, without a token: set EngineBuilder::admin_token (or STRATA_ADMIN_TOKEN), or bind a loopback address such as 127.0.0.1")]
    AdminTokenRequired {
        /// The address asked for.
        address: std::net::SocketAddr,
    },
    /// An admin token was given, but no address for the admin API to serve it on.
    #[error("an admin token was set but the admin API has no address: call EngineBuilder::admin(address) too (or drop the token)")]
    AdminTokenWithoutAddress,
    /// A listen URL was given for a PostgreSQL store that is not used.
    #[error("a PostgreSQL listen URL was set but the engine does not use PostgreSQL: call EngineBuilder::postgres(url) too (or drop the listen URL)")]
    ListenUrlWithoutPostgres,
    /// An admin token too short to guard anything.
    #[error("the admin API's {role} token is {length} characters long; use at least {minimum} (e.g. 32 random characters from `openssl rand -hex 16`)")]
    AdminTokenTooShort {
        /// `admin` or `read-only`.
        role: &'static str,
        /// The length given.
        length: usize,
        /// The shortest accepted.
        minimum: usize,
    },
    /// The admin API's address could not be bound.
    #[error("the admin API cannot listen on {address}: {reason}; pick a free port (or port 0 for any)")]
    AdminBind {
        /// The address asked for.
        address: std::net::SocketAddr,
        /// The operating system's words.
        reason: String,
    },
}

fn describe_missing(missing: &[(VersionKey, u64)]) -> String {
    missing
        .iter()
        .map(|(key, count)| format!("{key} ({count} live)"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<strata_core::codec::EncodeError> for EngineError {
    fn from(error: strata_core::codec::EncodeError) -> Self {
        EngineError::Store(error.into())
    }
}
