//! Retention (issue #12): the config file's `retention` takes over from the builder's, the
//! background pass removes finished instances once they are due, and a bad value is refused by
//! name. Exact removal (what is past the period and nothing else, across a restart, on both
//! stores) is in tests/both_stores.rs.
//!
//! On sled and on PostgreSQL.

mod common;

use std::time::Duration;

use common::tally;
use common::*;
use strata::config::ConfigError;
use strata::{EngineError, InstanceStatus, StartOptions};

on_sled_and_postgres!(the_config_files_retention_takes_over_and_the_background_pass_removes_what_is_due);

async fn the_config_files_retention_takes_over_and_the_background_pass_removes_what_is_due(backend: Backend) {
    let engine = backend
        .builder()
        .retention(Duration::ZERO)
        .register(tally::on_schema_1("1.0.0"))
        .open()
        .await
        .unwrap();
    let ids = tally::start_waiting(&engine, 0..3, StartOptions::new()).await;
    for id in &ids[..2] {
        engine.signal(*id, tally::GO, &()).await.unwrap();
        outcome_within(&engine, *id).await;
    }
    assert_eq!(
        engine.remove_expired_instances().await.unwrap(),
        0,
        "zero keeps them forever"
    );

    let error = engine
        .apply_config("strata.toml", "retention = \"soon\"\n")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, EngineError::Config(ConfigError::Retention { file, .. }) if file == "strata.toml"),
        "{error}"
    );
    assert!(
        error.to_string().contains("retention = \"30d\""),
        "says how to write it: {error}"
    );
    assert_eq!(
        engine.remove_expired_instances().await.unwrap(),
        0,
        "a refused file changes nothing"
    );

    engine
        .apply_config("strata.toml", "retention = \"1s\"\n")
        .await
        .unwrap();
    // The background pass (every twentieth of the period, at least 100 ms) removes them once
    // they have been finished a second.
    wait_until(&engine, |engine| {
        ids[..2].iter().all(|id| engine.instance(*id).is_err())
    })
    .await;
    assert_eq!(engine.instance(ids[2]).unwrap().status, InstanceStatus::WaitingSignal);
    let counters = engine.version(tally::WORKFLOW, "1.0.0").unwrap().counters;
    assert_eq!((counters.started, counters.completed, counters.live), (3, 2, 1));
    engine.shutdown().await;
}
