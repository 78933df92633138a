// Drives the console's web terminal in Debian's headless chromium through playwright-core,
// against a real relay and agent (with a real shell) started by
// relay/tests/relay/console_terminal.rs. Exits 0 when every step held.
//
// Environment: TETHER_URL, TETHER_SYSTEM (a system whose agent is connected),
// TETHER_ADMIN / TETHER_ADMIN_PASSWORD, TETHER_VIEWER / TETHER_VIEWER_PASSWORD,
// TETHER_OPERATOR / TETHER_OPERATOR_PASSWORD (an operator the admin disables),
// TETHER_BARE_URL / TETHER_BARE_ADMIN_PASSWORD (a second relay, same system and admin names,
// whose agent runs with --no-terminal), CHROMIUM (default /usr/bin/chromium), and optionally
// TETHER_SCREENSHOTS_DIR to save terminal.png and terminal-phone-dark.png there.

import { join } from "node:path";
import { DEADLINE_MS, LAPTOP, PHONE, check, env, login, open, run } from "./chromium.mjs";

const base = env("TETHER_URL");
const system = env("TETHER_SYSTEM");
const shots = process.env.TETHER_SCREENSHOTS_DIR;

// The session page of the system, from the sessions list; its URL.
async function sessionPage(page) {
  await page.getByRole("link", { name: "Sessions", exact: true }).click();
  await page.getByRole("heading", { name: "Sessions" }).waitFor();
  await page.getByRole("link", { name: system }).first().click();
  await page.waitForURL(/\/sessions\/[0-9a-f-]+$/);
  await page.getByRole("heading", { name: "Terminal", exact: true }).waitFor();
  return page.url();
}

// The rows xterm.js shows in panel n, as text.
async function screenText(page, n) {
  return (await page.locator(`#term-panel-${n} .xterm-rows`).innerText()).replace(/\u00a0/g, " ");
}

// Waits until fn(arg) holds in the page; the error names what never happened.
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: DEADLINE_MS });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}: ${e.message}`);
  }
}

async function waitForScreen(page, n, what, pattern) {
  try {
    await page.waitForFunction(
      ([n, source, flags]) => {
        const rows = document.querySelector(`#term-panel-${n} .xterm-rows`);
        return rows && new RegExp(source, flags).test(rows.innerText.replace(/\u00a0/g, " "));
      },
      [n, pattern.source, pattern.flags],
      { timeout: DEADLINE_MS },
    );
  } catch {
    throw new Error(`terminal ${n} never showed ${what}; it shows:\n${await screenText(page, n)}`);
  }
}

async function typeIn(page, n, line) {
  await page.locator(`#term-panel-${n} .term-screen`).click();
  await page.keyboard.type(line);
  await page.keyboard.press("Enter");
}

async function connected(page, n) {
  await page.locator(`#term-panel-${n}[data-state="connected"]`).waitFor();
}

// "cols×rows" of panel n as the page shows it.
async function size(page, n) {
  const text = await page.locator(`#term-panel-${n} .term-size`).textContent();
  const [cols, rows] = text.split("×").map(Number);
  check(cols > 0 && rows > 0, `panel ${n} shows its size, not ${text}`);
  return { cols, rows };
}

async function noSideways(page, what) {
  const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(wide <= 0, `${what}: the page scrolls sideways by ${wide}px`);
}

async function main() {
  // 1. the session page links to the terminal page, which opens a first terminal
  const admin = await open();
  await login(admin, base, env("TETHER_ADMIN"), env("TETHER_ADMIN_PASSWORD"));
  const sessionUrl = await sessionPage(admin);
  const sessionId = sessionUrl.split("/").pop();
  await admin.getByRole("link", { name: "Open terminal" }).click();
  await admin.waitForURL(`${sessionUrl}/terminal`);
  await connected(admin, 1);
  check((await admin.getByRole("tab", { name: /Terminal 1/ }).getAttribute("aria-selected")) === "true", "the first tab is selected");
  await typeIn(admin, 1, "echo MARK$((6*7))");
  await waitForScreen(admin, 1, "MARK42", /MARK42/);
  // xterm's theme and truecolor styles reach the screen in spite of the strict CSP
  await typeIn(admin, 1, "printf '\\033[38;2;200;30;30mTRUE%s\\033[0m\\n' COLOR");
  await waitForScreen(admin, 1, "TRUECOLOR", /TRUECOLOR/);
  const red = await admin.locator("#term-panel-1 .xterm-rows span", { hasText: "TRUECOLOR" }).last().evaluate((e) => getComputedStyle(e).color);
  check(red === "rgb(200, 30, 30)", `a truecolor cell is drawn in its colour, not ${red}`);
  const ink = ([n, colour]) => getComputedStyle(document.querySelector(`#term-panel-${n} .xterm-rows`)).color === colour;
  await until(admin, "the console's light text colour in the terminal", ink, [1, "rgb(27, 31, 36)"]);

  // 2. the size the page shows is the shell's, and follows the window
  let { cols, rows } = await size(admin, 1);
  await typeIn(admin, 1, "clear; stty size");
  await waitForScreen(admin, 1, `${rows} ${cols}`, new RegExp(`^${rows} ${cols}$`, "m"));
  await noSideways(admin, "the terminal at 1366×768");

  // 3. a second tab: its own shell; the arrow keys switch tabs
  await admin.getByRole("button", { name: "New terminal" }).click();
  await connected(admin, 2);
  check(await admin.locator("#term-panel-1").isHidden(), "the first terminal is hidden behind the second tab");
  await typeIn(admin, 2, "echo TAB$((1+1))");
  await waitForScreen(admin, 2, "TAB2", /TAB2/);
  await typeIn(admin, 2, "printf '\\033[1;31mbold red\\033[0m and \\033[32mgreen\\033[0m\\n'; ls /");
  await waitForScreen(admin, 2, "ls output", /green[\s\S]*(usr|etc)/);
  await shot(admin, "terminal");
  await admin.getByRole("tab", { name: /Terminal 2/ }).focus();
  await admin.keyboard.press("ArrowLeft");
  check((await admin.getByRole("tab", { name: /Terminal 1/ }).getAttribute("aria-selected")) === "true", "ArrowLeft selects the first tab");
  check(await admin.locator("#term-panel-1").isVisible(), "the first terminal shows again");
  check(!(await screenText(admin, 1)).includes("TAB2"), "each tab has its own shell");
  // F6 leaves the shell for the tabs (Tab itself goes to the shell)
  await admin.locator("#term-panel-1 .term-screen").click();
  await admin.keyboard.press("F6");
  check(await admin.getByRole("tab", { name: /Terminal 1/ }).evaluate((t) => t === document.activeElement), "F6 moves the focus to the tab");

  // 4. at phone width, in the dark: the terminal refits, the shell learns the new size
  await admin.setViewportSize(PHONE);
  await admin.emulateMedia({ colorScheme: "dark" });
  await until(admin, "the terminal to narrow with the window", (was) => {
    const text = document.querySelector("#term-panel-1 .term-size").textContent;
    return Number(text.split("×")[0]) < was;
  }, cols);
  const now = await size(admin, 1);
  ({ cols, rows } = now);
  await typeIn(admin, 1, "clear; stty size");
  await waitForScreen(admin, 1, `${rows} ${cols}`, new RegExp(`^${rows} ${cols}$`, "m"));
  await until(admin, "the terminal to follow the dark scheme", ink, [1, "rgb(230, 232, 235)"]);
  await noSideways(admin, "the terminal at phone width");
  await shot(admin, "terminal-phone-dark", { fullPage: true });
  await admin.setViewportSize(LAPTOP);
  await admin.emulateMedia({ colorScheme: "light" });

  // 5. the shell exits: a visible state and a Reconnect button that opens a new one
  await typeIn(admin, 1, "exit");
  await admin.locator('#term-panel-1[data-state="closed"]').waitFor();
  const ended = await admin.locator("#term-panel-1 .term-status").textContent();
  check(ended.includes("The terminal ended"), `the tab says the terminal ended, not ${ended}`);
  await admin.locator("#term-panel-1").getByRole("button", { name: "Reconnect" }).click();
  await connected(admin, 1);
  check(await admin.locator("#term-panel-1").getByRole("button", { name: "Reconnect" }).isHidden(), "Reconnect goes away when connected");
  await typeIn(admin, 1, "echo BACK$((3+4))");
  await waitForScreen(admin, 1, "BACK7", /BACK7/);

  // 6. closing a tab selects its neighbour
  await admin.getByRole("tab", { name: /Terminal 2/ }).click();
  await admin.getByRole("button", { name: "Close Terminal 2" }).click();
  await admin.locator("#term-panel-2").waitFor({ state: "detached" });
  check((await admin.getByRole("tab").count()) === 1, "one tab is left");
  check((await admin.getByRole("tab", { name: /Terminal 1/ }).getAttribute("aria-selected")) === "true", "the remaining tab is selected");

  // 7. the relay's reason for closing is shown: an operator disabled while in a terminal
  const otto = await open();
  await login(otto, base, env("TETHER_OPERATOR"), env("TETHER_OPERATOR_PASSWORD"));
  await otto.goto(`${sessionUrl}/terminal`);
  await connected(otto, 1);
  await admin.goto(`${base}/operators`);
  await admin.locator("tr", { hasText: env("TETHER_OPERATOR") }).getByRole("button", { name: "Disable" }).click();
  await otto.locator('#term-panel-1[data-state="closed"]').waitFor();
  const why = await otto.locator("#term-panel-1 .term-status").textContent();
  check(why === "Terminal closed: the operator was disabled.", `the tab gives the relay's reason, not ${why}`);

  // 8. a viewer has no terminal: no button, the page and the API answer 403
  const viewer = await open();
  await login(viewer, base, env("TETHER_VIEWER"), env("TETHER_VIEWER_PASSWORD"));
  await viewer.goto(sessionUrl);
  await viewer.getByRole("heading", { name: "Terminal", exact: true }).waitFor();
  check((await viewer.getByRole("link", { name: "Open terminal" }).count()) === 0, "a viewer sees no Open terminal");
  const page = await viewer.goto(`${sessionUrl}/terminal`);
  check(page.status() === 403, `a viewer's terminal page answers 403, not ${page.status()}`);
  await viewer.goto(sessionUrl);
  const status = await viewer.evaluate(async (id) => {
    const csrf = document.querySelector('input[name="csrf"]').value;
    const r = await fetch(`/api/v1/sessions/${id}/terminal-ticket`, { method: "POST", headers: { "X-CSRF-Token": csrf } });
    return r.status;
  }, sessionId);
  check(status === 403, `a viewer's ticket request answers 403, not ${status}`);

  // 9. an appliance whose terminal is off says so on the session page and the terminal page
  const bareUrl = env("TETHER_BARE_URL");
  const bare = await open();
  await login(bare, bareUrl, env("TETHER_ADMIN"), env("TETHER_BARE_ADMIN_PASSWORD"));
  const bareSession = await sessionPage(bare);
  const off = /the web terminal is disabled on this appliance \(tether-agent --no-terminal\)/i;
  check(off.test(await bare.locator("#terminal-unavailable").textContent()), "the session page says the terminal is disabled");
  check((await bare.getByRole("link", { name: "Open terminal" }).count()) === 0, "no Open terminal when it is disabled");
  await bare.goto(`${bareSession}/terminal`);
  check(off.test(await bare.locator("#terminal-unavailable").textContent()), "the terminal page says the terminal is disabled");
  check((await bare.locator(".term-panel").count()) === 0, "no terminal is opened when it is disabled");

  // the viewer's refusals are the only errors a page may log (CSP reports would show here)
  for (const p of [admin, otto, viewer, bare]) {
    const problems = p.problems.filter((m) => !(p === viewer && m.includes("status of 403")));
    check(problems.length === 0, `no console errors (CSP or script): ${problems.join("; ")}`);
  }
}

async function shot(page, name, { fullPage = false } = {}) {
  if (!shots) return;
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage });
}

await run("terminal browser test", main);
