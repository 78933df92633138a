// Tether console: web terminals on the appliance of a session, in tabs (the terminal page).
// Each tab asks the terminal API for a one-time ticket (a POST with the login's CSRF token),
// opens the terminal WebSocket and drives xterm.js with the browser-leg messages of the
// terminal API: [0][bytes] data both ways, [1][{"cols":c,"rows":r}] a resize, [3][text] the
// relay's reason for closing. Loaded as a module; no inline scripts or styles (the CSP).

import { Terminal } from "/assets/xterm.mjs";
import { FitAddon } from "/assets/addon-fit.mjs";

// xterm.js writes its theme and cell sizes into <style> elements and truecolor cells into
// `style` attributes; the console's CSP (style-src 'self') blocks both. Constructed style
// sheets and the CSSOM are not inline styles, so route xterm's styles there. Only this page
// loads this module, and any other inline style would be blocked here anyway.
const createElement = document.createElement.bind(document);
document.createElement = (name, options) => {
  if (String(name).toLowerCase() !== "style") return createElement(name, options);
  const sheet = new CSSStyleSheet();
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  // inert: it only takes xterm's appendChild, textContent and remove()
  const holder = createElement("template");
  let css = "";
  Object.defineProperty(holder, "textContent", {
    get: () => css,
    set: (text) => {
      css = String(text);
      sheet.replaceSync(css);
    },
  });
  holder.remove = () => {
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
    Element.prototype.remove.call(holder);
  };
  return holder;
};
const setAttribute = Element.prototype.setAttribute;
Element.prototype.setAttribute = function (name, value) {
  // xterm's row spans, before they are shown
  if (name === "style" && this instanceof HTMLSpanElement && !this.isConnected) {
    this.style.cssText = value;
    return;
  }
  setAttribute.call(this, name, value);
};

const DATA = 0;
const RESIZE = 1;
const CLOSE_REASON = 3;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const root = document.getElementById("terminals");
const sessionId = root?.dataset.session;
const tablist = document.getElementById("term-tabs");
const panels = document.getElementById("term-panels");
const none = document.getElementById("term-none");
const newButton = document.getElementById("term-new");
const dark = window.matchMedia("(prefers-color-scheme: dark)");

// The login's CSRF token: the one htmx sends with every request (base.html's hx-headers).
function csrfToken() {
  try {
    return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
  } catch {
    return "";
  }
}

// Colours from the console's CSS variables; the ANSI colours of xterm's defaults suit a dark
// background, these a light one.
const LIGHT_ANSI = {
  black: "#1b1f24", red: "#cf222e", green: "#116329", yellow: "#7d4e00", blue: "#0550ae",
  magenta: "#8250df", cyan: "#1b7c83", white: "#6e7781", brightBlack: "#57606a",
  brightRed: "#a40e26", brightGreen: "#1a7f37", brightYellow: "#633c01", brightBlue: "#218bff",
  brightMagenta: "#a475f9", brightCyan: "#3192aa", brightWhite: "#8c959f",
};
function theme() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return {
    ...(dark.matches ? {} : LIGHT_ANSI),
    background: v("--term-bg"),
    foreground: v("--term-fg"),
    cursor: v("--term-fg"),
    cursorAccent: v("--term-bg"),
    selectionBackground: v("--term-selection"),
  };
}

function message(type, bytes) {
  const m = new Uint8Array(bytes.length + 1);
  m[0] = type;
  m.set(bytes, 1);
  return m;
}

const tabs = [];
let active = null;
let opened = 0;

class Tab {
  constructor() {
    this.n = ++opened;
    this.label = `Terminal ${this.n}`;
    this.socket = null;
    this.closing = false;

    this.tab = createElement("button");
    this.tab.type = "button";
    this.tab.id = `term-tab-${this.n}`;
    this.tab.className = "term-tab";
    this.tab.setAttribute("role", "tab");
    this.tab.setAttribute("aria-controls", `term-panel-${this.n}`);
    this.dot = createElement("span");
    this.dot.className = "dot none";
    this.dot.setAttribute("role", "img");
    this.tab.append(this.dot, ` ${this.label}`);
    this.tab.addEventListener("click", () => this.select());

    this.panel = createElement("div");
    this.panel.id = `term-panel-${this.n}`;
    this.panel.className = "term-panel";
    this.panel.setAttribute("role", "tabpanel");
    this.panel.setAttribute("aria-labelledby", this.tab.id);
    const toolbar = createElement("div");
    toolbar.className = "term-toolbar";
    this.status = createElement("p");
    this.status.className = "term-status";
    this.status.setAttribute("role", "status");
    this.size = createElement("span");
    this.size.className = "term-size muted";
    this.reconnect = createElement("button");
    this.reconnect.type = "button";
    this.reconnect.className = "primary";
    this.reconnect.textContent = "Reconnect";
    this.reconnect.hidden = true;
    this.reconnect.addEventListener("click", () => this.connect());
    const close = createElement("button");
    close.type = "button";
    close.textContent = "Close terminal";
    close.setAttribute("aria-label", `Close ${this.label}`);
    close.addEventListener("click", () => this.close());
    toolbar.append(this.status, this.size, this.reconnect, close);
    this.screen = createElement("div");
    this.screen.className = "term-screen";
    this.panel.append(toolbar, this.screen);
    tablist.append(this.tab);
    panels.append(this.panel);

    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, monospace',
      fontSize: 14,
      scrollback: 5000,
      theme: theme(),
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.attachCustomKeyEventHandler((e) => {
      if (e.key !== "F6") return true;
      if (e.type === "keydown") {
        e.preventDefault();
        this.tab.focus();
      }
      return false;
    });
    this.term.onData((data) => this.send(message(DATA, encoder.encode(data))));
    this.term.onBinary((data) => {
      const bytes = Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff);
      this.send(message(DATA, bytes));
    });
    this.term.onResize(({ cols, rows }) => this.sendSize(cols, rows));
  }

  select(focus = false) {
    active = this;
    for (const t of tabs) {
      const on = t === this;
      t.tab.setAttribute("aria-selected", String(on));
      t.tab.tabIndex = on ? 0 : -1;
      t.panel.hidden = !on;
    }
    if (!this.term.element) this.term.open(this.screen);
    this.refit();
    if (focus) this.tab.focus();
  }

  refit() {
    if (this.panel.hidden) return;
    this.fit.fit();
    this.size.textContent = `${this.term.cols}×${this.term.rows}`;
  }

  show(state, text) {
    this.dot.className = `dot ${state === "connected" ? "ok" : state === "closed" ? "bad" : "none"}`;
    this.dot.setAttribute("aria-label", state);
    this.dot.title = state;
    this.status.textContent = text;
    this.panel.dataset.state = state;
    this.reconnect.hidden = state !== "closed";
  }

  send(bytes) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes);
  }

  sendSize(cols, rows) {
    this.size.textContent = `${cols}×${rows}`;
    this.send(message(RESIZE, encoder.encode(JSON.stringify({ cols, rows }))));
  }

  async connect() {
    this.show("connecting", "Connecting…");
    let ticket;
    try {
      const r = await fetch(`/api/v1/sessions/${encodeURIComponent(sessionId)}/terminal-ticket`, {
        method: "POST",
        headers: { "X-CSRF-Token": csrfToken() },
        credentials: "same-origin",
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) {
        const why = body?.error?.message || `the relay answered ${r.status}`;
        this.show("closed", `Cannot open a terminal: ${why}.`);
        return;
      }
      ticket = body.ticket;
    } catch {
      this.show("closed", "Cannot open a terminal: the relay cannot be reached.");
      return;
    }
    if (this.closing) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/api/v1/sessions/${encodeURIComponent(sessionId)}/terminal?ticket=${encodeURIComponent(ticket)}`;
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    let reason = "";
    let open = false;
    socket.addEventListener("open", () => {
      open = true;
      this.show("connected", "Connected");
      this.sendSize(this.term.cols, this.term.rows);
      if (active === this) this.term.focus();
    });
    socket.addEventListener("message", (event) => {
      if (!(event.data instanceof ArrayBuffer)) return;
      const bytes = new Uint8Array(event.data);
      if (bytes[0] === DATA) this.term.write(bytes.subarray(1));
      else if (bytes[0] === CLOSE_REASON) reason = decoder.decode(bytes.subarray(1));
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket || this.closing) return;
      this.socket = null;
      let text;
      if (reason) text = `${reason[0].toUpperCase()}${reason.slice(1)}.`;
      else if (open) text = "The terminal ended: the shell exited or the connection dropped.";
      else text = "The relay refused the terminal connection (the ticket expired, or the appliance went away).";
      this.show("closed", text);
      this.term.write("\r\n\x1b[2m[disconnected]\x1b[0m\r\n");
    });
  }

  close() {
    this.closing = true;
    this.socket?.close();
    this.term.dispose();
    this.tab.remove();
    this.panel.remove();
    const i = tabs.indexOf(this);
    tabs.splice(i, 1);
    const next = tabs[Math.min(i, tabs.length - 1)];
    if (next) {
      next.select(true);
    } else {
      active = null;
      none.hidden = false;
      newButton.focus();
    }
  }
}

function openTab() {
  none.hidden = true;
  const t = new Tab();
  tabs.push(t);
  t.select();
  t.connect();
}

if (root && sessionId) {
  newButton.addEventListener("click", openTab);
  // the tabs, as a WAI-ARIA tab list: arrows, Home and End move and select
  tablist.addEventListener("keydown", (event) => {
    const i = tabs.indexOf(active);
    const to = { ArrowLeft: i - 1, ArrowRight: i + 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (to === undefined || tabs.length === 0) return;
    event.preventDefault();
    tabs[(to + tabs.length) % tabs.length].select(true);
  });
  new ResizeObserver(() => active?.refit()).observe(panels);
  dark.addEventListener("change", () => {
    for (const t of tabs) t.term.options.theme = theme();
  });
  openTab();
}
