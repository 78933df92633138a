// Tether console: the few behaviours htmx does not cover. Loaded as a module (deferred);
// no inline scripts anywhere (the CSP forbids them).

// Copy buttons: data-copy names the element whose text is copied.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
});

// Plain forms whose submit button carries data-confirm ask first.
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const message = button && button.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// An htmx request the relay refused: show its message (error pages carry .error-message).
const flash = document.getElementById("flash");
let hideTimer;
function show(message) {
  if (!flash) return;
  flash.textContent = message;
  flash.hidden = false;
  clearTimeout(hideTimer);
  hideTimer = setTimeout(() => { flash.hidden = true; }, 8000);
}
document.body.addEventListener("htmx:responseError", (event) => {
  const xhr = event.detail.xhr;
  const doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
  const text = doc.querySelector(".error-message")?.textContent || `request failed (${xhr.status})`;
  show(text);
});
document.body.addEventListener("htmx:sendError", () => show("the relay cannot be reached"));
