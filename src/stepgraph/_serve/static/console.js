/*
 * stepgraph web console: one script, no framework, no build step, nothing
 * fetched from anywhere but the server that serves it.
 *
 * Structure (top to bottom):
 *   1. Helpers       el()/svg() DOM builders (user text only ever goes in via
 *                    textContent / text nodes / attributes), formatting
 *   2. Auth and API  the token from "#token=…" (kept in sessionStorage), a
 *                    fetch() wrapper that adds "Authorization: Bearer", the 401 prompt
 *   3. Notices       the error banner (role=alert) and a polite announcer
 *   4. Schema forms  JSON schema → labelled fields with inline validation
 *   5. Graph         layered layout (DFS back edges, longest-path layers, dummy
 *                    nodes, barycenter sweeps) drawn as SVG, with pan/zoom,
 *                    keyboard control and per-executor states
 *   6. SSE           a fetch()-based Server-Sent Events reader (EventSource
 *                    cannot send headers) that reconnects with Last-Event-ID
 *   7. Pages         #/workflows, #/workflows/NAME, #/runs, #/runs/ID; the run
 *                    page is a controller plus panels (header, requests,
 *                    outputs, agent text, timeline, event log, checkpoints)
 *   8. Router, boot  hashchange → page; every page gets a scope that is closed
 *                    (timers, streams, observers) when the page changes
 *
 * Idle cost: there are no intervals. The runs list re-arms a one-shot timeout
 * only while the tab is visible; the run page paints in requestAnimationFrame
 * (paused by browsers in hidden tabs) and otherwise waits on its stream — or,
 * while the run waits for answers or goes on in another process, asks for its
 * details once a second, also only while the tab is visible.
 */
"use strict";

(() => {
  // ─────────────────────────────── 1. Helpers ───────────────────────────────
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STATUSES = [
    "in_progress", "in_progress_pending_requests", "idle",
    "idle_with_pending_requests", "paused", "failed", "cancelled",
  ];
  const TIMELINE_STEPS = 80; // how many of the newest supersteps the timeline shows
  const LOG_WINDOW = 500; // the most rows the event log holds at once
  const LOG_PAGE = 500; // how many older (or newer) events the event log shows on asking
  const OUTPUTS_WINDOW = 200; // how many of a run's newest outputs its page lists (more on asking)
  // Statuses a run page follows from the store while the run is not live here:
  // an answer or a resume may come from another tab, server or process.
  const WAITING = new Set(["idle_with_pending_requests", "paused", "cancelled", "failed"]);
  const IDLE_POLL_MS = 5000; // an idle run goes on only if replayed from an older checkpoint
  const NOTHING_TO_RESUME = new Set(["idle", "idle_with_pending_requests"]);
  const DETAILS_POLL_MS = 1000;
  const LOG_BACKLOG_MS = 250; // how often the event log draws while it catches up
  const SSE_SLICE_MS = 12; // how long the event stream is handled before the page may paint
  const CHECKPOINTS_MAX = 10000; // the most checkpoints a run's details can hold (the server's 100 unless asked)
  const RUNS_PAGE = 50;
  const REFRESH_MS = 3000;
  const QUIET_REFRESH_MS = 30000;
  const COMMON_FIELDS = new Set(["id", "kind", "time", "executor_id", "superstep", "path", "workflow_path"]);
  const enc = encodeURIComponent;
  let idSeq = 0;
  const nextId = (prefix) => `${prefix}-${++idSeq}`;
  let ui = null; // fixed page elements, filled in boot()

  function build(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child)); // strings become text nodes
    }
    return node;
  }
  const el = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);
  const hiddenText = (text) => el("span", { class: "visually-hidden", text });
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const isTopLevel = (ev) => !Array.isArray(ev.workflow_path) || ev.workflow_path.length === 0;
  const pathOf = (ev) => ev.path || ev.executor_id || "";
  const nearBottom = (box) => box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  const pad = (n, width = 2) => String(n).padStart(width, "0");

  /** An event id as the log shows it: ids are 16-digit numbers one apart, so their last digits. */
  function shortId(id) {
    const text = String(id ?? "");
    return text.length > 8 ? `…${text.slice(-6)}` : text;
  }
  function fmtDate(t) { return typeof t === "number" ? new Date(t * 1000).toLocaleString() : "—"; }
  function fmtClock(t) {
    if (typeof t !== "number") return "";
    const d = new Date(t * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }
  function fmtMs(seconds) {
    const ms = seconds * 1000;
    return ms < 10 ? `${ms.toFixed(2)} ms` : `${Math.round(ms)} ms`;
  }
  function timeEl(t) {
    if (typeof t !== "number") return el("span", { text: "—" });
    return el("time", { datetime: new Date(t * 1000).toISOString(), text: fmtDate(t) });
  }
  function toJson(value, indent = 2) { try { return JSON.stringify(value, null, indent) ?? "null"; } catch { return String(value); } }
  const asText = (value) => (typeof value === "string" ? value : toJson(value));
  const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
  // A whole number past 2**53 - 1 (a run's output, a request's field) is kept
  // as its JSON text where the browser can (JSON.rawJSON, and the source text
  // a reviver is given): shown, and sent back, exactly — not rounded.
  const EXACT_JSON = typeof JSON.rawJSON === "function";
  const keepWhole = (key, value, context) => (typeof value === "number" && !Number.isSafeInteger(value) && context
    && /^-?\d+$/.test(context.source) ? JSON.rawJSON(context.source) : value);
  // (a reviver slows a long log's reading: only a text with such a number gets one)
  const readJsonText = (text) => JSON.parse(text, EXACT_JSON && /[89]\d{15}|\d{17}/.test(text) ? keepWhole : undefined);
  function parseJson(text) { try { return readJsonText(text); } catch { return undefined; } }
  /** A number typed in a JSON field that no number holds (1e400): refused, not sent as null. */
  class OutOfRange extends Error {}
  /**
   * JSON a person typed (a form's JSON field, a tool call's arguments): its
   * numbers are sent as written, as `stepgraph run --input` reads them
   * (9007199254740993 not rounded, 1.0 a float), and one past any number's
   * range (1e400, which JSON.stringify sends as null) is refused.
   */
  function readTypedJson(text) {
    return JSON.parse(text, (key, value, context) => {
      if (typeof value !== "number") return value;
      const source = context && typeof context.source === "string" ? context.source : null;
      if (!Number.isFinite(value)) throw new OutOfRange(`${clip(source ?? String(value), 40)} is past the largest number JSON can carry here.`);
      return EXACT_JSON && source !== null && source !== JSON.stringify(value) ? JSON.rawJSON(source) : value;
    });
  }
  function statusBadge(status, attrs = {}) {
    const safe = String(status).replace(/[^a-z_]/g, "");
    return el("span", { class: `status status-${safe}`, ...attrs, text: status });
  }
  function setStatusBadge(badge, status) {
    badge.textContent = status;
    badge.className = `status status-${String(status).replace(/[^a-z_]/g, "")}`;
  }
  function panel(title, body, extra = {}) {
    const id = nextId("h");
    return el("section", { class: "panel", "aria-labelledby": id, ...extra }, el("h2", { id, text: title }), body);
  }
  function button(text, attrs = {}) { return el("button", { type: "button", ...attrs, text }); }
  function labelledSelect(labelText, options) {
    const select = el("select", { id: nextId("sel") });
    for (const [value, text] of options) select.append(new Option(text, value));
    const wrap = el("div", { class: "field inline" }, el("label", { for: select.id, text: labelText }), select);
    return { wrap, select };
  }

  // ───────────────────────────── 2. Auth and API ─────────────────────────────
  const TOKEN_KEY = "stepgraph-token";
  let token = null;
  try { token = sessionStorage.getItem(TOKEN_KEY); } catch { token = null; }

  function saveToken(value) {
    token = value || null;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage disabled: keep the token in memory only */
    }
  }

  /**
   * Moves "token=…" out of the address (keeping the route and its other
   * parameters) into sessionStorage. Every "token=" goes: one left behind (an
   * address pasted twice over) stayed in the address bar and the history.
   */
  function takeTokenFromHash() {
    const pattern = /(^|[&?])token=([^&]*)/;
    let rest = location.hash.slice(1);
    let found = null;
    for (let match = pattern.exec(rest); match; match = pattern.exec(rest)) {
      if (found === null) found = match[2]; // (the first, as the address reads)
      const before = rest.slice(0, match.index);
      const after = rest.slice(match.index + match[0].length); // "" or "&…"
      // One separator stays between what was on either side: "?a&token=x&b" → "?a&b",
      // "?token=x&b" → "?b" (both "&" used to go: "?ab").
      rest = after ? before + match[1] + after.slice(1) : before;
    }
    if (found === null) return;
    try { found = decodeURIComponent(found); } catch { /* keep it raw */ }
    saveToken(found);
    history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function readJson(response) {
    const text = await response.text().catch(() => "");
    return text ? parseJson(text) : null;
  }

  function authHeaders(extra = {}) { return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra }; }

  async function api(method, path, body) {
    const init = { method, headers: authHeaders({ Accept: "application/json" }), credentials: "omit", cache: "no-store" };
    if (body !== undefined || method !== "GET") { // the server wants a JSON body on every POST
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body === undefined ? {} : body);
    }
    let response;
    try { response = await fetch(path, init); } catch { throw new ApiError(0, "Cannot reach the stepgraph server. Is it still running?"); }
    const data = await readJson(response);
    const message = data && typeof data.error === "string" ? data.error : null;
    if (response.status === 401) {
      showAuthPrompt(message);
      throw new ApiError(401, message || "An access token is needed.");
    }
    if (!response.ok) { throw new ApiError(response.status, message || `The server answered ${response.status} ${response.statusText}`.trim()); }
    return data;
  }

  let workflowsCache = null;
  async function loadWorkflows() {
    if (!workflowsCache) {
      const list = await api("GET", "/api/workflows");
      workflowsCache = Array.isArray(list) ? list : [];
    }
    return workflowsCache;
  }

  function showAuthPrompt(serverMessage) {
    ui.authMessage.textContent = token
      ? "The server did not accept the stored access token (401). Paste the current one."
      : "This server needs an access token (401). Paste the token from the address the server printed (the part after #token=).";
    if (serverMessage) ui.authMessage.append(` The server said: ${serverMessage}`);
    showError(`The server needs an access token (401)${serverMessage ? `: ${serverMessage}` : ""}. Paste it in the field below.`);
    const wasHidden = ui.auth.hidden;
    ui.auth.hidden = false;
    if (wasHidden) ui.authInput.focus();
  }

  // ─────────────────────────────── 3. Notices ───────────────────────────────
  function showError(message) {
    if (!ui.banner.hidden && ui.bannerText.textContent === message) return;
    ui.banner.hidden = false;
    ui.bannerText.textContent = message;
  }
  function clearError() {
    ui.banner.hidden = true;
    ui.bannerText.textContent = "";
  }
  /** Clears the banner if it still says this (and not something said since). */
  function clearErrorIf(message) {
    if (!ui.banner.hidden && ui.bannerText.textContent === message) clearError();
  }
  function reportError(error) {
    if (error instanceof ApiError && error.status === 401) return; // the token prompt says it
    if (!(error instanceof ApiError)) console.error(error);
    showError(error && error.message ? error.message : String(error));
  }
  function announce(message) {
    ui.announcer.textContent = "";
    requestAnimationFrame(() => { ui.announcer.textContent = message; });
  }

  // ──────────────────────────── 4. Schema forms ────────────────────────────
  class Invalid extends Error {}

  /** Follows "$ref": "#/$defs/X" (or #/definitions/X); siblings of $ref win. */
  function resolveRef(schema, defs) {
    let current = schema && typeof schema === "object" ? schema : {};
    for (let guard = 0; typeof current.$ref === "string" && guard < 32; guard++) {
      const match = /^#\/(?:\$defs|definitions)\/(.+)$/.exec(current.$ref);
      const name = match ? match[1].replace(/~1/g, "/").replace(/~0/g, "~") : null;
      const target = name !== null && Object.prototype.hasOwnProperty.call(defs, name) ? defs[name] : null;
      const { $ref, ...siblings } = current;
      if (!target) return siblings; // unknown reference: treat as "any"
      current = { ...target, ...siblings };
    }
    return current;
  }

  /** anyOf/oneOf [X, null] or type [X, "null"] → X, marked nullable. */
  function splitNullable(schema) {
    const alternatives = schema.anyOf || schema.oneOf;
    if (Array.isArray(alternatives)) {
      const rest = alternatives.filter((alt) => !(alt && alt.type === "null"));
      if (rest.length === 1 && rest.length < alternatives.length) {
        const { anyOf, oneOf, ...outer } = schema;
        return { inner: { ...rest[0], ...outer }, nullable: true };
      }
    }
    if (Array.isArray(schema.type)) {
      const types = schema.type.filter((t) => t !== "null");
      if (types.length === 1) return { inner: { ...schema, type: types[0] }, nullable: types.length < schema.type.length };
    }
    return { inner: schema, nullable: false };
  }

  function fieldFor(rawSchema, opts) {
    const { inner, nullable } = splitNullable(resolveRef(rawSchema, opts.defs));
    const schema = resolveRef(inner, opts.defs);
    const o = { ...opts, label: schema.title || opts.label, nullable, optional: nullable || !opts.required };
    if (Array.isArray(schema.enum) && schema.enum.length) return enumField(schema, o);
    if (schema.type === "string") return textField(schema, o);
    if (schema.type === "integer" || schema.type === "number") return numberField(schema, o);
    if (schema.type === "boolean") return boolField(schema, o);
    if (schema.type === "object" && schema.properties && typeof schema.properties === "object") return objectField(schema, o);
    return jsonField(schema, o);
  }

  /** Label, hint and inline error around one control. */
  function labelled(control, schema, o, typeName) {
    control.id = nextId("f");
    const hint = schema.description ? el("small", { class: "hint", id: `${control.id}-hint`, text: schema.description }) : null;
    const error = el("p", { class: "field-error", id: `${control.id}-err`, hidden: true });
    control.setAttribute("aria-describedby", [hint && hint.id, error.id].filter(Boolean).join(" "));
    const suffix = `${typeName}${o.optional && typeName !== "yes/no" ? ", optional" : ""}`;
    const label = el("label", { for: control.id }, o.label, el("span", { class: "type-hint", text: ` (${suffix})` }));
    const isCheck = control.type === "checkbox";
    const wrap = el("div", { class: isCheck ? "field field-check" : "field" }, isCheck ? [control, label] : [label, control], hint, error);
    const setError = (message) => {
      error.textContent = message || "";
      error.hidden = !message;
      if (message) control.setAttribute("aria-invalid", "true");
      else control.removeAttribute("aria-invalid");
    };
    return { wrap, setError };
  }
  function fail(setError, message) {
    setError(message);
    throw new Invalid(message);
  }
  /** What an empty control means: null, "leave out", or an error. */
  function emptyValue(o, setError, message) {
    if (o.nullable) return null;
    if (!o.required) return undefined;
    return fail(setError, message);
  }

  function textField(schema, o) {
    const initial = typeof schema.default === "string" ? schema.default : "";
    const long = schema.format === "textarea" || (schema.maxLength || 0) > 200;
    const input = long ? el("textarea", { rows: 4, text: initial }) : el("input", { type: "text", value: initial, autocomplete: "off" });
    const { wrap, setError } = labelled(input, schema, o, "text");
    const read = () => {
      setError("");
      const value = input.value;
      if (value === "" && o.optional) return o.nullable ? null : undefined;
      if (typeof schema.minLength === "number" && value.length < schema.minLength) fail(setError, `Enter at least ${schema.minLength} characters.`);
      return value;
    };
    return { node: wrap, read };
  }

  // Where a whole number past 2**53 - 1 cannot be kept exactly (an older
  // browser; or written as 1e21), it is refused, never sent rounded.
  const UNSAFE_WHOLE = `can be sent exactly from this page only from -${Number.MAX_SAFE_INTEGER} to ${Number.MAX_SAFE_INTEGER} (send a larger whole number with the API or stepgraph run)`;
  /** The first whole number in a JSON text that a page's numbers would round, else null. */
  function unsafeWholeNumber(jsonText) {
    if (EXACT_JSON) return null;
    const bare = jsonText.replace(/"(?:[^"\\]|\\.)*"/g, '""');
    for (const [literal, fraction, exponent] of bare.matchAll(/-?\d+(\.\d+)?([eE][+-]?\d+)?/g)) {
      if (!fraction && !exponent && !Number.isSafeInteger(Number(literal))) return literal;
    }
    return null;
  }
  function numberField(schema, o) {
    const integer = schema.type === "integer";
    const input = el("input", {
      type: "number", step: integer ? "1" : "any", inputmode: integer ? "numeric" : "decimal",
      // (a default past 2**53 - 1 is read as its JSON text, as every such whole number)
      value: typeof schema.default === "number" ? schema.default : EXACT_JSON && JSON.isRawJSON(schema.default) ? schema.default.rawJSON : undefined,
    });
    const { wrap, setError } = labelled(input, schema, o, integer ? "whole number" : "number");
    const read = () => {
      setError("");
      const raw = input.value.trim();
      if (raw === "") return emptyValue(o, setError, "Enter a number.");
      const n = Number(raw);
      if (!Number.isFinite(n)) fail(setError, "Enter a number.");
      if (integer && !Number.isInteger(n)) fail(setError, "Enter a whole number.");
      if (typeof schema.minimum === "number" && n < schema.minimum) fail(setError, `Enter ${schema.minimum} or more.`);
      if (typeof schema.maximum === "number" && n > schema.maximum) fail(setError, `Enter ${schema.maximum} or less.`);
      if (integer && !Number.isSafeInteger(n)) {
        if (EXACT_JSON && /^-?\d+$/.test(raw)) return JSON.rawJSON(BigInt(raw).toString());
        fail(setError, EXACT_JSON ? "Write this whole number with its digits (not as 1e21), so it is sent exactly." : `A whole number ${UNSAFE_WHOLE}.`);
      }
      return n;
    };
    return { node: wrap, read };
  }

  function boolField(schema, o) {
    const input = el("input", { type: "checkbox", checked: schema.default === true });
    const { wrap } = labelled(input, schema, o, "yes/no");
    return { node: wrap, read: () => input.checked };
  }

  function enumField(schema, o) {
    const select = el("select");
    if (o.optional) select.append(new Option("— none —", ""));
    schema.enum.forEach((value, i) => {
      const option = new Option(asText(value), String(i));
      if (toJson(value) === toJson(schema.default)) option.selected = true;
      select.append(option);
    });
    const { wrap, setError } = labelled(select, schema, o, "choice");
    const read = () => {
      setError("");
      return select.value === "" ? emptyValue(o, setError, "Choose a value.") : schema.enum[Number(select.value)];
    };
    return { node: wrap, read };
  }

  function objectField(schema, o) {
    const required = new Set(Array.isArray(schema.required) ? schema.required : []);
    const legend = el("legend", {});
    const fieldset = el("fieldset", { class: "field-group" }, legend);
    let toggle = null;
    if (o.optional) {
      // Inside the first legend, the checkbox stays usable when the fieldset is disabled.
      toggle = el("input", { type: "checkbox", id: nextId("f"), checked: !o.nullable });
      legend.append(toggle, el("label", { for: toggle.id, text: ` ${o.label} (optional: tick to fill in)` }));
      toggle.addEventListener("change", () => { fieldset.disabled = !toggle.checked; });
      fieldset.disabled = !toggle.checked;
    } else {
      legend.textContent = o.label;
    }
    if (schema.description) fieldset.append(el("p", { class: "hint", text: schema.description }));
    const children = Object.entries(schema.properties).map(([name, sub]) => {
      const field = fieldFor(sub, { defs: o.defs, label: name, required: required.has(name) });
      fieldset.append(field.node);
      return [name, field];
    });
    const read = () => {
      if (toggle && !toggle.checked) return o.nullable ? null : undefined;
      const value = {};
      let invalid = false;
      for (const [name, field] of children) {
        try {
          const v = field.read();
          if (v !== undefined) value[name] = v;
        } catch (error) {
          if (!(error instanceof Invalid)) throw error;
          invalid = true;
        }
      }
      if (invalid) throw new Invalid("invalid fields");
      return value;
    };
    return { node: fieldset, read };
  }

  function jsonField(schema, o) {
    let initial = "";
    if (schema.default !== undefined) initial = toJson(schema.default);
    else if (schema.type === "array") initial = "[]";
    else if (schema.type === "object") initial = "{}";
    const area = el("textarea", {
      class: "json", rows: 4, spellcheck: "false", text: initial,
      placeholder: 'JSON, e.g. "text", 42, [1, 2] or {"key": "value"}',
    });
    // A union that takes a string (an agent's "str | list[ChatMessage] | ...")
    // takes plain text as that string; JSON is read as JSON.
    const alternatives = schema.anyOf || schema.oneOf || [];
    const takesText = Array.isArray(alternatives) && alternatives.some((alt) => alt && alt.type === "string");
    const { wrap, setError } = labelled(area, schema, o, takesText ? "text or JSON" : "JSON");
    const exact = (raw, value) => {
      const big = unsafeWholeNumber(raw);
      return big ? fail(setError, `${clip(big, 40)}: a whole number ${UNSAFE_WHOLE}.`) : value;
    };
    const read = () => {
      setError("");
      const raw = area.value.trim();
      if (raw === "") return emptyValue(o, setError, "Enter a JSON value.");
      if (takesText) {
        // Text is the string itself; only an object, an array or a quoted
        // string is read as JSON (so 42, true and null are text too).
        if (!/^[[{"]/.test(raw)) return area.value;
        let value;
        try { value = readTypedJson(raw); } catch (error) {
          return error instanceof OutOfRange ? fail(setError, error.message) : area.value;
        }
        return exact(raw, value);
      }
      let value;
      try { value = readTypedJson(raw); } catch (error) {
        return fail(setError, error instanceof OutOfRange ? error.message : `This is not valid JSON: ${error.message}`);
      }
      return exact(raw, value);
    };
    return { node: wrap, read };
  }

  /** A whole form for one schema; onSubmit(value) may throw (shown in the banner). */
  function schemaForm({ schema, label, testid, submitText, submitTestid, formLabel, onSubmit }) {
    const root = schema && typeof schema === "object" ? schema : {};
    const defs = { ...(root.definitions || {}), ...(root.$defs || {}) };
    const field = fieldFor(root, { defs, label, required: true });
    const submit = el("button", { type: "submit", class: "primary", "data-testid": submitTestid, text: submitText });
    const form = el("form", { class: "schema-form", "data-testid": testid, novalidate: true, "aria-label": formLabel },
      field.node, el("div", { class: "form-actions" }, submit));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let value;
      try {
        value = field.read();
      } catch (error) {
        if (!(error instanceof Invalid)) throw error;
        const bad = form.querySelector('[aria-invalid="true"]');
        if (bad) bad.focus();
        return;
      }
      submit.disabled = true;
      try {
        await onSubmit(value === undefined ? null : value);
      } catch (error) {
        reportError(error);
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  // ──────────────────────────────── 5. Graph ────────────────────────────────
  const G = { nodeW: 172, nodeH: 50, layerGap: 92, rowGap: 26, dummyH: 10, pad: 30, maxLabel: 19 };
  // A node's text runs from x 14 to a gap before its status badge (a circle of
  // radius 9 centred 20 from the right edge): a clipped "…" must stay visible.
  const NODE_TEXT_X = 14;
  const NODE_TEXT_W = G.nodeW - 20 - 9 - 6 - NODE_TEXT_X;
  // As console.css draws them (.graph .label, .graph .caption; a caption is bold in some states).
  const LABEL_FONT = "600 13px system-ui, sans-serif";
  const CAPTION_FONT = "600 11px system-ui, sans-serif";
  let measurer = null;
  /**
   * The text, cut with "…" to fit width px in font: measured, since a count of
   * characters lets wide ones ("WWW…") run under the badge.
   */
  function fitText(text, font, width) {
    if (!measurer) measurer = document.createElement("canvas").getContext("2d");
    if (!measurer) return clip(text, G.maxLabel);
    measurer.font = font;
    if (measurer.measureText(text).width <= width) return text;
    let low = 0, high = text.length - 1; // the longest prefix that fits with "…"
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (measurer.measureText(`${text.slice(0, mid)}…`).width <= width) low = mid;
      else high = mid - 1;
    }
    return `${text.slice(0, low)}…`;
  }
  const STATE_ICON = {
    waiting: "",
    running: "M-3,-4.5 L4.5,0 L-3,4.5 Z",
    done: "M-4,0.5 L-1.2,3.3 L4,-2.8",
    failed: "M-3.2,-3.2 L3.2,3.2 M3.2,-3.2 L-3.2,3.2",
    unknown: "M-3.5,0 L3.5,0",
  };
  // What a node's caption and label say for a state, where not its name.
  const STATE_WORDS = { unknown: "not seen here" };

  /** Iterative DFS from the start nodes (then everything else): back edges and visit order. */
  function dfsBackEdges(roots, out, edges) {
    const state = new Map();
    const back = new Set();
    const order = [];
    for (const root of roots) {
      if (state.has(root)) continue;
      state.set(root, 1);
      order.push(root);
      const stack = [[root, 0]];
      while (stack.length) {
        const top = stack[stack.length - 1];
        const list = out.get(top[0]);
        if (top[1] >= list.length) {
          state.set(top[0], 2);
          stack.pop();
          continue;
        }
        const edgeIndex = list[top[1]++];
        const next = edges[edgeIndex].target;
        if (state.get(next) === 1) back.add(edgeIndex);
        else if (!state.has(next)) {
          state.set(next, 1);
          order.push(next);
          stack.push([next, 0]);
        }
      }
    }
    return { back, order };
  }

  /** Longest path from the sources over the forward (non-back) edges. */
  function longestPathLayers(order, edges, back) {
    const layer = new Map(order.map((id) => [id, 0]));
    const indegree = new Map(order.map((id) => [id, 0]));
    const forward = new Map(order.map((id) => [id, []]));
    edges.forEach((e, i) => {
      if (back.has(i)) return;
      forward.get(e.source).push(e.target);
      indegree.set(e.target, indegree.get(e.target) + 1);
    });
    const queue = order.filter((id) => indegree.get(id) === 0);
    for (let head = 0; head < queue.length; head++) {
      const v = queue[head];
      for (const w of forward.get(v)) {
        layer.set(w, Math.max(layer.get(w), layer.get(v) + 1));
        indegree.set(w, indegree.get(w) - 1);
        if (indegree.get(w) === 0) queue.push(w);
      }
    }
    return layer;
  }

  /** Layers of items (nodes, plus dummies where an edge spans several layers). */
  function buildLayers(order, edges, back, layer) {
    const rank = new Map(order.map((id, i) => [id, i]));
    const items = new Map();
    const add = (key, L, dummy, r) => {
      const item = { key, layer: L, dummy, rank: r, preds: [], succs: [] };
      items.set(key, item);
      return item;
    };
    const link = (a, b) => {
      a.succs.push(b);
      b.preds.push(a);
    };
    order.forEach((id) => add(id, layer.get(id), false, rank.get(id)));
    const chains = new Map();
    edges.forEach((e, i) => {
      if (back.has(i)) return;
      const chain = [];
      let previous = items.get(e.source);
      for (let L = layer.get(e.source) + 1; L < layer.get(e.target); L++) {
        const dummy = add(`\u0000${i}:${L}`, L, true, rank.get(e.source) + 0.5);
        link(previous, dummy);
        chain.push(dummy);
        previous = dummy;
      }
      link(previous, items.get(e.target));
      chains.set(i, chain);
    });
    let count = 0;
    for (const item of items.values()) count = Math.max(count, item.layer + 1);
    const layers = Array.from({ length: count }, () => []);
    for (const item of items.values()) layers[item.layer].push(item);
    for (const row of layers) row.sort((a, b) => a.rank - b.rank);
    return { layers, items, chains };
  }

  /** Barycenter sweeps, down then up, twice. */
  function orderLayers(layers) {
    const number = (row) => row.forEach((item, i) => { item.pos = i; });
    layers.forEach(number);
    for (let sweep = 0; sweep < 4; sweep++) {
      const down = sweep % 2 === 0;
      const sequence = down ? layers.slice(1) : layers.slice(0, -1).reverse();
      for (const row of sequence) {
        for (const item of row) {
          const near = down ? item.preds : item.succs;
          item.bary = near.length ? near.reduce((sum, n) => sum + n.pos, 0) / near.length : item.pos;
        }
        row.sort((a, b) => a.bary - b.bary || a.pos - b.pos);
        number(row);
      }
    }
  }

  function forwardRoute(s, t, chain) {
    const points = [[s.x + s.w, s.y + s.h / 2]];
    for (const d of chain) points.push([d.x, d.y + d.h / 2], [d.x + G.nodeW, d.y + d.h / 2]);
    points.push([t.x, t.y + t.h / 2]);
    let d = `M${points[0][0]},${points[0][1]}`;
    for (let i = 1; i < points.length; i++) {
      const [x0, y0] = points[i - 1];
      const [x1, y1] = points[i];
      const dx = (x1 - x0) / 2;
      d += i % 2 ? ` C${x0 + dx},${y0} ${x1 - dx},${y1} ${x1},${y1}` : ` L${x1},${y1}`;
    }
    const mid = chain.length ? chain[Math.floor((chain.length - 1) / 2)] : null;
    const label = mid ? [mid.x + G.nodeW / 2, mid.y + mid.h / 2]
      : [(points[0][0] + points[1][0]) / 2, (points[0][1] + points[1][1]) / 2];
    return { d, label };
  }
  function backRoute(s, t, low) {
    const sx = s.x + s.w / 2 + 12, sy = s.y + s.h, tx = t.x + t.w / 2 - 12, ty = t.y + t.h;
    return { d: `M${sx},${sy} C${sx},${low} ${tx},${low} ${tx},${ty}`, label: [(sx + tx) / 2, (sy + ty + 6 * low) / 8], back: true };
  }
  function selfLoop(b) {
    const x0 = b.x + b.w - 40, x1 = b.x + b.w;
    return { d: `M${x0},${b.y} C${x0},${b.y - 38} ${x1 + 34},${b.y - 6} ${x1},${b.y + 14}`, label: [x1 + 8, b.y - 26], back: true };
  }

  function layoutGraph(graph) {
    const seen = new Set();
    const nodes = (Array.isArray(graph && graph.nodes) ? graph.nodes : []).filter((n) => {
      const fresh = n && !seen.has(String(n.id));
      if (fresh) seen.add(String(n.id));
      return fresh;
    });
    const ids = nodes.map((n) => String(n.id));
    const known = new Set(ids);
    const edges = (Array.isArray(graph && graph.edges) ? graph.edges : [])
      .map((e) => ({ ...e, source: String(e.source), target: String(e.target) }))
      .filter((e) => known.has(e.source) && known.has(e.target));
    const out = new Map(ids.map((id) => [id, []]));
    edges.forEach((e, i) => out.get(e.source).push(i));
    const roots = [...nodes.filter((n) => n.start).map((n) => String(n.id)), ...ids];
    const { back, order } = dfsBackEdges(roots, out, edges);
    const built = buildLayers(order, edges, back, longestPathLayers(order, edges, back));
    orderLayers(built.layers);
    const bottoms = built.layers.map((row, L) => {
      const heights = row.map((item) => (item.dummy ? G.dummyH : G.nodeH));
      let y = -(heights.reduce((a, h) => a + h, 0) + G.rowGap * Math.max(0, row.length - 1)) / 2;
      row.forEach((item, i) => {
        Object.assign(item, { x: L * (G.nodeW + G.layerGap), y, h: heights[i] });
        y += heights[i] + G.rowGap;
      });
      return y - G.rowGap;
    });
    const boxes = new Map(ids.map((id) => {
      const item = built.items.get(id);
      return [id, { x: item.x, y: item.y, w: G.nodeW, h: G.nodeH, layer: item.layer }];
    }));
    let backCount = 0;
    const routes = edges.map((e, i) => {
      const s = boxes.get(e.source), t = boxes.get(e.target);
      if (e.source === e.target) return { edge: e, ...selfLoop(s) };
      if (!back.has(i)) return { edge: e, ...forwardRoute(s, t, built.chains.get(i)) };
      const span = bottoms.slice(Math.min(s.layer, t.layer), Math.max(s.layer, t.layer) + 1);
      return { edge: e, ...backRoute(s, t, Math.max(...span) + 44 + 16 * backCount++) };
    });
    let x0 = 0, y0 = 0, x1 = 0, y1 = 0;
    for (const b of boxes.values()) {
      x0 = Math.min(x0, b.x); y0 = Math.min(y0, b.y - 18);
      x1 = Math.max(x1, b.x + b.w + 36); y1 = Math.max(y1, b.y + b.h);
    }
    for (const r of routes) { y0 = Math.min(y0, r.label[1] - 16); y1 = Math.max(y1, r.label[1] + 16); }
    const bounds = { x: x0 - G.pad, y: y0 - G.pad, w: x1 - x0 + 2 * G.pad, h: y1 - y0 + 2 * G.pad };
    return { nodes, boxes, routes, bounds };
  }

  function nodeCaption(kind, state) {
    const words = [];
    if (kind === "subworkflow") words.push("sub-workflow");
    if (kind === "map") words.push("map");
    if (state !== "waiting") words.push(STATE_WORDS[state] || state);
    return words.join(" · ");
  }

  function drawNode(node, box) {
    const id = String(node.id);
    const kind = node.kind || "executor";
    const label = String(node.label || id);
    const g = svg("g", {
      class: `node kind-${kind.replace(/[^a-z]/g, "")}${node.start ? " start" : ""}`, transform: `translate(${box.x},${box.y})`,
      "data-testid": "graph-node", "data-id": id, "data-state": "waiting", role: "img",
    });
    const title = svg("title");
    g.append(title);
    if (kind === "map") {
      g.append(svg("rect", { class: "stack", x: 8, y: -8, width: G.nodeW, height: G.nodeH, rx: 9 }),
        svg("rect", { class: "stack", x: 4, y: -4, width: G.nodeW, height: G.nodeH, rx: 9 }));
    }
    g.append(svg("rect", { class: "box", width: G.nodeW, height: G.nodeH, rx: 9 }));
    if (kind === "subworkflow") g.append(svg("rect", { class: "inner", x: 4, y: 4, width: G.nodeW - 8, height: G.nodeH - 8, rx: 6 }));
    if (node.start) {
      const m = G.nodeH / 2;
      g.append(svg("path", { class: "start-mark", d: `M-9,${m - 8} L2,${m} L-9,${m + 8} Z` }), svg("text", { class: "start-tag", x: 2, y: -6, text: "start" }));
    }
    const caption = svg("text", { class: "caption", x: NODE_TEXT_X, y: 38 });
    g.append(svg("text", { class: "label", x: NODE_TEXT_X, y: 22, text: fitText(label, LABEL_FONT, NODE_TEXT_W) }), caption);
    const icon = svg("path", { class: "icon", d: "" });
    g.append(svg("g", { class: "badge", transform: `translate(${G.nodeW - 20},${G.nodeH / 2})` }, svg("circle", { r: 9 }), icon));
    const describe = (state) => {
      const extras = [node.start ? "start" : "", kind !== "executor" ? kind : ""].filter(Boolean).join(", ");
      const words = STATE_WORDS[state] || state;
      g.setAttribute("aria-label", `${id}: ${words}${extras ? ` (${extras})` : ""}`);
      title.textContent = `${id}${label !== id ? ` (${label})` : ""} · ${kind}${node.start ? " · start" : ""} · ${words}`;
      caption.textContent = fitText(nodeCaption(kind, state), CAPTION_FONT, NODE_TEXT_W);
      icon.setAttribute("d", STATE_ICON[state] || "");
      g.setAttribute("data-state", state);
    };
    describe("waiting");
    return { g, describe };
  }

  function drawEdges(routes, markerId) {
    const paths = svg("g", { class: "edges" });
    const labels = svg("g", { class: "edge-labels" });
    for (const r of routes) {
      const style = ["solid", "dotted", "thick"].includes(r.edge.style) ? r.edge.style : "solid";
      paths.append(svg("path", { class: `edge edge-${style}${r.back ? " edge-back" : ""}`, d: r.d, "marker-end": `url(#${markerId})` },
        svg("title", { text: `${r.edge.source} → ${r.edge.target}${r.edge.label ? `: ${r.edge.label}` : ""}` })));
      if (r.edge.label) {
        labels.append(svg("text", { class: "edge-label", x: r.label[0], y: r.label[1] + 4, "text-anchor": "middle" },
          clip(String(r.edge.label), 26), svg("title", { text: String(r.edge.label) })));
      }
    }
    return [paths, labels];
  }

  /** Pan (drag, arrows), zoom (wheel, +/−), fit (0, on load, on resize until the user moves). */
  function panZoom(root, viewport, bounds, wheelNeedsModifier) {
    let k = 1, tx = 0, ty = 0, touched = false, drag = null;
    const apply = () => viewport.setAttribute("transform", `translate(${tx.toFixed(1)},${ty.toFixed(1)}) scale(${k.toFixed(4)})`);
    const size = () => root.getBoundingClientRect();
    function fit() {
      const { width, height } = size();
      if (!width || !height) return;
      k = clamp(Math.min((width - 16) / bounds.w, (height - 16) / bounds.h), 0.04, 1.4);
      tx = (width - bounds.w * k) / 2 - bounds.x * k;
      ty = (height - bounds.h * k) / 2 - bounds.y * k;
      touched = false;
      apply();
    }
    function zoomAt(factor, cx, cy) {
      const next = clamp(k * factor, 0.04, 4);
      tx = cx - (cx - tx) * (next / k);
      ty = cy - (cy - ty) * (next / k);
      k = next;
      touched = true;
      apply();
    }
    const zoomCenter = (factor) => {
      const { width, height } = size();
      zoomAt(factor, width / 2, height / 2);
    };
    function panBy(dx, dy) {
      tx += dx;
      ty += dy;
      touched = true;
      apply();
    }
    root.addEventListener("wheel", (event) => {
      if (wheelNeedsModifier && !(event.ctrlKey || event.metaKey)) return;
      event.preventDefault();
      const r = size();
      const step = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
      zoomAt(Math.exp(-clamp(step, -200, 200) * 0.0015), event.clientX - r.left, event.clientY - r.top);
    }, { passive: false });
    root.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      drag = { id: event.pointerId, x: event.clientX, y: event.clientY };
      root.setPointerCapture(event.pointerId);
      root.classList.add("dragging");
    });
    root.addEventListener("pointermove", (event) => {
      if (!drag || drag.id !== event.pointerId) return;
      panBy(event.clientX - drag.x, event.clientY - drag.y);
      drag.x = event.clientX;
      drag.y = event.clientY;
    });
    const endDrag = () => {
      drag = null;
      root.classList.remove("dragging");
    };
    root.addEventListener("pointerup", endDrag);
    root.addEventListener("pointercancel", endDrag);
    const keys = {
      "+": () => zoomCenter(1.25), "=": () => zoomCenter(1.25), "-": () => zoomCenter(0.8), _: () => zoomCenter(0.8), 0: fit,
      ArrowLeft: () => panBy(48, 0), ArrowRight: () => panBy(-48, 0), ArrowUp: () => panBy(0, 48), ArrowDown: () => panBy(0, -48),
    };
    root.addEventListener("keydown", (event) => {
      const action = keys[event.key];
      if (!action || event.altKey || event.ctrlKey || event.metaKey) return;
      event.preventDefault();
      action();
    });
    const observer = new ResizeObserver(() => { if (!touched) fit(); });
    observer.observe(root);
    return { fit, zoomIn: () => zoomCenter(1.25), zoomOut: () => zoomCenter(0.8), destroy: () => observer.disconnect() };
  }

  let graphSeq = 0;
  /** The workflow graph as SVG: { element, ids, setState(id, state), destroy() }. */
  function drawGraph(graph, { large = false, name = "workflow" } = {}) {
    const layout = layoutGraph(graph);
    if (!layout.nodes.length) return { element: el("p", { class: "muted", text: "This workflow has no executors to draw." }), ids: [], setState() {}, destroy() {} };
    const markerId = `sg-arrow-${++graphSeq}`;
    const defs = svg("defs", {}, svg("marker", {
      id: markerId, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9,
      markerUnits: "userSpaceOnUse", orient: "auto-start-reverse",
    }, svg("path", { class: "arrowhead", d: "M0,0 L10,5 L0,10 Z" })));
    const nodes = new Map();
    const nodeLayer = svg("g", { class: "nodes" });
    for (const node of layout.nodes) {
      const drawn = drawNode(node, layout.boxes.get(String(node.id)));
      nodes.set(String(node.id), drawn);
      nodeLayer.append(drawn.g);
    }
    const [edgeLayer, labelLayer] = drawEdges(layout.routes, markerId);
    const viewport = svg("g", { class: "viewport" }, edgeLayer, nodeLayer, labelLayer);
    const helpId = nextId("graph-help");
    const root = svg("svg", {
      class: `graph ${large ? "graph-large" : "graph-small"}`, "data-testid": "graph", tabindex: 0, role: "group",
      "aria-label": `Graph of ${name}: ${layout.nodes.length} executors, ${layout.routes.length} edges`, "aria-describedby": helpId,
    }, defs, viewport);
    const view = panZoom(root, viewport, layout.bounds, !large);
    const tool = (symbol, text, action) => el("button", { type: "button", class: "tool", title: text, onclick: action },
      el("span", { "aria-hidden": "true", text: symbol }), hiddenText(text));
    const help = large ? "Drag or use the arrow keys to pan; wheel, + and − to zoom; 0 to fit."
      : "Drag or use the arrow keys to pan; Ctrl + wheel, + and − to zoom; 0 to fit.";
    const element = el("div", { class: `graph-wrap${large ? " large" : ""}` }, root,
      el("div", { class: "graph-tools", role: "group", "aria-label": "Graph view" },
        tool("+", "Zoom in", view.zoomIn), tool("−", "Zoom out", view.zoomOut), tool("⤢", "Fit to view", view.fit)),
      el("p", { id: helpId, class: "graph-help", text: help }));
    const setState = (id, state) => {
      const node = nodes.get(id);
      if (node && node.g.getAttribute("data-state") !== state) node.describe(state);
    };
    return { element, ids: [...nodes.keys()], setState, destroy: view.destroy };
  }

  // ───────────────────────────────── 6. SSE ─────────────────────────────────
  /** The text/event-stream format: id/event/data fields, ":" comments, CRLF/LF/CR lines. */
  class SseParser {
    constructor(onMessage) {
      this.onMessage = onMessage;
      this.buffer = "";
      this.data = [];
      this.type = "";
      this.lastId = null;
    }
    push(chunk) {
      let text = this.buffer + chunk;
      let hold = "";
      if (text.endsWith("\r")) { // a CRLF may be split across chunks
        text = text.slice(0, -1);
        hold = "\r";
      }
      const lines = text.split(/\r\n|\r|\n/);
      this.buffer = lines.pop() + hold;
      for (const line of lines) this.line(line);
    }
    line(line) {
      if (line === "") return this.dispatch();
      if (line.startsWith(":")) return undefined;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.type = value;
      else if (field === "id" && !value.includes("\0")) this.lastId = value;
      return undefined;
    }
    dispatch() {
      if (this.data.length) this.onMessage({ type: this.type || "message", data: this.data.join("\n"), id: this.lastId });
      this.data = [];
      this.type = "";
    }
  }

  /**
   * Streams /api/runs/ID/events until the "end" event; reconnects after a drop
   * (1 s, then backing off to 10 s) with Last-Event-ID = lastId().
   * handlers: { lastId(), onEvent(json, sseId), onEnd(json), onState(text) }.
   */
  function openRunStream(runId, handlers) {
    const controller = new AbortController();
    let stopped = false;
    let failures = 0;
    let timer = 0;
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
      controller.abort();
    };
    async function connect() {
      const headers = authHeaders({ Accept: "text/event-stream" });
      const last = handlers.lastId();
      if (last > 0) headers["Last-Event-ID"] = String(last);
      let ended = false;
      try {
        const response = await fetch(`/api/runs/${enc(runId)}/events`, { headers, signal: controller.signal, credentials: "omit", cache: "no-store" });
        if (response.status === 401 || (response.status >= 400 && response.status < 500)) {
          const data = await readJson(response);
          const message = data && typeof data.error === "string" ? data.error : `The event stream answered ${response.status}.`;
          if (response.status === 401) showAuthPrompt(message);
          else showError(message);
          stopped = true;
          handlers.onState("stopped");
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        handlers.onState("live");
        const parser = new SseParser((message) => {
          if (ended) return;
          if (message.type === "end") {
            ended = true;
            handlers.onEnd(parseJson(message.data) || {});
          } else if (message.type === "message") {
            const event = parseJson(message.data);
            if (event && typeof event === "object") {
              failures = 0;
              handlers.onEvent(event, message.id);
            }
          }
        });
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let busySince = performance.now();
        while (!ended) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.push(decoder.decode(value, { stream: true }));
          // A long run's log (hundreds of thousands of events) is read back far
          // faster than it is handled: reads that are ready resolve at once, so
          // without a break here the page would not paint or answer until the
          // whole backlog is in. Let it paint between slices.
          if (performance.now() - busySince > SSE_SLICE_MS) {
            await new Promise((resolve) => setTimeout(resolve, 0));
            busySince = performance.now();
          }
        }
        if (ended) {
          stopped = true;
          reader.cancel().catch(() => {});
          return;
        }
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      if (stopped) return;
      failures += 1;
      handlers.onState("reconnecting");
      timer = setTimeout(connect, Math.min(1000 * 2 ** (failures - 1), 10000));
    }
    connect();
    return { stop };
  }

  // ──────────────────────────────── 7. Pages ────────────────────────────────
  function pageHeading(text) { return el("h1", { tabindex: -1, text }); }

  function startForm(workflow) {
    return schemaForm({
      schema: workflow.input_schema, label: "Input", testid: "start-form", submitText: "Start a run",
      submitTestid: "start-submit", formLabel: `Start a run of ${workflow.name}`,
      async onSubmit(value) {
        const result = await api("POST", `/api/workflows/${enc(workflow.name)}/runs`, { input: value });
        announce(`Started run ${result.run_id}.`);
        location.hash = `#/runs/${enc(result.run_id)}`;
      },
    });
  }

  function workflowCard(workflow, scope) {
    const graph = drawGraph(workflow.graph, { name: workflow.name });
    scope.defer(graph.destroy);
    const id = nextId("wf");
    return el("article", { class: "card workflow-card", "data-testid": "workflow-card", "data-name": workflow.name, "aria-labelledby": id },
      el("h2", { id }, el("a", { href: `#/workflows/${enc(workflow.name)}`, text: workflow.name })),
      workflow.description ? el("p", { class: "description", text: workflow.description }) : null,
      graph.element,
      el("div", { class: "start" }, el("h3", { text: "Start a run" }), startForm(workflow)));
  }

  function pageWorkflows(main, route, scope) {
    document.title = "Workflows · stepgraph";
    const list = el("div", { class: "cards", "aria-busy": "true" }, el("p", { class: "muted", text: "Loading workflows…" }));
    main.append(pageHeading("Workflows"), list);
    loadWorkflows().then((workflows) => {
      if (!scope.alive) return;
      list.replaceChildren(...workflows.map((wf) => workflowCard(wf, scope)));
      if (!workflows.length) list.append(el("p", { class: "muted", text: "This server serves no workflows." }));
      list.removeAttribute("aria-busy");
    }).catch((error) => {
      if (!scope.alive) return;
      list.replaceChildren(el("p", { class: "muted", text: "The workflows could not be loaded." }));
      reportError(error);
    });
  }

  function pageWorkflow(main, { name }, scope) {
    document.title = `${name} · stepgraph`;
    const body = el("div", { class: "workflow-page" }, el("p", { class: "muted", text: "Loading…" }));
    main.append(el("p", { class: "crumbs" }, el("a", { href: "#/workflows", text: "Workflows" }), " / "), pageHeading(name), body);
    loadWorkflows().then((workflows) => {
      if (!scope.alive) return;
      const wf = workflows.find((w) => w.name === name);
      if (!wf) {
        body.replaceChildren(el("p", { text: "There is no such workflow on this server." }));
        showError(`Unknown workflow: ${name}`);
        return;
      }
      const graph = drawGraph(wf.graph, { large: true, name: wf.name });
      scope.defer(graph.destroy);
      body.replaceChildren(
        wf.description ? el("p", { class: "description", text: wf.description }) : "",
        panel("Graph", graph.element),
        el("div", { class: "card", "data-testid": "workflow-card", "data-name": wf.name },
          el("h2", { text: "Start a run" }), startForm(wf)),
        el("p", {}, el("a", { href: `#/runs?workflow=${enc(wf.name)}`, text: `Runs of ${wf.name}` })));
    }).catch((error) => { if (scope.alive) reportError(error); });
  }

  // ── #/runs ──
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

  function pageRuns(main, route, scope) {
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
      el("p", { class: "muted small", text: "This list refreshes every 3 seconds while the tab is visible." }),
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

  // ── #/runs/ID: panels ──
  function runHeader(runId, actions) {
    const status = statusBadge("loading", { "data-testid": "run-status" });
    const tags = el("span", { class: "tags" });
    const stream = el("span", { class: "stream-state" });
    const workflow = el("a", { href: "#/workflows", text: "…" });
    const facts = el("dl", { class: "facts" });
    const error = el("p", { class: "run-error", hidden: true });
    const cancel = button("Cancel run", { class: "danger", "data-testid": "cancel-button", hidden: true, onclick: actions.onCancel });
    const resume = button("Resume run", { class: "primary", "data-testid": "resume-button", hidden: true, onclick: actions.onResume });
    const node = el("header", { class: "run-head" },
      el("p", { class: "crumbs" }, el("a", { href: "#/runs", text: "Runs" }), " / "),
      el("h1", { tabindex: -1 }, "Run ", el("code", { "data-testid": "run-id", text: runId })),
      el("p", { class: "run-line", "aria-live": "polite" }, "Status: ", status, tags, stream),
      el("p", {}, "Workflow: ", workflow), facts, error, el("div", { class: "actions" }, cancel, resume));
    const fact = (term, value) => [el("dt", { text: term }), el("dd", {}, value)];
    // What the status line and the buttons show, from the latest details and events.
    const state = { status: "loading", live: false, interrupted: false };
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
      resume.hidden = state.live || !(state.interrupted || state.status === "cancelled" || state.status === "failed");
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
      setError(message) {
        error.hidden = !message;
        error.textContent = message ? `Error: ${message}` : "";
      },
      update(d) {
        Object.assign(state, { status: d.status, live: Boolean(d.live), interrupted: Boolean(d.interrupted) });
        show();
        workflow.textContent = d.workflow;
        workflow.href = `#/workflows/${enc(d.workflow)}`;
        facts.replaceChildren(...fact("Started", timeEl(d.started_at)), ...fact("Updated", timeEl(d.updated_at)),
          // (a failure's superstep counts, though no checkpoint of it was made)
          ...fact("Supersteps", String(Math.max(d.supersteps ?? 0, d.failure ? d.failure.superstep : 0))), ...fact("Pending requests", String((d.pending_requests || []).length)),
          ...fact("Checkpoints", String(d.checkpoints_total ?? (d.checkpoints || []).length)));
        this.setError(d.error);
      },
    };
  }

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

  function requestCard(req, send) {
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
    card.append(...(isApproval ? toolApproval(req.request, submit) : genericAnswer(req, submit)), status);
    return card;
  }

  function requestsPanel(send) {
    const node = el("div", { class: "requests", "data-testid": "pending-requests" });
    const empty = el("p", { class: "muted", text: "No pending requests." });
    node.append(empty);
    const cards = new Map();
    return {
      node,
      sync(pending) {
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
          const card = requestCard(req, send);
          cards.set(req.request_id, card);
          node.append(card);
          added += 1;
        }
        empty.hidden = cards.size > 0;
        if (added) announce(`${added === 1 ? "A request is" : `${added} requests are`} waiting for an answer.`);
      },
    };
  }

  /**
   * The run's outputs exactly as the server lists them (GET /api/runs/ID: along
   * the branch of its latest checkpoint, with what a run going on there yielded
   * since), so a replay shows its own branch's only; "output" events just ask
   * for the details again.
   */
  /** The run's outputs, numbered: the newest OUTPUTS_WINDOW of them, older ones on asking. */
  function outputsPanel() {
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
  function agentPanel() {
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
  function logPanel() {
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

  /** Calls (one per handler invocation), node states and superstep spans, from events. */
  function newRunModel() {
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
  const callKey = (ev) => `${pathOf(ev)}\u0000${ev.superstep}`;
  function modelInvoked(m, ev) {
    const call = { path: pathOf(ev), executor: ev.executor_id, step: ev.superstep, start: ev.time, end: null, failed: false };
    addCall(m, call);
    if (!m.open.has(callKey(ev))) m.open.set(callKey(ev), []);
    m.open.get(callKey(ev)).push(call);
    if (isTopLevel(ev)) {
      m.running.set(ev.executor_id, (m.running.get(ev.executor_id) || 0) + 1);
      m.nodeState.set(ev.executor_id, "running");
    }
  }
  function modelFinished(m, ev, failed) {
    const queue = m.open.get(callKey(ev));
    let call = queue && queue.shift();
    if (queue && !queue.length) m.open.delete(callKey(ev)); // (one key per call otherwise, for ever)
    if (!call) {
      call = { path: pathOf(ev), executor: ev.executor_id, step: ev.superstep, start: ev.time, end: null, failed: false };
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
  function modelStoredFailure(m, failure, time) {
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
  const drawnState = (m, id) => m.nodeState.get(id) || (m.unseen ? "unknown" : "waiting");
  /** The stream ended: whatever still runs is not running any more. */
  function modelStopped(m) {
    for (const queue of m.open.values()) for (const call of queue.splice(0)) call.end = Math.max(call.start, m.lastTime);
    for (const [id, n] of m.running) {
      if (n > 0 && m.nodeState.get(id) === "running") m.nodeState.set(id, "waiting");
      m.running.set(id, 0);
    }
  }

  function timelinePanel(model) {
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
      const label = `${c.path}, superstep ${c.step}: ${took}${c.failed ? ", failed" : ""}`;
      const node = el("div", {
        class: `tl-bar${c.failed ? " failed" : ""}${c.end == null ? " running" : ""}`, "data-testid": "timeline-bar",
        "data-executor": c.executor, "data-superstep": c.step, role: "img", "aria-label": label, title: label,
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

  function checkpointsPanel(actions) {
    const tbody = el("tbody");
    const table = el("table", { class: "checkpoints-table stack-table", hidden: true },
      el("caption", { class: "visually-hidden", text: "Checkpoints" }),
      el("thead", {}, el("tr", {}, ["Superstep", "Created", "Status", "Checkpoint", "Parent", "Actions"].map((h) => el("th", { scope: "col", text: h })))),
      tbody);
    const empty = el("p", { class: "muted", text: "No checkpoints yet." });
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
      el("td", { class: "row-actions wide" },
        // (from an idle checkpoint, or one waiting for answers, nothing would run: the server refuses)
        NOTHING_TO_RESUME.has(cp.status) ? null
          : el("button", { type: "button", class: "secondary", "data-testid": "resume-button", "data-action": "resume",
            disabled: running, title: running ? RESUME_WHILE_RUNNING : null, onclick: act(actions.onResume, cp) },
          "Resume from here", hiddenText(` (superstep ${cp.superstep})`)),
        el("button", { type: "button", class: "secondary", "data-testid": "fork-button", "data-action": "fork", onclick: act(actions.onFork, cp) },
          "Fork from here", hiddenText(` (superstep ${cp.superstep})`))));
    return {
      node: el("div", { "data-testid": "checkpoints" }, empty, older, el("div", { class: "table-scroll" }, table)),
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
      sync(list, total) {
        // The details hold the newest checkpoints only (100 unless more were asked for).
        const hidden = Math.max(0, (Number.isFinite(total) ? total : list.length) - list.length);
        older.hidden = hidden === 0;
        if (hidden) {
          olderText.textContent = `${hidden} older checkpoint${hidden === 1 ? "" : "s"} not shown.`;
          olderButton.textContent = list.length + hidden <= CHECKPOINTS_MAX ? "Show all" : `Show the newest ${CHECKPOINTS_MAX}`;
          olderButton.hidden = list.length >= CHECKPOINTS_MAX;
        }
        const next = list.map((cp) => `${cp.checkpoint_id}:${cp.status}`).join("|");
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

  // ── #/runs/ID: the controller ──
  function pageRun(main, { runId }, scope) {
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
    let unreachable = null; // the banner's message while the details cannot be had
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
    const outputs = outputsPanel();
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
        if (error.status === 0 || error.status >= 500) {
          // The server (or its store) is down, or restarting: ask until it answers.
          unreachable = error.message;
          detailsFailures += 1;
          scheduleDetails(Math.min(1000 * 2 ** (detailsFailures - 1), 5000));
        }
      } finally {
        detailsBusy = false;
        if (detailsAgain && scope.alive) {
          detailsAgain = false;
          refreshDetails();
        }
      }
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
      outputs.sync(Array.isArray(details.outputs) ? details.outputs : []);
      requests.sync(Array.isArray(details.pending_requests) ? details.pending_requests : []);
      checkpoints.sync(Array.isArray(details.checkpoints) ? details.checkpoints : [], details.checkpoints_total);
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
      stream = openRunStream(runId, { lastId: () => model.lastId, onEvent, onEnd, onState });
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
        throw error;
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
        reportError(error);
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
        reportError(error);
      }
    }
    async function fork(checkpointId) {
      try {
        const result = await api("POST", `/api/runs/${enc(runId)}/fork`, { checkpoint_id: checkpointId });
        location.hash = `#/runs/${enc(result.run_id)}`;
      } catch (error) {
        reportError(error);
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

  function pageNotFound(main) {
    document.title = "Not found · stepgraph";
    main.append(pageHeading("Page not found"), el("p", {}, "Go to ", el("a", { href: "#/workflows", text: "the workflows" }), "."));
  }

  // ──────────────────────────── 8. Router and boot ────────────────────────────
  const PAGES = { workflows: pageWorkflows, workflow: pageWorkflow, runs: pageRuns, run: pageRun, notfound: pageNotFound };

  function parseRoute() {
    const raw = location.hash.replace(/^#/, "");
    const [path, search = ""] = raw.split("?");
    const query = new URLSearchParams(search);
    const parts = path.split("/").filter(Boolean).map((p) => { try { return decodeURIComponent(p); } catch { return p; } });
    if (!raw.startsWith("/") || !parts.length) return { page: "workflows", query };
    if (parts[0] === "workflows" && parts.length === 1) return { page: "workflows", query };
    if (parts[0] === "workflows" && parts.length === 2) return { page: "workflow", name: parts[1], query };
    if (parts[0] === "runs" && parts.length === 1) return { page: "runs", query };
    if (parts[0] === "runs" && parts.length === 2) return { page: "run", runId: parts[1], query };
    return { page: "notfound", query };
  }

  function newScope() {
    const cleanups = [];
    return {
      alive: true,
      defer(fn) { cleanups.push(fn); },
      close() {
        this.alive = false;
        for (const fn of cleanups.splice(0).reverse()) { try { fn(); } catch (error) { console.error(error); } }
      },
    };
  }

  let currentScope = null;
  let firstRender = true;
  function render() {
    if (currentScope) currentScope.close();
    const scope = newScope();
    currentScope = scope;
    clearError();
    delete document.body.dataset.streaming;
    const route = parseRoute();
    const section = route.page === "run" || route.page === "runs" ? "runs" : "workflows";
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    ui.main.replaceChildren();
    PAGES[route.page](ui.main, route, scope);
    if (!firstRender) {
      const heading = ui.main.querySelector("h1");
      if (heading) heading.focus({ preventScroll: false });
    }
    firstRender = false;
  }

  function boot() {
    const $ = (id) => document.getElementById(id);
    ui = {
      main: $("main"), banner: $("error-banner"), bannerText: $("error-text"), announcer: $("announcer"),
      auth: $("auth"), authMessage: $("auth-message"), authInput: $("auth-token"), authForm: $("auth-form"),
    };
    takeTokenFromHash();
    $("error-dismiss").addEventListener("click", clearError);
    $("skip-link").addEventListener("click", (event) => {
      event.preventDefault();
      ui.main.focus();
      ui.main.scrollIntoView();
    });
    ui.authForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = ui.authInput.value.trim();
      if (!value) {
        ui.authInput.focus();
        return;
      }
      saveToken(value);
      ui.authInput.value = "";
      ui.auth.hidden = true;
      clearError();
      workflowsCache = null;
      render();
    });
    window.addEventListener("hashchange", () => {
      takeTokenFromHash();
      render();
    });
    render();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
