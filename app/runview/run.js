// The run page: draws the view the server embedded, then follows the run while it is live.
// Text from a run only ever reaches the DOM through textContent.
"use strict";

(function () {
  performance.mark("traindoc-script"); // plotly.js and this script evaluated
  const LIVE_POLL_MS = window.TRAINDOC_POLL_MS || 1000;
  const WAIT_POLL_MS = 2000;
  const config = Object.assign({ responsive: true }, window.TRAINDOC_CONFIG || {});
  const state = { view: JSON.parse(document.getElementById("view").textContent), etag: null, timer: null };
  state.steps = state.view.steps || null;
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function box(kind, ...children) { return el("div", { class: "box " + kind, role: "alert" }, ...children); }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function ago(ts) {
    if (typeof ts !== "number" || !isFinite(ts) || ts <= 0) return "-";
    const d = Math.max(0, Date.now() / 1000 - ts);
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
      if (d >= size) return Math.round(d / size) + " " + unit + " ago";
    }
    return Math.round(d) + " s ago";
  }

  function settings() {
    return { smoothing: Number($("smoothing").value), log: $("log-y").checked };
  }

  function query() {
    const q = new URLSearchParams();
    if (state.view.name) q.set("run", state.view.name);
    if (state.view.state === "run") {
      const s = settings();
      q.set("smoothing", s.smoothing.toFixed(2));
      if (s.log) q.set("log", "1");
      if (state.steps) { q.set("x0", String(state.steps[0])); q.set("x1", String(state.steps[1])); }
    }
    return q;
  }

  function apiUrl() { return "api/run?" + query().toString(); }

  function keepInLink() { history.replaceState(null, "", "?" + query().toString()); }

  // Zooming the step axis of any chart shows that range on every chart, rebuilt by the server
  // from the range's own points (as fine as the whole run's view); a double click goes back.
  function onRelayout(ev) {
    let next;
    if (ev["xaxis.range[0]"] !== undefined) next = [ev["xaxis.range[0]"], ev["xaxis.range[1]"]];
    else if (Array.isArray(ev["xaxis.range"])) next = ev["xaxis.range"];
    else if (ev["xaxis.autorange"]) next = null;
    else return; // the y axis alone, the legend, ...
    if (next) {
      next = next.map((x) => Math.round(Number(x) * 100) / 100);
      if (!(isFinite(next[0]) && isFinite(next[1]) && next[0] < next[1])) return;
    }
    if (JSON.stringify(next) === JSON.stringify(state.steps)) return;
    state.steps = next;
    keepInLink();
    refresh(true);
  }

  function facts(v) {
    const p = $("facts");
    clear(p);
    const parts = [["status ", el("b", {}, v.status)], ["step ", el("b", {}, String(v.step))],
      [v.records + " values"], [el("span", { id: "age", "data-updated": String(v.updated) }, "updated " + ago(v.updated))]];
    if (v.device) parts.push([String(v.device)]);
    if (v.torch) parts.push(["torch " + v.torch]);
    if (v.tensorboard) parts.push(["TensorBoard logdir"]);
    parts.forEach((bits, i) => { if (i) p.append(" · "); p.append(...bits); });
  }

  function findings(v) {
    const notes = $("notes"), out = $("findings");
    clear(notes); clear(out);
    for (const problem of v.problems) notes.append(box("warning", "Part of this run could not be read: " + problem));
    for (const line of v.readings || []) notes.append(box("info", "How this run was read: " + line));
    if (!v.diagnosed) {
      notes.append(box("warning", el("b", {}, "Not diagnosed"), ": no curve rule could judge this run (" +
        v.not_diagnosed + "). Say what its series are in the panel at the bottom of this page (saved as " +
        "traindoc-tb.toml beside the logs) to have it judged."));
    } else if (!v.findings.length) {
      const skipped = v.skipped.length ? " Not judged, for lack of inputs: " + v.skipped.join(", ") + "." : "";
      notes.append(box("success", "No problems found by the diagnostics." + skipped));
    }
    if (v.spikes && v.spikes.length) {
      const s = box("info", el("b", {}, "Loss spikes (" + v.spikes.length + ")"), ": " + v.spikes_text);
      s.id = "spikes";
      notes.append(s);
    }
    if (!v.findings.length) return;
    out.append(el("h2", {}, "Findings (" + v.findings.length + ")"));
    for (const f of v.findings) {
      const kind = ["error", "warning", "info"].includes(f.severity) ? f.severity : "info";
      out.append(box(kind, el("b", {}, f.rule), " (" + f.severity + ", steps " + f.steps[0] + "–" + f.steps[1] +
        "): " + f.advice + "\nEvidence: " + f.evidence +
        (f.raised ? "\nFirst raised during training at step " + f.raised.step + "." : "")));
    }
  }

  function drawInto(container, figures, cls, prefix) {
    const keep = new Set(figures.map(([k]) => prefix + k));
    for (const div of Array.from(container.querySelectorAll(".chart"))) {
      if (!keep.has(div.dataset.key)) { Plotly.purge(div); div.remove(); }
    }
    figures.forEach(([k, fig], i) => {
      let div = Array.from(container.querySelectorAll(".chart")).find((d) => d.dataset.key === prefix + k);
      if (!div) {
        div = el("div", { class: "chart " + cls });
        div.dataset.key = prefix + k;
        container.append(div);
      }
      if (container.children[i] !== div) container.insertBefore(div, container.children[i]);
      if (state.steps) fig.layout.xaxis = Object.assign({}, fig.layout.xaxis, { range: state.steps, autorange: false });
      Plotly.react(div, fig.data, fig.layout, config);
      if (!div.dataset.hooked) { div.on("plotly_relayout", onRelayout); div.dataset.hooked = "1"; }
    });
  }

  function charts(v) {
    const box_ = $("charts");
    const shown = v.figures.charts;
    const info = $("charts-info");
    if (info) info.remove();
    if (!shown.length) {
      const text = v.has_series
        ? "None of this run's series is a loss, accuracy, learning rate or update ratio that traindoc knows: they are drawn below as custom scalars."
        : "No series yet: the run has started but nothing has been flushed. This page refreshes by itself.";
      box_.before(Object.assign(box("info", text), { id: "charts-info" }));
    }
    drawInto(box_, shown, "", "");
    const custom = $("custom");
    if (!v.figures.custom.length) { clear(custom); return; }
    if (!custom.querySelector("h2")) {
      custom.append(el("h2", {}, "Custom scalars"), el("div", { class: "grid three", id: "custom-grid" }));
    }
    drawInto($("custom-grid"), v.figures.custom, "small", "custom:");
  }

  function extra(v) {
    const out = $("extra");
    const open = Array.from(out.querySelectorAll("details")).map((d) => d.open);
    if (out.dataset.for === v.name && out.dataset.tags === JSON.stringify(v.mappable) &&
        out.dataset.meta === JSON.stringify(v.meta)) return; // unchanged: keep what the user typed
    clear(out);
    out.dataset.for = v.name;
    out.dataset.tags = JSON.stringify(v.mappable);
    out.dataset.meta = JSON.stringify(v.meta);
    const meta = el("details", {}, el("summary", {}, "Configuration and metadata"),
      el("pre", {}, JSON.stringify(v.meta, null, 1)));
    meta.open = !!open[0];
    out.append(meta);
    if (!v.mappable.length) return;
    const form = el("form", { class: "mapping" });
    const choices = ["leave as is", ...v.meanings, "ignore"];
    for (const tag of v.mappable) {
      const select = el("select", { "data-tag": tag, "aria-label": tag });
      for (const c of choices) select.append(el("option", { value: c }, c));
      form.append(el("label", {}, el("span", {}, tag), select));
    }
    const status = el("p", { class: "caption", role: "status" });
    form.append(el("button", { type: "submit" }, "Save and diagnose again"), status);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const map = {}, ignore = [];
      for (const s of form.querySelectorAll("select")) {
        if (s.value === "ignore") ignore.push(s.dataset.tag);
        else if (s.value !== "leave as is") map[s.dataset.tag] = s.value;
      }
      if (!Object.keys(map).length && !ignore.length) { status.textContent = "Nothing chosen."; return; }
      const r = await fetch("api/mapping", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ run: v.name, map, ignore }) });
      const answer = await r.json();
      status.textContent = r.ok ? "Saved to " + answer.saved + "; diagnosing again…" : "Not saved: " + answer.error;
      if (r.ok) refresh(true);
    });
    const panel = el("details", {}, el("summary", {},
      "Series traindoc could not place (" + v.mappable.length + "): say what they are"), form);
    panel.open = true;
    out.append(panel);
  }

  function render(v) {
    state.view = v;
    const title = $("title");
    if (v.state === "pick") {
      title.textContent = "Run";
      const list = el("ul", { class: "runs" });
      for (const name of v.runs) list.append(el("li", {}, el("a", { href: "run?run=" + encodeURIComponent(name), target: "_self" }, name)));
      $("findings").append(el("p", {}, "Pick a run" + (v.more ? " (the first " + v.runs.length + "; " + v.more + " more are on the runs page)" : "") + ":"), list);
      return;
    }
    title.textContent = v.name;
    document.title = v.name + " · traindoc";
    if (v.state === "missing") {
      title.textContent = "Run";
      clear($("notes"));
      $("notes").append(box("error", "No run named “" + v.name + "” under this dashboard's folder."),
        el("p", {}, el("a", { href: "runs", target: "_self" }, "Back to all runs")));
      return schedule(WAIT_POLL_MS);
    }
    if (v.state === "error") {
      clear($("notes"));
      $("notes").append(box("warning", "This run cannot be shown yet: " + v.error));
      return schedule(WAIT_POLL_MS);
    }
    $("controls").hidden = false;
    facts(v);
    findings(v);
    charts(v);
    extra(v);
    if (v.live) schedule(LIVE_POLL_MS);
  }

  function schedule(ms) {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => refresh(false), ms);
  }

  async function refresh(force) {
    const before = state.view.state;
    const mine = (state.seq = (state.seq || 0) + 1); // only the newest request's answer is drawn
    try {
      const r = await fetch(apiUrl(), { headers: force || !state.etag ? {} : { "If-None-Match": state.etag } });
      if (mine !== state.seq) return;
      if (r.status === 304) return schedule(before === "run" ? LIVE_POLL_MS : WAIT_POLL_MS);
      if (!r.ok) throw new Error("HTTP " + r.status);
      state.etag = r.headers.get("ETag");
      const v = await r.json();
      if (mine !== state.seq) return;
      if (v.state !== before && before !== "run") { location.reload(); return; } // it appeared: draw it whole
      render(v);
    } catch (e) {
      schedule(WAIT_POLL_MS); // the server restarting, say: try again, keep what is drawn
    }
  }

  function onSettings() {
    $("smoothing-value").textContent = settings().smoothing.toFixed(2);
    keepInLink();
    refresh(true);
  }

  const v = state.view;
  $("smoothing").value = String(v.smoothing !== undefined ? v.smoothing : 0.6);
  $("smoothing-value").textContent = Number($("smoothing").value).toFixed(2);
  $("log-y").checked = !!v.log_y;
  $("smoothing").addEventListener("input", () => { $("smoothing-value").textContent = Number($("smoothing").value).toFixed(2); });
  $("smoothing").addEventListener("change", onSettings);
  $("log-y").addEventListener("change", onSettings);
  setInterval(() => { const a = $("age"); if (a) a.textContent = "updated " + ago(Number(a.dataset.updated) || NaN); }, 1000);
  render(v);
  performance.mark("traindoc-drawn");
})();
