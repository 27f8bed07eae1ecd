"""Maps inside maps: a map whose worker is a sub-workflow with a map of its
own, to any depth, some levels reached through a sub-workflow that is no
map's worker. Every event names every item it is part of: ``item`` is that
of its own map, ``workflow_items`` those of the workflow executors of its
path — so the indices along a leaf worker's event are its address, ``path``
spells it (``"m0[2]/u0/m1[0]/m2"``), and no two child runs go by one name.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import stepgraph as sg

# Per level: how many items its map has, and whether its worker's child is
# reached through a sub-workflow that is no map's worker.
Level = tuple[int, bool]
levels = st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=3)


def level(levels: list[Level], k: int) -> sg.Workflow:
    """Level ``k``: split the address so far into its items, map them (on a
    leaf, or on a sub-workflow of level ``k + 1``), collect."""
    width, through = levels[k]

    @sg.executor(id=f"split{k}")
    async def split(address: tuple[int, ...], ctx: sg.WorkflowContext[tuple[int, ...]]) -> None:
        for j in range(width):
            await ctx.send_message((*address, j))

    @sg.executor(id=f"collect{k}")
    async def collect(values: list[Any], ctx: sg.WorkflowContext[sg.Never, list[Any]]) -> None:
        await ctx.yield_output(values)

    @sg.executor(id=f"leaf{k}")
    async def leaf(address: tuple[int, ...], ctx: sg.WorkflowContext[tuple[int, ...]]) -> None:
        for _ in range(sum(address) % 3):
            await asyncio.sleep(0)  # (items interleave)
        await ctx.add_event(sg.UserEvent(kind="leaf", data=address))
        await ctx.send_message(address)

    def worker() -> sg.Executor:
        child = level(levels, k + 1)
        if through:
            start = sg.WorkflowExecutor(child, id=f"u{k}", forward_outputs=True)
            child = sg.WorkflowBuilder(start=start, name=f"through{k}").build()
        return sg.WorkflowExecutor(child, id=f"m{k}")

    mapped: Any = leaf if k == len(levels) - 1 else worker
    builder = sg.WorkflowBuilder(start=split, name=f"level{k}")
    return builder.add_map(split, mapped, id=f"m{k}", to=collect).build()


def spelled(levels: list[Level], address: tuple[int, ...]) -> str:
    """The path of a leaf's event at ``address``."""
    steps: list[str] = []
    for k, index in enumerate(address[:-1]):
        steps.append(f"m{k}[{index}]")
        if levels[k][1]:
            steps.append(f"u{k}")
    return "/".join([*steps, f"m{len(levels) - 1}"])


@settings(max_examples=40, deadline=None)
@given(levels)
def test_every_event_names_each_item_it_is_part_of(levels: list[Level]) -> None:
    result = asyncio.run(level(levels, 0).run(()))
    assert result.status is sg.RunStatus.IDLE
    leaves = [e for e in result.events if e.kind == "leaf"]
    addresses = list(itertools.product(*(range(width) for width, _ in levels)))
    assert sorted(e.data for e in leaves) == addresses
    for e in leaves:
        named = tuple(i for i in (*e.workflow_items, e.item) if i is not None)
        assert named == e.data
        assert e.path == spelled(levels, e.data)
    for e in result.events:
        assert e.workflow_items == () or len(e.workflow_items) == len(e.workflow_path)
        assert e.item is None or (e.executor_id or "").startswith("m")
    # Each child run is one item at each mapped level: no two go by one name.
    started = [e.path for e in result.events if e.kind == "run_started" and e.workflow_path]
    assert len(set(started)) == len(started)
