/**
 * A run's events: a fetch()-based Server-Sent Events reader (EventSource
 * cannot send headers) that reconnects with Last-Event-ID.
 */

import { authHeaders, readJson, showAuthPrompt } from "./api.js";
import { enc } from "./format.js";
import { parseJson } from "./json-numbers.js";
import { showError } from "./notices.js";

const SSE_SLICE_MS = 12; // how long the event stream is handled before the page may paint

/** The text/event-stream format: id/event/data fields, ":" comments, CRLF/LF/CR lines. */
class SseParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.lastId = null;
  }
  push(chunk) {
    let text = this.buffer + chunk;
    let hold = "";
    if (text.endsWith("\r")) { // a CRLF may be split across chunks
      text = text.slice(0, -1);
      hold = "\r";
    }
    const lines = text.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + hold;
    for (const line of lines) this.line(line);
  }
  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    return undefined;
  }
  dispatch() {
    if (this.data.length) this.onMessage({ type: this.type || "message", data: this.data.join("\n"), id: this.lastId });
    this.data = [];
    this.type = "";
  }
}

/**
 * Streams /api/runs/ID/events until the "end" event; reconnects after a drop
 * (1 s, then backing off to 10 s) with Last-Event-ID = lastId().
 * handlers: { lastId(), onEvent(json, sseId), onDropped(json), onEnd(json), onState(text) }
 * (onDropped: the server dropped events after lastId() — it keeps a run's newest only).
 */
export function openRunStream(runId, handlers) {
  const controller = new AbortController();
  let stopped = false;
  let failures = 0;
  let timer = 0;
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
  async function connect() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    const last = handlers.lastId();
    if (last > 0) headers["Last-Event-ID"] = String(last);
    let ended = false;
    try {
      const response = await fetch(`/api/runs/${enc(runId)}/events`, { headers, signal: controller.signal, credentials: "omit", cache: "no-store" });
      if (response.status === 401 || (response.status >= 400 && response.status < 500)) {
        const data = await readJson(response);
        const message = data && typeof data.error === "string" ? data.error : `The event stream answered ${response.status}.`;
        if (response.status === 401) showAuthPrompt(message);
        else showError(message);
        stopped = true;
        handlers.onState("stopped");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      handlers.onState("live");
      const parser = new SseParser((message) => {
        if (ended) return;
        if (message.type === "end") {
          ended = true;
          handlers.onEnd(parseJson(message.data) || {});
        } else if (message.type === "dropped") {
          const told = parseJson(message.data);
          if (told && typeof told === "object") handlers.onDropped(told);
        } else if (message.type === "message") {
          const event = parseJson(message.data);
          if (event && typeof event === "object") {
            failures = 0;
            handlers.onEvent(event, message.id);
          }
        }
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let busySince = performance.now();
      while (!ended) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
        // A long run's log (hundreds of thousands of events) is read back far
        // faster than it is handled: reads that are ready resolve at once, so
        // without a break here the page would not paint or answer until the
        // whole backlog is in. Let it paint between slices.
        if (performance.now() - busySince > SSE_SLICE_MS) {
          await new Promise((resolve) => setTimeout(resolve, 0));
          busySince = performance.now();
        }
      }
      if (ended) {
        stopped = true;
        reader.cancel().catch(() => {});
        return;
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    if (stopped) return;
    failures += 1;
    handlers.onState("reconnecting");
    timer = setTimeout(connect, Math.min(1000 * 2 ** (failures - 1), 10000));
  }
  connect();
  return { stop };
}
