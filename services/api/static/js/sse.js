// Server-sent events read with fetch() and a ReadableStream (EventSource cannot send the Authorization header),
// reconnecting with exponential backoff.

import { apiFetch } from "./auth.js";

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;

// Splits a text/event-stream into {event, data, id} records (https://html.spec.whatwg.org/#event-stream-interpretation).
export class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = "";
  }

  push(text) {
    this.buffer += text;
    // a CR at the end may be half of a CRLF whose LF comes in the next chunk: keep it for then
    const cut = this.buffer.endsWith("\r") ? this.buffer.length - 1 : this.buffer.length;
    const lines = this.buffer.slice(0, cut).split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + this.buffer.slice(cut);
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Follows `path` until stop() is called. onOpen runs on every (re)connection — events may have been missed while
// disconnected, so callers re-read their state there; onStatus gets "live" or "reconnecting".
export function follow(path, { onEvent, onOpen, onStatus }) {
  let stopped = false;
  let controller = null;
  (async () => {
    let delay = FIRST_DELAY_MS;
    while (!stopped) {
      controller = new AbortController();
      try {
        const r = await apiFetch(path, { headers: { Accept: "text/event-stream" }, signal: controller.signal });
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        onStatus?.("live");
        delay = FIRST_DELAY_MS;
        onOpen?.();
        const parser = new EventStreamParser((e) => onEvent?.(e));
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.push(value);
        }
      } catch (err) {
        if (stopped) return;
        console.warn(`event stream ${path}: ${err}`);
      }
      if (stopped) return;
      onStatus?.("reconnecting");
      await sleep(delay + Math.random() * delay * 0.3);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  })();
  return () => {
    stopped = true;
    controller?.abort();
  };
}

// Runs `task` now, and once more after it if asked again meanwhile: a burst of events costs at most two fetches.
export function coalesce(task) {
  let running = false;
  let again = false;
  return async function run() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        await task();
      } while (again);
    } finally {
      running = false;
    }
  };
}
