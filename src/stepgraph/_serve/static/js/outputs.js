/** What a run produced: its outputs, and the text (and tool calls) its agents stream. */

import { button, el, nearBottom } from "./dom.js";
import { COMMON_FIELDS, asText, clip, pathOf, toJson } from "./format.js";

const OUTPUTS_PAGE = 200; // how many older outputs "Show older" asks the server for at a time

/**
 * The run's outputs as the server lists them (GET /api/runs/ID: along the
 * branch of its latest checkpoint, with what a run going on there yielded
 * since), so a replay shows its own branch's only; "output" events just ask
 * for the details again. Numbered: the newest the details hold, how many
 * there are in all, and older ones a page at a time on asking (loadOlder(offset,
 * limit): GET /api/runs/ID/outputs).
 */
export function outputsPanel(loadOlder) {
  const list = el("ol", { class: "outputs", "data-testid": "outputs", "aria-live": "polite" });
  const empty = el("p", { class: "muted", text: "No outputs yet." });
  const count = el("p", { class: "muted small", "data-testid": "outputs-total", hidden: true });
  const older = button("", { class: "secondary", "data-testid": "outputs-older", hidden: true, onclick: () => showOlder() });
  const item = (text) => el("li", { "data-testid": "output-item" }, el("pre", { text }));
  let shown = []; // the texts listed, the first being output number from + 1
  let from = 0;
  let fetched = { at: 0, texts: [] }; // older outputs asked for, from output number at + 1
  let newest = { first: 0, texts: [], total: 0, dropped: 0 }; // as the latest details hold them
  function place() {
    const { first, texts, total, dropped } = newest;
    if (fetched.texts.length && (fetched.at > first || fetched.at + fetched.texts.length < first)) fetched = { at: 0, texts: [] }; // (another branch)
    const start = fetched.texts.length ? fetched.at : first;
    const wanted = [...fetched.texts.slice(0, first - start), ...texts];
    const cut = start - from;
    const kept = shown.slice(Math.max(cut, 0));
    if (cut >= 0 && cut <= shown.length && kept.every((text, i) => text === wanted[i]) && kept.length <= wanted.length) {
      // Only the new are added (and announced); the oldest shown go in one cut.
      if (cut > 0 && shown.length) {
        const range = document.createRange();
        range.setStartBefore(list.firstElementChild);
        range.setEndAfter(list.children[Math.min(cut, shown.length) - 1]);
        range.deleteContents();
      }
      list.append(...wanted.slice(kept.length).map(item));
    } else list.replaceChildren(...wanted.map(item)); // another branch (a replay): shown anew
    shown = wanted;
    from = start;
    list.start = from + 1;
    empty.hidden = total > 0;
    count.hidden = total <= shown.length && !dropped;
    count.textContent = `${total} outputs in all; showing the newest ${shown.length}` +
      (dropped ? ` (the oldest ${dropped} are not kept: this server shows the run from its memory)` : "") + ".";
    const left = from - dropped;
    older.hidden = left <= 0;
    older.textContent = `Show ${Math.min(OUTPUTS_PAGE, left)} older outputs (${left} not shown)`;
  }
  async function showOlder() {
    const end = from;
    const offset = Math.max(newest.dropped, end - OUTPUTS_PAGE);
    older.disabled = true;
    try {
      const page = await loadOlder(offset, end - offset);
      if (!page || !Array.isArray(page.outputs) || from !== end) return; // (changed meanwhile)
      const texts = page.outputs.map(asText);
      if (page.offset + texts.length !== end) return;
      fetched = { at: page.offset, texts: [...texts, ...(fetched.texts.length ? fetched.texts : shown.slice(0, newest.first - end))] };
      const head = texts.map(item);
      list.prepend(...head);
      shown = [...texts, ...shown];
      from = page.offset;
      list.start = from + 1;
      place();
    } finally {
      older.disabled = false;
    }
  }
  return {
    node: el("div", {}, empty, count, el("div", { class: "log-pager" }, older), list),
    sync(values, total, dropped) {
      const texts = values.map(asText);
      const all = Number.isInteger(total) && total >= texts.length ? total : texts.length;
      newest = { first: all - texts.length, texts, total: all, dropped: Number.isInteger(dropped) ? dropped : 0 };
      place();
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

/** Whose panel an agent's event goes to: its path, and a map worker's item (`drafts[1]`,
 * as the agent's warnings name it): a map's items share the map's path, their turns and
 * their tool call ids (`call_0-<run>`), so one panel for all would run them together. */
const agentOf = (ev) => (pathOf(ev) || "agent") + (Number.isInteger(ev.item) ? `[${ev.item}]` : "");

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
      const p = panelFor(agentOf(ev));
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
      const p = panelFor(agentOf(ev));
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
