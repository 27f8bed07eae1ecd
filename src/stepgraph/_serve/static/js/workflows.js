/** The pages #/workflows and #/workflows/NAME: each workflow's graph and a form to start a run. */

import { api, loadWorkflows, reportError } from "./api.js";
import { el, nextId, pageHeading, panel } from "./dom.js";
import { enc } from "./format.js";
import { schemaForm } from "./forms.js";
import { drawGraph } from "./graph.js";
import { announce, showError } from "./notices.js";

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

export function pageWorkflows(main, route, scope) {
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

export function pageWorkflow(main, { name }, scope) {
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
