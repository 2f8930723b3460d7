/* The /dashboard page: fetches dashboard_data() as JSON and draws it with Chart.js. No build step. */
(function () {
  "use strict";
  const body = document.body;
  const dataUrl = body.dataset.url;
  const refreshSeconds = Number(body.dataset.refresh || 15);
  const palette = ["#2563eb", "#d97706", "#16a34a", "#9333ea", "#0891b2", "#dc2626", "#4b5563", "#db2777"];
  const charts = {};  // id -> Chart, kept across refreshes so charts update in place
  window.modelyardCharts = charts;
  Chart.defaults.animation = false;
  Chart.defaults.font.family = "system-ui, sans-serif";
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const c of children) if (c) node.append(c);
    return node;
  };
  const hhmm = (epoch) => new Date(epoch * 1000).toISOString().slice(11, 16);
  const when = (iso) => (iso || "").replace("T", " ").slice(0, 19);
  const pct = (x) => (x == null ? "–" : (100 * x).toFixed(1) + "%");
  const ms = (x) => (x == null ? "–" : x.toFixed(1) + " ms");
  const slug = (s) => s.replace(/[^a-zA-Z0-9_-]/g, "_");

  function timeAxis(range) {
    // min and max from the window: without them a chart with no data spans 0..1 (every tick read 00:00)
    const [min, max] = range || [undefined, undefined];
    return { type: "linear", min, max, ticks: { callback: (v) => hhmm(v), maxTicksLimit: 6 }, grid: { display: false } };
  }

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (charts[id]) {
      charts[id].data = config.data;
      charts[id].options = config.options;
      charts[id].update();
      return;
    }
    charts[id] = new Chart(canvas, config);
  }

  function lineConfig(series, yTitle, threshold, yFormat, range) {
    const datasets = series.map((s, i) => ({
      label: s.label, data: s.points, borderColor: s.color || palette[i % palette.length],
      backgroundColor: (s.color || palette[i % palette.length]) + "33", fill: s.fill || false,
      pointRadius: 0, borderWidth: 2, tension: 0.25, spanGaps: true,
    }));
    const top = Math.max(0, ...series.flatMap((s) => s.points.map((p) => p.y || 0)));
    if (threshold != null && series.length && top >= threshold / 4) {  // a far-away limit would flatten the data
      const xs = series[0].points.map((p) => p.x);
      datasets.push({ label: "limit", data: [{ x: xs[0], y: threshold }, { x: xs[xs.length - 1], y: threshold }],
                      borderColor: "#dc2626", borderDash: [6, 4], pointRadius: 0, borderWidth: 1.5 });
    }
    return {
      type: "line", data: { datasets },
      options: { maintainAspectRatio: false, parsing: true, interaction: { mode: "nearest", intersect: false },
                 scales: { x: timeAxis(range), y: { beginAtZero: true, title: { display: !!yTitle, text: yTitle },
                                               ticks: { callback: yFormat || ((v) => v) } } } },
    };
  }

  function panel(title, id, cls) {
    return el("div", { class: "panel " + (cls || "") }, el("h3", { text: title }),
              el("div", { class: "chart-box" + (cls === "wide" ? " tall" : "") }, el("canvas", { id })));
  }

  function modelCard(m) {
    const id = slug(m.name);
    let card = document.getElementById("model-" + id);
    if (card) return card;
    card = el("section", { class: "model", id: "model-" + id });
    card.append(
      el("div", { class: "model-head" }, el("h2", { text: m.name }), el("span", { class: "aliases" })),
      el("div", { class: "kpis" }),
      el("div", { class: "grid" },
         panel("Traffic split (requests in window)", "split-" + id),
         panel("Requests per second, by version", "rate-" + id),
         panel("Latency", "latency-" + id),
         panel("Error rate", "errors-" + id),
         panel("Drift per feature (PSI vs training reference)", "drift-" + id, "wide"),
         panel("Live quality on labelled rows vs held out", "quality-" + id, "wide")),
      el("div", { class: "lists" },
         el("div", {}, el("h3", { text: "Recent alerts" }), el("ul", { class: "feed alerts" })),
         el("div", {}, el("h3", { text: "Alias events" }), el("ul", { class: "feed events" }))));
    document.getElementById("models").append(card);
    return card;
  }

  function renderModel(m, data) {
    const id = slug(m.name);
    const card = modelCard(m);
    const firing = m.alerts.filter((a) => a.status === "firing");
    const aliases = card.querySelector(".aliases");
    aliases.replaceChildren(...m.aliases.map((a) => el("span", { class: "badge " + a.alias,
      text: `${a.alias} → v${a.version}` + (a.weight != null ? ` (${Math.round(a.weight * 100)}%)` : "") })),
      ...(firing.length ? [el("span", { class: "badge firing", text: `${firing.length} alert(s) firing` })] : []));
    const t = m.totals;
    card.querySelector(".kpis").replaceChildren(...[
      ["requests", t.requests], ["req/s", t.rate_per_s.toFixed(2)], ["error rate", pct(t.error_rate)],
      ["p50", ms(t.latency_p50_ms)], ["p95", ms(t.latency_p95_ms)],
      ["canary weight", m.canary_weight == null ? "–" : pct(m.canary_weight)],
    ].map(([label, value]) => el("div", { class: "kpi" }, el("b", { text: String(value) }), el("span", { text: label }))));

    const split = m.traffic_split;
    draw("split-" + id, {
      type: "doughnut",
      data: { labels: split.map((s) => `v${s.version} ${s.route}`),
              datasets: [{ data: split.map((s) => s.requests), backgroundColor: split.map((_, i) => palette[i % palette.length]) }] },
      options: { maintainAspectRatio: false, plugins: { legend: { position: "right" } } },
    });
    const s = m.series;
    const pts = (ys) => s.t.map((x, i) => ({ x, y: ys[i] }));
    draw("rate-" + id, lineConfig(Object.entries(s.requests_per_s).map(([v, ys]) => ({ label: "v" + v, points: pts(ys), fill: true })), "req/s",
                                  null, null, s.t_range));
    draw("latency-" + id, lineConfig([{ label: "p50", points: pts(s.latency_p50_ms) }, { label: "p95", points: pts(s.latency_p95_ms) }],
                                     `ms (p95 limit ${m.thresholds.latency_p95_ms})`, m.thresholds.latency_p95_ms, null, s.t_range));
    draw("errors-" + id, lineConfig([{ label: "error rate", points: pts(s.error_rate), color: "#dc2626", fill: true }],
                                    `limit ${pct(m.thresholds.error_rate)}`, m.thresholds.error_rate, (v) => (100 * v).toFixed(0) + "%", s.t_range));
    const versions = m.drift.filter((d) => d.features.length);
    const worst = {};  // feature -> largest PSI over the versions: the worst drift comes first
    for (const d of versions) for (const f of d.features) worst[f.feature] = Math.max(worst[f.feature] ?? 0, f.psi ?? 0);
    const labels = Object.keys(worst).sort((a, b) => worst[b] - worst[a]);
    const limit = m.thresholds.psi;
    draw("drift-" + id, {
      type: "bar",
      data: { labels, datasets: versions.map((d, i) => ({
        label: `v${d.version} (${d.rows} rows)`, data: labels.map((f) => (d.features.find((x) => x.feature === f) || {}).psi),
        backgroundColor: labels.map((f) => {
          const v = (d.features.find((x) => x.feature === f) || {}).psi;
          return v != null && v > limit ? "#dc2626" : palette[i % palette.length];
        }),
      })) },
      options: { maintainAspectRatio: false, indexAxis: "y",
                 scales: { x: { beginAtZero: true, title: { display: true, text: `PSI (alert above ${limit})` } },
                           y: { ticks: { autoSkip: false, font: { size: 11 } } } },
                 plugins: { legend: { display: versions.length > 1, labels: { generateLabels: (chart) =>
                   chart.data.datasets.map((d, i) => ({ text: d.label, fillStyle: palette[i % palette.length],
                                                        strokeStyle: palette[i % palette.length], datasetIndex: i })) } } } },
    });
    const box = document.getElementById("drift-" + id).parentElement;
    box.dataset.empty = versions.length ? "" : "no traffic in the window";

    const quality = (m.quality || []).filter((q) => q.series.length);
    const heldout = quality.length ? quality[0].heldout : null;
    draw("quality-" + id, lineConfig(quality.map((q) => ({
      label: `v${q.version} ${q.metric} (${q.labelled} labelled)` +
             (q.estimated_accuracy != null ? `, CBPE ${q.estimated_accuracy.toFixed(3)}` : ""),
      points: q.series.map((p) => ({ x: p.t, y: p.value })) })),
      quality.length ? `${quality[0].metric} (held out ${heldout ?? "–"})` : "", heldout));
    document.getElementById("quality-" + id).parentElement.dataset.empty =
      quality.length ? "" : "no outcomes in the window";

    const alerts = card.querySelector("ul.alerts");
    alerts.replaceChildren(...(m.alerts.length ? m.alerts.map((a) => el("li", { class: a.status },
      el("time", { text: when(a.started_at) }), el("span", { class: "dot " + a.status }), a.message))
      : [el("li", { class: "muted", text: "no alerts recorded" })]));
    const events = card.querySelector("ul.events");
    events.replaceChildren(...(m.events.length ? m.events.map((e) => el("li", {},
      el("time", { text: when(e.at) }), `${e.kind}${e.alias ? " " + e.alias : ""}: ` +
      `${e.from_version != null ? "v" + e.from_version + " → " : ""}${e.to_version != null ? "v" + e.to_version : ""}` +
      `${e.actor ? " by " + e.actor : ""}${e.reason ? " (" + e.reason + ")" : ""}`))
      : [el("li", { class: "muted", text: "no events" })]));
  }

  function renderFleet(f) {
    // regions × (model@alias) with the versions live there; stale instances listed and marked; skew flagged
    const box = document.getElementById("fleet");
    if (!f) { box.hidden = true; return; }
    box.hidden = false;
    const cols = [...new Set(f.grid.map((c) => `${c.model}@${c.alias}`))].sort();
    const regions = f.regions.length ? f.regions : [];
    const head = el("tr", {}, el("th", { text: "region" }), ...cols.map((c) => el("th", { text: c })));
    const rows = regions.map((r) => el("tr", { "data-region": r }, el("th", { text: r }), ...cols.map((c) => {
      const cells = f.grid.filter((g) => g.region === r && `${g.model}@${g.alias}` === c);
      return el("td", { text: cells.map((g) => `v${g.version} ×${g.instances}`).join(", ") || "–" });
    })));
    const skewed = new Set(f.skew.map((s) => `${s.model}@${s.alias}`));
    head.querySelectorAll("th").forEach((th) => { if (skewed.has(th.textContent)) th.className = "skew"; });
    const instances = f.instances.map((i) => el("li", { class: i.stale ? "stale" : i.status },
      el("span", { class: "dot " + (i.stale ? "firing" : i.status === "running" ? "resolved" : "") }),
      `${i.region || "(no region)"}${i.zone ? "/" + i.zone : ""} ${i.kind} ${i.host}:${i.pid} · ` +
      (i.serving.map((s) => `${s.model}@${s.alias} v${s.version}`).join(", ") || "nothing") +
      ` · last seen ${Math.round(i.age_seconds)}s ago` + (i.stale ? " · STALE" : i.status !== "running" ? " · " + i.status : "")));
    box.replaceChildren(
      el("h2", { text: `Fleet: ${f.live} live, ${f.stale} stale instance(s) in ${regions.length} region(s)` }),
      ...f.skew.map((s) => el("p", { class: "skew-warning", text: "version skew: " + s.message })),
      el("table", { class: "fleet-grid" }, el("thead", {}, head), el("tbody", {}, ...rows)),
      el("ul", { class: "feed instances" }, ...(instances.length ? instances : [el("li", { class: "muted", text: "no heartbeats" })])));
  }

  async function refresh() {
    try {
      const response = await fetch(dataUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`${dataUrl}: HTTP ${response.status}`);
      const data = await response.json();
      document.getElementById("summary").textContent =
        `${data.models.length} model(s), last ${Math.round(data.window_seconds / 60)} min`;
      document.getElementById("updated").textContent = "updated " + when(data.generated_at) + " UTC";
      if (!data.models.length) {
        document.getElementById("models").replaceChildren(el("p", { class: "empty", text: "No models in the registry yet." }));
      }
      renderFleet(data.fleet);
      for (const m of data.models) renderModel(m, data);
      document.getElementById("error").hidden = true;
      body.dataset.ready = "1";
    } catch (err) {
      const box = document.getElementById("error");
      box.textContent = "could not load the dashboard data: " + err.message;
      box.hidden = false;
      body.dataset.ready = "error";
    }
  }
  refresh();
  setInterval(refresh, refreshSeconds * 1000);
})();
