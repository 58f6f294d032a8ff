//! `strata instances revive WORKFLOW`: failed and cancelled instances taken up again, on their
//! own version or a fixed one — with `--dry-run` the plan (which would be taken up where, and why
//! the others would not), else the revival and what it did.

use strata_admin_model::{ReviveBody, ReviveCheckView, RevivePlanView, ReviveReportView, Whole};

use crate::args::{step_map, ReviveArgs};
use crate::client::{body_json, typed, AdminClient};
use crate::error::CliError;
use crate::moments::now_ms;
use crate::output::Output;
use crate::table;

/// Plans (`--dry-run`) or applies the revival `args` describe, and prints what it found or did.
pub(crate) fn revive(client: &AdminClient, out: &Output, args: ReviveArgs) -> Result<(), CliError> {
    let dry_run = args.dry_run;
    let body = body_json(&ReviveBody {
        steps: step_map(&args.steps)?,
        ended_after_ms: args.since.as_deref().map(|text| moment("--since", text)).transpose()?,
        ended_before_ms: args.until.as_deref().map(|text| moment("--until", text)).transpose()?,
        workflow: args.workflow,
        target: args.target,
        from_version: args.from,
        status: args.status,
        reason_contains: args.reason,
        ids: (!args.ids.is_empty()).then(|| args.ids.into_iter().map(Whole).collect()),
        batch_size: args.batch_size.map(Whole),
    });
    if dry_run {
        let answer = client.post("/v1/revivals/plan", Some(&body))?;
        let plan: RevivePlanView = typed(&answer, "a revival plan")?;
        out.show(&answer, || {
            format!(
                "{}\n{} of {} can be revived (dry run: nothing changed)",
                table::render(HEADERS, &rows(&plan.checks)),
                plan.revivable,
                plan.checks.len()
            )
        });
        return Ok(());
    }
    let answer = client.post("/v1/revivals", Some(&body))?;
    let report: ReviveReportView = typed(&answer, "a revival report")?;
    out.show(&answer, || {
        let mut text = format!("{} instance(s) revived", report.revived.len());
        if !report.refused.is_empty() {
            text.push_str(&format!(
                ", {} refused:\n{}",
                report.refused.len(),
                table::render(HEADERS, &rows(&report.refused))
            ));
        }
        for version in &report.undrained {
            text.push_str(&format!(
                "\n{version} is draining again: revived instances live on it, keep its code until they finish"
            ));
        }
        text
    });
    Ok(())
}

const HEADERS: &[&str] = &["ID", "ENDED ON", "AS", "STEP", "VERDICT"];

fn rows(checks: &[ReviveCheckView]) -> Vec<Vec<String>> {
    checks
        .iter()
        .map(|check| {
            let ended = match &check.failure {
                Some(reason) => format!("{}: {reason}", check.status),
                None => check.status.clone(),
            };
            vec![
                check.id.to_string(),
                check.from.clone(),
                ended,
                check.step.clone(),
                match &check.resumes_at {
                    Some(step) => format!("revive on {} at {step}", check.target),
                    None => format!("refused: {}", check.refused.as_deref().unwrap_or("-")),
                },
            ]
        })
        .collect()
}

/// A moment given as a time ago (`90s`, `30m`, `2h`, `1d`) or ms since the Unix epoch, in ms
/// since the Unix epoch.
fn moment(option: &str, text: &str) -> Result<Whole, CliError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Whole(ms));
    }
    let ago = strata_config::parse_duration(text).map_err(|reason| {
        CliError::Input(format!(
            "{option} '{text}': {reason}; write a time ago such as 90s, 30m, 2h or 1d, or ms since the Unix epoch"
        ))
    })?;
    let ago_ms = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
    Ok(Whole(now_ms().saturating_sub(ago_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_is_a_time_ago_or_epoch_milliseconds() {
        assert_eq!(moment("--since", "1796572759030").unwrap(), Whole(1_796_572_759_030));
        let two_hours_ago = moment("--since", "2h").unwrap().0;
        let expected = now_ms() - 7_200_000;
        assert!(
            two_hours_ago.abs_diff(expected) < 5_000,
            "{two_hours_ago} vs {expected}"
        );
        for wrong in ["2w", "h", "", "-3m", "soon", "3é"] {
            let error = moment("--until", wrong).unwrap_err().to_string();
            assert!(error.contains("--until") && error.contains("30m"), "{wrong}: {error}");
        }
    }
}
