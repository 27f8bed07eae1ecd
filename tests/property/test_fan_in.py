"""Fan-in delivers every message exactly once, whatever the sources send.

Each source sends a random number of messages (zero included) in each of
several supersteps. A fan-in must deliver, at the first barrier where every
source has sent, everything each source sent up to then — in source order,
then send order — and keep the rest for a later list; what is left when the
run goes idle is reported, never dropped silently.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import stepgraph as sg

Plan = list[list[int]]  # per source: how many messages it sends in each round


def expected(plan: Plan) -> tuple[list[list[str]], int]:
    """The lists the fan-in must deliver, and how many messages stay held."""
    buffers: list[list[str]] = [[] for _ in plan]
    delivered: list[list[str]] = []
    for round_ in range(max(len(rounds) for rounds in plan)):
        for source, rounds in enumerate(plan):
            if round_ < len(rounds):
                buffers[source] += [f"s{source}r{round_}m{i}" for i in range(rounds[round_])]
        if all(buffers):
            delivered.append([m for held in buffers for m in held])
            buffers = [[] for _ in plan]
    return delivered, sum(len(held) for held in buffers)


def make_source(index: int, rounds: list[int]) -> sg.FunctionExecutor:
    async def send(round_: int, ctx: sg.WorkflowContext[int | str]) -> None:
        for i in range(rounds[round_]):
            await ctx.send_message(f"s{index}r{round_}m{i}", target="join")
        if round_ + 1 < len(rounds):
            await ctx.send_message(round_ + 1, target=f"s{index}")

    return sg.executor(id=f"s{index}")(send)


def build(plan: Plan) -> sg.Workflow:
    sources = [make_source(index, rounds) for index, rounds in enumerate(plan)]

    @sg.executor(id="go")
    async def go(start: int) -> int:
        return start

    @sg.executor(id="join")
    async def join(batch: list[str], ctx: sg.WorkflowContext[sg.Never, list[str]]) -> None:
        await ctx.yield_output(batch)

    builder = sg.WorkflowBuilder(start=go).add_fan_out(go, sources)
    for source in sources:
        builder.add_edge(source, source)
    return builder.add_fan_in(sources, join).build()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(0, 4), min_size=1, max_size=4),
        min_size=1,
        max_size=4,
    )
)
async def test_fan_in_delivers_every_message_exactly_once(plan: Plan) -> None:
    lists, held = expected(plan)
    result = await build(plan).run(0)
    assert result.outputs == lists
    sent = [f"s{s}r{r}m{i}" for s, rounds in enumerate(plan)
            for r, n in enumerate(rounds) for i in range(n)]  # fmt: skip
    delivered = [m for batch in result.outputs for m in batch]
    assert len(set(delivered)) == len(delivered)  # nothing twice
    waiting = [e for e in result.events if isinstance(e, sg.WarningEvent)]
    if held:
        [warning] = waiting
        assert f"held {held} message(s)" in warning.message
    else:
        assert waiting == []
    assert len(delivered) + held == len(sent)  # nothing lost
