"""At a run's end on Ray, only actors whose executors have attributes of
their own are asked for them (docs/ray.md, "Warm actors"): an executor with
none — a function executor, a class that keeps nothing — costs no call."""

from __future__ import annotations

from typing import Any

import pytest

import stepgraph as sg
from stepgraph._ray import _backend
from tests.test_ray_warm import backend, ray_cluster  # noqa: F401  (fixtures)


@sg.executor(id="first")
async def first(n: int, ctx: sg.WorkflowContext[int]) -> None:
    await ctx.send_message(n + 1)


class Keeps(sg.Executor):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.seen: list[int] = []

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        self.seen.append(n)
        await ctx.yield_output(n)


class KeepsNothing(sg.Executor):
    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    exported = _backend._exported

    async def counted(actor: Any) -> Any:
        calls.append(actor)
        return await exported(actor)

    monkeypatch.setattr(_backend, "_exported", counted)
    return calls


async def test_executors_without_attributes_of_their_own_are_not_asked(
    backend: sg.RayBackend,  # noqa: F811
    asked: list[Any],
) -> None:
    flow = sg.WorkflowBuilder(start=first).add_edge(first, KeepsNothing("last")).build()
    for n in range(2):
        assert (await flow.run(n, backend=backend)).outputs == [n + 1]
    assert asked == []


async def test_an_executor_with_attributes_of_its_own_is_asked_and_keeps_them(
    backend: sg.RayBackend,  # noqa: F811
    asked: list[Any],
) -> None:
    keeps = Keeps("last")
    flow = sg.WorkflowBuilder(start=first).add_edge(first, keeps).build()
    for n in range(2):
        assert (await flow.run(n, backend=backend)).outputs == [n + 1]
    assert len(asked) == 2  # its actor, once per run; never the function executor's
    assert keeps.seen == [1, 2]
