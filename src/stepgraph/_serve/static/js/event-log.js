/** A run's event log: a window of rows over every event kept, filtered by kind and executor. */

import { button, el, labelledSelect, nearBottom } from "./dom.js";
import { COMMON_FIELDS, clip, fmtClock, fmtMs, pathOf, shortId, toJson } from "./format.js";

const LOG_WINDOW = 500; // the most rows the event log holds at once
const LOG_PAGE = 500; // how many older (or newer) events the event log shows on asking
const LOG_BACKLOG_MS = 250; // how often the event log draws while it catches up

function eventSummary(ev) {
  switch (ev.kind) {
    case "run_started": return `workflow ${ev.workflow ?? ""}`;
    case "status": return String(ev.status ?? "");
    case "superstep_started": return Array.isArray(ev.executors) ? ev.executors.join(", ") : "";
    case "executor_completed": return typeof ev.duration === "number" ? fmtMs(ev.duration) : "";
    case "executor_failed": case "failed": return String(ev.error ?? "");
    case "output": return typeof ev.data === "string" ? ev.data : toJson(ev.data, 0);
    case "warning": return String(ev.message ?? "");
    case "request_info": return `${ev.request_id ?? ""} (${ev.response_type ?? "?"}) ${toJson(ev.request, 0)}`;
    default: {
      const rest = Object.fromEntries(Object.entries(ev).filter(([k]) => !COMMON_FIELDS.has(k)));
      return Object.keys(rest).length ? toJson(rest, 0) : "";
    }
  }
}

/**
 * The event log: every event is kept, but the list holds a window of at most
 * LOG_WINDOW rows of the events the filters match — the newest, following
 * the run while they are in view (scrolled up to be read, the rows hold
 * still), unless older ones were asked for (LOG_PAGE at a time, with a way
 * back to the newest). A run's log of tens of thousands of events is read
 * back without laying out more than that window.
 */
export function logPanel() {
  const kind = labelledSelect("Kind", [["", "All kinds"]]);
  const exec = labelledSelect("Executor", [["", "All executors"]]);
  const note = el("p", { class: "muted small log-note", "data-testid": "event-log-note", "aria-live": "polite" });
  const list = el("ol", { class: "log", "data-testid": "event-log", tabindex: 0, "aria-label": "Events, oldest first" });
  const olderButton = button("", { class: "secondary", "data-testid": "event-log-older", hidden: true, onclick: () => older() });
  const newerButton = button("", { class: "secondary", "data-testid": "event-log-newer", hidden: true, onclick: () => newer() });
  const newestButton = button("Show the newest", { class: "secondary", "data-testid": "event-log-newest", hidden: true, onclick: () => newest() });
  const events = [];
  const kinds = new Set();
  const paths = new Set();
  let matching = []; // the events the filters match, in order
  let lo = 0; // the rows shown: matching[lo..hi)
  let hi = 0;
  let following = true; // the window ends at the newest event and moves on with the run
  let drawnAt = -Infinity;
  let stick = true;
  let dropped = 0; // events the server dropped before they reached this page
  list.addEventListener("scroll", () => {
    const was = stick;
    stick = nearBottom(list);
    // Scrolled back down to the newest rows of a log held while it was read: it follows the run again.
    if (stick && !was && following && hi < matching.length) show(Math.max(lo, matching.length - LOG_WINDOW), matching.length);
  }, { passive: true });
  const matches = (ev) => (!kind.select.value || ev.kind === kind.select.value) && (!exec.select.value || pathOf(ev) === exec.select.value);
  const row = (ev) => el("li", { class: "ev", "data-testid": "event-row", "data-kind": ev.kind, "data-id": ev.id },
    el("span", { class: "ev-id", title: `event ${ev.id ?? ""}`, text: `#${shortId(ev.id)}` }), el("time", { class: "ev-time", text: fmtClock(ev.time) }),
    el("span", { class: "ev-step", title: ev.superstep != null ? `superstep ${ev.superstep}` : "superstep", text: ev.superstep != null ? `s${ev.superstep}` : "" }),
    el("span", { class: `ev-kind ev-kind-${String(ev.kind).replace(/[^a-z_]/g, "")}`, text: ev.kind }),
    el("span", { class: "ev-path", text: pathOf(ev) }), el("span", { class: "ev-detail", text: clip(eventSummary(ev), 600) }));
  const rows = (from, to) => {
    const fragment = document.createDocumentFragment();
    for (let i = from; i < to; i += 1) fragment.append(row(matching[i]));
    return fragment;
  };
  /** Removes the rows from..to of the list (child indexes) in one cut: one at a time, thousands held the page up. */
  function cut(from, to) {
    if (to <= from) return;
    const range = document.createRange();
    range.setStartBefore(list.children[from]);
    range.setEndAfter(list.children[to - 1]);
    range.deleteContents();
  }
  function updateNote() {
    const total = matching.length;
    const parts = [];
    if (lo > 0 || hi < total) parts.push(`Showing events ${lo + 1}–${hi} of ${total}.`);
    if (kind.select.value === "agent_delta") parts.push("Agent text is shown in the Agent text panel, not here.");
    if (dropped) parts.push(`${dropped.toLocaleString("en-US")} older events were dropped by the server, which keeps a run's newest events only.`);
    note.textContent = parts.join(" ");
    olderButton.hidden = lo === 0;
    olderButton.textContent = `Show ${Math.min(LOG_PAGE, lo)} older`;
    newerButton.hidden = hi >= total;
    newerButton.textContent = `Show ${Math.min(LOG_PAGE, total - hi)} newer`;
    newestButton.hidden = total - hi <= LOG_PAGE;
  }
  /** Shows matching[from..to) (to - from <= LOG_WINDOW), reusing the rows already there. */
  function show(from, to) {
    if (from >= hi || to <= lo) {
      list.replaceChildren(rows(from, to));
    } else {
      if (to < hi) cut(to - lo, hi - lo);
      const height = list.scrollHeight;
      if (from > lo) cut(0, from - lo);
      if (from < lo) list.prepend(rows(from, lo));
      // Rows put on or taken off the top do not move what is being read.
      const moved = list.scrollHeight - height;
      if (to > hi) list.append(rows(Math.max(hi, from), to));
      if (!stick && moved) list.scrollTop += moved;
    }
    lo = from;
    hi = to;
    following = hi === matching.length;
    updateNote();
    if (stick) list.scrollTop = list.scrollHeight;
  }
  function older() {
    const from = Math.max(0, lo - LOG_PAGE);
    stick = false;
    show(from, Math.min(hi, from + LOG_WINDOW));
    list.focus();
  }
  function newer() {
    const to = Math.min(matching.length, hi + LOG_PAGE);
    stick = false;
    show(Math.max(lo, to - LOG_WINDOW), to);
    list.focus();
  }
  function newest() {
    stick = true;
    show(Math.max(0, matching.length - LOG_WINDOW), matching.length);
    list.focus();
  }
  function rebuild() {
    matching = events.filter(matches);
    lo = hi = 0;
    list.replaceChildren();
    stick = true;
    show(Math.max(0, matching.length - LOG_WINDOW), matching.length);
  }
  kind.select.addEventListener("change", rebuild);
  exec.select.addEventListener("change", rebuild);
  return {
    node: el("div", {}, el("div", { class: "filters" }, kind.wrap, exec.wrap), note,
      el("div", { class: "log-pager" }, olderButton), list, el("div", { class: "log-pager" }, newerButton, newestButton)),
    /** The server dropped `count` events this page had not had. */
    dropped(count) {
      dropped += count;
      updateNote();
    },
    noteKind(k) {
      if (kinds.has(k)) return;
      kinds.add(k);
      kind.select.append(new Option(k === "agent_delta" ? "agent_delta (in Agent text)" : k, k));
    },
    add(ev) {
      events.push(ev);
      if (matches(ev)) matching.push(ev);
      this.noteKind(ev.kind);
      const p = pathOf(ev);
      if (p && !paths.has(p)) {
        paths.add(p);
        exec.select.append(new Option(p, p));
      }
    },
    /** Draws the events added since; false when it put that off (call again next frame). */
    flush() {
      if (hi === matching.length) return true;
      if (!following || !stick) {
        // (the newer events wait behind "Show newer": also while the rows are
        // read, scrolled up from the newest — they were cut from under the reader)
        updateNote();
        return true;
      }
      // A backlog (a long run's log read back) is drawn a few times a second,
      // not every frame.
      const now = performance.now();
      if (matching.length - hi > LOG_WINDOW / 10 && now - drawnAt < LOG_BACKLOG_MS) return false;
      drawnAt = now;
      show(Math.max(lo, matching.length - LOG_WINDOW), matching.length);
      return true;
    },
  };
}
