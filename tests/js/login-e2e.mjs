// The dashboard with authentication on, in a real headless Chromium: the login page, a wrong
// password, a right one, what a device user sees, the MQTT console as that user, logout.
// Usage: node login-e2e.mjs http://127.0.0.1:PORT USER PASSWORD SCREENSHOT_DIR
import { launchChromium } from "./browser.mjs";

const [base, user, password, shots] = process.argv.slice(2);
const step = (name) => console.error(`step: ${name}`);
const browser = await launchChromium();
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 600 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));

  step("the login page comes first");
  await page.goto(base + "/");
  await page.waitForSelector("#view-login:not([hidden])", { timeout: 30000 });
  if (await page.isVisible("nav")) failures.push("navigation shown before login");
  await page.screenshot({ path: `${shots}/login.png` });

  step("a wrong password is refused");
  await page.fill("#login-username", user);
  await page.fill("#login-password", password + "x");
  await page.click("#login-form button");
  await page.waitForSelector("#login-error:not([hidden])", { timeout: 30000 });
  const error = await page.textContent("#login-error");
  if (error !== "Wrong user name or password.") failures.push(`login error: ${error}`);

  step("the right one shows this user's sensors only");
  await page.fill("#login-password", password);
  await page.click("#login-form button");
  await page.waitForSelector(`[data-sensor^="${user}/"]`, { timeout: 30000 });
  const owners = await page.$$eval("[data-sensor]", (els) => [...new Set(els.map((e) => e.dataset.sensor.split("/")[0]))]);
  if (owners.join() !== user) failures.push(`owners shown: ${owners}`);
  const who = await page.textContent("#who");
  if (who !== user) failures.push(`who: ${who}`);

  step("the MQTT console connects as this user, with this user's ACL");
  await page.goto(base + "/#/console");
  if ((await page.inputValue("#console-username")) !== user) failures.push("console user name not filled in");
  await page.click("#console-connect-button");
  await page.waitForFunction(() => document.getElementById("console-state").textContent === "connected", null, { timeout: 30000 });
  await page.fill("#console-filter", "iot/#");
  await page.click("#console-subscribe button");
  // SUBACK 0x80: MQTT.js reports it as an error.
  await page.waitForFunction(() => document.getElementById("console-log").textContent.includes("subscribe to iot/# refused"), null, { timeout: 30000 });
  await page.fill("#console-filter", `iot/${user}/#`);
  await page.click("#console-subscribe button");
  await page.waitForFunction((u) => document.getElementById("console-log").textContent.includes(`subscribed to iot/${u}/# (granted 1)`), user, { timeout: 30000 });

  step("an API token made on the dashboard works for scripts until it is revoked there");
  await page.goto(base + "/#/tokens");
  await page.fill("#token-name", "e2e script");
  await page.click("#token-form button");
  await page.waitForSelector("#token-new:not([hidden])", { timeout: 30000 });
  const token = await page.textContent("#token-value");
  const asScript = () => fetch(base + "/api/sensors", { headers: { authorization: `Bearer ${token}` } });
  const before = await asScript();
  if (before.status !== 200) failures.push(`token refused: ${before.status}`);
  await page.waitForFunction(() => document.getElementById("tokens-body").textContent.includes("e2e script"), null, { timeout: 30000 });
  await page.screenshot({ path: `${shots}/tokens.png` });
  await page.click("#tokens-body button");
  await page.waitForFunction(() => !document.getElementById("tokens-body").textContent.includes("e2e script"), null, { timeout: 30000 });
  const after = await asScript();
  if (after.status !== 401) failures.push(`revoked token still answered ${after.status}`);

  step("logout returns to the login page");
  await page.click("#logout");
  await page.waitForSelector("#view-login:not([hidden])", { timeout: 30000 });
  console.log(JSON.stringify({ ok: failures.length === 0, failures }));
} catch (e) {
  const log = await browser.contexts()[0]?.pages()[0]?.textContent("#console-log").catch(() => "") ?? "";
  console.log(JSON.stringify({ ok: false, failures: [...failures, String(e)], console_log: log }));
} finally {
  await browser.close();
}
