// `roost serve --demo` in a real headless Chromium: the overview shows the nine demo sensors
// and a sensor's 24 h chart shows the backfilled day. Saves the README's quick-start screenshots.
// Usage: node demo-screenshots.mjs http://127.0.0.1:PORT SCREENSHOT_DIR
import { launchChromium } from "./browser.mjs";

const [base, shots] = process.argv.slice(2);
const browser = await launchChromium();
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  await page.goto(base + "/");
  await page.waitForFunction(() => document.querySelectorAll('[data-sensor^="demo/"]').length === 9, null, { timeout: 10000 });
  const tiles = await page.$$eval('[data-sensor^="demo/"] .value', (els) => els.map((e) => e.textContent));
  if (!tiles.every((t) => /^-?\d+(\.\d+)? (°C|%|raw)$/.test(t))) failures.push(`tile values: ${JSON.stringify(tiles)}`);
  await page.screenshot({ path: `${shots}/demo-overview.png` });

  await page.click('[data-sensor="demo/livingroom/illuminate"]');
  await page.waitForSelector("#chart canvas", { timeout: 5000 });
  await page.click('[data-range="86400000"]');
  await page.waitForFunction(() => /readings/.test(document.getElementById("chart-note").textContent), null, { timeout: 5000 });
  const note = await page.textContent("#chart-note");
  const readings = parseInt(note.replace(/,/g, ""), 10);
  // A day of backfill is one reading per 5 minutes: 288.
  if (!(readings >= 280)) failures.push(`24 h chart note: ${note}`);
  await page.screenshot({ path: `${shots}/demo-sensor.png` });
  console.log(JSON.stringify({ ok: failures.length === 0, failures, tiles, note }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, failures: [...failures, String(e)] }));
} finally {
  await browser.close();
}
