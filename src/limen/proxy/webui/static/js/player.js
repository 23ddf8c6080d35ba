// A player for asciicast v2 recordings on xterm.js: play/pause, speed, seek, and
// finding text. (asciinema-player runs its terminal emulator as WebAssembly, which
// this site's Content-Security-Policy does not allow; xterm.js is here already.)
import "./xterm_csp.js";
import { Terminal } from "../vendor/xterm/xterm.mjs";

const box = document.getElementById("player");
const playButton = document.getElementById("play");
const speedBox = document.getElementById("speed");
const seekBar = document.getElementById("seek");
const clock = document.getElementById("clock");
const findForm = document.getElementById("find");
const findText = document.getElementById("find-text");
const matchList = document.getElementById("matches");
const ANSI = /\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

let events = [];   // [time, code, data]
let duration = 0;
let position = 0;  // seconds into the recording
let next = 0;      // index of the next event to write
let playing = false;
let lastTick = 0;
let term;

function fmt(seconds) {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function showClock() {
  seekBar.value = String(position);
  clock.value = `${fmt(position)} / ${fmt(duration)}`;
}

function apply(event) {
  const [, code, data] = event;
  if (code === "o") {
    term.write(data);
  } else if (code === "r") {
    const [cols, rows] = data.split("x").map(Number);
    if (cols > 0 && rows > 0) term.resize(cols, rows);
  }
}

function advanceTo(target) {
  while (next < events.length && events[next][0] <= target) {
    apply(events[next]);
    next += 1;
  }
  position = Math.min(target, duration);
}

function seek(target) {
  term.reset();
  next = 0;
  const output = [];
  // Everything before the target in one write: fast even for long sessions.
  while (next < events.length && events[next][0] <= target) {
    const event = events[next];
    if (event[1] === "o") output.push(event[2]);
    else if (event[1] === "r") {
      term.write(output.splice(0).join(""));
      apply(event);
    }
    next += 1;
  }
  term.write(output.join(""));
  position = Math.min(Math.max(target, 0), duration);
  showClock();
}

function tick(now) {
  if (!playing) return;
  const speed = Number(speedBox.value) || 1;
  advanceTo(position + ((now - lastTick) / 1000) * speed);
  lastTick = now;
  showClock();
  if (position >= duration) {
    pause();
    return;
  }
  requestAnimationFrame(tick);
}

function play() {
  if (position >= duration) seek(0);
  playing = true;
  playButton.textContent = "Pause";
  lastTick = performance.now();
  requestAnimationFrame(tick);
}

function pause() {
  playing = false;
  playButton.textContent = "Play";
}

function find(text) {
  matchList.replaceChildren();
  const needle = text.trim().toLowerCase();
  if (!needle) return;
  // The printed text with each character's time, so a match can be sought.
  let plain = "";
  const times = [];
  for (const [time, code, data] of events) {
    if (code !== "o") continue;
    const stripped = data.replace(ANSI, "");
    plain += stripped;
    for (let i = 0; i < stripped.length; i += 1) times.push(time);
  }
  const haystack = plain.toLowerCase();
  let at = haystack.indexOf(needle);
  let found = 0;
  while (at !== -1 && found < 50) {
    const when = times[at + needle.length - 1];
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    const context = plain.slice(Math.max(0, at - 30), at + needle.length + 30).replace(/\s+/g, " ");
    button.textContent = `${fmt(when)}: …${context}…`;
    button.addEventListener("click", () => { pause(); seek(when); });
    item.append(button);
    matchList.append(item);
    found += 1;
    at = haystack.indexOf(needle, at + needle.length);
  }
  if (!found) {
    const item = document.createElement("li");
    item.textContent = `“${text}” does not appear in this recording.`;
    matchList.append(item);
  }
}

async function load() {
  const response = await fetch(box.dataset.cast, { credentials: "same-origin" });
  if (!response.ok) {
    box.textContent = `The recording could not be loaded (HTTP ${response.status}).`;
    return;
  }
  const lines = (await response.text()).split("\n").filter((line) => line.trim());
  const header = JSON.parse(lines[0]);
  events = lines.slice(1).map((line) => JSON.parse(line));
  duration = events.length ? events[events.length - 1][0] : 0;
  term = new Terminal({
    cols: header.width || 80, rows: header.height || 24, disableStdin: true,
    fontFamily: '"DejaVu Sans Mono", "Liberation Mono", ui-monospace, monospace', fontSize: 14,
    theme: { background: "#111418" },
  });
  term.open(box);
  seekBar.max = String(duration);
  showClock();
  box.dataset.loaded = "true";
  if (findText.value) find(findText.value);
}

playButton.addEventListener("click", () => (playing ? pause() : play()));
seekBar.addEventListener("input", () => { pause(); seek(Number(seekBar.value)); });
findForm.addEventListener("submit", (event) => { event.preventDefault(); find(findText.value); });
load();
