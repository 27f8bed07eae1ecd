"""Drawings: labels come back as the executor ids they show."""

from __future__ import annotations

import html
import re

import stepgraph as sg
from stepgraph._viz import to_mermaid


def _passing(executor_id: str) -> sg.FunctionExecutor:
    async def handle(text: str, ctx: sg.WorkflowContext[str, str]) -> None:
        await ctx.send_message(text)

    return sg.executor(id=executor_id)(handle)


def _as_mermaid_shows(label: str) -> str:
    """A label's text as Mermaid draws it: "#name;" and "#NN;" are entity
    codes (its documented escape for quotes and other characters)."""

    def entity(found: re.Match[str]) -> str:
        code = found.group(1)
        return html.unescape(f"&#{code};" if code.isdigit() else f"&{code};")

    return re.sub(r"#(\w+);", entity, label)


def test_mermaid_labels_show_ids_that_look_like_entity_codes_as_they_are() -> None:
    ids = ['say "hi"', "g#35;h", "x#quot;y", "a<b>", "#1", "plain"]
    executors = [_passing(i) for i in ids]
    workflow = sg.WorkflowBuilder(start=executors[0], name="ids").add_chain(executors).build()
    drawn = to_mermaid(workflow)
    labels = re.findall(r'^\s+n\d+\["([^"]*)"\]$', drawn, re.M)
    assert [_as_mermaid_shows(label) for label in labels] == [f"{ids[0]} (start)", *ids[1:]]
