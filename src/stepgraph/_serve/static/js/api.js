/**
 * The API client: the token from "#token=…" (kept in sessionStorage), a
 * fetch() wrapper that adds "Authorization: Bearer" and turns a refusal into
 * an ApiError, the 401 prompt, and the served workflows (asked for once).
 */

import { parseJson } from "./json-numbers.js";
import { showError, ui } from "./notices.js";

const TOKEN_KEY = "stepgraph-token";
let token = null;
try { token = sessionStorage.getItem(TOKEN_KEY); } catch { token = null; }

export function saveToken(value) {
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
export function takeTokenFromHash() {
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

export async function readJson(response) {
  const text = await response.text().catch(() => "");
  return text ? parseJson(text) : null;
}

export function authHeaders(extra = {}) { return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra }; }

export async function api(method, path, body) {
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
export async function loadWorkflows() {
  if (!workflowsCache) {
    const list = await api("GET", "/api/workflows");
    workflowsCache = Array.isArray(list) ? list : [];
  }
  return workflowsCache;
}
/** The workflows are asked for again (a new token may see others). */
export function forgetWorkflows() { workflowsCache = null; }

export function showAuthPrompt(serverMessage) {
  ui.authMessage.textContent = token
    ? "The server did not accept the stored access token (401). Paste the current one."
    : "This server needs an access token (401). Paste the token from the address the server printed (the part after #token=).";
  if (serverMessage) ui.authMessage.append(` The server said: ${serverMessage}`);
  showError(`The server needs an access token (401)${serverMessage ? `: ${serverMessage}` : ""}. Paste it in the field below.`);
  const wasHidden = ui.auth.hidden;
  ui.auth.hidden = false;
  if (wasHidden) ui.authInput.focus();
}

export function reportError(error) {
  if (error instanceof ApiError && error.status === 401) return; // the token prompt says it
  if (!(error instanceof ApiError)) console.error(error);
  showError(error && error.message ? error.message : String(error));
}
