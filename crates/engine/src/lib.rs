//! strata-engine: the engine of Strata, a durable workflow runtime whose specialty is changing
//! workflow logic while instances run.
//!
//! Every instance is pinned to the version it started on; new instances go to the newest active
//! version (or the one the caller asks for); every step ends in one atomic commit; an old version
//! stays resident until its last instance ends, and the engine says when its code can go.
//!
//! Data flows one way: a call enters the [`Engine`] facade, `routing` picks a version, `runtime`
//! runs steps of that version's code from `registry`, and each step ends in one `store` commit.
//!
//! **Owns**: the facade and its builder, the runtime (driver, committer, timers, cluster work,
//! migrations, moves, rollouts, retention), the registry of versions, observation (events,
//! metrics, clocks, the Prometheus text) and the tasks that drive the facade (schedules, config
//! watch, config follow).
//! **May not touch**: a store backend (it speaks to `dyn Store`; the builder takes a store or an
//! [`EnginePart`] that opens one) or the admin server (it runs beside the engine as a part and
//! uses this crate's public API only). Users depend on the umbrella crate `strata`, which
//! re-exports this API and adds the backends and the admin server to the builder.

#![warn(missing_docs)]

mod engine;
mod error;
pub mod instance;
pub mod migrate;
pub mod observe;
mod parts;
mod prometheus;
pub mod registry;
mod runtime;
pub mod store;
mod tasks;

pub use strata_config as config;
pub use strata_core::{history, measure, rollout, routing, shadow, workflow};

pub use engine::{Engine, EngineBuilder, EnginePart, PartStart, StartOptions, StoreOpening};
pub use error::EngineError;
pub use instance::{
    HistoryRequest, InstanceFilter, InstanceHistory, InstanceId, InstanceInfo, InstanceStatus, Outcome, VersionKey,
};
pub use measure::MeasureKind;
pub use migrate::{MigrationJob, MoveRequest, ReviveRequest, StateMigration, StepMapping};
pub use observe::{Clock, Event, ManualClock, MetricsSnapshot};
pub use registry::{VersionInfo, VersionStatus};
pub use rollout::{Gates, MeasureGate, OnRollback, RolloutSpec, Stage};
pub use runtime::Durability;
pub use semver::Version;
pub use store::{Store, StoreError};
pub use workflow::{
    DefinitionError, Next, RetryPolicy, StepCtx, StepError, StepResult, UpgradePolicy, WakeReason, WorkflowVersion,
};
