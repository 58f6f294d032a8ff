//! Each command: the admin API calls it makes, and what it prints (a table or a sentence for
//! people, the API's JSON with `--json`).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use strata_admin_model::{
    CancelledView, ConfigCheckView, FiguresView, GatesRequest, GatesView, GenerationView, InstanceDetail, InstancePage,
    MigrationBody, MigrationProgressView, MoveBody, MoveCheckView, MovePlanView, MoveReportView, PhaseView,
    RestoredView, RolloutStartRequest, RolloutView, ShadowPairView, SignalDeliveredView, StageView, StartBody,
    StartedView, TerminateBody, TransitionKind, TransitionView, VersionView, Whole,
};

use crate::args::{
    step_map, Command, ConfigCommand, InstancesCommand, MigrateCommand, MoveArgs, RolloutCommand, VersionsArgs,
};
use crate::client::{body_json, typed, AdminClient, POLL};
use crate::error::CliError;
use crate::moments::{age_of, relative, span};
use crate::output::{print_line, Output};
use crate::table;

/// Runs `command` against `client`; `json` prints the API's answers as they are.
pub(crate) fn run(client: &AdminClient, command: Command, json: bool) -> Result<(), CliError> {
    let out = Output { json };
    match command {
        Command::Versions(args) => versions(client, &out, args),
        Command::Instances(command) => instances(client, &out, command),
        Command::Start {
            workflow,
            input,
            key,
            version,
        } => {
            let input: Value = match input {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|error| CliError::Input(format!("the input is not JSON ({error}): {text}")))?,
                None => Value::Null,
            };
            let body = body_json(&StartBody {
                workflow,
                input,
                routing_key: key,
                version,
            });
            let answer = client.post("/v1/instances", Some(&body))?;
            let started: StartedView = typed(&answer, "a start")?;
            out.done(
                &answer,
                &format!(
                    "started instance {} on {}@{}",
                    started.id, started.workflow, started.version
                ),
            );
            Ok(())
        }
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
            let _: SignalDeliveredView = typed(&answer, "a signal's delivery")?;
            out.done(&answer, &format!("signal '{name}' delivered to instance {id}"));
            Ok(())
        }
        Command::Cancel { id } => {
            let answer = client.post(&format!("/v1/instances/{id}/cancel"), None)?;
            let _: CancelledView = typed(&answer, "a cancellation")?;
            out.done(&answer, &format!("instance {id} cancelled"));
            Ok(())
        }
        Command::Terminate { id, reason } => {
            let body = body_json(&TerminateBody { reason: reason.clone() });
            let answer = client.post(&format!("/v1/instances/{id}/terminate"), Some(&body))?;
            let _: CancelledView = typed(&answer, "a termination")?;
            out.done(
                &answer,
                &format!("instance {id} terminated (it ended cancelled): {reason}"),
            );
            Ok(())
        }
        Command::Drain { workflow, version } => version_action(client, &out, &workflow, &version, "drain"),
        Command::Activate { workflow, version } => version_action(client, &out, &workflow, &version, "activate"),
        Command::Retire { workflow, version } => version_action(client, &out, &workflow, &version, "retire"),
        Command::Rollout(command) => rollout(client, &out, command),
        Command::Config(command) => config(client, &out, command),
        Command::Migrate(command) => migrate(client, &out, command),
        Command::Events {
            follow: _,
            limit,
            workflow,
            version,
            kinds,
        } => {
            let mut query = Vec::new();
            if let Some(workflow) = workflow {
                query.push(format!("workflow={}", segment(&workflow)));
            }
            if let Some(version) = version {
                query.push(format!("version={}", segment(&version)));
            }
            if !kinds.is_empty() {
                let kinds: Vec<String> = kinds.iter().map(|kind| segment(kind)).collect();
                query.push(format!("kind={}", kinds.join(",")));
            }
            events(client, &query, limit)
        }
        Command::Workers => crate::operation::workers(client, &out),
        Command::Routing { workflow } => crate::operation::routing(client, &out, workflow.as_deref()),
        Command::Schedules => crate::operation::schedules(client, &out),
        Command::Completions { .. } => Ok(()),
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

/// Where an instance is between steps, for people.
fn phase_text(phase: &PhaseView) -> String {
    match phase {
        PhaseView::Accepted { .. } => "accepted, first step not begun".to_string(),
        PhaseView::Ready => "ready".to_string(),
        PhaseView::Sleeping { until_ms } => format!("sleeping, wakes {}", relative(*until_ms)),
        PhaseView::WaitingSignal { signal, timeout_at_ms } => match timeout_at_ms {
            Some(timeout) => format!("waiting for signal '{signal}', times out {}", relative(*timeout)),
            None => format!("waiting for signal '{signal}'"),
        },
        PhaseView::RetryBackoff { until_ms } => format!("waiting to retry, {}", relative(*until_ms)),
        PhaseView::Quarantined { reason } => format!("quarantined: {reason}"),
        PhaseView::Completed { output } => format!("completed with {output}"),
        PhaseView::Failed { reason } => format!("failed: {reason}"),
        PhaseView::Cancelled => "cancelled".to_string(),
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
            newest,
            all,
        } => {
            let mut listed = Vec::new();
            loop {
                let mut query = vec![format!("limit={limit}")];
                if newest {
                    query.push("order=newest".to_string());
                }
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
                                    instance.reason.clone().unwrap_or_default(),
                                ]
                            })
                            .collect();
                        let mut text = table::render(
                            &[
                                "ID", "WORKFLOW", "VERSION", "STATUS", "STEP", "STARTED", "UPDATED", "WHY",
                            ],
                            &rows,
                        );
                        if let Some(next) = after {
                            let order = if newest { " --newest" } else { "" };
                            text.push_str(&format!("\nmore: --after {next}{order} (or --all)"));
                        }
                        text
                    });
                    return Ok(());
                }
            }
        }
        InstancesCommand::History { id, last, follow } => crate::history::history(client, out, id, last, follow),
        InstancesCommand::Revive(args) => crate::revive::revive(client, out, args),
        InstancesCommand::Quarantined => crate::operation::quarantined(client, out),
        InstancesCommand::Show { id } => {
            let answer = client.get(&format!("/v1/instances/{id}"))?;
            let instance: InstanceDetail = typed(&answer, "an instance")?;
            out.show(&answer, || {
                let summary = &instance.summary;
                let mut lines = vec![
                    format!("instance {id}: {} {}", summary.workflow, summary.version),
                    format!("status:   {}", summary.status),
                    format!("step:     {} (attempt {})", summary.step, instance.attempt),
                    format!("phase:    {}", phase_text(&instance.phase)),
                    format!("started:  {}", age_of(summary.started_at_ms)),
                    format!("updated:  {}", age_of(summary.updated_at_ms)),
                ];
                if let Some(error) = &instance.last_error {
                    lines.push(format!("last error: {error}"));
                }
                if !instance.pending_signals.is_empty() {
                    let pending: Vec<String> = instance
                        .pending_signals
                        .iter()
                        .map(|signal| format!("'{}' #{} {}", signal.name, signal.seq, signal.payload))
                        .collect();
                    lines.push(format!("pending signals (not consumed yet): {}", pending.join(", ")));
                }
                if !instance.measures.is_empty() {
                    let recorded: Vec<String> = instance
                        .measures
                        .iter()
                        .map(|measure| {
                            let values = if measure.count == 1 { "value" } else { "values" };
                            format!("{} {} ({} {values})", measure.measure, measure.sum, measure.count)
                        })
                        .collect();
                    lines.push(format!("measures: {}", recorded.join(", ")));
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
fn rolled_back(rollout: &RolloutView) -> Option<&TransitionView> {
    rollout
        .history
        .iter()
        .rev()
        .find(|entry| entry.kind == TransitionKind::RolledBack)
}

/// While a rollout is active, its figures now; once rolled back, those its gates compared then.
/// The figures the gates compare now, or once the rollout ended, those of its last stage.
fn compared_figures(rollout: &RolloutView) -> Option<(FiguresView, FiguresView)> {
    match &rollout.figures {
        Some(figures) => Some((figures.candidate.clone(), figures.stable.clone())),
        None => rollout
            .history
            .iter()
            .rev()
            .find_map(|transition| transition.candidate.clone().zip(transition.stable.clone())),
    }
}

fn rollout_rows(rollouts: &[RolloutView]) -> Vec<Vec<String>> {
    rollouts
        .iter()
        .map(|rollout| {
            let gate = rolled_back(rollout).map(|rolled| {
                let gate = match rolled.gate.as_deref() {
                    Some("max_error_rate_increase") => "error rate increase gate",
                    Some("max_latency_multiplier") => "latency multiplier gate",
                    Some("min_success_rate") => "success rate gate",
                    Some("max_consecutive_failures") => "consecutive failures gate",
                    Some("max_shadow_mismatch") => "shadow mismatch gate",
                    Some(other) => other,
                    None => "an operator",
                };
                format!("{gate}: {}", rolled.reason.as_deref().unwrap_or("-"))
            });
            vec![
                rollout.name.clone(),
                rollout.status.clone(),
                format!("{}/{}", rollout.stage + 1, rollout.stages.len()),
                if rollout.shadow_percent > 0.0 {
                    format!("0% (shadow {}%)", rollout.shadow_percent)
                } else {
                    format!("{}%", rollout.candidate_percent)
                },
                compared_figures(rollout).map_or_else(
                    || "-".to_string(),
                    |(candidate, stable)| format!("{} / {}", candidate.finished, stable.finished),
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
        RolloutCommand::Status {
            name: Some(name),
            watch,
            ..
        } => {
            let path = format!("/v1/rollouts/{}", segment(&name));
            let mut shown: Option<Value> = None;
            loop {
                let answer = client.get(&path)?;
                let rollout: RolloutView = typed(&answer, "a rollout")?;
                // Printed again only when something but the clock changed.
                let mut compared = answer.clone();
                compared["hold_remaining_ms"] = Value::Null;
                if shown.as_ref() != Some(&compared) {
                    if shown.is_some() && !out.json {
                        print_line("");
                    }
                    out.show(&answer, || rollout_detail(&rollout));
                    shown = Some(compared);
                }
                if !watch {
                    return Ok(());
                }
                match rollout.status.as_str() {
                    "promoted" => return Ok(()),
                    "rolled_back" => return Err(CliError::No(String::new())),
                    _ => std::thread::sleep(POLL),
                }
            }
        }
        RolloutCommand::Status {
            name: None, workflow, ..
        } => {
            let path = match workflow {
                Some(workflow) => format!("/v1/rollouts?workflow={}", segment(&workflow)),
                None => "/v1/rollouts".to_string(),
            };
            let answer = client.get(&path)?;
            let listed: Vec<RolloutView> = typed(&answer, "a list of rollouts")?;
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
            let gates = match gates {
                Some(text) => parse_gates(&text)?,
                None => GatesRequest::default(),
            };
            let body = RolloutStartRequest {
                workflow,
                candidate,
                stable,
                stages,
                gates,
                name,
                on_rollback: on_rollback.choice(),
                unwatched,
            };
            let answer = client.post("/v1/rollouts", Some(&body_json(&body)))?;
            let rollout: RolloutView = typed(&answer, "a rollout")?;
            out.show(&answer, || rollout_detail(&rollout));
            return Ok(());
        }
        RolloutCommand::Shadows { name, mismatches } => {
            let answer = client.get(&format!("/v1/rollouts/{}/shadows", segment(&name)))?;
            let pairs: Vec<ShadowPairView> = typed(&answer, "a list of shadow pairs")?;
            let shown: Vec<&ShadowPairView> = pairs.iter().filter(|pair| !mismatches || !pair.matched).collect();
            out.show(&answer, || shadow_pairs_text(&pairs, &shown));
            return Ok(());
        }
        RolloutCommand::Pause { name } => (name, "pause"),
        RolloutCommand::Resume { name } => (name, "resume"),
        RolloutCommand::Rollback { name } => (name, "rollback"),
    };
    let answer = client.post(&format!("/v1/rollouts/{}/{action}", segment(&path)), None)?;
    let rollout: RolloutView = typed(&answer, "a rollout")?;
    out.show(&answer, || rollout_detail(&rollout));
    Ok(())
}

/// A rollout's shadow pairs as a table (`shown` of all `pairs`), with how many differ.
fn shadow_pairs_text(pairs: &[ShadowPairView], shown: &[&ShadowPairView]) -> String {
    if pairs.is_empty() {
        return "no shadow pair compared yet".to_string();
    }
    let mismatched = pairs.iter().filter(|pair| !pair.matched).count();
    let took = |stable: u64, candidate: u64| format!("{} / {}", span(stable), span(candidate));
    let measures = |pair: &ShadowPairView| {
        pair.shadow_measures
            .iter()
            .map(|(name, shadow)| {
                let real = pair.real_measures.get(name).map_or(0.0, |real| real.sum);
                format!("{name} {real} / {}", shadow.sum)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|pair| {
            vec![
                pair.real.to_string(),
                pair.shadow.to_string(),
                if pair.matched { "yes" } else { "NO" }.to_string(),
                took(pair.real_took_ms, pair.shadow_took_ms),
                measures(pair),
                pair.diff.clone().unwrap_or_default(),
            ]
        })
        .collect();
    format!(
        "{mismatched} of {} pairs differ ({:.1} %)\n{}",
        pairs.len(),
        mismatched as f64 * 100.0 / pairs.len() as f64,
        table::render(
            &[
                "REAL",
                "SHADOW",
                "MATCH",
                "TOOK (STABLE / CANDIDATE)",
                "MEASURES (STABLE / CANDIDATE)",
                "WHAT DIFFERS"
            ],
            &rows
        )
    )
}

/// `--gates` as the API's gates: a JSON object of the gate fields; a field the API does not know
/// (a typo) is refused here, naming it.
fn parse_gates(text: &str) -> Result<GatesRequest, CliError> {
    serde_json::from_str(text).map_err(|error| {
        CliError::Input(format!(
            "--gates ({error}): write a JSON object of max_error_rate_increase, max_latency_multiplier, \
             min_success_rate, max_consecutive_failures and measures (a list of {{\"measure\", \"max_increase\", \"min\", \"max\", \"min_sample\"}}): {text}"
        ))
    })
}

/// `[shadow:]PERCENT[:HOLD_SECONDS[:MIN_FINISHED]]` as the API's stage.
fn parse_stage(text: &str) -> Result<StageView, CliError> {
    let wrong = || {
        CliError::Input(format!(
            "--stage '{text}': write [shadow:]PERCENT[:HOLD_SECONDS[:MIN_FINISHED]], e.g. 5:600:100, or shadow:10:600:50 for a shadow stage"
        ))
    };
    let (shadow, rest) = match text.strip_prefix("shadow:") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut parts = rest.split(':');
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
    Ok(StageView {
        percent,
        hold_ms: Whole(hold_seconds.saturating_mul(1000)),
        min_finished: Whole(min_finished),
        shadow,
    })
}

fn rollout_detail(rollout: &RolloutView) -> String {
    let mut lines = vec![table::render(
        &ROLLOUT_HEADERS,
        &rollout_rows(std::slice::from_ref(rollout)),
    )];
    if let (Some(remaining), Some(stage)) = (rollout.hold_remaining_ms, rollout.stages.get(rollout.stage)) {
        let finished = rollout.figures.as_ref().map_or(0, |figures| figures.candidate.finished);
        let hold = if remaining == 0 {
            "its hold is over".to_string()
        } else {
            format!("it holds {} more", span(remaining))
        };
        if stage.shadow {
            let (pairs, mismatches) = rollout.figures.as_ref().map_or((0, 0), |figures| {
                (figures.candidate.pairs, figures.candidate.mismatches)
            });
            lines.push(format!(
                "stage {} of {} is a shadow stage: {}% of the stable's starts also run the candidate, unseen; {hold}; {finished} of {} shadow instance(s) finished in it; {mismatches} of {pairs} pair(s) differ (strata rollout shadows {})",
                rollout.stage + 1,
                rollout.stages.len(),
                stage.percent,
                stage.min_finished.0.max(1),
                rollout.name
            ));
        } else {
            lines.push(format!(
                "stage {} of {} at {}%: {hold}; {finished} of {} candidate instance(s) finished in it",
                rollout.stage + 1,
                rollout.stages.len(),
                stage.percent,
                stage.min_finished.0.max(1)
            ));
        }
    }
    if let Some((candidate, stable)) = compared_figures(rollout) {
        lines.push(String::new());
        let row = |name: &str, figures: FiguresView| {
            vec![
                name.to_string(),
                figures.finished.to_string(),
                figures.completed.to_string(),
                figures.failed.to_string(),
                figures
                    .p95_step_micros
                    .map_or_else(|| "-".to_string(), |micros| micros.to_string()),
                figures.consecutive_failures.to_string(),
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
            &[row("candidate", candidate.clone()), row("stable", stable.clone())],
        ));
        if let Some(measures) = measure_rows(&candidate, &stable) {
            lines.push(String::new());
            lines.push(table::render(
                &["MEASURE", "CANDIDATE", "STABLE", "SAMPLE (CANDIDATE / STABLE)"],
                &measures,
            ));
        }
    }
    lines.push(format!("gates: {}", gates_text(&rollout.gates, rollout.unwatched)));
    if let Some(started) = rollout.history.first() {
        let rows: Vec<Vec<String>> = rollout
            .history
            .iter()
            .map(|transition| {
                let figures = |figures: Option<FiguresView>| {
                    figures.map_or("-".to_string(), |figures| {
                        let pairs = if figures.pairs > 0 {
                            format!(", {} of {} shadow pairs differ", figures.mismatches, figures.pairs)
                        } else {
                            String::new()
                        };
                        format!("{} finished, {} failed{pairs}", figures.finished, figures.failed)
                    })
                };
                vec![
                    format!("+{}", span(transition.at_ms.saturating_sub(started.at_ms))),
                    format!("{:?}", transition.kind).to_lowercase(),
                    (transition.stage + 1).to_string(),
                    figures(transition.candidate.clone()),
                    figures(transition.stable.clone()),
                    transition.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        lines.push(String::new());
        lines.push(table::render(
            &["AT", "TRANSITION", "STAGE", "CANDIDATE THEN", "STABLE THEN", "WHY"],
            &rows,
        ));
    }
    lines.join("\n")
}

/// Each measure either version's figures hold: the candidate's and the stable's figure and the
/// samples they stand on; `None` when neither has a measure.
fn measure_rows(candidate: &FiguresView, stable: &FiguresView) -> Option<Vec<Vec<String>>> {
    let mut names: Vec<&String> = candidate.measures.keys().chain(stable.measures.keys()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return None;
    }
    let figure = |figures: &FiguresView, name: &str| {
        figures.measures.get(name).and_then(|figure| figure.value).map_or_else(
            || "-".to_string(),
            |value| {
                format!("{value:.6}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            },
        )
    };
    let sample = |figures: &FiguresView, name: &str| figures.measures.get(name).map_or(0, |figure| figure.sample);
    Some(
        names
            .into_iter()
            .map(|name| {
                vec![
                    name.clone(),
                    figure(candidate, name),
                    figure(stable, name),
                    format!("{} / {}", sample(candidate, name), sample(stable, name)),
                ]
            })
            .collect(),
    )
}

/// The gates set, as `name <= limit` phrases.
fn gates_text(gates: &GatesView, unwatched: bool) -> String {
    let mut set = Vec::new();
    if let Some(limit) = gates.max_error_rate_increase {
        set.push(format!("max_error_rate_increase {limit}"));
    }
    if let Some(limit) = gates.max_latency_multiplier {
        set.push(format!("max_latency_multiplier {limit}"));
    }
    if let Some(limit) = gates.min_success_rate {
        set.push(format!("min_success_rate {limit}"));
    }
    if let Some(limit) = gates.max_consecutive_failures {
        set.push(format!("max_consecutive_failures {limit}"));
    }
    if let Some(limit) = gates.max_shadow_mismatch {
        set.push(format!("max_shadow_mismatch {limit}"));
    }
    for gate in &gates.measures {
        let mut bounds = Vec::new();
        if let Some(limit) = gate.max_increase {
            bounds.push(format!("at most +{}% over the stable", limit * 100.0));
        }
        if let Some(minimum) = gate.min {
            bounds.push(format!(">= {minimum}"));
        }
        if let Some(maximum) = gate.max {
            bounds.push(format!("<= {maximum}"));
        }
        set.push(format!(
            "{} {} (sample {})",
            gate.measure,
            bounds.join(" and "),
            gate.min_sample.0
        ));
    }
    match (set.is_empty(), unwatched) {
        (true, true) => "none (unwatched)".to_string(),
        (true, false) => "none".to_string(),
        (false, _) => set.join(", "),
    }
}

fn config(client: &AdminClient, out: &Output, command: ConfigCommand) -> Result<(), CliError> {
    match command {
        ConfigCommand::Show => {
            let answer = client.get("/v1/config")?;
            let in_force: GenerationView = typed(&answer, "a config generation")?;
            out.show(&answer, || {
                format!(
                    "generation {} from {}, applied {}\n\n{}",
                    in_force.generation,
                    in_force.source,
                    age_of(in_force.applied_at_ms),
                    in_force.text
                )
            });
        }
        ConfigCommand::History => {
            let answer = client.get("/v1/config/history")?;
            let listed: Vec<GenerationView> = typed(&answer, "the config history")?;
            out.show(&answer, || {
                let rows: Vec<Vec<String>> = listed
                    .iter()
                    .map(|generation| {
                        vec![
                            generation.generation.to_string(),
                            generation.source.clone(),
                            age_of(generation.applied_at_ms),
                            generation.diff.len().to_string(),
                        ]
                    })
                    .collect();
                table::render(&["GENERATION", "SOURCE", "APPLIED", "LINES CHANGED"], &rows)
            });
        }
        ConfigCommand::Diff { generation } => {
            let answer = client.get("/v1/config/history")?;
            let history: Vec<GenerationView> = typed(&answer, "the config history")?;
            let found = history
                .into_iter()
                .find(|entry| entry.generation == generation)
                .ok_or_else(|| CliError::Refused {
                    status: 404,
                    message: format!("no config generation {generation}; `strata config history` lists them"),
                })?;
            out.show(&json!(found.diff), || {
                if found.diff.is_empty() {
                    format!("generation {generation} changed nothing")
                } else {
                    found.diff.join("\n")
                }
            });
        }
        ConfigCommand::Restore { generation } => {
            let answer = client.post(&format!("/v1/config/restore/{generation}"), None)?;
            let restored: RestoredView = typed(&answer, "the restored generation")?;
            out.show(&answer, || {
                format!(
                    "generation {generation} is in force again, as generation {}",
                    restored.generation
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
                Ok(answer) => {
                    let _: ConfigCheckView = typed(&answer, "a config check")?;
                    out.show(&answer, || {
                        format!("{source}: valid against the running engine's versions (not applied)")
                    })
                }
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
    Ok(body_json(&MoveBody {
        steps: step_map(&args.steps)?,
        workflow: args.workflow,
        target: args.target,
        from_version: args.from,
        status: args.status,
        ids: (!args.ids.is_empty()).then(|| args.ids.into_iter().map(Whole).collect()),
    }))
}

fn check_rows(checks: &[MoveCheckView]) -> Vec<Vec<String>> {
    checks
        .iter()
        .map(|check| {
            vec![
                check.id.to_string(),
                check.from.clone(),
                check.step.clone(),
                match &check.continues_at {
                    Some(step) => format!("moves, continues at {step}"),
                    None => format!("refused: {}", check.refused.as_deref().unwrap_or("-")),
                },
            ]
        })
        .collect()
}

fn migrate(client: &AdminClient, out: &Output, command: MigrateCommand) -> Result<(), CliError> {
    match command {
        MigrateCommand::Plan(args) => {
            let answer = client.post("/v1/moves/plan", Some(&move_body(args)?))?;
            let plan: MovePlanView = typed(&answer, "a move plan")?;
            out.show(&answer, || {
                let movable = plan.checks.iter().filter(|check| check.continues_at.is_some()).count();
                format!(
                    "{}\n{movable} of {} can move to {}",
                    table::render(&["ID", "FROM", "STEP", "VERDICT"], &check_rows(&plan.checks)),
                    plan.checks.len(),
                    plan.target
                )
            });
        }
        MigrateCommand::Apply(args) => {
            let answer = client.post("/v1/moves", Some(&move_body(args)?))?;
            let report: MoveReportView = typed(&answer, "a move report")?;
            out.show(&answer, || {
                let mut text = format!("{} instance(s) moved", report.moved.len());
                if !report.refused.is_empty() {
                    text.push_str(&format!(
                        ", {} refused:\n{}",
                        report.refused.len(),
                        table::render(&["ID", "FROM", "STEP", "VERDICT"], &check_rows(&report.refused))
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
            let body = MigrationBody {
                workflow: workflow.clone(),
                batch_size: batch_size.map(|size| Whole(size as u64)),
                max_per_second: max_per_second.map(|rate| Whole(u64::from(rate))),
            };
            let answer = client.post("/v1/migrations", Some(&body_json(&body)))?;
            if wait {
                return follow_migration(client, out, &workflow);
            }
            show_progress(out, &answer)?;
        }
        MigrateCommand::Status { workflow, wait } => {
            if wait {
                return follow_migration(client, out, &workflow);
            }
            let answer = client.get(&format!("/v1/migrations/{}", segment(&workflow)))?;
            show_progress(out, &answer)?;
        }
        MigrateCommand::Pause { workflow } => {
            let answer = client.post(&format!("/v1/migrations/{}/pause", segment(&workflow)), None)?;
            show_progress(out, &answer)?;
        }
        MigrateCommand::Resume { workflow } => {
            let answer = client.post(&format!("/v1/migrations/{}/resume", segment(&workflow)), None)?;
            show_progress(out, &answer)?;
        }
    }
    Ok(())
}

/// Prints a migration's progress: the answer as JSON, or a sentence.
fn show_progress(out: &Output, answer: &Value) -> Result<(), CliError> {
    let progress: MigrationProgressView = typed(answer, "a migration's progress")?;
    out.show(answer, || progress_sentence(&progress));
    Ok(())
}

fn progress_sentence(progress: &MigrationProgressView) -> String {
    let mut text = format!(
        "{}: {}, {} migrated, {} remaining, {} failed",
        progress.workflow, progress.state, progress.migrated, progress.remaining, progress.failed
    );
    for failure in &progress.failures {
        text.push_str(&format!("\n  instance {}: {}", failure.id, failure.reason));
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
        let answer = client.get(&path)?;
        let progress: MigrationProgressView = typed(&answer, "a migration's progress")?;
        if let Some(bar) = &bar {
            bar.set_length(progress.migrated + progress.failed + progress.remaining);
            bar.set_position(progress.migrated + progress.failed);
        }
        if progress.state == "finished" {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            out.show(&answer, || progress_sentence(&progress));
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Prints each event as one line of JSON (its `type` first), until interrupted, the engine
/// stops, or `limit` events were printed.
/// Prints each event the stream sends (those the `query` filters keep), one JSON line each,
/// with when it was sent (`at_ms`), until `limit` or the stream's end.
fn events(client: &AdminClient, query: &[String], limit: Option<u64>) -> Result<(), CliError> {
    let path = if query.is_empty() {
        "/v1/events".to_string()
    } else {
        format!("/v1/events?{}", query.join("&"))
    };
    let response = client.stream(&path)?;
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
            body_json(&parse_stage("5:600:100").unwrap()),
            json!({ "percent": 5.0, "hold_ms": 600_000, "min_finished": 100, "shadow": false })
        );
        assert_eq!(
            body_json(&parse_stage("100").unwrap()),
            json!({ "percent": 100.0, "hold_ms": 0, "min_finished": 0, "shadow": false })
        );
        assert_eq!(
            body_json(&parse_stage("shadow:10:600:50").unwrap()),
            json!({ "percent": 10.0, "hold_ms": 600_000, "min_finished": 50, "shadow": true })
        );
        assert!(matches!(parse_stage("five"), Err(CliError::Input(_))));
        assert!(matches!(parse_stage("5:1:2:3"), Err(CliError::Input(_))));
        assert!(matches!(parse_stage("shadow"), Err(CliError::Input(_))));
        assert!(matches!(parse_stage("shadow:shadow:5"), Err(CliError::Input(_))));
    }

    #[test]
    fn gates_are_read_with_their_fields_and_a_typo_is_named() {
        let gates = parse_gates(r#"{"max_error_rate_increase": 0.05, "max_consecutive_failures": 3}"#).unwrap();
        assert_eq!(gates.max_error_rate_increase, Some(0.05));
        assert_eq!(gates.max_consecutive_failures, Some(Whole(3)));
        let Err(CliError::Input(message)) = parse_gates(r#"{"max_error_rate_increse": 0.05}"#) else {
            panic!("a misspelt gate was taken");
        };
        assert!(
            message.contains("unknown field `max_error_rate_increse`") && message.contains("max_error_rate_increase"),
            "{message}"
        );
        assert!(matches!(parse_gates("0.05"), Err(CliError::Input(_))));
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
