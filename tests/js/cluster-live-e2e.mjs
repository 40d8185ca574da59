// Live updates across nodes, in a real headless Chromium: the dashboard of a node that takes no
// readings itself shows, without reloading, a reading published to the upstream broker (over
// MQTT.js) and stored by another node on the same PostgreSQL database.
// Usage: node cluster-live-e2e.mjs http://DASHBOARD_NODE ws://UPSTREAM_BROKER/ SCREENSHOT_DIR
import { launchChromium } from "./browser.mjs";
import mqtt from "mqtt";

const [base, upstream] = process.argv.slice(2);
const step = (name) => console.error(`step: ${name}`);
const browser = await launchChromium();
const failures = [];
let liveMs = null;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  step("the other node's dashboard is open and live");
  await page.goto(base + "/");
  await page.waitForSelector("#live-status.live", { timeout: 30000 });
  const device = await mqtt.connectAsync(upstream, { clientId: "cluster-e2e-device", protocolVersion: 4 });
  const tile = '[data-sensor="cluster/hall/temperature"] .value';
  for (const value of ["23.5", "24.25"]) {
    step(`a reading of ${value} published upstream appears`);
    const before = Date.now();
    await device.publishAsync("iot/cluster/sensor/hall/temperature", value, { qos: 1 });
    await page.waitForFunction(([sel, v]) => document.querySelector(sel)?.textContent === `${v} °C`, [tile, value], { timeout: 30000 });
    liveMs = Date.now() - before;
  }
  await device.endAsync();
} catch (e) {
  failures.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok: failures.length === 0, failures, live_update_ms: liveMs }));
