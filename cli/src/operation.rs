//! `strata workers`, `strata routing`, `strata schedules` and `strata instances quarantined`:
//! what the engine runs with, as tables (`--json`: the API's answers).

use strata_admin_model::{QuarantinedView, RoutingView, ScheduleView, WorkerView};

use crate::client::{typed, AdminClient};
use crate::error::CliError;
use crate::moments::{age_of, relative};
use crate::output::Output;
use crate::table;

/// The workers sharing the store.
pub(crate) fn workers(client: &AdminClient, out: &Output) -> Result<(), CliError> {
    let answer = client.get("/v1/workers")?;
    let workers: Vec<WorkerView> = typed(&answer, "the workers")?;
    out.show(&answer, || {
        let rows: Vec<Vec<String>> = workers
            .iter()
            .map(|worker| {
                vec![
                    worker.id.clone(),
                    format!("{} (pid {})", worker.host, worker.pid),
                    age_of(worker.started_at_ms),
                    age_of(worker.heartbeat_ms),
                    if worker.alive { "yes" } else { "no: its lease ran out" }.to_string(),
                    worker.versions.join(", "),
                ]
            })
            .collect();
        table::render(&["WORKER", "HOST", "JOINED", "HEARTBEAT", "ALIVE", "RUNS"], &rows)
    });
    Ok(())
}

/// The routing rules in force (of `workflow`, if given) and each version's starts.
pub(crate) fn routing(client: &AdminClient, out: &Output, workflow: Option<&str>) -> Result<(), CliError> {
    let answer = client.get("/v1/routing")?;
    let routing: RoutingView = typed(&answer, "the routing rules")?;
    out.show(&answer, || {
        let wanted = |name: &str| workflow.is_none_or(|only| only == name);
        let mut rows = Vec::new();
        for rules in routing.workflows.iter().filter(|rules| wanted(&rules.workflow)) {
            rows.push(vec![
                rules.workflow.clone(),
                "default".to_string(),
                rules
                    .default
                    .clone()
                    .unwrap_or_else(|| "the newest active version".to_string()),
                String::new(),
            ]);
            for (index, rule) in rules.rules.iter().enumerate() {
                let mut when = Vec::new();
                if let Some(flag) = &rule.flag {
                    when.push(format!("flag {flag}"));
                }
                when.extend(rule.segments.iter().cloned());
                rows.push(vec![
                    rules.workflow.clone(),
                    format!("rollout_rule_{index}"),
                    format!("{}% to {}", rule.percent, rule.candidate),
                    when.join(", "),
                ]);
            }
        }
        let mut text = table::render(&["WORKFLOW", "RULE", "ROUTES", "WHEN"], &rows);
        let starts: Vec<Vec<String>> = routing
            .starts
            .iter()
            .filter(|starts| wanted(&starts.workflow))
            .map(|starts| {
                vec![
                    format!("{}@{}", starts.workflow, starts.version),
                    starts.reason.clone(),
                    starts.count.to_string(),
                ]
            })
            .collect();
        text.push_str("\n\nstarts since the engine opened:\n");
        text.push_str(&table::render(&["VERSION", "ROUTED BY", "STARTS"], &starts));
        let flags: Vec<Vec<String>> = routing
            .flags
            .iter()
            .map(|flag| {
                vec![
                    flag.name.clone(),
                    if flag.enabled { "on" } else { "off" }.to_string(),
                    if flag.segments.is_empty() {
                        "everyone".to_string()
                    } else {
                        flag.segments.join(", ")
                    },
                ]
            })
            .collect();
        if !flags.is_empty() {
            text.push_str("\n\nflags:\n");
            text.push_str(&table::render(&["FLAG", "STATE", "FOR"], &flags));
        }
        text
    });
    Ok(())
}

/// The schedules with their last and next fires.
pub(crate) fn schedules(client: &AdminClient, out: &Output) -> Result<(), CliError> {
    let answer = client.get("/v1/schedules")?;
    let schedules: Vec<ScheduleView> = typed(&answer, "the schedules")?;
    out.show(&answer, || {
        if schedules.is_empty() {
            return "no schedule in the config in force".to_string();
        }
        let rows: Vec<Vec<String>> = schedules
            .iter()
            .map(|schedule| {
                vec![
                    schedule.name.clone(),
                    schedule.workflow.clone(),
                    schedule.expression.clone(),
                    schedule.last_fire_ms.map_or("never".to_string(), age_of),
                    schedule.next_fire_ms.map_or("none".to_string(), relative),
                    schedule.missed.clone(),
                ]
            })
            .collect();
        table::render(
            &["SCHEDULE", "WORKFLOW", "CRON", "LAST FIRE", "NEXT FIRE", "MISSED FIRES"],
            &rows,
        )
    });
    Ok(())
}

/// The quarantined records.
pub(crate) fn quarantined(client: &AdminClient, out: &Output) -> Result<(), CliError> {
    let answer = client.get("/v1/quarantined")?;
    let records: Vec<QuarantinedView> = typed(&answer, "the quarantined records")?;
    out.show(&answer, || {
        if records.is_empty() {
            return "no quarantined record".to_string();
        }
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|record| vec![record.id.to_string(), record.reason.clone()])
            .collect();
        table::render(&["ID", "WHY IT CANNOT BE READ"], &rows)
    });
    Ok(())
}
