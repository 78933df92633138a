// Opens services on their own origins in Debian's headless chromium through playwright-core,
// against a real relay started with --proxy-domain localhost and an agent publishing two web
// services (relay/tests/relay/origins.rs starts them). Exits 0 when every step held.
//
// Each service sets a cookie `sid=<name>` for the device's own domain and redirects to its
// absolute /home URL: through its origin the redirect stays on the origin and the cookie is the
// origin's alone, so each tab sees only its own service's cookie.
//
// Environment: TETHER_URL (the console), TETHER_SESSION (a session publishing services "one"
// and "two"), TETHER_ADMIN / TETHER_ADMIN_PASSWORD, CHROMIUM (default /usr/bin/chromium).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("TETHER_URL");
const session = env("TETHER_SESSION");
const DEADLINE_MS = 60_000;
const ORIGIN_HOST = /^[0-9a-v]{26}\.localhost$/;

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

const dir = mkdtempSync(join(tmpdir(), "tether-chromium-"));
let context;

async function openService(console_, name) {
  const row = console_.locator(`tr[data-service="${name}"]`);
  const link = row.getByRole("link", { name: "Open" });
  const href = await link.getAttribute("href");
  check(href === `/sessions/${session}/services/${name}/open`, `Open of ${name} goes through the console: ${href}`);
  const [tab] = await Promise.all([context.waitForEvent("page"), link.click()]);
  tab.setDefaultTimeout(DEADLINE_MS);
  await tab.getByRole("heading", { name: `service ${name}` }).waitFor();
  const url = new URL(tab.url());
  check(ORIGIN_HOST.test(url.hostname), `${name} opens on its own origin, not ${tab.url()}`);
  check(url.port === new URL(base).port, `${name}'s origin is on the relay's port: ${tab.url()}`);
  check(url.pathname === "/home", `the service's redirect stays on its origin: ${tab.url()}`);
  const next = await tab.locator("#next").getAttribute("href");
  check(next === `${url.origin}/next`, `links naming the device point at the origin: ${next}`);
  check((await tab.locator("#upstream-cookie").textContent()) === `sid=${name}`, `${name} got its own cookie back`);
  return tab;
}

async function main() {
  context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1366, height: 768 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(DEADLINE_MS);

  // log in and go to the session
  await page.goto(`${base}/login`);
  await page.getByLabel("Name").fill(env("TETHER_ADMIN"));
  await page.getByLabel("Password").fill(env("TETHER_ADMIN_PASSWORD"));
  await Promise.all([page.waitForURL(`${base}/systems`), page.getByRole("button", { name: "Log in" }).click()]);
  await page.goto(`${base}/sessions/${session}`);
  await page.locator('tr[data-service="two"]').waitFor();

  // open both services: each on its origin, each seeing only its own cookie
  const one = await openService(page, "one");
  const two = await openService(page, "two");
  check(new URL(one.url()).origin !== new URL(two.url()).origin, "two services, two origins");
  await one.reload();
  await one.getByRole("heading", { name: "service one" }).waitFor();
  check((await one.evaluate(() => document.cookie)) === "sid=one", "tab one sees only sid=one (the origin cookie is HttpOnly)");
  check((await two.evaluate(() => document.cookie)) === "sid=two", "tab two sees only sid=two");
  check((await page.evaluate(() => document.cookie)) === "", "the console sees no service cookie");

  // a tab of the service origin without the console's link is refused, saying what to do
  const stranger = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  try {
    const p = await stranger.newPage();
    const resp = await p.goto(one.url());
    check(resp.status() === 401, `a browser without the origin cookie gets 401, not ${resp.status()}`);
    check((await p.content()).includes("open it from the Tether console"), "the refusal says what to do");
  } finally {
    await stranger.close();
  }
}

let failed = false;
try {
  await main();
  console.log("origins browser test: 1 passed, 0 failed");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
