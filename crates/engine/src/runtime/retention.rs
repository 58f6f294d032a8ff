//! Retention: finished instances (completed, failed, cancelled) are removed once they have been
//! finished longer than the retention period, in bounded batches off the step
//! path (each batch is one store write of its own; steps never wait for it). Counters, statuses
//! and residency are untouched: they count what happened, not what is kept.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Runtime;
use crate::error::EngineError;

/// How long finished instances are kept unless the builder or the config file says otherwise.
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Instances removed per store write.
const BATCH: usize = 1_000;

impl Runtime {
    /// Sets how long finished instances are kept; zero keeps them forever.
    pub(crate) fn set_retention(&self, period: Duration) {
        let millis = crate::observe::millis_saturating(period);
        if self.retention_ms.swap(millis, Ordering::AcqRel) != millis {
            tracing::info!(retention = ?period, "finished instances are kept this long (zero: forever)");
            self.retention_changed.notify_one();
        }
    }

    /// How long finished instances are kept; `None`: forever.
    pub(crate) fn retention(&self) -> Option<Duration> {
        match self.retention_ms.load(Ordering::Acquire) {
            0 => None,
            millis => Some(Duration::from_millis(millis)),
        }
    }

    /// Removes the finished instances past the retention period now, batch after batch;
    /// returns how many.
    pub(crate) async fn remove_expired(&self) -> Result<u64, EngineError> {
        let Some(period) = self.retention() else {
            return Ok(0);
        };
        let cutoff = self.now().saturating_sub(crate::observe::millis_saturating(period));
        let mut total = 0;
        loop {
            let removed = self
                .store_call(move |store| store.expire_finished(cutoff, BATCH))
                .await?;
            total += removed;
            if (removed as usize) < BATCH || self.is_stopping() {
                break;
            }
            tokio::task::yield_now().await;
        }
        if total > 0 {
            tracing::info!(removed = total, retention = ?period, "removed finished instances past the retention period");
        }
        Ok(total)
    }

    /// Removes expired instances every twentieth of the retention period (between 100 ms and a
    /// minute), until shutdown. With a store many processes share, the worker that evaluates the
    /// rollouts does it.
    pub(super) async fn run_retention(self: Arc<Self>) {
        let mut stop = self.stop_signal();
        loop {
            let interval = self.retention().map_or(Duration::from_secs(60), |period| {
                (period / 20).clamp(Duration::from_millis(100), Duration::from_secs(60))
            });
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.retention_changed.notified() => continue,
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
            if !self.rollouts.leading.load(Ordering::Acquire) {
                continue;
            }
            if let Err(error) = self.remove_expired().await {
                tracing::warn!(%error, "could not remove expired finished instances; trying again later");
            }
        }
    }
}
