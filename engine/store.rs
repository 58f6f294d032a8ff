//! The store seam (`strata-store`: the `Store` and `Cluster` traits, commit ops, errors) and the
//! two backends this build opens: the embedded sled store (`strata-store-sled`, the default) and
//! PostgreSQL (`strata-store-postgres`). The engine's runtime speaks to `dyn Store` only; the
//! builder picks the backend.

pub use strata_store::*;
pub use strata_store_postgres::PostgresStore;
pub use strata_store_sled::{format1 as sled_format1, SledStore, DEFAULT_DISK_RESERVE};
