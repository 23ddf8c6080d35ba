// The browser terminal: xterm.js (DOM renderer: its text is in the page) over a
// WebSocket on this origin. Keystrokes and pastes go out as binary frames of UTF-8;
// the session's output comes back as binary frames that xterm.js decodes itself.
import "./xterm_csp.js";
import { Terminal } from "../vendor/xterm/xterm.mjs";
import { FitAddon } from "../vendor/xterm/addon-fit.mjs";

const box = document.getElementById("terminal");
const status = document.getElementById("terminal-status");
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const encoder = new TextEncoder();

const term = new Terminal({
  cursorBlink: true,
  fontFamily: '"DejaVu Sans Mono", "Liberation Mono", ui-monospace, monospace',
  theme: { background: "#111418" },
  fontSize: 14,
  scrollback: 5000,
});
const fit = new FitAddon();
term.loadAddon(fit);
term.open(box);
fit.fit();

// Copy with Ctrl+Shift+C (Ctrl+C stays an interrupt); Ctrl+Shift+V is left to the
// browser, whose paste event xterm.js turns into input (bracketed when the shell asks).
term.attachCustomKeyEventHandler((event) => {
  if (event.type === "keydown" && event.ctrlKey && event.shiftKey) {
    if (event.code === "KeyC" && term.hasSelection()) {
      navigator.clipboard?.writeText(term.getSelection());
      return false;
    }
    if (event.code === "KeyV") return false;
  }
  return true;
});

const params = new URLSearchParams();
for (const key of ["node", "login", "join", "mode"]) {
  if (box.dataset[key]) params.set(key, box.dataset[key]);
}
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const ws = new WebSocket(`${scheme}//${location.host}/web/ws/terminal?${params}`);
ws.binaryType = "arraybuffer";
let closedMessage = "";

function say(text) {
  status.textContent = text;
}

ws.addEventListener("open", () => {
  ws.send(JSON.stringify({ type: "hello", csrf, cols: term.cols, rows: term.rows }));
});

ws.addEventListener("message", (event) => {
  if (typeof event.data !== "string") {
    term.write(new Uint8Array(event.data));
    return;
  }
  const message = JSON.parse(event.data);
  if (message.type === "ready") {
    say(`Connected to ${message.node} as ${message.login}`);
    term.focus();
  } else if (message.type === "closed") {
    closedMessage = message.message;
  }
});

ws.addEventListener("close", (event) => {
  const why = closedMessage || event.reason || (event.code === 1006 ? "the connection was lost" : "the session ended");
  say(`Disconnected: ${why}`);
  term.write(`\r\n\x1b[2m[${why}]\x1b[0m\r\n`);
  term.options.disableStdin = true;
  box.dataset.closed = String(event.code);
});

term.onData((data) => {
  if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
});
term.onBinary((data) => {
  if (ws.readyState === WebSocket.OPEN) ws.send(Uint8Array.from(data, (c) => c.charCodeAt(0)));
});
term.onResize(({ cols, rows }) => {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
});
new ResizeObserver(() => fit.fit()).observe(box);
