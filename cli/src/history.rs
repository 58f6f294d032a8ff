//! `strata instances history ID`: what happened to one instance, as a table with times since its
//! start and each attempt's duration (`--json`: the API's pages), and with `--follow` the entries
//! still to come, until the instance ends.

use serde_json::Value;

use strata_admin_model::{
    AttemptOutcomeView, HistoryEntryView, HistoryEventView, HistoryPageView, InstanceDetail, SignalNoteView,
    WokenByView,
};

use crate::client::{typed, AdminClient, POLL};
use crate::error::CliError;
use crate::moments::span;
use crate::output::{print_line, Output};
use crate::table;

/// Entries per request.
const PAGE: usize = 1_000;

/// Statuses after which nothing more happens to an instance.
const FINISHED: [&str; 3] = ["completed", "failed", "cancelled"];

/// Prints the history of instance `id` (its newest `last` entries, if given), then with `follow`
/// each new entry until the instance has finished.
pub(crate) fn history(
    client: &AdminClient,
    out: &Output,
    id: u64,
    last: Option<usize>,
    follow: bool,
) -> Result<(), CliError> {
    let (mut page, answer) = match last {
        Some(last) => newest(client, id, last)?,
        None => everything_after(client, id, None)?,
    };
    let started_at = started_at(client, id, &page)?;
    out.show(&answer, || {
        let mut text = format!(
            "instance {id}: {} entries kept{}\n",
            page.kept,
            match page.folded {
                0 => String::new(),
                folded => format!(", {folded} older ones folded away"),
            }
        );
        text.push_str(&table::render(
            &["#", "AT", "WHAT", "TOOK", "DETAIL"],
            &page
                .entries
                .iter()
                .map(|entry| row(entry, started_at))
                .collect::<Vec<_>>(),
        ));
        text
    });
    if !follow {
        return Ok(());
    }
    loop {
        let seen = page.entries.last().map(|entry| entry.seq);
        let finished = is_finished(client, id)?;
        let (newer, _) = everything_after(client, id, seen)?;
        for entry in &newer.entries {
            if out.json {
                print_line(&serde_json::to_string(entry).unwrap_or_default());
            } else {
                print_line(&table::render_row(&row(entry, started_at)));
            }
        }
        if finished {
            return Ok(());
        }
        page.entries.extend(newer.entries);
        std::thread::sleep(POLL);
    }
}

/// Every entry after `from`, oldest first, read a page at a time, as one page and its JSON.
fn everything_after(client: &AdminClient, id: u64, from: Option<u64>) -> Result<(HistoryPageView, Value), CliError> {
    let mut whole: Option<HistoryPageView> = None;
    let mut from = from;
    loop {
        let mut path = format!("/v1/instances/{id}/history?limit={PAGE}");
        if let Some(from) = from {
            path.push_str(&format!("&from={from}"));
        }
        let page: HistoryPageView = typed(&client.get(&path)?, "a page of an instance's history")?;
        from = page.next;
        let whole = match &mut whole {
            Some(whole) => {
                whole.entries.extend(page.entries);
                whole.next = None;
                whole
            }
            None => whole.insert(page),
        };
        if from.is_none() {
            let answer = serde_json::to_value(&*whole).unwrap_or_default();
            return Ok((whole.clone(), answer));
        }
    }
}

/// The newest `last` entries, oldest of them first.
fn newest(client: &AdminClient, id: u64, last: usize) -> Result<(HistoryPageView, Value), CliError> {
    let last = last.clamp(1, PAGE);
    let answer = client.get(&format!("/v1/instances/{id}/history?order=newest&limit={last}"))?;
    let mut page: HistoryPageView = typed(&answer, "a page of an instance's history")?;
    page.entries.reverse();
    page.next = None;
    let answer = serde_json::to_value(&page).unwrap_or_default();
    Ok((page, answer))
}

/// When the instance started: its first entry's time, else its record's.
fn started_at(client: &AdminClient, id: u64, page: &HistoryPageView) -> Result<u64, CliError> {
    if let Some(at) = page
        .entries
        .first()
        .filter(|entry| entry.seq == 0)
        .and_then(|entry| entry.at_ms)
    {
        return Ok(at);
    }
    let instance: InstanceDetail = typed(&client.get(&format!("/v1/instances/{id}"))?, "an instance")?;
    Ok(instance.summary.started_at_ms)
}

fn is_finished(client: &AdminClient, id: u64) -> Result<bool, CliError> {
    let instance: InstanceDetail = typed(&client.get(&format!("/v1/instances/{id}"))?, "an instance")?;
    Ok(FINISHED.contains(&instance.summary.status.as_str()))
}

/// One entry as a row: its number, when (after the start), what, how long, and the rest.
fn row(entry: &HistoryEntryView, started_at: u64) -> Vec<String> {
    let at = entry.at_ms.map_or_else(
        || "-".to_string(),
        |at| format!("+{}", span(at.saturating_sub(started_at))),
    );
    let (what, took, detail) = match &entry.event {
        HistoryEventView::Started {
            version,
            routed_by,
            routing_key,
            input_bytes,
            schedule,
        } => {
            let mut detail = format!("on {version} (routed by {routed_by}), input {input_bytes} B");
            if let Some(key) = routing_key {
                detail.push_str(&format!(", routing key {key}"));
            }
            if let Some(schedule) = schedule {
                detail.push_str(&format!(", by schedule {schedule}"));
            }
            ("started".to_string(), String::new(), detail)
        }
        HistoryEventView::Step {
            step,
            attempt,
            duration_ms,
            woken_by,
            migrated_from_schema,
            outcome,
            ..
        } => {
            let mut detail = format!("{} -> {}", woken_text(woken_by), outcome_text(outcome, started_at));
            if let Some(schema) = migrated_from_schema {
                detail.push_str(&format!("; state migrated from schema {schema}"));
            }
            let what = match attempt {
                1 => format!("step {step}"),
                attempt => format!("step {step} (attempt {attempt})"),
            };
            (what, span(*duration_ms), detail)
        }
        HistoryEventView::Claimed { worker } => (
            "claimed".to_string(),
            String::new(),
            format!("worker {worker} runs it from here"),
        ),
        HistoryEventView::Cancelled => ("cancelled".to_string(), String::new(), String::new()),
        HistoryEventView::Migrated { from_schema, to_schema } => (
            "state migrated".to_string(),
            String::new(),
            format!("schema {from_schema} -> {to_schema}, by a background migration"),
        ),
        HistoryEventView::Moved { moved } => (
            "moved".to_string(),
            String::new(),
            format!(
                "{} -> {} ({}), step {} -> {}, schema {} -> {}",
                moved.from, moved.to, moved.cause, moved.from_step, moved.to_step, moved.from_schema, moved.to_schema
            ),
        ),
        HistoryEventView::Quarantined { reason } => ("quarantined".to_string(), String::new(), reason.clone()),
        HistoryEventView::Revived {
            from,
            to,
            from_step,
            to_step,
            from_schema,
            to_schema,
            failure,
        } => (
            "revived".to_string(),
            String::new(),
            format!(
                "{from} -> {to}, step {from_step} -> {to_step}, schema {from_schema} -> {to_schema}; it had {}",
                match failure {
                    Some(reason) => format!("failed: {reason}"),
                    None => "been cancelled".to_string(),
                }
            ),
        ),
        HistoryEventView::BeginFailed { reason } => ("could not begin".to_string(), String::new(), reason.clone()),
        HistoryEventView::SignalsDropped { signals } => (
            "signals dropped".to_string(),
            String::new(),
            format!("never consumed: {}", signal_list(signals)),
        ),
        HistoryEventView::Terminated { reason, abandoned_step } => (
            "terminated".to_string(),
            String::new(),
            match abandoned_step {
                Some(step) => format!("{reason}; the running attempt of step {step} was abandoned"),
                None => reason.clone(),
            },
        ),
        HistoryEventView::Unreadable { reason } => ("unreadable entry".to_string(), String::new(), reason.clone()),
        HistoryEventView::Other => (
            "unknown entry".to_string(),
            String::new(),
            "written by a newer Strata; use a strata CLI of the engine's release".to_string(),
        ),
    };
    vec![entry.seq.to_string(), at, what, took, detail]
}

/// Signals as `'name' #seq (N B)`, comma-separated.
fn signal_list(signals: &[SignalNoteView]) -> String {
    signals
        .iter()
        .map(|signal| format!("'{}' #{} ({} B)", signal.name, signal.seq, signal.bytes))
        .collect::<Vec<_>>()
        .join(", ")
}

fn woken_text(woken_by: &WokenByView) -> String {
    match woken_by {
        WokenByView::Start => "the start".to_string(),
        WokenByView::Previous => "the previous step".to_string(),
        WokenByView::Timer => "its timer".to_string(),
        WokenByView::Signal { name, seq, bytes } => format!("signal '{name}' #{seq} ({bytes} B)"),
        WokenByView::Timeout { name } => format!("no signal '{name}' in time"),
        WokenByView::Retry => "a retry".to_string(),
        WokenByView::Revival => "its revival".to_string(),
        WokenByView::Other => "something newer".to_string(),
    }
}

fn outcome_text(outcome: &AttemptOutcomeView, started_at: u64) -> String {
    let at = |ms: u64| format!("+{}", span(ms.saturating_sub(started_at)));
    match outcome {
        AttemptOutcomeView::Next { step } => format!("step {step}"),
        AttemptOutcomeView::Sleep { until_ms, step } => format!("sleeps until {}, then step {step}", at(*until_ms)),
        AttemptOutcomeView::AwaitSignal {
            signal,
            timeout_at_ms,
            step,
        } => match timeout_at_ms {
            Some(timeout) => format!("waits for signal '{signal}' until {}, then step {step}", at(*timeout)),
            None => format!("waits for signal '{signal}', then step {step}"),
        },
        AttemptOutcomeView::Completed { output_bytes } => format!("completed ({output_bytes} B output)"),
        AttemptOutcomeView::Failed { reason } => format!("FAILED: {reason}"),
        AttemptOutcomeView::Retrying { error, at_ms } => format!("error: {error}; retry at {}", at(*at_ms)),
        AttemptOutcomeView::Quarantined { reason } => format!("QUARANTINED: {reason}"),
        AttemptOutcomeView::Other => "an outcome a newer Strata wrote".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_attempt_reads_with_its_error_duration_and_when_it_retries() {
        let entry = HistoryEntryView {
            seq: 2,
            at_ms: Some(10_040),
            event: HistoryEventView::Step {
                step: "pack".to_string(),
                attempt: 2,
                began_ms: 10_000,
                duration_ms: 40,
                woken_by: WokenByView::Retry,
                migrated_from_schema: None,
                outcome: AttemptOutcomeView::Retrying {
                    error: "printer jam".to_string(),
                    at_ms: 11_040,
                },
            },
        };
        assert_eq!(
            row(&entry, 10_000),
            [
                "2",
                "+40ms",
                "step pack (attempt 2)",
                "40ms",
                "a retry -> error: printer jam; retry at +1.0s"
            ]
        );
    }
}
