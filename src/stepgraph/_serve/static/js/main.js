/**
 * stepgraph web console: native ES modules, no framework, no build step,
 * nothing fetched from anywhere but the server that serves it. This module
 * routes and boots; the others, one concept each (imports point down):
 *
 *   main.js            hashchange → page; every page gets a scope that is closed
 *                      (timers, streams, observers) when the page changes
 *   workflows.js       #/workflows, #/workflows/NAME
 *   runs.js            #/runs
 *   run-page.js        #/runs/ID: a controller feeding the panels below
 *     run-header.js    status, facts, Cancel / Resume
 *     requests.js      open requests as forms (tool approvals: Approve / Reject / Edit)
 *     outputs.js       outputs, and the text agents stream
 *     event-log.js     the event log (a window of rows)
 *     run-model.js     handler calls and node states, from the events
 *     timeline.js      supersteps × executors
 *     checkpoints.js   Resume / Fork from here
 *   graph.js           the workflow graph as SVG (pan/zoom, states)
 *     graph-layout.js  layered layout (DFS back edges, longest-path layers,
 *                      dummy nodes, barycenter sweeps)
 *   forms.js           JSON schema → labelled fields with inline validation
 *   stream.js          a fetch()-based Server-Sent Events reader (EventSource
 *                      cannot send headers) that reconnects with Last-Event-ID
 *   api.js             the token, a fetch() wrapper adding "Authorization:
 *                      Bearer", the 401 prompt, the served workflows
 *   notices.js         the error banner (role=alert) and a polite announcer
 *   json-numbers.js    JSON numbers exactly (past 2**53 - 1, 1.0 a float)
 *   format.js          values, times and events as text
 *   dom.js             el()/svg() builders: user text only ever goes in via
 *                      textContent / text nodes / attributes
 *
 * Idle cost: there are no intervals. The runs list re-arms a one-shot timeout
 * only while the tab is visible; the run page paints in requestAnimationFrame
 * (paused by browsers in hidden tabs) and otherwise waits on its stream — or,
 * while the run waits for answers or goes on in another process, asks for its
 * details once a second, also only while the tab is visible.
 */

import { forgetWorkflows, saveToken, takeTokenFromHash } from "./api.js";
import { el, pageHeading } from "./dom.js";
import { clearError, ui } from "./notices.js";
import { pageRun } from "./run-page.js";
import { pageRuns } from "./runs.js";
import { pageWorkflow, pageWorkflows } from "./workflows.js";

function pageNotFound(main) {
  document.title = "Not found · stepgraph";
  main.append(pageHeading("Page not found"), el("p", {}, "Go to ", el("a", { href: "#/workflows", text: "the workflows" }), "."));
}

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
  Object.assign(ui, {
    main: $("main"), banner: $("error-banner"), bannerText: $("error-text"), announcer: $("announcer"),
    auth: $("auth"), authMessage: $("auth-message"), authInput: $("auth-token"), authForm: $("auth-form"),
  });
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
    forgetWorkflows();
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
