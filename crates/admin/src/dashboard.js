"use strict";
const state = { token: sessionStorage.getItem("strata-token") || "" };

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error : response.status + " " + response.statusText;
    throw new Error(message);
  }
  return body;
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

function problem(error) {
  document.getElementById("problem").textContent = error
    ? error.message + (/token/.test(error.message) ? " — type the token above." : "")
    : "";
}

function number(value) {
  return element("td", { class: "number" }, value);
}

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
          version.safe_to_remove ? "yes" : "no"));
    });
    body.append(element("h3", {}, workflow),
      element("table", { "data-workflow": workflow },
        element("thead", {}, element("tr", {},
          ["version", "status", "live", "started", "completed", "failed", "cancelled", "oldest live", "workers", "safe to remove"]
            .map((name) => element("th", {}, name)))),
        element("tbody", {}, rows)));
  }
}

const GATES = {
  max_error_rate_increase: "error rate increase",
  max_latency_multiplier: "p95 latency multiplier",
  min_success_rate: "success rate",
  max_consecutive_failures: "consecutive failures",
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
      }
    }
    const limit = gate === "max_error_rate_increase" ? "≤ +" + percent(threshold)
      : gate === "min_success_rate" ? "≥ " + percent(threshold)
      : gate === "max_latency_multiplier" ? "≤ " + threshold + "×" : "≤ " + threshold;
    rows.push([gate, label, limit, figure, holds]);
  }
  return rows;
}

/// A small line chart of one figure per version over the metrics window.
function chart(title, series, unit) {
  const width = 300, height = 90, pad = 4;
  const values = series.flatMap((line) => line.points.map((point) => point.value).filter((v) => v !== null));
  const top = Math.max(unit === "%" ? 0.05 : 1, ...values);
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
  const peak = unit === "%" ? percent(top) : Math.round(top) + " " + unit;
  return element("div", { class: "chart" },
    element("div", { class: "title" }, title + " (top " + peak + ", last 320 s)"), svg,
    element("div", { class: "legend" }, series.map((line) => element("span", { style: { color: line.color } }, "— " + line.name))));
}

async function rolloutCharts(rollout) {
  const lines = [];
  for (const [name, version, color] of [["candidate " + rollout.candidate, rollout.candidate, "#2f5bd3"], ["stable " + rollout.stable, rollout.stable, "#8a93a6"]]) {
    const series = await api("/v1/versions/" + encodeURIComponent(rollout.workflow) + "/" + encodeURIComponent(version) + "/metrics");
    lines.push({ name, color, points: series.points });
  }
  return element("div", { class: "charts" },
    chart("error rate", lines.map((line) => ({ ...line, points: line.points.map((point) => ({ value: point.error_rate })) })), "%"),
    chart("p95 step latency", lines.map((line) => ({ ...line, points: line.points.map((point) => ({ value: point.p95_step_micros === null ? null : point.p95_step_micros })) })), "µs"));
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
      element("div", {}, "stage " + (rollout.stage + 1) + " of " + stages + " · candidate share " + rollout.candidate_percent + "% ",
        element("span", { class: "bar" }, element("span", { style: { width: rollout.candidate_percent + "%" } })),
        " · against " + rollout.stable),
      rolledBack ? element("div", { class: "gate-fired", "data-field": "rolled-back" },
        "Rolled back by " + (fired ? GATES[fired] + " gate" : "an operator") + ": " + rolledBack.reason) : null,
      gates.length ? element("table", {}, element("thead", {}, element("tr", {}, ["gate", "threshold", rollout.figures ? "figure now" : "figure when it ended", ""].map((name) => element("th", {}, name)))), element("tbody", {}, gates)) : null,
      await rolloutCharts(rollout)));
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

async function search(event) {
  if (event) event.preventDefault();
  const body = document.getElementById("instances-body");
  const id = document.getElementById("search-id").value.trim();
  try {
    if (id) {
      const instance = await api("/v1/instances/" + encodeURIComponent(id));
      body.replaceChildren(element("pre", { class: "json", "data-instance": instance.id }, JSON.stringify(instance, null, 2)));
      return;
    }
    const query = new URLSearchParams({ limit: "50" });
    for (const field of ["workflow", "version", "status"]) {
      const value = document.getElementById("search-" + field).value.trim();
      if (value) query.set(field, value);
    }
    const page = await api("/v1/instances?" + query);
    const rows = page.instances.map((instance) => element("tr", { "data-instance": instance.id },
      element("td", {}, element("a", { href: "#", "data-open": instance.id }, "#" + instance.id)),
      element("td", {}, instance.workflow), element("td", {}, instance.version), element("td", {}, instance.status),
      element("td", {}, instance.step), element("td", {}, ago(instance.started_at_ms)), element("td", {}, ago(instance.updated_at_ms))));
    body.replaceChildren(rows.length ? element("table", {},
      element("thead", {}, element("tr", {}, ["id", "workflow", "version", "status", "step", "started", "updated"].map((name) => element("th", {}, name)))),
      element("tbody", {}, rows)) : "No instance matches.", page.next ? element("p", { class: "hint" }, "More after #" + page.next + ".") : null);
  } catch (error) {
    body.replaceChildren(element("span", { class: "error" }, error.message));
  }
}

document.getElementById("instances-body").addEventListener("click", (event) => {
  const id = event.target.getAttribute && event.target.getAttribute("data-open");
  if (!id) return;
  event.preventDefault();
  document.getElementById("search-id").value = id;
  search();
});
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
  return [showVersions];
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
  refresh(ALL);
});

refresh(ALL);
follow();
// Ages and metrics charts move on even when nothing happens.
setInterval(() => soon([showVersions, showRollouts]), 10000);
