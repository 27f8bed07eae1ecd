/** What a run produced: its outputs, and the text (and tool calls) its agents stream. */

import { button, el, nearBottom } from "./dom.js";
import { COMMON_FIELDS, asText, clip, pathOf, toJson } from "./format.js";

const OUTPUTS_WINDOW = 200; // how many of a run's newest outputs its page lists (more on asking)

/**
 * The run's outputs exactly as the server lists them (GET /api/runs/ID: along
 * the branch of its latest checkpoint, with what a run going on there yielded
 * since), so a replay shows its own branch's only; "output" events just ask
 * for the details again. Numbered: the newest OUTPUTS_WINDOW of them, older ones on asking.
 */
export function outputsPanel() {
  const list = el("ol", { class: "outputs", "data-testid": "outputs", "aria-live": "polite" });
  const empty = el("p", { class: "muted", text: "No outputs yet." });
  const older = button("", { class: "secondary", "data-testid": "outputs-older", hidden: true, onclick: () => showOlder() });
  const item = (text) => el("li", { "data-testid": "output-item" }, el("pre", { text }));
  let shown = []; // every output's text
  let from = 0; // the list holds shown[from..]
  let keep = OUTPUTS_WINDOW; // how many of the newest it holds
  function place(texts, grown) {
    const start = Math.max(0, texts.length - keep);
    if (grown && start >= from && start <= shown.length) {
      // Only the new are added (and announced); the oldest shown go in one cut.
      list.append(...texts.slice(Math.max(shown.length, start)).map(item));
      if (start > from) {
        const range = document.createRange();
        range.setStartBefore(list.firstElementChild);
        range.setEndAfter(list.children[start - from - 1]);
        range.deleteContents();
      }
    } else list.replaceChildren(...texts.slice(start).map(item)); // another branch (a replay): shown anew
    shown = texts;
    from = start;
    list.start = from + 1;
    empty.hidden = texts.length > 0;
    older.hidden = from === 0;
    older.textContent = `Show ${Math.min(OUTPUTS_WINDOW, from)} older outputs (${from} not shown)`;
  }
  function showOlder() {
    keep = shown.length - from + OUTPUTS_WINDOW;
    const start = Math.max(0, shown.length - keep);
    list.prepend(...shown.slice(start, from).map(item));
    from = start;
    list.start = from + 1;
    older.hidden = from === 0;
    older.textContent = `Show ${Math.min(OUTPUTS_WINDOW, from)} older outputs (${from} not shown)`;
  }
  return {
    node: el("div", {}, empty, el("div", { class: "log-pager" }, older), list),
    sync(values) {
      const texts = values.map(asText);
      const grown = shown.length <= texts.length && shown.every((text, i) => text === texts[i]);
      if (grown && texts.length === shown.length) return;
      place(texts, grown);
    },
  };
}

function toolLine(ev, history) {
  const extra = Object.fromEntries(Object.entries(ev).filter(([k]) => !COMMON_FIELDS.has(k) && !["tool", "call_id", "arguments", "status", "phase"].includes(k)));
  return [
    el("span", { class: "tool-tag", text: "tool" }), " ", el("code", { text: String(ev.tool ?? "?") }), " ",
    el("span", { class: "tool-status", text: history.join(" → ") }),
    ev.arguments !== undefined ? [" ", el("code", { class: "tool-args", text: clip(JSON.stringify(ev.arguments) ?? "", 400) })] : null,
    Object.keys(extra).length ? [" ", el("code", { class: "tool-extra", text: clip(toJson(extra, 0), 400) })] : null,
  ];
}

/** Streamed agent text per path: turns append, a higher attempt replaces; tool calls as lines. */
export function agentPanel() {
  const node = el("div", { class: "agents" });
  const empty = el("p", { class: "muted", text: "No agent has streamed text in this run yet." });
  node.append(empty);
  const panels = new Map();
  const dirty = new Set();
  function panelFor(path) {
    let p = panels.get(path);
    if (p) return p;
    const body = el("div", { class: "agent-body", tabindex: 0, role: "region", "aria-label": `Text streamed by ${path}` });
    p = { body, turns: new Map(), tools: new Map(), stick: true };
    body.addEventListener("scroll", () => { p.stick = nearBottom(body); }, { passive: true });
    node.append(el("article", { class: "agent", "data-testid": "agent-text", "data-path": path }, el("h3", {}, el("code", { text: path })), body));
    panels.set(path, p);
    empty.hidden = true;
    return p;
  }
  return {
    node,
    delta(ev) {
      const p = panelFor(pathOf(ev) || "agent");
      const turn = `${ev.superstep}:${ev.turn ?? 1}`; // turns restart at 1 for each new input
      const attempt = ev.attempt ?? 1;
      let t = p.turns.get(turn);
      if (!t) {
        t = { attempt, text: document.createTextNode(""), note: el("span", { class: "retry", hidden: true }) };
        p.turns.set(turn, t);
        p.body.append(el("p", { class: "agent-turn" }, t.note, t.text));
      }
      if (attempt < t.attempt) return;
      if (attempt > t.attempt) {
        t.attempt = attempt;
        t.text.data = "";
        t.note.textContent = `attempt ${attempt}: `;
        t.note.hidden = false;
      }
      t.text.appendData(String(ev.text ?? ""));
      dirty.add(p);
    },
    tool(ev) {
      const p = panelFor(pathOf(ev) || "agent");
      const key = ev.call_id ?? `#${ev.id}`;
      let line = p.tools.get(key);
      if (!line) {
        line = { node: el("div", { class: "tool-line" }), history: [] };
        p.tools.set(key, line);
        p.body.append(line.node);
      }
      const phase = String(ev.status ?? ev.phase ?? "");
      if (phase && line.history[line.history.length - 1] !== phase) line.history.push(phase);
      line.node.replaceChildren(...toolLine(ev, line.history).flat().filter(Boolean));
      dirty.add(p);
    },
    flush() {
      for (const p of dirty) if (p.stick) p.body.scrollTop = p.body.scrollHeight;
      dirty.clear();
    },
  };
}
