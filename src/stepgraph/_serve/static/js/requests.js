/**
 * A run's open requests as forms: an agent's tool call gets Approve, Reject
 * with a reason and Edit arguments; any other request a form of its type.
 */

import { reportError } from "./api.js";
import { button, el, nextId } from "./dom.js";
import { clip, toJson } from "./format.js";
import { resolveRef, schemaForm } from "./forms.js";
import { OutOfRange, readTypedJson, UNSAFE_WHOLE, unsafeWholeNumber } from "./json-numbers.js";
import { announce } from "./notices.js";

function toolApproval(request, submit) {
  const args = request.arguments === undefined ? {} : request.arguments;
  const act = (value) => submit(value).catch(reportError);
  const reason = el("input", { type: "text", id: nextId("reason"), "data-testid": "reject-reason", autocomplete: "off" });
  const edit = el("textarea", { id: nextId("edit"), class: "json", rows: 6, spellcheck: "false", "data-testid": "edit-arguments", text: toJson(args) });
  const editError = el("p", { class: "field-error", id: `${edit.id}-err`, hidden: true });
  edit.setAttribute("aria-describedby", editError.id);
  const sendEdit = () => {
    let parsed;
    let range = null;
    try { parsed = readTypedJson(edit.value); } catch (error) { if (error instanceof OutOfRange) range = error.message; }
    const big = parsed === undefined ? null : unsafeWholeNumber(edit.value);
    const bad = range || parsed === undefined ? range || "These arguments are not valid JSON." : !parsed || typeof parsed !== "object" || Array.isArray(parsed) ? "The arguments must be a JSON object."
      : big ? `${clip(big, 40)}: a whole number ${UNSAFE_WHOLE}.` : "";
    editError.textContent = bad;
    editError.hidden = !bad;
    if (bad) {
      edit.setAttribute("aria-invalid", "true");
      edit.focus();
      return;
    }
    edit.removeAttribute("aria-invalid");
    act({ decision: "edit", arguments: parsed });
  };
  return [
    el("p", {}, "Agent ", el("code", { text: String(request.agent ?? "?") }), " wants to call the tool ",
      el("code", { class: "tool-name", text: String(request.tool ?? "?") }), " with these arguments:"),
    el("pre", { class: "json", text: toJson(args) }),
    el("div", { class: "approval-actions" },
      el("div", { class: "approval-row" }, button("Approve", { class: "primary", "data-testid": "approve-button", onclick: () => act({ decision: "approve" }) })),
      el("div", { class: "approval-row" }, el("div", { class: "field" }, el("label", { for: reason.id, text: "Reason for rejecting (optional)" }), reason),
        button("Reject", { class: "danger", "data-testid": "reject-button", onclick: () => act({ decision: "reject", reason: reason.value }) })),
      el("div", { class: "approval-row" }, el("div", { class: "field" }, el("label", { for: edit.id, text: "Arguments to run the tool with (JSON)" }), edit, editError),
        button("Edit arguments and run", { "data-testid": "edit-button", onclick: sendEdit }))),
  ];
}

function genericAnswer(req, submit) {
  const schema = req.response_schema && typeof req.response_schema === "object" ? req.response_schema : {};
  const parts = [el("pre", { class: "json", text: toJson(req.request) })];
  if (resolveRef(schema, schema.$defs || {}).type === "boolean") {
    const quick = (text, value) => button(text, { class: value ? "primary" : "secondary", onclick: () => submit(value).catch(reportError) });
    parts.push(el("div", { class: "quick-actions" }, quick("Yes", true), quick("No", false)));
  }
  parts.push(schemaForm({
    schema, label: "Answer", submitText: "Send answer", submitTestid: "request-submit",
    formLabel: `Answer to request ${req.request_id}`, onSubmit: submit,
  }));
  return parts;
}

/** A request of a workflow this server does not serve: shown as stored, not answered here. */
function notAnswerableHere(req) {
  return [el("pre", { class: "json", text: toJson(req.request) }),
    el("p", { class: "muted", "data-testid": "not-served", text: `This server does not serve the run's workflow, so it cannot answer this request${req.response_type ? ` (it takes ${req.response_type})` : ""}: answer it where the workflow is served.` })];
}

function requestCard(req, send, answerable = true) {
  const headingId = nextId("req");
  const status = el("p", { class: "request-status", role: "status" });
  const card = el("article", { class: "card request", "data-testid": "request-form", "data-request-id": req.request_id, "aria-labelledby": headingId },
    el("h3", { id: headingId }, String(req.request_type || "Request"), el("span", { class: "muted", text: ` from ${req.executor_id}` })),
    el("p", { class: "muted small" }, "Request ", el("code", { text: req.request_id })));
  const controls = () => card.querySelectorAll("button, input, select, textarea");
  const submit = async (value) => {
    controls().forEach((c) => { c.disabled = true; });
    status.textContent = "Sending…";
    try {
      await send(req.request_id, value);
      status.textContent = "Answer sent.";
      card.classList.add("answered");
    } catch (error) {
      status.textContent = "";
      controls().forEach((c) => { c.disabled = false; });
      throw error;
    }
  };
  const isApproval = req.request_type === "ToolApprovalRequest" && req.request && typeof req.request === "object";
  card.append(...(!answerable ? notAnswerableHere(req) : isApproval ? toolApproval(req.request, submit) : genericAnswer(req, submit)), status);
  return card;
}

export function requestsPanel(send) {
  const node = el("div", { class: "requests", "data-testid": "pending-requests" });
  const empty = el("p", { class: "muted", text: "No pending requests." });
  node.append(empty);
  const cards = new Map();
  return {
    node,
    /** ``answerable``: false for a run of a workflow this server does not serve. */
    sync(pending, answerable = true) {
      const ids = new Set(pending.map((r) => r.request_id));
      for (const [id, card] of cards) {
        if (!ids.has(id)) {
          card.remove();
          cards.delete(id);
        }
      }
      let added = 0;
      for (const req of pending) {
        if (cards.has(req.request_id)) continue;
        const card = requestCard(req, send, answerable);
        cards.set(req.request_id, card);
        node.append(card);
        added += 1;
      }
      empty.hidden = cards.size > 0;
      if (added) announce(`${added === 1 ? "A request is" : `${added} requests are`} waiting for an answer.`);
    },
  };
}
