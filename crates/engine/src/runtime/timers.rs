//! In-memory timer queue over the durable due times kept in instance records: a min-heap of
//! (due time, instance) and one task that wakes instances when they are due. Re-armed from the
//! records at start-up; a duplicate entry only causes a harmless extra look at the instance.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use strata_core::instance::InstanceId;

/// Due times of instances, earliest first.
pub(crate) struct TimerQueue {
    heap: Mutex<BinaryHeap<Reverse<(u64, InstanceId)>>>,
    changed: Notify,
}

impl TimerQueue {
    /// An empty queue.
    pub(super) fn new() -> Self {
        TimerQueue {
            heap: Mutex::new(BinaryHeap::new()),
            changed: Notify::new(),
        }
    }

    /// Asks for `id` to be woken at `due_ms` (ms since the Unix epoch).
    pub(super) fn arm(&self, due_ms: u64, id: InstanceId) {
        let mut heap = self.heap.lock();
        let earliest = heap.peek().is_none_or(|Reverse((first, _))| due_ms < *first);
        heap.push(Reverse((due_ms, id)));
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Takes every entry due at `now_ms`; returns them and how long until the next one.
    pub(super) fn take_due(&self, now_ms: u64) -> (Vec<InstanceId>, Option<Duration>) {
        let mut heap = self.heap.lock();
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = heap.peek().copied() {
            if at > now_ms {
                return (due, Some(Duration::from_millis(at - now_ms)));
            }
            heap.pop();
            due.push(id);
        }
        (due, None)
    }

    /// Resolves when an entry earlier than all others was armed (or `wake` was called).
    pub(super) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Wakes the timer task, so it notices shutdown.
    pub(super) fn wake(&self) {
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_earliest_first_and_the_rest_wait() {
        let queue = TimerQueue::new();
        queue.arm(300, InstanceId(3));
        queue.arm(100, InstanceId(1));
        queue.arm(200, InstanceId(2));
        let (due, wait) = queue.take_due(250);
        assert_eq!(due, vec![InstanceId(1), InstanceId(2)]);
        assert_eq!(wait, Some(Duration::from_millis(50)));
        let (due, wait) = queue.take_due(300);
        assert_eq!(due, vec![InstanceId(3)]);
        assert_eq!(wait, None);
    }
}
