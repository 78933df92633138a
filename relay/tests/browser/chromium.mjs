// What the console's browser tests share: Debian's headless chromium through playwright-core,
// one throw-away profile per page, the console's login, and the run that exits 0 when every
// step held.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const LAPTOP = { width: 1366, height: 768 };
export const PHONE = { width: 390, height: 844 };
export const DEADLINE_MS = 60_000;

const dirs = [];
const contexts = [];

/** The value of environment variable `name`; throws naming it when it is not set. */
export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** A page in a fresh chromium profile; `page.problems` collects console and script errors. */
export async function open(colorScheme = "light") {
  const dir = mkdtempSync(join(tmpdir(), "tether-chromium-"));
  dirs.push(dir);
  const context = await chromium.launchPersistentContext(dir, {
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
    viewport: LAPTOP,
    colorScheme,
  });
  contexts.push(context);
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(DEADLINE_MS);
  page.on("dialog", (dialog) => dialog.accept());
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  page.problems = problems;
  return page;
}

/** Logs `name` in at the console of relay `at`; lands on the systems page. */
export async function login(page, at, name, password) {
  await page.goto(`${at}/login`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Password").fill(password);
  await Promise.all([page.waitForURL(`${at}/systems`), page.getByRole("button", { name: "Log in" }).click()]);
}

/** Runs `main`, reports under `name`, closes every browser and exits 0 when it held. */
export async function run(name, main) {
  let failed = false;
  try {
    await main();
    console.log(`${name}: 1 passed, 0 failed`);
  } catch (e) {
    failed = true;
    console.error(e);
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
}
