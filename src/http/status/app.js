// The status page: polls /api/v1/stats every second and draws the last five minutes.
// No libraries; the page holds no figures of its own, everything comes from the API.
"use strict";

const POLL_MS = 1000;
const KEPT_POINTS = 300;
const STORAGE_KEY = "agenticai-status-credential";
const QUEUES = ["pm", "dev", "qa", "ops"];

const points = [];
let credential = sessionStorage.getItem(STORAGE_KEY);
let timer = null;

const $ = (id) => document.getElementById(id);
const number = (value) => (value === null || value === undefined ? "–" : Number(value).toLocaleString("en", { maximumFractionDigits: 2 }));
const signed = (value) => (value > 0 ? "+" : value < 0 ? "−" : "±") + number(Math.abs(value));

function text(id, value) {
  $(id).textContent = value;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${seconds % 60}s`;
}

function sum(counts) {
  return Object.values(counts || {}).reduce((total, value) => total + value, 0);
}

// Rows of label -> count, largest first, leaving out labels still at zero (every limit is
// reported from the start); "none" when nothing is left.
function countRows(tbody, counts) {
  const rows = Object.entries(counts || {}).filter(([, value]) => value > 0).sort((a, b) => b[1] - a[1]);
  tbody.replaceChildren(...(rows.length ? rows : [["none", ""]]).map(([label, value]) => {
    const row = document.createElement("tr");
    for (const cell of [label, value === "" ? "" : number(value)]) {
      const td = document.createElement("td");
      td.textContent = cell;
      row.append(td);
    }
    return row;
  }));
}

function queueRows(queues) {
  $("queues").replaceChildren(...QUEUES.map((name) => {
    const q = queues[name] || {};
    const row = document.createElement("tr");
    for (const cell of [name, q.waiting, q.in_flight, q.entries_per_batch, q.confirmed_per_second, q.failed_per_second,
                        q.confirmed_total, q.failed_total, q.retried_total]) {
      const td = document.createElement("td");
      td.textContent = typeof cell === "string" ? cell : number(cell);
      row.append(td);
    }
    return row;
  }));
}

const SVG = "http://www.w3.org/2000/svg";

// One or two series as polylines over the points kept, scaled to the larger maximum.
function chart(id, series) {
  const svg = $(id);
  const width = 300, height = 80, top = 4;
  const max = Math.max(1, ...series.flatMap((key) => points.map((p) => p[key] || 0)));
  // Until five minutes are kept, the points present span the whole width.
  const step = width / Math.max(1, points.length - 1);
  const children = [];
  for (const fraction of [0.5, 1]) {
    const y = height - (height - top) * fraction;
    const grid = document.createElementNS(SVG, "line");
    grid.setAttribute("class", "grid");
    grid.setAttribute("x1", 0); grid.setAttribute("x2", width);
    grid.setAttribute("y1", y); grid.setAttribute("y2", y);
    children.push(grid);
  }
  series.forEach((key, index) => {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", index === 0 ? "line-a" : "line-b");
    line.setAttribute("points", points.map((p, i) =>
      `${(i * step).toFixed(1)},${(height - ((p[key] || 0) / max) * (height - top)).toFixed(1)}`).join(" "));
    children.push(line);
  });
  const title = document.createElementNS(SVG, "title");
  title.textContent = `top line: ${number(max)}`;
  children.push(title);
  svg.replaceChildren(...children);
  const seconds = points.length > 1 ? Math.round((points[points.length - 1].t - points[0].t) / 1000) : 0;
  svg.parentElement.dataset.max = `${number(max)} · last ${duration(seconds)}`;
}

function render(stats) {
  const phase = $("phase");
  phase.textContent = stats.phase;
  phase.className = `badge ${stats.phase}`;
  text("version", `v${stats.version}`);
  text("uptime", `up ${duration(stats.uptime_seconds)}`);
  const c = stats.connections;
  text("active", number(c.active));
  text("active-change", `${signed(c.change_per_second)}/s`);
  text("opened", number(c.opened_per_second));
  text("closed", number(c.closed_per_second));
  text("projects", number(stats.projects));
  text("subscriptions", number(stats.subscriptions));
  text("authenticated", `${number(c.authenticated)} with a token`);
  text("deliveries", number(stats.deliveries.per_second));
  text("publications", number(stats.publications.per_second));
  text("fanout", number(stats.publications.mean_fanout));
  const queues = Object.values(stats.forwards.queues);
  text("forwards-confirmed", number(queues.reduce((t, q) => t + q.confirmed_per_second, 0)));
  text("forwards-failed", number(queues.reduce((t, q) => t + q.failed_per_second, 0)));
  text("forwards-pending", number(stats.forwards.pending));
  text("records-buffered", number(stats.persistence.buffered));
  text("records-written", number(stats.persistence.written_per_second));
  text("records-dropped", number(stats.persistence.dropped_total));
  const redis = stats.redis;
  text("redis", redis.configured ? (redis.connected ? "up" : "DOWN") : "off");
  text("redis-reconnects", redis.configured ? `${number(redis.reconnects_total)} reconnects` : "single task (no REDIS_URL)");
  text("auth-failures", number(stats.authentication.failures_per_second));
  text("limit-refusals", number(stats.limits.refusals_per_second));
  queueRows(stats.forwards.queues);
  countRows($("closes"), stats.connections.closed_total);
  countRows($("auth"), stats.authentication.failures_total);
  countRows($("limits"), stats.limits.refusals_total);
  countRows($("errors"), stats.errors_total);
  text("sampled-at", `sampled ${stats.sampled_at}`);
  document.title = `${number(c.active)} connections · agenticai-websocket`;

  for (const point of stats.history || []) {
    if (!points.length || point.t > points[points.length - 1].t) points.push(point);
  }
  points.splice(0, Math.max(0, points.length - KEPT_POINTS));
  chart("chart-connections", ["active"]);
  chart("chart-churn", ["opened_per_second", "closed_per_second"]);
  chart("chart-deliveries", ["deliveries_per_second", "publications_per_second"]);
  chart("chart-forwards", ["confirmed_per_second", "failed_per_second"]);
}

function problem(message) {
  const element = $("problem");
  element.hidden = !message;
  element.textContent = message || "";
}

async function poll() {
  let again = true;
  // The first answer brings the whole window; later ones the last few seconds, in case a poll was late.
  const history = points.length ? 5 : KEPT_POINTS;
  const headers = credential ? { Authorization: `Bearer ${credential}` } : {};
  try {
    const response = await fetch(`/api/v1/stats?history=${history}`, { headers, cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      $("credential").hidden = false;
      $("figures").hidden = true;
      problem(credential ? "That key or token is not accepted here." : "");
      again = false;  // until a credential is entered
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const stats = await response.json();
    $("credential").hidden = true;
    $("figures").hidden = false;
    problem("");
    render(stats);
  } catch (error) {
    problem(`The server does not answer (${error.message}); retrying.`);
  } finally {
    if (again) timer = setTimeout(poll, POLL_MS);
  }
}

$("credential").addEventListener("submit", (event) => {
  event.preventDefault();
  credential = $("credential-value").value.trim();
  $("credential-value").value = "";
  if (credential) sessionStorage.setItem(STORAGE_KEY, credential);
  clearTimeout(timer);
  poll();
});

poll();
