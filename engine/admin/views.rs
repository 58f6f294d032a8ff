//! The JSON shapes of the admin API (version 1): kept apart from the engine's types so that the
//! API stays stable while those change.

use serde::Serialize;

use crate::VersionInfo;

/// An error answer.
#[derive(Serialize)]
pub(super) struct ErrorView {
    /// What went wrong and what to do.
    pub error: String,
}

/// A version with its residency.
#[derive(Serialize)]
pub(super) struct VersionView {
    workflow: String,
    version: String,
    /// `active`, `draining`, `drained` or `retired`.
    status: String,
    /// Whether this process has its code.
    registered: bool,
    live: u64,
    started: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    moved_in: u64,
    moved_out: u64,
    /// The oldest live instance: its id and start time (ms since the Unix epoch).
    oldest_live: Option<OldestView>,
    /// Whether its code can be deleted: no live instance, and none can arrive.
    safe_to_remove: bool,
    /// The live workers that can run it.
    workers: Vec<String>,
}

#[derive(Serialize)]
struct OldestView {
    id: u64,
    started_at_ms: u64,
}

impl VersionView {
    pub(super) fn of(info: &VersionInfo) -> VersionView {
        VersionView {
            workflow: info.key.workflow.clone(),
            version: info.key.version.to_string(),
            status: format!("{:?}", info.status).to_lowercase(),
            registered: info.registered,
            live: info.counters.live,
            started: info.counters.started,
            completed: info.counters.completed,
            failed: info.counters.failed,
            cancelled: info.counters.cancelled,
            moved_in: info.counters.moved_in,
            moved_out: info.counters.moved_out,
            oldest_live: info.oldest_live.map(|(id, started_at_ms)| OldestView {
                id: id.0,
                started_at_ms,
            }),
            safe_to_remove: info.safe_to_remove(),
            workers: info.workers.clone(),
        }
    }
}
