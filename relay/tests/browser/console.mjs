// Drives the operator console in Debian's headless chromium through playwright-core, against a
// real relay and agent started by relay/tests/relay/console.rs. Exits 0 when every step held.
//
// Environment: TETHER_URL, TETHER_ADMIN / TETHER_ADMIN_PASSWORD, TETHER_VIEWER /
// TETHER_VIEWER_PASSWORD, TETHER_SYSTEM (a system whose agent is connected), TETHER_SERVICE_TARGET
// (host:port the agent can reach), CHROMIUM (default /usr/bin/chromium), and optionally
// TETHER_SCREENSHOTS_DIR to save screenshots of the main pages there.

import { join } from "node:path";
import { DEADLINE_MS, LAPTOP, PHONE, check, env, login as logIn, open, run } from "./chromium.mjs";

const base = env("TETHER_URL");
const system = env("TETHER_SYSTEM");
const shots = process.env.TETHER_SCREENSHOTS_DIR;

/** Logs in as a stranger would: `/` sends to the login page, which lands on Systems. */
async function login(page, name, password) {
  await page.goto(`${base}/`);
  check(new URL(page.url()).pathname === "/login", `a stranger lands on the login page, not ${page.url()}`);
  await logIn(page, base, name, password);
  await page.getByRole("heading", { name: "Systems" }).waitFor();
}

async function shot(page, name, { viewport = LAPTOP, colorScheme = "light", fullPage = false } = {}) {
  if (!shots) return;
  await page.setViewportSize(viewport);
  await page.emulateMedia({ colorScheme });
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage });
  await page.setViewportSize(LAPTOP);
  await page.emulateMedia({ colorScheme: "light" });
}

async function main() {
  // 1. log in
  const admin = await open();
  await login(admin, env("TETHER_ADMIN"), env("TETHER_ADMIN_PASSWORD"));

  // 2. the connected system turns green from its diagnostics (the page refreshes its table)
  const row = admin.locator(`tr[data-system="${system}"]`);
  await row.locator(".dot.ok").first().waitFor({ timeout: DEADLINE_MS });
  check((await row.locator(".status-word").textContent()).trim() === "ok", "the system's status reads ok");
  await shot(admin, "systems");
  await shot(admin, "systems-dark", { colorScheme: "dark" });
  await shot(admin, "systems-phone", { viewport: PHONE, fullPage: true });

  // 3. the sessions list, then the session
  await admin.getByRole("link", { name: "Sessions" }).click();
  await admin.getByRole("heading", { name: "Sessions" }).waitFor();
  await shot(admin, "sessions");
  await admin.getByRole("link", { name: system }).first().click();
  await admin.waitForURL(/\/sessions\/[0-9a-f-]+$/);
  const sessionUrl = admin.url();
  const sessionId = sessionUrl.split("/").pop();
  await admin.locator("details.plugin", { hasText: "system" }).first().waitFor();

  // 4. add a service and see the agent's answer, then remove it
  const target = env("TETHER_SERVICE_TARGET");
  await admin.getByLabel("Name", { exact: true }).fill("phone");
  await admin.getByLabel("host:port").fill(target);
  await admin.getByLabel("Label").fill("Desk phone");
  await admin.getByRole("button", { name: "Add service" }).click();
  await admin.locator("#service-answer", { hasText: "answered OK" }).waitFor();
  const phone = admin.locator('tr[data-service="phone"]');
  await phone.waitFor();
  check((await phone.textContent()).includes("Desk phone"), "the new service shows its label");
  check((await phone.getByRole("link", { name: "Open" }).getAttribute("href")).endsWith("/proxy/phone/"), "Open links to the service");
  await shot(admin, "session", { fullPage: true });
  // going through a service makes the operator one of the session's operators now
  const through = await admin.request.get(`${base}/api/v1/sessions/${sessionId}/proxy/phone/hello`);
  check(through.ok(), `the service answers through the proxy, not ${through.status()}`);
  await admin.goto(`${base}/sessions`);
  const present = admin.locator(`tr[data-session="${sessionId}"] td.operators`);
  check((await present.textContent()).trim() === env("TETHER_ADMIN"), "the sessions page lists the operator now on it");
  await admin.goto(sessionUrl);
  await phone.getByRole("button", { name: "Remove" }).click();
  await admin.locator("#service-answer", { hasText: "removed" }).waitFor();
  await phone.waitFor({ state: "detached" });
  // the appliance's own service cannot be removed, and the answer says why
  await admin.locator('tr[data-service="demo"]').getByRole("button", { name: "Remove" }).click();
  await admin.locator("#service-answer", { hasText: "published by the appliance itself" }).waitFor();

  // 5. a viewer sees no Close button and gets 403 from the API
  const viewer = await open();
  await login(viewer, env("TETHER_VIEWER"), env("TETHER_VIEWER_PASSWORD"));
  await viewer.goto(sessionUrl);
  await viewer.getByRole("heading", { name: "Diagnostics" }).waitFor();
  check((await viewer.locator("#close-session").count()) === 0, "a viewer sees no Close button");
  check((await viewer.getByRole("button", { name: "Add service" }).count()) === 0, "a viewer sees no Add service");
  const status = await viewer.evaluate(async (id) => {
    const csrf = document.querySelector('input[name="csrf"]').value;
    const r = await fetch(`/api/v1/sessions/${id}`, { method: "DELETE", headers: { "X-CSRF-Token": csrf } });
    return r.status;
  }, sessionId);
  check(status === 403, `a viewer's DELETE of the session answers 403, not ${status}`);

  // 6. extend, then close the session
  await admin.goto(sessionUrl);
  await admin.getByRole("button", { name: "Extend" }).click();
  await admin.locator("#session-message", { hasText: "Extended by 1 h" }).waitFor();
  await admin.locator("#close-session").click();
  await admin.locator("#session-message", { hasText: "Session closed" }).waitFor();
  check((await admin.locator("#session-status").textContent()).trim() === "closed", "the session reads closed");

  // 7. the audit log lists each action, and exports them
  await admin.getByRole("link", { name: "Audit log" }).click();
  await admin.getByRole("heading", { name: "Audit log" }).waitFor();
  for (const action of ["login", "service_add", "service_remove", "session_extend", "session_close"]) {
    check((await admin.locator(`#audit-table tr[data-action="${action}"]`).count()) > 0, `the audit log lists ${action}`);
  }
  await shot(admin, "audit");
  const csv = await admin.request.get(`${base}/audit/export?format=csv`);
  check(csv.ok() && (await csv.text()).includes("service_remove"), "the CSV export holds the records");
  const jsonl = await admin.request.get(`${base}/audit/export?format=jsonl&action=service_add`);
  const lines = (await jsonl.text()).trim().split("\n").map((l) => JSON.parse(l));
  check(lines.length >= 1 && lines.every((l) => l.action === "service_add"), "the JSON lines export is filtered");
  await admin.getByRole("link", { name: "Operators" }).click();
  await admin.getByRole("heading", { name: "Operators" }).waitFor();
  await shot(admin, "operators");

  // 8. log out
  await admin.getByRole("button", { name: "Log out" }).click();
  await admin.waitForURL(`${base}/login`);
  await admin.goto(`${base}/systems`);
  check(new URL(admin.url()).pathname === "/login", "after logout the console asks for a login again");
  await shot(admin, "login");

  // the viewer's refused DELETE is the one error a page may log
  for (const page of [admin, viewer]) {
    const problems = page.problems.filter((p) => !(page === viewer && p.includes("status of 403")));
    check(problems.length === 0, `no console errors (CSP or script): ${problems.join("; ")}`);
  }
}

await run("console browser test", main);
