/**
 * Layered layout of a workflow graph: DFS back edges, longest-path layers,
 * dummy nodes for long edges, barycenter sweeps; edges routed as paths.
 */

export const G = { nodeW: 172, nodeH: 50, layerGap: 92, rowGap: 26, dummyH: 10, pad: 30, maxLabel: 19 };

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

export function layoutGraph(graph) {
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
