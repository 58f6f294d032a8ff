//! The store an engine opens, as builder methods: the embedded sled store in a data directory
//! (feature `sled`, the default) or a PostgreSQL database (feature `postgres`, on by default
//! too). The engine names no backend; this part of the setup (an [`EnginePart`]) opens the one
//! the builder's settings choose.

#[cfg(feature = "sled")]
use std::path::PathBuf;
use std::sync::Arc;

use strata_engine::{EngineBuilder, EngineError, EnginePart, Store, StoreOpening};
#[cfg(feature = "postgres")]
use strata_store_postgres::PostgresStore;
#[cfg(feature = "sled")]
use strata_store_sled::{SledStore, DEFAULT_DISK_RESERVE};

/// Which store to open, as the builder collects it from [`StoreBuilder`]'s methods in any order.
#[derive(Debug, Clone)]
pub(crate) struct StoreSettings {
    #[cfg(feature = "sled")]
    data_dir: Option<PathBuf>,
    #[cfg(feature = "sled")]
    disk_reserve: u64,
    #[cfg(feature = "postgres")]
    database_url: Option<String>,
    #[cfg(feature = "postgres")]
    listen_url: Option<String>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            #[cfg(feature = "sled")]
            data_dir: None,
            #[cfg(feature = "sled")]
            disk_reserve: DEFAULT_DISK_RESERVE,
            #[cfg(feature = "postgres")]
            database_url: None,
            #[cfg(feature = "postgres")]
            listen_url: None,
        }
    }
}

impl EnginePart for StoreSettings {
    fn check(&self) -> Result<(), EngineError> {
        #[cfg(feature = "postgres")]
        if self.listen_url.is_some() && self.database_url.is_none() {
            return Err(EngineError::ListenUrlWithoutPostgres);
        }
        Ok(())
    }

    fn store_opening(&mut self) -> Option<StoreOpening> {
        #[cfg(feature = "postgres")]
        if let Some(url) = self.database_url.take() {
            let listen_url = self.listen_url.take();
            return Some(Box::new(move || {
                let store = PostgresStore::connect_with(&url, listen_url.as_deref())?;
                Ok(Arc::new(store) as Arc<dyn Store>)
            }));
        }
        #[cfg(feature = "sled")]
        if let Some(path) = self.data_dir.take() {
            let reserve = self.disk_reserve;
            return Some(Box::new(move || {
                let store = SledStore::open(path)?.with_disk_reserve(reserve);
                Ok(Arc::new(store) as Arc<dyn Store>)
            }));
        }
        None
    }
}

/// The store settings on the engine's builder (`use strata::prelude::*` brings them in); each
/// method comes with its backend's feature.
pub trait StoreBuilder: Sized {
    /// The directory of the embedded sled store (created if missing).
    #[cfg(feature = "sled")]
    fn data_dir(self, path: impl Into<PathBuf>) -> Self;

    /// How much free space the embedded store keeps on its disk (default 64 MiB; 0: none): a
    /// commit that finds less is refused with a [`BackendFailure::NoSpace`](crate::store::BackendFailure)
    /// store error, the instance stays at its last committed step and is retried, and the engine continues
    /// once space returns.
    #[cfg(feature = "sled")]
    fn disk_reserve(self, bytes: u64) -> Self;

    /// A PostgreSQL database to use instead of the embedded sled store
    /// (`postgres://user:password@host:5432/database`); Strata creates or upgrades its tables
    /// there. `open` fails naming the problem if the URL, the server, the credentials or the
    /// database are wrong.
    #[cfg(feature = "postgres")]
    fn postgres(self, url: impl Into<String>) -> Self;

    /// A direct connection to the same database for the wake-ups (LISTEN) where the URL of
    /// [`StoreBuilder::postgres`] goes through a transaction pooler (PgBouncer with
    /// `pool_mode = transaction`), which cannot carry LISTEN. Without it the wake-ups listen over
    /// that URL; where it cannot carry them, the engine says so once and finds signalled and
    /// claimable instances at each heartbeat (a third of the lease) instead.
    #[cfg(feature = "postgres")]
    fn postgres_listen_url(self, url: impl Into<String>) -> Self;
}

impl StoreBuilder for EngineBuilder {
    #[cfg(feature = "sled")]
    fn data_dir(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.part(|settings: &mut StoreSettings| settings.data_dir = Some(path))
    }

    #[cfg(feature = "sled")]
    fn disk_reserve(self, bytes: u64) -> Self {
        self.part(|settings: &mut StoreSettings| settings.disk_reserve = bytes)
    }

    #[cfg(feature = "postgres")]
    fn postgres(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.part(|settings: &mut StoreSettings| settings.database_url = Some(url))
    }

    #[cfg(feature = "postgres")]
    fn postgres_listen_url(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.part(|settings: &mut StoreSettings| settings.listen_url = Some(url))
    }
}
