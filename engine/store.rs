//! The store seam (`strata-store`: the `Store` and `Cluster` traits, commit ops, errors) and the
//! two backends this build opens: the embedded sled store (`strata-store-sled`, the default) and
//! PostgreSQL (`strata-store-postgres`). The runtime speaks to `dyn Store` only; the builder picks
//! the backend.
//!
//! Public here is what a user of the engine names: the backends, the trait and its errors, and the
//! records the facade returns. The rest of the seam (ops, what a write applied, recovery, claims)
//! is the engine's and the backends' business, public in `strata-store` for whoever writes a
//! backend.

pub use strata_store::{
    AppliedConfig, Cluster, CorruptRecord, DatabaseProblem, SignalRecord, Store, StoreError, StoreStats, WorkerInfo,
};
pub use strata_store_postgres::PostgresStore;
pub use strata_store_sled::{SledStore, DEFAULT_DISK_RESERVE};

pub(crate) use strata_store::{
    Applied, Claimed, CounterDelta, FinishedScope, IdKind, Op, RecoveredState, StoredVersion, VersionCounters, Wakeup,
};
