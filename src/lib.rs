//! Strata: a durable workflow runtime you embed in a Rust program, whose specialty is changing
//! workflow logic while instances run.
//!
//! Every instance is pinned to the version it started on; new instances go to the newest active
//! version (or the one the caller asks for); every step ends in one atomic commit; an old version
//! stays resident until its last instance ends, and the engine says when its code can go.
//!
//! This is the crate users depend on. It re-exports the engine's API (`strata-engine`: the
//! [`Engine`] facade and its builder, instances, versions, events) and the vocabulary under it
//! (`strata-core`: [`workflow`], [`routing`], [`rollout`]; [`config`]: `strata-config`), and it
//! assembles an engine from the parts users choose: a store ([`store`]: the embedded sled store
//! or PostgreSQL) and the admin HTTP API (`admin`, `strata-admin`). Their builder methods
//! (`data_dir`, `postgres`, `admin`, ...) come with `use strata::prelude::*;`. Each part is a
//! cargo feature, all on by default: `sled`, `postgres`, `admin`.
//! `docs/architecture.md` draws the crates and their arrows.

#![warn(missing_docs)]

#[cfg(any(feature = "sled", feature = "postgres"))]
mod assembly;

#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sled")]
pub use store::SledStore;
#[cfg(feature = "admin")]
pub use strata_admin as admin;
pub use strata_engine::{
    config, history, instance, measure, migrate, observe, registry, rollout, routing, shadow, workflow,
};
pub use strata_engine::{
    Clock, DefinitionError, Durability, Engine, EngineBuilder, EngineError, EnginePart, Event, Gates, HistoryRequest,
    InstanceFilter, InstanceHistory, InstanceId, InstanceInfo, InstanceStatus, ManualClock, MeasureGate, MeasureKind,
    MetricsSnapshot, MigrationJob, MoveRequest, Next, OnRollback, Outcome, PartStart, RetryPolicy, ReviveRequest,
    RolloutSpec, Stage, StartOptions, StateMigration, StepCtx, StepError, StepMapping, StepResult, Store, StoreError,
    StoreOpening, UpgradePolicy, Version, VersionInfo, VersionKey, VersionStatus, WakeReason, WorkflowVersion,
};

#[cfg(any(feature = "sled", feature = "postgres"))]
pub use assembly::StoreBuilder;

/// The store seam as the engine sees it, and the backends an engine opens: the embedded sled
/// store (feature `sled`, in a data directory) and PostgreSQL (feature `postgres`, many processes
/// on one database); both features are on by default.
pub mod store {
    pub use strata_engine::store::*;
    #[cfg(feature = "postgres")]
    pub use strata_store_postgres::PostgresStore;
    #[cfg(feature = "sled")]
    pub use strata_store_sled::{SledStore, DEFAULT_DISK_RESERVE};
}

/// What a program that opens an engine brings into scope: the builder methods of the store
/// (`data_dir`, `postgres`, ...) and of the admin API (`admin`, `admin_token`, ...), and
/// `Engine::admin_address`.
pub mod prelude {
    #[cfg(any(feature = "sled", feature = "postgres"))]
    pub use crate::assembly::StoreBuilder;
    #[cfg(feature = "admin")]
    pub use strata_admin::{AdminBuilder, AdminEngine};
}
