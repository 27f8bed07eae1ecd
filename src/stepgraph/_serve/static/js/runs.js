/** The page #/runs: the store's runs, newest first, filtered, a page at a time, kept fresh. */

import { api, loadWorkflows, reportError } from "./api.js";
import { button, clamp, el, labelledSelect, pageHeading, statusBadge } from "./dom.js";
import { enc, timeEl } from "./format.js";
import { announce, clearErrorIf } from "./notices.js";

const STATUSES = [
  "in_progress", "in_progress_pending_requests", "idle",
  "idle_with_pending_requests", "paused", "failed", "cancelled",
];

const RUNS_PAGE = 50;
const REFRESH_MS = 3000;
const QUIET_REFRESH_MS = 30000;

function runRowCells(run) {
  const tags = [run.live ? "live" : "", run.interrupted ? "interrupted" : ""].filter(Boolean);
  return [
    el("td", { "data-label": "Status" }, statusBadge(run.status), tags.map((t) => el("span", { class: `tag tag-${t}`, text: t }))),
    el("td", { "data-label": "Started" }, timeEl(run.started_at)),
    el("td", { class: "num", "data-label": "Supersteps", text: run.supersteps ?? 0 }),
    el("td", { class: "num", "data-label": "Pending requests", text: run.pending_requests ?? 0 }),
  ];
}
function runRow(run) {
  return el("tr", { "data-testid": "run-row", "data-run-id": run.run_id },
    el("th", { scope: "row", class: "wide" }, el("a", { href: `#/runs/${enc(run.run_id)}` }, el("code", { text: run.run_id }))),
    el("td", { "data-label": "Workflow", text: run.workflow }), runRowCells(run));
}
/** Replaces the rows; updates in place (keeping focus) when the order did not change. */
function fillRunsTable(tbody, runs) {
  const current = [...tbody.rows].map((row) => row.dataset.runId);
  if (current.length === runs.length && current.every((id, i) => id === runs[i].run_id)) {
    runs.forEach((run, i) => {
      const row = tbody.rows[i];
      [...row.cells].slice(2).forEach((cell) => cell.remove());
      row.append(...runRowCells(run));
      row.cells[1].textContent = run.workflow;
    });
    return;
  }
  const focused = document.activeElement && document.activeElement.closest("tr[data-run-id]");
  const focusedId = focused && tbody.contains(focused) ? focused.dataset.runId : null;
  tbody.replaceChildren(...runs.map(runRow));
  if (focusedId) {
    const again = [...tbody.rows].find((row) => row.dataset.runId === focusedId);
    if (again) again.querySelector("a").focus();
  }
}

export function pageRuns(main, route, scope) {
  document.title = "Runs · stepgraph";
  const filters = { workflow: route.query.get("workflow") || "", status: route.query.get("status") || "" };
  const wfSelect = labelledSelect("Workflow", [["", "All workflows"]]);
  const stSelect = labelledSelect("Status", [["", "All statuses"], ...STATUSES.map((s) => [s, s])]);
  if (filters.workflow) wfSelect.select.append(new Option(filters.workflow, filters.workflow));
  wfSelect.select.value = filters.workflow;
  stSelect.select.value = filters.status;
  const tbody = el("tbody");
  const table = el("table", { class: "runs-table stack-table", "data-testid": "runs-table" },
    el("caption", { class: "visually-hidden", text: "Runs, newest first" }),
    el("thead", {}, el("tr", {}, ["Run", "Workflow", "Status", "Started", "Supersteps", "Pending requests"].map((h) => el("th", { scope: "col", text: h })))),
    tbody);
  const empty = el("p", { class: "muted", hidden: true }, "No runs match. Start one from ", el("a", { href: "#/workflows", text: "Workflows" }), ".");
  const more = button("Load more", { class: "secondary", hidden: true });
  main.append(pageHeading("Runs"),
    el("form", { class: "filters", "aria-label": "Filter runs", onsubmit: (e) => e.preventDefault() }, wfSelect.wrap, stSelect.wrap),
    el("p", { class: "muted small", "data-testid": "runs-refresh-note",
      text: "While the tab is visible, this list refreshes every 3 seconds while a run it lists goes on, every 30 seconds otherwise." }),
    el("div", { class: "table-scroll", tabindex: 0, role: "region", "aria-label": "Runs table" }, table), empty, more);

  let runs = [];
  let next = null;
  let generation = 0;
  let busy = false;
  let timer = 0;
  const query = (cursor, limit) => {
    const q = new URLSearchParams();
    if (filters.workflow) q.set("workflow", filters.workflow);
    if (filters.status) q.set("status", filters.status);
    if (cursor) q.set("cursor", cursor);
    q.set("limit", String(limit));
    return api("GET", `/api/runs?${q}`);
  };
  const show = () => {
    fillRunsTable(tbody, runs);
    empty.hidden = runs.length > 0;
    more.hidden = !next;
  };
  let unreachable = null; // the banner's message while the list cannot be had
  let failures = 0;
  async function refresh() {
    const mine = generation;
    try {
      const data = await query(null, clamp(runs.length, RUNS_PAGE, 500));
      if (!scope.alive || mine !== generation) return;
      runs = data.runs || [];
      next = data.next || null;
      failures = 0;
      if (unreachable) clearErrorIf(unreachable);
      unreachable = null;
      show();
    } catch (error) {
      if (!scope.alive) return;
      reportError(error);
      cannotReach(error);
    }
  }
  /** The server (or its store) is down, or restarting: ask until it answers (and then take the banner away). */
  function cannotReach(error) {
    if (error.status !== 0 && !(error.status >= 500)) return false;
    unreachable = error.message;
    failures += 1;
    return true;
  }
  async function tick() {
    clearTimeout(timer);
    timer = 0;
    if (busy) return;
    busy = true;
    await refresh();
    busy = false;
    clearTimeout(timer); // one chain only, even if a filter change refreshed meanwhile
    // Often while a listed run goes on; rarely when none does (a run
    // started elsewhere still shows up), never while the page is hidden.
    const going = runs.some((run) => run.live || String(run.status).startsWith("in_progress"));
    const wait = unreachable ? Math.min(1000 * 2 ** (failures - 1), 5000) : going ? REFRESH_MS : QUIET_REFRESH_MS;
    if (scope.alive && !document.hidden) timer = setTimeout(tick, wait);
  }
  const onVisibility = () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = 0;
    } else tick();
  };
  document.addEventListener("visibilitychange", onVisibility);
  scope.defer(() => {
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  });
  const onFilter = () => {
    filters.workflow = wfSelect.select.value;
    filters.status = stSelect.select.value;
    const q = new URLSearchParams(Object.entries(filters).filter(([, v]) => v)).toString();
    history.replaceState(history.state, "", `#/runs${q ? `?${q}` : ""}`);
    generation += 1; // answers to older queries are dropped
    runs = [];
    next = null;
    if (busy) refresh(); // (the tick under way re-arms the timer after it)
    else tick();
  };
  wfSelect.select.addEventListener("change", onFilter);
  stSelect.select.addEventListener("change", onFilter);
  let loading = false;
  more.addEventListener("click", async () => {
    // Not disabled while loading: a disabled button loses the keyboard focus.
    if (loading) return;
    const mine = generation;
    loading = true;
    more.setAttribute("aria-busy", "true");
    try {
      const data = await query(next, RUNS_PAGE);
      if (!scope.alive || mine !== generation) return;
      const known = new Set(runs.map((r) => r.run_id));
      const added = (data.runs || []).filter((r) => !known.has(r.run_id));
      runs = runs.concat(added);
      next = data.next || null;
      show();
      announce(`${added.length} more runs loaded.`);
      // Keyboard users go on from the first run just loaded.
      if (added.length) tbody.rows[runs.length - added.length].querySelector("a").focus();
    } catch (error) {
      if (!scope.alive) return;
      reportError(error);
      // (the list is asked for again soon, not at its next quiet look 30 s on)
      if (cannotReach(error) && !busy && !document.hidden) {
        clearTimeout(timer);
        timer = setTimeout(tick, Math.min(1000 * 2 ** (failures - 1), 5000));
      }
    } finally {
      loading = false;
      more.removeAttribute("aria-busy");
    }
  });
  loadWorkflows().then((workflows) => {
    if (!scope.alive) return;
    for (const wf of workflows) if (wf.name !== filters.workflow) wfSelect.select.append(new Option(wf.name, wf.name));
  }).catch(() => {});
  tick();
}
