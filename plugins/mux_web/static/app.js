// mux web view: the live panel of a mux run, fed by its /events stream.
//
// Every string that came from a server (source names, details, alert
// messages, payload values) reaches the page through textContent or a
// canvas, never as markup: nothing here parses HTML. The rules for rates,
// staleness and badges mirror mux_core.views and mux_qt.model, so the page
// says what the Qt panel and the terminal view say.
"use strict";

(function () {
  const COLOURS = { green: "#2e7d32", amber: "#ef8f00", red: "#c62828", grey: "#757575", blue: "#1565c0", stale: "#7b1fa2" };
  const PALETTE = ["#1565c0", "#c62828", "#2e7d32", "#ef8f00", "#6a1b9a", "#00838f", "#ad1457", "#4e342e", "#558b2f", "#283593"];
  const WAITING = new Set(["connecting", "server_unavailable", "disconnected"]);
  const BROKEN = new Set(["max_retries_exceeded", "failed"]);
  const RESTARTABLE = new Set(["max_retries_exceeded", "failed", "ended"]);
  const KEEP_RUNS = 4;
  const VIEW_LAG = 2.0; // mux_core.views.ViewClock.LAG

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // -- what mux_core.views computes ----------------------------------------

  // ViewClock: the wall clock, or the recording's time when records arrive old.
  const clock = {
    lag: 0,
    saw(at) { const lag = Date.now() / 1000 - at; this.lag = lag > VIEW_LAG ? lag : 0; },
    now() { return Date.now() / 1000 - this.lag; },
  };

  // RateMeter: events/s by the source's seq over the last 5 s.
  class RateMeter {
    constructor() { this.window = 5; this.step = 5 / 32; this.samples = []; this.last = null; }
    add(at, seq) {
      const last = this.last;
      this.last = [at, seq];
      if (last && seq < last[1]) this.samples = [];
      else if (this.samples.length && at - this.samples[this.samples.length - 1][0] < this.step) return;
      this.samples.push([at, seq]);
      this.dropBefore(at - this.window);
    }
    rate(now) {
      const last = this.last;
      if (!last || last[0] < now - this.window) return 0;
      this.dropBefore(now - this.window);
      const [firstAt, firstSeq] = this.samples[0];
      if (last[1] === firstSeq) return 0;
      return (last[1] - firstSeq) / Math.max(now - firstAt, 0.5);
    }
    dropBefore(start) { while (this.samples.length > 2 && this.samples[0][0] < start) this.samples.shift(); }
  }

  // StaleWatch: quiet for longer than 10 x the median of the last 32 intervals
  // (at least 5 s), or than the source's stale_after.
  class StaleWatch {
    constructor(staleAfter) { this.staleAfter = staleAfter; this.floor = 5; this.last = null; this.gaps = []; this.next = 0; }
    saw(at) {
      const last = this.last;
      this.last = at;
      if (last === null || at <= last || this.staleAfter) return;
      if (this.gaps.length < 32) this.gaps.push(at - last);
      else { this.gaps[this.next] = at - last; this.next = (this.next + 1) % 32; }
    }
    threshold() {
      if (this.staleAfter) return this.staleAfter;
      const sorted = this.gaps.slice().sort((a, b) => a - b);
      const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
      return Math.max(this.floor, 10 * median);
    }
    quietFor(now) { return this.last === null ? null : Math.max(now - this.last, 0); }
    isStale(now) { return this.last !== null && now - this.last > this.threshold(); }
  }

  function formatAge(seconds) {
    if (seconds === null || !isFinite(seconds)) return "—";
    seconds = Math.max(seconds, 0);
    if (seconds < 10) return seconds.toFixed(1) + " s ago";
    if (seconds < 60) return seconds.toFixed(0) + " s ago";
    const minutes = Math.floor(seconds / 60), secs = Math.floor(seconds % 60);
    if (minutes < 60) return minutes + "m " + String(secs).padStart(2, "0") + "s ago";
    return Math.floor(minutes / 60) + "h " + String(minutes % 60).padStart(2, "0") + "m ago";
  }
  function formatRate(rate) {
    if (!(rate > 0)) return "0.0";
    return rate < 1000 ? rate.toFixed(1) : Math.round(rate).toLocaleString("en-US");
  }
  function formatValue(value) {
    if (value === null || value === undefined) return "—";
    if (Number.isNaN(value)) return "NaN";
    if (!isFinite(value)) return value > 0 ? "Inf" : "-Inf";
    const abs = Math.abs(value);
    if (value === 0 || (abs >= 1e-3 && abs < 1e4)) return String(Number(value.toPrecision(4)));
    return value.toExponential(3);
  }
  function tickText(value) {
    if (value === null || value === undefined) return "";
    const abs = Math.abs(value);
    if (value === 0 || (abs >= 1e-3 && abs < 1e5)) return String(Number(value.toPrecision(4)));
    return value.toExponential(1);
  }
  // Control characters shown as escapes, as mux_core.views.escape_controls does.
  function printable(text) {
    return String(text).replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
      (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }

  // A payload's time as epoch seconds, or NaN, as mux_qt.model.parse_time
  // reads it: numbers are seconds (milliseconds, microseconds, nanoseconds
  // told by their size), text is ISO 8601 (without an offset: local time).
  function parseTime(value) {
    if (typeof value === "number") {
      if (!isFinite(value)) return NaN;
      const size = Math.abs(value);
      if (size >= 1e17) return value / 1e9;
      if (size >= 1e14) return value / 1e6;
      if (size >= 1e11) return value / 1e3;
      return value;
    }
    if (typeof value === "string" && /^\d{4}-\d{2}-\d{2}/.test(value)) {
      const ms = Date.parse(value.replace(" ", "T"));
      return isFinite(ms) ? ms / 1000 : NaN;
    }
    return NaN;
  }

  // JSON as mux writes it: a recording may hold bare NaN / Infinity literals.
  function parseRecord(text) {
    try { return JSON.parse(text); } catch (error) { /* fall through */ }
    let out = "", inString = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (inString) {
        out += c;
        if (c === "\\") { out += text[++i]; } else if (c === '"') inString = false;
        continue;
      }
      if (c === '"') { inString = true; out += c; continue; }
      if (text.startsWith("NaN", i)) { out += '"\u0000NaN"'; i += 2; continue; }
      if (text.startsWith("-Infinity", i)) { out += '"\u0000-Inf"'; i += 8; continue; }
      if (text.startsWith("Infinity", i)) { out += '"\u0000Inf"'; i += 7; continue; }
      out += c;
    }
    return JSON.parse(out, (key, value) => {
      if (value === "\u0000NaN") return NaN;
      if (value === "\u0000Inf") return Infinity;
      if (value === "\u0000-Inf") return -Infinity;
      return value;
    });
  }

  // -- the model ---------------------------------------------------------------

  const state = {
    hello: null,
    sources: new Map(),
    fields: [],
    stepField: "step",
    timeField: null,
    xMode: "step",
    smoothing: 0,
    logY: new Set(),
    points: 10000,
    alerts: [],
    plots: new Map(),
    dirty: true,
  };

  function colourOf(name) {
    let hash = 0;
    for (const c of name) hash = (hash * 31 + c.codePointAt(0)) >>> 0;
    return PALETTE[hash % PALETTE.length];
  }

  function source(name, transport) {
    let s = state.sources.get(name);
    if (s) return s;
    const info = (state.hello && state.hello.sources || []).find((i) => i.name === name) || {};
    s = {
      name, transport: transport || info.transport || "",
      status: null, lastAt: null, lastSeq: 0, lastStep: null, lastPtime: NaN,
      rate: new RateMeter(), stale: new StaleWatch(info.stale_after || null),
      run: 1, newRun: false, alerts: 0, lastAlert: null, quality: null,
      wasConnected: false, outageAt: null, outages: [], runStarts: [], pendingMarks: [],
      series: new Map(), latest: new Map(), row: null,
    };
    state.sources.set(name, s);
    addRow(s);
    return s;
  }

  function seriesOf(s, field) {
    let runs = s.series.get(field);
    if (!runs) { runs = []; s.series.set(field, runs); }
    let current = runs[runs.length - 1];
    if (!current || current.run !== s.run) {
      current = { run: s.run, steps: [], times: [], ptimes: [], values: [] };
      runs.push(current);
      if (runs.length > KEEP_RUNS) runs.shift();
    }
    return current;
  }

  function trim(series) {
    const extra = series.values.length - state.points;
    if (extra > Math.max(16, state.points / 8)) {
      series.steps.splice(0, extra); series.times.splice(0, extra);
      series.ptimes.splice(0, extra); series.values.splice(0, extra);
    }
  }

  function onEvent(r) {
    const s = source(r.source, r.transport);
    const data = r.data;
    const step = data && typeof data === "object" ? data[state.stepField] : undefined;
    const hasStep = typeof step === "number" && isFinite(step);
    const ptime = state.timeField && data && typeof data === "object" ? parseTime(data[state.timeField]) : NaN;
    if (s.newRun || (hasStep && s.lastStep !== null && step < s.lastStep)) {
      if (s.lastSeq) { s.run += 1; s.runStarts.push({ run: s.run, step: hasStep ? step : null, at: r.received_at, ptime }); }
      s.newRun = false;
    }
    if (isFinite(ptime)) {
      // The first payload time after an outage ends its span on the payload-time axis.
      for (const o of s.outages) if (o.pend === undefined) o.pend = ptime;
      s.lastPtime = ptime;
    }
    s.rate.add(r.received_at, r.seq);
    s.stale.saw(r.received_at);
    s.lastAt = r.received_at;
    s.lastSeq = r.seq;
    if (hasStep) s.lastStep = step;
    for (const mark of s.pendingMarks.filter((m) => m.seq === r.seq)) {
      mark.step = hasStep ? step : s.lastStep; mark.at = r.received_at; mark.ptime = s.lastPtime;
    }
    s.pendingMarks = s.pendingMarks.filter((m) => m.seq > r.seq);
    if (!data || typeof data !== "object") return;
    for (const field of state.fields) {
      if (!(field in data)) continue;
      let value = data[field];
      s.latest.set(field, value);
      if (value !== null && typeof value !== "number") continue;
      if (value !== null && !isFinite(value)) value = null; // NaN / Inf: the line breaks
      const series = seriesOf(s, field);
      series.steps.push(hasStep ? step : (s.lastStep === null ? r.seq : s.lastStep));
      series.times.push(r.received_at);
      series.ptimes.push(ptime);
      series.values.push(value);
      trim(series);
    }
    state.dirty = true;
  }

  function onStatus(r) {
    const s = source(r.source, r.transport);
    s.status = r;
    if (r.state === "connected") {
      if (s.outageAt !== null) s.outages.push({ start: s.outageAt, end: r.at, pstart: s.outagePtime });
      s.outageAt = null;
      s.wasConnected = true;
    } else if (s.wasConnected && s.outageAt === null && r.state !== "connecting") {
      // An outage: every line of the source breaks here.
      s.outageAt = r.at;
      s.outagePtime = s.lastPtime;
      for (const runs of s.series.values()) {
        const series = runs[runs.length - 1];
        if (!series || !series.values.length) continue;
        series.steps.push(series.steps[series.steps.length - 1] + 0.5);
        series.times.push(Math.max(r.at, series.times[series.times.length - 1]));
        series.ptimes.push(s.lastPtime + 1e-3);
        series.values.push(null);
      }
      state.dirty = true;
    }
  }

  function onAlert(r) {
    const s = source(r.source, r.transport);
    s.alerts += 1;
    s.lastAlert = r;
    if (r.rule === "restart") s.newRun = true;
    const mark = { severity: r.severity, seq: r.seq, step: s.lastStep, at: r.at, ptime: s.lastPtime, rule: r.rule };
    if (r.seq !== null && r.seq > s.lastSeq) { mark.step = null; s.pendingMarks.push(mark); }
    state.alerts.push({ record: r, mark, source: s });
    if (state.alerts.length > 500) state.alerts.shift();
    addAlertLine(r);
    state.dirty = true;
  }

  function onQuality(r) { source(r.source, r.transport).quality = r; }

  function onRecord(text) {
    const r = parseRecord(text);
    if (!r || typeof r !== "object" || typeof r.source !== "string") return;
    const at = r.type === "event" ? r.received_at : r.at;
    if (typeof at === "number") clock.saw(at);
    if (r.type === "event") onEvent(r);
    else if (r.type === "status") onStatus(r);
    else if (r.type === "alert") onAlert(r);
    else if (r.type === "quality") onQuality(r);
  }

  // -- the rows ----------------------------------------------------------------

  function addRow(s) {
    const tr = el("tr");
    tr.dataset.source = s.name;
    const name = el("td", "name", s.name === printable(s.name) ? s.name : printable(s.name));
    name.appendChild(el("small", "", s.transport));
    const stateCell = el("td", "state");
    const badge = el("span", "badge", "waiting");
    const detail = el("span", "detail", "");
    stateCell.append(badge, detail);
    const values = el("td", "values", "—");
    const rate = el("td", "num rate", "0.0");
    const age = el("td", "num age", "—");
    const run = el("td", "num run", "1");
    const alerts = el("td", "alerts-cell", "—");
    const quality = el("td", "quality", "—");
    const action = el("td", "action");
    const button = el("button", "restart", "restart");
    button.type = "button";
    button.hidden = true;
    button.addEventListener("click", () => restart(s, button));
    action.appendChild(button);
    tr.append(name, stateCell, values, rate, age, run, alerts, quality, action);
    $("rows").appendChild(tr);
    $("empty").hidden = true;
    s.row = { tr, badge, detail, values, rate, age, run, alerts, quality, button };
  }

  function set(node, text) { if (node.textContent !== text) node.textContent = text; }

  function badgeFor(s, now) {
    const st = s.status;
    if (!st) return ["waiting", "no status yet", COLOURS.grey];
    const name = st.state.replace(/_/g, " ");
    const detail = st.detail ? printable(st.detail) : "";
    if (st.state === "connected") {
      if (s.stale.isStale(now)) {
        const quiet = formatAge(s.stale.quietFor(now)).replace(/ ago$/, "");
        return ["stale · " + quiet, "connected, no event for " + quiet + " (stale after " + Number(s.stale.threshold().toPrecision(3)) + " s)", COLOURS.stale];
      }
      return [name, "", COLOURS.green];
    }
    if (WAITING.has(st.state)) {
      const parts = [];
      if (st.retry_in !== null && st.retry_in !== undefined) {
        const left = Math.max(0, st.retry_in - Math.max(0, now - st.at));
        parts.push("retry in " + left.toFixed(1) + " s");
      }
      parts.push("attempt " + st.attempt);
      if (st.state !== "connecting" && detail) parts.push(detail);
      return [name, parts.join(" · "), COLOURS.amber];
    }
    if (BROKEN.has(st.state)) return [name, detail, COLOURS.red];
    return [name, detail, COLOURS.grey];
  }

  // The newest value of each plotted field: numbers as the views write them,
  // anything else as (shortened) text.
  function valuesText(s) {
    const parts = [];
    for (const field of state.fields) {
      if (!s.latest.has(field)) continue;
      const v = s.latest.get(field);
      let shown;
      if (v === null || typeof v === "number") shown = formatValue(v === null ? NaN : v);
      else {
        shown = printable(typeof v === "string" ? v : JSON.stringify(v));
        if (shown.length > 80) shown = shown.slice(0, 79) + "…";
      }
      parts.push(field + " " + shown);
    }
    return parts.length ? parts.join(" · ") : "—";
  }

  function qualityText(q) {
    if (!q) return "—";
    let text = "up " + (q.uptime * 100).toFixed(1) + "% · " + q.reconnects + " reconnect" + (q.reconnects === 1 ? "" : "s");
    text += q.gaps === null || q.gaps === undefined ? " · gaps n/a" : " · " + q.gaps + " gap" + (q.gaps === 1 ? "" : "s");
    if (q.lag_p99 !== null && q.lag_p99 !== undefined) text += " · lag p99 " + Number(q.lag_p99.toPrecision(3)) + " s";
    return text;
  }

  function paintRows() {
    const now = clock.now();
    for (const s of state.sources.values()) {
      const row = s.row;
      const [name, detail, colour] = badgeFor(s, now);
      set(row.badge, name);
      row.badge.style.backgroundColor = colour;
      set(row.detail, detail);
      set(row.values, valuesText(s));
      set(row.rate, formatRate(s.rate.rate(now)));
      set(row.age, s.lastAt === null ? "—" : formatAge(now - s.lastAt));
      set(row.run, String(s.run));
      const alert = s.lastAlert;
      set(row.alerts, alert ? s.alerts + " · " + alert.severity + ": " + printable(alert.message) : "—");
      row.alerts.className = "alerts-cell" + (alert ? " sev-" + alert.severity : "");
      set(row.quality, qualityText(s.quality));
      row.button.hidden = !(state.hello && !state.hello.replay && s.status && RESTARTABLE.has(s.status.state));
    }
    set($("clock"), new Date(now * 1000).toLocaleTimeString());
  }

  function addAlertLine(r) {
    const li = el("li", "sev-" + r.severity);
    const time = el("time", "", new Date(r.at * 1000).toLocaleTimeString());
    li.append(time, document.createTextNode(printable(r.source) + " · " + r.rule + " · " + printable(r.message)));
    const list = $("alerts");
    list.appendChild(li);
    while (list.children.length > 500) list.removeChild(list.firstChild);
    list.scrollTop = list.scrollHeight;
  }

  async function restart(s, button) {
    button.disabled = true;
    try {
      const response = await fetch("/restart?source=" + encodeURIComponent(s.name), { method: "POST", credentials: "same-origin" });
      if (!response.ok) button.title = "restart refused (" + response.status + ")";
    } finally {
      setTimeout(() => { button.disabled = false; }, 1000);
    }
  }

  // -- the plots ---------------------------------------------------------------

  function ema(values, weight) {
    if (!weight) return values;
    const out = new Array(values.length);
    let last = null;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null) { out[i] = null; last = null; continue; }
      last = last === null ? v : weight * last + (1 - weight) * v;
      out[i] = last;
    }
    return out;
  }

  function plotSeries(field) {
    const list = [];
    for (const s of state.sources.values()) {
      const runs = s.series.get(field) || [];
      runs.forEach((series, index) => {
        if (!series.values.length) return;
        const label = runs.length > 1 || series.run > 1 ? s.name + " · run " + series.run : s.name;
        list.push({ s, series, label, faded: index < runs.length - 1 });
      });
    }
    return list;
  }

  function plotData(field, list, log) {
    const tables = list.map(({ series }) => {
      const mode = state.xMode;
      const xs = mode === "time" ? series.times : mode === "ptime" ? series.ptimes : series.steps;
      let ys = ema(series.values, state.smoothing);
      if (log) ys = ys.map((v) => (v !== null && v <= 0 ? undefined : v));
      let order = null;
      if (mode === "ptime") {
        // Payload times may come out of order (a backlog after a reconnect):
        // drawn where they happened; points without one are left out.
        order = [];
        for (let i = 0; i < xs.length; i++) if (isFinite(xs[i])) order.push(i);
        order.sort((a, b) => xs[a] - xs[b] || a - b);
      }
      // x must rise within a table: keep the first of equal or earlier xs.
      const keepX = [], keepY = [];
      let last = -Infinity;
      const n = order ? order.length : xs.length;
      for (let k = 0; k < n; k++) {
        const i = order ? order[k] : k;
        if (xs[i] > last) { keepX.push(xs[i]); keepY.push(ys[i]); last = xs[i]; }
      }
      return [keepX, keepY];
    });
    if (tables.length === 1) return [tables[0][0], tables[0][1]];
    return uPlot.join(tables);
  }

  function markPlugin(field) {
    return {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
          const xOf = (mark) => (state.xMode === "time" ? mark.at : state.xMode === "ptime" ? mark.ptime : mark.step);
          const line = (x, colour, dash) => {
            if (x === null || x === undefined || !isFinite(x)) return;
            const px = u.valToPos(x, "x", true);
            if (px < u.bbox.left || px > u.bbox.left + u.bbox.width) return;
            ctx.save(); ctx.strokeStyle = colour; ctx.lineWidth = 1.5 * devicePixelRatio;
            ctx.setLineDash(dash); ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, top + height); ctx.stroke(); ctx.restore();
          };
          if (state.xMode === "time" || state.xMode === "ptime") {
            const byPayload = state.xMode === "ptime";
            for (const s of state.sources.values()) {
              const spans = s.outages.map((o) => (byPayload ? { start: o.pstart, end: o.pend } : o));
              if (s.outageAt !== null) spans.push(byPayload ? { start: s.outagePtime, end: s.lastPtime } : { start: s.outageAt, end: clock.now() });
              for (const o of spans) {
                if (!isFinite(o.start) || !isFinite(o.end)) continue;
                const a = u.valToPos(o.start, "x", true), b = u.valToPos(o.end, "x", true);
                ctx.save(); ctx.fillStyle = "rgba(198,40,40,0.08)"; ctx.fillRect(a, top, Math.max(b - a, 1), height); ctx.restore();
              }
            }
          }
          for (const s of state.sources.values()) {
            for (const start of s.runStarts) line(xOf(start), COLOURS.grey, [6 * devicePixelRatio, 4 * devicePixelRatio]);
          }
          for (const { mark } of state.alerts) {
            const colour = mark.severity === "critical" ? COLOURS.red : mark.severity === "warning" ? COLOURS.amber : COLOURS.blue;
            line(xOf(mark), colour, []);
          }
        }],
      },
    };
  }

  function ensurePlot(field) {
    let plot = state.plots.get(field);
    if (plot) return plot;
    const box = el("div", "plot");
    box.dataset.field = field;
    const head = el("div", "plot-head");
    head.appendChild(el("strong", "", field));
    const label = el("label");
    const log = el("input");
    log.type = "checkbox";
    log.checked = state.logY.has(field);
    log.addEventListener("change", () => {
      if (log.checked) state.logY.add(field); else state.logY.delete(field);
      rebuild(field);
    });
    label.append(log, document.createTextNode(" log y"));
    head.appendChild(label);
    const area = el("div", "plot-area");
    const empty = el("p", "note", "no values of " + field + " yet");
    box.append(head, area, empty);
    $("plots").appendChild(box);
    plot = { field, box, area, empty, chart: null, signature: "" };
    state.plots.set(field, plot);
    return plot;
  }

  function rebuild(field) {
    const plot = state.plots.get(field);
    if (plot && plot.chart) { plot.chart.destroy(); plot.chart = null; plot.signature = ""; }
    state.dirty = true;
  }

  function drawPlots() {
    for (const field of state.fields) {
      const plot = ensurePlot(field);
      const list = plotSeries(field);
      plot.empty.hidden = list.length > 0;
      if (!list.length) continue;
      const log = state.logY.has(field);
      const signature = state.xMode + "|" + log + "|" + list.map((i) => i.label).join("\u0000");
      const data = plotData(field, list, log);
      const width = Math.max(plot.area.clientWidth, 200);
      // What the page shows, for a reader (and the browser tests): the x axis
      // and the first and last x of the first line.
      plot.box.dataset.x = state.xMode;
      plot.box.dataset.xs = JSON.stringify(data[0].length ? [data[0][0], data[0][data[0].length - 1]] : []);
      if (plot.chart && plot.signature === signature) {
        plot.chart.setData(data);
        continue;
      }
      if (plot.chart) plot.chart.destroy();
      const xLabel = state.xMode === "time" ? "time" : state.xMode === "ptime" ? state.timeField : state.stepField;
      const series = [{ label: xLabel }];
      const styles = [];
      for (const item of list) {
        const colour = colourOf(item.s.name);
        // Earlier runs: the source's colour, dashed and a little lighter --
        // plainly there, and plainly not the current run.
        const style = item.faded
          ? { stroke: colour + "b3", width: 1.25, dash: [6, 3] }
          : { stroke: colour, width: 2, dash: [] };
        styles.push({ label: item.label, faded: item.faded, stroke: style.stroke, dash: style.dash });
        series.push({
          label: item.label, stroke: style.stroke, width: style.width, dash: style.dash,
          spanGaps: false, points: { show: false },
          value: (u, v) => formatValue(v),
        });
      }
      plot.box.dataset.series = JSON.stringify(styles);
      const opts = {
        width, height: 260,
        scales: { x: { time: state.xMode === "time" || state.xMode === "ptime" }, y: log ? { distr: 3 } : {} },
        series,
        axes: [{}, { size: 72, values: (u, vals) => vals.map(tickText) }],
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        plugins: [markPlugin(field)],
      };
      plot.chart = new uPlot(opts, data, plot.area);
      plot.signature = signature;
    }
    state.dirty = false;
  }

  // -- the stream --------------------------------------------------------------

  function reset() {
    state.sources.clear();
    state.alerts = [];
    $("rows").replaceChildren();
    $("alerts").replaceChildren();
    $("empty").hidden = false;
    for (const plot of state.plots.values()) if (plot.chart) plot.chart.destroy();
    state.plots.clear();
    $("plots").replaceChildren();
    state.dirty = true;
  }

  function onHello(text) {
    const hello = JSON.parse(text);
    const first = state.hello === null;
    if (state.hello && state.hello.epoch !== hello.epoch) reset();
    state.hello = hello;
    state.fields = Array.isArray(hello.fields) ? hello.fields.map(String) : [];
    // As the Qt panel: x is the step field, "received_at" or the time_field;
    // with either time the step field is "step".
    state.timeField = typeof hello.time_field === "string" && hello.time_field ? hello.time_field : null;
    const x = typeof hello.x === "string" ? hello.x : "step";
    state.stepField = x === "received_at" || x === state.timeField ? "step" : x;
    if (typeof hello.points === "number") state.points = hello.points;
    const choice = $("x-axis");
    set(choice.querySelector('option[value="step"]'), "by " + state.stepField);
    let byPayload = choice.querySelector('option[value="ptime"]');
    if (state.timeField && !byPayload) {
      byPayload = el("option", "", "");
      byPayload.value = "ptime";
      choice.appendChild(byPayload);
    }
    if (byPayload) {
      if (state.timeField) set(byPayload, "by " + state.timeField + " (payload time)");
      else { if (state.xMode === "ptime") state.xMode = "step"; byPayload.remove(); }
    }
    if (first) {
      for (const f of hello.log_y || []) state.logY.add(String(f));
      state.xMode = x === "received_at" ? "time" : state.timeField && x === state.timeField ? "ptime" : "step";
    }
    choice.value = state.xMode;
    document.title = "mux — " + hello.config;
    set($("title"), "mux — " + hello.config + (hello.replay ? " (replay)" : ""));
    for (const info of hello.sources || []) source(info.name, info.transport);
    state.dirty = true;
  }

  function connect() {
    const link = $("link");
    const events = new EventSource("/events");
    events.addEventListener("hello", (e) => onHello(e.data));
    events.addEventListener("reset", () => reset());
    // An event holds one record or more, one JSON Lines line each.
    events.addEventListener("message", (e) => { for (const line of e.data.split("\n")) onRecord(line); });
    events.addEventListener("open", () => { link.className = "link live"; set(link, "live"); });
    events.addEventListener("error", () => {
      if (events.readyState === EventSource.CLOSED) {
        link.className = "link lost"; set(link, "mux is not reachable: reload to try again");
      } else {
        link.className = "link waiting"; set(link, "reconnecting to mux…");
      }
    });
  }

  $("x-axis").addEventListener("change", (e) => { state.xMode = e.target.value; state.dirty = true; });
  $("smoothing").addEventListener("input", (e) => {
    state.smoothing = Number(e.target.value);
    set($("smoothing-value"), state.smoothing ? state.smoothing.toFixed(2) : "off");
    state.dirty = true;
  });
  window.addEventListener("resize", () => {
    for (const plot of state.plots.values()) {
      if (plot.chart) plot.chart.setSize({ width: Math.max(plot.area.clientWidth, 200), height: 260 });
    }
  });

  setInterval(paintRows, 250);
  setInterval(() => { if (state.dirty) drawPlots(); }, 500);
  connect();
})();
