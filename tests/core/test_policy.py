"""RetryPolicy: what it takes as ``retry_on``, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

import stepgraph as sg


@pytest.mark.parametrize("retry_on", [ValueError, [ValueError], {ValueError}, (ValueError,)])
async def test_retry_on_takes_a_class_or_a_collection_of_them(retry_on: Any) -> None:
    # A list was accepted, then made the first failure raise "isinstance() arg
    # 2 must be a type..." instead of retrying: the handler's error was lost.
    policy = sg.RetryPolicy(attempts=3, retry_on=retry_on)
    assert policy.retry_on == (ValueError,)
    calls: list[int] = []

    @sg.executor(id="flaky", retry=policy)
    async def flaky(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        calls.append(n)
        if len(calls) < 3:
            raise ValueError("flaky")
        await ctx.yield_output(len(calls))

    assert (await sg.WorkflowBuilder(start=flaky).build().run(1)).outputs == [3]


@pytest.mark.parametrize("retry_on", [(), [], (KeyboardInterrupt,), (int,), "ValueError", None])
def test_retry_on_refuses_what_is_not_exception_types(retry_on: Any) -> None:
    with pytest.raises(ValueError, match="retry_on must be an Exception type or a non-empty"):
        sg.RetryPolicy(retry_on=retry_on)
