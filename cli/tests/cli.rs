//! The built `strata` binary, run as a child process against an engine serving its admin API on
//! a loopback port in this test process: tables for people, `--json` for scripts, and the exit
//! codes scripts rely on (0 yes, 1 no, 3 refused, 4 unreachable), including `versions --drained`
//! turning from 1 to 0 as the last instance of a drained version finishes.

use std::process::{Command, Output};
use std::time::Duration;
use strata::prelude::*;

use serde_json::Value;
use strata::{Engine, InstanceId, InstanceStatus, Next, StartOptions, StepCtx, StepResult, WorkflowVersion};

const ADMIN: &str = "admin-secret-0123456789";
const READER: &str = "read-secret-0123456789";

async fn wait_for_go(_ctx: StepCtx, _count: &mut u64) -> StepResult<u64> {
    Ok(Next::wait_signal("go", "finish"))
}

async fn finish(_ctx: StepCtx, count: &mut u64) -> StepResult<u64> {
    Ok(Next::complete(*count))
}

/// `gate`: waits for the signal `go`, then completes with its input.
fn gate(version: &str) -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("gate", version)
        .init(|count| count)
        .step("wait", wait_for_go)
        .step("finish", finish)
}

async fn open(dir: &std::path::Path) -> Engine {
    open_with(dir, [gate("1.0.0"), gate("2.0.0")]).await
}

/// An engine on `dir` with `versions` and the admin API on loopback, with both tokens.
async fn open_with(
    dir: &std::path::Path,
    versions: impl IntoIterator<Item = WorkflowVersion<u64, u64, u64>>,
) -> Engine {
    let mut builder = Engine::builder()
        .data_dir(dir)
        .admin("127.0.0.1:0".parse().unwrap())
        .admin_token(ADMIN)
        .admin_read_token(READER);
    for version in versions {
        builder = builder.register(version);
    }
    builder.open().await.unwrap()
}

/// What a run of the binary gave: its exit code, standard output and standard error.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.stdout))
    }
}

fn run_of(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn command(engine: &Engine, token: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .env_remove("STRATA_ADMIN_TOKEN")
        .env(
            "STRATA_ADMIN_URL",
            format!("http://{}", engine.admin_address().unwrap()),
        )
        .args(args);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    command
}

/// Runs the binary (off the engine's threads) and waits for it.
async fn strata(engine: &Engine, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = command(engine, token, args);
    let output = tokio::task::spawn_blocking(move || command.output().expect("the strata binary runs"))
        .await
        .unwrap();
    run_of(output)
}

async fn start(engine: &Engine, count: u64, version: &str) -> InstanceId {
    let id = engine
        .start_with("gate", &count, StartOptions::new().version(format!("={version}")))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while engine.instance(id).unwrap().status != strata::InstanceStatus::WaitingSignal {
        assert!(tokio::time::Instant::now() < deadline, "instance {id} never waited");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_drained_turns_from_one_to_zero_as_the_last_instance_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let first = start(&engine, 1, "1.0.0").await;
    let last = start(&engine, 2, "1.0.0").await;

    let table = strata(&engine, Some(READER), &["versions"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    let header = table.stdout.lines().next().unwrap();
    assert!(header.starts_with("WORKFLOW  VERSION  STATUS  LIVE"), "{header}");
    let row = table.stdout.lines().find(|line| line.contains("1.0.0")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["gate", "1.0.0", "active", "2"], "{row}");

    let listed = strata(&engine, Some(READER), &["--json", "versions", "gate"]).await;
    let versions = listed.json();
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert_eq!(versions[0]["live"], 2);

    let drain = strata(&engine, Some(ADMIN), &["drain", "gate", "1.0.0"]).await;
    assert_eq!(
        (drain.code, drain.stdout.trim()),
        (0, "gate 1.0.0: draining (2 live)"),
        "{}",
        drain.stderr
    );
    assert!(
        !drain.stderr.contains("warning"),
        "2.0.0 still takes starts: {}",
        drain.stderr
    );

    let not_yet = strata(&engine, Some(READER), &["versions", "gate", "1.0.0", "--drained"]).await;
    assert_eq!(not_yet.code, 1, "two live instances: not drained");
    assert!(
        not_yet.stdout.contains("2 live instance(s): not safe to remove yet"),
        "{}",
        not_yet.stdout
    );

    // A pipeline waits on it while the instances finish.
    let waiting = command(
        &engine,
        Some(READER),
        &["versions", "gate", "1.0.0", "--drained", "--wait", "--timeout", "60"],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let signalled = strata(&engine, Some(ADMIN), &["signal", &first.0.to_string(), "go"]).await;
    assert_eq!(signalled.code, 0, "{}", signalled.stderr);
    assert_eq!(engine.output::<u64>(first).await.unwrap(), 1);
    let one_left = strata(&engine, Some(READER), &["versions", "gate", "1.0.0", "--drained"]).await;
    assert_eq!(one_left.code, 1, "one live instance: still not drained");

    let payload = strata(&engine, Some(ADMIN), &["signal", &last.0.to_string(), "go", "null"]).await;
    assert_eq!(payload.code, 0, "{}", payload.stderr);
    assert_eq!(engine.output::<u64>(last).await.unwrap(), 2);
    let waited = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap())
        .await
        .unwrap();
    let waited = run_of(waited);
    assert_eq!(waited.code, 0, "the waiting pipeline saw it drained: {}", waited.stderr);
    assert!(waited.stdout.contains("safe to remove"), "{}", waited.stdout);
    let drained = strata(
        &engine,
        Some(READER),
        &["--json", "versions", "gate", "1.0.0", "--drained"],
    )
    .await;
    assert_eq!(drained.code, 0);
    assert_eq!(drained.json()["status"], "drained");

    let retired = strata(&engine, Some(ADMIN), &["retire", "gate", "1.0.0"]).await;
    assert_eq!(
        (retired.code, retired.stdout.trim()),
        (0, "gate 1.0.0: retired (0 live)"),
        "{}",
        retired.stderr
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_unreachable_engines_get_their_own_exit_codes_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let live = start(&engine, 7, "2.0.0").await;

    let anonymous = strata(&engine, None, &["versions"]).await;
    assert_eq!(anonymous.code, 3, "no token: refused");
    assert!(anonymous.stderr.contains("--token"), "{}", anonymous.stderr);
    let wrong = strata(&engine, Some("guess"), &["versions"]).await;
    assert_eq!(wrong.code, 3);
    let reader = strata(&engine, Some(READER), &["cancel", &live.0.to_string()]).await;
    assert_eq!(reader.code, 3, "the read-only token changes nothing");
    assert!(reader.stderr.contains("admin token"), "{}", reader.stderr);
    let live_retire = strata(&engine, Some(ADMIN), &["retire", "gate", "2.0.0"]).await;
    assert_eq!(live_retire.code, 3);
    assert!(live_retire.stderr.contains("1 live instance"), "{}", live_retire.stderr);
    let unknown = strata(&engine, Some(READER), &["instances", "show", "999999"]).await;
    assert_eq!(unknown.code, 3, "{}", unknown.stderr);
    let no_job = strata(&engine, Some(READER), &["migrate", "status", "gate"]).await;
    assert_eq!(no_job.code, 3);
    assert!(no_job.stderr.contains("start one first"), "{}", no_job.stderr);
    let bad_payload = strata(
        &engine,
        Some(ADMIN),
        &["signal", &live.0.to_string(), "go", "{not json"],
    )
    .await;
    assert_eq!(bad_payload.code, 2, "a local input error is a usage error");
    let usage = strata(&engine, Some(READER), &["versions", "gate", "--drained"]).await;
    assert_eq!(usage.code, 2, "--drained needs a version");

    let nobody = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--url", "http://127.0.0.1:9", "versions"])
        .output()
        .unwrap();
    let nobody = run_of(nobody);
    assert_eq!(nobody.code, 4, "nothing listens there");
    assert!(nobody.stderr.contains("check --url"), "{}", nobody.stderr);

    let shown = strata(&engine, Some(READER), &["instances", "show", &live.0.to_string()]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("status:   waiting_signal"), "{}", shown.stdout);
    let listed = strata(
        &engine,
        Some(READER),
        &["--json", "instances", "list", "--workflow", "gate", "--all"],
    )
    .await;
    let ids: Vec<u64> = listed.json()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![live.0]);
    let cancelled = strata(&engine, Some(ADMIN), &["cancel", &live.0.to_string()]).await;
    assert_eq!(cancelled.code, 0, "{}", cancelled.stderr);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_files_are_checked_offline_and_against_the_engine_and_history_shows_diffs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let valid = write("valid.toml", "[workflows.gate]\ndefault = \"=1.0.0\"\n");
    let broken = write("broken.toml", "[workflows.gate\ndefault = 1\n");
    let unknown = write("unknown.toml", "[workflows.gate]\ndefault = \"=9.0.0\"\n");

    let offline = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--url", "http://127.0.0.1:9", "config", "check", &broken, "--offline"])
        .output()
        .unwrap();
    let offline = run_of(offline);
    assert_eq!(
        offline.code, 1,
        "a file that does not parse is invalid without any engine"
    );
    assert!(
        offline.stdout.contains("broken.toml"),
        "names the file: {}",
        offline.stdout
    );
    let offline_valid = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--url", "http://127.0.0.1:9", "config", "check", &unknown, "--offline"])
        .output()
        .unwrap();
    assert_eq!(run_of(offline_valid).code, 0, "offline, versions are not checked");

    let against = strata(&engine, Some(READER), &["config", "check", &unknown]).await;
    assert_eq!(against.code, 1, "the running engine has no 9.0.0: {}", against.stderr);
    assert!(against.stdout.contains("9.0.0"), "{}", against.stdout);
    let fine = strata(&engine, Some(READER), &["--json", "config", "check", &valid]).await;
    assert_eq!((fine.code, fine.json()["valid"].as_bool()), (0, Some(true)));

    engine
        .apply_config("first.toml", "[workflows.gate]\ndefault = \"=1.0.0\"\n")
        .await
        .unwrap();
    engine
        .apply_config("second.toml", "[workflows.gate]\ndefault = \"=2.0.0\"\n")
        .await
        .unwrap();
    let history = strata(&engine, Some(READER), &["config", "history"]).await;
    assert_eq!(history.code, 0, "{}", history.stderr);
    assert_eq!(
        history.stdout.lines().count(),
        3,
        "a header and two generations: {}",
        history.stdout
    );
    let diff = strata(&engine, Some(READER), &["config", "diff", "2"]).await;
    assert_eq!(
        diff.stdout.trim(),
        "- default = \"=1.0.0\"\n+ default = \"=2.0.0\"",
        "{}",
        diff.stderr
    );
    let restored = strata(&engine, Some(ADMIN), &["config", "restore", "1"]).await;
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    let shown = strata(&engine, Some(READER), &["--json", "config", "show"]).await;
    assert_eq!(shown.json()["generation"], 3);
    assert!(shown.json()["text"].as_str().unwrap().contains("=1.0.0"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_as_json_lines_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    // Only the finishes of gate 2.0.0: the start before it and 1.0.0's finish are not printed.
    let following = command(
        &engine,
        Some(READER),
        &[
            "events",
            "--follow",
            "--limit",
            "1",
            "--workflow",
            "gate",
            "--version",
            "2.0.0",
            "--kind",
            "instance_finished",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // The stream is open once the engine has a second subscriber (the test holds none).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while engine.event_subscribers() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the CLI never subscribed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let old = start(&engine, 4, "1.0.0").await;
    engine.signal(old, "go", &()).await.unwrap();
    engine.output::<u64>(old).await.unwrap();
    let id = start(&engine, 5, "2.0.0").await;
    engine.signal(id, "go", &()).await.unwrap();
    let printed = tokio::task::spawn_blocking(move || following.wait_with_output().unwrap())
        .await
        .unwrap();
    let printed = run_of(printed);
    assert_eq!(printed.code, 0, "{}", printed.stderr);
    let event: Value = serde_json::from_str(printed.stdout.trim()).unwrap();
    assert_eq!(event["type"], "instance_finished");
    assert_eq!(event["id"], id.0);
    assert!(
        event["at_ms"].as_u64().is_some_and(|at| at > 1_700_000_000_000),
        "{event}"
    );

    let completions = strata(&engine, None, &["completions", "bash"]).await;
    assert_eq!(completions.code, 0);
    assert!(completions.stdout.contains("_strata"), "a bash completion function");
    engine.shutdown().await;
}

async fn priced_call(ctx: StepCtx, count: &mut u64) -> StepResult<u64> {
    // 2.0.0 costs twice what 1.0.0 does.
    ctx.record("cost", if ctx.version().major == 2 { 2.0 } else { 1.0 });
    Ok(Next::complete(*count))
}

/// `priced`: one step that records its cost.
fn priced(version: &str) -> WorkflowVersion<u64, u64, u64> {
    WorkflowVersion::new("priced", version)
        .init(|count| count)
        .measure("cost", strata::MeasureKind::Summed)
        .step("call", priced_call)
}

/// A rollout gated on a measure, started from the command line: its status shows both
/// versions' figures of the measure, and its rollback names the measure's gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_gated_on_a_measure_shows_its_figures_and_the_gate_that_fired() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_with(dir.path(), [priced("1.0.0"), priced("2.0.0")]).await;
    let gates = r#"{"measures": [{"measure": "cost", "max_increase": 0.2, "min_sample": 3}]}"#;
    let args = [
        "rollout",
        "start",
        "--workflow",
        "priced",
        "--candidate",
        "2.0.0",
        "--stable",
        "1.0.0",
        "--stage",
        "50:600:3",
        "--gates",
        gates,
    ];
    let started = strata(&engine, Some(ADMIN), &args).await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    assert!(
        started
            .stdout
            .contains("gates: cost at most +20% over the stable (sample 3)"),
        "{}",
        started.stdout
    );
    let mut events = engine.subscribe();
    let mut last = None;
    for version in ["1.0.0", "2.0.0"] {
        for count in 0..3 {
            let options = StartOptions::new().version(format!("={version}"));
            let id = engine.start_with("priced", &count, options).await.unwrap();
            last = Some(id);
            let outcome = tokio::time::timeout(Duration::from_secs(30), engine.outcome(id)).await;
            assert!(matches!(outcome, Ok(Ok(strata::Outcome::Completed(_)))), "{outcome:?}");
        }
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Ok(strata::Event::RolloutRolledBack { .. })) => break,
            Ok(_) => {}
            Err(_) => panic!("the cost gate did not roll back within 30 s"),
        }
    }
    let detail = strata(&engine, Some(READER), &["rollout", "status", "priced@2.0.0"]).await;
    assert_eq!(detail.code, 0, "{}", detail.stderr);
    let measure_row = detail
        .stdout
        .lines()
        .find(|line| line.starts_with("cost "))
        .unwrap_or_else(|| panic!("no measure row: {}", detail.stdout));
    let cells: Vec<&str> = measure_row.split_whitespace().collect();
    assert_eq!(cells, ["cost", "2", "1", "3", "/", "3"], "{}", detail.stdout);
    assert!(
        detail
            .stdout
            .contains("measures[cost].max_increase: candidate cost 2 is 100.0 % above the stable's"),
        "the rollback names the measure's gate: {}",
        detail.stdout
    );
    let id = last.unwrap().0.to_string();
    let shown = strata(&engine, Some(READER), &["instances", "show", &id]).await;
    assert!(
        shown.stdout.contains("measures: cost 2 (1 value)"),
        "an instance's measures: {}",
        shown.stdout
    );
    engine.shutdown().await;
}

/// A rollout with a shadow stage, from the command line: its status says the stage is a shadow
/// one, and `rollout shadows` lists the compared pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_stage_and_its_pairs_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_with(dir.path(), [priced("1.0.0"), priced("2.0.0")]).await;
    let args = [
        "rollout",
        "start",
        "--workflow",
        "priced",
        "--candidate",
        "2.0.0",
        "--stable",
        "1.0.0",
        "--stage",
        "shadow:100:600:50",
        "--stage",
        "50:600:3",
        "--gates",
        r#"{"max_shadow_mismatch": 0.1}"#,
    ];
    let started = strata(&engine, Some(ADMIN), &args).await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    assert!(
        started
            .stdout
            .contains("stage 1 of 2 is a shadow stage: 100% of the stable's starts also run the candidate"),
        "{}",
        started.stdout
    );
    assert!(started.stdout.contains("max_shadow_mismatch 0.1"), "{}", started.stdout);
    for count in 0..3u64 {
        let options = StartOptions::new().routing_key(format!("k-{count}"));
        let id = engine.start_with("priced", &count, options).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(30), engine.outcome(id)).await;
        assert!(matches!(outcome, Ok(Ok(strata::Outcome::Completed(_)))), "{outcome:?}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let listed = strata(&engine, Some(READER), &["rollout", "shadows", "priced@2.0.0"]).await;
        assert_eq!(listed.code, 0, "{}", listed.stderr);
        if listed.stdout.starts_with("0 of 3 pairs differ") {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", listed.stdout);
        tokio::time::sleep(Duration::from_millis(20)).await; // the pairs are compared on their own
    };
    assert!(
        listed.stdout.contains("MATCH") && listed.stdout.contains("cost 1 / 2"),
        "{}",
        listed.stdout
    );
    let only = strata(
        &engine,
        Some(READER),
        &["rollout", "shadows", "priced@2.0.0", "--mismatches"],
    )
    .await;
    assert_eq!(
        only.stdout.lines().count(),
        2,
        "the count and the header: {}",
        only.stdout
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_and_moves_are_steered_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let started = strata(
        &engine,
        Some(ADMIN),
        &[
            "--json",
            "rollout",
            "start",
            "--workflow",
            "gate",
            "--candidate",
            "2.0.0",
            "--stable",
            "1.0.0",
            "--stage",
            "10:600",
            "--stage",
            "100",
            "--unwatched",
        ],
    )
    .await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    assert_eq!(started.json()["name"], "gate@2.0.0");
    let status = strata(&engine, Some(READER), &["rollout", "status"]).await;
    let row = status.stdout.lines().nth(1).unwrap_or_default().to_string();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["gate@2.0.0", "running", "1/2", "10%"],
        "{}",
        status.stdout
    );
    let detail = strata(&engine, Some(READER), &["rollout", "status", "gate@2.0.0"]).await;
    assert!(
        detail.stdout.contains("stage 1 of 2 at 10%: it holds 9m")
            || detail.stdout.contains("stage 1 of 2 at 10%: it holds 10m"),
        "the hold's remaining time: {}",
        detail.stdout
    );
    assert!(
        detail.stdout.contains("0 of 1 candidate instance(s) finished in it"),
        "{}",
        detail.stdout
    );
    assert!(
        detail.stdout.contains("TRANSITION") && detail.stdout.contains("started"),
        "{}",
        detail.stdout
    );
    // Watched until it ends: each change printed, exit 1 for a rollback.
    let watching = command(&engine, Some(READER), &["rollout", "status", "gate@2.0.0", "--watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for (action, expected) in [("pause", "paused"), ("resume", "running"), ("rollback", "rolled_back")] {
        let changed = strata(&engine, Some(ADMIN), &["--json", "rollout", action, "gate@2.0.0"]).await;
        assert_eq!(
            (changed.code, changed.json()["status"].as_str()),
            (0, Some(expected)),
            "{action}: {}",
            changed.stderr
        );
    }
    let watched = run_of(
        tokio::task::spawn_blocking(move || watching.wait_with_output().unwrap())
            .await
            .unwrap(),
    );
    assert_eq!(
        watched.code, 1,
        "a rolled-back rollout ends the watch with 1: {}",
        watched.stderr
    );
    let last = watched.stdout.rsplit("ROLLOUT").next().unwrap_or_default();
    assert!(
        last.contains("rolled_back") && last.contains("paused") && last.contains("resumed"),
        "the last print has the whole timeline: {}",
        watched.stdout
    );
    let rolled = strata(&engine, Some(READER), &["rollout", "status", "gate@2.0.0"]).await;
    assert!(
        rolled.stdout.contains("operator"),
        "an operator's rollback names no gate: {}",
        rolled.stdout
    );
    let unknown = strata(&engine, Some(ADMIN), &["rollout", "pause", "gate@9.9.9"]).await;
    assert_eq!(unknown.code, 3);

    // A move: planned (nothing changes), then applied.
    let id = start(&engine, 3, "1.0.0").await;
    let move_args = ["--workflow", "gate", "--target", "2.0.0", "--from", "1.0.0"];
    let planned = strata(&engine, Some(READER), &[&["migrate", "plan"], &move_args[..]].concat()).await;
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    assert!(
        planned.stdout.contains("moves, continues at finish"),
        "{}",
        planned.stdout
    );
    assert!(
        planned.stdout.ends_with("1 of 1 can move to gate@2.0.0\n"),
        "{}",
        planned.stdout
    );
    assert_eq!(
        engine.instance(id).unwrap().version().to_string(),
        "1.0.0",
        "a plan moves nothing"
    );
    let applied = strata(
        &engine,
        Some(ADMIN),
        &[&["--json", "migrate", "apply"], &move_args[..]].concat(),
    )
    .await;
    assert_eq!(applied.json()["moved"], serde_json::json!([id.0]), "{}", applied.stderr);
    assert_eq!(engine.instance(id).unwrap().version().to_string(), "2.0.0");

    // A background migration with nothing to rewrite finishes at once; --wait follows it.
    let migrated = strata(&engine, Some(ADMIN), &["--json", "migrate", "start", "gate", "--wait"]).await;
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    assert_eq!(migrated.json()["state"], "finished");
    let status = strata(&engine, Some(READER), &["migrate", "status", "gate"]).await;
    assert_eq!(
        status.stdout.trim(),
        "gate: finished, 0 migrated, 0 remaining, 0 failed"
    );
    engine.shutdown().await;
}

/// The binary's output read by a reader that takes one line and goes away (`| head -1`). The
/// pipe holds 4 KiB, less than the output: the binary is still writing when the reader goes.
async fn strata_into_closed_pipe(engine: &Engine, args: &[&str]) -> Run {
    use std::io::BufRead;
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut command = command(engine, Some(ADMIN), args);
    let output = tokio::task::spawn_blocking(move || {
        let mut ends = [0; 2];
        // SAFETY: pipe2(2) fills the two descriptors, each owned once below. Close-on-exec: the
        // child gets the write end as its stdout only, never the read end.
        assert_eq!(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        // SAFETY: a valid descriptor of a pipe this function owns.
        assert!(unsafe { libc::fcntl(ends[0], libc::F_SETPIPE_SZ, 4096) } >= 4096);
        let child = command
            .stdout(std::process::Stdio::from(write_end))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the strata binary runs");
        let mut reader = std::io::BufReader::new(std::fs::File::from(read_end));
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(!first.is_empty(), "the binary printed nothing");
        drop(reader);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    run_of(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_bad_urls_and_json_errors_are_met_as_a_user_expects() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    for count in 0..300 {
        start(&engine, count, "1.0.0").await;
    }
    let listing = ["--json", "instances", "list", "--all", "--workflow", "gate"];
    for args in [&listing[..], &["completions", "bash"][..]] {
        let whole = strata(&engine, Some(ADMIN), args).await;
        assert!(
            whole.stdout.len() > 8 * 4096,
            "{args:?}: more than the pipe holds: {} bytes",
            whole.stdout.len()
        );
        let run = strata_into_closed_pipe(&engine, args).await;
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    }
    // --json: the failure is JSON too, with its exit code.
    let missing = strata(&engine, Some(ADMIN), &["--json", "versions", "nope"]).await;
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    let failure: Value = serde_json::from_str(missing.stderr.trim()).expect("a JSON failure");
    assert_eq!(
        (failure["status"].as_u64(), failure["exit_code"].as_u64()),
        (Some(404), Some(3))
    );
    assert!(failure["error"].as_str().unwrap().contains("nope"), "{failure}");
    // Listing a workflow nobody knows is the same mistake as showing it.
    let unknown = strata(&engine, Some(ADMIN), &["instances", "list", "--workflow", "nope"]).await;
    assert_eq!(unknown.code, 3, "{}", unknown.stdout);
    assert!(unknown.stderr.contains("unknown workflow 'nope'"), "{}", unknown.stderr);
    // A URL without a scheme is http; https is refused saying why; a dead port says so.
    let address = engine.admin_address().unwrap().to_string();
    let bare = strata(&engine, Some(ADMIN), &["--url", &address, "versions"]).await;
    assert_eq!(bare.code, 0, "{}", bare.stderr);
    let https = strata(
        &engine,
        Some(ADMIN),
        &["--url", &format!("https://{address}"), "versions"],
    )
    .await;
    assert_eq!(https.code, 2, "{}", https.stderr);
    assert!(https.stderr.contains("plain HTTP only"), "{}", https.stderr);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let refused = strata(
        &engine,
        Some(ADMIN),
        &["--url", &format!("http://{closed}"), "versions"],
    )
    .await;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(
        refused.stderr.to_lowercase().contains("connection refused"),
        "{}",
        refused.stderr
    );
    // Messages in the user's words.
    let version = strata(&engine, Some(ADMIN), &["versions", "gate", "^1"]).await;
    assert!(
        version.stderr.contains("is not a valid version (like 2.0.0)"),
        "{}",
        version.stderr
    );
    // Draining the last version that takes starts is done, and warned of.
    let first = strata(&engine, Some(ADMIN), &["drain", "gate", "2.0.0"]).await;
    assert!(!first.stderr.contains("warning"), "{}", first.stderr);
    let last = strata(&engine, Some(ADMIN), &["drain", "gate", "1.0.0"]).await;
    assert_eq!(last.code, 0, "{}", last.stderr);
    assert!(
        last.stderr
            .contains("warning: no version of gate takes new instances now"),
        "{}",
        last.stderr
    );
    assert!(
        last.stderr.contains("`strata activate gate 1.0.0` undoes this drain"),
        "the warning says how to undo it: {}",
        last.stderr
    );
    // ... and it is undone: the version takes starts again.
    let undone = strata(&engine, Some(ADMIN), &["activate", "gate", "1.0.0"]).await;
    assert_eq!(undone.code, 0, "{}", undone.stderr);
    assert!(undone.stdout.starts_with("gate 1.0.0: active ("), "{}", undone.stdout);
    let restarted = start(&engine, 8, "1.0.0").await;
    assert_eq!(engine.instance(restarted).unwrap().version().to_string(), "1.0.0");
    let reader = strata(&engine, Some(READER), &["activate", "gate", "2.0.0"]).await;
    assert_eq!(reader.code, 3, "the read-only token undoes nothing");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_history_is_a_table_or_json_and_is_followed_to_the_instance_s_end() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let id = start(&engine, 7, "1.0.0").await;
    let id_text = id.0.to_string();

    let table = strata(&engine, Some(READER), &["instances", "history", &id_text]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("2 entries kept"), "{}", table.stdout);
    for wanted in [
        "started",
        "on 1.0.0 (routed by requested)",
        "step wait",
        "waits for signal 'go', then step finish",
    ] {
        assert!(table.stdout.contains(wanted), "'{wanted}' missing:\n{}", table.stdout);
    }
    let json = strata(&engine, Some(READER), &["--json", "instances", "history", &id_text]).await;
    let kinds: Vec<String> = json.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event"]["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["started", "step"]);
    let last = strata(
        &engine,
        Some(READER),
        &["--json", "instances", "history", &id_text, "--last", "1"],
    )
    .await;
    assert_eq!(last.json()["entries"][0]["seq"], 1, "{}", last.stdout);

    // Followed: the table, then each entry as it comes, until the instance has finished.
    let mut following = command(&engine, Some(READER), &["instances", "history", &id_text, "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = following.stdout.take().unwrap();
    let (shown, printed) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("step wait") {
                let _ = shown.send(());
            }
            lines.push(line);
        }
        lines
    });
    tokio::task::spawn_blocking(move || printed.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the table was printed");
    engine.signal(id, "go", &()).await.unwrap();
    let status = tokio::task::spawn_blocking(move || following.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let lines = reader.join().unwrap().join("\n");
    assert!(
        lines.contains("step finish") && lines.contains("completed"),
        "the completion followed:\n{lines}"
    );

    let unknown = strata(&engine, Some(READER), &["instances", "history", "999999"]).await;
    assert_eq!(unknown.code, 3, "{}", unknown.stderr);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_terminated_with_its_reason_which_its_history_shows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let id = start(&engine, 7, "1.0.0").await;
    let id_text = id.0.to_string();

    let no_reason = strata(&engine, Some(ADMIN), &["terminate", &id_text]).await;
    assert_eq!(no_reason.code, 2, "--reason is required: {}", no_reason.stderr);
    assert!(no_reason.stderr.contains("--reason"), "{}", no_reason.stderr);
    let reader = strata(&engine, Some(READER), &["terminate", &id_text, "--reason", "x"]).await;
    assert_eq!(reader.code, 3, "the read-only token terminates nothing");
    let blank = strata(&engine, Some(ADMIN), &["terminate", &id_text, "--reason", " "]).await;
    assert_eq!(blank.code, 3, "{}", blank.stderr);
    assert!(blank.stderr.contains("needs a reason"), "{}", blank.stderr);
    assert_eq!(engine.instance(id).unwrap().status, InstanceStatus::WaitingSignal);
    engine.signal(id, "nudge", &5u32).await.unwrap();
    let shown = strata(&engine, Some(READER), &["instances", "show", &id_text]).await;
    assert!(
        shown.stdout.contains("pending signals (not consumed yet): 'nudge' #"),
        "{}",
        shown.stdout
    );

    let terminated = strata(
        &engine,
        Some(ADMIN),
        &["terminate", &id_text, "--reason", "a duplicate order"],
    )
    .await;
    assert_eq!(terminated.code, 0, "{}", terminated.stderr);
    assert!(
        terminated.stdout.contains("terminated") && terminated.stdout.contains("a duplicate order"),
        "{}",
        terminated.stdout
    );
    assert_eq!(engine.instance(id).unwrap().status, InstanceStatus::Cancelled);
    let history = strata(&engine, Some(READER), &["instances", "history", &id_text]).await;
    let lines: Vec<&str> = history.stdout.lines().collect();
    let [.., terminated, dropped] = lines.as_slice() else {
        panic!("{}", history.stdout)
    };
    assert!(
        terminated.contains("terminated") && terminated.contains("a duplicate order"),
        "{}",
        history.stdout
    );
    assert!(
        dropped.contains("signals dropped") && dropped.contains("never consumed: 'nudge' #"),
        "{}",
        history.stdout
    );
    let again = strata(&engine, Some(ADMIN), &["terminate", &id_text, "--reason", "again"]).await;
    assert_eq!(again.code, 3, "an ended instance: {}", again.stderr);
    assert!(again.stderr.contains("already finished"), "{}", again.stderr);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_instances_are_revived_on_another_version_after_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let ids = [start(&engine, 3, "1.0.0").await, start(&engine, 4, "1.0.0").await];
    for id in ids {
        engine.cancel(id).await.unwrap();
    }
    let revive = [
        "instances",
        "revive",
        "gate",
        "--on",
        "2.0.0",
        "--status",
        "cancelled",
        "--since",
        "1h",
        "--step",
        "finish=wait",
    ];
    let dry_run: Vec<&str> = revive.iter().copied().chain(["--dry-run"]).collect();
    let plan = strata(&engine, Some(READER), &dry_run).await;
    assert_eq!(plan.code, 0, "a dry run is a read: {}", plan.stderr);
    assert!(
        plan.stdout.contains("revive on gate@2.0.0 at wait") && plan.stdout.contains("2 of 2 can be revived"),
        "{}",
        plan.stdout
    );
    assert_eq!(
        engine.instance(ids[0]).unwrap().status,
        strata::InstanceStatus::Cancelled
    );
    let refused = strata(&engine, Some(READER), &revive).await;
    assert_eq!(refused.code, 3, "a revival needs the admin token: {}", refused.stderr);

    let applied = strata(
        &engine,
        Some(ADMIN),
        &["--json"].iter().chain(&revive).copied().collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let revived: Vec<u64> = applied.json()["revived"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(revived, [ids[0].0, ids[1].0]);
    for (id, count) in ids.into_iter().zip([3u64, 4]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while engine.instance(id).unwrap().status != strata::InstanceStatus::WaitingSignal {
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {id} never waited again"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(engine.instance(id).unwrap().version().to_string(), "2.0.0");
        engine.signal(id, "go", &()).await.unwrap();
        assert_eq!(engine.output::<u64>(id).await.unwrap(), count);
    }
    let history = strata(&engine, Some(READER), &["instances", "history", &ids[0].0.to_string()]).await;
    assert!(
        history.stdout.contains("revived") && history.stdout.contains("1.0.0 -> 2.0.0, step finish -> wait"),
        "{}",
        history.stdout
    );
    let nothing_left = strata(&engine, Some(ADMIN), &revive).await;
    assert!(
        nothing_left.stdout.contains("0 instance(s) revived"),
        "{}",
        nothing_left.stdout
    );
    let wrong = strata(
        &engine,
        Some(ADMIN),
        &["instances", "revive", "gate", "--since", "yesterday"],
    )
    .await;
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("--since 'yesterday'"), "{}", wrong.stderr);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_routing_schedules_and_quarantined_records_are_tables_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let config = "[workflows.gate]\ndefault = \"=1.0.0\"\n\n[[schedules]]\nname = \"nightly\"\nworkflow = \"gate\"\ncron = \"30 2 * * *\"\ninput = 1\nmissed = \"skip\"\n";
    engine.apply_config("strata.toml", config).await.unwrap();
    start(&engine, 1, "1.0.0").await;

    let workers = strata(&engine, Some(READER), &["workers"]).await;
    assert_eq!(workers.code, 0, "{}", workers.stderr);
    let line = workers
        .stdout
        .lines()
        .find(|line| line.starts_with("local"))
        .unwrap_or_else(|| panic!("{}", workers.stdout));
    assert!(
        line.contains("yes") && line.contains("gate@1.0.0, gate@2.0.0"),
        "{line}"
    );

    let routing = strata(&engine, Some(READER), &["routing", "gate"]).await;
    assert_eq!(routing.code, 0, "{}", routing.stderr);
    assert!(
        routing.stdout.contains("default") && routing.stdout.contains("=1.0.0"),
        "{}",
        routing.stdout
    );
    assert!(
        routing
            .stdout
            .lines()
            .any(|line| line.starts_with("gate@1.0.0") && line.contains("requested") && line.trim_end().ends_with('1')),
        "{}",
        routing.stdout
    );
    let json = strata(&engine, Some(READER), &["--json", "routing"]).await;
    assert_eq!(json.json()["workflows"][0]["default"], "=1.0.0");

    let schedules = strata(&engine, Some(READER), &["schedules"]).await;
    assert_eq!(schedules.code, 0, "{}", schedules.stderr);
    let nightly = schedules
        .stdout
        .lines()
        .find(|line| line.starts_with("nightly"))
        .unwrap_or_else(|| panic!("{}", schedules.stdout));
    assert!(
        nightly.contains("30 2 * * *")
            && nightly.contains(" ago ")
            && nightly.contains(" in ")
            && nightly.contains("skip"),
        "{nightly}"
    );

    let quarantined = strata(&engine, Some(READER), &["instances", "quarantined"]).await;
    assert_eq!(
        (quarantined.code, quarantined.stdout.trim()),
        (0, "no quarantined record"),
        "{}",
        quarantined.stderr
    );
    let json = strata(&engine, Some(READER), &["--json", "instances", "quarantined"]).await;
    assert_eq!(json.json(), serde_json::json!([]));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_started_from_the_command_line_with_json_input() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let started = strata(
        &engine,
        Some(ADMIN),
        &["start", "gate", "41", "--version", "=1.0.0", "--key", "customer-3"],
    )
    .await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    let id: u64 = started
        .stdout
        .trim()
        .strip_prefix("started instance ")
        .and_then(|rest| rest.strip_suffix(" on gate@1.0.0"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{}", started.stdout));
    let info = engine.instance(InstanceId(id)).unwrap();
    assert_eq!(info.record.routing_key.as_deref(), Some("customer-3"));
    engine.signal(InstanceId(id), "go", &()).await.unwrap();
    assert_eq!(engine.output::<u64>(InstanceId(id)).await.unwrap(), 41);

    let json = strata(&engine, Some(ADMIN), &["--json", "start", "gate", "1"]).await;
    assert_eq!(json.json()["version"], "2.0.0", "routed to the newest");
    let newest = json.json()["id"].clone();
    let listed = strata(
        &engine,
        Some(READER),
        &["--json", "instances", "list", "--newest", "--limit", "1"],
    )
    .await;
    assert_eq!(listed.json()["instances"][0]["id"], newest, "{}", listed.stdout);
    let table = strata(
        &engine,
        Some(READER),
        &["instances", "list", "--newest", "--limit", "1"],
    )
    .await;
    assert!(table.stdout.contains("--newest (or --all)"), "{}", table.stdout);
    let refused = strata(&engine, Some(READER), &["start", "gate", "1"]).await;
    assert_eq!(refused.code, 3, "a start needs the admin token: {}", refused.stderr);
    let bad = strata(&engine, Some(ADMIN), &["start", "gate", "{not json"]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let wrong_type = strata(&engine, Some(ADMIN), &["start", "gate", "\"forty-one\""]).await;
    assert_eq!(wrong_type.code, 3, "{}", wrong_type.stderr);
    assert!(wrong_type.stderr.contains("input"), "{}", wrong_type.stderr);
    engine.shutdown().await;
}
