"""On the Ray backend a run fails as it does locally — a ``WorkflowRunError``
naming the executor, with the failure events — whatever went wrong: an
exception Ray cannot rebuild, a message it cannot send, an actor that does
not start, the backend closed under the run; the handler's traceback comes
along as a note; an actor no node can host is said to wait."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from tests.test_ray_warm import backend, ray_cluster  # noqa: F401  (fixtures)


class TwoArgs(Exception):
    """An exception that cannot be rebuilt from what it keeps (its args)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


class CodeError(Exception):
    """Formats its argument: rebuilt from what it keeps, it would say it twice."""

    def __init__(self, code: int) -> None:
        super().__init__(f"failed with code {code}")


class KwOnly(Exception):
    def __init__(self, *, code: int) -> None:
        super().__init__(f"code={code}")


class HoldsLock(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


class Watched:
    pass


WATCHED = Watched()


class HoldsWeakRef(Exception):
    """Copied (a weak reference is copied as it is), but not picklable."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.watched = weakref.ref(WATCHED)


class OwnGroup(ExceptionGroup):
    """A group of the user's own (it does not override ``derive``)."""


class Touchy(sg.Executor):
    def __init__(self) -> None:
        super().__init__("touchy")
        self.calls = 0

    @sg.handler
    async def on(self, what: str, ctx: sg.WorkflowContext[object, str]) -> None:
        self.calls += 1
        if what == "odd exception":
            raise TwoArgs(1, 2)
        if what == "formatting exception":
            raise CodeError(7)
        if what == "exception holding a lock":
            raise HoldsLock("x")
        if what == "exception holding a weak reference":
            raise HoldsWeakRef("x")
        if what == "caused by one holding a weak reference":
            try:
                raise HoldsWeakRef("inner")
            except HoldsWeakRef as exc:
                raise ValueError("outer") from exc
        if what == "group":
            raise ExceptionGroup("two failures", [ValueError("a"), KwOnly(code=1)])
        if what == "interrupt":
            raise KeyboardInterrupt
        if what == "exit":
            sys.exit(3)
        if what == "own group":
            raise OwnGroup("mine", [ValueError("a")])
        if what == "plain exception":
            raise ValueError("kaboom")
        if what == "odd message":
            await ctx.send_message(threading.Lock())
        await ctx.yield_output(f"fine {self.calls}")


@sg.executor(id="sink")
async def sink(message: object, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output("sink")


async def events_and_error(
    flow: sg.Workflow, what: Any, on_event: Any = None, **kw: Any
) -> tuple[list[Any], Any]:
    events: list[Any] = []
    try:
        async with flow.stream(what, **kw) as stream:
            async for event in stream:
                events.append(event)
                if on_event is not None:
                    on_event(event)
    except sg.WorkflowRunError as error:
        return events, error
    return events, None


@pytest.mark.parametrize(
    ("what", "said"),
    [
        ("odd exception", "failed in superstep 1: RemoteError: TwoArgs: 1-2"),
        (
            "formatting exception",
            "failed in superstep 1: RemoteError: CodeError: failed with code 7",
        ),
        ("exception holding a lock", "failed in superstep 1: RemoteError: HoldsLock: x"),
        (
            "exception holding a weak reference",
            "failed in superstep 1: RemoteError: HoldsWeakRef: x",
        ),
        ("caused by one holding a weak reference", "failed in superstep 1: ValueError: outer"),
        ("plain exception", "failed in superstep 1: ValueError: kaboom"),
        ("group", "failed in superstep 1: ExceptionGroup: two failures (2 sub-exceptions)"),
        ("own group", "failed in superstep 1: OwnGroup: mine (1 sub-exception)"),
        ("exit", "failed in superstep 1: SystemExit: 3"),
        ("odd message", "could not be sent back (RayTaskError"),
    ],
)
async def test_a_failure_is_the_runs_failure_with_its_events(
    backend: sg.RayBackend,  # noqa: F811
    what: str,
    said: str,
) -> None:
    touchy = Touchy()
    flow = sg.WorkflowBuilder(start=touchy).add_edge(touchy, sink).build()
    events, error = await events_and_error(flow, what, backend=backend)
    assert error is not None and error.executor_id == "touchy", error
    assert said in str(error) and "\n" not in str(error), str(error)  # (as locally: one line)
    kinds = [e.kind for e in events]
    assert "executor_failed" in kinds and kinds[-2:] == ["failed", "status"], kinds
    assert events[-1].status is sg.RunStatus.FAILED
    cause = error.__cause__
    if what == "group":  # the members come back, the one Ray cannot rebuild as a RemoteError
        assert [type(e).__name__ for e in cause.exceptions] == ["ValueError", "RemoteError"]
        assert str(cause.exceptions[1]) == "KwOnly: code=1"
    if what == "caused by one holding a weak reference":  # (as a RemoteError: it came back)
        assert repr(cause.__cause__) == "RemoteError('HoldsWeakRef: inner')"
    if what != "odd message":  # the end of the handler's traceback comes along
        assert ", in on\n" in cause.remote_traceback  # (the handler's own frame, its line)
        assert "raise " in cause.remote_traceback or "sys.exit(3)" in cause.remote_traceback
    # The next run goes on (the same workflow, the same backend).
    again = await flow.run("fine", backend=backend)
    assert again.outputs and again.outputs[0].startswith("fine")


@sg.executor(id="chained")
async def chained(how: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    try:
        try:
            {}["missing"]
        except KeyError as exc:
            raise TwoArgs(1, 2) from exc  # (a cause Ray cannot rebuild, itself caused)
    except TwoArgs as exc:
        if how == "from":
            raise RuntimeError("lookup failed") from exc
        raise RuntimeError("lookup failed")  # noqa: B904  (its context only)


@pytest.mark.parametrize("how", ["from", "during"])
async def test_a_handlers_exception_keeps_its_cause_and_context(
    backend: sg.RayBackend,  # noqa: F811
    how: str,
) -> None:
    """As locally, the error's cause is the handler's exception, and that
    exception's own cause and context come along with it."""
    flow = sg.WorkflowBuilder(start=chained).build()
    for runs_on in (None, backend):
        with pytest.raises(sg.WorkflowRunError) as caught:
            await flow.run(how, backend=runs_on)
        raised = caught.value.__cause__
        assert isinstance(raised, RuntimeError) and str(raised) == "lookup failed"
        middle = raised.__context__
        assert middle is not None and "TwoArgs" in repr(middle) and "1" in str(middle)
        assert (raised.__cause__ is middle) is (how == "from")
        assert raised.__suppress_context__ is (how == "from")
        assert repr(middle.__cause__) == "KeyError('missing')", runs_on
        assert middle.__context__ is middle.__cause__


@sg.executor(id="deep")
async def deep(levels: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    error: BaseException | None = None
    for level in range(levels):
        try:
            raise ValueError(f"level {level}") from error
        except ValueError as exc:
            error = exc
    assert error is not None
    raise error


async def test_a_chain_cut_short_on_its_way_back_says_so(
    backend: sg.RayBackend,  # noqa: F811
) -> None:
    """A chain of 12 comes back 8 causes deep; the last that came says how
    many stayed in the actor, rather than looking like the chain's end."""
    flow = sg.WorkflowBuilder(start=deep).build()
    with pytest.raises(sg.WorkflowRunError) as caught:
        await flow.run(12, backend=backend)
    chain: list[BaseException] = []
    found = caught.value.__cause__
    while found is not None:
        chain.append(found)
        found = found.__cause__
    assert [str(e) for e in chain] == [f"level {n}" for n in range(11, 2, -1)]
    assert chain[-1].__notes__ == [
        "(its cause and context, 3 more exception(s) down, stayed in the Ray actor: a chain "
        "travels 8 deep)"
    ]
    assert all(not getattr(e, "__notes__", None) for e in chain[:-1])


@sg.executor(id="slow_touchy")
async def slow_touchy(what: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await asyncio.sleep(0.1)  # (its call outlasts the 20 ms wait: its events are followed)
    raise TwoArgs(1, 2)


@pytest.mark.parametrize("slow", [False, True])
async def test_an_exception_ray_cannot_rebuild_in_a_nested_sub_workflow_comes_back(
    backend: sg.RayBackend,  # noqa: F811
    slow: bool,
) -> None:
    """The child's ``executor_failed`` and ``failed`` events carry its
    handler's exception: one Ray cannot rebuild arrived as "what its Ray
    actor did could not be sent back" (and Ray logged its own traceback);
    it comes back as a ``RemoteError`` in the chain and in the events, as
    from a handler of the parent."""
    leaf = slow_touchy if slow else Touchy()
    inner = sg.WorkflowBuilder(start=leaf, name="inner").build()
    mid = sg.WorkflowBuilder(
        start=sg.WorkflowExecutor(inner, id="inner", forward_outputs=True), name="mid"
    ).build()
    sub = sg.WorkflowExecutor(mid, id="mid", forward_outputs=True)
    flow = sg.WorkflowBuilder(start=sub, name="outer").build()
    leaf_id = "slow_touchy" if slow else "touchy"
    events, error = await events_and_error(flow, "odd exception", backend=backend)
    assert isinstance(error, sg.SubworkflowError), error
    assert error.path == ("mid", "inner", leaf_id) and "TwoArgs: 1-2" in str(error), error
    innermost: BaseException = error
    while innermost.__cause__ is not None:
        innermost = innermost.__cause__
    assert repr(innermost) == "RemoteError('TwoArgs: 1-2')"
    assert "raise TwoArgs(1, 2)" in innermost.remote_traceback  # type: ignore[attr-defined]
    [child_failed] = [e for e in events if e.kind == "executor_failed" and e.path.count("/") == 2]
    assert child_failed.path == f"mid/inner/{leaf_id}"
    assert repr(child_failed.exception) == "RemoteError('TwoArgs: 1-2')"
    assert [e.kind for e in events][-2:] == ["failed", "status"]


async def test_an_interrupt_in_a_handler_is_raised_as_locally(
    backend: sg.RayBackend,  # noqa: F811
) -> None:
    touchy = Touchy()
    flow = sg.WorkflowBuilder(start=touchy).add_edge(touchy, sink).build()
    with pytest.raises(KeyboardInterrupt):
        await flow.run("interrupt", backend=backend)


@sg.executor(id="anything")
async def anything(message: object, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(type(message).__name__)


async def test_a_message_the_workers_cannot_import_fails_naming_the_import(
    backend: sg.RayBackend,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The message's type is importable here but not on the workers: the
    actor cannot load its inbox, which the error says (not that what the
    actor did could not come back)."""
    (tmp_path / "types_only_here.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass Thing:\n    text: str\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import types_only_here

        flow = sg.WorkflowBuilder(start=anything).build()
        thing = types_only_here.Thing("x")  # type: ignore[attr-defined]
        events, error = await events_and_error(flow, thing, backend=backend)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("types_only_here", None)
    assert error is not None and error.executor_id == "anything"
    said = str(error)
    assert "sent to its Ray actor (its inbox" in said and "could not be loaded there" in said
    assert "No module named 'types_only_here'" in said and "What workers need" in said
    assert "could not be sent back" not in said
    assert [e.kind for e in events][-2:] == ["failed", "status"]
    assert (await flow.run("fine", backend=backend)).outputs == ["str"]


@sg.executor(id="loop")
async def loop(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    if n < 20:
        await ctx.send_message(n + 1)
    else:
        await ctx.yield_output(n)


async def test_closing_the_backend_at_a_barrier_fails_the_run_at_its_next_superstep(
    ray_cluster: None,  # noqa: F811
) -> None:
    closing = sg.RayBackend()
    flow = sg.WorkflowBuilder(start=loop).add_edge(loop, loop).build()
    events, error = await events_and_error(flow, 0, backend=closing, on_event=lambda e: (
        closing.close() if e.kind == "superstep_completed" and e.superstep == 3 else None
    ))  # fmt: skip
    assert error is not None and "the Ray backend was closed while executor 'loop' ran" in str(
        error
    )
    assert [e.kind for e in events][-2:] == ["failed", "status"]
    assert not closing._runs and not closing._closed_runs
    again = await flow.run(15, backend=closing)  # (closed, the backend can be used again)
    assert again.outputs == [20]
    closing.close()


async def test_an_actor_that_does_not_start_fails_the_run_naming_it(
    backend: sg.RayBackend,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The executor's module is importable here but not on the workers."""
    (tmp_path / "only_here.py").write_text(
        textwrap.dedent(
            """
            import stepgraph as sg

            class Here(sg.Executor):
                @sg.handler
                async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
                    await ctx.yield_output(n)
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import only_here

        flow = sg.WorkflowBuilder(start=only_here.Here("here")).build()
        events, error = await events_and_error(flow, 1, backend=backend)  # type: ignore[arg-type]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_here", None)
    assert error is not None and error.executor_id == "here"
    assert "the Ray actor of executor 'here' did not start" in str(error)
    assert "only_here" in str(error) and "What workers need" in str(error)
    assert [e.kind for e in events][-2:] == ["failed", "status"]


@sg.executor(id="forever")
async def forever(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    await ctx.yield_output(n)
    await asyncio.sleep(3600)


async def test_closing_the_backend_fails_a_run_going_on_at_once(
    ray_cluster: None,  # noqa: F811
) -> None:
    closing = sg.RayBackend()
    flow = sg.WorkflowBuilder(start=forever).build()
    run = asyncio.create_task(flow.run(1, backend=closing))
    while not closing._runs:  # (started on Ray)
        await asyncio.sleep(0.05)
    await asyncio.sleep(2)  # (its handler sleeping in its actor)
    closing.close()
    with pytest.raises(sg.WorkflowRunError, match="the Ray backend was closed while executor"):
        await asyncio.wait_for(run, 10)


@sg.executor(id="gpu", placement=sg.Placement(num_gpus=1))
async def gpu(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    await ctx.yield_output(n)


async def test_an_actor_no_node_can_host_is_said_to_wait(backend: sg.RayBackend) -> None:  # noqa: F811
    flow = sg.WorkflowBuilder(start=gpu).build()
    warned = asyncio.Event()
    said: list[str] = []

    async def watch() -> None:
        async with flow.stream(1, backend=backend) as stream:
            async for event in stream:
                if event.kind == "warning":
                    said.append(event.message)  # type: ignore[attr-defined]
                    warned.set()

    watching = asyncio.create_task(watch())
    await asyncio.wait_for(warned.wait(), 30)
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watching
    assert "executor 'gpu' asks for {'GPU': 1}" in said[0] and "no node" in said[0]


def with_gpu_leaf(placement: sg.Placement | None = None, *, per_run: bool = False) -> sg.Workflow:
    """``gpu`` (which asks for a GPU) two sub-workflows down."""

    def outer() -> sg.WorkflowExecutor:
        inner = sg.WorkflowBuilder(start=gpu, name="inner").build()
        mid = sg.WorkflowBuilder(
            start=sg.WorkflowExecutor(inner, id="inner", forward_outputs=True), name="mid"
        ).build()
        return sg.WorkflowExecutor(mid, id="mid", forward_outputs=True, placement=placement)

    if per_run:
        return sg.WorkflowBuilder(start="mid", name="outer").register("mid", outer).build()
    return sg.WorkflowBuilder(start=outer(), name="outer").build()


@pytest.mark.parametrize("per_run", [False, True])
async def test_a_placement_inside_a_sub_workflow_is_said_to_go_unused(
    backend: sg.RayBackend,  # noqa: F811
    per_run: bool,
) -> None:
    """A sub-workflow runs whole in its ``WorkflowExecutor``'s actor: its
    executors' placements are not used — said in a warning (each run), not
    silently run without the GPU asked for."""
    flow = with_gpu_leaf(per_run=per_run)
    for _ in range(2):
        result = await flow.run(1, backend=backend)
        assert result.outputs == [1]
        [said] = [e.message for e in result.events if e.kind == "warning"]  # type: ignore[attr-defined]
        assert said == (
            "executor 'mid' runs a sub-workflow, which runs whole in its Ray actor: the "
            "placement of 'mid/inner/gpu' (num_gpus=1) is not used; give 'mid' the placement "
            "its executors need (WorkflowExecutor(..., placement=...) or "
            "RayBackend(placement=...))"
        )
    # Placed itself: where its children run was decided.
    placed = with_gpu_leaf(sg.Placement(num_cpus=0), per_run=per_run)
    result = await placed.run(1, backend=backend)
    assert result.outputs == [1] and not [e for e in result.events if e.kind == "warning"]


@sg.executor(id="numbers")
async def numbers(count: int, ctx: sg.WorkflowContext[int]) -> None:
    for n in range(count):
        await ctx.send_message(n)


@sg.executor(id="gathered")
async def gathered(values: list[int], ctx: sg.WorkflowContext[sg.Never, list[int]]) -> None:
    await ctx.yield_output(values)


def gpu_sub(placement: sg.Placement | None = None) -> sg.WorkflowExecutor:
    """A map's worker: a sub-workflow whose ``gpu`` asks for a GPU."""
    return sg.WorkflowExecutor(
        sg.WorkflowBuilder(start=gpu, name="leaf").build(), id="sub", placement=placement
    )


def mapped_gpu(placement: sg.Placement | None = None) -> sg.WorkflowBuilder:
    return sg.WorkflowBuilder(start=numbers, name="pages").add_map(
        numbers, lambda: gpu_sub(placement), id="pages", to=gathered
    )


@pytest.mark.parametrize("nested", [False, True])
async def test_a_placement_inside_a_mapped_sub_workflow_is_said_to_go_unused(
    backend: sg.RayBackend,  # noqa: F811
    nested: bool,
) -> None:
    """A map's workers run in the map's actor, and a sub-workflow worker's
    child with them: the child's placements are said to go unused as a
    sub-workflow's are — the map run at the top, or inside a sub-workflow."""

    def flow(placement: sg.Placement | None = None) -> sg.Workflow:
        pages = mapped_gpu(placement).build()
        if not nested:
            return pages
        mid = sg.WorkflowExecutor(pages, id="mid", forward_outputs=True)
        return sg.WorkflowBuilder(start=mid, name="outer").build()

    result = await flow().run(2, backend=backend)
    assert result.outputs == [[0, 1]]
    [said] = [e.message for e in result.events if e.kind == "warning"]  # type: ignore[attr-defined]
    if nested:
        assert said == (
            "executor 'mid' runs a sub-workflow, which runs whole in its Ray actor: the "
            "placement of 'mid/pages/gpu' (num_gpus=1) is not used; give 'mid' the placement "
            "its executors need (WorkflowExecutor(..., placement=...) or "
            "RayBackend(placement=...))"
        )
    else:
        assert said == (
            "map 'pages' runs a sub-workflow for each item, which runs whole in its Ray "
            "actor: the placement of 'pages/gpu' (num_gpus=1) is not used; give 'pages' the "
            "placement its executors need (WorkflowExecutor(..., placement=...) or "
            "RayBackend(placement=...))"
        )
    # The worker placed itself (a map is placed as its worker is): no warning.
    if not nested:
        result = await flow(sg.Placement(num_cpus=0)).run(2, backend=backend)
        assert result.outputs == [[0, 1]] and not [e for e in result.events if e.kind == "warning"]


class MadeOnce(sg.Executor):
    """A factory that makes one instance per process: here, the prototype
    ``build()`` makes; its run's own instance only where it runs (as one
    that needs the workers' GPU would)."""

    made = 0

    def __init__(self, id: str) -> None:
        MadeOnce.made += 1
        if MadeOnce.made > 1:
            raise RuntimeError("no more instances in this process")
        super().__init__(id)

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)


async def test_a_factory_only_the_workers_can_call_runs_on_ray(
    backend: sg.RayBackend,  # noqa: F811
) -> None:
    """Looking for placements inside a sub-workflow makes an instance of a
    per-run executor on the driver: one the driver cannot make is none, and
    the run goes on as before (its actor makes its own)."""
    MadeOnce.made = 0
    flow = sg.WorkflowBuilder(start="made").register("made", MadeOnce).build()
    assert (await flow.run(1, backend=backend)).outputs == [1]
