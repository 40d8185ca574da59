// User management on the dashboard, with logins on, in a real headless Chromium: an admin adds
// a user (the generated password shown once logs in over MQTT.js), grants a topic filter, gives
// a new password (the old one stops working) and removes the user. Saves users.png.
// Usage: node users-e2e.mjs http://127.0.0.1:PORT ADMIN PASSWORD SCREENSHOT_DIR
import { launchChromium } from "./browser.mjs";
import mqtt from "mqtt";

const [base, admin, password, shots] = process.argv.slice(2);
const wsUrl = base.replace(/^http/, "ws") + "/mqtt";
const step = (name) => console.error(`step: ${name}`);
const browser = await launchChromium();
const failures = [];
// Whether `user` can log in over MQTT with `secret`.
const canLogIn = async (user, secret) => {
  const client = await mqtt.connectAsync(wsUrl, { clientId: `e2e-${Math.random().toString(16).slice(2)}`, username: user, password: secret, protocolVersion: 4, reconnectPeriod: 0 })
    .catch(() => null);
  if (client) await client.endAsync();
  return client !== null;
};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  // The page's own confirmations are accepted; any other dialog is a failure.
  page.on("dialog", (d) => {
    if (d.type() === "confirm" && /^(Remove|Give) carol/.test(d.message())) return d.accept();
    failures.push(`unexpected dialog: ${d.message()}`);
    return d.dismiss();
  });

  step("log in as the admin");
  await page.goto(base + "/");
  await page.fill("#login-username", admin);
  await page.fill("#login-password", password);
  await page.click("#login-form button");
  await page.waitForSelector("#nav-users:not([hidden])", { timeout: 30000 });

  step("add a user with a generated password");
  await page.click("#nav-users");
  await page.waitForSelector(`#users-body tr[data-user="${admin}"]`, { timeout: 30000 });
  await page.fill("#user-name", "carol");
  await page.click("#user-form button");
  await page.waitForSelector('#users-body tr[data-user="carol"]', { timeout: 30000 });
  const secret = await page.textContent("#user-secret-value");
  if (!(await canLogIn("carol", secret))) failures.push("carol cannot log in with the password shown");

  step("grant a topic filter, subscribe only");
  await page.selectOption("#grant-user", "carol");
  await page.fill("#grant-filter", "home/+/cmd");
  await page.uncheck("#grant-publish");
  await page.click("#grant-form button");
  await page.waitForFunction(() => document.querySelector('#users-body tr[data-user="carol"]').textContent.includes("subscribe home/+/cmd"), null, { timeout: 30000 });

  step("a new password: the old one stops working");
  await page.click('#users-body tr[data-user="carol"] button:has-text("New password")');
  await page.waitForFunction((old) => { const v = document.getElementById("user-secret-value").textContent; return v && v !== old; }, secret, { timeout: 30000 });
  const renewed = await page.textContent("#user-secret-value");
  if (await canLogIn("carol", secret)) failures.push("the old password still works");
  if (!(await canLogIn("carol", renewed))) failures.push("the new password does not work");
  await page.screenshot({ path: `${shots}/users.png` });

  step("remove the user");
  await page.click('#users-body tr[data-user="carol"] button:has-text("Remove")');
  await page.waitForSelector('#users-body tr[data-user="carol"]', { state: "detached", timeout: 30000 });
  if (await canLogIn("carol", renewed)) failures.push("a removed user can still log in");
  console.log(JSON.stringify({ ok: failures.length === 0, failures }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, failures: [...failures, String(e)] }));
} finally {
  await browser.close();
}
