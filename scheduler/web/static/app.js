// The mctl web view: renders what the scheduler's event stream (/events) sends.
// "state" replaces the whole view; "history" replaces every graph's points;
// "sample" adds one point to each graph. Graphs are drawn on <canvas> here,
// with no chart library. Text goes in through textContent only: names and
// messages come from users' files and containers.
"use strict";

const series = new Map();   // "node:n1" / "replica:ns/name" -> [[unix ms, cpu m, memory bytes]]
let windowMs = 600000;
let sampleMs = 5000;
let lastState = null;
const rendered = {};   // part of the view -> its JSON when last rendered

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function cpu(m) {
  if (m === null || m === undefined) return "-";
  return m >= 1000 ? (m / 1000).toFixed(m % 1000 ? 2 : 0) : m + "m";
}

function mem(b) {
  if (b === null || b === undefined) return "-";
  const units = ["B", "Ki", "Mi", "Gi", "Ti"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (b >= 100 || i === 0 ? Math.round(b) : b.toFixed(1)) + units[i];
}

function ago(t) {
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  return s < 60 ? s + "s ago" : s < 3600 ? Math.floor(s / 60) + "m ago" : Math.floor(s / 3600) + "h ago";
}

function graph(key, which) {
  // which: 1 = cpu, 2 = memory (the index in a point)
  return el("canvas", {"class": which === 1 ? "cpu" : "mem", "width": 160, "height": 28,
                       "data-series": key, "data-which": which, "data-points": 0});
}

function draw(canvas) {
  const points = series.get(canvas.dataset.series) || [];
  const which = Number(canvas.dataset.which);
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#f6f8fa";
  ctx.fillRect(0, 0, w, h);
  canvas.dataset.points = points.length;
  if (!points.length) return;
  // The time axis spans what there is, at least a minute and at most the window,
  // so that a page of a young cluster is not a dot at the right edge.
  const end = points[points.length - 1][0];
  const span = Math.min(windowMs, Math.max(60000, end - points[0][0]));
  const start = end - span;
  let top = 1;
  for (const p of points) top = Math.max(top, p[which]);
  const color = getComputedStyle(canvas).getPropertyValue("--stroke").trim() || "#0969da";
  const x = t => ((t - start) / span) * (w - 2) + 1;
  const y = v => h - 1 - (v / top) * (h - 4);
  // Runs of samples no more than three sample times apart are drawn as one line
  // (over a filled area); a longer gap, when there was no sample, is left open.
  const runs = [];
  for (const p of points) {
    if (p[0] < start) continue;
    const run = runs[runs.length - 1];
    if (run && p[0] - run[run.length - 1][0] <= 3 * sampleMs) run.push(p); else runs.push([p]);
  }
  ctx.lineWidth = 1.5;
  for (const run of runs) {
    ctx.beginPath();
    ctx.moveTo(x(run[0][0]), h);
    for (const p of run) ctx.lineTo(x(p[0]), y(p[which]));
    ctx.lineTo(x(run[run.length - 1][0]), h);
    ctx.closePath();
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.beginPath();
    run.forEach((p, i) => i ? ctx.lineTo(x(p[0]), y(p[which])) : ctx.moveTo(x(p[0]), y(p[which])));
    ctx.strokeStyle = color;
    ctx.stroke();
  }
  ctx.fillStyle = color;
  const last = points[points.length - 1];
  ctx.fillRect(x(last[0]) - 1.5, y(last[which]) - 1.5, 3, 3);
  canvas.title = (which === 1 ? "cpu " + cpu(points[points.length - 1][1]) + ", peak " + cpu(top)
                              : "memory " + mem(points[points.length - 1][2]) + ", peak " + mem(top));
}

function drawAll() {
  for (const c of document.querySelectorAll("canvas[data-series]")) draw(c);
}

function triple(used, requested, capacity, fmt) {
  return fmt(used) + " / " + fmt(requested) + " / " + fmt(capacity);
}

function nodeState(n) {
  const span = el("span", {"class": n.ready ? "Ready" : "NotReady"}, n.ready ? "Ready" : "NotReady");
  if (!n.cordoned) return span;
  return el("span", {}, span, ",", el("span", {"class": "SchedulingDisabled"}, "SchedulingDisabled"));
}

function renderNodes(s) {
  const body = document.querySelector("#nodes tbody");
  const rows = s.nodes.map(n => el("tr", {"data-node": n.name},
    el("td", {}, n.name, " ", el("span", {"class": "count"}, n.address)),
    el("td", {}, nodeState(n)),
    el("td", {}, triple(n.usage && n.usage.cpu, n.allocated.cpu, n.capacity.cpu, cpu)),
    el("td", {}, triple(n.usage && n.usage.memory, n.allocated.memory, n.capacity.memory, mem)),
    el("td", {}, n.replicas),
    el("td", {}, graph(n.series, 1)),
    el("td", {}, graph(n.series, 2))));
  if (s.hidden_nodes) rows.push(el("tr", {}, el("td", {"colspan": 7, "class": "more"},
    s.hidden_nodes + " more nodes not shown")));
  body.replaceChildren(...rows);
  const ready = s.nodes.filter(n => n.ready).length;
  document.getElementById("node-count").textContent = ready + "/" + (s.nodes.length + s.hidden_nodes) + " ready";
}

function phaseCell(r) {
  const text = r.deleting && r.phase !== "Succeeded" && r.phase !== "Failed" ? "Terminating" : r.phase;
  return el("td", {}, el("span", {"class": text}, text),
            r.reason ? el("span", {"class": "count"}, " " + r.reason) : null);
}

function renderWorkloads(s) {
  const blocks = s.workloads.map(w => {
    const ready = w.replicas.filter(r => r.ready).length;
    const rows = w.replicas.map(r => el("tr", {"data-replica": w.namespace + "/" + r.name},
      el("td", {}, r.name), phaseCell(r), el("td", {}, r.ready ? "yes" : "no"),
      el("td", {}, r.node || "-"), el("td", {}, r.restarts), el("td", {}, r.ip || "-"),
      el("td", {}, cpu(r.usage && r.usage.cpu)), el("td", {}, mem(r.usage && r.usage.memory)),
      el("td", {}, graph(r.series, 1)), el("td", {}, graph(r.series, 2)),
      el("td", {"class": "msg"}, r.message)));
    return el("div", {"class": "workload", "data-workload": w.namespace + "/" + w.name},
      el("h3", {}, w.namespace + "/" + w.name, " ",
         el("span", {"class": "meta"}, ready + "/" + w.wanted + " ready",
            w.image ? " · " + w.image : "", w.ip ? " · " + w.ip : "",
            w.deleting ? " · deleting" : "")),
      el("table", {}, el("thead", {}, el("tr", {}, ...["Replica", "Phase", "Ready", "Node",
         "Restarts", "IP", "CPU", "Memory", "CPU", "Memory", "Message"].map(h => el("th", {}, h)))),
         el("tbody", {}, ...rows)));
  });
  if (s.hidden_replicas) blocks.push(el("p", {"class": "more"}, s.hidden_replicas + " more replicas not shown"));
  if (!blocks.length) blocks.push(el("p", {"class": "more"}, "no workloads: mctl apply -f FILE"));
  document.getElementById("workloads").replaceChildren(...blocks);
  document.getElementById("workload-count").textContent = s.workloads.length;
}

function renderEvents(s) {
  const rows = s.events.slice().reverse().map(e => el("tr", {},
    el("td", {"title": new Date(e.t).toISOString()}, ago(e.t)),
    el("td", {"class": e.type}, e.type), el("td", {}, e.kind + " " + e.object),
    el("td", {}, e.reason), el("td", {"class": "msg"}, e.message)));
  if (!rows.length) rows.push(el("tr", {}, el("td", {"colspan": 5, "class": "more"},
    "none since this scheduler started")));
  document.querySelector("#events tbody").replaceChildren(...rows);
}

function render(s) {
  const error = document.getElementById("error");
  error.hidden = !s.error;
  if (s.error) { error.textContent = s.error; return; }
  lastState = s;
  windowMs = s.window_seconds * 1000;
  sampleMs = s.sample_seconds * 1000;
  document.getElementById("window").textContent = s.window_seconds / 60;
  document.getElementById("every").textContent = s.sample_seconds;
  document.getElementById("who").textContent = "served by " + s.scheduler +
    (s.leading ? ", the leader" : ", a follower (leader: " + (s.leader || "none") + ")") +
    " · etcd revision " + s.revision;
  // Only the parts that changed are rebuilt: the others keep their rows (and
  // a row being read, selected or hovered stays put).
  for (const [part, more, fn] of [["nodes", "hidden_nodes", renderNodes],
                                  ["workloads", "hidden_replicas", renderWorkloads],
                                  ["events", null, renderEvents]]) {
    const text = JSON.stringify([s[part], more && s[more]]);
    if (rendered[part] !== text) { rendered[part] = text; fn(s); }
  }
  // Graphs of objects that are gone are forgotten.
  const shown = new Set(s.nodes.map(n => n.series));
  for (const w of s.workloads) for (const r of w.replicas) shown.add(r.series);
  for (const k of [...series.keys()]) if (!shown.has(k)) series.delete(k);
  drawAll();
}

function connect() {
  const link = document.getElementById("link");
  const stream = new EventSource("/events");
  stream.onopen = () => { link.textContent = "live"; link.className = "link up"; };
  stream.onerror = () => { link.textContent = "reconnecting"; link.className = "link down"; };
  stream.addEventListener("state", e => render(JSON.parse(e.data)));
  stream.addEventListener("history", e => {
    const h = JSON.parse(e.data);
    windowMs = h.window_seconds * 1000;
    sampleMs = h.sample_seconds * 1000;
    series.clear();
    for (const [k, points] of Object.entries(h.series)) series.set(k, points);
    drawAll();
  });
  stream.addEventListener("sample", e => {
    const s = JSON.parse(e.data);
    for (const [k, v] of Object.entries(s.values)) {
      const points = series.get(k) || [];
      points.push([s.t, v[0], v[1]]);
      while (points.length && points[0][0] < s.t - windowMs) points.shift();
      series.set(k, points);
    }
    drawAll();
  });
  // Relative times of events age while nothing else changes.
  setInterval(() => { if (lastState) renderEvents(lastState); }, 10000);
}

connect();
