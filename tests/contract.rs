//! The admin API against its own OpenAPI document: schemathesis (PyPI; `./test-all` installs it)
//! runs every check it has on every operation but the endless event stream, with a bounded
//! number of examples each, against an engine with instances, a rollout's versions and the admin
//! token. Every answer, error or not, must match the document: the run passes with no failure.
//! `tests/contract/schemathesis.toml` lists the server's rules a schema cannot state.

mod common;

use std::process::Command;
use strata::prelude::*;

use common::probe;
use common::tally;
use common::*;
use strata::StartOptions;

const TOKEN: &str = "contract-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_admin_api_matches_its_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let engine = builder(dir.path())
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_1("1.1.0"))
        .register(probe::version("1.0.0"))
        .register(probe::version("2.0.0"))
        .admin("127.0.0.1:0".parse().unwrap())
        .admin_token(TOKEN)
        .open()
        .await
        .unwrap();
    tally::start_waiting(&engine, 0..20, StartOptions::new().version("=1.0.0")).await;
    engine
        .apply_config("strata.toml", "[workflows.tally]\ndefault = \"=1.0.0\"\n")
        .await
        .unwrap();
    let document = format!("http://{}/v1/openapi.json", engine.admin_address().unwrap());
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract/schemathesis.toml");
    let run = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .args(["--config-file", config, "run", &document])
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args([
                "--checks",
                "all",
                "--max-examples",
                "25",
                "--exclude-path",
                "/v1/events",
            ])
            .args(["--seed", "1", "--no-color"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
    })
    .await
    .unwrap();
    let output = match run {
        Ok(output) => output,
        Err(error) => panic!(
            "schemathesis could not be run ({error}): install it with `python3 -m pip install schemathesis` (./test-all does)"
        ),
    };
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the admin API breaks its own contract:\n{printed}"
    );
    assert!(
        printed.contains("API Operations"),
        "schemathesis ran no operation:\n{printed}"
    );
    engine.shutdown().await;
}
