/** A run page's header: status, tags, facts, and the Cancel / Resume buttons. */

import { button, el, setStatusBadge, statusBadge } from "./dom.js";
import { enc, timeEl } from "./format.js";

export function runHeader(runId, actions) {
  const status = statusBadge("loading", { "data-testid": "run-status" });
  const tags = el("span", { class: "tags" });
  const stream = el("span", { class: "stream-state" });
  const workflow = el("a", { href: "#/workflows", text: "…" });
  const facts = el("dl", { class: "facts" });
  const error = el("p", { class: "run-error", hidden: true });
  const notServed = el("p", { class: "muted", "data-testid": "resume-not-served", hidden: true });
  const cancel = button("Cancel run", { class: "danger", "data-testid": "cancel-button", hidden: true, onclick: actions.onCancel });
  const resume = button("Resume run", { class: "primary", "data-testid": "resume-button", hidden: true, onclick: actions.onResume });
  const node = el("header", { class: "run-head" },
    el("p", { class: "crumbs" }, el("a", { href: "#/runs", text: "Runs" }), " / "),
    el("h1", { tabindex: -1 }, "Run ", el("code", { "data-testid": "run-id", text: runId })),
    el("p", { class: "run-line", "aria-live": "polite" }, "Status: ", status, tags, stream),
    el("p", {}, "Workflow: ", workflow), facts, error, notServed, el("div", { class: "actions" }, cancel, resume));
  const fact = (term, value) => [el("dt", { text: term }), el("dd", {}, value)];
  // What the status line and the buttons show, from the latest details and events.
  const state = { status: "loading", live: false, interrupted: false, served: true, workflow: "" };
  function show() {
    setStatusBadge(status, state.status);
    document.title = `Run ${runId} (${state.status}) · stepgraph`;
    // Live (going on in this server) only while its status says it goes on:
    // an ended run is never "live", whatever older details said.
    // (a run listed as going on that no process holds — its process was
    // killed — is interrupted: nothing to cancel, and it resumes)
    const going = String(state.status).startsWith("in_progress") && !(state.interrupted && !state.live);
    const words = [state.live && going ? "live" : "", state.interrupted ? "interrupted" : ""].filter(Boolean);
    tags.replaceChildren(...words.map((t) => el("span", { class: `tag tag-${t}`, text: t })));
    // Going on here, or in another process on the same store (the cancel then goes through the store).
    cancel.hidden = !going;
    const resumable = !state.live && (state.interrupted || state.status === "cancelled" || state.status === "failed");
    // (a run of a workflow this server does not serve: resumed where it is served, the server refuses it here)
    resume.hidden = !resumable || !state.served;
    notServed.hidden = !resumable || state.served;
    notServed.textContent = `This server does not serve workflow '${state.workflow}', so it cannot resume this run: resume it where the workflow is served.`;
    if (actions.onGoing) actions.onGoing(going);
  }
  return {
    node,
    setStatus(value) {
      state.status = value;
      show();
    },
    setLive(value) {
      state.live = value;
      show();
    },
    setStream(value) {
      const words = { history: "reading its event log…", live: "streaming live", reconnecting: "reconnecting…", ended: "", stopped: "stream stopped", connecting: "connecting…" };
      stream.textContent = words[value] ? ` · ${words[value]}` : "";
    },
    /** Why the run failed, or why it was cancelled (who asked, or what stopped it). */
    setError(message, cancelled = false) {
      error.hidden = !message;
      error.textContent = message ? `${cancelled ? "Stopped" : "Error"}: ${message}` : "";
      error.classList.toggle("stopped", Boolean(message) && cancelled);
    },
    update(d) {
      Object.assign(state, { status: d.status, live: Boolean(d.live), interrupted: Boolean(d.interrupted), served: d.served !== false, workflow: String(d.workflow) });
      show();
      workflow.textContent = d.workflow;
      workflow.href = `#/workflows/${enc(d.workflow)}`;
      facts.replaceChildren(...fact("Started", timeEl(d.started_at)), ...fact("Updated", timeEl(d.updated_at)),
        // (a failure's superstep counts, though no checkpoint of it was made)
        ...fact("Supersteps", String(Math.max(d.supersteps ?? 0, d.failure ? d.failure.superstep : 0))), ...fact("Pending requests", String((d.pending_requests || []).length)),
        ...fact("Checkpoints", String(d.checkpoints_total ?? (d.checkpoints || []).length)));
      this.setError(d.error, d.status === "cancelled");
    },
  };
}
