/** Values, times and events as the pages show them (text, not HTML). */

import { el } from "./dom.js";

export const COMMON_FIELDS = new Set(["id", "kind", "time", "executor_id", "superstep", "path", "workflow_path", "workflow_items"]);
export const enc = encodeURIComponent;

export const isTopLevel = (ev) => !Array.isArray(ev.workflow_path) || ev.workflow_path.length === 0;
export const pathOf = (ev) => ev.path || ev.executor_id || "";

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** An event id as the log shows it: ids are 16-digit numbers one apart, so their last digits. */
export function shortId(id) {
  const text = String(id ?? "");
  return text.length > 8 ? `…${text.slice(-6)}` : text;
}
function fmtDate(t) { return typeof t === "number" ? new Date(t * 1000).toLocaleString() : "—"; }
export function fmtClock(t) {
  if (typeof t !== "number") return "";
  const d = new Date(t * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
export function fmtMs(seconds) {
  const ms = seconds * 1000;
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${Math.round(ms)} ms`;
}
export function timeEl(t) {
  if (typeof t !== "number") return el("span", { text: "—" });
  return el("time", { datetime: new Date(t * 1000).toISOString(), text: fmtDate(t) });
}
export function toJson(value, indent = 2) { try { return JSON.stringify(value, null, indent) ?? "null"; } catch { return String(value); } }
export const asText = (value) => (typeof value === "string" ? value : toJson(value));
export const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
