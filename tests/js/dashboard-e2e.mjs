// End-to-end test of the dashboard in a real headless Chromium (Debian's, driven by
// playwright-core). Publishes over MQTT.js and checks what the pages show: the overview grouped
// by owner then board, the chart's range, current value and comparison, the console, and HTML
// in names and payloads staying text. Saves screenshots.
// Usage: node dashboard-e2e.mjs http://127.0.0.1:PORT SCREENSHOT_DIR
import { launchChromium } from "./browser.mjs";
import mqtt from "mqtt";

const [base, shots] = process.argv.slice(2);
const wsUrl = base.replace(/^http/, "ws") + "/mqtt";
const step = (name) => console.error(`step: ${name}`);
const browser = await launchChromium();
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const dialogs = [];
  // Any dialog (an injected alert) is a failure.
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    d.dismiss();
  });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  // The page runs under a strict Content-Security-Policy: anything it blocks is a failure.
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) failures.push(`CSP: ${m.text()}`);
  });
  const device = await mqtt.connectAsync(wsUrl, { clientId: "e2e-device", protocolVersion: 4 });
  const publish = (topic, payload) => device.publishAsync(topic, payload, { qos: 1 });

  step("overview shows a new sensor, pushed live");
  await page.goto(base + "/");
  await page.waitForSelector("#live-status.live", { timeout: 30000 });
  await publish("iot/yanjo/sensor/livingroom/temperature", "21.5");
  await publish("iot/yanjo/sensor/livingroom/humidity", "40");
  await publish("iot/yanjo/sensor/bedroom/illuminate", "512");
  const evilOwner = '<img src=x onerror="window.__xss=2">';
  await publish(`iot/${evilOwner}/sensor/garage/temperature`, "30.5");
  const tile = '[data-sensor="yanjo/livingroom/temperature"] .value';
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "21.5 °C", tile, { timeout: 30000 });

  step("boards are grouped by owner, then place; values are coloured by their normal range");
  await page.waitForFunction((o) => [...document.querySelectorAll("section.owner")].some((s) => s.dataset.owner === o), evilOwner, { timeout: 30000 });
  // Each read of the page in one evaluation: `$$eval` finds the elements and then calls its
  // function in a second one, and a live update re-rendering a tile in between detaches them
  // (a `.value` whose tile is gone has no `[data-sensor]` ancestor: seen once in CI).
  const grouping = await page.evaluate(() => [...document.querySelectorAll("section.owner")].map((s) => ({
    owner: s.dataset.owner, title: s.querySelector("h2").textContent,
    boards: [...s.querySelectorAll(".board")].map((b) => [b.dataset.place, [...b.querySelectorAll(".tile")].map((t) => t.dataset.category)]),
  })));
  const yanjo = grouping.find((g) => g.owner === "yanjo");
  if (JSON.stringify(yanjo?.boards) !== JSON.stringify([["bedroom", ["illuminate"]], ["livingroom", ["humidity", "temperature"]]])) failures.push(`yanjo's boards: ${JSON.stringify(yanjo)}`);
  if (!grouping.find((g) => g.owner === evilOwner)?.title.startsWith(evilOwner)) failures.push(`an HTML owner name is not shown as text: ${JSON.stringify(grouping)}`);
  const colours = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll("[data-sensor] .value")]
    .map((e) => [e.closest("[data-sensor]").dataset.sensor.split("/").slice(1).join("/"), e.className])));
  if (colours["garage/temperature"] !== "value high" || colours["livingroom/temperature"] !== "value normal" || colours["bedroom/illuminate"] !== "value ") {
    failures.push(`value colours: ${JSON.stringify(colours)}`);
  }
  const seen = await page.textContent('[data-sensor="yanjo/livingroom/temperature"] .seen');
  if (!/^\d+ s ago$/.test(seen)) failures.push(`relative time: ${seen}`);

  step("a new reading updates the tile without reloading");
  const before = Date.now();
  await publish("iot/yanjo/sensor/livingroom/temperature", "22.25");
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "22.25 °C", tile, { timeout: 30000 });
  const liveMs = Date.now() - before;

  step("sensor page: the chosen range, the current value, the resolution in words, a second sensor");
  await page.click('[data-sensor="yanjo/livingroom/temperature"]');
  await page.waitForSelector("#chart canvas", { timeout: 30000 });
  await page.click('[data-range="3600000"]');
  await page.waitForFunction(() => document.querySelector('[data-range="3600000"]').classList.contains("active"), null, { timeout: 30000 });
  // The note of the previous range (24 h, 2-minute points) may still be up for a moment: wait for
  // the one of this range (a wrong note then fails below, after the timeout).
  await page.waitForFunction(() => /readings.*5 seconds/.test(document.getElementById("chart-note").textContent), null, { timeout: 30000 }).catch(() => {});
  const note = await page.textContent("#chart-note");
  if (!note.startsWith("2 readings. Each point: the average of 5 seconds")) failures.push(`chart note: ${note}`);
  const active = await page.$$eval("[data-range].active", (els) => els.map((e) => e.textContent));
  if (active.join() !== "1 h") failures.push(`highlighted ranges: ${active}`);
  const now = await page.textContent("#sensor-now");
  if (now !== "22.25 °C") failures.push(`current value: ${now}`);
  const csv = await page.getAttribute("#csv-link", "href");
  if (!csv.includes("/readings.csv?from=")) failures.push(`csv link: ${csv}`);
  await page.selectOption("#compare-select", "yanjo/livingroom/humidity");
  await page.waitForFunction(() => document.querySelectorAll("#compare-list .chip").length === 1, null, { timeout: 30000 });
  await page.waitForFunction(() => /humidity \(yanjo\/livingroom\)/.test(document.querySelector(".u-legend")?.textContent || ""), null, { timeout: 30000 });
  await page.screenshot({ path: `${shots}/sensor.png` });

  step("a failed request is said on the page");
  await page.goto(base + "/#/sensor/nobody/nowhere/nothing");
  await page.waitForSelector("#error-banner:not([hidden])", { timeout: 30000 });
  const banner = await page.textContent("#error-banner");
  if (!/Could not load this page: .*nobody/.test(banner)) failures.push(`error banner: ${banner}`);
  await page.goto(base + "/#/");
  await page.waitForSelector("#error-banner[hidden]", { state: "attached", timeout: 30000 });

  step("the page is served with a Content-Security-Policy");
  const index = await fetch(base + "/");
  if (!/script-src 'self'/.test(index.headers.get("content-security-policy") || "")) failures.push("no CSP header on the page");

  step("admins see persistent sessions");
  const board = await mqtt.connectAsync(wsUrl, { clientId: "e2e-persistent", clean: false, protocolVersion: 4 });
  await board.subscribeAsync("cmd/e2e/#", { qos: 1 });
  await page.goto(base + "/#/sessions");
  await page.waitForFunction(() => /e2e-persistent/.test(document.getElementById("sessions-body").textContent), null, { timeout: 30000 });
  const row = await page.textContent("#sessions-body");
  if (!row.includes("online")) failures.push(`sessions row: ${row}`);
  await board.endAsync();

  step("console: labelled fields, connection state, subscribe, publish, a message table");
  await publish("e2e/retained", "kept");
  await device.publishAsync("e2e/retained", "kept", { qos: 1, retain: true });
  await page.goto(base + "/#/console");
  const labels = await page.$$eval("#view-console label", (els) => els.map((e) => e.textContent.trim().split("\n")[0].trim()));
  for (const label of ["Broker URL", "User name", "Password", "Topic filter", "Topic", "Payload", "QoS", "Retain", "User properties"]) {
    if (!labels.some((l) => l.startsWith(label))) failures.push(`console field without a label: ${label} (${JSON.stringify(labels)})`);
  }
  await page.click("#console-connect-button");
  await page.waitForFunction(() => document.getElementById("console-state").textContent === "connected", null, { timeout: 30000 });
  const button = await page.textContent("#console-connect-button");
  if (button !== "Disconnect") failures.push(`connected, the button says ${button}`);
  await page.fill("#console-filter", "e2e/#");
  await page.click("#console-subscribe button");
  await page.waitForFunction(() => /subscribed to e2e\/#/.test(document.getElementById("console-log").textContent), null, { timeout: 30000 });
  await page.waitForSelector('#console-messages tr[data-topic="e2e/retained"]', { timeout: 30000 });
  const retained = await page.$$eval('#console-messages tr[data-topic="e2e/retained"] td', (tds) => tds.slice(1).map((td) => td.textContent));
  if (JSON.stringify(retained) !== JSON.stringify(["e2e/retained", "kept", "1", "retained", ""])) failures.push(`retained message row: ${JSON.stringify(retained)}`);
  if (!/\(MQTT 5\.0\)/.test(await page.textContent("#console-log"))) failures.push("the console did not connect with MQTT 5.0");
  // MQTT 5.0 user properties: published from the console, shown on the message it gets back.
  await page.fill("#console-topic", "e2e/props");
  await page.fill("#console-payload", "21.5");
  await page.fill("#console-user-properties", "unit=C, board=nodemcu, unit=F");
  await page.click("#console-publish button");
  await page.waitForSelector('#console-messages tr[data-topic="e2e/props"]', { timeout: 30000 });
  const props = await page.$$eval('#console-messages tr[data-topic="e2e/props"] td', (tds) => tds.slice(1).map((td) => td.textContent));
  if (props[4] !== "unit=C unit=F board=nodemcu" && props[4] !== "unit=C board=nodemcu unit=F") failures.push(`user properties shown: ${JSON.stringify(props)}`);
  await page.fill("#console-user-properties", "");
  await page.fill("#console-filter", "iot/#");
  await page.click("#console-subscribe button");
  await page.waitForFunction(() => /subscribed to iot\/#/.test(document.getElementById("console-log").textContent), null, { timeout: 30000 });
  const evil = '<img src=x onerror="window.__xss=1;alert(1)">';
  await page.fill("#console-topic", "iot/yanjo/sensor/kitchen/temperature");
  await page.fill("#console-payload", evil);
  await page.click("#console-publish button");
  // MQTT 5.0: a payload that is no reading is refused in its PUBACK (0x99, kept in rejects, not
  // delivered), and the console says so.
  await page.waitForFunction(() => /publish failed: .*Payload format invalid/i.test(document.getElementById("console-log").textContent), null, { timeout: 30000 });
  // The same HTML delivered on another topic is shown as text.
  await page.fill("#console-topic", "e2e/evil");
  await page.click("#console-publish button");
  await page.waitForFunction((p) => document.getElementById("console-messages").textContent.includes(p), evil, { timeout: 30000 });
  await page.fill("#console-show", "e2e/+");
  const shown = await page.$$eval("#console-messages tr:not([hidden])", (rows) => rows.map((r) => r.dataset.topic));
  if (shown.join() !== "e2e/evil,e2e/props,e2e/retained") failures.push(`topic filter of the message list shows ${shown}`);
  await page.screenshot({ path: `${shots}/console.png` });

  step("rejects page lists the HTML payload as text");
  await page.goto(base + "/#/rejects");
  await page.waitForFunction((p) => document.getElementById("rejects-body").textContent.includes(p), evil, { timeout: 30000 });
  await page.screenshot({ path: `${shots}/rejects.png` });

  step("with --allow-anonymous there is no Users page: accounts need a logged-in admin");
  if (await page.isVisible("#nav-users")) failures.push("the Users page is offered without a login");

  const injected = await page.evaluate(() => window.__xss !== undefined || document.querySelectorAll("main img").length > 0);
  if (injected || dialogs.length) failures.push(`HTML was executed: dialogs=${JSON.stringify(dialogs)}`);
  await device.endAsync();
  console.log(JSON.stringify({ ok: failures.length === 0, failures, live_update_ms: liveMs }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, failures: [...failures, String(e)] }));
} finally {
  await browser.close();
  // An MQTT client left open by a failed step would keep Node running.
  process.exit(0);
}
