"""The workloads, each as a stepgraph workflow and as a bare-asyncio floor.

W1  a 50-executor chain passing an int              (µs per superstep)
W2  fan-out to N executors, then fan-in a sum        (ms per run)
W3  two executors ping-ponging a counter             (µs per hop)
W4  50 sources each sending one message to a target  (ms per run)
W5  W1 with checkpoints; the state ticker             (µs per superstep / checkpoint)
W7  a map over N items, beside W2 at the same width   (ms per run)
W8  1,000 concurrent runs of one 5-executor workflow  (s and peak RSS per batch)

The floors use direct awaits with one task per hop: the least an asyncio
engine that isolates each handler call in its own task could cost.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import stepgraph as sg


class Forward(sg.Executor):
    """Sends n + 1 while n < limit."""

    def __init__(self, id: str, limit: int) -> None:
        super().__init__(id)
        self.limit = limit

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int, int]) -> None:
        if n < self.limit:
            await ctx.send_message(n + 1)
        else:
            await ctx.yield_output(n)


def chain(length: int, checkpoints: sg.CheckpointConfig | None = None) -> sg.Workflow:
    nodes = [Forward(f"c{i}", limit=10**9) for i in range(length - 1)]
    nodes.append(Forward(f"c{length - 1}", limit=0))
    return sg.WorkflowBuilder(start=nodes[0], checkpoints=checkpoints).add_chain(nodes).build()


class Fill(sg.Executor):
    """Puts ``total`` bytes of state in 100 keys, then starts the ticker."""

    def __init__(self, total: int) -> None:
        super().__init__("fill")
        self.total = total

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
        for i in range(100):
            ctx.state.set(f"k{i}", "x" * (self.total // 100))
        await ctx.send_message(0)


@sg.executor(id="tick")
async def _tick(n: int, ctx: sg.WorkflowContext[int]) -> None:
    ctx.state.set("counter", n)  # one small key changes per superstep
    if n < STATE_STEPS:
        await ctx.send_message(n + 1)


STATE_STEPS = 100


def state_ticker(total: int, checkpoints: sg.CheckpointConfig | None = None) -> sg.Workflow:
    """W5 state scan: ``total`` bytes of state, one small key changes per superstep."""
    fill = Fill(total)
    return (
        sg.WorkflowBuilder(start=fill, checkpoints=checkpoints, max_supersteps=STATE_STEPS + 5)
        .add_edge(fill, _tick)
        .add_edge(_tick, _tick)
        .build()
    )


def ping_pong(hops: int) -> sg.Workflow:
    ping, pong = Forward("ping", hops), Forward("pong", hops)
    return (
        sg.WorkflowBuilder(start=ping, max_supersteps=hops + 2)
        .add_edge(ping, pong)
        .add_edge(pong, ping)
        .build()
    )


@sg.executor(id="source")
async def _source(n: int) -> int:
    return n


@sg.executor(id="total")
async def _total(values: list[int], ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    await ctx.yield_output(sum(values))


class Square(sg.Executor):
    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n * n)


def fan_out_in(width: int) -> sg.Workflow:
    workers = [Square(f"w{i}") for i in range(width)]
    return (
        sg.WorkflowBuilder(start=_source)
        .add_fan_out(_source, workers)
        .add_fan_in(workers, _total)
        .build()
    )


class Count(sg.Executor):
    def __init__(self) -> None:
        super().__init__("target")
        self.seen = 0

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        self.seen += 1


def many_to_one(sources: int) -> sg.Workflow:
    senders = [Square(f"s{i}") for i in range(sources)]
    target = Count()
    builder = sg.WorkflowBuilder(start=_source).add_fan_out(_source, senders)
    for sender in senders:
        builder.add_edge(sender, target)
    return builder.build()


@sg.executor(id="emit")
async def _emit(count: int, ctx: sg.WorkflowContext[int]) -> None:
    for n in range(count):
        await ctx.send_message(n)


def map_of(width: int) -> sg.Workflow:
    """W7: ``width`` items squared by a fresh worker each, summed by ``total``."""
    return sg.WorkflowBuilder(start=_emit).add_map(_emit, Square, id="squares", to=_total).build()


class Stage(sg.Executor):
    """Keeps a per-run tally in an attribute, sends its input onward."""

    def __init__(self, id: str, factor: int = 1) -> None:
        super().__init__(id)
        self.factor = factor
        self.seen = 0

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
        self.seen += 1
        await ctx.send_message(n * self.factor + self.seen)


class Join(sg.Executor):
    @sg.handler
    async def on(self, values: list[int], ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(sum(values))


def _five(builder: sg.WorkflowBuilder, ids: list[Any]) -> sg.Workflow:
    entry, workers, join = ids[0], ids[1:4], ids[4]
    return builder.add_fan_out(entry, workers).add_fan_in(workers, join).build()


def five_registered() -> sg.Workflow:
    """W8: one workflow of five per-run executors (entry, three workers, join)."""
    builder = sg.WorkflowBuilder(start="entry").register("entry", Stage)
    for i in (1, 2, 3):
        builder.register(f"w{i}", lambda i=i: Stage(f"w{i}", factor=i))
    builder.register("join", Join)
    return _five(builder, ["entry", "w1", "w2", "w3", "join"])


def five_built() -> sg.Workflow:
    """W8's other way: the same five executors as instances, built for one run."""
    nodes = [Stage("entry"), Stage("w1", 1), Stage("w2", 2), Stage("w3", 3), Join("join")]
    return _five(sg.WorkflowBuilder(start=nodes[0]), nodes)


FIVE_ANSWER = 9  # run(0): entry sends 0 + 1; worker i sends 1 * i + 1: 2 + 3 + 4


class SyncWriteFloor:
    """The least a checkpoint with ``sync`` durability can cost here: hand a
    one-row SQLite insert and commit (WAL, ``synchronous=NORMAL``, its own
    file) to the store's writer thread and wait for it. The same thread as
    the store's own writes: how long a hand-off takes depends on where the
    operating system schedules that thread."""

    def __init__(self, path: Path, store: sg.SqliteCheckpointStore) -> None:
        self._path = path
        self._store = store
        self._db: sqlite3.Connection | None = None

    def _commit_one(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v BLOB)")
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 100,))
        self._db.execute("COMMIT")

    async def write(self, count: int) -> None:
        for _ in range(count):
            await self._store._run(self._commit_one)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


# -- floors: bare asyncio, one task per hop -------------------------------------


async def _step(n: int) -> int:
    return n + 1


async def floor_chain(length: int) -> int:
    n = 0
    for _ in range(length):
        n = await asyncio.create_task(_step(n))
    return n


async def floor_ping_pong(hops: int) -> int:
    n = 0
    while n < hops:
        n = await asyncio.create_task(_step(n))
    return n


async def _square(n: int) -> int:
    return n * n


async def floor_fan_out_in(width: int) -> int:
    return sum(await asyncio.gather(*(_square(i) for i in range(width))))


async def floor_many_to_one(sources: int) -> int:
    values = await asyncio.gather(*(_square(i) for i in range(sources)))
    seen = 0
    for _ in values:
        seen += 1
    return seen


class Streamer(sg.Executor):
    """Emits ``n`` events 10 ms apart, each stamped with when it was emitted."""

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        for _ in range(n):
            await ctx.add_event(sg.UserEvent(kind="tick", data=time.time()))
            await asyncio.sleep(0.01)
        await ctx.yield_output(n)


def live_event_latency(backend: sg.Backend, n: int) -> tuple[float, float]:
    """Milliseconds from an event's emission in a handler to ``stream()``:
    the p50 of each run's first event (over 20 runs of ``n // 20`` events)
    and the p50 over all of them."""
    workflow = sg.WorkflowBuilder(start=Streamer("streamer")).build()
    firsts: list[float] = []
    every: list[float] = []

    async def one(count: int) -> None:
        lags = [
            (time.time() - event.data) * 1e3
            async for event in workflow.stream(count, backend=backend)
            if event.kind == "tick"
        ]
        firsts.append(lags[0])
        every.extend(lags)

    asyncio.run(one(1))  # (actor started: warm from here on)
    firsts.clear()
    every.clear()
    for _ in range(20):
        asyncio.run(one(max(1, n // 20)))
    return statistics.median(firsts), statistics.median(every)
