// End-to-end test of the dashboard in a real headless Chromium (Debian's, driven by
// playwright-core). Publishes over MQTT.js and checks what the pages show; saves screenshots.
// Usage: node dashboard-e2e.mjs http://127.0.0.1:PORT SCREENSHOT_DIR
import { launchChromium } from "./browser.mjs";
import mqtt from "mqtt";

const [base, shots] = process.argv.slice(2);
const wsUrl = base.replace(/^http/, "ws") + "/mqtt";
const step = (name) => console.error(`step: ${name}`);
const browser = await launchChromium();
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  // The page runs under a strict Content-Security-Policy: anything it blocks is a failure.
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) failures.push(`CSP: ${m.text()}`);
  });
  const device = await mqtt.connectAsync(wsUrl, { clientId: "e2e-device", protocolVersion: 4 });
  const publish = (topic, payload) => device.publishAsync(topic, payload, { qos: 1 });

  step("overview shows a new sensor, pushed live");
  await page.goto(base + "/");
  await page.waitForSelector("#live-status.live", { timeout: 5000 });
  await publish("iot/yanjo/sensor/livingroom/temperature", "21.5");
  await publish("iot/yanjo/sensor/livingroom/humidity", "40");
  await publish("iot/yanjo/sensor/bedroom/illuminate", "512");
  const tile = '[data-sensor="yanjo/livingroom/temperature"] .value';
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "21.5 °C", tile, { timeout: 5000 });

  step("a new reading updates the tile without reloading");
  const before = Date.now();
  await publish("iot/yanjo/sensor/livingroom/temperature", "22.25");
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "22.25 °C", tile, { timeout: 5000 });
  const liveMs = Date.now() - before;
  await page.screenshot({ path: `${shots}/overview.png` });

  step("sensor page draws a chart");
  await page.click('[data-sensor="yanjo/livingroom/temperature"]');
  await page.waitForSelector("#chart canvas", { timeout: 5000 });
  await page.click('[data-range="3600000"]');
  await page.waitForFunction(() => /readings/.test(document.getElementById("chart-note").textContent), null, { timeout: 5000 });
  const note = await page.textContent("#chart-note");
  if (!note.startsWith("2 readings")) failures.push(`chart note: ${note}`);
  const csv = await page.getAttribute("#csv-link", "href");
  if (!csv.includes("/readings.csv?from=")) failures.push(`csv link: ${csv}`);
  await page.screenshot({ path: `${shots}/sensor.png` });

  step("a failed request is said on the page");
  await page.goto(base + "/#/sensor/nobody/nowhere/nothing");
  await page.waitForSelector("#error-banner:not([hidden])", { timeout: 5000 });
  const banner = await page.textContent("#error-banner");
  if (!/Could not load this page: .*nobody/.test(banner)) failures.push(`error banner: ${banner}`);
  await page.goto(base + "/#/");
  await page.waitForSelector("#error-banner[hidden]", { state: "attached", timeout: 5000 });

  step("the page is served with a Content-Security-Policy");
  const index = await fetch(base + "/");
  if (!/script-src 'self'/.test(index.headers.get("content-security-policy") || "")) failures.push("no CSP header on the page");

  step("admins see persistent sessions");
  const board = await mqtt.connectAsync(wsUrl, { clientId: "e2e-persistent", clean: false, protocolVersion: 4 });
  await board.subscribeAsync("cmd/e2e/#", { qos: 1 });
  await page.goto(base + "/#/sessions");
  await page.waitForFunction(() => /e2e-persistent/.test(document.getElementById("sessions-body").textContent), null, { timeout: 5000 });
  const row = await page.textContent("#sessions-body");
  if (!row.includes("online")) failures.push(`sessions row: ${row}`);
  await board.endAsync();

  step("console subscribes and publishes; payloads are text");
  await page.goto(base + "/#/console");
  await page.click("#console-connect-button");
  await page.waitForFunction(() => document.getElementById("console-state").textContent === "connected", null, { timeout: 5000 });
  await page.fill("#console-filter", "iot/#");
  await page.click("#console-subscribe button");
  await page.waitForFunction(() => /subscribed to iot\/#/.test(document.getElementById("console-log").textContent), null, { timeout: 5000 });
  const evil = '<img src=x onerror="window.__xss=1;alert(1)">';
  await page.fill("#console-topic", "iot/yanjo/sensor/kitchen/temperature");
  await page.fill("#console-payload", evil);
  await page.click("#console-publish button");
  await page.waitForFunction((p) => document.getElementById("console-log").textContent.includes(p), evil, { timeout: 5000 });
  await page.screenshot({ path: `${shots}/console.png` });

  step("rejects page lists the HTML payload as text");
  await page.goto(base + "/#/rejects");
  await page.waitForFunction((p) => document.getElementById("rejects-body").textContent.includes(p), evil, { timeout: 5000 });
  await page.screenshot({ path: `${shots}/rejects.png` });
  const injected = await page.evaluate(() => window.__xss !== undefined || document.querySelectorAll("main img").length > 0);
  if (injected || dialogs.length) failures.push(`HTML payload was executed: dialogs=${JSON.stringify(dialogs)}`);
  await device.endAsync();
  console.log(JSON.stringify({ ok: failures.length === 0, failures, live_update_ms: liveMs }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, failures: [...failures, String(e)] }));
} finally {
  await browser.close();
}
