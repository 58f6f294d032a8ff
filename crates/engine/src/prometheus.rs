//! The Prometheus text exposition of the engine's metrics (format 0.0.4): per-version instance
//! counts and live instances (from the committed counters, so they survive restarts), step
//! attempts and failures and latency summaries (since open, quantiles over the window ring),
//! the measures finished instances recorded (committed totals), routing decisions, and rollouts.

use std::fmt::Write;

use crate::observe::MetricsSnapshot;
use crate::registry::{VersionInfo, VersionStatus};
use strata_core::instance::VersionKey;
use strata_core::rollout::RolloutRecord;
use strata_core::routing::RouteReason;

/// Everything the exposition shows.
pub(crate) struct Exposition<'a> {
    /// Each version with its metrics since open.
    pub versions: &'a [(VersionInfo, MetricsSnapshot)],
    /// Routing decisions since open.
    pub routing: &'a [(VersionKey, RouteReason, u64)],
    /// The rollouts.
    pub rollouts: &'a [RolloutRecord],
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(key: &VersionKey) -> String {
    format!(
        "workflow=\"{}\",version=\"{}\"",
        escape(&key.workflow),
        escape(&key.version.to_string())
    )
}

fn header(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

fn family<T>(text: &mut String, name: &str, kind: &str, help: &str, rows: &[T], value: impl Fn(&T) -> (String, f64)) {
    header(text, name, kind, help);
    for row in rows {
        let (labels, value) = value(row);
        let _ = writeln!(text, "{name}{{{labels}}} {value}");
    }
}

fn summary(
    text: &mut String,
    name: &str,
    help: &str,
    versions: &[(VersionInfo, MetricsSnapshot)],
    pick: impl Fn(&MetricsSnapshot) -> (Option<crate::observe::Quantiles>, u64),
) {
    header(text, name, "summary", help);
    for (info, snapshot) in versions {
        let labels = labels(&info.key);
        let (quantiles, count) = pick(snapshot);
        if let Some(quantiles) = quantiles {
            for (quantile, value) in [("0.5", quantiles.p50), ("0.95", quantiles.p95), ("0.99", quantiles.p99)] {
                let _ = writeln!(
                    text,
                    "{name}{{{labels},quantile=\"{quantile}\"}} {}",
                    value.as_secs_f64()
                );
            }
        }
        let _ = writeln!(text, "{name}_count{{{labels}}} {count}");
    }
}

/// The measures the versions' finished instances recorded: per version and measure, the sum of
/// the values (`strata_measure_sum`) and how many were recorded (`strata_measure_count`), from
/// the committed totals; a summary without quantiles, so `rate(sum) / rate(count)` is the mean.
fn measures(text: &mut String, versions: &[(VersionInfo, MetricsSnapshot)]) {
    header(
        text,
        "strata_measure",
        "summary",
        "What finished instances' steps recorded of each measure the version declares (cost, quality, ...).",
    );
    for (info, _) in versions {
        for (measure, total) in &info.counters.measures {
            let labels = format!("{},measure=\"{}\"", labels(&info.key), escape(measure));
            let _ = writeln!(text, "strata_measure_sum{{{labels}}} {}", total.sum());
            let _ = writeln!(text, "strata_measure_count{{{labels}}} {}", total.count);
        }
    }
}

/// Renders the exposition.
pub(crate) fn render(exposition: &Exposition<'_>) -> String {
    let mut text = String::new();
    let versions = exposition.versions;
    type Value = fn(&VersionInfo, &MetricsSnapshot) -> f64;
    let per_version: [(&str, &str, &str, Value); 10] = [
        (
            "strata_instances_started_total",
            "counter",
            "Instances started on the version.",
            |info, _| info.counters.started as f64,
        ),
        (
            "strata_instances_completed_total",
            "counter",
            "Instances that completed.",
            |info, _| info.counters.completed as f64,
        ),
        (
            "strata_instances_failed_total",
            "counter",
            "Instances that failed.",
            |info, _| info.counters.failed as f64,
        ),
        (
            "strata_instances_cancelled_total",
            "counter",
            "Instances cancelled by an operator.",
            |info, _| info.counters.cancelled as f64,
        ),
        (
            "strata_instances_moved_in_total",
            "counter",
            "Instances moved to the version from another.",
            |info, _| info.counters.moved_in as f64,
        ),
        (
            "strata_instances_revived_total",
            "counter",
            "Failed or cancelled instances revived on the version.",
            |info, _| info.counters.revived as f64,
        ),
        (
            "strata_live_instances",
            "gauge",
            "Instances that have not finished.",
            |info, _| info.counters.live as f64,
        ),
        (
            "strata_version_drained",
            "gauge",
            "1 when the version has no live instance and takes no new one: its code can be removed.",
            |info, _| {
                f64::from(u8::from(matches!(
                    info.status,
                    VersionStatus::Drained | VersionStatus::Retired
                )))
            },
        ),
        (
            "strata_step_attempts_total",
            "counter",
            "Step attempts since the engine opened.",
            |_, snapshot| snapshot.attempts as f64,
        ),
        (
            "strata_step_failures_total",
            "counter",
            "Step attempts that failed since the engine opened.",
            |_, snapshot| snapshot.attempt_failures as f64,
        ),
    ];
    for (name, kind, help, value) in per_version {
        family(&mut text, name, kind, help, versions, |(info, snapshot)| {
            (labels(&info.key), value(info, snapshot))
        });
    }
    summary(
        &mut text,
        "strata_step_duration_seconds",
        "Step attempt latency (quantiles over the recent window).",
        versions,
        |snapshot| (snapshot.step_latency, snapshot.attempts),
    );
    summary(
        &mut text,
        "strata_instance_duration_seconds",
        "Start-to-finish latency of instances (quantiles over the recent window).",
        versions,
        |snapshot| (snapshot.instance_latency, snapshot.finished()),
    );
    measures(&mut text, versions);
    family(
        &mut text,
        "strata_routing_decisions_total",
        "counter",
        "New instances routed to the version, by reason, since the engine opened.",
        exposition.routing,
        |(key, reason, count)| (format!("{},reason=\"{}\"", labels(key), reason.label()), *count as f64),
    );
    family(
        &mut text,
        "strata_rollout_candidate_share",
        "gauge",
        "The share of new instances a rollout gives its candidate (0 to 1).",
        exposition.rollouts,
        |record| {
            let status = format!("{:?}", record.status).to_lowercase();
            let labels = format!(
                "rollout=\"{}\",workflow=\"{}\",candidate=\"{}\",stable=\"{}\",stage=\"{}\",status=\"{status}\"",
                escape(&record.spec.name),
                escape(&record.spec.workflow),
                record.spec.candidate,
                record.spec.stable,
                record.stage,
            );
            (labels, f64::from(record.candidate_share()) / 10_000.0)
        },
    );
    text
}
