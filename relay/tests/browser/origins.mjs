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

import { DEADLINE_MS, check, env, login, open, run } from "./chromium.mjs";

const base = env("TETHER_URL");
const session = env("TETHER_SESSION");
const ORIGIN_HOST = /^[0-9a-v]{26}\.localhost$/;

async function openService(console_, name) {
  const row = console_.locator(`tr[data-service="${name}"]`);
  const link = row.getByRole("link", { name: "Open" });
  const href = await link.getAttribute("href");
  check(href === `/sessions/${session}/services/${name}/open`, `Open of ${name} goes through the console: ${href}`);
  const [tab] = await Promise.all([console_.context().waitForEvent("page"), link.click()]);
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
  // log in and go to the session
  const page = await open();
  await login(page, base, env("TETHER_ADMIN"), env("TETHER_ADMIN_PASSWORD"));
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

  // a browser without the console's link (a fresh profile) is refused by a page saying what to do
  const stranger = await open();
  const resp = await stranger.goto(one.url());
  check(resp.status() === 401, `a browser without the origin cookie gets 401, not ${resp.status()}`);
  await stranger.getByRole("heading", { name: "401 Unauthorized" }).waitFor();
  check((await stranger.locator(".error-message").textContent()).includes("open it from the Tether console"), "the refusal page says what to do");
  check(page.problems.length === 0, `no console errors on the console: ${page.problems.join("; ")}`);
}

await run("origins browser test", main);
