"""Rendering values for people (events, outputs, the CLI): whatever the value."""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from typing import Any

import stepgraph as sg
from stepgraph._core import jsonable
from tests import cli_flows


def nested(depth: int) -> list[Any]:
    value: Any = "core"
    for _ in range(depth):
        value = [value]
    return value  # type: ignore[no-any-return]


def test_a_value_nested_thousands_deep_renders_with_its_depth_cut() -> None:
    shown = jsonable(nested(5000))
    for _ in range(100):
        assert isinstance(shown, list) and len(shown) == 1
        shown = shown[0]
    assert shown == "<a list nested more than 100 levels deep>"
    # (a shallow value is shown whole, down to its last level)
    assert jsonable({"a": nested(99)})["a"] == nested(99)


def test_a_run_whose_output_is_nested_thousands_deep_checkpoints_and_ends_idle(
    tmp_path: Path,
) -> None:
    async def main() -> sg.RunResult:
        with sg.SqliteCheckpointStore(tmp_path / "runs.sqlite") as store:
            return await cli_flows.nesting().run(5000, checkpoints=store)

    result = asyncio.run(main())
    assert result.status is sg.RunStatus.IDLE
    [output] = result.outputs
    for _ in range(5000):  # (== would go as deep as the value: checked level by level)
        assert isinstance(output, list) and len(output) == 1
        output = output[0]
    assert output == "core"


def test_a_lone_surrogate_is_shown_as_its_escape() -> None:
    # (half a character, as a file name read with surrogateescape holds:
    # UTF-8 has no form for it)
    class Colour(str, enum.Enum):  # noqa: UP042 (str() of such a one is "Colour.RED")
        RED = "red"

    class Odd:
        def __repr__(self) -> str:
            return "Odd(\udcff)"

    assert jsonable("caf\udce9 🙂") == "caf\\udce9 🙂"
    assert jsonable({"k\ud800": ["\udcff", Odd(), ValueError("\udc80")]}) == {
        "k\\ud800": ["\\udcff", "Odd(\\udcff)", "ValueError: \\udc80"]
    }
    assert jsonable("café 🙂") == "café 🙂" and jsonable(Colour.RED) == "red"


def test_a_run_whose_output_holds_a_lone_surrogate_checkpoints_and_ends_idle() -> None:
    # (the output's stored copy, for display, failed the run at its checkpoint)
    @sg.executor(id="lister")
    async def lister(folder: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(folder + b"report-\xe9.txt".decode("utf-8", "surrogateescape"))

    async def main() -> tuple[sg.RunResult, sg.Checkpoint]:
        store = sg.MemoryCheckpointStore()
        workflow = sg.WorkflowBuilder(start=lister, checkpoints=store).build()
        result = await workflow.run("reports/")
        assert result.last_checkpoint is not None
        return result, await store.load(result.last_checkpoint)

    result, last = asyncio.run(main())
    assert result.status is sg.RunStatus.IDLE and result.outputs == ["reports/report-\udce9.txt"]
    assert last.body["outputs"] == ["reports/report-\\udce9.txt"]
