// The status page: polls /api/status every 500 ms and updates the page in place.
// Plain DOM, no libraries, no build step. Text goes in with textContent only.
"use strict";

const POLL_MS = 500;
const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function num(n) {
  if (n === null || n === undefined) return "–";
  return Math.round(n).toLocaleString("en-US");
}

function rate(n) {
  if (!n) return "0/s";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " M/s";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + " k/s";
  return Math.round(n).toLocaleString("en-US") + "/s";
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function secs(s) {
  if (s === null || s === undefined) return "–";
  const a = Math.abs(s);
  let t;
  if (a < 1) t = (s * 1000).toFixed(0) + " ms";
  else if (a < 120) t = s.toFixed(1) + " s";
  else if (a < 7200) t = (s / 60).toFixed(1) + " min";
  else if (a < 172800) t = (s / 3600).toFixed(1) + " h";
  else t = (s / 86400).toFixed(1) + " d";
  return t;
}

function wmText(w) {
  if (!w) return "none yet";
  return w.iso.replace("T", " ").replace("Z", "");
}

function latency(q) {
  if (q === null || q === undefined) return "–";
  return typeof q === "number" ? "≤" + q + " ms" : q + " ms";
}

function fill(queued, cap) {
  if (!cap) return null;
  const wrap = el("span", "fill");
  const bar = el("span", "fill-bar");
  const pct = Math.min(100, Math.round((100 * queued) / cap));
  bar.style.width = pct + "%";
  if (pct >= 75) bar.classList.add("hot");
  wrap.appendChild(bar);
  wrap.title = queued + " of " + cap + " messages queued";
  return wrap;
}

// ---- the graph: built once per graph, figures updated on every poll ----

let graphKey = null;

function buildGraph(stages) {
  const root = $("stages");
  root.replaceChildren();
  stages.forEach((st, i) => {
    if (i > 0) {
      const edge = el("div", "edge");
      edge.appendChild(el("span", "edge-label", st.input || "forward"));
      edge.appendChild(el("span", "arrow", "→"));
      root.appendChild(edge);
    }
    const box = el("div", "stage");
    box.dataset.stage = st.name;
    const head = el("div", "stage-head");
    head.appendChild(el("span", "stage-name", st.name));
    head.appendChild(el("span", "parallelism", "×" + st.parallelism));
    head.title = "parallelism " + st.parallelism;
    box.appendChild(head);
    const ops = el("ol", "operators");
    for (const op of st.operators || []) ops.appendChild(el("li", "operator", op));
    box.appendChild(ops);
    const figs = el("dl", "figures");
    for (const [key, label] of [
      ["records-in", "in"], ["rate", "events/s"], ["records-out", "out"],
      ["watermark", "watermark"], ["lag", "lag"], ["queue", "queue"],
      ["state", "state"], ["latency", "emit p50/p99"],
    ]) {
      figs.appendChild(el("dt", null, label));
      const dd = el("dd", "fig-" + key);
      figs.appendChild(dd);
    }
    box.appendChild(figs);
    root.appendChild(box);
  });
}

function updateGraph(stages) {
  const key = JSON.stringify(stages.map((s) => [s.name, s.parallelism, s.operators, s.input]));
  if (key !== graphKey) { buildGraph(stages); graphKey = key; }
  const boxes = $("stages").querySelectorAll(".stage");
  stages.forEach((st, i) => {
    const box = boxes[i];
    if (!box) return;
    box.dataset.recordsIn = st.records_in;
    box.dataset.recordsOut = st.records_out;
    const set = (k, v) => { box.querySelector(".fig-" + k).textContent = v; };
    set("records-in", num(st.records_in));
    set("rate", rate(st.events_per_second));
    set("records-out", num(st.records_out));
    set("watermark", wmText(st.watermark));
    set("lag", st.watermark ? secs(st.watermark.lag_seconds) : "–");
    set("queue", st.queue_capacity ? st.queued + " / " + st.queue_capacity : "–");
    set("state", st.state_keys || st.state_bytes
      ? num(st.state_keys) + " keys, " + bytes(st.state_bytes) : "–");
    set("latency", st.emit_latency.count
      ? latency(st.emit_latency.p50_ms) + " / " + latency(st.emit_latency.p99_ms) : "–");
  });
}

function updateSubtasks(stages) {
  const body = $("subtasks").querySelector("tbody");
  const rows = [];
  for (const st of stages) {
    for (const t of st.subtasks) {
      const tr = el("tr");
      const cells = [
        [st.name], [t.subtask], [num(t.records_in), "num"], [num(t.records_out), "num"],
        [rate(t.events_per_second), "num"], [wmText(t.watermark)],
        [t.watermark ? secs(t.watermark.lag_seconds) : "–", "num"], [null],
        [t.state_keys ? num(t.state_keys) : "–", "num"],
        [t.state_bytes ? bytes(t.state_bytes) : "–", "num"],
        [t.emit_latency.count ? latency(t.emit_latency.p50_ms) + " / " + latency(t.emit_latency.p99_ms) : "–", "num"],
      ];
      cells.forEach(([v, cls], i) => {
        const td = el("td", cls);
        if (i === 7) {
          const f = fill(t.queued, t.queue_capacity);
          if (f) td.appendChild(f); else td.textContent = "–";
        } else {
          td.textContent = v;
        }
        tr.appendChild(td);
      });
      rows.push(tr);
    }
  }
  body.replaceChildren(...rows);
}

function eventItem(e) {
  const li = el("li", "event " + e.level);
  li.appendChild(el("span", "level", e.level));
  li.appendChild(el("time", "at", (e.at || "").replace("T", " ").replace("Z", "")));
  li.appendChild(el("span", "message", e.message));
  return li;
}

function updateEvents(events) {
  const list = $("events");
  if (!events.length) { list.replaceChildren(el("li", "muted", "none yet")); return; }
  list.replaceChildren(...events.map(eventItem));
  const ck = events.filter((e) => /checkpoint|restore/i.test(e.message)).slice(0, 5);
  $("checkpoint-events").replaceChildren(...ck.map(eventItem));
}

function updateCheckpoints(c) {
  const facts = [
    ["completed", num(c.completed)],
    ["failed", num(c.failed)],
    ["last epoch", c.completed ? c.last_epoch : "–"],
    ["last duration", c.completed ? c.last_duration_ms + " ms" : "–"],
    ["last size", c.completed ? bytes(c.last_bytes) : "–"],
    ["restored", c.restored_epoch ? "epoch " + c.restored_epoch + " in " + c.restore_ms + " ms" : "no"],
  ];
  const dl = $("checkpoints");
  dl.replaceChildren();
  for (const [k, v] of facts) { dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", null, String(v))); }
  $("ckpt-count").textContent = num(c.completed);
  $("ckpt-count").classList.toggle("bad", c.failed > 0);
  $("ckpt-sub").textContent = c.failed ? c.failed + " failed" : (c.completed ? "last: " + c.last_duration_ms + " ms, " + bytes(c.last_bytes) : "none yet");
}

function render(s) {
  document.title = s.job + " · Tidewater";
  $("job").textContent = s.job;
  const state = $("state");
  state.textContent = s.finished ? "finished" : "running";
  state.className = "badge " + (s.finished ? "finished" : "running");
  $("uptime").textContent = "up " + secs(s.uptime_seconds);
  $("total-in").textContent = num(s.totals.records_in);
  $("total-rate").textContent = rate(s.totals.events_per_second);
  $("total-out").textContent = num(s.totals.records_out);
  $("total-out-rate").textContent = rate(s.totals.results_per_second);
  $("total-late").textContent = num(s.totals.late_events);
  $("total-late").classList.toggle("warn", s.totals.late_events > 0);
  $("total-dead").textContent = num(s.totals.dead_letters);
  $("total-dead").classList.toggle("bad", s.totals.dead_letters > 0);
  updateGraph(s.stages);
  updateSubtasks(s.stages);
  updateCheckpoints(s.checkpoints);
  updateEvents(s.events);
  if ($("explain").textContent !== s.explain) $("explain").textContent = s.explain;
}

async function poll() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    const state = $("state");
    state.textContent = "disconnected";
    state.className = "badge disconnected";
    state.title = String(e);
  }
  setTimeout(poll, POLL_MS);
}

poll();
