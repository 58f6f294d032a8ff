//! Strata: a durable workflow runtime you embed in a Rust program, whose specialty is changing
//! workflow logic while instances run.
//!
//! Every instance is pinned to the version it started on; new instances go to the newest active
//! version (or the one the caller asks for); every step ends in one atomic commit; an old version
//! stays resident until its last instance ends, and the engine says when its code can go.
//!
//! Data flows one way: a call enters the [`Engine`] facade, `routing` picks a version, `runtime`
//! runs steps of that version's code from `registry`, and each step ends in one `store` commit.
//!
//! This package is the one users depend on: it owns the engine (the facade and its builder, the
//! runtime, the registry, observe, the admin API) and re-exports what a user names from the crates
//! below it — the vocabulary and definition API (`strata-core`: [`workflow`], [`routing`],
//! [`rollout`], instance records), the config file ([`config`], `strata-config`) and the store seam
//! with its two backends ([`store`]: `strata-store`, `strata-store-sled`,
//! `strata-store-postgres`). The runtime speaks to `dyn Store` only; the builder alone names a
//! backend. `docs/architecture.md` draws the crates and their arrows.

#![warn(missing_docs)]

pub mod admin;
mod engine;
mod error;
pub mod instance;
pub mod migrate;
pub mod observe;
mod prometheus;
pub mod registry;
mod runtime;
pub mod store;
mod tasks;

pub use strata_config as config;
pub use strata_core::{rollout, routing, workflow};

pub use engine::{Engine, EngineBuilder, StartOptions};
pub use error::EngineError;
pub use instance::{InstanceFilter, InstanceId, InstanceInfo, InstanceStatus, Outcome, VersionKey};
pub use migrate::{MigrationJob, MoveRequest, StateMigration, StepMapping};
pub use observe::{Clock, Event, ManualClock, MetricsSnapshot};
pub use registry::{VersionInfo, VersionStatus};
pub use rollout::{Gates, OnRollback, RolloutSpec, Stage};
pub use runtime::Durability;
pub use semver::Version;
pub use store::{PostgresStore, SledStore, Store, StoreError};
pub use workflow::{
    DefinitionError, Next, RetryPolicy, StepCtx, StepError, StepResult, UpgradePolicy, WakeReason, WorkflowVersion,
};
