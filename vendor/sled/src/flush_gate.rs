//! Strata's test hook (feature `flush_gate`, enabled only by Strata's tests): holds every flush at
//! the point where it waits for its IO buffers to reach the file, so a test can check that writers
//! are not blocked by a flush in progress. Open unless a test closes it.

use parking_lot::{Condvar, Mutex};

static CLOSED: Mutex<bool> = parking_lot::const_mutex(false);
static CHANGED: Condvar = Condvar::new();
static HELD: Mutex<usize> = parking_lot::const_mutex(0);
static HELD_CHANGED: Condvar = Condvar::new();

/// Holds flushes that reach the gate from now on.
pub fn close() {
    *CLOSED.lock() = true;
}

/// Lets held flushes go on, and later ones through.
pub fn open() {
    *CLOSED.lock() = false;
    CHANGED.notify_all();
}

/// Waits until `count` flushes are held at the gate.
pub fn wait_until_held(count: usize) {
    let mut held = HELD.lock();
    while *held < count {
        HELD_CHANGED.wait(&mut held);
    }
}

pub(crate) fn pass() {
    let mut closed = CLOSED.lock();
    if !*closed {
        return;
    }
    *HELD.lock() += 1;
    HELD_CHANGED.notify_all();
    while *closed {
        CHANGED.wait(&mut closed);
    }
    *HELD.lock() -= 1;
}
