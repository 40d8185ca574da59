// Roost dashboard: overview, sensor charts, MQTT console, rejects. Plain JS, no build step.
// Every value from the network is written with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const key = (s) => `${s.owner}/${s.place}/${s.category}`;
const VIEWS = ["overview", "sensor", "console", "rejects", "tokens", "sessions"];
const api = async (path) => {
  const r = await fetch(path);
  if (r.status === 401) { showLogin(); throw new Error("log in first"); }
  if (!r.ok) {
    // Error bodies are JSON `{"error": …}`, but a proxy in front may answer with anything.
    const body = await r.json().catch(() => ({}));
    throw new Error(body.error || `${r.status} ${r.statusText}`);
  }
  return r.json();
};
// A failed request is said on the page, not only in the browser's console.
const showError = (e) => {
  console.error(e);
  if (!$("view-login").hidden) return; // the login form is the answer
  $("error-banner").textContent = `Could not load this page: ${e.message}`;
  $("error-banner").hidden = false;
};
const clearError = () => { $("error-banner").hidden = true; };

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
  $("login-error").textContent = r.status === 401 ? "Wrong user name or password." : `Login failed (${r.status}).`;
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
  const me = await r.json();
  $("nav-sessions").hidden = !(me.admin || me.anonymous);
  if (!me.anonymous) {
    $("who").textContent = me.username + (me.admin ? " (admin)" : "");
    $("who").hidden = $("logout").hidden = false;
    $("nav-tokens").hidden = false;
    $("console-username").value = me.username;
    $("console-password").value = me.mqtt_password;
  }
  return me;
}
const localTime = (ms) => new Date(ms).toLocaleString();
const enc = encodeURIComponent;

let config = { stale_after_ms: 600000, units: {} };
const sensors = new Map(); // key -> { sensor, tile, spark: [values] }
let currentChart = null;   // { key, uplot, data, from, to, live }

// ---- health banner (admins): what /healthz says while ingest is degraded ----
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
    $("health-banner").textContent = problem ? `${what} not being stored: ${problem}. Devices are held back; nothing acknowledged is lost.` : "";
    $("health-banner").hidden = !problem;
  };
  check();
  setInterval(check, 5000);
}

// ---- live feed (server-sent events of committed readings) ----
function connectLive() {
  const source = new EventSource("/api/live");
  source.onopen = () => $("live-status").classList.add("live");
  source.onerror = () => $("live-status").classList.remove("live");
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
    loadOverview().catch(showError);
  }, 500);
}

function onReading(r) {
  const k = key(r);
  const known = sensors.get(k);
  if (!known) { reloadOverviewSoon(); return; }
  known.sensor.last_value = r.value;
  known.sensor.last_seen_ms = r.ts;
  known.spark.push(r.value);
  if (known.spark.length > 60) known.spark.shift();
  renderTile(known);
  if (currentChart && currentChart.key === k && currentChart.live) {
    // A live point is its own bucket: min = avg = max. The x scale follows the present.
    const [xs, avg, min, max] = currentChart.data;
    xs.push(r.ts / 1000); avg.push(r.value); min.push(r.value); max.push(r.value);
    // A chart left open for days keeps as many points as it was drawn with, not every reading.
    while (xs.length > currentChart.maxPoints) for (const a of currentChart.data) a.shift();
    const span = currentChart.uplot.scales.x.max - currentChart.uplot.scales.x.min;
    currentChart.uplot.setData(currentChart.data, false);
    currentChart.uplot.setScale("x", { min: r.ts / 1000 - span, max: Math.max(r.ts / 1000, currentChart.uplot.scales.x.max) });
  }
}

// ---- overview ----
async function loadOverview() {
  const list = await api("/api/sensors");
  $("no-sensors").hidden = list.length > 0;
  const places = $("places");
  places.replaceChildren();
  const byPlace = new Map();
  for (const s of list) {
    if (!byPlace.has(s.place)) byPlace.set(s.place, []);
    byPlace.get(s.place).push(s);
  }
  for (const [place, group] of [...byPlace].sort()) {
    places.append(el("h2", null, place));
    const tiles = el("div", "tiles");
    for (const s of group) {
      const k = key(s);
      const entry = sensors.get(k) || { spark: [] };
      entry.sensor = s;
      entry.tile = el("a", "tile");
      entry.tile.href = `#/sensor/${enc(s.owner)}/${enc(s.place)}/${enc(s.category)}`;
      entry.tile.dataset.sensor = k;
      sensors.set(k, entry);
      renderTile(entry);
      tiles.append(entry.tile);
    }
    places.append(tiles);
  }
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
      renderTile(entry);
    }
  }
}

function renderTile(entry) {
  const s = entry.sensor, unit = config.units[s.category] || "";
  const stale = s.last_seen_ms === null || Date.now() - s.last_seen_ms > config.stale_after_ms;
  entry.tile.classList.toggle("stale", stale);
  const value = s.last_value === null ? "–" : `${+s.last_value.toFixed(2)}${unit ? " " + unit : ""}`;
  const canvas = el("canvas");
  entry.tile.replaceChildren(
    el("div", "category", `${s.category} · ${s.owner}`),
    el("div", "value", value),
    el("div", "seen", s.last_seen_ms === null ? "never" : localTime(s.last_seen_ms)),
    canvas,
  );
  drawSpark(canvas, entry.spark);
}

function drawSpark(canvas, values) {
  if (values.length < 2) return;
  canvas.width = 160; canvas.height = 32;
  const ctx = canvas.getContext("2d");
  const min = Math.min(...values), max = Math.max(...values), span = max - min || 1;
  ctx.strokeStyle = "#2a6fdb"; ctx.lineWidth = 1.5; ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * 158 + 1, y = 30 - ((v - min) / span) * 28;
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

// ---- sensor page ----
async function showSensor(owner, place, category, from, to) {
  const k = `${owner}/${place}/${category}`;
  to = to || Date.now();
  from = from || to - 86400000;
  const live = Math.abs(to - Date.now()) < 60000;
  $("sensor-title").textContent = `${place} · ${category} (${owner})`;
  const base = `/api/sensors/${enc(owner)}/${enc(place)}/${enc(category)}/readings`;
  $("csv-link").href = `${base}.csv?from=${from}&to=${to}`;
  $("range-from").value = toInputValue(from);
  $("range-to").value = toInputValue(to);
  const chartBox = $("chart");
  const width = Math.max(300, chartBox.clientWidth - 20);
  const body = await api(`${base}?from=${from}&to=${to}&buckets=${Math.min(width, 10000)}`);
  const xs = [], avg = [], min = [], max = [];
  for (const b of body.buckets) {
    xs.push((b.start + body.bucket_ms / 2) / 1000); avg.push(b.avg); min.push(b.min); max.push(b.max);
  }
  $("chart-note").textContent = `${body.buckets.reduce((n, b) => n + b.count, 0)} readings, ${body.buckets.length} points of ${Math.round(body.bucket_ms / 1000)} s (min / avg / max). Times in your time zone.`;
  const unit = config.units[category] || "";
  const opts = {
    width, height: 320,
    series: [
      {},
      { label: `avg ${unit}`, stroke: "#2a6fdb", width: 1.5 },
      { label: "min", stroke: "#9bb8ea", width: 1 },
      { label: "max", stroke: "#9bb8ea", width: 1 },
    ],
    scales: { x: { time: true, min: from / 1000, max: to / 1000 } },
  };
  if (currentChart) currentChart.uplot.destroy();
  const data = [xs, avg, min, max];
  currentChart = { key: k, data, live, maxPoints: Math.max(xs.length, width), uplot: new uPlot(opts, data, chartBox) };
}

const toInputValue = (ms) => {
  const d = new Date(ms);
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
};

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
function setupConsole() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  $("console-url").value = `${scheme}://${location.host}/mqtt`;
  const log = (text, cls) => {
    const li = el("li", cls, `${new Date().toLocaleTimeString()}  ${text}`);
    $("console-log").prepend(li);
    while ($("console-log").children.length > 500) $("console-log").lastChild.remove();
  };
  $("console-connect").addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await loadMqtt(); } catch (err) { log(err.message); return; }
    if (client) { client.end(true); client = null; }
    const options = { protocolVersion: 4, clientId: `roost-console-${Math.random().toString(16).slice(2, 10)}` };
    // Empty fields connect anonymously (a server run with --allow-anonymous).
    if ($("console-username").value) {
      options.username = $("console-username").value;
      options.password = $("console-password").value;
    }
    client = mqtt.connect($("console-url").value, options);
    $("console-state").textContent = "connecting…";
    client.on("connect", () => { $("console-state").textContent = "connected"; log("connected"); });
    client.on("close", () => { $("console-state").textContent = "disconnected"; });
    client.on("error", (err) => log(`error: ${err.message}`));
    client.on("message", (topic, payload, packet) => log(`${topic}  ${payload.toString()}  (QoS ${packet.qos}${packet.retain ? ", retained" : ""})`, "message"));
  });
  $("console-subscribe").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!client) return log("connect first");
    const filter = $("console-filter").value;
    client.subscribe(filter, { qos: 1 }, (err, granted) => log(err ? `subscribe to ${filter} refused (${err.message}): not allowed for this user, or an invalid filter` : `subscribed to ${filter} (granted ${granted.map((g) => (g.qos === 128 ? "denied" : g.qos)).join(",")})`));
  });
  $("console-publish").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!client) return log("connect first");
    const topic = $("console-topic").value, payload = $("console-payload").value;
    const qos = +$("console-qos").value, retain = $("console-retain").checked;
    client.publish(topic, payload, { qos, retain }, (err) => log(err ? `publish failed: ${err.message}` : `published to ${topic}`));
  });
}

// ---- rejects ----
async function showRejects() {
  const list = await api("/api/rejects?limit=500");
  const select = $("rejects-client"), chosen = select.value;
  const clients = [...new Set(list.map((r) => r.client_id))].sort();
  select.replaceChildren(el("option", null, "all"), ...clients.map((c) => el("option", null, c)));
  select.firstChild.value = "";
  select.value = clients.includes(chosen) ? chosen : "";
  const rows = list.filter((r) => !select.value || r.client_id === select.value).map((r) => {
    const tr = el("tr");
    tr.append(el("td", null, localTime(r.received_at_ms)), el("td", null, r.client_id), el("td", null, r.topic), el("td", null, r.payload), el("td", null, r.reason));
    return tr;
  });
  $("rejects-body").replaceChildren(...rows);
}

// ---- API tokens ----
async function showTokens() {
  const list = await api("/api/tokens");
  const rows = list.map((t) => {
    const revoke = el("button", null, "Revoke");
    revoke.addEventListener("click", async () => {
      await fetch(`/api/tokens/${t.id}`, { method: "DELETE" });
      await showTokens();
    });
    const cell = el("td");
    cell.append(revoke);
    const tr = el("tr");
    tr.append(el("td", null, String(t.id)), el("td", null, t.user), el("td", null, t.name), el("td", null, localTime(t.created_at_ms)),
      el("td", null, t.expires_at_ms ? localTime(t.expires_at_ms) : "never"), cell);
    return tr;
  });
  $("tokens-body").replaceChildren(...rows);
}
$("token-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { name: $("token-name").value };
  if ($("token-days").value) body.days = +$("token-days").value;
  const r = await fetch("/api/tokens", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const answer = await r.json();
  $("token-error").hidden = r.ok;
  if (!r.ok) { $("token-error").textContent = answer.error; return; }
  $("token-value").textContent = answer.token;
  $("token-new").hidden = false;
  $("token-name").value = "";
  await showTokens();
});

// ---- persistent sessions (admins) ----
async function showSessions() {
  const list = await api("/api/sessions");
  const rows = list.map((s) => {
    const drop = el("button", null, "Drop");
    drop.title = "Remove this session with its subscriptions and queued messages";
    drop.addEventListener("click", async () => {
      if (!confirm(`Drop the session of ${s.client_id} and its ${s.queued} queued messages?`)) return;
      await fetch(`/api/sessions/${enc(s.client_id)}`, { method: "DELETE" });
      await showSessions();
    });
    const cell = el("td");
    cell.append(drop);
    const tr = el("tr");
    const state = s.online ? "online" : `offline since ${localTime(s.offline_since_ms)}`;
    tr.append(el("td", null, s.client_id), el("td", null, s.user || ""), el("td", null, state), el("td", null, String(s.queued)),
      el("td", null, s.online ? "" : String(s.subscriptions)), el("td", null, s.expires_at_ms ? localTime(s.expires_at_ms) : "while online: never"), cell);
    return tr;
  });
  $("sessions-body").replaceChildren(...rows);
  $("sessions-empty").hidden = rows.length > 0;
}

// ---- routing ----
async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const view = parts[0] || "overview";
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === view));
  try {
    clearError();
    if (view === "overview") await loadOverview();
    if (view === "sensor") await showSensor(parts[1], parts[2], parts[3], +parts[4] || 0, +parts[5] || 0);
    if (view === "rejects") await showRejects();
    if (view === "tokens") await showTokens();
    if (view === "sessions") await showSessions();
  } catch (e) {
    showError(e);
  }
}

document.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => {
  const [, owner, place, category] = location.hash.replace(/^#\/?/, "").split("/");
  const to = Date.now();
  location.hash = `#/sensor/${owner}/${place}/${category}/${to - +b.dataset.range}/${to}`;
}));
$("range-apply").addEventListener("click", () => {
  const [, owner, place, category] = location.hash.replace(/^#\/?/, "").split("/");
  const from = new Date($("range-from").value).getTime(), to = new Date($("range-to").value).getTime();
  if (from < to) location.hash = `#/sensor/${owner}/${place}/${category}/${from}/${to}`;
});
$("rejects-client").addEventListener("change", showRejects);
window.addEventListener("hashchange", route);

(async () => {
  try { config = await api("/api/config"); } catch (e) { /* defaults */ }
  setupConsole();
  const me = await whoAmI();
  if (!me) { showLogin(); return; }
  if (me.anonymous || me.admin) watchHealth();
  connectLive();
  await route();
  setInterval(() => sensors.forEach(renderTile), 30000); // re-evaluate staleness
})();
