//! Group commit: one thread applies the commits of many instances as one atomic store write and,
//! in `Sync` mode, one flush + fsync, then acknowledges each of them. In `Buffered` mode a
//! flusher thread of its own flushes every interval, so commits never wait for a flush (it used
//! to run on the commit thread: every step waited out each periodic flush, 100–200 ms on sled).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::store::{Applied, Op, Store, StoreError};
use strata_core::instance::VersionKey;
use strata_core::periodic::PeriodicThread;

/// When a step's commit is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the store has made the commit durable (on sled, one `fdatasync` of its commit log).
    /// Concurrent commits share one sync.
    Sync,
    /// Right after the write; the store is flushed and fsynced every `interval`. A crash may lose
    /// the commits of the last interval (never part of one).
    Buffered {
        /// How often to flush.
        interval: Duration,
    },
}

/// How many commits one group takes at most.
const MAX_GROUP: usize = 4096;

struct Request {
    ops: Vec<Op>,
    ack: oneshot::Sender<Result<Committed, StoreError>>,
}

/// What one commit did: the versions it touched as the write left them, and a take-in token for
/// each of them.
#[derive(Debug)]
pub(crate) struct Committed {
    /// The versions this commit's ops touched, as the write left them.
    pub applied: Applied,
    /// One token per version this commit touched, shared with every other commit of that version
    /// whose caller has not taken it in yet (see [`TakeIn`]).
    pub take_ins: Vec<Arc<TakeIn>>,
}

/// The commits of one version not yet taken in by their callers (instances finished in memory,
/// waiters woken, `InstanceFinished` sent). Every commit touching the version while one of them
/// is still being taken in shares the same token; a write that drains the version marks it. The
/// caller that lets go of the token last (`Arc::into_inner` picks exactly one) announces the
/// drain: after every commit of the version before it, in its group or an earlier one, was
/// taken in.
#[derive(Debug)]
pub(crate) struct TakeIn {
    /// The version.
    pub key: VersionKey,
    /// Whether a commit sharing this token drained the version.
    pub drained: AtomicBool,
}

/// The handle to the commit thread.
pub(crate) struct Committer {
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn closed() -> StoreError {
    StoreError::failed("commit", "the engine is shut down")
}

impl Committer {
    /// Starts the commit thread.
    pub(super) fn start(store: Arc<dyn Store>, durability: Durability) -> std::io::Result<Committer> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("strata-commit".to_string())
            .spawn(move || {
                CommitLoop {
                    store,
                    durability,
                    poisoned: None,
                    take_ins: HashMap::new(),
                }
                .run(receiver)
            })?;
        Ok(Committer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Commits `ops` atomically; resolves when acknowledged under the durability mode, with what
    /// the write did to the versions `ops` touched.
    pub(super) async fn commit(&self, ops: Vec<Op>) -> Result<Committed, StoreError> {
        let (ack, acknowledged) = oneshot::channel();
        {
            let sender = self.sender.lock();
            let sender = sender.as_ref().ok_or_else(closed)?;
            sender.send(Request { ops, ack }).map_err(|_| closed())?;
        }
        acknowledged.await.map_err(|_| closed())?
    }

    /// Stops accepting commits, lets the thread finish the queued ones and sync, and waits for it.
    pub(super) fn close(&self) {
        self.sender.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the commit thread panicked");
            }
        }
    }
}

struct CommitLoop {
    store: Arc<dyn Store>,
    durability: Durability,
    /// Set after a failed sync: applied work may not be durable, so no further commit is accepted
    /// (the in-memory state and the store could diverge); restarting the engine recovers.
    poisoned: Option<StoreError>,
    /// The take-in token of each version whose commits are still being taken in.
    take_ins: HashMap<VersionKey, Weak<TakeIn>>,
}

/// `Buffered` mode's flusher: every interval, if commits were applied since its last flush, it
/// flushes and fsyncs the store, on its own thread, while the commit thread goes on applying.
struct Flusher {
    /// Set by the commit thread after each applied group.
    dirty: Arc<AtomicBool>,
    /// A failed flush, for the commit thread to take in (it then refuses further commits).
    failure: Arc<Mutex<Option<StoreError>>>,
    thread: PeriodicThread,
}

impl Flusher {
    fn start(store: Arc<dyn Store>, interval: Duration) -> std::io::Result<Flusher> {
        let dirty = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let thread = {
            let (dirty, failure) = (dirty.clone(), failure.clone());
            PeriodicThread::start("strata-flush", interval, move || {
                if dirty.swap(false, Ordering::AcqRel) {
                    if let Err(error) = store.sync() {
                        *failure.lock() = Some(error);
                        return false;
                    }
                }
                true
            })?
        };
        Ok(Flusher { dirty, failure, thread })
    }

    /// Stops the thread and waits for its flush in flight.
    fn finish(&mut self) {
        self.thread.stop();
    }
}

impl CommitLoop {
    fn run(mut self, receiver: mpsc::Receiver<Request>) {
        let mut flusher = match self.durability {
            Durability::Buffered { interval } => match Flusher::start(self.store.clone(), interval) {
                Ok(flusher) => Some(flusher),
                Err(error) => {
                    tracing::error!(%error, "could not start the flush thread; every commit flushes instead");
                    None
                }
            },
            Durability::Sync => None,
        };
        loop {
            let first = match receiver.recv() {
                Ok(request) => request,
                Err(_) => break,
            };
            if let Some(error) = flusher.as_ref().and_then(|flusher| flusher.failure.lock().take()) {
                self.poison(&error);
            }
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(request) => group.push(request),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let mut results = self.apply_group(&mut group);
            let applied_any = results.iter().any(Result::is_ok);
            match &flusher {
                // Buffered: acknowledged now, flushed by the flusher within the interval.
                Some(flusher) if applied_any => flusher.dirty.store(true, Ordering::Release),
                Some(_) => {}
                None if applied_any => {
                    if let Err(error) = self.sync() {
                        for result in results.iter_mut().filter(|result| result.is_ok()) {
                            *result = Err(error.clone());
                        }
                    }
                }
                None => {}
            }
            for (request, result) in group.into_iter().zip(results) {
                let _ = request.ack.send(result);
            }
        }
        if let Some(flusher) = flusher.as_mut() {
            flusher.finish();
            if let Some(error) = flusher.failure.lock().take() {
                self.poison(&error);
            }
        }
        if self.poisoned.is_none() {
            let _ = self.sync();
        }
    }

    /// Refuses every later commit after a failed flush: what was applied may not be durable.
    fn poison(&mut self, error: &StoreError) {
        tracing::error!(%error, "syncing the store failed; refusing further commits until the engine restarts");
        self.poisoned = Some(StoreError::failed(
            "commit",
            format!("an earlier sync failed ({error}); restart the engine to recover from the store"),
        ));
    }

    /// Applies a group as one write; if that fails, applies each commit alone so that one bad
    /// commit does not fail the others — unless the store was unavailable (unreachable,
    /// read-only), which is no commit's fault: then every commit of the group gets that error at
    /// once, instead of each riding out the outage again in turn.
    fn apply_group(&mut self, group: &mut [Request]) -> Vec<Result<Committed, StoreError>> {
        if let Some(error) = &self.poisoned {
            return group.iter().map(|_| Err(error.clone())).collect();
        }
        let mut ranges = Vec::with_capacity(group.len());
        let mut merged = Vec::with_capacity(group.iter().map(|request| request.ops.len()).sum());
        for request in group.iter_mut() {
            let start = merged.len();
            merged.append(&mut request.ops);
            ranges.push(start..merged.len());
        }
        match self.store.apply(&merged) {
            Ok(applied) => ranges
                .iter()
                .map(|range| Ok(self.committed(&merged[range.clone()], &applied)))
                .collect(),
            Err(error) if ranges.len() == 1 || error.is_unavailable() => {
                ranges.iter().map(|_| Err(error.clone())).collect()
            }
            Err(_) => ranges
                .into_iter()
                .map(|range| {
                    let ops = &merged[range];
                    let applied = self.store.apply(ops)?;
                    Ok(self.committed(ops, &applied))
                })
                .collect(),
        }
    }

    /// One commit's part of a write's result (`applied`, the write's whole): the versions `ops`
    /// touched, and their take-in tokens, marked where the write drained the version.
    fn committed(&mut self, ops: &[Op], applied: &Applied) -> Committed {
        let applied = applied.share(ops);
        if self.take_ins.len() > 1024 {
            self.take_ins.retain(|_, token| token.strong_count() > 0);
        }
        let mut take_ins = Vec::with_capacity(applied.versions.len());
        for stored in &applied.versions {
            let token = match self.take_ins.get(&stored.key).and_then(Weak::upgrade) {
                Some(token) => token,
                None => {
                    let token = Arc::new(TakeIn {
                        key: stored.key.clone(),
                        drained: AtomicBool::new(false),
                    });
                    self.take_ins.insert(stored.key.clone(), Arc::downgrade(&token));
                    token
                }
            };
            if applied.drained.contains(&stored.key) {
                token.drained.store(true, Ordering::Release);
            }
            take_ins.push(token);
        }
        Committed { applied, take_ins }
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        let synced = self.store.sync();
        if let Err(error) = &synced {
            self.poison(error);
        }
        synced
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::{CorruptRecord, CounterDelta, RecoveredState, StoreStats};
    use strata_core::instance::{InstanceId, InstanceRecord, VersionKey};

    /// Fails any apply that contains a delta with `live == 13` (refused) or `live == 77`
    /// (unreachable), and every sync once told to; a sync waits while `gate` is closed.
    #[derive(Default)]
    struct PickyStore {
        applied: AtomicUsize,
        apply_calls: AtomicUsize,
        fail_sync: std::sync::atomic::AtomicBool,
        gate: (Mutex<bool>, parking_lot::Condvar),
        syncs_entered: AtomicUsize,
        cluster: strata_store::SoloCluster,
    }

    fn poisoned_op(op: &Op) -> bool {
        matches!(op, Op::AdjustCounters { delta, .. } if delta.live == 13)
    }

    /// A delta with `live == 77` finds the store unreachable (its window run out).
    fn unreachable_op(op: &Op) -> bool {
        matches!(op, Op::AdjustCounters { delta, .. } if delta.live == 77)
    }

    impl Store for PickyStore {
        fn cluster(&self) -> &dyn crate::store::Cluster {
            &self.cluster
        }

        fn apply(&self, ops: &[Op]) -> Result<Applied, StoreError> {
            self.apply_calls.fetch_add(1, Ordering::SeqCst);
            if ops.iter().any(unreachable_op) {
                return Err(StoreError::backend(
                    crate::store::BackendFailure::Unreachable {
                        retried_for: Duration::from_secs(15),
                    },
                    "lost the connection to the database while trying to commit (connection refused)",
                ));
            }
            if ops.iter().any(poisoned_op) {
                return Err(StoreError::failed("apply", "refused"));
            }
            self.applied.fetch_add(ops.len(), Ordering::SeqCst);
            // Reports every version a delta touched; a delta of live == -99 drains it.
            let mut applied = Applied::default();
            for op in ops {
                if let Op::AdjustCounters { key, delta } = op {
                    applied.versions.push(crate::store::StoredVersion {
                        key: key.clone(),
                        counters: crate::store::VersionCounters::default(),
                        status: None,
                        status_changes: 0,
                    });
                    if delta.live == -99 {
                        applied.drained.push(key.clone());
                    }
                }
            }
            Ok(applied)
        }
        fn versions(&self) -> Result<Vec<crate::store::StoredVersion>, StoreError> {
            Ok(Vec::new())
        }
        fn reserve_ids(&self, _kind: crate::store::IdKind) -> Result<std::ops::Range<u64>, StoreError> {
            Ok(1..2)
        }
        fn sync(&self) -> Result<(), StoreError> {
            self.syncs_entered.fetch_add(1, Ordering::SeqCst);
            let mut closed = self.gate.0.lock();
            while *closed {
                self.gate.1.wait(&mut closed);
            }
            drop(closed);
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(StoreError::failed("fdatasync", "EIO"));
            }
            Ok(())
        }
        fn recover(&self, _through_ms: u64) -> Result<RecoveredState, StoreError> {
            Ok(RecoveredState::default())
        }
        fn due_held(
            &self,
            _after: Option<(u64, InstanceId)>,
            _through_ms: u64,
            _limit: usize,
        ) -> Result<Vec<(u64, InstanceId)>, StoreError> {
            Ok(Vec::new())
        }
        fn load_held(&self, _ids: &[InstanceId]) -> Result<crate::store::Claimed, StoreError> {
            Ok(crate::store::Claimed::default())
        }
        fn load_instance(&self, _id: InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
            Ok(None)
        }
        fn live_instances(
            &self,
            _keep: &mut dyn FnMut(&InstanceRecord) -> bool,
            _limit: usize,
        ) -> Result<Vec<InstanceRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn finished_instances(
            &self,
            _scope: &crate::store::ListScope,
            _keep: &mut dyn FnMut(&InstanceRecord) -> bool,
            _limit: usize,
        ) -> Result<Vec<InstanceRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn expire_finished(&self, _finished_before_ms: u64, _limit: usize) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn highest_removed_id(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn history(&self, _instance: InstanceId) -> Result<Vec<crate::store::StoredHistoryChunk>, StoreError> {
            Ok(Vec::new())
        }
        fn quarantined(&self) -> Result<Vec<CorruptRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn config_history(&self) -> Result<Vec<crate::store::AppliedConfig>, StoreError> {
            Ok(Vec::new())
        }
        fn schedule_fires(&self) -> Result<Vec<(String, u64)>, StoreError> {
            Ok(Vec::new())
        }
        fn migration_jobs(&self) -> Result<Vec<strata_store::MigrationJobRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn rollouts(&self) -> Result<Vec<strata_core::rollout::RolloutRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn shadow_pairs(&self, _rollout: &str) -> Result<Vec<strata_core::shadow::ShadowPair>, StoreError> {
            Ok(Vec::new())
        }
        fn stats(&self) -> StoreStats {
            StoreStats::default()
        }
    }

    fn delta(live: i64) -> Vec<Op> {
        let key = VersionKey::new("w", semver::Version::new(1, 0, 0));
        vec![Op::AdjustCounters {
            key,
            delta: CounterDelta {
                live,
                ..CounterDelta::default()
            },
        }]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_bad_commit_does_not_fail_the_others_in_its_group() {
        let store = Arc::new(PickyStore::default());
        let committer = Arc::new(Committer::start(store.clone(), Durability::Sync).unwrap());
        let commits: Vec<_> = [1, 13, 2, 3]
            .into_iter()
            .map(|live| {
                let committer = committer.clone();
                tokio::spawn(async move { committer.commit(delta(live)).await })
            })
            .collect();
        let mut results = Vec::new();
        for commit in commits {
            results.push(commit.await.unwrap().is_ok());
        }
        assert_eq!(results, vec![true, false, true, true]);
        assert_eq!(store.applied.load(Ordering::SeqCst), 3);
        committer.close();
    }

    /// Polls `future` once: what it did up to its first wait.
    async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
        std::future::poll_fn(|context| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(context))).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_that_finds_the_store_unreachable_fails_at_once_without_trying_each_commit_again() {
        let store = Arc::new(PickyStore::default());
        let committer = Arc::new(Committer::start(store.clone(), Durability::Sync).unwrap());
        // A first commit holds the commit thread in its sync while three more queue behind it.
        *store.gate.0.lock() = true;
        let blocker = tokio::spawn({
            let committer = committer.clone();
            async move { committer.commit(delta(1)).await.is_ok() }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.syncs_entered.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "the first commit never synced");
            tokio::task::yield_now().await;
        }
        let mut queued = Vec::new();
        for live in [2, 77, 3] {
            let mut commit = Box::pin(committer.commit(delta(live)));
            assert!(poll_once(&mut commit).await.is_pending(), "queued behind the sync");
            queued.push(commit);
        }
        *store.gate.0.lock() = false;
        store.gate.1.notify_all();
        assert!(blocker.await.unwrap());
        for commit in queued {
            let error = commit.await.map(|_| ()).unwrap_err();
            assert!(error.is_unavailable(), "{error}");
        }
        assert_eq!(
            store.apply_calls.load(Ordering::SeqCst),
            2,
            "the first commit's write and the group's one write: no commit of the group tried alone"
        );
        committer.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_is_marked_on_the_token_every_commit_of_the_version_not_yet_taken_in_shares() {
        let store = Arc::new(PickyStore::default());
        let committer = Committer::start(store.clone(), Durability::Sync).unwrap();
        // A finish committed earlier, still being taken in by its caller...
        let earlier = committer.commit(delta(-1)).await.unwrap();
        // ... and the finish that drains the version, in a later group.
        let draining = committer.commit(delta(-99)).await.unwrap();
        assert!(
            Arc::ptr_eq(&earlier.take_ins[0], &draining.take_ins[0]),
            "one token for both"
        );
        assert!(draining.take_ins[0].drained.load(Ordering::Acquire));
        // The draining caller is done first: it is not the last holder, so it announces nothing.
        let [token] = <[_; 1]>::try_from(draining.take_ins).unwrap();
        assert!(Arc::into_inner(token).is_none());
        // The earlier caller lets go last: it is the one that announces the drain.
        let [token] = <[_; 1]>::try_from(earlier.take_ins).unwrap();
        let last = Arc::into_inner(token).expect("the last holder gets the token");
        assert!(last.drained.load(Ordering::Acquire));
        // Once every holder let go, a new commit of the version starts a fresh token.
        let later = committer.commit(delta(-1)).await.unwrap();
        assert!(!later.take_ins[0].drained.load(Ordering::Acquire));
        committer.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_refuses_every_later_commit() {
        let store = Arc::new(PickyStore::default());
        let committer = Committer::start(store.clone(), Durability::Sync).unwrap();
        committer.commit(delta(1)).await.unwrap();
        store.fail_sync.store(true, Ordering::SeqCst);
        committer.commit(delta(1)).await.unwrap_err();
        store.fail_sync.store(false, Ordering::SeqCst);
        let error = committer.commit(delta(1)).await.unwrap_err();
        assert!(error.to_string().contains("restart the engine"), "{error}");
        committer.close();
        committer.commit(delta(1)).await.unwrap_err();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffered_commits_are_acknowledged_while_a_flush_is_in_progress() {
        let store = Arc::new(PickyStore::default());
        let interval = Duration::from_millis(5);
        let committer = Committer::start(store.clone(), Durability::Buffered { interval }).unwrap();
        *store.gate.0.lock() = true;
        committer.commit(delta(1)).await.unwrap();
        // The flusher takes up the dirty store and waits inside its flush.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.syncs_entered.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "the flusher never flushed");
            tokio::task::yield_now().await;
        }
        for live in 2..12 {
            tokio::time::timeout(Duration::from_secs(10), committer.commit(delta(live)))
                .await
                .expect("a commit waited for the flush in progress")
                .unwrap();
        }
        assert_eq!(store.applied.load(Ordering::SeqCst), 11);
        *store.gate.0.lock() = false;
        store.gate.1.notify_all();
        committer.close();
        assert!(
            store.syncs_entered.load(Ordering::SeqCst) >= 2,
            "closing flushes what is left"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_buffered_flush_refuses_later_commits() {
        let store = Arc::new(PickyStore::default());
        let interval = Duration::from_millis(5);
        let committer = Committer::start(store.clone(), Durability::Buffered { interval }).unwrap();
        store.fail_sync.store(true, Ordering::SeqCst);
        committer.commit(delta(1)).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match committer.commit(delta(1)).await {
                Ok(_) => assert!(
                    std::time::Instant::now() < deadline,
                    "the failed flush was never noticed"
                ),
                Err(error) => {
                    assert!(error.to_string().contains("restart the engine"), "{error}");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        committer.close();
    }
}
