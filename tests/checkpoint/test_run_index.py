"""The run index of every store: runs newest first, paginated and filtered;
how a run ended; which run owns a request; values kept while any run needs
them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import stepgraph as sg
from stepgraph._checkpoint import blob_hash, new_holder
from tests.checkpoint.test_stores import make


async def test_runs_describe_each_run(store: sg.CheckpointStore) -> None:
    await store.save(make("a", step=0, k=b"1"), make("b", parent="a", step=1, k=b"22"))
    second = dataclasses.replace(make("c", parent="b", step=2), pending_requests=2)
    await store.save(second)
    [run] = await store.runs()
    infos = await store.list("r1")
    assert run == sg.RunInfo(
        run_id="r1",
        workflow="wf",
        signature="sig",
        status="in_progress",
        superstep=2,
        pending_requests=2,
        last_checkpoint="c",
        checkpoints=3,
        size=run.size,
        started_at=1.0,
        updated_at=3.0,
        error=None,
    )
    # Bytes of the stored records and of the values they introduced: the
    # checkpoints' own sizes, plus in SQLite each record's framing.
    listed = sum(i.size for i in infos)
    if isinstance(store, sg.MemoryCheckpointStore):
        assert run.size == listed
    else:
        assert listed < run.size < listed + 2 * 300


async def test_runs_are_paginated_and_filtered(store: sg.CheckpointStore) -> None:
    for n in range(7):
        cp = make(f"c{n}", run=f"r{n}")
        if n % 2:
            cp = dataclasses.replace(cp, workflow="odd", signature="odd-sig")
        await store.save(cp)
    await store.save(make("again", run="r2", parent="c2", step=1))  # r2 goes on
    order = [r.run_id for r in await store.runs()]
    assert order == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]  # by start: pages stay put
    pages, before = [], None
    while page := await store.runs(limit=3, before=before):
        pages.append([r.run_id for r in page])
        before = page[-1].run_id
    assert pages == [["r6", "r5", "r4"], ["r3", "r2", "r1"], ["r0"]]
    assert [r.run_id for r in await store.runs(workflow="odd")] == ["r5", "r3", "r1"]
    assert [r.run_id for r in await store.runs(signature="odd-sig", limit=1)] == ["r5"]
    assert [r.run_id for r in await store.runs(workflow="odd", before="r5")] == ["r3", "r1"]
    with pytest.raises(sg.CheckpointNotFoundError, match="no run 'gone'"):
        await store.runs(before="gone")
    with pytest.raises(ValueError, match="limit"):
        await store.runs(limit=0)


async def test_a_run_ending_after_its_checkpoint_shows_how(store: sg.CheckpointStore) -> None:
    await store.save(make("a"))
    await store.save(make("x", run="r2"))
    await store.set_status("r1", "failed", "executor 'x' failed: boom")
    await store.set_status("r2", "cancelled")
    await store.set_status("unknown", "failed")  # a run the store does not hold: ignored
    by_id = {r.run_id: r for r in await store.runs()}
    assert (by_id["r1"].status, by_id["r1"].error) == ("failed", "executor 'x' failed: boom")
    assert (by_id["r2"].status, by_id["r2"].error) == ("cancelled", None)
    assert [r.run_id for r in await store.runs(status="failed")] == ["r1"]
    # The run goes on (a resume): its latest checkpoint says how it stands.
    await store.save(make("b", parent="a", step=1))
    [r1] = await store.runs(status="in_progress")
    assert (r1.run_id, r1.error) == ("r1", None)
    with pytest.raises(ValueError, match="status must be one of"):
        await store.set_status("r1", "idle")


async def test_runs_and_set_status_take_a_run_status_and_runs_refuse_an_unknown_one(
    store: sg.CheckpointStore,
) -> None:
    # (RunStatus.FAILED failed on a missing str method — set_status said it
    # was not one of ['cancelled', 'failed'] — and a misspelt status,
    # "canceled" or "FAILED", listed no run at all)
    await store.save(make("a"))
    await store.save(make("x", run="r2"))
    await store.set_status("r1", sg.RunStatus.FAILED, "boom")
    assert [r.run_id for r in await store.runs(status=sg.RunStatus.FAILED)] == ["r1"]
    assert [r.run_id for r in await store.runs(status=sg.RunStatus.IN_PROGRESS)] == ["r2"]
    assert await store.runs(status=sg.RunStatus.CANCELLED) == []
    for wrong in ("canceled", "FAILED", "done", ""):
        with pytest.raises(ValueError, match=f"unknown status '{wrong}'; use a RunStatus or one"):
            await store.runs(status=wrong)


async def test_a_name_or_count_of_the_wrong_type_is_refused_naming_it(
    store: sg.CheckpointStore,
) -> None:
    # (request_cancel(7) and every lookup by an int id failed with "'int'
    # object has no attribute 'isascii'", limit="3" with "'<' not supported")
    await store.save(make("a"))
    calls: list[tuple[str, Any]] = [
        ("request_cancel: run_id= takes a run id", lambda: store.request_cancel(7)),
        ("load: checkpoint_id= takes a checkpoint id", lambda: store.load(7)),
        ("latest: run_id=", lambda: store.latest(7)),
        ("list: workflow= takes a workflow name", lambda: store.list(workflow=7)),
        ("runs: before= takes a run id", lambda: store.runs(before=7)),
        ("run_info: run_id=", lambda: store.run_info(7)),
        ("find_request: request_id= takes a request id", lambda: store.find_request(7)),
        ("delete: checkpoint_id=", lambda: store.delete(7)),
        ("delete_run: run_id=", lambda: store.delete_run(7)),
        ("prune: run_id=", lambda: store.prune(7)),
        ("set_status: run_id=", lambda: store.set_status(7, "failed")),
        ("answers: request_id=", lambda: store.answers("r1", [7])),
    ]
    for said, call in calls:
        with pytest.raises(TypeError, match=f"^{said}.*, a string: 7 is an int$"):
            await call()
    with pytest.raises(ValueError, match="limit must be a whole number, at least 1, got '3'"):
        await store.runs(limit="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep_last >= 1.*got keep_last='1'"):
        await store.prune(keep_last="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a count >= 0, got .*last='2'"):
        await store.list("r1", last="2")  # type: ignore[arg-type]
    assert [c.id for c in await store.list("r1")] == ["a"]  # (nothing was touched)


async def test_the_run_of_a_request_is_found(store: sg.CheckpointStore) -> None:
    opened = dataclasses.replace(make("a"), pending_requests=2, request_ids=("q1", "q2"))
    await store.save(opened, make("b", parent="a", step=1))  # b: both answered
    await store.save(dataclasses.replace(make("x", run="r2"), request_ids=("q3",)))
    found = await store.find_request("q2")
    assert found is not None and (found.run_id, found.last_checkpoint) == ("r1", "b")
    assert (await store.find_request("q3")).run_id == "r2"  # type: ignore[union-attr]
    assert await store.find_request("nope") is None
    await store.delete_run("r1")
    assert await store.find_request("q1") is None


async def test_values_stay_while_any_run_references_them(store: sg.CheckpointStore) -> None:
    shared = b"s" * 1_000
    await store.save(make("a", run="r1", k=shared, own=b"only r1"))
    await store.save(make("b", run="r2", k=shared))
    await store.save(make("c", run="r2", parent="b", step=1, k=b"newer"))
    assert await store.delete_run("r1") == 1
    assert (await store.load("b")).blobs == {blob_hash(shared): shared}
    await store.prune("r2", keep_last=1)
    assert (await store.load("c")).blobs == {blob_hash(b"newer"): b"newer"}
    if isinstance(store, sg.MemoryCheckpointStore):
        assert store.blob_bytes == len(b"newer")
    elif isinstance(store, sg.PostgresCheckpointStore):
        import psycopg

        with psycopg.connect(store.dsn) as db:
            held = sorted(h for (h,) in db.execute("SELECT hash FROM stepgraph_blobs"))
        assert held == [blob_hash(b"newer")]
    else:
        import sqlite3

        assert isinstance(store, sg.SqliteCheckpointStore)
        with sqlite3.connect(store.path) as db:
            held = sorted(h for (h,) in db.execute("SELECT hash FROM blobs"))
        db.close()
        assert held == [blob_hash(b"newer")]


async def test_deleting_the_latest_checkpoint_moves_the_run_back(
    store: sg.CheckpointStore,
) -> None:
    await store.save(make("a"), make("b", parent="a", step=1))
    await store.set_status("r1", "failed", "boom")
    await store.delete("b")
    [run] = await store.runs()
    assert (run.last_checkpoint, run.superstep, run.checkpoints) == ("a", 0, 1)
    assert (run.status, run.error) == ("in_progress", None)  # a's own status
    await store.delete("a")
    assert await store.runs() == []


async def test_values_written_while_a_run_is_pruned_are_kept(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pruning reads the run before it takes the write lock; a checkpoint the
    run writes meanwhile (referencing a value the pruned ones held) keeps
    that value."""
    from pathlib import Path

    from stepgraph._checkpoint import _sqlite_delete

    store = sg.SqliteCheckpointStore(Path(str(tmp_path)) / "racing.sqlite")
    await store.save(make("c0", k=b"A"))
    await store.save(make("c1", parent="c0", step=1, k=b"B"))
    await store.save(make("c2", parent="c1", step=2, k=b"A"))
    later = make("c3", parent="c2", step=3, k=b"B")
    later = dataclasses.replace(later, blobs={})  # B is stored already
    read = _sqlite_delete.Plan.read

    def read_then_write(*args: object) -> object:
        plan = read(*args)  # type: ignore[arg-type]
        store._write_new((later,))  # the run goes on, in another "process"
        return plan

    monkeypatch.setattr(_sqlite_delete.Plan, "read", read_then_write)
    assert await store.prune(keep_last=1) == 2
    assert [i.id for i in await store.list()] == ["c2", "c3"]
    assert (await store.load("c3")).blobs == {blob_hash(b"B"): b"B"}
    [run] = await store.runs()
    assert (run.checkpoints, run.last_checkpoint) == (2, "c3")
    store.close()


async def test_only_a_running_run_is_asked_to_cancel(store: sg.CheckpointStore) -> None:
    def at(cid: str, status: str, step: int, run: str = "r1") -> sg.Checkpoint:
        parent = None if step == 0 else f"{run}-{step - 1}"
        return dataclasses.replace(make(cid, run=run, parent=parent, step=step), status=status)

    await store.save(at("r1-0", "in_progress", 0))
    # Listed as going on, but no process holds it (it ended without saying so).
    assert not await store.request_cancel("r1")
    holder = new_holder()  # (as the run's process holds it while it goes on)
    assert await store.lease("r1", holder) is None and await store.lease("r2", holder) is None
    assert await store.request_cancel("r1")
    await store.save(at("r1-1", "in_progress_pending_requests", 1))
    assert await store.request_cancel("r1")
    # Nothing runs: paused, idle, waiting for answers, or ended after its checkpoint.
    for step, status in enumerate(["paused", "idle", "idle_with_pending_requests"], start=2):
        await store.save(at(f"r1-{step}", status, step))
        assert not await store.request_cancel("r1"), status
    await store.save(at("r1-5", "in_progress", 5))
    for ending in ("failed", "cancelled"):
        await store.set_status("r1", ending)
        assert not await store.request_cancel("r1"), ending
    assert not await store.request_cancel("unknown")
    # A refused cancel is not kept for later: the run resumes and goes on.
    await store.save(at("r2-0", "paused", 0, run="r2"))
    assert not await store.request_cancel("r2")
    await store.save(at("r2-1", "in_progress", 1, run="r2"))
    assert not store.cancel_requested("r2", 0.0)
    assert await store.request_cancel("r2")
    for run_id in ("r1", "r2"):
        await store.release(run_id, holder)


@pytest.mark.parametrize(
    ("durability", "save_fails", "listed"),
    [("sync", False, "idle"), ("async", False, "idle"), ("sync", True, "cancelled")],
)
async def test_a_run_cancelled_while_its_last_checkpoint_is_saved(
    store: sg.CheckpointStore, durability: str, save_fails: bool, listed: str
) -> None:
    """Ctrl-C while the run's final checkpoint is being written: the write
    lands (the store's thread finishes it), so the run is listed as that
    checkpoint says (idle), not ``cancelled`` — unless that write fails,
    when the run is listed cancelled (not as its older checkpoint says)."""
    import asyncio

    @sg.executor(id="last")
    async def last(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)

    config = sg.CheckpointConfig(store, durability)  # type: ignore[arg-type]
    workflow = sg.WorkflowBuilder(start=last, checkpoints=config).build()
    saving = store.save

    async def save_then_cancel(*checkpoints: sg.Checkpoint) -> None:
        if any(cp.status == "idle" for cp in checkpoints) and task is not None:
            task.cancel()  # arrives while the save is under way
            if save_fails:
                await asyncio.sleep(0)
                raise OSError("disk full")
        await saving(*checkpoints)

    store.save = save_then_cancel  # type: ignore[method-assign]
    task: asyncio.Task[sg.RunResult] | None = None
    task = asyncio.ensure_future(workflow.run(7))
    with pytest.raises(asyncio.CancelledError):
        await task
    [run] = await store.runs()
    assert run.status == listed
    latest = await store.latest(run.run_id)
    assert latest is not None and run.last_checkpoint == latest.id
    assert latest.status == ("in_progress" if save_fails else "idle")
