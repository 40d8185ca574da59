// Alerts on the dashboard in a real headless Chromium: add a rule from the Alerts page, see its
// alert (over a reading already stored) fire at the top of the overview, acknowledge it there,
// find both in the history, change the rule so it no longer fires, delete it. Saves alerts.png.
// The server holds iot/yanjo/sensor/gh/temperature = 31.
// Usage: node alerts-e2e.mjs http://127.0.0.1:PORT SCREENSHOT_DIR
import { launchChromium } from "./browser.mjs";

const [base, shots] = process.argv.slice(2);
const step = (name) => console.error(`step: ${name}`);
const browser = await launchChromium();
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  page.on("dialog", (d) => {
    if (d.type() === "confirm" && d.message().startsWith("Delete the rule gh-hot")) return d.accept();
    failures.push(`unexpected dialog: ${d.message()}`);
    return d.dismiss();
  });

  step("a bad rule is refused with the server's reason");
  await page.goto(base + "/#/alerts");
  await page.waitForSelector("#rule-form", { timeout: 30000 });
  await page.fill("#rule-name", "gh-hot");
  await page.fill("#rule-topic", "iot/+/sensor/gh/temperature");
  await page.selectOption("#rule-kind", "above");
  await page.fill("#rule-level", "30");
  await page.fill("#rule-clear", "31");
  await page.click("#rule-submit");
  await page.waitForSelector("#rule-error:not([hidden])", { timeout: 30000 });
  const refused = await page.textContent("#rule-error");
  if (!refused.includes("`clear`")) failures.push(`refusal: ${refused}`);

  step("add a rule: above 30, resolving at 29");
  await page.fill("#rule-clear", "29");
  await page.selectOption("#rule-severity", "critical");
  await page.click("#rule-submit");
  await page.waitForSelector('[data-rule="gh-hot"]', { timeout: 30000 });
  const condition = await page.textContent('[data-rule="gh-hot"] td:nth-child(4)');
  if (condition !== "above 30, resolves at 29") failures.push(`condition: ${condition}`);

  step("it fires over the stored 31: on top of the overview");
  await page.goto(base + "/#/overview");
  await page.waitForSelector("#firing:not([hidden])", { timeout: 30000 });
  const banner = await page.textContent("#firing-list");
  if (!banner.includes("gh-hot: yanjo/gh/temperature") || !banner.includes("at 31") || !banner.includes("critical")) failures.push(`banner: ${banner}`);
  if ((await page.textContent("#alerts-count")) !== "1") failures.push(`menu count: ${await page.textContent("#alerts-count")}`);
  await page.screenshot({ path: `${shots}/alerts-overview.png` });

  step("acknowledge it from the overview");
  await page.click("#firing-list button");
  await page.waitForFunction(() => document.getElementById("firing-list").textContent.includes("acknowledged by"), null, { timeout: 30000 });

  step("the Alerts page: firing now, and the history");
  await page.goto(base + "/#/alerts");
  await page.waitForFunction(() => document.querySelectorAll("#alert-events tr").length >= 2, null, { timeout: 30000 });
  const now = await page.textContent("#alerts-active");
  if (!now.includes("firing") || !now.includes("acknowledged by anonymous")) failures.push(`now: ${now}`);
  const history = await page.$$eval("#alert-events tr td:nth-child(2)", (cells) => cells.map((c) => c.textContent));
  if (history.join(",") !== "acknowledged,firing") failures.push(`history: ${history}`);
  await page.screenshot({ path: `${shots}/alerts.png`, fullPage: true });

  step("change it to above 40: no longer firing");
  await page.click('[data-rule="gh-hot"] button:text("Edit")');
  if ((await page.inputValue("#rule-level")) !== "30") failures.push("the form shows the rule");
  await page.fill("#rule-level", "40");
  await page.fill("#rule-clear", "");
  await page.click("#rule-submit");
  await page.waitForFunction(() => document.querySelector('[data-rule="gh-hot"] td:nth-child(4)')?.textContent === "above 40", null, { timeout: 30000 });
  // The engine applies a changed rule a moment after it is saved: the page shows it once it
  // reloads (it also refreshes by itself every 15 s).
  for (let i = 0; !(await page.isVisible("#alerts-none")); i++) {
    if (i === 120) throw new Error(`still active after the change: ${await page.textContent("#alerts-active")}`);
    await page.waitForTimeout(250);
    await page.reload();
    await page.waitForSelector('[data-rule="gh-hot"]', { timeout: 30000 });
  }

  step("delete it");
  await page.click('[data-rule="gh-hot"] button.danger');
  await page.waitForFunction(() => !document.querySelector('[data-rule="gh-hot"]'), null, { timeout: 30000 });
  console.log(JSON.stringify({ ok: failures.length === 0, failures }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, failures: [...failures, String(e)] }));
} finally {
  await browser.close();
}
