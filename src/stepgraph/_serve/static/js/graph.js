/**
 * The workflow graph drawn as SVG, with pan/zoom, keyboard control and a
 * state per executor (waiting / running / done / failed / not seen here).
 */

import { clamp, el, hiddenText, nextId, svg } from "./dom.js";
import { clip } from "./format.js";
import { G, layoutGraph } from "./graph-layout.js";

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
export function drawGraph(graph, { large = false, name = "workflow" } = {}) {
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
