/** A run's timeline: supersteps across, executors down, a bar per handler call. */

import { clamp, el } from "./dom.js";
import { fmtMs } from "./format.js";

const TIMELINE_STEPS = 80; // how many of the newest supersteps the timeline shows

export function timelinePanel(model) {
  const grid = el("div", { class: "tl-grid" });
  const empty = el("p", { class: "muted", "data-testid": "timeline-empty", text: "No executor has run yet." });
  const note = el("p", { class: "muted small" });
  const tbody = el("tbody");
  const table = el("details", { class: "tl-table" }, el("summary", { text: "Timeline as a table" }),
    el("div", { class: "table-scroll" }, el("table", {}, el("thead", {}, el("tr", {},
      ["Executor", "Superstep", "Duration (ms)", "Result"].map((h) => el("th", { scope: "col", text: h })))), tbody)));
  const place = (node, row, column) => {
    node.style.gridRow = String(row);
    node.style.gridColumn = String(column);
    return node;
  };
  const stepSpan = (step, calls) => {
    const s = model.steps.get(step) || {};
    let start = s.start ?? Infinity, end = s.end ?? -Infinity;
    for (const c of calls) {
      start = Math.min(start, c.start);
      end = Math.max(end, c.end ?? model.lastTime);
    }
    return { start, end: Math.max(end, start) };
  };
  function bar(c, span, lane) {
    const end = c.end ?? model.lastTime;
    const total = Math.max(span.end - span.start, 1e-9);
    const left = clamp((c.start - span.start) / total, 0, 1) * 100;
    const width = clamp(((end - c.start) / total) * 100, 0, 100 - left);
    const took = c.end == null ? "running" : c.stored ? "duration not known" : fmtMs(c.end - c.start);
    const label = `${c.path}${c.item == null ? "" : `, item ${c.item}`}, superstep ${c.step}: ${took}${c.failed ? ", failed" : ""}`;
    const node = el("div", {
      class: `tl-bar${c.failed ? " failed" : ""}${c.end == null ? " running" : ""}`, "data-testid": "timeline-bar",
      "data-executor": c.executor, "data-superstep": c.step, "data-item": c.item, role: "img", "aria-label": label, title: label,
    }, c.failed ? el("span", { class: "tl-mark", "aria-hidden": "true", text: "!" }) : null);
    node.style.left = `${left}%`;
    node.style.width = `${width}%`;
    node.style.top = `${4 + lane * 16}px`;
    return node;
  }
  /** The table says what the grid shows (the newest supersteps' calls): all of a long run's, re-drawn each frame, held the page up. */
  function renderTable() {
    const rows = model.stepOrder.slice(-TIMELINE_STEPS).flatMap((s) => model.byStep.get(s)).map((c) => el("tr", {},
      el("td", { text: c.path }), el("td", { class: "num", text: c.step }),
      el("td", { class: "num", text: c.end == null || c.stored ? "" : ((c.end - c.start) * 1000).toFixed(1) }),
      el("td", { text: c.end == null ? "running" : c.failed ? "failed" : "done" })));
    tbody.replaceChildren(...rows);
  }
  table.addEventListener("toggle", () => { if (table.open) renderTable(); });
  function render() {
    empty.hidden = model.calls.length > 0;
    scroller.hidden = !empty.hidden; // (no empty grid under the words)
    empty.textContent = model.unseen
      ? "This server did not see the run's events (it ran before a restart, or elsewhere): which executor ran when is not known here. Its outputs and checkpoints, from the store, are on this page."
      : "No executor has run yet.";
    const allSteps = model.stepOrder;
    const steps = allSteps.slice(-TIMELINE_STEPS);
    note.textContent = [
      allSteps.length > steps.length ? `Showing the last ${steps.length} of ${allSteps.length} supersteps.` : "",
      model.fromStore ? "This server did not see the run's events (it ran before a restart, or elsewhere): shown is what the store holds, the call that failed." : "",
    ].filter(Boolean).join(" ");
    const column = new Map(steps.map((s, i) => [s, i + 2]));
    const cells = new Map();
    for (const c of steps.flatMap((s) => model.byStep.get(s))) {
      const key = `${c.path}\u0000${c.step}`;
      if (!cells.has(key)) cells.set(key, []);
      cells.get(key).push(c);
    }
    const rows = [...new Set([...cells.values()].map((list) => list[0].path))];
    const rowOf = new Map(rows.map((r, i) => [r, i + 2]));
    const byStep = new Map(steps.map((s) => [s, []]));
    for (const list of cells.values()) byStep.get(list[0].step).push(...list);
    const spans = new Map(steps.map((s) => [s, stepSpan(s, byStep.get(s))]));
    grid.style.gridTemplateColumns = `minmax(6rem, max-content) repeat(${steps.length}, minmax(4.5rem, 1fr))`;
    const fragment = document.createDocumentFragment();
    fragment.append(place(el("div", { class: "tl-corner", text: "Executor" }), 1, 1));
    rows.forEach((r) => fragment.append(place(el("div", { class: "tl-row-bg" }), rowOf.get(r), "1 / -1"),
      place(el("div", { class: "tl-name", title: r, text: r }), rowOf.get(r), 1)));
    steps.forEach((s) => fragment.append(place(el("div", { class: "tl-head", text: `step ${s}` }), 1, column.get(s))));
    for (const list of cells.values()) {
      const cell = el("div", { class: "tl-cell" });
      cell.style.height = `${8 + list.length * 16}px`;
      list.forEach((c, lane) => cell.append(bar(c, spans.get(c.step), lane)));
      fragment.append(place(cell, rowOf.get(list[0].path), column.get(list[0].step)));
    }
    grid.replaceChildren(fragment);
    if (table.open) renderTable();
  }
  const scroller = el("div", { class: "tl-scroll", hidden: true, tabindex: 0, role: "region", "aria-label": "Timeline: supersteps across, executors down" }, grid);
  return { node: el("div", { class: "timeline", "data-testid": "timeline" }, empty, scroller, note, table), render };
}
