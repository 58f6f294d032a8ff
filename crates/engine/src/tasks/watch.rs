//! Hot reload: watches a config file and applies it when its content changes. Change
//! notification (the file's directory is watched, since editors save by renaming a new file over
//! the old) wakes the watcher at once; a poll every `poll_interval` catches what notification
//! misses. Bursts of events are debounced. A file that is invalid, deleted or unreadable never
//! takes effect: the config in force stays and a `ConfigRejected` event says why.

use std::path::PathBuf;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::{mpsc, watch};

use crate::Engine;

/// How long a burst of file events must be quiet before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Watches `path` until `stop` turns true, applying each new content through `engine`.
/// `applied` is the content already in force.
pub(crate) async fn watch_file(
    engine: Engine,
    path: PathBuf,
    applied: Option<Vec<u8>>,
    poll_interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let source = path.display().to_string();
    let (changed, mut changes) = mpsc::unbounded_channel();
    let file_name = path.file_name().map(|name| name.to_os_string());
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event
                .paths
                .iter()
                .any(|changed_path| changed_path.file_name() == file_name.as_deref())
            {
                let _ = changed.send(());
            }
        }
    });
    let _watcher = match watcher {
        Ok(mut watcher) => {
            let directory = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
                .unwrap_or(".".as_ref());
            if let Err(error) = watcher.watch(directory, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(file = %source, %error, "cannot watch the config file's directory; polling only");
            }
            Some(watcher)
        }
        Err(error) => {
            tracing::warn!(file = %source, %error, "file change notification unavailable; polling only");
            None
        }
    };
    let mut last = applied;
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(()) = changes.recv() => {
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
            }
            _ = poll.tick() => {}
        }
        if *stop.borrow() {
            return;
        }
        match tokio::fs::read(&path).await {
            Ok(bytes) if last.as_ref() == Some(&bytes) => {}
            Ok(bytes) => {
                last = Some(bytes.clone());
                match String::from_utf8(bytes) {
                    // apply_config announces the outcome (ConfigApplied or ConfigRejected).
                    Ok(text) => drop(engine.apply_config(&source, &text).await),
                    Err(_) => engine.announce_rejection(&source, format!("{source}: the file is not UTF-8 text")),
                }
            }
            Err(error) => {
                if last.take().is_some() {
                    engine.announce_rejection(&source, format!("{source}: cannot read the config file: {error}"));
                }
            }
        }
    }
}
