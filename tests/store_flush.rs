//! No stalls behind a flush (issue #12): a commit to the embedded store goes through while a
//! checkpoint flushes sled's tree. sled's flush is held, through the vendored sled's test hook, at
//! the point where it waits for its IO buffers to reach the file (`vendor/sled/STRATA-PATCH.md`);
//! before the patch every commit waited there for the whole flush, 0.1-0.5 s at each periodic flush.
//! One test in this binary: the hook holds every flush of the process while closed.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use strata::store::{SledStore, Store};
use strata_store::Op;

fn fire(fire_ms: u64) -> Op {
    Op::PutScheduleFire {
        schedule: "nightly".to_string(),
        fire_ms,
    }
}

#[test]
fn a_commit_goes_through_while_a_flush_waits_for_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    // Something for the flush to write.
    store.apply(&[fire(1)]).unwrap();

    sled::flush_gate::close();
    let flushing = {
        let store = store.clone();
        std::thread::spawn(move || store.checkpoint())
    };
    sled::flush_gate::wait_until_held(1);

    let (done, committed) = mpsc::channel();
    {
        let store = store.clone();
        std::thread::spawn(move || {
            let _ = done.send(store.apply(&[fire(2)]));
        });
    }
    // Bounded only so that a regression fails instead of hanging the suite.
    let commit = committed.recv_timeout(Duration::from_secs(30));
    sled::flush_gate::open();
    let commit = commit.expect("the commit waited for the flush in progress");
    commit.expect("the commit went through");
    flushing.join().unwrap().expect("the checkpoint finished once let go");
    store.sync().unwrap();
    assert_eq!(store.schedule_fires().unwrap(), vec![("nightly".to_string(), 2)]);
}
