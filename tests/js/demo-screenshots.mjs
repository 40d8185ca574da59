// `roost serve --demo` in a real headless Chromium: the overview shows the nine demo sensors
// and a sensor's 24 h chart shows the backfilled day. Saves the README's screenshots at a wide
// and a phone size, in the light and the dark theme (for a human to compare in review).
// Usage: node demo-screenshots.mjs http://127.0.0.1:PORT SCREENSHOT_DIR
import { launchChromium } from "./browser.mjs";

const [base, shots] = process.argv.slice(2);
const browser = await launchChromium();
const failures = [];
const SIZES = { wide: { width: 1440, height: 900 }, phone: { width: 390, height: 844 } };
const results = {};
try {
  for (const theme of ["light", "dark"]) {
    for (const [size, viewport] of Object.entries(SIZES)) {
      const page = await browser.newPage({ viewport, colorScheme: theme });
      page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
      await page.goto(base + "/");
      await page.waitForFunction(() => document.querySelectorAll('[data-sensor^="demo/"]').length === 9, null, { timeout: 30000 });
      const tiles = await page.$$eval('[data-sensor^="demo/"] .value', (els) => els.map((e) => e.textContent));
      if (!tiles.every((t) => /^-?\d+(\.\d+)? (°C|%|raw)$/.test(t))) failures.push(`tile values: ${JSON.stringify(tiles)}`);
      // Functional checks of the layout: boards side by side on a wide screen, stacked on a phone.
      const columns = await page.$$eval(".board", (boards) => new Set(boards.map((b) => Math.round(b.getBoundingClientRect().left))).size);
      if (size === "wide" && columns < 3) failures.push(`${size}: the three boards are not side by side (${columns} columns)`);
      if (size === "phone" && columns !== 1) failures.push(`${size}: boards in ${columns} columns`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
      if (overflow) failures.push(`${size}/${theme}: the page scrolls sideways`);
      const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      results[`${size}-${theme}-background`] = background;
      await page.screenshot({ path: `${shots}/demo-overview-${size}-${theme}.png`, fullPage: size === "phone" });

      await page.click('[data-sensor="demo/livingroom/temperature"]');
      await page.waitForSelector("#chart canvas", { timeout: 30000 });
      await page.click('[data-range="86400000"]');
      await page.waitForFunction(() => /readings/.test(document.getElementById("chart-note").textContent), null, { timeout: 30000 });
      const note = await page.textContent("#chart-note");
      const readings = parseInt(note.replace(/,/g, ""), 10);
      // A day of backfill is one reading per 5 minutes: 288.
      if (!(readings >= 280)) failures.push(`24 h chart note: ${note}`);
      if (!/Each point: the average of \d+ (minute|minutes|second|seconds)/.test(note)) failures.push(`resolution in words: ${note}`);
      await page.screenshot({ path: `${shots}/demo-sensor-${size}-${theme}.png` });
      results.note = note;
      await page.close();
    }
  }
  if (results["wide-light-background"] === results["wide-dark-background"]) failures.push("the dark theme has the light theme's background");
  console.log(JSON.stringify({ ok: failures.length === 0, failures, ...results }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, failures: [...failures, String(e)] }));
} finally {
  await browser.close();
}
