// The offload dashboard: polls api/overview, renders it, draws two charts, and posts the actions.
// Every value from the server goes through textContent: paths and errors come from clients.
"use strict";

const body = document.body;
const CSRF = body.dataset.csrf;
const READ_ONLY = body.dataset.readOnly === "true";
const REFRESH = Math.max(500, parseInt(body.dataset.refresh, 10) || 2000);
const HISTORY = 60;
const history = { first: [], second: [] };
let previous = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return (value * 1000).toFixed(0) + " ms";
  if (value < 120) return value.toFixed(1) + " s";
  if (value < 7200) return (value / 60).toFixed(1) + " min";
  return (value / 3600).toFixed(1) + " h";
}

function table(className, headings, rows, empty) {
  const head = el("thead", {}, el("tr", {}, ...headings.map((text) => el("th", { text }))));
  const tbody = el("tbody");
  if (!rows.length) tbody.appendChild(el("tr", {}, el("td", { class: "empty", colspan: String(headings.length), text: empty })));
  for (const row of rows) tbody.appendChild(row);
  return el("table", { class: className }, head, tbody);
}

function stat(name, label, value, alert) {
  return el("div", { class: "stat stat-" + name + (alert ? " alert" : "") },
    el("span", { class: "value", text: String(value) }), el("span", { class: "label", text: label }));
}

async function post(action, data) {
  const answer = await fetch("api/" + action, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Offload-CSRF": CSRF },
    body: JSON.stringify(data),
    credentials: "same-origin",
  });
  const result = await answer.json().catch(() => ({ error: "HTTP " + answer.status }));
  if (!answer.ok) throw new Error(result.error || "HTTP " + answer.status);
  return result;
}

function namespaceSection(ns) {
  const section = el("section", { class: "namespace" + (ns.up ? "" : " down"), "data-namespace": ns.name },
    el("h2", { text: "namespace " + ns.name }));
  if (!ns.up) {
    section.appendChild(el("p", { class: "error", text: ns.error || "" }));
    return section;
  }
  section.appendChild(el("div", { class: "stats" },
    stat("queued", "queued", ns.queued),
    stat("running", "running", ns.running),
    stat("dead", "dead letters", ns.dead, ns.dead > 0),
    stat("cached", "cached", ns.cached),
    stat("failed", "failed answers", ns.failed, ns.failed > 0),
    stat("oldest", "oldest waiting", seconds(ns.oldest_age))));
  const waiting = ns.waiting.map((job) => el("tr", { "data-job": job.job_id },
    el("td", { class: "path", text: job.path }), el("td", { text: seconds(job.age) })));
  const running = ns.running_jobs.map((job) => el("tr", { "data-job": job.job_id },
    el("td", { class: "path", text: job.path }), el("td", { text: seconds(job.age) }),
    el("td", { text: seconds(job.lease_left) })));
  const dead = ns.dead_letters.map((job) => {
    const button = el("button", { class: "retry", type: "button", text: "Retry" });
    button.hidden = READ_ONLY;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await post("revive", { namespace: ns.name, job_id: job.job_id });
        button.textContent = "queued";
        refresh();
      } catch (error) {
        button.textContent = error.message;
      }
    });
    return el("tr", { "data-job": job.job_id },
      el("td", { class: "path", text: job.path }), el("td", { class: "error", text: job.error }),
      el("td", { text: new Date(job.buried * 1000).toLocaleTimeString() }), el("td", {}, button));
  });
  section.appendChild(el("div", { class: "lists" },
    el("div", {}, el("h3", { text: "waiting" }), table("waiting", ["URL", "waited"], waiting, "no job waits")),
    el("div", {}, el("h3", { text: "running" }), table("running", ["URL", "running for", "lease left"], running, "no job runs")),
    el("div", {}, el("h3", { text: "dead letters" }), table("dead", ["URL", "last error", "buried", ""], dead, "no dead letter"))));
  return section;
}

function draw(canvas, points, max, format, floor = 1e-9) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#dfe3ea";
  ctx.fillStyle = "#6b7385";
  ctx.font = "11px system-ui, sans-serif";
  const top = max || Math.max(floor, ...points.filter((p) => p !== null));
  for (let i = 0; i <= 2; i++) {
    const y = pad / 2 + (h - pad) * (i / 2);
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
    ctx.fillText(format(top * (1 - i / 2)), 0, y + 4);
  }
  ctx.strokeStyle = "#2f6fde";
  ctx.lineWidth = 2;
  ctx.beginPath();
  let started = false;
  points.forEach((p, i) => {
    if (p === null) return;
    const x = pad + ((w - pad - 4) * i) / Math.max(1, HISTORY - 1);
    const y = pad / 2 + (h - pad) * (1 - p / top);
    if (started) ctx.lineTo(x, y); else { ctx.moveTo(x, y); started = true; }
  });
  ctx.stroke();
}

function push(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

function charts(data) {
  const m = data.metrics;
  if (m) {
    document.getElementById("first-title").textContent = "Hit ratio";
    document.getElementById("second-title").textContent = "Time to first fill, mean (s)";
    if (previous && previous.metrics) {
      const served = (r) => (r.hit || 0) + (r.stale || 0) + (r.not_modified || 0);
      const all = (r) => Object.values(r).reduce((a, b) => a + b, 0);
      const dAll = all(m.requests) - all(previous.metrics.requests);
      const dServed = served(m.requests) - served(previous.metrics.requests);
      push(history.first, dAll > 0 ? dServed / dAll : null);
      const dCount = m.fill_count - previous.metrics.fill_count;
      push(history.second, dCount > 0 ? (m.fill_sum - previous.metrics.fill_sum) / dCount : null);
    }
    draw(document.getElementById("first-chart"), history.first, 1, (v) => (v * 100).toFixed(0) + "%");
    draw(document.getElementById("second-chart"), history.second, 0, (v) => v.toFixed(2));
  } else {
    document.getElementById("first-title").textContent = "Queued jobs (from the backend)";
    document.getElementById("second-title").textContent = "Running jobs (from the backend)";
    const sum = (name) => data.namespaces.reduce((a, ns) => a + (ns[name] || 0), 0);
    push(history.first, sum("queued"));
    push(history.second, sum("running"));
    draw(document.getElementById("first-chart"), history.first, 0, (v) => v.toFixed(1), 2);
    draw(document.getElementById("second-chart"), history.second, 0, (v) => v.toFixed(1), 2);
  }
}

function slowest(data) {
  const tbody = document.querySelector("#slowest tbody");
  tbody.replaceChildren();
  let rows = [];
  if (data.metrics) {
    document.getElementById("slowest-title").textContent = "Slowest URL patterns (mean job time)";
    rows = data.metrics.slowest.map((r) => [r.pattern, seconds(r.mean), String(r.count)]);
  } else {
    document.getElementById("slowest-title").textContent = "Longest-running jobs now";
    for (const ns of data.namespaces) for (const job of ns.running_jobs || []) rows.push([job.path, seconds(job.age), ns.name]);
    rows.sort((a, b) => b[1].localeCompare(a[1]));
  }
  if (!rows.length) tbody.appendChild(el("tr", {}, el("td", { class: "empty", colspan: "3", text: "nothing yet" })));
  for (const [path, time, count] of rows.slice(0, 10))
    tbody.appendChild(el("tr", {}, el("td", { class: "path", text: path }), el("td", { text: time }), el("td", { text: count })));
}

function render(data) {
  document.getElementById("source").textContent = data.source === "metrics" ? "figures from the metrics" : "figures from the backend";
  document.getElementById("mode").hidden = !data.read_only;
  document.getElementById("expire-panel").hidden = data.read_only;
  document.getElementById("updated").textContent = "updated " + new Date(data.generated * 1000).toLocaleTimeString();
  const select = document.getElementById("expire-namespace");
  const names = data.namespaces.map((ns) => ns.name);
  if ([...select.options].map((o) => o.value).join() !== names.join()) {
    const chosen = select.value;
    select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
    if (names.includes(chosen)) select.value = chosen;
  }
  document.getElementById("namespaces").replaceChildren(...data.namespaces.map(namespaceSection));
  charts(data);
  slowest(data);
  previous = data;
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    const answer = await fetch("api/overview", { credentials: "same-origin", cache: "no-store" });
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.error || "HTTP " + answer.status);
    render(data);
    problem.hidden = true;
  } catch (error) {
    problem.textContent = error.message;
    problem.hidden = false;
  }
}

document.getElementById("expire-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = document.getElementById("expire-result");
  const value = (id) => document.getElementById(id).value;
  try {
    const done = await post("expire", {
      namespace: value("expire-namespace"), path: value("expire-path"), params: value("expire-params"),
      tag: value("expire-tag"), soft: document.getElementById("expire-soft").checked,
      refresh: document.getElementById("expire-refresh").checked,
    });
    result.textContent = "expired " + done.expired + " answer" + (done.expired === 1 ? "" : "s");
    refresh();
  } catch (error) {
    result.textContent = error.message;
  }
});

refresh();
setInterval(refresh, REFRESH);
