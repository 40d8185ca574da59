// Roost dashboard: overview, sensor charts, MQTT console, rejects, tokens, sessions, users.
// Plain JS, no build step. Every value from the network is written with textContent (or as an
// attribute value), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const key = (s) => `${s.owner}/${s.place}/${s.category}`;
const enc = encodeURIComponent;
const VIEWS = ["overview", "sensor", "alerts", "console", "rejects", "tokens", "sessions", "users"];
const api = async (path, init) => {
  const r = await fetch(path, init);
  if (r.status === 401) { showLogin(); throw new Error("log in first"); }
  if (!r.ok) {
    // Error bodies are JSON `{"error": …}`, but a proxy in front may answer with anything.
    const body = await r.json().catch(() => ({}));
    throw new Error(body.error || `${r.status} ${r.statusText}`);
  }
  return r.json();
};
const send = (method, path, body) =>
  api(path, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
// A failed request is said on the page, not only in the browser's console.
const showError = (e) => {
  console.error(e);
  if (!$("view-login").hidden) return; // the login form is the answer
  $("error-banner").textContent = `Could not load this page: ${e.message}`;
  $("error-banner").hidden = false;
};
const clearError = () => { $("error-banner").hidden = true; };
const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// ---- times ----
const localTime = (ms) => new Date(ms).toLocaleString();
// "5 s ago", "3 min ago", "2 h ago", "4 d ago"; the full time is in the element's title.
function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
function setTime(e, ms) {
  e.textContent = ms === null || ms === undefined ? "never" : ago(ms);
  if (ms === null || ms === undefined) { delete e.dataset.ts; e.title = ""; } else { e.dataset.ts = ms; e.title = localTime(ms); }
  return e;
}
const timeEl = (tag, cls, ms) => setTime(el(tag, cls), ms);
setInterval(() => document.querySelectorAll("[data-ts]").forEach((e) => { e.textContent = ago(+e.dataset.ts); }), 5000);

// ---- icons (shapes after Feather icons, MIT) ----
const ICONS = {
  temperature: ["M14 14.76V3.5a2.5 2.5 0 0 0-5 0v11.26a4.5 4.5 0 1 0 5 0z"],
  humidity: ["M12 2.69l5.66 5.66a8 8 0 1 1-11.31 0z"],
  illuminate: ["M12 7a5 5 0 1 0 0 10a5 5 0 1 0 0-10z", "M12 1v2M12 21v2M4.22 4.22l1.42 1.42M18.36 18.36l1.42 1.42M1 12h2M21 12h2M4.22 19.78l1.42-1.42M18.36 5.64l1.42-1.42"],
  other: ["M22 12h-4l-3 9L9 3l-3 9H2"],
};
ICONS.light = ICONS.illuminate;
function icon(category) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  for (const d of ICONS[category] || ICONS.other) {
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "currentColor");
    path.setAttribute("stroke-width", "2");
    path.setAttribute("stroke-linecap", "round");
    path.setAttribute("stroke-linejoin", "round");
    svg.append(path);
  }
  return svg;
}

let config = { stale_after_ms: 600000, units: {}, normal_ranges: {} };
let me = null;
const sensors = new Map(); // key -> { sensor, tile, spark: [values] }
let currentChart = null;   // { keys, uplot, data, live, maxPoints }

// A sensor's unit: its own, else its category's.
const unitOf = (s) => s.unit || config.units[s.category] || "";
// A sensor's name: the one given on its settings, else its category.
const nameOf = (s) => s.display_name || s.category;
const formatValue = (value, s) => {
  if (value === null || value === undefined) return "–";
  const unit = unitOf(s);
  return `${+value.toFixed(2)}${unit ? " " + unit : ""}`;
};
// "low", "high" or "normal" against the category's normal range; "" without one.
function band(value, category) {
  const range = config.normal_ranges[category];
  if (!range || value === null) return "";
  return value < range.low ? "low" : value > range.high ? "high" : "normal";
}

// ---- login (when the server requires it) ----
function showLogin() {
  for (const v of VIEWS) $(`view-${v}`).hidden = true;
  document.querySelector("nav").hidden = true;
  $("view-login").hidden = false;
}
$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/api/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: $("login-username").value, password: $("login-password").value }),
  });
  if (r.ok) { location.reload(); return; }
  // Other refusals say why (503: too many logins at once).
  const why = r.status === 401 ? null : (await r.json().catch(() => null))?.error;
  $("login-error").textContent = r.status === 401 ? "Wrong user name or password." : `Login failed (${r.status})${why ? `: ${why}` : "."}`;
  $("login-error").hidden = false;
});
$("logout").addEventListener("click", async () => {
  await fetch("/api/logout", { method: "POST" });
  location.reload();
});
// Who is logged in; fills the console's credentials with a console token. `null`: log in first.
async function whoAmI() {
  const r = await fetch("/api/me");
  if (r.status === 401) return null;
  const who = await r.json();
  $("nav-sessions").hidden = !who.admin;
  $("nav-users").hidden = !who.admin || who.anonymous; // accounts need a logged-in admin
  if (!who.anonymous) {
    $("who").textContent = who.username + (who.admin ? " (admin)" : "");
    $("who").hidden = $("logout").hidden = false;
    $("nav-tokens").hidden = false;
    $("console-username").value = who.username;
    $("console-password").value = who.mqtt_password;
  }
  return who;
}

const bytes = (n) => (n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`);

// ---- health banner (admins): what /healthz says while ingest is degraded, a disk almost full,
// and the database's size under the overview ----
let lastStats = null;
function watchHealth() {
  const check = async () => {
    let problem = null, what = "Readings are";
    try {
      const r = await fetch("/healthz");
      if (!r.ok) {
        const body = await r.json().catch(() => ({}));
        if (!body.ingest && body.broker_state) what = "Retained messages and persistent sessions are";
        problem = body.ingest || body.broker_state || (body.database ? `database ${body.database}` : `health check answered ${r.status}`);
      }
    } catch (e) {
      problem = "the server does not answer";
    }
    let text = problem ? `${what} not being stored: ${problem}. Devices are held back; nothing acknowledged is lost.` : "";
    // /api/stats counts rows: asked for at load and every 5 minutes, not with every health check.
    if (!lastStats || Date.now() - lastStats.at > 300000) lastStats = { at: Date.now(), body: await api("/api/stats").catch(() => null) };
    const life = lastStats.body && lastStats.body.lifecycle;
    if (life && life.disk) {
      const free = Math.round((100 * life.disk.free_bytes) / life.disk.total_bytes);
      if (life.disk_low) text = `${text} The database's disk is almost full: ${bytes(life.disk.free_bytes)} free (${free}%). Shorten the retention, delete sensors, or add space.`.trim();
      const size = life.size;
      $("database-size").textContent = size
        ? `Database: ${bytes(size.bytes)}, ${size.rows.map(([t, n]) => `${n.toLocaleString()} ${t}`).filter((x) => /readings |rejects/.test(x + " ")).join(", ")}`
          + `${size.oldest_reading_ms ? `, oldest reading ${new Date(size.oldest_reading_ms).toLocaleDateString()}` : ""}; disk ${free}% free.`
        : `Disk ${free}% free.`;
    }
    $("health-banner").textContent = text;
    $("health-banner").hidden = !text;
  };
  check();
  setInterval(check, 5000);
}

// ---- live feed (server-sent events of committed readings) ----
function connectLive() {
  const source = new EventSource("/api/live");
  const status = (live) => {
    $("live-status").classList.toggle("live", live);
    $("live-status").title = live ? "Live updates: on" : "Live updates: reconnecting";
  };
  source.onopen = () => status(true);
  source.onerror = () => status(false);
  source.addEventListener("readings", (event) => {
    for (const r of JSON.parse(event.data)) onReading(r);
  });
  source.addEventListener("resync", () => reloadOverviewSoon());
}

// Readings of sensors the page does not know yet (a new board) reload the overview once, not
// once per reading.
let overviewReload = null;
function reloadOverviewSoon() {
  if (overviewReload) return;
  overviewReload = setTimeout(() => {
    overviewReload = null;
    if (!$("view-overview").hidden) loadOverview().catch(showError);
    else loadSensors().catch(showError);
  }, 500);
}

function onReading(r) {
  const k = key(r);
  const known = sensors.get(k);
  if (!known) { reloadOverviewSoon(); return; }
  // Several nodes' commits arrive in any order: an older reading does not replace a newer one.
  if (known.sensor.last_seen_ms != null && r.ts < known.sensor.last_seen_ms) return;
  known.sensor.last_value = r.value;
  known.sensor.last_seen_ms = r.ts;
  known.spark.push(r.value);
  if (known.spark.length > 60) known.spark.shift();
  if (known.tile) renderTile(known);
  if (currentChart && currentChart.keys[0] === k) {
    renderNow(known.sensor);
    if (currentChart.live) addLivePoint(r);
  }
}

// ---- overview: owners, then boards (places), then sensors ----
async function loadSensors() {
  const list = await api("/api/sensors");
  for (const s of list) {
    const entry = sensors.get(key(s)) || { spark: [] };
    entry.sensor = s;
    sensors.set(key(s), entry);
  }
  return list;
}

let showHidden = false;
$("show-hidden").addEventListener("click", () => { showHidden = !showHidden; loadOverview().catch(showError); });

async function loadOverview() {
  const all = await loadSensors();
  const hidden = all.filter((s) => s.hidden).length;
  $("show-hidden").hidden = hidden === 0;
  $("show-hidden").textContent = showHidden ? `Leave out ${hidden} hidden` : `Show ${hidden} hidden`;
  const list = all.filter((s) => showHidden || !s.hidden);
  $("no-sensors").hidden = all.length > 0;
  const byOwner = new Map();
  for (const s of list) {
    if (!byOwner.has(s.owner)) byOwner.set(s.owner, new Map());
    const places = byOwner.get(s.owner);
    if (!places.has(s.place)) places.set(s.place, []);
    places.get(s.place).push(s);
  }
  // The viewer's own boards first, then the others by name.
  const owners = [...byOwner.keys()].sort((a, b) => (b === me?.username) - (a === me?.username) || a.localeCompare(b));
  const sections = owners.map((owner) => {
    const places = byOwner.get(owner);
    const section = el("section", "owner");
    section.dataset.owner = owner;
    const title = el("h2", null, owner);
    const count = [...places.values()].reduce((n, g) => n + g.length, 0);
    title.append(el("span", "muted", `${places.size} ${places.size === 1 ? "board" : "boards"} · ${count} sensors`));
    const boards = el("div", "boards");
    for (const [place, group] of [...places].sort((a, b) => a[0].localeCompare(b[0]))) {
      const board = el("article", "card board");
      board.dataset.place = place;
      const tiles = el("div", "tiles");
      for (const s of group.sort((a, b) => a.category.localeCompare(b.category))) {
        const entry = sensors.get(key(s));
        entry.tile = el("a", "tile");
        entry.tile.href = `#/sensor/${enc(s.owner)}/${enc(s.place)}/${enc(s.category)}`;
        entry.tile.dataset.sensor = key(s);
        entry.tile.dataset.category = s.category;
        renderTile(entry);
        tiles.append(entry.tile);
      }
      board.append(el("h3", null, place), tiles);
      boards.append(board);
    }
    section.append(title, boards);
    return section;
  });
  $("owners").replaceChildren(...sections);
  await loadTrends();
}

// The last hour's trend line of every tile that has none yet, in one request.
async function loadTrends() {
  const missing = [...sensors.values()].filter((e) => e.spark.length === 0);
  if (missing.length === 0) return;
  let trends;
  try { trends = await api("/api/trends"); } catch (e) { return; } // a missing trend line is not worth an error
  for (const entry of missing) {
    const values = trends[key(entry.sensor)];
    if (values && entry.spark.length === 0) {
      entry.spark = values.slice(-60);
      if (entry.tile) renderTile(entry);
    }
  }
}

function renderTile(entry) {
  const s = entry.sensor;
  const stale = s.last_seen_ms === null || Date.now() - s.last_seen_ms > config.stale_after_ms;
  entry.tile.classList.toggle("stale", stale);
  entry.tile.title = `${s.owner} · ${s.place} · ${s.category}`;
  const value = el("div", `value ${band(s.last_value, s.category)}`, formatValue(s.last_value, s));
  const canvas = el("canvas");
  canvas.dataset.category = s.category;
  entry.tile.replaceChildren(icon(s.category), el("div", "category", nameOf(s)), timeEl("div", "seen", s.last_seen_ms), value, canvas);
  drawSpark(canvas, entry.spark);
}

// The CSS variable of a category's colour (app.css defines them for both themes).
const categoryColour = (category) => ({ temperature: "--cat-temperature", humidity: "--cat-humidity", illuminate: "--cat-illuminate", light: "--cat-illuminate" })[category] || "--cat-other";

function drawSpark(canvas, values) {
  if (values.length < 2) return;
  const width = 240, height = 28;
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d");
  const min = Math.min(...values), max = Math.max(...values), span = max - min || 1;
  ctx.strokeStyle = cssVar(categoryColour(canvas.dataset.category));
  ctx.lineWidth = 1.5; ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * (width - 2) + 1, y = height - 2 - ((v - min) / span) * (height - 4);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

// ---- sensor page ----
// Bucket widths the chart picks from, so that a point is "5 minutes", never "82 s".
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800].map((s) => s * 1000);
const niceStep = (ms) => STEPS.find((s) => s >= ms) || STEPS[STEPS.length - 1];
function stepWords(ms) {
  const s = ms / 1000;
  const [n, unit] = s % 86400 === 0 ? [s / 86400, "day"] : s % 3600 === 0 ? [s / 3600, "hour"] : s % 60 === 0 ? [s / 60, "minute"] : [s, "second"];
  return n === 1 ? `1 ${unit}` : `${n} ${unit}s`;
}
const SERIES_COLOURS = ["--accent", "--cat-temperature", "--ok", "--cat-other", "--cat-illuminate"];

function parseSensorHash() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let compare = [];
  try { compare = parts[6] ? JSON.parse(parts[6]) : []; } catch (e) { compare = []; }
  // A hand-made link may hold anything: keep owner/place/category strings only.
  compare = Array.isArray(compare) ? compare.filter((c) => typeof c === "string" && c.split("/").length === 3) : [];
  return { owner: parts[1], place: parts[2], category: parts[3], from: +parts[4] || 0, to: +parts[5] || 0, compare };
}
function sensorHash({ owner, place, category, from, to, compare }) {
  let hash = `#/sensor/${enc(owner)}/${enc(place)}/${enc(category)}`;
  if (from || to || compare.length) hash += `/${from || ""}/${to || ""}`;
  if (compare.length) hash += `/${enc(JSON.stringify(compare))}`;
  return hash;
}

function renderNow(s) {
  $("sensor-now").textContent = formatValue(s.last_value, s);
  $("sensor-now").className = `value ${band(s.last_value, s.category)}`;
  setTime($("sensor-seen"), s.last_seen_ms);
}

async function showSensor(view) {
  const { owner, place, category } = view;
  const k = `${owner}/${place}/${category}`;
  const to = view.to || Date.now();
  const from = view.from || to - 86400000;
  const live = Math.abs(to - Date.now()) < 60000;
  if (!sensors.has(k)) await loadSensors();
  const entry = sensors.get(k);
  const own = entry ? entry.sensor : { owner, place, category };
  $("sensor-title").textContent = `${place} · ${nameOf(own)} (${owner})`;
  if (entry) renderNow(entry.sensor); else { $("sensor-now").textContent = ""; setTime($("sensor-seen"), null); }
  renderSettings(entry ? entry.sensor : null);
  document.querySelectorAll("[data-range]").forEach((b) => b.classList.toggle("active", live && Math.abs(to - from - +b.dataset.range) < 60000));
  const base = (s) => `/api/sensors/${enc(s.owner)}/${enc(s.place)}/${enc(s.category)}/readings`;
  $("csv-link").href = `${base(view)}.csv?from=${from}&to=${to}`;
  $("range-from").value = toInputValue(from);
  $("range-to").value = toInputValue(to);
  renderCompareControls(view);

  const chartBox = $("chart");
  const width = Math.max(300, chartBox.clientWidth - 24);
  // Whole steps: the buckets start on multiples of the step, so each point is exactly one step.
  const step = niceStep((to - from) / Math.min(width, 1000));
  const start = Math.floor(from / step) * step, end = Math.ceil(to / step) * step;
  const buckets = Math.min(10000, Math.round((end - start) / step));
  const shown = [view, ...view.compare.map((c) => { const [o, p, cat] = c.split("/"); return { owner: o, place: p, category: cat }; })];
  const bodies = await Promise.all(shown.map((s, i) => api(`${base(s)}?from=${start}&to=${end}&buckets=${buckets}`).catch((e) => {
    if (i === 0) throw e;
    return { buckets: [], failed: e.message }; // a compared sensor that went away is left out
  })));
  // One x axis for every series: the union of bucket starts.
  const xsMs = [...new Set(bodies.flatMap((b) => b.buckets.map((x) => x.start)))].sort((a, b) => a - b);
  const index = new Map(xsMs.map((x, i) => [x, i]));
  const column = (body, field) => {
    const out = new Array(xsMs.length).fill(null);
    for (const b of body.buckets) out[index.get(b.start)] = b[field];
    return out;
  };
  const xs = xsMs.map((x) => x / 1000); // at the bucket's start, never after now
  const data = [xs, column(bodies[0], "avg"), column(bodies[0], "min"), column(bodies[0], "max")];
  const known = (s) => (sensors.get(key(s)) || { sensor: s }).sensor;
  const axisOf = (s) => unitOf(known(s)) || s.category;
  const scales = [...new Set(shown.map(axisOf))];
  const colour = (i) => cssVar(SERIES_COLOURS[i % SERIES_COLOURS.length]);
  const series = [
    {},
    { label: `${nameOf(own)} (${owner}/${place})`, stroke: colour(0), width: 2, scale: axisOf(view), value: (u, v) => (v === null ? "–" : formatValue(v, own)) },
    { label: "min", stroke: cssVar("--band"), width: 1, scale: axisOf(view) },
    { label: "max", stroke: cssVar("--band"), width: 1, scale: axisOf(view) },
  ];
  shown.slice(1).forEach((s, i) => {
    data.push(column(bodies[i + 1], "avg"));
    series.push({ label: `${nameOf(known(s))} (${s.owner}/${s.place})`, stroke: colour(i + 1), width: 1.5, scale: axisOf(s), spanGaps: true,
      value: (u, v) => (v === null ? "–" : formatValue(v, known(s))) });
  });
  const axisStyle = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--line") }, ticks: { stroke: cssVar("--line") } };
  const axes = [{ ...axisStyle }, ...scales.slice(0, 2).map((scale, i) => ({ ...axisStyle, scale, side: i === 0 ? 3 : 1, label: scale, grid: i === 0 ? axisStyle.grid : { show: false } }))];
  const opts = {
    width, height: 360, series, axes,
    bands: [{ series: [3, 2], fill: cssVar("--band") }],
    scales: { x: { time: true, min: from / 1000, max: to / 1000 } },
  };
  if (currentChart) currentChart.uplot.destroy();
  currentChart = { keys: [k], data, live, maxPoints: Math.max(xs.length, width), uplot: new uPlot(opts, data, chartBox) };
  const count = bodies[0].buckets.reduce((n, b) => n + b.count, 0);
  const missing = bodies.filter((b) => b.failed).map((b) => b.failed);
  // Past the raw readings' retention the server answers from its summaries, in wider buckets.
  const source = { raw: "the readings", minutes: "the per-minute summaries", hours: "the hourly summaries" }[bodies[0].series] || "the readings";
  const kept = own.retention ? ` Raw readings are kept ${own.retention === "forever" ? "forever" : `for ${own.retention}`}; older ranges come from the summaries.` : "";
  $("chart-note").textContent = `${count} readings. Each point: the average of ${stepWords(Math.max(step, bodies[0].bucket_ms || 0))} (line), `
    + `with the lowest and highest reading as a band, from ${source}. Times in your time zone.${kept}`
    + `${missing.length ? ` Not shown: ${missing.join("; ")}.` : ""}`;
}

// ---- a sensor's settings (its owner and admins): name, unit, hidden, retention, delete ----
let settingsFor = null;
function renderSettings(s) {
  const mine = s && me && (me.admin || me.username === s.owner);
  $("sensor-settings").hidden = !mine;
  if (!mine) return;
  settingsFor = s;
  $("settings-name").value = s.display_name || "";
  $("settings-unit").value = s.unit || "";
  $("settings-unit").placeholder = config.units[s.category] || "none";
  $("settings-hidden").checked = s.hidden;
  $("settings-retention").value = s.retention_from === "sensor" ? s.retention : "";
  $("settings-retention").placeholder = `${s.retention} (${s.retention_from === "rule" ? "a retention rule" : "the server's default"})`;
  $("settings-state").textContent = "";
}
const sensorUrl = (s) => `/api/sensors/${enc(s.owner)}/${enc(s.place)}/${enc(s.category)}`;
async function sendSettings(method, body) {
  const r = await fetch(sensorUrl(settingsFor), { method, headers: { "content-type": "application/json" }, body: body && JSON.stringify(body) });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.error || `${r.status}`);
  return answer;
}
$("sensor-settings-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = (id) => $(id).value.trim() || null;
  try {
    const s = await sendSettings("PATCH", {
      display_name: text("settings-name"), unit: text("settings-unit"),
      hidden: $("settings-hidden").checked, retention: text("settings-retention"),
    });
    const entry = sensors.get(key(s));
    if (entry) entry.sensor = s;
    renderSettings(s);
    $("settings-state").textContent = "Saved.";
    $("sensor-title").textContent = `${s.place} · ${nameOf(s)} (${s.owner})`;
    renderNow(s);
  } catch (err) {
    $("settings-state").textContent = `Not saved: ${err.message}`;
  }
});
$("settings-delete").addEventListener("click", async () => {
  const s = settingsFor;
  if (!confirm(`Delete ${s.owner}/${s.place}/${s.category} with all its readings? A board that still publishes to it creates it again.`)) return;
  try {
    await sendSettings("DELETE");
    sensors.delete(key(s));
    location.hash = "#/overview";
  } catch (err) {
    $("settings-state").textContent = `Not deleted: ${err.message}`;
  }
});

// A live point is its own bucket: min = avg = max. The x scale follows the present.
function addLivePoint(r) {
  const data = currentChart.data;
  // x must ascend: an older reading (a device's own timestamp) shows when the chart is redrawn.
  if (data[0].length && r.ts / 1000 <= data[0][data[0].length - 1]) return;
  data[0].push(r.ts / 1000); data[1].push(r.value); data[2].push(r.value); data[3].push(r.value);
  for (let i = 4; i < data.length; i++) data[i].push(null);
  // A chart left open for days keeps as many points as it was drawn with, not every reading.
  while (data[0].length > currentChart.maxPoints) for (const a of data) a.shift();
  const u = currentChart.uplot, span = u.scales.x.max - u.scales.x.min;
  u.setData(data, false);
  u.setScale("x", { min: r.ts / 1000 - span, max: Math.max(r.ts / 1000, u.scales.x.max) });
}

function renderCompareControls(view) {
  const own = key(view);
  const options = [...sensors.values()].map((e) => key(e.sensor)).filter((k) => k !== own && !view.compare.includes(k)).sort();
  const select = $("compare-select");
  select.replaceChildren(el("option", null, "a sensor…"), ...options.map((k) => el("option", null, k)));
  select.firstChild.value = "";
  const chips = view.compare.map((k, i) => {
    const chip = el("span", "chip");
    const swatch = el("span", "swatch");
    swatch.style.setProperty("--swatch", `var(${SERIES_COLOURS[(i + 1) % SERIES_COLOURS.length]})`);
    const remove = el("button", null, "×");
    remove.title = `Remove ${k} from the chart`;
    remove.addEventListener("click", () => { location.hash = sensorHash({ ...view, compare: view.compare.filter((c) => c !== k) }); });
    chip.append(swatch, el("span", null, k), remove);
    return chip;
  });
  $("compare-list").replaceChildren(...chips);
}
$("compare-select").addEventListener("change", () => {
  const chosen = $("compare-select").value;
  if (!chosen) return;
  const view = parseSensorHash();
  location.hash = sensorHash({ ...view, compare: [...view.compare, chosen] });
});

const toInputValue = (ms) => {
  const d = new Date(ms);
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
};

document.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => {
  const view = parseSensorHash(), to = Date.now();
  location.hash = sensorHash({ ...view, from: to - +b.dataset.range, to });
}));
$("range-apply").addEventListener("click", () => {
  const view = parseSensorHash();
  const from = new Date($("range-from").value).getTime(), to = new Date($("range-to").value).getTime();
  if (from < to) location.hash = sensorHash({ ...view, from, to });
});

// ---- MQTT console ----
let client = null;
// MQTT.js is most of the page's weight and only the console needs it: load it on first use.
let mqttLoaded = null;
const loadMqtt = () => mqttLoaded || (mqttLoaded = new Promise((resolve, reject) => {
  const script = document.createElement("script");
  script.src = "/static/vendor/mqtt-5.16.0.min.js";
  script.onload = resolve;
  script.onerror = () => { mqttLoaded = null; reject(new Error("could not load MQTT.js")); };
  document.head.append(script);
}));
// Whether an MQTT topic filter (with + and #) matches a topic.
function topicMatches(filter, topic) {
  if (!filter || filter === "#") return true;
  const f = filter.split("/"), t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length || (f[i] !== "+" && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}
const MAX_MESSAGES = 500;
function setupConsole() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  $("console-url").value = `${scheme}://${location.host}/mqtt`;
  const log = (text) => {
    $("console-log").prepend(el("li", null, `${new Date().toLocaleTimeString()}  ${text}`));
    while ($("console-log").children.length > 200) $("console-log").lastChild.remove();
  };
  const state = (text) => {
    $("console-state").textContent = text;
    $("console-state").className = `state ${text === "connected" ? "connected" : text.startsWith("connecting") ? "connecting" : ""}`;
    $("console-connect-button").textContent = text === "disconnected" ? "Connect" : "Disconnect";
  };
  const subscriptions = new Set();
  const renderSubscriptions = () => {
    $("console-subscriptions").replaceChildren(...[...subscriptions].map((filter) => {
      const chip = el("span", "chip");
      const remove = el("button", null, "×");
      remove.type = "button";
      remove.title = `Unsubscribe from ${filter}`;
      remove.addEventListener("click", () => client && client.unsubscribe(filter, () => { subscriptions.delete(filter); renderSubscriptions(); log(`unsubscribed from ${filter}`); }));
      chip.append(el("span", null, filter), remove);
      return chip;
    }));
  };
  const showMatching = () => {
    const filter = $("console-show").value.trim();
    let shown = 0;
    for (const row of $("console-messages").children) {
      row.hidden = !topicMatches(filter, row.dataset.topic);
      if (!row.hidden) shown++;
    }
    $("console-count").textContent = `${shown} of ${$("console-messages").children.length} messages`;
  };
  $("console-show").addEventListener("input", showMatching);
  $("console-clear").addEventListener("click", () => { $("console-messages").replaceChildren(); showMatching(); });
  // MQTT 5.0 properties worth showing: user properties (in order, repeats kept) and the
  // content type, as `key=value`.
  const describeProperties = (properties = {}) => {
    const user = Object.entries(properties.userProperties || {})
      .flatMap(([key, values]) => (Array.isArray(values) ? values : [values]).map((value) => `${key}=${value}`));
    if (properties.contentType) user.push(`content-type=${properties.contentType}`);
    return user.join(" ");
  };
  // "unit=C, board=nodemcu" as MQTT.js user properties; a repeated key keeps every value.
  const parseUserProperties = (text) => {
    const properties = {};
    for (const pair of text.split(",").map((p) => p.trim()).filter(Boolean)) {
      const [key, ...rest] = pair.split("=");
      const value = rest.join("=").trim();
      const name = key.trim();
      properties[name] = name in properties ? [].concat(properties[name], value) : value;
    }
    return properties;
  };
  const onMessage = (topic, payload, packet) => {
    const row = el("tr");
    row.dataset.topic = topic;
    row.append(el("td", null, new Date().toLocaleTimeString()), el("td", "mono", topic), el("td", "mono", payload.toString()),
      el("td", null, String(packet.qos)), el("td", null, packet.retain ? "retained" : ""), el("td", "mono", describeProperties(packet.properties)));
    $("console-messages").prepend(row);
    while ($("console-messages").children.length > MAX_MESSAGES) $("console-messages").lastChild.remove();
    showMatching();
  };
  $("console-connect").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (client) { // the button says "Disconnect"
      client.end(true); client = null; subscriptions.clear(); renderSubscriptions();
      state("disconnected"); log("disconnected");
      return;
    }
    try { await loadMqtt(); } catch (err) { log(err.message); return; }
    // MQTT 5.0: reason codes on refusals, and message properties to show.
    const options = { protocolVersion: 5, clientId: `roost-console-${Math.random().toString(16).slice(2, 10)}` };
    // Empty fields connect anonymously (a server run with --allow-anonymous).
    if ($("console-username").value) {
      options.username = $("console-username").value;
      options.password = $("console-password").value;
    }
    client = mqtt.connect($("console-url").value, options);
    state("connecting…");
    client.on("connect", () => { state("connected"); log(`connected to ${$("console-url").value} (MQTT 5.0)`); });
    client.on("reconnect", () => state("connecting…"));
    client.on("close", () => { if (client) state("connecting…"); });
    client.on("error", (err) => log(`error: ${err.message}`));
    client.on("message", onMessage);
  });
  $("console-subscribe").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!client) return log("connect first");
    const filter = $("console-filter").value, qos = +$("console-sub-qos").value;
    client.subscribe(filter, { qos }, (err, granted) => {
      if (err) return log(`subscribe to ${filter} refused (${err.message}): not allowed for this user, or an invalid filter`);
      subscriptions.add(filter); renderSubscriptions();
      log(`subscribed to ${filter} (granted ${granted.map((g) => (g.qos === 128 ? "denied" : g.qos)).join(",")})`);
    });
  });
  $("console-publish").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!client) return log("connect first");
    const topic = $("console-topic").value, payload = $("console-payload").value;
    const qos = +$("console-qos").value, retain = $("console-retain").checked;
    const userProperties = parseUserProperties($("console-user-properties").value);
    const properties = Object.keys(userProperties).length ? { userProperties } : {};
    client.publish(topic, payload, { qos, retain, properties }, (err) => log(err ? `publish failed: ${err.message}` : `published to ${topic} (QoS ${qos}${retain ? ", retained" : ""})`));
  });
}

// ---- tables with a button per row ----
function buttonCell(label, title, onClick, cls) {
  const button = el("button", cls, label);
  if (title) button.title = title;
  button.addEventListener("click", onClick);
  const cell = el("td");
  cell.append(button);
  return cell;
}
const row = (...cells) => {
  const tr = el("tr");
  tr.append(...cells.map((c) => (c instanceof Node ? c : el("td", null, c))));
  return tr;
};

// ---- rejects ----
async function showRejects() {
  const list = await api("/api/rejects?limit=500");
  const select = $("rejects-client"), chosen = select.value;
  const clients = [...new Set(list.map((r) => r.client_id))].sort();
  select.replaceChildren(el("option", null, "all"), ...clients.map((c) => el("option", null, c)));
  select.firstChild.value = "";
  select.value = clients.includes(chosen) ? chosen : "";
  const rows = list.filter((r) => !select.value || r.client_id === select.value)
    .map((r) => row(timeEl("td", null, r.received_at_ms), r.client_id, r.topic, r.payload, r.reason));
  $("rejects-body").replaceChildren(...rows);
}
$("rejects-client").addEventListener("change", showRejects);

// ---- API tokens ----
async function showTokens() {
  const list = await api("/api/tokens");
  $("tokens-body").replaceChildren(...list.map((t) => row(String(t.id), t.user, t.name, timeEl("td", null, t.created_at_ms),
    t.expires_at_ms ? localTime(t.expires_at_ms) : "never",
    buttonCell("Revoke", "It stops working at once", async () => { await send("DELETE", `/api/tokens/${t.id}`).catch(showError); await showTokens(); }))));
}
$("token-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { name: $("token-name").value };
  if ($("token-days").value) body.days = +$("token-days").value;
  try {
    const answer = await send("POST", "/api/tokens", body);
    $("token-error").hidden = true;
    $("token-value").textContent = answer.token;
    $("token-new").hidden = false;
    $("token-name").value = "";
    await showTokens();
  } catch (err) {
    $("token-error").textContent = err.message;
    $("token-error").hidden = false;
  }
});

// ---- persistent sessions (admins) ----
async function showSessions() {
  const list = await api("/api/sessions");
  $("sessions-body").replaceChildren(...list.map((s) => row(s.client_id, s.user || "",
    s.online ? "online" : `offline since ${localTime(s.offline_since_ms)}`, String(s.queued), s.online ? "" : String(s.subscriptions),
    s.expires_at_ms ? localTime(s.expires_at_ms) : "while online: never",
    buttonCell("Drop", "Remove this session with its subscriptions and queued messages", async () => {
      if (!confirm(`Drop the session of ${s.client_id} and its ${s.queued} queued messages?`)) return;
      await send("DELETE", `/api/sessions/${enc(s.client_id)}`).catch(showError);
      await showSessions();
    }))));
  $("sessions-empty").hidden = list.length > 0;
}

// ---- users (admins) ----
const userMessage = (text, secret) => {
  $("user-error").hidden = true;
  $("user-secret-text").textContent = text;
  $("user-secret-value").textContent = secret || "";
  $("user-secret").hidden = false;
};
const userError = (err) => {
  $("user-secret").hidden = true;
  $("user-error").textContent = err.message;
  $("user-error").hidden = false;
};
async function showUsers() {
  const list = await api("/api/users");
  const chosen = $("grant-user").value;
  $("grant-user").replaceChildren(...list.map((u) => el("option", null, u.name)));
  if (list.some((u) => u.name === chosen)) $("grant-user").value = chosen;
  $("users-body").replaceChildren(...list.map((u) => {
    const grants = el("td");
    for (const g of u.grants) {
      const item = el("span", "grant chip");
      const revoke = el("button", null, "×");
      revoke.title = `Take back: ${g.description}`;
      revoke.addEventListener("click", async () => {
        try { await send("DELETE", `/api/users/${enc(u.name)}/grants?filter=${enc(g.filter)}`); await showUsers(); } catch (err) { userError(err); }
      });
      item.append(el("span", null, g.description), revoke);
      grants.append(item);
    }
    const actions = el("div", "actions");
    const reset = el("button", null, "New password");
    reset.title = "Generate a new password (shown once)";
    reset.addEventListener("click", async () => {
      if (!confirm(`Give ${u.name} a new generated password? The old one stops working.`)) return;
      try { const answer = await send("POST", `/api/users/${enc(u.name)}/password`, {}); userMessage(`New password of ${u.name} (shown once):`, answer.password); } catch (err) { userError(err); }
    });
    const remove = el("button", "danger", "Remove");
    remove.addEventListener("click", async () => {
      if (!confirm(`Remove ${u.name} with their grants and tokens?`)) return;
      try { await send("DELETE", `/api/users/${enc(u.name)}`); userMessage(`Removed ${u.name}.`); await showUsers(); } catch (err) { userError(err); }
    });
    actions.append(reset, remove);
    const role = u.admin ? "admin: every topic" : `device: iot/${u.name}/#`;
    const cell = el("td");
    cell.append(actions);
    const tr = row(u.name, role, grants, timeEl("td", null, u.created_at_ms), cell);
    tr.dataset.user = u.name;
    return tr;
  }));
}
$("user-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { name: $("user-name").value.trim(), admin: $("user-admin").checked };
  if ($("user-password").value) body.password = $("user-password").value;
  try {
    const answer = await send("POST", "/api/users", body);
    if (answer.password) userMessage(`Created ${answer.name}. Password (shown once):`, answer.password);
    else userMessage(`Created ${answer.name}.`);
    $("user-name").value = $("user-password").value = "";
    $("user-admin").checked = false;
    await showUsers();
  } catch (err) { userError(err); }
});
$("grant-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("grant-user").value;
  const body = { filter: $("grant-filter").value.trim(), publish: $("grant-publish").checked, subscribe: $("grant-subscribe").checked };
  try { await send("POST", `/api/users/${enc(name)}/grants`, body); userMessage(`Granted ${body.filter} to ${name}.`); $("grant-filter").value = ""; await showUsers(); } catch (err) { userError(err); }
});

// ---- alerts ----
const sensorName = (s) => `${s.owner}/${s.place}/${s.category}`;
const ruleCondition = (r) => {
  if (r.stale) return `no reading for ${r.stale}`;
  const [word, level] = r.above !== null && r.above !== undefined ? ["above", r.above] : ["below", r.below];
  let text = `${word} ${level}`;
  if (r.clear !== null && r.clear !== level) text += `, resolves at ${r.clear}`;
  if (r.for) text += ` for ${r.for}`;
  return text;
};
const acknowledge = async (a) => {
  const path = `/api/alerts/rules/${a.rule_id}/sensors/${enc(a.sensor.owner)}/${enc(a.sensor.place)}/${enc(a.sensor.category)}/acknowledge`;
  const r = await fetch(path, { method: "POST" });
  if (!r.ok) showError(new Error((await r.json().catch(() => ({}))).error || r.statusText));
  await loadAlerts();
  if (!$("view-alerts").hidden) await showAlerts();
};

// The firing alerts on top of the overview, and their count in the menu.
async function loadAlerts() {
  const active = await api("/api/alerts");
  const firing = active.filter((a) => a.state === "firing");
  $("alerts-count").textContent = String(firing.length);
  $("alerts-count").hidden = firing.length === 0;
  $("firing").hidden = firing.length === 0;
  $("firing-list").replaceChildren(...firing.map((a) => {
    const item = el("li", `severity-${a.severity}`);
    const link = el("a", null, `${a.rule}: ${sensorName(a.sensor)}`);
    link.href = `#/sensor/${enc(a.sensor.owner)}/${enc(a.sensor.place)}/${enc(a.sensor.category)}`;
    item.append(el("strong", null, a.severity), " ", link);
    if (a.value !== null) item.append(` at ${a.value}`);
    item.append(" · ", timeEl("span", "muted", a.since));
    if (a.acknowledged_by) item.append(el("span", "muted", ` · acknowledged by ${a.acknowledged_by}`));
    else {
      const ack = el("button", null, "Acknowledge");
      ack.addEventListener("click", () => acknowledge(a).catch(showError));
      item.append(" ", ack);
    }
    return item;
  }));
  return active;
}

let editingRule = null;
async function showAlerts() {
  const [active, rules, events] = await Promise.all([loadAlerts(), api("/api/alerts/rules"), api("/api/alerts/events?limit=200")]);
  $("alerts-none").hidden = active.length > 0;
  $("alerts-active").replaceChildren(...active.map((a) => {
    const actions = a.state === "firing" && !a.acknowledged_by
      ? buttonCell("Acknowledge", "Seen: it stays firing until it resolves", () => acknowledge(a).catch(showError))
      : el("td", "muted", a.acknowledged_by ? `acknowledged by ${a.acknowledged_by}` : "");
    const tr = row(a.state, a.severity, a.rule, sensorName(a.sensor), a.value === null ? "" : String(a.value), timeEl("td", null, a.since), actions);
    tr.className = `state-${a.state} severity-${a.severity}`;
    return tr;
  }));
  $("alert-rules").replaceChildren(...rules.map((r) => {
    const cell = el("td");
    const actions = el("div", "actions");
    const silenced = r.silenced_until && r.silenced_until > Date.now();
    const silence = el("button", null, silenced ? "Unsilence" : "Silence 1 h");
    silence.title = silenced ? `Webhooks silenced until ${localTime(r.silenced_until)}` : "No webhook calls for an hour (states still change)";
    silence.addEventListener("click", async () => {
      await send("POST", `/api/alerts/rules/${r.id}/silence`, { for: silenced ? null : "1h" }).catch(showError);
      await showAlerts();
    });
    actions.append(silence);
    if (r.from_config) actions.append(el("span", "muted", "config file"));
    else {
      const change = el("button", null, "Edit");
      change.addEventListener("click", () => editRule(r));
      const remove = el("button", "danger", "Delete");
      remove.addEventListener("click", async () => {
        if (!confirm(`Delete the rule ${r.name}? Its history stays.`)) return;
        await send("DELETE", `/api/alerts/rules/${r.id}`).catch(showError);
        await showAlerts();
      });
      actions.append(change, remove);
    }
    cell.append(actions);
    const tr = row(r.name, r.owner, r.topic, ruleCondition(r), r.severity, r.webhook || "", cell);
    tr.dataset.rule = r.name;
    return tr;
  }));
  $("alert-events").replaceChildren(...events.map((e) => row(timeEl("td", null, e.at), e.state, e.rule, sensorName(e.sensor),
    e.value === null ? "" : String(e.value), e.by || "")));
}

function showRuleKind() {
  const stale = $("rule-kind").value === "stale";
  for (const id of ["rule-level-label", "rule-clear-label", "rule-for-label"]) $(id).hidden = stale;
  $("rule-stale-label").hidden = !stale;
}
$("rule-kind").addEventListener("change", showRuleKind);

function editRule(r) {
  editingRule = r;
  $("rule-form-title").textContent = `Change the rule ${r.name}`;
  $("rule-submit").textContent = "Save rule";
  $("rule-cancel").hidden = false;
  $("rule-name").value = r.name;
  $("rule-topic").value = r.topic;
  $("rule-kind").value = r.stale ? "stale" : r.above !== null ? "above" : "below";
  $("rule-level").value = r.stale ? "" : (r.above ?? r.below);
  $("rule-clear").value = r.clear ?? "";
  $("rule-for").value = r.for || "";
  $("rule-stale").value = r.stale || "";
  $("rule-severity").value = r.severity;
  $("rule-webhook").value = r.webhook || "";
  showRuleKind();
  $("rule-form").scrollIntoView();
}
function resetRuleForm() {
  editingRule = null;
  $("rule-form").reset();
  $("rule-form-title").textContent = "Add a rule";
  $("rule-submit").textContent = "Add rule";
  $("rule-cancel").hidden = true;
  $("rule-error").hidden = true;
  showRuleKind();
}
$("rule-cancel").addEventListener("click", resetRuleForm);
$("rule-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const kind = $("rule-kind").value;
  const body = { name: $("rule-name").value.trim(), topic: $("rule-topic").value.trim(), severity: $("rule-severity").value };
  if (kind === "stale") body.stale = $("rule-stale").value.trim();
  else {
    // An empty threshold is left out (the server says what is missing), not taken as 0.
    if ($("rule-level").value !== "") body[kind] = Number($("rule-level").value);
    if ($("rule-clear").value !== "") body.clear = Number($("rule-clear").value);
    if ($("rule-for").value.trim()) body.for = $("rule-for").value.trim();
  }
  if ($("rule-webhook").value.trim()) body.webhook = $("rule-webhook").value.trim();
  try {
    if (editingRule) await send("PUT", `/api/alerts/rules/${editingRule.id}`, body);
    else await send("POST", "/api/alerts/rules", body);
    resetRuleForm();
    await showAlerts();
  } catch (err) {
    $("rule-error").textContent = err.message;
    $("rule-error").hidden = false;
  }
});

// ---- routing ----
async function route() {
  const view = location.hash.replace(/^#\/?/, "").split("/")[0] || "overview";
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === view || (view === "sensor" && a.dataset.nav === "overview")));
  if (view !== "sensor" && currentChart) { currentChart.uplot.destroy(); currentChart = null; }
  try {
    clearError();
    if (view === "overview") await Promise.all([loadOverview(), loadAlerts()]);
    if (view === "alerts") await showAlerts();
    if (view === "sensor") await showSensor(parseSensorHash());
    if (view === "rejects") await showRejects();
    if (view === "tokens") await showTokens();
    if (view === "sessions") await showSessions();
    if (view === "users") await showUsers();
  } catch (e) {
    showError(e);
  }
}
window.addEventListener("hashchange", route);

(async () => {
  try { config = { ...config, ...(await api("/api/config")) }; } catch (e) { /* defaults */ }
  setupConsole();
  me = await whoAmI();
  if (!me) { showLogin(); return; }
  if (me.admin) watchHealth();
  connectLive();
  await route();
  // Alerts change with time alone too (hold times, silent sensors).
  setInterval(() => (!$("view-alerts").hidden ? showAlerts() : loadAlerts()).catch(() => {}), 15000);
  // Staleness changes with time alone.
  setInterval(() => sensors.forEach((e) => e.tile && e.tile.isConnected && renderTile(e)), 30000);
})();
