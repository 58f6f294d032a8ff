//! The event stream through the admin API: every engine event as a Server-Sent Event, stamped
//! with when it was sent, or only those about a workflow, a version or of some kinds.

use axum::extract::{Query, State};
use serde_json::Value;

use strata_engine::Engine;

/// Which events a reader of `/v1/events` wants.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct EventQuery {
    /// Only events about this workflow.
    workflow: Option<String>,
    /// Only events about this version (of `workflow`, if given).
    version: Option<String>,
    /// Only events of these types, comma-separated (`instance_finished,version_drained`).
    kind: Option<String>,
}

impl EventQuery {
    /// Whether the event (as JSON) is one the reader wants.
    fn wants(&self, event: &Value) -> bool {
        if let Some(kinds) = &self.kind {
            let kind = event["type"].as_str().unwrap_or_default();
            if !kinds.split(',').any(|wanted| wanted.trim() == kind) {
                return false;
            }
        }
        if self.workflow.is_none() && self.version.is_none() {
            return true;
        }
        versions_named(event).iter().any(|(workflow, version)| {
            self.workflow.as_deref().is_none_or(|wanted| wanted == workflow)
                && self
                    .version
                    .as_deref()
                    .is_none_or(|wanted| version.as_deref() == Some(wanted))
        })
    }
}

/// The workflows (with their versions, where known) an event names: a version key, a move's
/// versions, a rollout's workflow with its candidate and stable, or its name (`workflow@version`).
fn versions_named(event: &Value) -> Vec<(String, Option<String>)> {
    let mut named = Vec::new();
    for field in ["key", "from", "to"] {
        if let (Some(workflow), version) = (event[field]["workflow"].as_str(), event[field]["version"].as_str()) {
            named.push((workflow.to_string(), version.map(str::to_string)));
        }
    }
    if let Some(workflow) = event["workflow"].as_str() {
        named.push((workflow.to_string(), None));
        for field in ["candidate", "stable"] {
            if let Some(version) = event[field].as_str() {
                named.push((workflow.to_string(), Some(version.to_string())));
            }
        }
    }
    if let Some((workflow, version)) = event["name"].as_str().and_then(|name| name.split_once('@')) {
        let version = version.split('~').next().unwrap_or(version);
        named.push((workflow.to_string(), Some(version.to_string())));
    }
    named
}

/// `GET /v1/events`: every event as it happens (or those the filters keep), as Server-Sent
/// Events named by the event's `type`, with the event as JSON and `at_ms`, when it was sent;
/// `lagged` says how many a slow reader missed. Ends at shutdown.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(("workflow" = Option<String>, Query, description = "Only events about this workflow"),
        ("version" = Option<String>, Query, description = "Only events about this version"),
        ("kind" = Option<String>, Query, description = "Only events of these types, comma-separated (instance_finished,version_drained)")),
    responses((status = 200, description = "Server-Sent Events, one per engine event, named by its type (instance_started, version_drained, rollout_rolled_back, ...), the event as JSON with at_ms (ms since the Unix epoch) when it was sent", content_type = "text/event-stream")))]
pub(super) async fn events(
    State(engine): State<Engine>,
    Query(query): Query<EventQuery>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event as Sent, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let state = (engine.subscribe(), engine.stop_signal(), query);
    let stream = futures_util::stream::unfold(state, |(mut receiver, mut stop, query)| async move {
        loop {
            let sent = tokio::select! {
                received = receiver.recv() => match received {
                    Ok(event) => {
                        let mut json = serde_json::to_value(&event).unwrap_or_default();
                        if !query.wants(&json) {
                            continue;
                        }
                        let at_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |elapsed| elapsed.as_millis() as u64);
                        json["at_ms"] = Value::from(at_ms);
                        let name = json["type"].as_str().unwrap_or("event").to_string();
                        Sent::default().event(name).data(json.to_string())
                    }
                    Err(RecvError::Lagged(missed)) => Sent::default().event("lagged").data(missed.to_string()),
                    Err(RecvError::Closed) => return None,
                },
                _ = stop.wait_for(|stopping| *stopping) => return None,
            };
            return Some((Ok(sent), (receiver, stop, query)));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(workflow: Option<&str>, version: Option<&str>, kind: Option<&str>) -> EventQuery {
        EventQuery {
            workflow: workflow.map(str::to_string),
            version: version.map(str::to_string),
            kind: kind.map(str::to_string),
        }
    }

    #[test]
    fn events_are_kept_by_the_workflow_and_version_they_name_and_by_kind() {
        let finished = json!({"type": "instance_finished", "id": 3, "key": {"workflow": "order", "version": "1.0.0"}});
        let moved = json!({"type": "instances_moved", "from": {"workflow": "order", "version": "1.0.0"},
            "to": {"workflow": "order", "version": "2.0.0"}, "count": 2});
        let rolled_back = json!({"type": "rollout_rolled_back", "name": "order@2.0.0~2", "reason": "x"});
        let started = json!({"type": "rollout_started", "name": "order@2.0.0", "workflow": "order",
            "candidate": "2.0.0", "stable": "1.0.0"});
        let config = json!({"type": "config_applied", "source": "strata.toml"});
        assert!(query(None, None, None).wants(&config));
        assert!(!query(Some("order"), None, None).wants(&config), "names no workflow");
        for event in [&finished, &moved, &rolled_back, &started] {
            assert!(query(Some("order"), None, None).wants(event), "{event}");
            assert!(!query(Some("parcel"), None, None).wants(event), "{event}");
        }
        assert!(query(Some("order"), Some("2.0.0"), None).wants(&moved), "its target");
        assert!(!query(Some("order"), Some("2.0.0"), None).wants(&finished));
        assert!(
            query(None, Some("2.0.0"), None).wants(&rolled_back),
            "a rollout's name, past its ~"
        );
        assert!(query(None, Some("1.0.0"), None).wants(&started), "a rollout's stable");
        assert!(query(None, None, Some("instances_moved, instance_finished")).wants(&finished));
        assert!(!query(None, None, Some("instance_started")).wants(&finished));
    }
}
