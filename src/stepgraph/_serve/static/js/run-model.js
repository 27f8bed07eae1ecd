/** What a run's events say: handler calls, node states and superstep spans. */

import { isTopLevel, pathOf } from "./format.js";

/** Calls (one per handler invocation), node states and superstep spans, from events. */
export function newRunModel() {
  return {
    lastId: 0, lastTime: 0, calls: [], byStep: new Map(), stepOrder: [], open: new Map(), steps: new Map(),
    nodeState: new Map(), running: new Map(), failedIn: new Map(),
    unseen: false, // this server did not see the run's events (it ran before a restart, or elsewhere)
  };
}
/**
 * Records a call, indexed by its superstep (stepOrder: the supersteps sorted),
 * so the timeline draws the newest supersteps without going through every
 * call of a run of 100,000 of them on each frame.
 */
function addCall(m, call) {
  m.calls.push(call);
  let list = m.byStep.get(call.step);
  if (!list) {
    list = [];
    m.byStep.set(call.step, list);
    const order = m.stepOrder;
    let at = order.length;
    if (at && order[at - 1] > call.step) { // (a replay from an older checkpoint: rare)
      let low = 0;
      while (low < at) {
        const mid = (low + at) >> 1;
        if (order[mid] < call.step) low = mid + 1;
        else at = mid;
      }
    }
    order.splice(at, 0, call.step);
  }
  list.push(call);
}
function indexCalls(m, calls) {
  Object.assign(m, { calls: [], byStep: new Map(), stepOrder: [] });
  for (const call of calls) addCall(m, call);
}
/** A map's workers share a path and a superstep and finish in any order: their item tells them apart. */
const itemOf = (ev) => (Number.isInteger(ev.item) ? ev.item : null);
const callKey = (ev) => `${pathOf(ev)}\u0000${ev.superstep}\u0000${itemOf(ev) ?? ""}`;
const newCall = (ev) => ({ path: pathOf(ev), executor: ev.executor_id, step: ev.superstep, item: itemOf(ev), start: ev.time, end: null, failed: false });
export function modelInvoked(m, ev) {
  const call = newCall(ev);
  addCall(m, call);
  if (!m.open.has(callKey(ev))) m.open.set(callKey(ev), []);
  m.open.get(callKey(ev)).push(call);
  if (isTopLevel(ev)) {
    m.running.set(ev.executor_id, (m.running.get(ev.executor_id) || 0) + 1);
    m.nodeState.set(ev.executor_id, "running");
  }
}
export function modelFinished(m, ev, failed) {
  const queue = m.open.get(callKey(ev));
  let call = queue && queue.shift();
  if (queue && !queue.length) m.open.delete(callKey(ev)); // (one key per call otherwise, for ever)
  if (!call) {
    call = newCall(ev);
    addCall(m, call);
  }
  call.end = typeof ev.duration === "number" ? call.start + ev.duration : ev.time;
  call.failed = failed;
  if (failed && m.fromStore) { // (the events tell it now: the store's account goes)
    indexCalls(m, m.calls.filter((c) => !(c.stored && c.path === call.path && c.step === call.step)));
    m.fromStore = m.calls.some((c) => c.stored);
  }
  if (!isTopLevel(ev)) return;
  const id = ev.executor_id;
  const left = Math.max(0, (m.running.get(id) || 1) - 1);
  m.running.set(id, left);
  if (failed) m.failedIn.set(id, ev.superstep);
  if (failed || left === 0) m.nodeState.set(id, m.failedIn.get(id) === ev.superstep ? "failed" : "done");
}
/**
 * A failed run whose events this page never got (it ended before this server
 * started, or in another process): its failing call as the store tells it
 * (details.failure, from the error), once. Whether anything changed.
 */
export function modelStoredFailure(m, failure, time) {
  const { executor_id: id, superstep: step } = failure;
  if (m.calls.some((c) => c.failed && c.path === id && c.step === step)) return false;
  addCall(m, { path: id, executor: id, step, start: time, end: time, failed: true, stored: true });
  m.lastTime = Math.max(m.lastTime, time);
  m.failedIn.set(id, step);
  m.nodeState.set(id, "failed");
  m.fromStore = true;
  return true;
}
/**
 * A node's state as drawn: from the events, else "waiting" — or, for a run
 * whose events this server never saw, "unknown": it may well have run.
 */
export const drawnState = (m, id) => m.nodeState.get(id) || (m.unseen ? "unknown" : "waiting");
/** The stream ended: whatever still runs is not running any more. */
export function modelStopped(m) {
  for (const queue of m.open.values()) for (const call of queue.splice(0)) call.end = Math.max(call.start, m.lastTime);
  for (const [id, n] of m.running) {
    if (n > 0 && m.nodeState.get(id) === "running") m.nodeState.set(id, "waiting");
    m.running.set(id, 0);
  }
}
