//! Invariant 5 with a running engine: an edited config file is picked up and routes by the next
//! start; an invalid edit, a deleted file and a non-UTF-8 file are rejected and the config in
//! force stays. The test waits on the engine's events, never on a sleep.
//!
//! Every behaviour here runs on sled and on PostgreSQL (the file in a directory of its own).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use strata::{Event, StartOptions};
use strata_workflows::order;

on_sled_and_postgres!(
    a_running_engine_follows_its_config_file_and_keeps_the_last_good_one,
    a_file_rewritten_in_place_is_applied_once_complete,
    an_invalid_config_file_at_open_fails_the_open,
);

fn rollout(percent: u32) -> String {
    format!("[workflows.order]\ndefault = \"=1.0.0\"\n\n[[workflows.order.rollouts]]\ncandidate = \"2.0.0\"\npercent = {percent}\n")
}

/// Writes the file as editors do: a new file renamed over the old one.
fn save(path: &Path, text: &[u8]) {
    let temporary = path.with_extension("toml.tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

async fn version_for(engine: &strata::Engine, key: &str) -> String {
    let options = StartOptions::new().routing_key(key);
    let id = engine
        .start_with(order::WORKFLOW, &small_order(1), options)
        .await
        .unwrap();
    engine.instance(id).unwrap().version().to_string()
}

fn is_config_event(event: &Event) -> bool {
    matches!(event, Event::ConfigApplied { .. } | Event::ConfigRejected { .. })
}

async fn a_running_engine_follows_its_config_file_and_keeps_the_last_good_one(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    save(&config, rollout(0).as_bytes());
    // A long poll interval: the changes below must be seen through change notification.
    let engine = with_all(backend.builder()).open().await.unwrap();
    engine
        .watch_config_file(&config, Duration::from_secs(3600))
        .await
        .unwrap();
    let mut events = engine.subscribe();
    assert_eq!(version_for(&engine, "customer-1").await, "1.0.0");

    let written = Instant::now();
    save(&config, rollout(100).as_bytes());
    let event = wait_for_event(&mut events, is_config_event).await;
    eprintln!("reload applied {:?} after the write", written.elapsed());
    assert!(matches!(event, Event::ConfigApplied { .. }), "{event:?}");
    assert_eq!(version_for(&engine, "customer-1").await, "2.0.0");

    save(&config, b"[workflows.order]\ndefault = \"^9\"\n");
    let event = wait_for_event(&mut events, is_config_event).await;
    let Event::ConfigRejected { reason, .. } = event else {
        panic!("expected a rejection, got {event:?}")
    };
    assert!(reason.contains("workflows.order.default"), "{reason}");
    assert_eq!(
        version_for(&engine, "customer-1").await,
        "2.0.0",
        "the last good config left"
    );

    std::fs::remove_file(&config).unwrap();
    let event = wait_for_event(&mut events, is_config_event).await;
    let Event::ConfigRejected { reason, .. } = event else {
        panic!("expected a rejection, got {event:?}")
    };
    assert!(reason.contains("cannot read"), "{reason}");
    assert_eq!(version_for(&engine, "customer-1").await, "2.0.0");

    save(&config, &[0xff, 0xfe, 0x00]);
    let event = wait_for_event(&mut events, is_config_event).await;
    assert!(matches!(event, Event::ConfigRejected { .. }), "{event:?}");

    save(&config, rollout(0).as_bytes());
    let event = wait_for_event(&mut events, is_config_event).await;
    assert!(matches!(event, Event::ConfigApplied { .. }), "{event:?}");
    assert_eq!(version_for(&engine, "customer-1").await, "1.0.0");
    engine.shutdown().await;
}

async fn a_file_rewritten_in_place_is_applied_once_complete(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    save(&config, rollout(0).as_bytes());
    let engine = with_all(backend.builder()).open().await.unwrap();
    engine
        .watch_config_file(&config, Duration::from_millis(50))
        .await
        .unwrap();
    let mut events = engine.subscribe();
    // Truncated, then written: a reader may see the empty file first (a valid, empty config that
    // routes to the newest version, 2.0.0); the complete file routes to 1.1.0.
    let complete = "[workflows.order]\ndefault = \"=1.0.0\"\n\n[[workflows.order.rollouts]]\ncandidate = \"1.1.0\"\npercent = 100\n";
    std::fs::write(&config, complete).unwrap();
    loop {
        let event = wait_for_event(&mut events, is_config_event).await;
        assert!(matches!(event, Event::ConfigApplied { .. }), "{event:?}");
        if version_for(&engine, "customer-1").await == "1.1.0" {
            break;
        }
    }
    engine.shutdown().await;
}

async fn an_invalid_config_file_at_open_fails_the_open(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    save(&config, b"[workflows.order]\ndefault = \"^9\"\n");
    let result = with_all(backend.builder()).config_file(&config).open().await;
    let Err(error) = result else {
        panic!("opened with an invalid config")
    };
    assert!(error.to_string().contains("workflows.order.default"), "{error}");
    save(&config, rollout(100).as_bytes());
    let engine = with_all(backend.builder()).config_file(&config).open().await.unwrap();
    assert_eq!(version_for(&engine, "customer-1").await, "2.0.0");
    engine.shutdown().await;
}
