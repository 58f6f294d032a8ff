"use strict";
const state = { token: sessionStorage.getItem("strata-token") || "" };

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(path, method, body) {
  const options = { headers: headers() };
  if (method) {
    options.method = method;
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
  }
  const response = await fetch(path, options);
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    const message = answer && answer.error ? answer.error : response.status + " " + response.statusText;
    throw new Error(message);
  }
  return answer;
}

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null) continue;
    // Style through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/// A difference with its sign: +1.4%, -1.4%, 0.0%.
function signedPercent(value) {
  return (value > 0 ? "+" : "") + percent(value);
}

function ago(ms) {
  if (!ms) return "-";
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return seconds + "s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h ago";
  return Math.floor(seconds / 86400) + "d ago";
}

/// What the problem line shows now comes from: a refresh of the page ("load") or an operator's
/// action ("action"). A refresh that succeeds clears only its own kind, so an action's refusal
/// stays until the next action, not until the next refresh (which every action triggers).
let problemFrom = "load";
function problem(error, from = "load") {
  if (!error && from === "load" && problemFrom === "action") return;
  problemFrom = from;
  document.getElementById("problem").textContent = error
    ? error.message + (/token/.test(error.message) ? " — type the token above." : "")
    : "";
}

function number(value) {
  return element("td", { class: "number" }, value);
}

/// A button that posts `path` (a change, with the operator's token) and refreshes the page.
function actionButton(label, path, name) {
  return element("button", { type: "button", "data-post": path, "data-action": name }, label);
}

/// What an operator may do to a version now: drain it, or undo its drain while its code is here.
function versionActions(workflow, version) {
  const path = "/v1/versions/" + encodeURIComponent(workflow) + "/" + encodeURIComponent(version.version) + "/";
  if (version.status === "active") return actionButton("Drain", path + "drain", "drain");
  if ((version.status === "draining" || version.status === "drained") && version.registered) {
    return actionButton("Undo drain", path + "activate", "activate");
  }
  return null;
}

/// What an operator may do to a rollout now: pause or resume it, roll it back.
function rolloutActions(rollout) {
  const path = "/v1/rollouts/" + encodeURIComponent(rollout.name) + "/";
  const buttons = [];
  if (rollout.status === "running") buttons.push(actionButton("Pause", path + "pause", "pause"));
  if (rollout.status === "paused") buttons.push(actionButton("Resume", path + "resume", "resume"));
  if (rollout.status === "running" || rollout.status === "paused") buttons.push(actionButton("Roll back", path + "rollback", "rollback"));
  return buttons.length ? element("div", { class: "controls" }, buttons) : null;
}

/// Posts what a clicked action button names; a refusal (a read-only token, a rule of the
/// engine) shows where problems show.
async function onAction(event) {
  const path = event.target.getAttribute && event.target.getAttribute("data-post");
  if (!path) return;
  const button = event.target;
  button.disabled = true;
  try {
    await api(path, "POST");
    problem(null, "action");
  } catch (error) {
    // Refused: nothing changed, so the button may be pressed again (with another token, say).
    problem(error, "action");
    button.disabled = false;
  }
  soon(ALL);
}
document.getElementById("versions-body").addEventListener("click", onAction);
document.getElementById("rollouts-body").addEventListener("click", onAction);

async function showVersions() {
  const versions = await api("/v1/versions");
  const byWorkflow = new Map();
  for (const version of versions) {
    if (!byWorkflow.has(version.workflow)) byWorkflow.set(version.workflow, []);
    byWorkflow.get(version.workflow).push(version);
  }
  const body = document.getElementById("versions-body");
  body.replaceChildren();
  if (byWorkflow.size === 0) body.append("No workflow version is known yet.");
  for (const [workflow, listed] of byWorkflow) {
    const rows = listed.map((version) => {
      const noWorker = version.live > 0 && version.workers.length === 0;
      return element("tr", { "data-version": workflow + "@" + version.version },
        element("td", {}, version.version),
        element("td", {}, element("span", { class: "status " + version.status, "data-field": "status" }, version.status)),
        element("td", { class: "number", "data-field": "live" }, version.live),
        number(version.started), number(version.completed), number(version.failed), number(version.cancelled),
        element("td", {}, version.oldest_live ? "#" + version.oldest_live.id + " (" + ago(version.oldest_live.started_at_ms) + ")" : "-"),
        element("td", { class: noWorker ? "warning" : "" },
          noWorker ? "none: its instances wait" : version.workers.length),
        element("td", { "data-field": "safe_to_remove", class: version.safe_to_remove ? "yes" : "" },
          version.safe_to_remove ? "yes" : "no"),
        element("td", { "data-field": "measures" }, measuresText(version.measures || [])),
        element("td", {}, versionActions(workflow, version)));
    });
    body.append(element("h3", {}, workflow),
      element("table", { "data-workflow": workflow },
        element("thead", {}, element("tr", {},
          ["version", "status", "live", "started", "completed", "failed", "cancelled", "oldest live", "workers", "safe to remove", "measures", ""]
            .map((name) => element("th", {}, name)))),
        element("tbody", {}, rows)));
  }
}

/// A version's measures over its finished instances: `cost 0.75 per instance · quality 0.9 mean`.
function measuresText(measures) {
  if (measures.length === 0) return "-";
  return measures.map((measure) => measure.measure + " " + (measure.figure === null ? "-" : trimmed(measure.figure))
    + (measure.kind === "summed" ? " per instance" : measure.kind === "averaged" ? " mean" : " (sum " + trimmed(measure.sum) + ")")).join(" · ");
}

const GATES = {
  max_error_rate_increase: "error rate increase",
  max_latency_multiplier: "p95 latency multiplier",
  min_success_rate: "success rate",
  max_consecutive_failures: "consecutive failures",
  max_shadow_mismatch: "shadow mismatch",
};

function errorRate(figures) {
  const decided = figures.completed + figures.failed;
  return decided > 0 ? figures.failed / decided : null;
}

function percent(value) {
  return value === null || value === undefined ? "-" : (value * 100).toFixed(1) + "%";
}

/// Each gate's figure now against its threshold: [gate, threshold text, figure text, holds].
function gateRows(rollout, rolledBack) {
  const rows = [];
  // While active, the figures now; once rolled back, those the gates compared then.
  const figures = rollout.figures || (rolledBack ? { candidate: rolledBack.candidate, stable: rolledBack.stable } : null);
  for (const [gate, label] of Object.entries(GATES)) {
    const threshold = rollout.gates[gate];
    if (threshold === null || threshold === undefined) continue;
    let figure = "-";
    let holds = null;
    if (figures) {
      const candidate = figures.candidate;
      const stable = figures.stable;
      if (gate === "max_error_rate_increase") {
        const [c, s] = [errorRate(candidate), errorRate(stable)];
        if (c !== null && s !== null) { figure = signedPercent(c - s) + " (" + percent(c) + " vs " + percent(s) + ")"; holds = c - s <= threshold; }
      } else if (gate === "max_latency_multiplier") {
        const [c, s] = [candidate.p95_step_micros, stable.p95_step_micros];
        if (c && s) { figure = (c / s).toFixed(2) + "× (" + c + " µs vs " + s + " µs)"; holds = c / s <= threshold; }
      } else if (gate === "min_success_rate") {
        const c = errorRate(candidate);
        if (c !== null) { figure = percent(1 - c); holds = 1 - c >= threshold; }
      } else if (gate === "max_consecutive_failures") {
        figure = String(candidate.consecutive_failures); holds = candidate.consecutive_failures <= threshold;
      } else if (gate === "max_shadow_mismatch") {
        const pairs = candidate.pairs || 0;
        if (pairs > 0) { const rate = candidate.mismatches / pairs; figure = percent(rate) + " (" + candidate.mismatches + " of " + pairs + " pairs)"; holds = rate <= threshold; }
      }
    }
    const limit = gate === "max_error_rate_increase" ? "≤ +" + percent(threshold)
      : gate === "min_success_rate" ? "≥ " + percent(threshold)
      : gate === "max_shadow_mismatch" ? "≤ " + percent(threshold)
      : gate === "max_latency_multiplier" ? "≤ " + threshold + "×" : "≤ " + threshold;
    rows.push([gate, label, limit, figure, holds]);
  }
  // Gates on measures: one row per bound, named as the rollback names its gate.
  for (const measureGate of rollout.gates.measures || []) {
    const name = measureGate.measure;
    const ours = figures && figures.candidate.measures ? figures.candidate.measures[name] : null;
    const theirs = figures && figures.stable.measures ? figures.stable.measures[name] : null;
    const sampled = (figure) => figure && figure.value !== null && figure.sample >= measureGate.min_sample ? figure.value : null;
    const shown = (figure) => figure && figure.value !== null ? trimmed(figure.value) + " (sample " + figure.sample + ")" : "no figure yet";
    const bounds = [
      ["max_increase", measureGate.max_increase, "≤ stable +" + percent(measureGate.max_increase)],
      ["min", measureGate.min, "≥ " + measureGate.min],
      ["max", measureGate.max, "≤ " + measureGate.max],
    ];
    for (const [bound, threshold, limit] of bounds) {
      if (threshold === null || threshold === undefined) continue;
      const [c, s] = [sampled(ours), sampled(theirs)];
      let holds = null;
      let figure = shown(ours);
      if (bound === "max_increase") {
        figure += " vs stable " + shown(theirs);
        if (c !== null && s !== null) holds = c <= s + Math.abs(s) * threshold;
      } else if (c !== null) {
        holds = bound === "min" ? c >= threshold : c <= threshold;
      }
      rows.push(["measures[" + name + "]." + bound, name + " (" + bound.replace("_", " ") + ")", limit + " · sample " + measureGate.min_sample, figure, holds]);
    }
  }
  return rows;
}

/// A measure's figure with up to six decimals, without trailing zeros.
function trimmed(value) {
  return String(Number(value.toFixed(6)));
}

/// A small line chart of one figure per version over the metrics window.
function chart(title, series, unit) {
  const width = 300, height = 90, pad = 4;
  const values = series.flatMap((line) => line.points.map((point) => point.value).filter((v) => v !== null));
  const top = Math.max(unit === "%" ? 0.05 : unit === "" ? 0 : 1, ...values) || 1;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  for (const line of series) {
    const count = line.points.length;
    let path = "";
    line.points.forEach((point, index) => {
      if (point.value === null) return;
      const x = pad + (index / Math.max(1, count - 1)) * (width - 2 * pad);
      const y = height - pad - (point.value / top) * (height - 2 * pad);
      path += (path ? " L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      dot.setAttribute("cx", x.toFixed(1));
      dot.setAttribute("cy", y.toFixed(1));
      dot.setAttribute("r", "2.5");
      dot.setAttribute("fill", line.color);
      svg.append(dot);
    });
    const drawn = document.createElementNS("http://www.w3.org/2000/svg", "path");
    drawn.setAttribute("d", path || "M0 0");
    drawn.setAttribute("fill", "none");
    drawn.setAttribute("stroke", line.color);
    drawn.setAttribute("stroke-width", "2");
    drawn.setAttribute("data-series", line.name);
    svg.append(drawn);
  }
  const peak = unit === "%" ? percent(top) : unit === "" ? trimmed(top) : Math.round(top) + " " + unit;
  return element("div", { class: "chart" },
    element("div", { class: "title" }, title + " (top " + peak + ", last 320 s)"), svg,
    element("div", { class: "legend" }, series.map((line) => element("span", { style: { color: line.color } }, "— " + line.name))));
}

async function rolloutCharts(rollout) {
  const lines = [];
  const versionPath = (version) => "/v1/versions/" + encodeURIComponent(rollout.workflow) + "/" + encodeURIComponent(version);
  for (const [name, version, color] of [["candidate " + rollout.candidate, rollout.candidate, "#2f5bd3"], ["stable " + rollout.stable, rollout.stable, "#8a93a6"]]) {
    const series = await api(versionPath(version) + "/metrics");
    lines.push({ name, color, points: series.points });
  }
  // A chart per gated measure: per finished instance (summed) or the mean value (averaged).
  const gated = (rollout.gates.measures || []).map((gate) => gate.measure);
  const kinds = {};
  if (gated.length) {
    for (const measure of (await api(versionPath(rollout.candidate))).measures || []) kinds[measure.measure] = measure.kind;
  }
  const measureCharts = gated.map((measure) => {
    const summed = kinds[measure] === "summed";
    const value = (point) => {
      const total = point.measures ? point.measures[measure] : undefined;
      if (!total) return null;
      const over = summed ? point.finished : total.count;
      return over > 0 ? total.sum / over : null;
    };
    return chart(measure + (summed ? " per instance" : " (mean)"), lines.map((line) => ({ ...line, points: line.points.map((point) => ({ value: value(point) })) })), "");
  });
  return element("div", { class: "charts" },
    chart("error rate", lines.map((line) => ({ ...line, points: line.points.map((point) => ({ value: point.error_rate })) })), "%"),
    chart("p95 step latency", lines.map((line) => ({ ...line, points: line.points.map((point) => ({ value: point.p95_step_micros === null ? null : point.p95_step_micros })) })), "µs"),
    ...measureCharts);
}

/// A rollout's shadow pairs, mismatches first (at most 20): each real instance and its shadow,
/// linked to their pages, with what differs.
async function shadowPairs(rollout) {
  const pairs = await api("/v1/rollouts/" + encodeURIComponent(rollout.name) + "/shadows");
  if (pairs.length === 0) return element("div", { "data-field": "shadow-pairs" }, "No shadow pair compared yet.");
  const differ = pairs.filter((pair) => !pair.matched).length;
  const link = (id) => element("a", { href: "#/instances/" + id }, "#" + id);
  const rows = pairs.slice(0, 20).map((pair) => element("tr", { "data-pair": pair.real, class: pair.matched ? "" : "warning" },
    element("td", {}, link(pair.real)), element("td", {}, link(pair.shadow)),
    element("td", {}, pair.matched ? "match" : "differs"),
    element("td", {}, duration(pair.real_took_ms) + " / " + duration(pair.shadow_took_ms)),
    element("td", { class: "detail" }, pair.diff || "")));
  return element("div", { "data-field": "shadow-pairs" },
    element("div", {}, differ + " of " + pairs.length + " shadow pairs differ"),
    element("table", {}, element("thead", {}, element("tr", {}, ["real", "shadow", "", "took (stable / candidate)", "what differs"].map((name) => element("th", {}, name)))),
      element("tbody", {}, rows)));
}

async function showRollouts() {
  const rollouts = await api("/v1/rollouts");
  const body = document.getElementById("rollouts-body");
  const blocks = [];
  for (const rollout of rollouts) {
    const stages = rollout.stages.length;
    const rolledBack = [...rollout.history].reverse().find((entry) => entry.kind === "rolled_back");
    const fired = rolledBack ? rolledBack.gate : null;
    const gates = gateRows(rollout, rolledBack).map(([gate, label, limit, figure, holds]) =>
      element("tr", { "data-gate": gate, class: gate === fired ? "warning" : "" },
        element("td", {}, label), element("td", {}, limit), element("td", {}, figure),
        element("td", {}, gate === fired ? "fired" : holds === null ? "no figures yet" : holds ? "holds" : "over the threshold")));
    blocks.push(element("div", { "data-rollout": rollout.name },
      element("h3", {}, rollout.name + " ", element("span", { class: "status " + rollout.status, "data-field": "status" }, rollout.status.replace("_", " "))),
      element("div", {}, "stage " + (rollout.stage + 1) + " of " + stages
        + (rollout.shadow_percent > 0 ? " · shadow stage: " + rollout.shadow_percent + "% of the stable's starts run the candidate too, unseen" : "")
        + " · candidate share " + rollout.candidate_percent + "% ",
        element("span", { class: "bar" }, element("span", { style: { width: rollout.candidate_percent + "%" } })),
        " · against " + rollout.stable),
      rolloutActions(rollout),
      rolledBack ? element("div", { class: "gate-fired", "data-field": "rolled-back" },
        "Rolled back by " + (fired ? (GATES[fired] || fired) + " gate" : "an operator") + ": " + rolledBack.reason) : null,
      gates.length ? element("table", {}, element("thead", {}, element("tr", {}, ["gate", "threshold", rollout.figures ? "figure now" : "figure when it ended", ""].map((name) => element("th", {}, name)))), element("tbody", {}, gates)) : null,
      await rolloutCharts(rollout),
      rollout.stages.some((stage) => stage.shadow) ? await shadowPairs(rollout) : null));
  }
  body.replaceChildren(...(blocks.length ? blocks : ["No rollout yet."]));
}

function diffBlock(lines) {
  return element("pre", { class: "diff" }, lines.map((line) =>
    element("div", { class: line.startsWith("+") ? "added" : line.startsWith("-") ? "removed" : "" }, line)));
}

async function showConfig() {
  const history = await api("/v1/config/history");
  const body = document.getElementById("config-body");
  if (history.length === 0) {
    body.replaceChildren("No config applied yet.");
    return;
  }
  const current = history[history.length - 1];
  body.replaceChildren(
    element("div", { "data-field": "generation" }, "Generation " + current.generation + " in force, from " + current.source + ", applied " + ago(current.applied_at_ms)),
    ...[...history].reverse().map((generation) => element("details", { "data-generation": generation.generation, open: generation === current ? "" : null },
      element("summary", {}, "generation " + generation.generation + " · " + generation.source + " · " + ago(generation.applied_at_ms) + " · " + generation.diff.length + " line(s) changed"),
      diffBlock(generation.diff))));
}

/// The instance listing's pages: the cursor of each page shown so far (the first has none).
const pages = { cursors: [null], at: 0 };

async function search(event) {
  if (event) {
    event.preventDefault();
    pages.cursors = [null];
    pages.at = 0;
  }
  const body = document.getElementById("instances-body");
  const id = document.getElementById("search-id").value.trim();
  if (id) {
    location.hash = "#/instances/" + encodeURIComponent(id);
    return;
  }
  try {
    const query = new URLSearchParams({ limit: "50", order: document.getElementById("search-order").value });
    for (const field of ["workflow", "version", "status"]) {
      const value = document.getElementById("search-" + field).value.trim();
      if (value) query.set(field, value);
    }
    const cursor = pages.cursors[pages.at];
    if (cursor !== null) query.set("after", cursor);
    const page = await api("/v1/instances?" + query);
    const rows = page.instances.map((instance) => element("tr", { "data-instance": instance.id },
      element("td", {}, element("a", { href: "#/instances/" + instance.id }, "#" + instance.id)),
      element("td", {}, instance.workflow), element("td", {}, instance.version), element("td", {}, instance.status),
      element("td", {}, instance.step), element("td", {}, ago(instance.started_at_ms)), element("td", {}, ago(instance.updated_at_ms)),
      element("td", { class: "reason", "data-field": "reason" }, instance.reason || "")));
    body.replaceChildren(rows.length ? element("table", {},
      element("thead", {}, element("tr", {}, ["id", "workflow", "version", "status", "step", "started", "updated", "failure or error"].map((name) => element("th", {}, name)))),
      element("tbody", {}, rows)) : "No instance matches.",
      element("p", { class: "hint", "data-field": "page" }, "page " + (pages.at + 1) + (page.next ? "" : " (the last)")));
    if (page.next) pages.cursors[pages.at + 1] = page.next;
    document.getElementById("page-next").hidden = !page.next;
    document.getElementById("page-previous").hidden = pages.at === 0;
  } catch (error) {
    body.replaceChildren(element("span", { class: "error" }, error.message));
  }
}

document.getElementById("page-next").addEventListener("click", () => { pages.at += 1; search(); });
document.getElementById("page-previous").addEventListener("click", () => { pages.at = Math.max(0, pages.at - 1); search(); });

/// Milliseconds as a short duration: 850 ms, 3.2 s, 4m 10s, 2h 5m.
function duration(ms) {
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 3600000) return Math.floor(ms / 60000) + "m " + Math.round((ms % 60000) / 1000) + "s";
  return Math.floor(ms / 3600000) + "h " + Math.round((ms % 3600000) / 60000) + "m";
}

/// What woke a step, for people.
/// Signals as 'name' #seq (N B), comma-separated.
function signalList(signals) {
  return signals.map((signal) => "'" + signal.name + "' #" + signal.seq + " (" + signal.bytes + " B)").join(", ");
}

function wokenText(woken) {
  switch (woken.kind) {
    case "start": return "the start";
    case "previous": return "the previous step";
    case "timer": return "its timer";
    case "signal": return "signal '" + woken.name + "' #" + woken.seq + " (" + woken.bytes + " B)";
    case "timeout": return "no signal '" + woken.name + "' in time";
    case "retry": return "a retry";
    case "revival": return "its revival";
    default: return "something newer";
  }
}

/// How an attempt ended, for people.
function outcomeText(outcome) {
  switch (outcome.kind) {
    case "next": return "went on to " + outcome.step;
    case "sleep": return "sleeps until " + new Date(outcome.until_ms).toISOString() + ", then " + outcome.step;
    case "await_signal": return "waits for signal '" + outcome.signal + "', then " + outcome.step;
    case "completed": return "completed (" + outcome.output_bytes + " B of output)";
    case "failed": return "failed the instance: " + outcome.reason;
    case "retrying": return "error: " + outcome.error + " (retried " + new Date(outcome.at_ms).toISOString() + ")";
    case "quarantined": return "quarantined: " + outcome.reason;
    default: return "an outcome this page does not know";
  }
}

/// One history entry as [what, detail, time it began (ms), how long (ms) or null].
function describeEntry(entry) {
  const event = entry.event;
  switch (event.kind) {
    case "started": return ["started", "on " + event.version + " (routed by " + event.routed_by + ")" + (event.routing_key ? ", key " + event.routing_key : ""), entry.at_ms, null];
    case "step": return ["step " + event.step + (event.attempt > 1 ? " (attempt " + event.attempt + ")" : ""),
      "woken by " + wokenText(event.woken_by) + "; " + outcomeText(event.outcome), event.began_ms, event.duration_ms];
    case "claimed": return ["claimed", "worker " + event.worker + " runs it from here", entry.at_ms, null];
    case "cancelled": return ["cancelled", "", entry.at_ms, null];
    case "migrated": return ["state migrated", "schema " + event.from_schema + " → " + event.to_schema, entry.at_ms, null];
    case "moved": return ["moved", event.moved.from + " → " + event.moved.to + " (" + event.moved.cause + "), step " + event.moved.from_step + " → " + event.moved.to_step, entry.at_ms, null];
    case "quarantined": return ["quarantined", event.reason, entry.at_ms, null];
    case "revived": return ["revived", event.from + " → " + event.to + ", step " + event.from_step + " → " + event.to_step + "; it had " + (event.failure ? "failed: " + event.failure : "been cancelled"), entry.at_ms, null];
    case "begin_failed": return ["could not begin", event.reason, entry.at_ms, null];
    case "signals_dropped": return ["signals dropped", "never consumed: " + signalList(event.signals), entry.at_ms, null];
    case "terminated": return ["terminated", event.reason + (event.abandoned_step ? "; the running attempt of step " + event.abandoned_step + " was abandoned" : ""), entry.at_ms, null];
    case "unreadable": return ["unreadable entry", event.reason, entry.at_ms, null];
    default: return ["unknown entry", "written by a newer Strata", entry.at_ms, null];
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svgElement(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/// The timeline: one row per entry, steps as bars from when they began for as long as they
/// took, everything else as a marker, on one time axis from the start to the newest entry.
function timeline(entries, endMs) {
  const described = entries.filter((entry) => entry.at_ms !== null).map((entry) => [entry, describeEntry(entry)]);
  if (described.length === 0) return element("p", {}, "No entry to draw.");
  const start = described[0][1][2];
  const end = Math.max(endMs, ...described.map(([, [, , began, took]]) => began + (took || 0)), start + 1);
  const label = 190, width = 760, row = 18, height = described.length * row + 24;
  const x = (ms) => label + ((ms - start) / (end - start)) * (width - label - 10);
  const svg = svgElement("svg", { width, height, role: "img", "aria-label": "the instance's timeline" });
  svg.append(svgElement("line", { class: "axis", x1: label, y1: height - 18, x2: width - 10, y2: height - 18 }));
  svg.append(svgElement("text", { x: label, y: height - 4 }, "0"));
  svg.append(svgElement("text", { x: width - 90, y: height - 4 }, "+" + duration(end - start)));
  described.forEach(([entry, [what, detail, began, took]], index) => {
    const y = index * row + 4;
    svg.append(svgElement("text", { x: 0, y: y + 11 }, what.length > 28 ? what.slice(0, 27) + "…" : what));
    let shape;
    if (took !== null) {
      const outcome = entry.event.outcome.kind;
      shape = svgElement("rect", { class: outcome, x: x(began), y, width: Math.max(2, x(began + took) - x(began)), height: row - 6, "data-seq": entry.seq });
    } else {
      const at = x(began);
      shape = svgElement("path", { class: "marker", d: "M" + at + " " + y + " l5 6 l-5 6 l-5 -6 z", "data-seq": entry.seq });
    }
    shape.append(svgElement("title", {}, what + " at +" + duration(began - start) + (took !== null ? " for " + duration(took) : "") + (detail ? ": " + detail : "")));
    svg.append(shape);
  });
  return element("div", { class: "timeline", "data-field": "timeline" }, svg);
}

/// The actions an operator may take on the instance now, with what they answered.
function controls(instance, versions) {
  const result = element("span", { "data-field": "action-result" });
  const act = async (what, path, body) => {
    try {
      const answer = await api(path, "POST", body);
      result.className = "";
      result.textContent = what(answer);
      if (path !== "/v1/revivals/plan") await showInstance(instance.id, result.textContent);
    } catch (error) {
      result.className = "error";
      result.textContent = error.message;
    }
  };
  const buttons = [];
  const ended = ["completed", "failed", "cancelled"].includes(instance.status);
  if (!ended) {
    buttons.push(element("button", { type: "button", "data-action": "cancel" }, "Cancel"),
      element("input", { type: "text", "data-field": "terminate-reason", placeholder: "why terminate", "aria-label": "reason to terminate" }),
      element("button", { type: "button", "data-action": "terminate" }, "Terminate"));
  }
  if (instance.status === "failed" || instance.status === "cancelled") {
    const choices = versions.filter((version) => version.registered && version.status !== "retired")
      .map((version) => element("option", { value: version.version, selected: version.version === instance.version ? "" : null }, version.version));
    buttons.push("revive on", element("select", { "data-field": "revive-target", "aria-label": "version to revive on" }, choices),
      element("button", { type: "button", "data-action": "plan-revival" }, "Plan"),
      element("button", { type: "button", "data-action": "revive" }, "Revive"));
  }
  if (buttons.length === 0) return null;
  const box = element("div", { class: "controls" }, buttons, result);
  box.addEventListener("click", (event) => {
    const action = event.target.getAttribute && event.target.getAttribute("data-action");
    const target = box.querySelector('[data-field="revive-target"]');
    const revival = { workflow: instance.workflow, ids: [instance.id], target: target ? target.value : undefined };
    if (action === "cancel") {
      act(() => "cancelled", "/v1/instances/" + instance.id + "/cancel");
    } else if (action === "terminate") {
      const reason = box.querySelector('[data-field="terminate-reason"]').value;
      act(() => "terminated", "/v1/instances/" + instance.id + "/terminate", { reason });
    } else if (action === "plan-revival") {
      act((plan) => {
        const check = plan.checks[0];
        return !check ? "nothing to revive" : check.resumes_at ? "would be revived on " + check.target + " at step " + check.resumes_at : "would be refused: " + check.refused;
      }, "/v1/revivals/plan", revival);
    } else if (action === "revive") {
      act((report) => report.revived.length ? "revived on " + revival.target + (report.undrained.length ? "; " + report.undrained.join(", ") + " is draining again" : "")
        : "refused: " + (report.refused[0] ? report.refused[0].refused : "nothing to revive"), "/v1/revivals", revival);
    }
  });
  return box;
}

/// The instance page (`#/instances/42`): what it is now, its controls (with what the last one
/// answered, `said`), its timeline, its history entry by entry and its state as formatted JSON.
async function showInstance(id, said) {
  const body = document.getElementById("instance-body");
  try {
    const instance = await api("/v1/instances/" + encodeURIComponent(id));
    const history = await api("/v1/instances/" + encodeURIComponent(id) + "/history?limit=1000");
    const versions = await api("/v1/versions?workflow=" + encodeURIComponent(instance.workflow));
    const ended = ["completed", "failed", "cancelled"].includes(instance.status);
    const endMs = ended ? instance.updated_at_ms : Date.now();
    const start = history.entries.length && history.entries[0].at_ms ? history.entries[0].at_ms : instance.started_at_ms;
    const reason = instance.phase.kind === "failed" || instance.phase.kind === "quarantined" ? instance.phase.reason : instance.last_error;
    const facts = [
      ["status", element("span", { class: "status " + instance.status, "data-field": "status" }, instance.status)],
      ["step", instance.step + (instance.attempt > 1 ? " (attempt " + instance.attempt + ")" : "")],
      ["started", new Date(instance.started_at_ms).toISOString() + " (" + ago(instance.started_at_ms) + ")"],
      ["updated", new Date(instance.updated_at_ms).toISOString() + " (" + ago(instance.updated_at_ms) + ")"],
      ["routing key", instance.routing_key || "-"],
      ["history", history.kept + " entries kept" + (history.folded ? ", " + history.folded + " older folded away" : "")],
    ];
    if (reason) facts.push([instance.status === "failed" ? "failure" : "last error", element("span", { class: "error", "data-field": "failure" }, reason)]);
    if ((instance.measures || []).length) {
      facts.push(["measures", element("span", { "data-field": "measures" },
        instance.measures.map((measure) => measure.measure + " " + trimmed(measure.sum) + " (" + measure.count + (measure.count === 1 ? " value" : " values") + ")").join(", "))]);
    }
    if (instance.pending_signals.length) {
      facts.push(["pending signals", element("span", { "data-field": "pending-signals" },
        instance.pending_signals.map((signal) => "'" + signal.name + "' #" + signal.seq + " " + JSON.stringify(signal.payload)).join(", "))]);
    }
    const rows = history.entries.map((entry) => {
      const [what, detail, began, took] = describeEntry(entry);
      return element("tr", { "data-seq": entry.seq },
        element("td", { class: "number" }, entry.seq),
        element("td", {}, entry.at_ms === null ? "-" : "+" + duration(began - start)),
        element("td", {}, what), element("td", {}, took === null ? "" : duration(took)),
        element("td", { class: "detail" }, detail));
    });
    const actions = controls(instance, versions);
    if (actions && said) actions.querySelector('[data-field="action-result"]').textContent = said;
    body.replaceChildren(
      element("h2", { "data-instance-page": instance.id }, "Instance #" + instance.id + " · " + instance.workflow + "@" + instance.version),
      element("dl", { class: "facts" }, facts.flatMap(([name, value]) => [element("dt", {}, name), element("dd", {}, value)])),
      actions || (said ? element("p", { "data-field": "action-result" }, said) : null),
      element("h3", {}, "Timeline"),
      timeline(history.entries, endMs),
      element("h3", {}, "History"),
      element("table", { "data-field": "history" },
        element("thead", {}, element("tr", {}, ["#", "at", "what", "took", "detail"].map((name) => element("th", {}, name)))),
        element("tbody", {}, rows)),
      element("h3", {}, "State (schema " + instance.state_schema + ")"),
      element("pre", { class: "json", "data-field": "state" }, JSON.stringify(instance.state, null, 2)));
    problem(null);
  } catch (error) {
    body.replaceChildren(element("span", { class: "error" }, error.message));
  }
}

/// The instance id the address names (`#/instances/42`), if it names one.
function openInstance() {
  const match = location.hash.match(/^#\/instances\/(\d+)$/);
  return match ? match[1] : null;
}

/// Shows the page the address names: an instance or the overview.
function route() {
  const id = openInstance();
  document.getElementById("instance-page").hidden = id === null;
  for (const part of ["versions", "rollouts", "config", "instances"]) document.getElementById(part).hidden = id !== null;
  if (id !== null) showInstance(id);
}
window.addEventListener("hashchange", route);

document.getElementById("search").addEventListener("submit", search);

async function refresh(parts) {
  try {
    for (const part of parts) await part();
    problem(null);
  } catch (error) {
    problem(error);
  }
}

const ALL = [showVersions, showRollouts, showConfig];
let pending = null;
function soon(parts) {
  if (pending) { for (const part of parts) pending.add(part); return; }
  pending = new Set(parts);
  setTimeout(() => { const parts = [...pending]; pending = null; refresh(parts); }, 150);
}

/// Which parts of the page an event changes.
function partsOf(type) {
  if (type.startsWith("rollout_")) return [showRollouts, showVersions];
  if (type.startsWith("config_")) return [showConfig];
  return [showVersions, showOpenInstance];
}

/// Refreshes the instance page, if one is shown.
async function showOpenInstance() {
  const id = openInstance();
  if (id !== null) await showInstance(id);
}

/// Follows /v1/events (fetch, so the token goes in a header), and reconnects when it breaks.
async function follow() {
  const live = document.getElementById("live");
  for (;;) {
    try {
      const response = await fetch("/v1/events", { headers: headers() });
      if (!response.ok) throw new Error("events: " + response.status);
      live.className = "live on";
      live.textContent = "live";
      soon(ALL);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffered.indexOf("\n\n")) >= 0) {
          const message = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const type = (message.match(/^event: ?(.*)$/m) || [])[1];
          if (type) soon(type === "lagged" ? ALL : partsOf(type));
        }
      }
    } catch (error) {
      // shown below; try again
    }
    live.className = "live off";
    live.textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("strata-token", state.token);
  // A refusal of the token before does not stand for this one.
  problem(null, "action");
  refresh(ALL);
});

route();
refresh(ALL);
follow();
// Ages and metrics charts move on even when nothing happens.
setInterval(() => soon([showVersions, showRollouts]), 10000);
