"""Messages on the Ray backend that Ray cannot send: a run fails naming the
executor and what could not go to its actor, and the workflow is none the
worse for it — its next runs (on Ray or after a local run that routed such a
message) start their actors as usual."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import stepgraph as sg
from tests import subflows
from tests.test_ray_warm import backend, ray_cluster  # noqa: F401  (fixtures)


class Takes(sg.Executor):
    @sg.handler
    async def on(self, message: object, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"got {type(message).__name__}")


class Unreducible:
    def __reduce__(self) -> Any:
        raise ValueError("not for the wire")


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (threading.Lock, "(TypeError: cannot pickle '_thread.lock' object)"),
        (Unreducible, "(ValueError: not for the wire)"),
    ],
)
async def test_an_input_ray_cannot_send_fails_saying_it_could_not_be_sent(
    backend: sg.RayBackend,  # noqa: F811
    make: Any,
    why: str,
) -> None:
    flow = sg.WorkflowBuilder(start=Takes("takes")).build()
    with pytest.raises(sg.WorkflowRunError) as caught:
        await flow.run(make(), backend=backend)
    said = str(caught.value)
    assert caught.value.executor_id == "takes"
    assert "its inbox of superstep 1 could not be sent to its Ray actor" in said, said
    assert why in said, said
    assert "sent back" not in said and "===" not in said and "\n" not in said, said
    # The workflow goes on, on the same backend.
    again = await flow.run("fine", backend=backend)
    assert again.outputs == ["got str"]


async def test_a_message_class_seen_before_does_not_stop_an_actor_from_starting(
    backend: sg.RayBackend,  # noqa: F811
) -> None:
    """An executor remembers which handler takes each message class it was
    asked about; those classes (a lock's, here, from a local run) are not
    shipped with it to its actor, where they might not even be importable."""
    flow = sg.WorkflowBuilder(start=Takes("takes")).build()
    assert (await flow.run(threading.Lock())).outputs == ["got lock"]  # locally: fine
    result = await flow.run("fine", backend=backend)
    assert result.outputs == ["got str"]


class HoldsALock(sg.Executor):
    """Makes its client (a lock stands for one) in ``__init__``."""

    def __init__(self) -> None:
        super().__init__("holder")
        self.client = threading.Lock()

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)


@pytest.mark.parametrize("per_run", [False, True])
async def test_an_executor_ray_cannot_serialize_fails_the_run_naming_it(
    backend: sg.RayBackend,  # noqa: F811
    per_run: bool,
) -> None:
    builder = (
        sg.WorkflowBuilder(start="holder").register("holder", lambda: HoldsALock())
        if per_run
        else sg.WorkflowBuilder(start=HoldsALock())
    )
    flow = builder.build()
    events: list[Any] = []
    with pytest.raises(sg.WorkflowRunError) as caught:
        async with flow.stream(1, backend=backend) as stream:
            async for event in stream:
                events.append(event)
    said = str(caught.value)
    assert caught.value.executor_id == "holder"
    assert "executor 'holder' cannot be sent to a Ray actor" in said, said
    assert "(TypeError: cannot pickle '_thread.lock' object)" in said, said
    assert "\n" not in said and "import" not in said, said
    assert [e.kind for e in events][-2:] == ["failed", "status"]


class MakesItsClient(sg.Executor):
    """Counts its calls, and makes its client (a lock stands for one) in
    its handler."""

    def __init__(self) -> None:
        super().__init__("maker")
        self.calls = 0
        self.client: Any = None

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        self.calls += 1
        if self.client is None:
            self.client = threading.Lock()
        await ctx.yield_output(self.calls)


async def test_an_attribute_that_cannot_come_back_costs_only_itself(
    backend: sg.RayBackend,  # noqa: F811
) -> None:
    """The executor's other attributes come back and its actor stays warm;
    a warning names the attribute that stayed behind."""
    maker = MakesItsClient()
    flow = sg.WorkflowBuilder(start=maker).build()
    outputs = []
    for n in range(3):
        result = await flow.run(n, backend=backend)
        outputs += result.outputs
        [warned] = [e for e in result.events if e.kind == "warning"]
        assert warned.executor_id == "maker"
        assert "attribute 'client' (TypeError: cannot pickle '_thread.lock' object)" in (
            warned.message
        )
        if n:
            assert backend.started_last_run == 0  # (its warm actor, not a new one)
    assert outputs == [1, 2, 3]  # as locally
    assert maker.calls == 3 and maker.client is None


@sg.executor(id="talker")
async def talker(n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    """Long enough for its events to stream live from its actor."""
    ctx.add_event(sg.UserEvent(data="before"))
    await asyncio.sleep(0.3)
    ctx.add_event(sg.UserEvent(data="beside it"))
    ctx.add_event(sg.UserEvent(data=threading.Lock()))
    await asyncio.sleep(0.3)
    ctx.add_event(sg.UserEvent(data="after"))
    await ctx.yield_output("done")


async def test_a_live_event_ray_cannot_send_fails_the_superstep_rather_than_vanish(
    backend: sg.RayBackend,  # noqa: F811
) -> None:
    """As when such an event comes back with a short handler's result: the
    superstep fails saying so (it did drop silently, with the events sent
    beside it)."""
    flow = sg.WorkflowBuilder(start=talker).build()
    with pytest.raises(sg.WorkflowRunError) as caught:
        await flow.run(1, backend=backend)
    said = str(caught.value)
    assert caught.value.executor_id == "talker"
    assert "could not be sent back" in said and "cannot pickle '_thread.lock' object" in said
    assert "events" in said


async def test_a_sub_workflow_sharing_an_instance_with_another_workflow_goes_to_its_actor(
    backend: sg.RayBackend,  # noqa: F811
) -> None:
    """A child workflow built on an executor instance another workflow uses
    too, once it has run, travels to its actor (it failed: 'cannot pickle
    weakref.ReferenceType', what it knew of the other workflow); and the
    copy it sent still keeps one run at a time on the instance here."""
    shout = subflows.Shout("shout")
    child = sg.WorkflowBuilder(start=shout, name="child").build()
    other = sg.WorkflowBuilder(start=shout, name="other").build()
    assert (await child.run("a")).outputs == ["A"]  # (now it knows of the other)
    sub = sg.WorkflowExecutor(child, id="sub", forward_outputs=True)
    parent = sg.WorkflowBuilder(start=sub, name="parent").build()
    assert (await parent.run("b", backend=backend)).outputs == ["B"]
    # The guard of the instance still holds here, on the originals.
    gate = asyncio.Event()

    @sg.executor(id="hold")
    async def hold(text: str, ctx: sg.WorkflowContext[str]) -> None:
        await gate.wait()
        await ctx.send_message(text)

    held = sg.WorkflowBuilder(start=hold, name="held").add_edge(hold, shout).build()
    running = asyncio.ensure_future(held.run("c"))
    await asyncio.sleep(0.05)
    with pytest.raises(sg.WorkflowBusyError, match="in use by running workflow 'held'"):
        await other.run("d")
    gate.set()
    assert (await running).outputs == ["C"]
