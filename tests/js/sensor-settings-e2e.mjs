// A sensor's settings on the dashboard in a real headless Chromium: rename it, give it a unit
// and a retention of its own, hide it (the overview leaves it out until asked), see that a chart
// of a range past that retention comes from the summaries, the database's size under the
// overview, then delete the sensor. Saves sensor-settings.png.
// Usage: node sensor-settings-e2e.mjs http://127.0.0.1:PORT OLD_RANGE_FROM_MS SCREENSHOT_DIR
import { launchChromium } from "./browser.mjs";

const [base, oldFrom, shots] = process.argv.slice(2);
const step = (name) => console.error(`step: ${name}`);
const browser = await launchChromium();
const failures = [];
const sensor = "yanjo/desk/illuminate";
// The settings panel stays as it was left (open or closed) from one sensor page to the next.
const openSettings = async (page) => {
  await page.waitForSelector("#sensor-settings:not([hidden])", { timeout: 30000 });
  if (!(await page.$eval("#sensor-settings", (d) => d.open))) await page.click("#sensor-settings summary");
};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  page.on("dialog", (d) => {
    if (d.type() === "confirm" && d.message().startsWith(`Delete ${sensor}`)) return d.accept();
    failures.push(`unexpected dialog: ${d.message()}`);
    return d.dismiss();
  });

  step("the overview shows the sensor and the database's size");
  await page.goto(base + "/#/overview");
  await page.waitForSelector(`[data-sensor="${sensor}"]`, { timeout: 30000 });
  await page.waitForFunction(() => /^Database: .*readings.*disk \d+% free\.$/.test(document.getElementById("database-size").textContent), null, { timeout: 30000 });

  step("rename it, give it a unit and a retention, hide it");
  await page.click(`[data-sensor="${sensor}"]`);
  await openSettings(page);
  const placeholder = await page.getAttribute("#settings-retention", "placeholder");
  if (placeholder !== "forever (the server's default)") failures.push(`retention placeholder: ${placeholder}`);
  await page.fill("#settings-name", "Desk lamp");
  await page.fill("#settings-unit", "lx");
  await page.fill("#settings-retention", "7d");
  await page.check("#settings-hidden");
  await page.click("#sensor-settings-form button.primary");
  await page.waitForFunction(() => document.getElementById("settings-state").textContent === "Saved.", null, { timeout: 30000 });
  const title = await page.textContent("#sensor-title");
  if (title !== "desk · Desk lamp (yanjo)") failures.push(`title: ${title}`);
  if (!(await page.textContent("#sensor-now")).endsWith(" lx")) failures.push(`value without its unit: ${await page.textContent("#sensor-now")}`);

  step("a bad retention is refused with the server's reason");
  await page.fill("#settings-retention", "soon");
  await page.click("#sensor-settings-form button.primary");
  await page.waitForFunction(() => document.getElementById("settings-state").textContent.startsWith("Not saved: `retention`"), null, { timeout: 30000 });
  await page.fill("#settings-retention", "7d");

  step("a chart of 40 days ago comes from the summaries");
  await page.goto(`${base}/#/sensor/yanjo/desk/illuminate/${oldFrom}/${+oldFrom + 3600000}`);
  await page.waitForFunction(() => /from the per-minute summaries/.test(document.getElementById("chart-note").textContent), null, { timeout: 30000 });
  const note = await page.textContent("#chart-note");
  if (!note.includes("Raw readings are kept for 7d")) failures.push(`chart note: ${note}`);
  await openSettings(page);
  await page.screenshot({ path: `${shots}/sensor-settings.png`, fullPage: true });

  step("hidden: left out of the overview until asked for");
  await page.goto(base + "/#/overview");
  await page.waitForSelector("#show-hidden:not([hidden])", { timeout: 30000 });
  if (await page.$(`[data-sensor="${sensor}"]`)) failures.push("a hidden sensor is on the overview");
  await page.click("#show-hidden");
  await page.waitForSelector(`[data-sensor="${sensor}"]`, { timeout: 30000 });
  const tile = await page.textContent(`[data-sensor="${sensor}"]`);
  if (!tile.includes("Desk lamp") || !tile.includes("lx")) failures.push(`tile: ${tile}`);

  step("delete it");
  await page.click(`[data-sensor="${sensor}"]`);
  await openSettings(page);
  await page.click("#settings-delete");
  await page.waitForFunction(() => location.hash === "#/overview", null, { timeout: 30000 });
  const gone = await page.evaluate(async (s) => (await fetch(`/api/sensors/${s}/readings`)).status, sensor);
  if (gone !== 404) failures.push(`after deletion the sensor answers ${gone}`);
  console.log(JSON.stringify({ ok: failures.length === 0, failures }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, failures: [...failures, String(e)] }));
} finally {
  await browser.close();
}
