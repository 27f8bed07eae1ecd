"""Durability modes: ``sync`` writes each checkpoint before the next
superstep; ``async`` batches writes beside the run, surfaces a failed write,
and flushes everything however the run ends (design §5)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from stepgraph._checkpoint import MemoryCheckpointStore
from stepgraph._recorder import ASYNC_BATCH_DELAY, CANCELLED_HERE


class Recording(MemoryCheckpointStore):
    """Records each ``save`` call's size; fails the ``fail_at``-th call."""

    def __init__(self, fail_at: int | None = None, fail_after: float = 0.0) -> None:
        super().__init__()
        self.saves: list[int] = []
        self.fail_at = fail_at
        self.fail_after = fail_after  # seconds the failing save takes
        self.failing = False  # the failing save is under way

    async def save(self, *checkpoints: sg.Checkpoint) -> None:
        self.saves.append(len(checkpoints))
        if len(self.saves) == self.fail_at:
            self.failing = True
            await asyncio.sleep(self.fail_after)
            raise OSError("disk full")
        await super().save(*checkpoints)


class Counter(sg.Executor):
    """Counts to ``limit``, sleeping ``pause`` seconds per superstep; notes
    how many checkpoints ``store`` holds as each call starts."""

    def __init__(self, limit: int, pause: float, store: Recording | None) -> None:
        super().__init__("counter")
        self.limit = limit
        self.pause = pause
        self.store = store
        self.stored_at_call: list[int] = []
        self.failing_at_call: list[bool] = []

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int, int]) -> None:
        if self.store is not None:
            self.stored_at_call.append(sum(self.store.saves))
            self.failing_at_call.append(self.store.failing)
        if self.pause:
            await asyncio.sleep(self.pause)
        if n < self.limit:
            await ctx.send_message(n + 1)
        else:
            await ctx.yield_output(n)


def counting(
    store: sg.CheckpointStore, durability: str, limit: int, pause: float = 0.0
) -> tuple[sg.Workflow, Counter]:
    counter = Counter(limit, pause, store if isinstance(store, Recording) else None)
    config = sg.CheckpointConfig(store, durability)  # type: ignore[arg-type]
    workflow = (
        sg.WorkflowBuilder(start=counter, checkpoints=config, max_supersteps=limit + 5)
        .add_edge(counter, counter)
        .build()
    )
    return workflow, counter


async def test_sync_writes_each_checkpoint_before_the_next_superstep() -> None:
    store = Recording()
    workflow, counter = counting(store, "sync", 5)
    await workflow.run(0)
    assert counter.stored_at_call == [1, 2, 3, 4, 5, 6]  # entry + one per finished barrier
    assert store.saves == [1] * 7


async def test_async_batches_fast_supersteps_and_flushes_before_returning() -> None:
    store = Recording()
    workflow, _ = counting(store, "async", 50)
    result = await workflow.run(0)
    assert result.outputs == [50]
    assert sum(store.saves) == 52  # entry + 51 barriers, all stored when run() returns
    assert len(store.saves) < 5, store.saves  # in a few transactions, not 52
    infos = await store.list(result.run_id)
    assert [i.superstep for i in infos] == list(range(52))


async def test_async_writes_during_a_run_of_slow_supersteps() -> None:
    """Supersteps slower than the batching delay: each checkpoint is stored
    while the run goes on, not only at its end."""
    store = Recording()
    workflow, counter = counting(store, "async", 5, pause=4 * ASYNC_BATCH_DELAY)
    await workflow.run(0)
    # When call k starts, the checkpoints up to barrier k - 2 were written long ago
    # (barrier k - 1's may still wait out the batching delay).
    stored = counter.stored_at_call
    assert all(n >= k - 1 for k, n in enumerate(stored, 1)), stored
    assert stored[-1] >= 5, stored
    assert sum(store.saves) == 7


async def test_async_write_failure_fails_the_run_at_a_later_barrier() -> None:
    store = Recording(fail_at=2)
    pause = 3 * ASYNC_BATCH_DELAY
    with pytest.raises(sg.CheckpointError, match="writing checkpoints failed: OSError: disk full"):
        await counting(store, "async", 20, pause)[0].run(0)
    assert len(store.saves) == 2  # the run stopped instead of writing past the failure


async def test_nothing_is_written_after_a_failed_async_write() -> None:
    """Checkpoints queued while the failing write ran would name parents (and
    values) that were never stored: they are dropped, not written."""
    went_on = []
    for _ in range(5):
        store = Recording(fail_at=1, fail_after=40 * ASYNC_BATCH_DELAY)
        workflow, counter = counting(store, "async", 100, pause=ASYNC_BATCH_DELAY / 2)
        with pytest.raises(sg.CheckpointError, match="disk full"):
            await workflow.run(0)
        assert store.saves[1:] == []
        assert await store.list() == []
        assert len(counter.failing_at_call) < 100  # (it stopped, long before its end)
        # The run went on while the write was failing (checkpoints queued
        # behind it), until a barrier found them overdue and waited for the
        # write — unless a loaded machine let the first barrier come only
        # once the queue was overdue (it then waits at once): try again.
        went_on.append(any(counter.failing_at_call))
        if went_on[-1]:
            break
    assert went_on[-1], went_on


async def test_async_runs_at_most_one_write_ahead_of_a_slow_store() -> None:
    """A barrier whose queued checkpoints are overdue waits for the write in
    flight and writes them: a crash loses at most the batching delay and one
    write, and the queue never grows without bound."""

    class Slow(Recording):
        async def save(self, *checkpoints: sg.Checkpoint) -> None:
            await asyncio.sleep(4 * ASYNC_BATCH_DELAY)
            await super().save(*checkpoints)

    store = Slow()
    workflow, counter = counting(store, "async", 60, pause=ASYNC_BATCH_DELAY / 5)
    await workflow.run(0)
    behind = [call - stored for call, stored in enumerate(counter.stored_at_call, 1)]
    # Calls are about 1 ms apart and a write takes 20 ms. A barrier waits
    # once its queue is 5 ms old, so about 5 calls wait behind the write in
    # flight (10 measured); without that wait the run drifted 30+ calls ahead.
    assert max(behind) <= 20, behind
    assert sum(store.saves) == 62


@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_a_failed_write_fails_the_run_as_a_checkpoint_error(durability: str) -> None:
    """Also the last write of an async run (its flush) and a sync write."""
    store = Recording(fail_at=1)
    events: list[sg.Event] = []
    with pytest.raises(sg.CheckpointError, match="writing checkpoints failed: OSError: disk full"):
        async for event in counting(store, durability, 10)[0].stream(0):
            events.append(event)
    assert events[-1] == sg.StatusEvent(status=sg.RunStatus.FAILED)
    assert await store.list() == []


async def test_async_checkpoints_are_flushed_when_the_run_is_cancelled() -> None:
    store = Recording()
    workflow, counter = counting(store, "async", 1_000, pause=0.002)
    task = asyncio.ensure_future(workflow.run(0))
    # (cancelled after some supersteps, not after some time: on a loaded
    # machine 50 ms had run fewer than the six supersteps asked for below)
    while len(counter.stored_at_call) < 10:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (run,) = await store.runs()
    infos = await store.list(run.run_id)
    assert len(infos) > 5
    assert [i.superstep for i in infos] == list(range(len(infos)))  # none missing
    resumed = await counting(store, "async", 1_000)[0].run(checkpoint=infos[-1].id)
    assert resumed.outputs == [1_000]


@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_the_store_records_how_a_run_ended(durability: str) -> None:
    """Failed, non-converged and cancelled runs are listed as such, not as
    in progress; a resumed run that finishes shows its checkpoint's status."""
    store = sg.MemoryCheckpointStore()

    @sg.executor(id="boom")
    async def boom(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    config = sg.CheckpointConfig(store, durability)  # type: ignore[arg-type]
    with pytest.raises(sg.WorkflowRunError):
        await sg.WorkflowBuilder(start=boom, checkpoints=config).build().run(1)
    workflow, _ = counting(store, durability, 1_000, pause=0.001)
    with pytest.raises(sg.ConvergenceError):
        await (
            sg.WorkflowBuilder(start=workflow.start, checkpoints=config, max_supersteps=3)
            .add_edge("counter", "counter")
            .build()
            .run(0)
        )
    task = asyncio.ensure_future(counting(store, durability, 1_000, pause=0.001)[0].run(0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled, converged, failed = await store.runs()
    assert (failed.status, failed.error) == (
        "failed",
        "executor 'boom' failed in superstep 1: RuntimeError: boom 1",
    )
    assert converged.status == "failed" and "did not converge" in (converged.error or "")
    assert (cancelled.status, cancelled.error) == ("cancelled", CANCELLED_HERE)
    resumed = await counting(store, durability, 1_000)[0].run(checkpoint=cancelled.last_checkpoint)
    assert resumed.outputs == [1_000]
    [again] = await store.runs(limit=1)
    assert (again.run_id, again.status, again.error) == (cancelled.run_id, "idle", None)


class SlowSqlite(sg.SqliteCheckpointStore):
    """SQLite whose writes take 30 ms on the store's thread."""

    def _write(self, *args: Any) -> None:
        time.sleep(0.03)
        super()._write(*args)


class SlowPostgres(sg.PostgresCheckpointStore):
    """PostgreSQL whose writes take 30 ms on the store's thread."""

    def _write(self, *args: Any) -> None:
        time.sleep(0.03)
        super()._write(*args)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("durability", ["sync", "async"])
@pytest.mark.parametrize("at", [0.01, 0.045])  # the entry's save, a barrier's
async def test_a_run_cancelled_while_a_save_is_under_way_ends_cancelled_and_resumable(
    kind: str, durability: str, at: float, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The save goes on in the store's thread whatever the run does: the
    run's cancel goes through once it has ended, so that how the run ended
    is recorded, and its lease given back, after it (else the run stayed
    listed in progress, or held by this process)."""
    store: sg.CheckpointStore
    if kind == "sqlite":
        store = SlowSqlite(tmp_path / "slow.sqlite")
    else:
        store = SlowPostgres(request.getfixturevalue("pg_dsn"))
    try:
        workflow, _ = counting(store, durability, 5, pause=0.005)
        task = asyncio.ensure_future(workflow.run(0))
        await asyncio.sleep(at)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [run] = await store.runs()
        assert run.status == "cancelled", run
        assert await store.lease_holder(run.run_id) is None
        resumed = await counting(store, durability, 5)[0].run(checkpoint=run.last_checkpoint)
        assert resumed.outputs == [5]
    finally:
        store.close()  # type: ignore[attr-defined]


class SlowLast:
    """A store whose write of a run's last checkpoint (idle) takes 0.2 s on
    its thread, saying when it started."""

    started: threading.Event

    def _write(self, checkpoints: Any, *args: Any) -> None:
        if any(cp.status == "idle" for cp in checkpoints):
            self.started.set()
            time.sleep(0.2)
        super()._write(checkpoints, *args)  # type: ignore[misc]


class SlowLastSqlite(SlowLast, sg.SqliteCheckpointStore):
    pass


class SlowLastPostgres(SlowLast, sg.PostgresCheckpointStore):
    pass


class Blocking(sg.Executor):
    """Counts to 4, holding the loop 8 ms per superstep (past the batching
    delay, with no turn for the writer: every second barrier writes the
    queue itself — the last one among them)."""

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int, int]) -> None:
        time.sleep(0.008)  # noqa: ASYNC251  (holding the loop is the point)
        if n < 4:
            await ctx.send_message(n + 1)
        else:
            await ctx.yield_output(n)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_a_run_cancelled_while_its_last_checkpoint_is_saved_ends_as_it_says(
    kind: str, durability: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The last checkpoint (idle) is stored whatever cancels the run
    meanwhile, and then says how the run ended: it is not listed cancelled
    (with ``async`` durability it was, when the barrier wrote it itself)."""
    store: SlowLast
    if kind == "sqlite":
        store = SlowLastSqlite(tmp_path / "last.sqlite")
    else:
        store = SlowLastPostgres(request.getfixturevalue("pg_dsn"))
    store.started = threading.Event()
    try:
        config = sg.CheckpointConfig(store, durability)  # type: ignore[arg-type]
        workflow = (
            sg.WorkflowBuilder(start=Blocking("b"), checkpoints=config).add_edge("b", "b").build()
        )
        task = asyncio.ensure_future(workflow.run(0))
        while not store.started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [run] = await store.runs()  # type: ignore[attr-defined]
        assert (run.status, run.error, run.superstep) == ("idle", None, 5), run
        assert await store.lease_holder(run.run_id) is None  # type: ignore[attr-defined]
    finally:
        store.close()  # type: ignore[attr-defined]


class WatchingLeases(sg.SqliteCheckpointStore):
    """Notes who holds a run's lease when how it ended is recorded."""

    held_when_recorded: list[str | None]

    async def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        self.held_when_recorded.append(await self.lease_holder(run_id))
        await super().set_status(run_id, status, error)


async def test_a_cancelled_run_holds_its_lease_until_its_end_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its queued checkpoints are written, its ``cancelled`` recorded, and
    only then its lease given back: another process taking the run in
    between would have had its own progress overwritten as cancelled (the
    lease went back with the last write)."""
    monkeypatch.setattr("stepgraph._recorder.ASYNC_BATCH_DELAY", 10.0)  # (all queued till then)
    store = WatchingLeases(tmp_path / "leases.sqlite")
    store.held_when_recorded = []
    try:
        workflow, _ = counting(store, "async", 1_000, pause=0.001)
        task = asyncio.ensure_future(workflow.run(0))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [run] = await store.runs()
        assert run.status == "cancelled" and run.superstep > 1
        [holder] = store.held_when_recorded
        assert holder is not None  # (this process: it was None)
        assert await store.lease_holder(run.run_id) is None  # given back after
    finally:
        store.close()
