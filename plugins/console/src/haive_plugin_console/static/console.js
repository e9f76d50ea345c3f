// The console page: polls the REST API once a second and draws what it gets. No library,
// no CDN (the machines it runs on may have no internet).
"use strict";
const state = { pipeline: null, node: null, token: null, selected: new Set() };
const NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function readToken() {
  const m = /token=([^&]+)/.exec(location.hash);
  state.token = m ? decodeURIComponent(m[1]) : sessionStorage.getItem("haive-console-token");
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("token-form").style.display = "block";
    throw new Error("a token is required");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function rate(value) {
  if (value >= 1000) return (value / 1000).toFixed(1) + "k ev/s";
  return value.toFixed(value >= 10 ? 0 : 1) + " ev/s";
}

function layout(topology) {
  // Columns by longest path from a source: fine for chains and for fan-out graphs.
  const column = {};
  for (const n of topology.nodes) column[n.name] = 0;
  for (let i = 0; i < topology.nodes.length; i++)
    for (const e of topology.edges) column[e.target] = Math.max(column[e.target], column[e.source] + 1);
  const rows = {};
  const pos = {};
  for (const n of topology.nodes) {
    const c = column[n.name];
    rows[c] = (rows[c] || 0) + 1;
    pos[n.name] = { x: 20 + c * 230, y: 20 + (rows[c] - 1) * 100 };
  }
  return pos;
}

function drawGraph(metrics) {
  const pos = layout(metrics);
  const edges = $("edges"), nodes = $("nodes");
  edges.replaceChildren(); nodes.replaceChildren();
  const buffers = Object.fromEntries(metrics.buffers.map((b) => [b.name, b]));
  for (const e of metrics.edges) {
    const a = pos[e.source], b = pos[e.target];
    edges.append(el("line", { class: "edge", x1: a.x + 150, y1: a.y + 35, x2: b.x - 4, y2: b.y + 35 }));
    const buf = buffers[e.buffer];
    if (buf) edges.append(el("text", { class: "edge-label", "text-anchor": "middle",
      x: (a.x + 150 + b.x) / 2, y: a.y + 52 }, buf.depth + "/" + buf.capacity));
  }
  for (const n of metrics.nodes) {
    const p = pos[n.name];
    const g = el("g", { class: "node " + n.state + (n.name === state.node ? " selected" : ""),
      "data-node": n.name, "data-state": n.state, transform: `translate(${p.x},${p.y})` });
    g.append(el("rect", { width: 150, height: 70, rx: 8 }));
    g.append(el("text", { x: 10, y: 20 }, n.name.length > 22 ? n.name.slice(0, 21) + "…" : n.name));
    g.append(el("text", { x: 10, y: 40, class: "rate" }, rate(n.rate_out)));
    const extra = n.kind === "source" ? "read " + n.items_out
      : (n.errors ? n.errors + " errors · " : "") + "fill " + Math.round(n.fill * 100) + "%";
    g.append(el("text", { x: 10, y: 58 }, extra));
    g.addEventListener("click", () => { state.node = n.name; refreshChart(); drawGraph(metrics); });
    nodes.append(g);
  }
  const width = Math.max(...Object.values(pos).map((p) => p.x)) + 170;
  const height = Math.max(...Object.values(pos).map((p) => p.y)) + 100;
  $("graph").setAttribute("viewBox", `0 0 ${width} ${height}`);
  const lat = metrics.latency_ms || {};
  $("fig-throughput").textContent = metrics.throughput && metrics.throughput.per_second !== undefined
    ? rate(metrics.throughput.per_second) : "–";
  $("fig-latency").textContent = lat.p50 !== undefined
    ? [lat.p50, lat.p95, lat.p99].map((v) => v.toFixed(2)).join(" / ") + " ms" : "–";
}

async function refreshChart() {
  if (!state.node || !state.pipeline) return;
  const p = encodeURIComponent(state.pipeline), n = encodeURIComponent(state.node);
  const points = await api(`/api/pipelines/${p}/nodes/${n}/history`);
  $("chart-title").textContent = state.node + ": events/s (errors dashed)";
  const svg = $("chart");
  svg.replaceChildren();
  svg.setAttribute("data-node", state.node);
  svg.setAttribute("data-points", String(points.length));
  const w = Math.max(200, Math.round(svg.getBoundingClientRect().width)), h = 160;
  svg.setAttribute("viewBox", `0 0 ${w} ${h + 20}`);
  if (!points.length) { svg.append(el("text", { x: 10, y: 20 }, "no samples yet")); return; }
  const max = Math.max(1, ...points.map((q) => q.rate_out), ...points.map((q) => q.rate_in));
  const t0 = points[0].time, t1 = points[points.length - 1].time || t0 + 1;
  const x = (t) => 10 + ((t - t0) / Math.max(1e-9, t1 - t0)) * (w - 20);
  const line = (f, scale) => points.map((q) => `${x(q.time).toFixed(1)},${(h - (f(q) / scale) * (h - 10)).toFixed(1)}`).join(" ");
  svg.append(el("polyline", { class: "rate", points: line((q) => q.rate_out, max) }));
  svg.append(el("polyline", { class: "errors", points: line((q) => q.error_rate, 1) }));
  svg.append(el("text", { x: 10, y: 12 }, "max " + rate(max)));
  svg.append(el("text", { x: 10, y: h + 16 }, points.length + " samples"));
  const last = points[points.length - 1];
  $("node-figures").innerHTML = "";
  for (const [label, value] of [["in", rate(last.rate_in)], ["out", rate(last.rate_out)],
    ["errors", (last.error_rate * 100).toFixed(1) + "%"], ["fill", Math.round(last.fill * 100) + "%"]]) {
    const d = document.createElement("div");
    d.innerHTML = `<span class="muted">${label}</span><b></b>`;
    d.querySelector("b").textContent = value;
    $("node-figures").append(d);
  }
}

function drawAlerts(alerts) {
  const list = $("alerts");
  list.replaceChildren();
  $("no-alerts").style.display = alerts.length ? "none" : "block";
  for (const a of alerts) {
    const li = document.createElement("li");
    li.className = a.severity + (a.acknowledged ? " acknowledged" : "");
    li.dataset.rule = a.rule;
    li.textContent = `${a.severity.toUpperCase()} ${a.pipeline} · ${a.rule}: ${a.message} `;
    if (!a.acknowledged) {
      const b = document.createElement("button");
      b.textContent = "Acknowledge";
      b.addEventListener("click", () => act(`/api/pipelines/${encodeURIComponent(a.pipeline)}/alerts/${encodeURIComponent(a.rule)}/acknowledge`));
      li.append(b);
    }
    list.append(li);
  }
}

function drawDeadLetters(letters) {
  const body = $("dead-letters");
  body.replaceChildren();
  $("dead-count").textContent = `(${letters.length} shown)`;
  for (const d of letters) {
    const tr = document.createElement("tr");
    tr.dataset.id = d.id;
    const box = document.createElement("input");
    box.type = "checkbox"; box.className = "pick"; box.checked = state.selected.has(d.id);
    box.addEventListener("change", () => box.checked ? state.selected.add(d.id) : state.selected.delete(d.id));
    const cells = [d.id, d.node || "", d.error_type, d.reason, JSON.stringify(d.payload)];
    const td0 = document.createElement("td"); td0.append(box); tr.append(td0);
    cells.forEach((c, i) => { const td = document.createElement("td"); td.textContent = c; if (i === 4) td.className = "payload"; tr.append(td); });
    body.append(tr);
  }
  const shown = new Set(letters.map((d) => d.id));
  for (const id of [...state.selected]) if (!shown.has(id)) state.selected.delete(id);
}

function drawWorkers(workers) {
  const body = $("workers");
  body.replaceChildren();
  for (const w of workers) {
    const tr = document.createElement("tr");
    tr.dataset.worker = w.id;
    const m = w.membership || {};
    const counts = w.local ? "this console's process" : `${w.read} / ${w.processed} / ${w.failed}`;
    const st = w.local ? "local" : (w.paused ? "paused" : w.running ? "running" : "idle");
    for (const c of [w.id, w.pipelines.join(", "), m.group ? `${m.group} / ${m.consumer}` : "", counts, st]) {
      const td = document.createElement("td"); td.textContent = c; tr.append(td);
    }
    body.append(tr);
  }
}

function drawPartitions(rows) {
  const body = $("partitions");
  body.replaceChildren();
  $("no-partitions").style.display = rows.length ? "none" : "block";
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const c of [r.stream, r.partition, r.owner, r.worker, r.lag ?? "?", r.pending ?? "?"]) {
      const td = document.createElement("td"); td.textContent = c; tr.append(td);
    }
    body.append(tr);
  }
}

async function act(path, body) {
  const options = { method: "POST" };
  if (body !== undefined) { options.body = JSON.stringify(body); options.headers = { "content-type": "application/json" }; }
  const result = await api(path, options);
  await refresh();
  return result;
}

async function refresh() {
  const pipelines = await api("/api/pipelines");
  const select = $("pipeline");
  const names = pipelines.map((p) => p.name);
  if (select.options.length !== names.length) {
    select.replaceChildren(...names.map((n) => new Option(n, n)));
  }
  if (!state.pipeline || !names.includes(state.pipeline)) state.pipeline = names[0] || null;
  select.value = state.pipeline || "";
  if (!state.pipeline) { $("status").textContent = "no pipeline"; return; }
  const summary = pipelines.find((p) => p.name === state.pipeline);
  $("pause").textContent = summary.paused ? "Resume" : "Pause";
  $("run-state").textContent = summary.running ? (summary.paused ? "paused" : "running") : "not running";
  $("fig-counts").textContent = `${summary.read} / ${summary.processed} / ${summary.failed}`;
  const p = encodeURIComponent(state.pipeline);
  const query = new URLSearchParams();
  if ($("filter-node").value) query.set("node", $("filter-node").value);
  if ($("filter-error").value) query.set("error", $("filter-error").value);
  const [metrics, alerts, letters, workers, partitions] = await Promise.all([
    api(`/api/pipelines/${p}/metrics`), api("/api/alerts"), api(`/api/pipelines/${p}/dead-letters?${query}`),
    api("/api/workers"), api("/api/partitions"),
  ]);
  drawWorkers(workers);
  drawPartitions(partitions);
  drawGraph(metrics);
  drawAlerts(alerts);
  drawDeadLetters(letters);
  await refreshChart();
  $("status").textContent = "live · " + new Date().toLocaleTimeString();
}

async function loop() {
  try { await refresh(); } catch (e) { $("status").textContent = "error: " + e.message; }
  setTimeout(loop, 1000);
}

$("pause").addEventListener("click", async () => {
  const p = encodeURIComponent(state.pipeline);
  await act(`/api/pipelines/${p}/${$("pause").textContent === "Pause" ? "pause" : "resume"}`);
});
$("replay").addEventListener("click", async () => {
  const ids = [...state.selected];
  try {
    const result = await act(`/api/pipelines/${encodeURIComponent(state.pipeline)}/dead-letters/replay`, { ids });
    state.selected.clear();
    $("replay-result").textContent = `replayed ${result.replayed.length}`;
  } catch (e) { $("replay-result").textContent = "replay refused: " + e.message; }
});
$("select-all").addEventListener("change", (ev) => {
  for (const box of document.querySelectorAll("#dead-letters .pick")) {
    box.checked = ev.target.checked;
    const id = box.closest("tr").dataset.id;
    ev.target.checked ? state.selected.add(id) : state.selected.delete(id);
  }
});
$("pipeline").addEventListener("change", (ev) => { state.pipeline = ev.target.value; state.node = null; refresh(); });
$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token-input").value;
  sessionStorage.setItem("haive-console-token", state.token);
  $("token-form").style.display = "none";
  refresh();
});
readToken();
loop();
