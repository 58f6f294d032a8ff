//! The store conformance kit (`strata_store::conformance`) on the embedded sled store.

use std::sync::Arc;

use strata_store::conformance::Harness;
use strata_store::Store;
use strata_store_sled::SledStore;

/// A sled store in a temporary directory of its own.
struct SledHarness(tempfile::TempDir);

impl Harness for SledHarness {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(SledStore::open(self.0.path()).expect("open the sled store"))
    }
}

strata_store::conformance_tests!(SledHarness(tempfile::tempdir().expect("temporary directory")));
