/**
 * Building the page: el()/svg() DOM builders (user text only ever goes in
 * through textContent, text nodes or attributes, never as HTML) and the small
 * widgets every page uses.
 */

const SVG_NS = "http://www.w3.org/2000/svg";

let idSeq = 0;
export const nextId = (prefix) => `${prefix}-${++idSeq}`;

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
export const el = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
export const svg = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);
export const hiddenText = (text) => el("span", { class: "visually-hidden", text });
export const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

export const nearBottom = (box) => box.scrollHeight - box.scrollTop - box.clientHeight < 24;

export function statusBadge(status, attrs = {}) {
  const safe = String(status).replace(/[^a-z_]/g, "");
  return el("span", { class: `status status-${safe}`, ...attrs, text: status });
}
export function setStatusBadge(badge, status) {
  badge.textContent = status;
  badge.className = `status status-${String(status).replace(/[^a-z_]/g, "")}`;
}
export function panel(title, body, extra = {}) {
  const id = nextId("h");
  return el("section", { class: "panel", "aria-labelledby": id, ...extra }, el("h2", { id, text: title }), body);
}
export function button(text, attrs = {}) { return el("button", { type: "button", ...attrs, text }); }
export function labelledSelect(labelText, options) {
  const select = el("select", { id: nextId("sel") });
  for (const [value, text] of options) select.append(new Option(text, value));
  const wrap = el("div", { class: "field inline" }, el("label", { for: select.id, text: labelText }), select);
  return { wrap, select };
}

export function pageHeading(text) { return el("h1", { tabindex: -1, text }); }
