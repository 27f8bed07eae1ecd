"""Run states into checkpoints: values that cannot be stored fail the run as
``CheckpointEncodeError`` naming where they are (design §5)."""

from __future__ import annotations

from typing import Any

import pytest

import stepgraph as sg


def writer(value: Any) -> sg.FunctionExecutor:
    @sg.executor(id="writer")
    async def write(n: int, ctx: sg.WorkflowContext) -> None:
        ctx.state.set("v", value)

    return write


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (10**5000, "state['v']: an int of about 5000 digits is too large to store"),
        ("\ud800", "state['v']: the string holds a lone surrogate ('\\ud800' at index 0)"),
        ({"a": [10**5000]}, "state['v']['a'][0]: an int of about 5000 digits"),
        ({"k\udfff": 1}, "state['v']['k\\udfff']: the string holds a lone surrogate"),
        ("ok ü \U0001f600", None),  # non-ASCII text is fine
        (-(10**3999), None),
    ],
    ids=["huge-int", "surrogate", "nested-huge-int", "surrogate-key", "unicode", "big-int"],
)
async def test_unstorable_state_fails_the_run_naming_the_key(
    store: sg.CheckpointStore, value: Any, message: str | None
) -> None:
    workflow = sg.WorkflowBuilder(start=writer(value), checkpoints=store).build()
    events: list[sg.Event] = []
    if message is None:
        async for event in workflow.stream(1):
            events.append(event)
        assert events[-1] == sg.StatusEvent(status=sg.RunStatus.IDLE)
        return
    with pytest.raises(sg.CheckpointEncodeError) as raised:
        async for event in workflow.stream(1):
            events.append(event)
    assert str(raised.value).startswith(message), str(raised.value)
    assert [e.kind for e in events[-2:]] == ["failed", "status"]
    assert events[-1] == sg.StatusEvent(status=sg.RunStatus.FAILED)
    assert str(raised.value) == events[-2].error  # type: ignore[attr-defined]


async def test_a_state_key_holding_half_a_character_is_named(store: sg.CheckpointStore) -> None:
    @sg.executor(id="writer")
    async def write(n: int, ctx: sg.WorkflowContext) -> None:
        ctx.state.set("k\udcff", n)

    workflow = sg.WorkflowBuilder(start=write, checkpoints=store).build()
    with pytest.raises(
        sg.CheckpointEncodeError,
        match=r"^state key 'k\\udcff': the string holds a lone surrogate \('\\udcff' at index 1\)",
    ):
        await workflow.run(1)


async def test_unstorable_input_is_refused_before_the_run_naming_where(
    store: sg.CheckpointStore,
) -> None:
    # (half a character in the input failed the run at its first barrier:
    # listed failed, having run nothing)
    @sg.executor(id="echo")
    async def echo(value: dict[str, list[str]], ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output(value)

    def build(checkpoints: sg.CheckpointStore | None) -> sg.Workflow:
        return sg.WorkflowBuilder(start=echo, name="echoing", checkpoints=checkpoints).build()

    given = {"k": ["x", "a\udc80"]}
    with pytest.raises(
        sg.MessageTypeError,
        match=r"^workflow 'echoing' checkpoints its runs, and its input cannot be stored: "
        r"the input\['k'\]\[1\]: the string holds a lone surrogate \('\\udc80' at index 1\)",
    ):
        await build(store).run(given)
    assert await store.runs() == []  # (no run was started)
    assert (await build(None).run(given)).outputs == [given]  # (nothing to store: it runs)


async def test_deep_nesting_error_keeps_the_path_short(store: sg.CheckpointStore) -> None:
    deep: Any = 0
    for _ in range(300):
        deep = [deep]
    workflow = sg.WorkflowBuilder(start=writer(deep), checkpoints=store).build()
    with pytest.raises(sg.CheckpointEncodeError) as raised:
        await workflow.run(1)
    message = str(raised.value)
    assert message == (
        "state['v'][0][0][0][0]…(193 more levels)…[0][0][0][0]: nested deeper than 200 levels"
    )


async def test_a_raising_snapshot_fails_the_run_naming_the_executor(
    store: sg.CheckpointStore,
) -> None:
    class Broken(sg.Executor):
        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext) -> None:
            pass

        def snapshot(self) -> Any:
            raise RuntimeError("no snapshot today")

        def restore(self, snapshot: Any) -> None:
            pass

    workflow = sg.WorkflowBuilder(start=Broken("broken"), checkpoints=store).build()
    with pytest.raises(
        sg.CheckpointEncodeError,
        match=r"snapshot of executor 'broken': snapshot\(\) raised RuntimeError: no snapshot today",
    ):
        await workflow.run(1)
