//! The PostgreSQL examples leave no database behind, however they end: here, interrupted (SIGTERM)
//! while its workers start. (`cargo test` builds the examples; `--test examples` alone does not.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::postgres::TestDatabase;

/// An example's binary, built beside this test's by `cargo test`.
fn example(name: &str) -> std::path::PathBuf {
    let test = std::env::current_exe().expect("this test's path");
    let profile = test
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test runs from target/<profile>/deps");
    profile.join("examples").join(name)
}

#[test]
fn an_interrupted_example_drops_the_database_it_created() {
    let inspector = TestDatabase::create();
    let server = inspector
        .url
        .rsplit_once('/')
        .map(|(server, _)| format!("{server}/postgres"))
        .unwrap();
    let binary = example("rolling_deploy");
    let mut child = Command::new(&binary)
        .env("STRATA_DATABASE_URL", &server)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {}: {error} (cargo test builds it)", binary.display()));
    let database = format!("strata_rolling_deploy_{}", child.id());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the example prints").unwrap();
    assert!(first.starts_with("Before the deploy"), "{first}");
    let exists = format!("SELECT count(*) FROM pg_database WHERE datname = '{database}'");
    assert_eq!(inspector.count(&exists), 1, "the example made its database");

    // SAFETY: kill(2) on the pid of a child this test started and has not waited for.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "an interrupted example exits 130");
    assert_eq!(
        inspector.count(&exists),
        0,
        "the interrupted example dropped {database}"
    );
}

/// `examples/repair.rs`, as the README shows it: the failed orders' history, the dry run, every
/// one of them revived on the fix and completed there, both versions' counters.
#[test]
fn the_repair_example_revives_every_failed_order_on_the_fix() {
    let binary = example("repair");
    let output = Command::new(&binary)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error} (cargo test builds it)", binary.display()));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for wanted in [
        "18 completed, 6 failed",
        "step charge attempt 3",
        "6 of 6 can be revived",
        "would be refused: it is completed",
        "revived 6 orders, 0 refused",
        "all 6 completed on 1.0.1",
        "revived: 1.0.0 -> 1.0.1, taken up at charge",
    ] {
        assert!(printed.contains(wanted), "'{wanted}' missing:\n{printed}");
    }
    let counters: Vec<&str> = printed.lines().filter(|line| line.contains("checkout@1.0.")).collect();
    assert!(
        counters.iter().any(|line| line.split_whitespace().collect::<Vec<_>>()
            == ["checkout@1.0.0", "Active", "24", "18", "6", "0", "0"]),
        "{printed}"
    );
    assert!(
        counters
            .iter()
            .any(|line| line.split_whitespace().collect::<Vec<_>>()
                == ["checkout@1.0.1", "Active", "0", "6", "0", "6", "0"]),
        "{printed}"
    );
}

/// `examples/shadow_canary.rs`, as the README tells it: 2.0.0 is rolled back in the shadow stage
/// by its quality or its disagreement with 1.0.0 (both gates see the same misread topic; the one
/// that has its sample first decides), having answered no question for real; 2.1.0 passes the
/// shadow stage and every canary stage and is promoted.
#[test]
fn the_shadow_canary_rolls_back_in_shadow_and_promotes_the_tuned_model() {
    let binary = example("shadow_canary");
    let output = Command::new(&binary)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error} (cargo test builds it)", binary.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("rollout assistant@2.0.0: ROLLED BACK by measures[quality].min: candidate quality")
            || stdout.contains("rollout assistant@2.0.0: ROLLED BACK by max_shadow_mismatch:"),
        "{stdout}"
    );
    assert!(stdout.contains("2.0.0 answered 0 questions for real"), "{stdout}");
    assert!(stdout.contains("a differing pair: question"), "{stdout}");
    assert!(stdout.contains("rollout assistant@2.1.0: PROMOTED"), "{stdout}");
    assert!(stdout.contains("pairs compared, 0 differed"), "{stdout}");
}
