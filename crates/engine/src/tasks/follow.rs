//! Keeps this process on the config generation in force when many processes share the store:
//! a config applied through any of them is validated there, stored as the next generation, and
//! taken in here within a poll interval. An invalid file on one host never reaches the store,
//! so it never reaches the others.

use std::time::Duration;

use tokio::sync::watch;

use crate::observe::Event;
use crate::Engine;

/// Follows the store's newest config every `interval` until `stop` turns true.
pub(crate) async fn run(engine: Engine, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let before = engine.routing_spec();
        match engine.follow_stored_config().await {
            Ok(Some(generation)) => {
                let changes = strata_core::routing::describe_changes(&before, &engine.routing_spec());
                engine.emit(Event::ConfigApplied {
                    source: format!("generation {generation}, applied by another process"),
                    generation,
                    changes,
                });
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not take in the config in force in the store"),
        }
    }
}
