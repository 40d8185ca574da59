// Overview page weight and time to first render, in Debian's headless Chromium.
// Usage: node page-bench.mjs http://127.0.0.1:8080 [runs]   (a running Roost with some sensors)
// Each run uses a fresh browser context (empty cache). Prints medians.
import { launchChromium } from "./browser.mjs";

const [base, runsArg] = process.argv.slice(2);
const runs = +runsArg || 5;
const browser = await launchChromium();
const results = [];
for (let i = 0; i < runs; i++) {
  const context = await browser.newContext();
  const page = await context.newPage();
  let bytes = 0;
  page.on("response", async (r) => {
    const sizes = await r.request().sizes().catch(() => null);
    if (sizes) bytes += sizes.responseBodySize + sizes.responseHeadersSize;
  });
  await page.goto(base + "/", { waitUntil: "load" });
  await page.waitForSelector(".tile", { timeout: 5000 });
  await page.waitForTimeout(500); // let the trend-line requests finish
  const timing = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    const fcp = performance.getEntriesByName("first-contentful-paint")[0];
    return { domContentLoaded: nav.domContentLoadedEventEnd, firstPaint: fcp ? fcp.startTime : null };
  });
  results.push({ bytes, ...timing });
  await context.close();
}
await browser.close();
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(JSON.stringify({
  runs,
  transfer_bytes: median(results.map((r) => r.bytes)),
  dom_content_loaded_ms: median(results.map((r) => r.domContentLoaded)),
  first_contentful_paint_ms: median(results.map((r) => r.firstPaint)),
}));
