//! Each command: the admin API calls it makes, and what it prints (a table or a sentence for
//! people, the API's JSON with `--json`).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use strata_admin_model::{InstanceDetail, InstancePage, VersionView};

use crate::args::{Command, ConfigCommand, InstancesCommand, MigrateCommand, MoveArgs, RolloutCommand, VersionsArgs};
use crate::client::AdminClient;
use crate::error::CliError;
use crate::table;

/// How often a waiting command asks again.
const POLL: Duration = Duration::from_millis(500);

/// Runs `command` against `client`; `json` prints the API's answers as they are.
pub(crate) fn run(client: &AdminClient, command: Command, json: bool) -> Result<(), CliError> {
    let out = Output { json };
    match command {
        Command::Versions(args) => versions(client, &out, args),
        Command::Instances(command) => instances(client, &out, command),
        Command::Signal { id, name, payload } => {
            let payload: Value = match payload {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|error| CliError::Input(format!("the payload is not JSON ({error}): {text}")))?,
                None => Value::Null,
            };
            let answer = client.post(
                &format!("/v1/instances/{id}/signals/{}", segment(&name)),
                Some(&payload),
            )?;
            out.done(&answer, &format!("signal '{name}' delivered to instance {id}"));
            Ok(())
        }
        Command::Cancel { id } => {
            let answer = client.post(&format!("/v1/instances/{id}/cancel"), None)?;
            out.done(&answer, &format!("instance {id} cancelled"));
            Ok(())
        }
        Command::Drain { workflow, version } => version_action(client, &out, &workflow, &version, "drain"),
        Command::Activate { workflow, version } => version_action(client, &out, &workflow, &version, "activate"),
        Command::Retire { workflow, version } => version_action(client, &out, &workflow, &version, "retire"),
        Command::Rollout(command) => rollout(client, &out, command),
        Command::Config(command) => config(client, &out, command),
        Command::Migrate(command) => migrate(client, &out, command),
        Command::Events { follow: _, limit } => events(client, limit),
        Command::Completions { .. } => Ok(()),
    }
}

/// Writes `text` and a newline to standard output. A reader that went away (`strata ... | head`)
/// ends the program quietly with success: what it wanted was printed. Any other failure to
/// write ends it with exit code 4.
pub(crate) fn print_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("strata: could not write to standard output: {error}");
        std::process::exit(4);
    }
}

/// Where answers go.
struct Output {
    json: bool,
}

impl Output {
    /// Prints `value` as JSON, or `text` for people.
    fn show(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            print_line(&serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            print_line(&text());
        }
    }

    /// Prints the answer of a change: its JSON, or `sentence`.
    fn done(&self, value: &Value, sentence: &str) {
        self.show(value, || sentence.to_string());
    }
}

/// A path segment with the characters a URL path cannot hold as they are percent-encoded.
fn segment(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' | b'+' => {
                encoded.push(byte as char)
            }
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    encoded
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// An answer of the admin API read as the view `T` it documents (`strata-admin-model`).
fn typed<T: serde::de::DeserializeOwned>(answer: &Value, what: &str) -> Result<T, CliError> {
    T::deserialize(answer).map_err(|error| {
        CliError::Unreachable(format!(
            "the admin API answered with {what} this strata does not read ({error}); use a strata CLI of the engine's release"
        ))
    })
}

/// Milliseconds since the Unix epoch as an age (`3m 20s ago`).
fn age(ms: &Value) -> String {
    match ms.as_u64() {
        Some(ms) => age_of(ms),
        None => "-".to_string(),
    }
}

/// Milliseconds since the Unix epoch as an age (`3m 20s ago`).
fn age_of(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let seconds = now.saturating_sub(ms) / 1000;
    match seconds {
        0..=59 => format!("{seconds}s ago"),
        60..=3599 => format!("{}m {}s ago", seconds / 60, seconds % 60),
        3600..=86_399 => format!("{}h {}m ago", seconds / 3600, (seconds % 3600) / 60),
        _ => format!("{}d {}h ago", seconds / 86_400, (seconds % 86_400) / 3600),
    }
}

fn version_rows(versions: &[VersionView]) -> Vec<Vec<String>> {
    versions
        .iter()
        .map(|version| {
            let workers = if version.workers.is_empty() && version.live > 0 {
                "none: its instances wait".to_string()
            } else {
                version.workers.len().to_string()
            };
            vec![
                version.workflow.clone(),
                version.version.clone(),
                version.status.clone(),
                version.live.to_string(),
                version.started.to_string(),
                version.completed.to_string(),
                version.failed.to_string(),
                version.cancelled.to_string(),
                version.oldest_live.as_ref().map_or("-".to_string(), |oldest| {
                    format!("{} ({})", oldest.id, age_of(oldest.started_at_ms))
                }),
                workers,
                if version.safe_to_remove { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect()
}

fn versions(client: &AdminClient, out: &Output, args: VersionsArgs) -> Result<(), CliError> {
    match (&args.workflow, &args.version) {
        (Some(workflow), Some(version)) => {
            let path = format!("/v1/versions/{}/{}", segment(workflow), segment(version));
            let began = Instant::now();
            loop {
                let answer = client.get(&path)?;
                let version: VersionView = typed(&answer, "a version")?;
                let drained = version.safe_to_remove;
                let timed_out = args
                    .timeout
                    .is_some_and(|limit| began.elapsed() >= Duration::from_secs(limit));
                if !args.drained || drained || !args.wait || timed_out {
                    out.show(&answer, || {
                        if args.drained {
                            drain_sentence(&version)
                        } else {
                            table::render(&VERSION_HEADERS, &version_rows(std::slice::from_ref(&version)))
                        }
                    });
                    if args.drained && !drained {
                        return Err(CliError::No(String::new()));
                    }
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
        }
        (workflow, _) => {
            let path = match workflow {
                Some(workflow) => format!("/v1/versions?workflow={}", segment(workflow)),
                None => "/v1/versions".to_string(),
            };
            let answer = client.get(&path)?;
            let listed: Vec<VersionView> = typed(&answer, "a version list")?;
            if let Some(workflow) = workflow {
                if listed.is_empty() {
                    return Err(CliError::Refused {
                        status: 404,
                        message: format!("no version of '{workflow}' is known"),
                    });
                }
            }
            out.show(&answer, || table::render(&VERSION_HEADERS, &version_rows(&listed)));
            Ok(())
        }
    }
}

const VERSION_HEADERS: [&str; 11] = [
    "WORKFLOW",
    "VERSION",
    "STATUS",
    "LIVE",
    "STARTED",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "OLDEST LIVE",
    "WORKERS",
    "SAFE TO REMOVE",
];

fn drain_sentence(version: &VersionView) -> String {
    let name = format!("{} {}", version.workflow, version.version);
    if version.safe_to_remove {
        format!(
            "{name}: {}, no live instance: its code is safe to remove",
            version.status
        )
    } else {
        format!(
            "{name}: {}, {} live instance(s): not safe to remove yet",
            version.status, version.live
        )
    }
}

fn version_action(
    client: &AdminClient,
    out: &Output,
    workflow: &str,
    version: &str,
    action: &str,
) -> Result<(), CliError> {
    let answer = client.post(
        &format!("/v1/versions/{}/{}/{action}", segment(workflow), segment(version)),
        None,
    )?;
    let changed: VersionView = typed(&answer, "a version")?;
    out.show(&answer, || {
        format!("{workflow} {version}: {} ({} live)", changed.status, changed.live)
    });
    if action == "drain" {
        let versions = client.get(&format!("/v1/versions?workflow={}", segment(workflow)))?;
        let versions: Vec<VersionView> = typed(&versions, "a version list")?;
        let accepting = versions.iter().any(|info| info.accepts_starts);
        if !accepting {
            eprintln!(
                "strata: warning: no version of {workflow} takes new instances now; every start of it fails until a new version is registered or `strata activate {workflow} {version}` undoes this drain"
            );
        }
    }
    Ok(())
}

fn instances(client: &AdminClient, out: &Output, command: InstancesCommand) -> Result<(), CliError> {
    match command {
        InstancesCommand::List {
            workflow,
            version,
            status,
            limit,
            mut after,
            all,
        } => {
            let mut listed = Vec::new();
            loop {
                let mut query = vec![format!("limit={limit}")];
                for (name, value) in [("workflow", &workflow), ("version", &version), ("status", &status)] {
                    if let Some(value) = value {
                        query.push(format!("{name}={}", segment(value)));
                    }
                }
                if let Some(after) = after {
                    query.push(format!("after={after}"));
                }
                let page = client.get(&format!("/v1/instances?{}", query.join("&")))?;
                let page: InstancePage = typed(&page, "a page of instances")?;
                listed.extend(page.instances);
                after = page.next;
                if !all || after.is_none() {
                    let answer = serde_json::to_value(InstancePage {
                        instances: listed.clone(),
                        next: after,
                    })
                    .unwrap_or_default();
                    out.show(&answer, || {
                        let rows: Vec<Vec<String>> = listed
                            .iter()
                            .map(|instance| {
                                vec![
                                    instance.id.to_string(),
                                    instance.workflow.clone(),
                                    instance.version.clone(),
                                    instance.status.clone(),
                                    instance.step.clone(),
                                    age_of(instance.started_at_ms),
                                    age_of(instance.updated_at_ms),
                                ]
                            })
                            .collect();
                        let mut text = table::render(
                            &["ID", "WORKFLOW", "VERSION", "STATUS", "STEP", "STARTED", "UPDATED"],
                            &rows,
                        );
                        if let Some(next) = after {
                            text.push_str(&format!("\nmore: --after {next} (or --all)"));
                        }
                        text
                    });
                    return Ok(());
                }
            }
        }
        InstancesCommand::Show { id } => {
            let answer = client.get(&format!("/v1/instances/{id}"))?;
            let instance: InstanceDetail = typed(&answer, "an instance")?;
            out.show(&answer, || {
                let summary = &instance.summary;
                let mut lines = vec![
                    format!("instance {id}: {} {}", summary.workflow, summary.version),
                    format!("status:   {}", summary.status),
                    format!("step:     {} (attempt {})", summary.step, instance.attempt),
                    format!("phase:    {}", instance.phase),
                    format!("started:  {}", age_of(summary.started_at_ms)),
                    format!("updated:  {}", age_of(summary.updated_at_ms)),
                ];
                if let Some(error) = &instance.last_error {
                    lines.push(format!("last error: {error}"));
                }
                lines.push(format!(
                    "state (schema {}):\n{}",
                    instance.state_schema,
                    serde_json::to_string_pretty(&instance.state).unwrap_or_default()
                ));
                lines.join("\n")
            });
            Ok(())
        }
    }
}

/// The last rollback of a rollout, if it was rolled back: its gate, reason and figures.
fn rolled_back(rollout: &Value) -> Option<&Value> {
    rollout["history"]
        .as_array()
        .and_then(|history| history.iter().rev().find(|entry| entry["kind"] == "rolled_back"))
}

/// While a rollout is active, its figures now; once rolled back, those its gates compared then.
fn compared_figures(rollout: &Value) -> &Value {
    match (&rollout["figures"], rolled_back(rollout)) {
        (Value::Null, Some(rolled)) => rolled,
        (figures, _) => figures,
    }
}

fn rollout_rows(rollouts: &[Value]) -> Vec<Vec<String>> {
    rollouts
        .iter()
        .map(|rollout| {
            let stages = rollout["stages"].as_array().map_or(0, Vec::len);
            let rolled_back = rolled_back(rollout);
            let figures = compared_figures(rollout);
            let gate = rolled_back.map(|rolled| {
                let gate = match rolled["gate"].as_str() {
                    Some("max_error_rate_increase") => "error rate increase gate",
                    Some("max_latency_multiplier") => "latency multiplier gate",
                    Some("min_success_rate") => "success rate gate",
                    Some("max_consecutive_failures") => "consecutive failures gate",
                    Some(other) => other,
                    None => "an operator",
                };
                format!("{gate}: {}", shown(&rolled["reason"]))
            });
            vec![
                shown(&rollout["name"]),
                shown(&rollout["status"]),
                format!("{}/{}", rollout["stage"].as_u64().unwrap_or(0) + 1, stages),
                rollout["candidate_percent"]
                    .as_f64()
                    .map_or_else(|| "-".to_string(), |percent| format!("{percent}%")),
                format!(
                    "{} / {}",
                    shown(&figures["candidate"]["finished"]),
                    shown(&figures["stable"]["finished"])
                ),
                gate.unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect()
}

const ROLLOUT_HEADERS: [&str; 6] = [
    "ROLLOUT",
    "STATUS",
    "STAGE",
    "CANDIDATE SHARE",
    "FINISHED (CANDIDATE / STABLE)",
    "ROLLED BACK BY",
];

fn rollout(client: &AdminClient, out: &Output, command: RolloutCommand) -> Result<(), CliError> {
    let (path, action) = match command {
        RolloutCommand::Status { name: Some(name), .. } => {
            let answer = client.get(&format!("/v1/rollouts/{}", segment(&name)))?;
            out.show(&answer, || rollout_detail(&answer));
            return Ok(());
        }
        RolloutCommand::Status { name: None, workflow } => {
            let path = match workflow {
                Some(workflow) => format!("/v1/rollouts?workflow={}", segment(&workflow)),
                None => "/v1/rollouts".to_string(),
            };
            let answer = client.get(&path)?;
            let listed = answer.as_array().cloned().unwrap_or_default();
            out.show(&answer, || table::render(&ROLLOUT_HEADERS, &rollout_rows(&listed)));
            return Ok(());
        }
        RolloutCommand::Start {
            workflow,
            candidate,
            stable,
            stages,
            gates,
            name,
            on_rollback,
            unwatched,
        } => {
            let stages = stages
                .iter()
                .map(|text| parse_stage(text))
                .collect::<Result<Vec<_>, _>>()?;
            let gates: Value = match gates {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|error| CliError::Input(format!("--gates is not JSON ({error}): {text}")))?,
                None => json!({}),
            };
            let body = json!({
                "workflow": workflow, "candidate": candidate, "stable": stable, "stages": stages, "gates": gates,
                "name": name, "on_rollback": on_rollback.as_str(), "unwatched": unwatched,
            });
            let answer = client.post("/v1/rollouts", Some(&body))?;
            out.show(&answer, || rollout_detail(&answer));
            return Ok(());
        }
        RolloutCommand::Pause { name } => (name, "pause"),
        RolloutCommand::Resume { name } => (name, "resume"),
        RolloutCommand::Rollback { name } => (name, "rollback"),
    };
    let answer = client.post(&format!("/v1/rollouts/{}/{action}", segment(&path)), None)?;
    out.show(&answer, || rollout_detail(&answer));
    Ok(())
}

/// `PERCENT[:HOLD_SECONDS[:MIN_FINISHED]]` as the API's stage.
fn parse_stage(text: &str) -> Result<Value, CliError> {
    let wrong = || {
        CliError::Input(format!(
            "--stage '{text}': write PERCENT[:HOLD_SECONDS[:MIN_FINISHED]], e.g. 5:600:100"
        ))
    };
    let mut parts = text.split(':');
    let percent: f64 = parts.next().and_then(|part| part.parse().ok()).ok_or_else(wrong)?;
    let hold_seconds: u64 = match parts.next() {
        Some(part) => part.parse().map_err(|_| wrong())?,
        None => 0,
    };
    let min_finished: u64 = match parts.next() {
        Some(part) => part.parse().map_err(|_| wrong())?,
        None => 0,
    };
    if parts.next().is_some() {
        return Err(wrong());
    }
    Ok(json!({ "percent": percent, "hold_ms": hold_seconds * 1000, "min_finished": min_finished }))
}

fn rollout_detail(rollout: &Value) -> String {
    let mut lines = vec![table::render(
        &ROLLOUT_HEADERS,
        &rollout_rows(std::slice::from_ref(rollout)),
    )];
    let figures = compared_figures(rollout);
    if !figures.is_null() {
        lines.push(String::new());
        let row = |name: &str, figures: &Value| {
            vec![
                name.to_string(),
                shown(&figures["finished"]),
                shown(&figures["completed"]),
                shown(&figures["failed"]),
                shown(&figures["p95_step_micros"]),
                shown(&figures["consecutive_failures"]),
            ]
        };
        lines.push(table::render(
            &[
                "",
                "FINISHED",
                "COMPLETED",
                "FAILED",
                "P95 STEP (µs)",
                "CONSECUTIVE FAILURES",
            ],
            &[
                row("candidate", &figures["candidate"]),
                row("stable", &figures["stable"]),
            ],
        ));
    }
    lines.push(format!("gates: {}", rollout["gates"]));
    lines.join("\n")
}

fn config(client: &AdminClient, out: &Output, command: ConfigCommand) -> Result<(), CliError> {
    match command {
        ConfigCommand::Show => {
            let answer = client.get("/v1/config")?;
            out.show(&answer, || {
                format!(
                    "generation {} from {}, applied {}\n\n{}",
                    shown(&answer["generation"]),
                    shown(&answer["source"]),
                    age(&answer["applied_at_ms"]),
                    shown(&answer["text"])
                )
            });
        }
        ConfigCommand::History => {
            let answer = client.get("/v1/config/history")?;
            let listed = answer.as_array().cloned().unwrap_or_default();
            out.show(&answer, || {
                let rows: Vec<Vec<String>> = listed
                    .iter()
                    .map(|generation| {
                        let changed = generation["diff"].as_array().map_or(0, Vec::len);
                        vec![
                            shown(&generation["generation"]),
                            shown(&generation["source"]),
                            age(&generation["applied_at_ms"]),
                            changed.to_string(),
                        ]
                    })
                    .collect();
                table::render(&["GENERATION", "SOURCE", "APPLIED", "LINES CHANGED"], &rows)
            });
        }
        ConfigCommand::Diff { generation } => {
            let answer = client.get("/v1/config/history")?;
            let found = answer
                .as_array()
                .and_then(|history| {
                    history
                        .iter()
                        .find(|entry| entry["generation"].as_u64() == Some(generation))
                })
                .cloned()
                .ok_or_else(|| CliError::Refused {
                    status: 404,
                    message: format!("no config generation {generation}; `strata config history` lists them"),
                })?;
            out.show(&found["diff"], || {
                let lines: Vec<String> = found["diff"]
                    .as_array()
                    .map(|diff| diff.iter().map(shown).collect())
                    .unwrap_or_default();
                if lines.is_empty() {
                    format!("generation {generation} changed nothing")
                } else {
                    lines.join("\n")
                }
            });
        }
        ConfigCommand::Restore { generation } => {
            let answer = client.post(&format!("/v1/config/restore/{generation}"), None)?;
            out.show(&answer, || {
                format!(
                    "generation {generation} is in force again, as generation {}",
                    shown(&answer["generation"])
                )
            });
        }
        ConfigCommand::Check { file, offline } => {
            let source = file.display().to_string();
            let contents = std::fs::read_to_string(&file)
                .map_err(|error| CliError::Input(format!("could not read {source}: {error}")))?;
            if let Err(error) = strata_config::parse(&source, &contents) {
                let answer = json!({ "valid": false, "error": error.to_string() });
                out.show(&answer, || format!("invalid: {error}"));
                return Err(CliError::No(String::new()));
            }
            if offline {
                let answer = json!({ "valid": true, "checked": "syntax and structure" });
                out.show(&answer, || {
                    format!("{source}: syntax and structure are valid (not checked against an engine's versions)")
                });
                return Ok(());
            }
            let name = file
                .file_name()
                .map_or(source.clone(), |name| name.to_string_lossy().into_owned());
            match client.post_text(&format!("/v1/config/check?file={}", segment(&name)), contents) {
                Ok(answer) => out.show(&answer, || {
                    format!("{source}: valid against the running engine's versions (not applied)")
                }),
                Err(CliError::Refused { status: 422, message }) => {
                    let answer = json!({ "valid": false, "error": message });
                    out.show(&answer, || format!("invalid: {message}"));
                    return Err(CliError::No(String::new()));
                }
                Err(other) => return Err(other),
            }
        }
    }
    Ok(())
}

fn move_body(args: MoveArgs) -> Result<Value, CliError> {
    let mut steps = serde_json::Map::new();
    for mapping in &args.steps {
        let (from, to) = mapping
            .split_once('=')
            .ok_or_else(|| CliError::Input(format!("--step '{mapping}': write FROM=TO")))?;
        steps.insert(from.to_string(), Value::String(to.to_string()));
    }
    Ok(json!({
        "workflow": args.workflow,
        "target": args.target,
        "from_version": args.from,
        "status": args.status,
        "ids": if args.ids.is_empty() { Value::Null } else { json!(args.ids) },
        "steps": steps,
    }))
}

fn check_rows(checks: &[Value]) -> Vec<Vec<String>> {
    checks
        .iter()
        .map(|check| {
            vec![
                shown(&check["id"]),
                shown(&check["from"]),
                shown(&check["step"]),
                check["continues_at"].as_str().map_or_else(
                    || format!("refused: {}", shown(&check["refused"])),
                    |step| format!("moves, continues at {step}"),
                ),
            ]
        })
        .collect()
}

fn migrate(client: &AdminClient, out: &Output, command: MigrateCommand) -> Result<(), CliError> {
    match command {
        MigrateCommand::Plan(args) => {
            let answer = client.post("/v1/moves/plan", Some(&move_body(args)?))?;
            let checks = answer["checks"].as_array().cloned().unwrap_or_default();
            out.show(&answer, || {
                let movable = checks.iter().filter(|check| !check["continues_at"].is_null()).count();
                format!(
                    "{}\n{movable} of {} can move to {}",
                    table::render(&["ID", "FROM", "STEP", "VERDICT"], &check_rows(&checks)),
                    checks.len(),
                    shown(&answer["target"])
                )
            });
        }
        MigrateCommand::Apply(args) => {
            let answer = client.post("/v1/moves", Some(&move_body(args)?))?;
            let refused = answer["refused"].as_array().cloned().unwrap_or_default();
            out.show(&answer, || {
                let moved = answer["moved"].as_array().map_or(0, Vec::len);
                let mut text = format!("{moved} instance(s) moved");
                if !refused.is_empty() {
                    text.push_str(&format!(
                        ", {} refused:\n{}",
                        refused.len(),
                        table::render(&["ID", "FROM", "STEP", "VERDICT"], &check_rows(&refused))
                    ));
                }
                text
            });
        }
        MigrateCommand::Start {
            workflow,
            batch_size,
            max_per_second,
            wait,
        } => {
            let body = json!({ "workflow": workflow, "batch_size": batch_size, "max_per_second": max_per_second });
            let answer = client.post("/v1/migrations", Some(&body))?;
            if wait {
                return follow_migration(client, out, &workflow);
            }
            out.show(&answer, || progress_sentence(&answer));
        }
        MigrateCommand::Status { workflow, wait } => {
            if wait {
                return follow_migration(client, out, &workflow);
            }
            let answer = client.get(&format!("/v1/migrations/{}", segment(&workflow)))?;
            out.show(&answer, || progress_sentence(&answer));
        }
        MigrateCommand::Pause { workflow } => {
            let answer = client.post(&format!("/v1/migrations/{}/pause", segment(&workflow)), None)?;
            out.show(&answer, || progress_sentence(&answer));
        }
        MigrateCommand::Resume { workflow } => {
            let answer = client.post(&format!("/v1/migrations/{}/resume", segment(&workflow)), None)?;
            out.show(&answer, || progress_sentence(&answer));
        }
    }
    Ok(())
}

fn progress_sentence(progress: &Value) -> String {
    let mut text = format!(
        "{}: {}, {} migrated, {} remaining, {} failed",
        shown(&progress["workflow"]),
        shown(&progress["state"]),
        shown(&progress["migrated"]),
        shown(&progress["remaining"]),
        shown(&progress["failed"])
    );
    for failure in progress["failures"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "\n  instance {}: {}",
            shown(&failure["id"]),
            shown(&failure["reason"])
        ));
    }
    text
}

/// Follows a background migration to its end: a progress bar for people (on a terminal), the
/// last progress as JSON for scripts.
fn follow_migration(client: &AdminClient, out: &Output, workflow: &str) -> Result<(), CliError> {
    let path = format!("/v1/migrations/{}", segment(workflow));
    let bar = (!out.json).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(workflow.to_string());
        bar
    });
    loop {
        let progress = client.get(&path)?;
        let migrated = progress["migrated"].as_u64().unwrap_or(0);
        let failed = progress["failed"].as_u64().unwrap_or(0);
        let remaining = progress["remaining"].as_u64().unwrap_or(0);
        if let Some(bar) = &bar {
            bar.set_length(migrated + failed + remaining);
            bar.set_position(migrated + failed);
        }
        if progress["state"] == "finished" {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            out.show(&progress, || progress_sentence(&progress));
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Prints each event as one line of JSON (its `type` first), until interrupted, the engine
/// stops, or `limit` events were printed.
fn events(client: &AdminClient, limit: Option<u64>) -> Result<(), CliError> {
    let response = client.stream("/v1/events")?;
    let reader = std::io::BufReader::new(response);
    let mut printed = 0;
    let stdout = std::io::stdout();
    for line in reader.lines() {
        let line = line.map_err(|error| CliError::Unreachable(format!("the event stream broke off: {error}")))?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let mut handle = stdout.lock();
        if writeln!(handle, "{}", data.trim())
            .and_then(|()| handle.flush())
            .is_err()
        {
            // The reader went away (a closed pipe): nothing more to print.
            return Ok(());
        }
        printed += 1;
        if limit.is_some_and(|limit| printed >= limit) {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_percent_hold_and_minimum() {
        assert_eq!(
            parse_stage("5:600:100").unwrap(),
            json!({ "percent": 5.0, "hold_ms": 600_000, "min_finished": 100 })
        );
        assert_eq!(
            parse_stage("100").unwrap(),
            json!({ "percent": 100.0, "hold_ms": 0, "min_finished": 0 })
        );
        assert!(matches!(parse_stage("five"), Err(CliError::Input(_))));
        assert!(matches!(parse_stage("5:1:2:3"), Err(CliError::Input(_))));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("order@2.0.0"), "order@2.0.0");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn an_answer_off_the_model_is_an_error_that_names_what_was_read_and_what_to_do() {
        let version = serde_json::json!({
            "workflow": "order", "version": "1.0.0", "status": "active", "registered": true,
            "accepts_starts": true, "live": 2, "started": 3, "completed": 1, "failed": 0,
            "cancelled": 0, "moved_in": 0, "moved_out": 0, "oldest_live": {"id": 7, "started_at_ms": 0},
            "safe_to_remove": false, "workers": ["local"],
        });
        let read: VersionView = typed(&version, "a version").unwrap();
        assert_eq!((read.live, read.oldest_live.map(|oldest| oldest.id)), (2, Some(7)));
        let mut renamed = version;
        renamed["live_count"] = renamed["live"].take();
        renamed.as_object_mut().unwrap().remove("live");
        let Err(CliError::Unreachable(message)) = typed::<VersionView>(&renamed, "a version") else {
            panic!("an answer without `live` was read");
        };
        assert!(
            message.contains("a version") && message.contains("missing field `live`"),
            "{message}"
        );
        assert!(message.contains("strata CLI of the engine's release"), "{message}");
    }
}
