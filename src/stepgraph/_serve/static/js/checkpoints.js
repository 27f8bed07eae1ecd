/** A run's checkpoints, with Resume from here and Fork from here. */

import { el, hiddenText } from "./dom.js";
import { clip, timeEl } from "./format.js";

const NOTHING_TO_RESUME = new Set(["idle", "idle_with_pending_requests"]);
export const CHECKPOINTS_MAX = 10000; // the most checkpoints a run's details can hold (the server's 100 unless asked)

export function checkpointsPanel(actions) {
  const tbody = el("tbody");
  const table = el("table", { class: "checkpoints-table stack-table", hidden: true },
    el("caption", { class: "visually-hidden", text: "Checkpoints" }),
    el("thead", {}, el("tr", {}, ["Superstep", "Created", "Status", "Checkpoint", "Parent", "Actions"].map((h) => el("th", { scope: "col", text: h })))),
    tbody);
  const actionsHead = table.tHead.rows[0].cells[5];
  const empty = el("p", { class: "muted", text: "No checkpoints yet." });
  // A run of a workflow this server does not serve is resumed and forked
  // where it is served (the server refuses both, 409): no buttons, a note.
  let served = true;
  const notServed = el("p", { class: "muted", "data-testid": "checkpoints-not-served", hidden: true,
    text: "This server does not serve the run's workflow, so it cannot resume or fork the run from its checkpoints: do that where the workflow is served." });
  const olderText = el("span", { "data-testid": "checkpoints-older-count" });
  const olderButton = el("button", { type: "button", class: "secondary", "data-testid": "checkpoints-show-older",
    onclick: () => actions.onShowOlder() });
  const older = el("p", { class: "muted small", "data-testid": "checkpoints-older", "aria-live": "polite", hidden: true }, olderText, " ", olderButton);
  let key = "";
  // While the run goes on the server refuses a resume (409): say so on the
  // buttons rather than offer them.
  let running = false;
  const RESUME_WHILE_RUNNING = "The run is going on: resume from a checkpoint once it has stopped (or cancel it first).";
  const holdResume = (button) => {
    button.disabled = running;
    if (running) button.title = RESUME_WHILE_RUNNING;
    else button.removeAttribute("title");
  };
  const act = (handler, cp) => async (event) => {
    const target = event.currentTarget;
    target.disabled = true;
    try {
      await handler(cp.checkpoint_id);
    } finally {
      if (target.dataset.action === "resume") holdResume(target);
      else target.disabled = false;
    }
  };
  const row = (cp) => el("tr", { "data-testid": "checkpoint-row", "data-checkpoint-id": cp.checkpoint_id },
    el("td", { class: "num", "data-label": "Superstep", text: cp.superstep }), el("td", { "data-label": "Created" }, timeEl(cp.created_at)),
    el("td", { "data-label": "Status", text: cp.status ?? "" }),
    el("td", { "data-label": "Checkpoint" }, el("code", { title: cp.checkpoint_id, text: clip(String(cp.checkpoint_id), 14) })),
    el("td", { "data-label": "Parent" }, cp.parent_id ? el("code", { title: cp.parent_id, text: clip(String(cp.parent_id), 14) }) : "—"),
    !served ? null : el("td", { class: "row-actions wide" },
      // (from an idle checkpoint, or one waiting for answers, nothing would run: the server refuses)
      NOTHING_TO_RESUME.has(cp.status) ? null
        : el("button", { type: "button", class: "secondary", "data-testid": "resume-button", "data-action": "resume",
          disabled: running, title: running ? RESUME_WHILE_RUNNING : null, onclick: act(actions.onResume, cp) },
        "Resume from here", hiddenText(` (superstep ${cp.superstep})`)),
      el("button", { type: "button", class: "secondary", "data-testid": "fork-button", "data-action": "fork", onclick: act(actions.onFork, cp) },
        "Fork from here", hiddenText(` (superstep ${cp.superstep})`))));
  return {
    node: el("div", { "data-testid": "checkpoints" }, empty, notServed, older, el("div", { class: "table-scroll" }, table)),
    /** The run goes on (or not any more): its resume buttons held (or given back). */
    setRunning(value) {
      if (value === running) return;
      running = value;
      for (const resume of tbody.querySelectorAll('[data-action="resume"]')) {
        // (a disabled button drops the keyboard focus: it goes to the row's fork)
        const focused = document.activeElement === resume;
        holdResume(resume);
        if (focused && running) resume.closest("tr").querySelector('[data-action="fork"]').focus();
      }
    },
    /** ``answerable``: false for a run of a workflow this server does not serve. */
    sync(list, total, answerable = true) {
      served = answerable;
      actionsHead.hidden = !served;
      notServed.hidden = served || !list.length;
      // The details hold the newest checkpoints only (100 unless more were asked for).
      const hidden = Math.max(0, (Number.isFinite(total) ? total : list.length) - list.length);
      older.hidden = hidden === 0;
      if (hidden) {
        olderText.textContent = `${hidden} older checkpoint${hidden === 1 ? "" : "s"} not shown.`;
        olderButton.textContent = list.length + hidden <= CHECKPOINTS_MAX ? "Show all" : `Show the newest ${CHECKPOINTS_MAX}`;
        olderButton.hidden = list.length >= CHECKPOINTS_MAX;
      }
      const next = `${served}|` + list.map((cp) => `${cp.checkpoint_id}:${cp.status}`).join("|");
      if (next === key) return;
      key = next;
      const active = document.activeElement;
      const focusRow = active && tbody.contains(active) ? active.closest("tr").dataset.checkpointId : null;
      const focusAction = focusRow ? active.dataset.action : null;
      tbody.replaceChildren(...list.map(row));
      table.hidden = !list.length;
      empty.hidden = list.length > 0;
      const again = focusRow && [...tbody.rows].find((r) => r.dataset.checkpointId === focusRow);
      const button = again && (again.querySelector(`[data-action="${focusAction}"]`) || again.querySelector("button"));
      if (button) button.focus();
    },
  };
}
