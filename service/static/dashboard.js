// usher's live view: reads /v1/events (server-sent events, through fetch so that a
// bearer token can be sent) and draws the fleet grid (canvas), the charts (SVG) and
// the tables. No other host is asked for anything.
"use strict";

const POWER = ["off", "booting", "on", "shutting_down"];
const MODE = ["enabled", "drain", "maintenance"];
const FLAG_SINBIN = 1, FLAG_SLOW = 2, FLAG_PLACE_LAST = 4, FLAG_UNREGISTERED = 8;
const PALETTE = ["#5aa9e6", "#f4a259", "#8cc084", "#e26d5c", "#b388eb", "#f7d06b", "#64c4c4", "#d9a5b3", "#9aa5b1"];
const $ = (id) => document.getElementById(id);

const view = { layout: null, state: null, history: new Map(), cells: [] };

// ------------------------------------------------------------------ formatting
function fmtInt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
function fmtTime(t) {
  if (t === null || t === undefined) return "–";
  if (t > 1e8) return new Date(t * 1000).toLocaleTimeString("en-GB");
  const day = Math.floor(t / 86400), s = Math.floor(t % 86400);
  const hh = String(Math.floor(s / 3600)).padStart(2, "0"), mm = String(Math.floor(s % 3600 / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return (day ? `day ${day + 1} ` : "") + `${hh}:${mm}:${ss}`;
}
function el(tag, attrs, text) {
  const e = document.createElementNS(tag === "svg" || ["line", "rect", "path", "text", "polyline", "g"].includes(tag)
    ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function keys(id, names) {
  const box = $(id); box.textContent = "";
  names.forEach(([name, color]) => { const s = el("span"); const i = el("i"); i.style.background = color; s.append(i, name); box.append(s); });
}

// ------------------------------------------------------------------ authentication
function token() { return sessionStorage.getItem("usher-token") || ""; }
function headers() { const t = token(); return t ? { Authorization: `Bearer ${t}` } : {}; }
function askToken() { $("auth").hidden = false; }
$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault(); sessionStorage.setItem("usher-token", $("token").value.trim()); $("auth").hidden = true;
});

// ------------------------------------------------------------------ the stream
async function stream() {
  for (;;) {
    try {
      const r = await fetch("/v1/events", { headers: headers(), cache: "no-store" });
      if (r.status === 401) { askToken(); setConn(false); await sleep(2000); continue; }
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      setConn(true);
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (data) apply(JSON.parse(data));
        }
      }
    } catch (err) { setConn(false); await sleep(1000); }
  }
}
function sleep(ms) { return new Promise((ok) => setTimeout(ok, ms)); }
function setConn(up) { const c = $("conn"); c.className = "conn " + (up ? "up" : "down"); c.textContent = up ? "live" : "offline"; }

function apply(state) {
  if (state.layout) view.layout = state.layout;
  for (const b of state.history || []) view.history.set(b.t, b);
  const keep = 360;
  if (view.history.size > keep) {
    const ts = [...view.history.keys()].sort((a, b) => a - b);
    ts.slice(0, ts.length - keep).forEach((t) => view.history.delete(t));
  }
  view.state = state;
  document.body.dataset.version = state.version;
  render();
}

// ------------------------------------------------------------------ rendering
function render() {
  const s = view.state, sum = s.summary;
  $("now").textContent = fmtTime(sum.now);
  $("kpi-sessions").textContent = fmtInt(sum.sessions);
  $("kpi-licences").textContent = fmtInt(sum.licences.in_use);
  $("kpi-licence-cap").textContent = sum.licences.cap === null ? "no cap" : `of ${fmtInt(sum.licences.cap)}`;
  $("kpi-pending").textContent = fmtInt(sum.pending);
  $("kpi-servers").textContent = fmtInt(sum.servers.total);
  $("kpi-servers-on").textContent = fmtInt(sum.servers.by_power.on || 0);
  const buckets = [...view.history.values()].sort((a, b) => a.t - b.t);
  const last = buckets[buckets.length - 1];
  $("kpi-launches").textContent = last ? fmtInt(last.launches) : "–";
  $("kpi-rejected").textContent = last ? fmtInt(last.outcomes.rejected || 0) : "–";
  drawGrid();
  drawLoad(buckets);
  drawLogons(buckets);
  drawDuration(buckets);
  drawZones(sum, s.logon);
  drawRollout(s.rollout, buckets);
  drawActions(s.actions);
}

function loadColour(li) {
  const x = Math.max(0, Math.min(1, li / 10000));
  return `hsl(${Math.round(130 - 130 * x)}, 65%, ${Math.round(38 + 10 * x)}%)`;
}

function drawGrid() {
  const L = view.layout, F = view.state.fleet, canvas = $("grid");
  if (!L) return;
  const width = Math.max(600, canvas.parentElement.clientWidth - 4);
  const cell = 13, gap = 2, label = 150;
  const perRow = Math.max(8, Math.floor((width - label) / (cell + gap)));
  const groups = new Map();
  L.name.forEach((_, i) => {
    const key = L.zone[i] + "\u0000" + L.pool[i];
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(i);
  });
  const order = [...groups.keys()].sort();
  let height = 0;
  const rows = order.map((key) => { const n = groups.get(key).length; const h = Math.ceil(n / perRow) * (cell + gap) + 8; height += h; return h; });
  const dpr = window.devicePixelRatio || 1;
  canvas.width = width * dpr; canvas.height = Math.max(20, height) * dpr;
  canvas.style.width = width + "px"; canvas.style.height = Math.max(20, height) + "px";
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, width, height);
  g.font = "11px system-ui, sans-serif";
  view.cells = [];
  let y = 0;
  const target = view.state.rollout ? view.state.rollout.image : null;
  order.forEach((key, k) => {
    const [zone, pool] = key.split("\u0000");
    g.fillStyle = "#8a949e";
    g.fillText(`${zone} · ${pool}`, 2, y + 11, label - 6);
    groups.get(key).forEach((i, j) => {
      const x = label + (j % perRow) * (cell + gap), cy = y + Math.floor(j / perRow) * (cell + gap);
      const power = POWER[F.power[i]], mode = MODE[F.mode[i]], flags = F.flags[i];
      let fill = loadColour(F.load_index[i]);
      if (power === "off") fill = "#2a2f35";
      else if (power === "booting") fill = "#2f5d8a";
      else if (power === "shutting_down") fill = "#4b4f55";
      if (flags & FLAG_UNREGISTERED) fill = "#555";
      g.fillStyle = fill; g.fillRect(x, cy, cell, cell);
      if (mode === "drain") { g.strokeStyle = "#fff"; g.lineWidth = 1.5; g.beginPath(); g.moveTo(x, cy + cell); g.lineTo(x + cell, cy); g.stroke(); }
      if (mode === "maintenance") { g.strokeStyle = "#fff"; g.lineWidth = 1.5; g.beginPath(); g.moveTo(x, cy); g.lineTo(x + cell, cy + cell); g.moveTo(x, cy + cell); g.lineTo(x + cell, cy); g.stroke(); }
      if (flags & FLAG_SINBIN) { g.strokeStyle = "#ff3b3b"; g.lineWidth = 2; g.strokeRect(x + 1, cy + 1, cell - 2, cell - 2); }
      if (flags & FLAG_SLOW) { g.fillStyle = "#ffb000"; g.beginPath(); g.arc(x + cell - 3, cy + 3, 3, 0, 7); g.fill(); }
      if (target !== null && F.images[F.image[i]] === target) { g.fillStyle = "#fff"; g.fillRect(x + 1, cy + cell - 4, 3, 3); }
      view.cells.push([x, cy, i]);
    });
    y += rows[k];
  });
  legend();
}

function legend() {
  const box = $("legend");
  if (box.childElementCount) return;
  [["load 0", loadColour(0)], ["load 5000", loadColour(5000)], ["full", loadColour(10000)], ["off", "#2a2f35"],
   ["booting", "#2f5d8a"], ["shutting down", "#4b4f55"], ["╱ drain", "transparent"], ["✕ maintenance", "transparent"],
   ["red frame: sin-bin", "#ff3b3b"], ["orange dot: slow", "#ffb000"], ["white mark: rollout image", "#fff"]]
    .forEach(([name, c]) => { const s = el("span"); const i = el("i"); i.style.background = c; s.append(i, name); box.append(s); });
}

function cellAt(ev) {
  const r = $("grid").getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
  for (const [cx, cy, i] of view.cells) if (x >= cx && x < cx + 13 && y >= cy && y < cy + 13) return i;
  return -1;
}
$("grid").addEventListener("mousemove", (ev) => {
  const i = cellAt(ev), tip = $("tip");
  if (i < 0 || !view.layout) { tip.hidden = true; return; }
  const F = view.state.fleet, flags = F.flags[i], marks = [];
  if (flags & FLAG_SINBIN) marks.push("sin-binned");
  if (flags & FLAG_SLOW) marks.push("slow");
  if (flags & FLAG_PLACE_LAST) marks.push("place last");
  if (flags & FLAG_UNREGISTERED) marks.push("not registered");
  tip.textContent = `${view.layout.name[i]}  ${view.layout.zone[i]} / ${view.layout.pool[i]}\n` +
    `load index ${F.load_index[i]}  sessions ${F.sessions[i]}/${F.max_sessions[i]}  pending ${F.pending[i]}\n` +
    `${POWER[F.power[i]]}, ${MODE[F.mode[i]]}, image ${F.image[i] < 0 ? "–" : F.images[F.image[i]]}` +
    (marks.length ? `\n${marks.join(", ")}` : "");
  const r = $("grid-box").getBoundingClientRect();
  tip.style.left = (ev.clientX - r.left + 14) + "px"; tip.style.top = (ev.clientY - r.top + 10) + "px"; tip.hidden = false;
});
$("grid").addEventListener("mouseleave", () => { $("tip").hidden = true; });
$("grid").addEventListener("click", (ev) => { const i = cellAt(ev); if (i >= 0) search(view.layout.name[i]); });

// a line chart: series = [[name, colour, [values or null]]], xs = bucket times
function lines(svg, xs, series, opts) {
  svg.textContent = "";
  const W = 600, H = opts && opts.height || 200, pad = 30;
  const all = series.flatMap(([, , v]) => v).filter((v) => v !== null && v !== undefined);
  const max = Math.max(1, ...all);
  const x = (k) => pad + (xs.length > 1 ? k / (xs.length - 1) : 0.5) * (W - pad - 5);
  const y = (v) => H - 18 - (v / max) * (H - 28);
  svg.append(el("line", { x1: pad, y1: H - 18, x2: W - 5, y2: H - 18, class: "axis" }));
  svg.append(el("text", { x: 2, y: 12 }, fmtInt(Math.round(max))));
  svg.append(el("text", { x: 2, y: H - 20 }, "0"));
  if (xs.length) {
    svg.append(el("text", { x: pad, y: H - 4 }, fmtTime(xs[0])));
    svg.append(el("text", { x: W - 5, y: H - 4, "text-anchor": "end" }, fmtTime(xs[xs.length - 1])));
  }
  for (const [, colour, values] of series) {
    let d = "";  // buckets without a sample are stepped over
    values.forEach((v, k) => {
      if (v === null || v === undefined) return;
      d += `${d ? "L" : "M"}${x(k).toFixed(1)},${y(v).toFixed(1)}`;
    });
    svg.append(el("path", { d, fill: "none", stroke: colour, "stroke-width": 1.6, "vector-effect": "non-scaling-stroke" }));
    const shown = values.filter((v) => v !== null && v !== undefined);
    if (shown.length === 1) {  // one sample: a dot
      const k = values.findIndex((v) => v !== null && v !== undefined);
      svg.append(el("rect", { x: x(k) - 2, y: y(values[k]) - 2, width: 4, height: 4, fill: colour }));
    }
  }
}

function drawLoad(buckets) {
  const xs = buckets.map((b) => b.t), g = (k) => buckets.map((b) => (b.gauges ? b.gauges[k] : null));
  const series = [["sessions", PALETTE[0], g("sessions")], ["licences", PALETTE[1], g("licences")],
                  ["pending logons", PALETTE[2], g("pending")], ["servers on", PALETTE[8], g("servers_on")]];
  lines($("chart-load"), xs, series);
  keys("keys-load", series.map(([n, c]) => [n, c]));
}

function drawLogons(buckets) {
  const svg = $("chart-logons"); svg.textContent = "";
  const reasons = [...new Set(buckets.flatMap((b) => Object.keys(b.rejected)))].sort();
  const W = 600, H = 200, pad = 30, n = Math.max(1, buckets.length);
  const max = Math.max(1, ...buckets.map((b) => b.launches));
  const bw = (W - pad - 5) / n, sy = (H - 28) / max;
  svg.append(el("line", { x1: pad, y1: H - 18, x2: W - 5, y2: H - 18, class: "axis" }));
  svg.append(el("text", { x: 2, y: 12 }, fmtInt(max)));
  if (buckets.length) {
    svg.append(el("text", { x: pad, y: H - 4 }, fmtTime(buckets[0].t)));
    svg.append(el("text", { x: W - 5, y: H - 4, "text-anchor": "end" }, fmtTime(buckets[buckets.length - 1].t)));
  }
  buckets.forEach((b, k) => {
    let y = H - 18;
    const ok = b.launches - (b.outcomes.rejected || 0);
    const parts = [[ok, PALETTE[2]], ...reasons.map((r, j) => [b.rejected[r] || 0, PALETTE[(j + 3) % PALETTE.length]])];
    for (const [v, c] of parts) {
      if (!v) continue;
      const h = v * sy; y -= h;
      svg.append(el("rect", { x: (pad + k * bw).toFixed(1), y: y.toFixed(1), width: Math.max(0.5, bw - 0.5).toFixed(1), height: h.toFixed(1), fill: c }));
    }
  });
  keys("keys-logons", [["placed, reconnected, shared", PALETTE[2]], ...reasons.map((r, j) => [`rejected: ${r}`, PALETTE[(j + 3) % PALETTE.length]])]);
}

function drawDuration(buckets) {
  const zones = [...new Set(buckets.flatMap((b) => Object.keys(b.logon)))].sort();
  const series = zones.map((z, j) => [`${z} p95`, PALETTE[j % PALETTE.length], buckets.map((b) => (b.logon[z] ? b.logon[z].p95 : null))]);
  lines($("chart-duration"), buckets.map((b) => b.t), series);
  keys("keys-duration", series.map(([n, c]) => [n, c]));
}

function drawZones(sum, logon) {
  const body = $("zones").tBodies[0]; body.textContent = "";
  for (const zone of Object.keys(sum.zones).sort()) {
    const z = sum.zones[zone], l = logon[zone] || { n: 0, p50: null, p95: null };
    const tr = el("tr"); tr.dataset.zone = zone;
    [zone, fmtInt(z.servers), fmtInt(z.sessions), fmtInt(z.pending_logons), fmtInt(l.n),
     l.p50 === null ? "–" : l.p50.toFixed(1), l.p95 === null ? "–" : l.p95.toFixed(1)]
      .forEach((v) => tr.append(el("td", {}, v)));
    body.append(tr);
  }
}

function drawRollout(r, buckets) {
  const box = $("rollout");
  if (!r) { keys("keys-images", []); $("chart-images").textContent = ""; return; }
  const pct = r.servers ? Math.round(100 * r.on_image / r.servers) : 0;
  box.innerHTML = "";
  box.append(el("div", {}, `image ${r.image}: ${fmtInt(r.on_image)} of ${fmtInt(r.servers)} servers (${pct} %), ${fmtInt(r.draining)} draining`));
  const bar = el("div", { class: "bar" }), fill = el("span"); fill.style.width = pct + "%"; bar.append(fill); box.append(bar);
  const images = [...new Set(buckets.flatMap((b) => Object.keys(b.gauges ? b.gauges.images : {})))].sort();
  const series = images.map((im, j) => [im || "(none)", PALETTE[j % PALETTE.length], buckets.map((b) => (b.gauges ? b.gauges.images[im] || 0 : null))]);
  lines($("chart-images"), buckets.map((b) => b.t), series, { height: 120 });
  keys("keys-images", series.map(([n, c]) => [n, c]));
}

// one fleet action as a list item: what was done, then why (text only: never parsed as HTML)
function actionItem(a, withServer) {
  const li = el("li", {}, `${fmtTime(a.t)}  ${withServer ? a.server + "  " : ""}${a.op} → ${a.value}`);
  if (a.reason) li.append(el("span", { class: "reason" }, a.reason));
  return li;
}

function drawActions(actions) {
  const ol = $("actions"); ol.textContent = "";
  for (const a of actions.slice().reverse()) ol.append(actionItem(a, true));
}

// ------------------------------------------------------------------ search
async function search(q) {
  q = q.trim(); if (!q) return;
  $("q").value = q;
  const r = await fetch(`/v1/dashboard/search?q=${encodeURIComponent(q)}`, { headers: headers() });
  const box = $("found-body"); box.textContent = "";
  $("found").hidden = false; $("found-title").textContent = q;
  if (r.status === 401) { askToken(); return; }
  const found = await r.json();
  if (!r.ok) { box.append(el("p", { class: "muted" }, found.message)); return; }
  if (found.server) box.append(el("p", {}, `server in ${found.server.zone} / ${found.server.pool}: ${found.server.power}, ${found.server.mode}, ` +
    `load index ${found.server.load_index}, ${found.server.sessions}/${found.server.max_sessions} sessions` +
    (found.server.sinbinned ? ", sin-binned" : "") + (found.server.slow ? ", slow" : "")));
  if (found.user) box.append(el("p", {}, `user, home zone ${found.user.home_zone || "–"}, apps ${(found.user.apps || []).join(", ")}`));
  const st = el("table"); st.append(el("tr")); st.rows[0].append(...["session", "user", "server", "state", "apps", "launched"].map((h) => el("th", {}, h)));
  for (const s of found.sessions) {
    const tr = el("tr"); [s.id, s.user, s.server, s.state + (s.pending ? " (logon pending)" : ""), s.apps.join(", "), fmtTime(s.t_launch)]
      .forEach((v) => tr.append(el("td", {}, String(v)))); st.append(tr);
  }
  box.append(el("h3", {}, `live sessions (${found.sessions.length})`), st);
  const actions = found.actions || [];
  if (actions.length) {
    const ol = el("ol", { class: "actions" });
    actions.forEach((a) => ol.append(actionItem(a, false)));
    box.append(el("h3", {}, `latest fleet actions (${actions.length})`), ol);
  }
  box.append(el("h3", {}, `latest decisions (${found.decisions.length})`));
  for (const d of found.decisions) {
    const det = el("details"), sm = el("summary");
    sm.textContent = `${fmtTime(d.t)}  ${d.id}  ${d.user} → ${d.app}: ${d.outcome}` + (d.reason ? ` (${d.reason})` : "") +
      (d.server ? ` on ${d.server} in ${d.zone}, load index ${d.load_index}` : "");
    det.append(sm, el("pre", {}, d.explanation ? JSON.stringify(d.explanation, null, 1) : "no explanation kept: the launch was not sent with ?explain=true"));
    box.append(det);
  }
}
$("search").addEventListener("submit", (e) => { e.preventDefault(); search($("q").value); });
$("found-close").addEventListener("click", () => { $("found").hidden = true; });
window.addEventListener("resize", () => { if (view.state) drawGrid(); });

stream();
