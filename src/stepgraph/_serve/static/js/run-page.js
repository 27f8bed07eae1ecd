/**
 * The page #/runs/ID: a controller that reads the run's details and events
 * and feeds the panels (header, requests, graph, outputs, agent text,
 * timeline, event log, checkpoints).
 */

import { api, loadWorkflows, reportError } from "./api.js";
import { CHECKPOINTS_MAX, checkpointsPanel } from "./checkpoints.js";
import { el, panel } from "./dom.js";
import { logPanel } from "./event-log.js";
import { enc, isTopLevel } from "./format.js";
import { drawGraph } from "./graph.js";
import { announce, clearErrorIf } from "./notices.js";
import { agentPanel, outputsPanel } from "./outputs.js";
import { requestsPanel } from "./requests.js";
import { runHeader } from "./run-header.js";
import { drawnState, modelFinished, modelInvoked, modelStopped, modelStoredFailure, newRunModel } from "./run-model.js";
import { openRunStream } from "./stream.js";
import { timelinePanel } from "./timeline.js";

// Statuses a run page follows from the store while the run is not live here:
// an answer or a resume may come from another tab, server or process.
const WAITING = new Set(["idle_with_pending_requests", "paused", "cancelled", "failed"]);
const IDLE_POLL_MS = 5000; // an idle run goes on only if replayed from an older checkpoint
const DETAILS_POLL_MS = 1000;

export function pageRun(main, { runId }, scope) {
  document.title = `Run ${runId} · stepgraph`;
  const model = newRunModel();
  let details = null;
  let graph = null;
  let stream = null;
  let restartAfterEnd = false;
  let detailsTimer = 0;
  let detailsDue = 0;
  let detailsBusy = false; // one call at a time, so answers apply in order
  let detailsAgain = false; // and one more after it, if asked meanwhile
  let detailsFailures = 0;
  let detailsWanted = false; // a refresh came due while the page was hidden
  let unreachable = null; // the banner's message while the server cannot be reached (the next details take it away)
  let opened = false; // the stream and the graph, started with the first details
  let streamEnded = false; // a stream of the run ended: the events it had are in
  let standAtEnd = ""; // the run's status, time and checkpoints when its stream ended (null: take the next details')
  // The stream replays a run that had ended when it opened: its past, not
  // news. The details already say how it ended, so the replay changes no
  // status and is drawn once, at its end (a long run's replay would
  // otherwise flicker "live" through its 100,000 supersteps).
  let history = false;
  let restartTimer = 0;
  let lastStart = 0;
  let frame = 0;
  let timelineDirty = false;
  const dirtyNodes = new Set();

  const header = runHeader(runId, { onCancel: cancel, onResume: () => resume(null), onGoing: (going) => checkpoints.setRunning(going) });
  const requests = requestsPanel(answer);
  const outputs = outputsPanel((offset, limit) => api("GET", `/api/runs/${enc(runId)}/outputs?offset=${offset}&limit=${limit}`).catch((error) => { reportError(error); return null; }));
  const agents = agentPanel();
  const timeline = timelinePanel(model);
  const log = logPanel();
  let checkpointsWanted = 0; // how many checkpoints to ask for (0: the server's default)
  const checkpoints = checkpointsPanel({
    onResume: resume,
    onFork: fork,
    onShowOlder: () => { checkpointsWanted = CHECKPOINTS_MAX; refreshDetails(); },
  });
  const graphSlot = el("div", { class: "graph-slot" }, el("p", { class: "muted", text: "Loading the graph…" }));
  main.append(header.node, panel("Pending requests", requests.node), panel("Graph", graphSlot),
    el("div", { class: "two-col" }, panel("Outputs", outputs.node), panel("Agent text", agents.node)),
    panel("Timeline", timeline.node), panel("Event log", log.node), panel("Checkpoints", checkpoints.node));
  const onVisibility = () => {
    if (document.hidden || !detailsWanted) return;
    detailsWanted = false;
    refreshDetails();
  };
  document.addEventListener("visibilitychange", onVisibility);
  scope.defer(() => {
    document.removeEventListener("visibilitychange", onVisibility);
    if (stream) stream.stop();
    clearTimeout(detailsTimer);
    clearTimeout(restartTimer);
    cancelAnimationFrame(frame);
    if (graph) graph.destroy();
  });

  async function refreshDetails() {
    if (detailsBusy) {
      detailsAgain = true;
      return;
    }
    detailsBusy = true;
    try {
      const data = await api("GET", `/api/runs/${enc(runId)}${checkpointsWanted ? `?checkpoints=${checkpointsWanted}` : ""}`);
      if (!scope.alive) return;
      details = data;
      detailsFailures = 0;
      if (unreachable) clearErrorIf(unreachable);
      unreachable = null;
      applyDetails();
    } catch (error) {
      if (!scope.alive) return;
      reportError(error);
      if (!details) {
        header.setStatus("unknown");
        graphSlot.replaceChildren(el("p", { class: "muted", text: "The run could not be loaded." }));
      }
      cannotReach(error);
    } finally {
      detailsBusy = false;
      if (detailsAgain && scope.alive) {
        detailsAgain = false;
        refreshDetails();
      }
    }
  }
  /**
   * The server (or its store) is down, or restarting, as a look or an action
   * found: the details are asked for until it answers, which takes the
   * banner away (an action's too, though the looks between went well). An
   * action's 500 (a failure of the server, not an outage) stays said.
   */
  /** A cancel, resume or fork that failed: said, and a server away looked for again. */
  function actionFailed(error) {
    reportError(error);
    cannotReach(error, { action: true });
  }
  function cannotReach(error, { action = false } = {}) {
    const away = error.status === 0 || (action ? error.status === 503 : error.status >= 500);
    if (!scope.alive || !away) return;
    unreachable = error.message;
    detailsFailures += 1;
    scheduleDetails(Math.min(1000 * 2 ** (detailsFailures - 1), 5000));
  }
  /** Details again in ms (or sooner, if already due sooner); a hidden page waits until shown. */
  function scheduleDetails(ms) {
    const due = Date.now() + ms;
    if (detailsTimer && detailsDue <= due) return;
    clearTimeout(detailsTimer);
    detailsDue = due;
    detailsTimer = setTimeout(() => {
      detailsTimer = 0;
      if (document.hidden) detailsWanted = true;
      else refreshDetails();
    }, ms);
  }
  function applyDetails() {
    header.update(details);
    const unseen = !details.events_kept;
    if (unseen !== model.unseen) {
      // (not "waiting" nor "No executor has run yet" for a run that may have run for hours)
      model.unseen = unseen;
      if (graph) for (const id of graph.ids) dirtyNodes.add(id);
      timelineDirty = true;
      schedule();
    }
    // (events kept here tell the failure themselves, once the stream replayed them)
    if (details.failure && (!details.events_kept || !details.live || streamEnded) && modelStoredFailure(model, details.failure, Number(details.updated_at) || 0)) {
      dirtyNodes.add(details.failure.executor_id);
      timelineDirty = true;
      schedule();
    }
    outputs.sync(Array.isArray(details.outputs) ? details.outputs : [], details.outputs_total, details.outputs_dropped);
    requests.sync(Array.isArray(details.pending_requests) ? details.pending_requests : [], details.served !== false);
    checkpoints.sync(Array.isArray(details.checkpoints) ? details.checkpoints : [], details.checkpoints_total, details.served !== false);
    if (!opened) {
      opened = true;
      // The graph first (its workflows were asked for with the details),
      // then the events: a long run's backlog must not hold the drawing up.
      workflowsLoaded.then((workflows) => { if (scope.alive) showGraph(workflows); }).catch((error) => { if (scope.alive) reportError(error); });
      startStream();
    }
    const status = String(details.status);
    // How the run stood when its stream ended: a change since (an answer or
    // a resume from elsewhere that ran to its end between two looks) has
    // events this page has not had.
    const stand = `${status} ${details.updated_at} ${details.checkpoints_total}`;
    if (stream || standAtEnd === null) standAtEnd = stand;
    // (not while it goes on in another process: this server has none of its events)
    const moved = !stream && details.events_kept && !status.startsWith("in_progress") && stand !== standAtEnd;
    if ((details.live || moved) && !stream) {
      // Live again, or gone on (answered or resumed elsewhere): stream, but at most once a second.
      standAtEnd = stand;
      clearTimeout(restartTimer);
      restartTimer = setTimeout(() => startStream(), Math.max(0, lastStart + 1000 - Date.now()));
    } else if (!details.live && (status.startsWith("in_progress") || WAITING.has(status))) {
      // Going on in another process, or waiting for an answer or a resume that
      // another tab, server or process may give: follow it from the store.
      scheduleDetails(DETAILS_POLL_MS);
    } else if (!details.live) {
      scheduleDetails(IDLE_POLL_MS);
    }
  }

  /** past: the run had ended as the latest details say (not after an answer or resume from here). */
  function startStream(past = Boolean(details) && !details.live && !String(details.status).startsWith("in_progress")) {
    if (stream || !scope.alive) return;
    lastStart = Date.now();
    history = past;
    document.body.dataset.streaming = history ? "history" : "live";
    header.setStream("connecting");
    stream = openRunStream(runId, { lastId: () => model.lastId, onEvent, onDropped, onEnd, onState });
  }
  function onState(state) {
    header.setStream(history && state === "live" ? "history" : state);
    if (state === "stopped") stream = null; // a 4xx: an answer or resume may start it again
  }
  function onEnd(data) {
    stream = null;
    streamEnded = true;
    standAtEnd = null;
    history = false;
    modelStopped(model);
    for (const id of model.nodeState.keys()) dirtyNodes.add(id);
    timelineDirty = true;
    schedule();
    header.setStream("ended");
    header.setLive(false); // (not going on here any more, whatever the last details said)
    if (data && typeof data.status === "string") header.setStatus(data.status);
    document.body.dataset.streaming = "ended";
    if (restartAfterEnd) {
      restartAfterEnd = false;
      startStream(false);
    }
    clearTimeout(detailsTimer); // the refresh below replaces any pending one
    detailsTimer = 0;
    refreshDetails();
  }
  function onDropped(told) {
    const count = Number(told.dropped);
    const resumes = Number(told.resumes_at);
    if (!Number.isInteger(count) || count <= 0 || !(resumes - 1 > model.lastId)) return; // (told before)
    model.lastId = resumes - 1; // (a reconnect is not told again)
    log.dropped(count);
  }
  function onEvent(ev, sseId) {
    const id = Number.isInteger(ev.id) ? ev.id : Number(sseId);
    if (Number.isFinite(id)) {
      if (id <= model.lastId) return; // already seen
      model.lastId = id;
    }
    if (typeof ev.time === "number") model.lastTime = Math.max(model.lastTime, ev.time);
    const kind = String(ev.kind ?? "");
    if (kind === "agent_delta") {
      log.noteKind(kind);
      agents.delta(ev);
      schedule();
      return;
    }
    applyEvent(ev, kind);
    log.add(ev);
    schedule();
  }
  function applyEvent(ev, kind) {
    switch (kind) {
      case "status": if (!history) { header.setStatus(String(ev.status)); scheduleDetails(400); } break;
      case "superstep_started": if (isTopLevel(ev)) model.steps.set(ev.superstep, { start: ev.time, end: null }); break;
      case "superstep_completed": {
        const step = model.steps.get(ev.superstep);
        if (step && isTopLevel(ev)) step.end = ev.time;
        if (!history) scheduleDetails(800);
        break;
      }
      case "executor_invoked": modelInvoked(model, ev); break;
      case "executor_completed": modelFinished(model, ev, false); break;
      case "executor_failed": modelFinished(model, ev, true); break;
      case "output": if (isTopLevel(ev) && !history) scheduleDetails(150); break;
      case "request_info": if (!history) scheduleDetails(150); break;
      case "tool_call": agents.tool(ev); break;
      case "failed": if (!history) header.setError(String(ev.error ?? "failed")); break;
      default: break;
    }
    if (kind.startsWith("executor_") && isTopLevel(ev)) dirtyNodes.add(ev.executor_id);
    if (kind.startsWith("executor_") || kind.startsWith("superstep_")) timelineDirty = true;
  }
  function schedule() { if (!frame) frame = requestAnimationFrame(paint); }
  function paint() {
    frame = 0;
    if (!scope.alive) return;
    if (!log.flush()) schedule();
    agents.flush();
    if (history) return; // (the graph and the timeline: once the replay is in)
    if (graph) for (const id of dirtyNodes) graph.setState(id, drawnState(model, id));
    dirtyNodes.clear();
    if (timelineDirty) {
      timelineDirty = false;
      timeline.render();
    }
  }

  function afterAction() {
    if (stream) restartAfterEnd = true; // the open stream may still deliver the old "end"
    else startStream(false);
    refreshDetails();
  }
  async function answer(requestId, value) {
    try {
      await api("POST", `/api/runs/${enc(runId)}/responses`, { responses: { [requestId]: value } });
    } catch (error) {
      if (error.status === 404 || error.status === 409) refreshDetails();
      else cannotReach(error, { action: true });
      throw error; // (the form that sent it shows it)
    }
    announce("Answer sent.");
    // The answered form goes away: keep the keyboard focus on its section.
    const section = document.querySelector('[data-testid="pending-requests"]');
    if (section) {
      section.setAttribute("tabindex", "-1");
      section.focus();
    }
    afterAction();
  }
  async function cancel() {
    try {
      await api("POST", `/api/runs/${enc(runId)}/cancel`);
      announce("Cancellation requested.");
      refreshDetails();
    } catch (error) {
      actionFailed(error);
    }
  }
  async function resume(checkpointId) {
    try {
      const result = await api("POST", `/api/runs/${enc(runId)}/resume`, checkpointId ? { checkpoint_id: checkpointId } : {});
      if (result && result.run_id && result.run_id !== runId) {
        location.hash = `#/runs/${enc(result.run_id)}`;
        return;
      }
      announce("The run is resuming.");
      afterAction();
    } catch (error) {
      actionFailed(error);
    }
  }
  async function fork(checkpointId) {
    try {
      const result = await api("POST", `/api/runs/${enc(runId)}/fork`, { checkpoint_id: checkpointId });
      location.hash = `#/runs/${enc(result.run_id)}`;
    } catch (error) {
      actionFailed(error);
    }
  }

  function showGraph(workflows) {
    const wf = workflows.find((w) => w.name === details.workflow);
    if (!wf) {
      graphSlot.replaceChildren(el("p", { class: "muted", text: "This run's workflow is not served here, so its graph cannot be drawn." }));
      return;
    }
    graph = drawGraph(wf.graph, { large: true, name: wf.name });
    graphSlot.replaceChildren(graph.element);
    for (const id of graph.ids) graph.setState(id, drawnState(model, id));
  }

  // Asked for at once, with the details: the graph is drawn as soon as both are in.
  const workflowsLoaded = loadWorkflows();
  workflowsLoaded.catch(() => {}); // (reported once the details are in)
  refreshDetails();
}
