//! The store seam as the engine sees it (`strata-store`: the `Store` and `Cluster` traits,
//! commit ops, errors). The engine speaks to `dyn Store` only and names no backend: the umbrella
//! crate `strata` opens one (the embedded sled store or PostgreSQL) and hands it over.
//!
//! Public here is what a user of the engine names: the trait and its errors, and the records the
//! facade returns. The rest of the seam (ops, what a write applied, recovery, claims)
//! is the engine's and the backends' business, public in `strata-store` for whoever writes a
//! backend.

pub use strata_store::{
    AppliedConfig, BackendFailure, Cluster, CorruptRecord, DatabaseProblem, SignalRecord, Store, StoreError,
    StoreStats, StoredHistoryChunk, WorkerInfo,
};

pub(crate) use strata_store::{
    Applied, Claimed, CounterDelta, IdKind, ListScope, Op, RecoveredState, StoredVersion, VersionCounters, Wakeup,
};
