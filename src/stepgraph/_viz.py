"""Drawing a workflow: Mermaid and Graphviz DOT.

Node names are generated (``n0``, ``n1``, …) and the executor id is the
label, so ids that differ only by punctuation never collide. Edge kinds look
different:

- plain edge: solid arrow; conditional edge: dotted arrow labelled with the
  condition's name;
- fan-out: solid arrows labelled ``fan-out``; fan-in: thick arrows labelled
  ``fan-in``;
- switch: dotted arrows labelled ``case k: <predicate>`` / ``default``;
- multi-select: dotted arrows labelled ``select``;
- a sub-workflow executor is drawn as a subroutine box (Mermaid ``[[…]]``,
  DOT ``shape=box3d``); a map (``add_map``) is one node labelled ``id[n]`` (DOT:
  a double outline); the start executor is marked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ._core import DirectEdge, FanInEdge, FanOutEdge, MultiSelectEdge, SwitchEdge
from ._maps import MapExecutor
from ._workflow import Workflow

__all__ = ["to_dot", "to_graph", "to_mermaid"]


@dataclass(frozen=True, slots=True)
class _Arrow:
    source: str
    target: str
    label: str
    style: str  # "solid", "dotted", "thick"


def _name(fn: object) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def _arrows(workflow: Workflow) -> Iterator[_Arrow]:
    for edge in workflow.graph.edges:
        if type(edge) is DirectEdge:
            if edge.condition is None:
                yield _Arrow(edge.sources[0], edge.targets[0], "", "solid")
            else:
                yield _Arrow(edge.sources[0], edge.targets[0], _name(edge.condition), "dotted")
        elif type(edge) is FanOutEdge:
            for target in edge.targets:
                yield _Arrow(edge.sources[0], target, "fan-out", "solid")
        elif type(edge) is FanInEdge:
            for source in edge.sources:
                yield _Arrow(source, edge.targets[0], "fan-in", "thick")
        elif type(edge) is SwitchEdge:
            for k, (predicate, target) in enumerate(edge.cases, 1):
                yield _Arrow(edge.sources[0], target, f"case {k}: {_name(predicate)}", "dotted")
            if edge.default is not None:
                yield _Arrow(edge.sources[0], edge.default, "default", "dotted")
        elif type(edge) is MultiSelectEdge:
            for target in edge.targets:
                yield _Arrow(edge.sources[0], target, "select", "dotted")


def _is_subworkflow(workflow: Workflow, executor_id: str) -> bool:
    executor = workflow.executors[executor_id]
    return hasattr(executor, "nested_signature") and not _is_map(workflow, executor_id)


def _is_map(workflow: Workflow, executor_id: str) -> bool:
    return isinstance(workflow.executors[executor_id], MapExecutor)


def _label(workflow: Workflow, executor_id: str) -> str:
    """The executor id; a map's is marked ``[n]``: one worker per message."""
    return executor_id + ("[n]" if _is_map(workflow, executor_id) else "")


def _quote(text: str) -> str:
    # Mermaid reads "#name;" and "#35;" in a label as entity codes: "#" goes
    # first, so an id holding one ("g#35;h") is drawn as it is, not as "g#h".
    return (
        text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


def to_mermaid(workflow: Workflow) -> str:
    """A Mermaid ``flowchart`` of the workflow."""
    names = {eid: f"n{i}" for i, eid in enumerate(workflow.executors)}
    lines = ["flowchart LR"]
    for eid, name in names.items():
        label = _quote(_label(workflow, eid) + (" (start)" if eid == workflow.start.id else ""))
        if _is_subworkflow(workflow, eid):
            lines.append(f'    {name}[["{label}"]]')
        else:
            lines.append(f'    {name}["{label}"]')
    arrow = {"solid": "-->", "dotted": "-.->", "thick": "==>"}
    for a in _arrows(workflow):
        link = arrow[a.style]
        label = f'|"{_quote(a.label)}"|' if a.label else ""
        lines.append(f"    {names[a.source]} {link}{label} {names[a.target]}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(workflow: Workflow) -> str:
    """A Graphviz DOT digraph of the workflow."""
    names = {eid: f"n{i}" for i, eid in enumerate(workflow.executors)}
    lines = [f"digraph {_dot_quote(workflow.name)} {{", "    rankdir=LR;", "    node [shape=box];"]
    for eid, name in names.items():
        attrs = [f"label={_dot_quote(_label(workflow, eid))}"]
        if _is_subworkflow(workflow, eid):
            attrs.append("shape=box3d")
        if _is_map(workflow, eid):
            attrs.append("peripheries=2")  # stacked: many workers
        if eid == workflow.start.id:
            attrs.append("penwidth=2")
        lines.append(f"    {name} [{', '.join(attrs)}];")
    styles = {"solid": "", "dotted": "style=dashed", "thick": "penwidth=3"}
    for a in _arrows(workflow):
        attrs = [
            s for s in (styles[a.style], f"label={_dot_quote(a.label)}" if a.label else "") if s
        ]
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {names[a.source]} -> {names[a.target]}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_graph(workflow: Workflow) -> dict[str, list[dict[str, object]]]:
    """The workflow as JSON-able nodes and edges (for drawing elsewhere):
    nodes ``{id, label, kind: executor|subworkflow|map, start}`` in
    registration order, edges ``{source, target, label, style}``."""
    nodes: list[dict[str, object]] = []
    for eid in workflow.executors:
        kind = "map" if _is_map(workflow, eid) else "executor"
        if _is_subworkflow(workflow, eid):
            kind = "subworkflow"
        label = _label(workflow, eid)
        nodes.append({"id": eid, "label": label, "kind": kind, "start": eid == workflow.start.id})
    edges: list[dict[str, object]] = [
        {"source": a.source, "target": a.target, "label": a.label, "style": a.style}
        for a in _arrows(workflow)
    ]
    return {"nodes": nodes, "edges": edges}
