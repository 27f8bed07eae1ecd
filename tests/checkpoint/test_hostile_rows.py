"""Stored rows written by someone with write access to the database (but
not the secret): whatever their shape, reading them raises a checkpoint
error naming the record, never a bare Python error."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg


class Gate(sg.Executor):
    @sg.handler
    async def ask(self, text: str, ctx: sg.WorkflowContext[None, str]) -> None:
        ctx.state.set("seen", text)
        await ctx.request_info(text, bool)

    @sg.response_handler
    async def decided(self, text: str, yes: bool, ctx: sg.WorkflowContext[None, str]) -> None:
        await ctx.yield_output(f"{text}: {yes}")


def gate() -> sg.Workflow:
    return sg.WorkflowBuilder(start=Gate("gate"), name="gate").build()


def stored_run(path: Path) -> str:
    """A run waiting for an answer, stored in a new file; its last checkpoint's id."""

    async def run() -> str:
        with sg.SqliteCheckpointStore(path) as store:
            result = await gate().run("hello", checkpoints=store)
            info = await store.run_info(result.run_id)
            assert info is not None
            return info.last_checkpoint

    return asyncio.run(run())


def edit_entries(path: Path, change: Callable[[list[Any]], None]) -> None:
    """Change every stored checkpoint entry of every segment (as raw JSON)."""
    with sqlite3.connect(path) as db:
        for seq, data in db.execute("SELECT seq, data FROM segments").fetchall():
            doc = json.loads(data)
            for entry in doc[4]:
                change(entry)
            db.execute(
                "UPDATE segments SET data = ? WHERE seq = ?", (json.dumps(doc).encode(), seq)
            )
    db.close()


def body_field(name: str, value: Any) -> Callable[[list[Any]], None]:
    return lambda entry: entry[8].__setitem__(name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("state", []), ("state", "x"), ("snapshots", "x"), ("snapshots", [1])],
)
def test_a_body_field_of_the_wrong_shape_is_refused_on_resume(
    tmp_path: Path, name: str, value: Any
) -> None:
    path = tmp_path / "runs.sqlite"
    checkpoint = stored_run(path)
    edit_entries(path, body_field(name, value))

    async def resume() -> None:
        with sg.SqliteCheckpointStore(path) as store:
            await gate().run(checkpoint=checkpoint, checkpoints=store)

    with pytest.raises(sg.CheckpointDecodeError, match=f"checkpoint {checkpoint} is malformed"):
        asyncio.run(resume())


@pytest.mark.parametrize("created", ["1" + "0" * 400, "1e400", "-1e400"])
@pytest.mark.parametrize("secret", [None, b"s" * 16])
def test_a_creation_time_no_float_holds_is_refused(
    tmp_path: Path, created: str, secret: bytes | None
) -> None:
    path = tmp_path / "runs.sqlite"

    async def make() -> tuple[str, str]:
        with sg.SqliteCheckpointStore(path, secret=secret) as store:
            result = await gate().run("hello", checkpoints=store)
            info = await store.run_info(result.run_id)
            assert info is not None
            return result.run_id, info.last_checkpoint

    run_id, checkpoint = asyncio.run(make())
    with sqlite3.connect(path) as db:  # (written as JSON text: Python's json writes no 1e400)
        for seq, data in db.execute("SELECT seq, data FROM segments").fetchall():
            doc = json.loads(data)
            for entry in doc[4]:
                entry[3] = "@created@"
            text = json.dumps(doc).replace('"@created@"', created)
            db.execute("UPDATE segments SET data = ? WHERE seq = ?", (text.encode(), seq))
    db.close()

    async def read() -> None:
        with sg.SqliteCheckpointStore(path, secret=secret) as store:
            with pytest.warns(sg.CheckpointWarning, match="damaged"):
                assert await store.list() == []
            with pytest.raises(sg.CheckpointIntegrityError, match="created_at"):
                await store.load(checkpoint)
            with pytest.raises(sg.CheckpointIntegrityError, match="created_at"):
                await store.latest(run_id)

    asyncio.run(read())


@pytest.mark.parametrize("outputs", [5, "text", {"a": 1}, None])
@pytest.mark.parametrize("slice_", [None, (0, 1), (-1, None)])
def test_outputs_that_are_not_a_list_are_refused(
    tmp_path: Path, outputs: Any, slice_: tuple[int, int | None] | None
) -> None:
    path = tmp_path / "runs.sqlite"
    checkpoint = stored_run(path)
    edit_entries(path, body_field("outputs", outputs))

    async def read() -> None:
        with sg.SqliteCheckpointStore(path) as store:
            if slice_ is None:
                await store.outputs(checkpoint)
            else:  # (counted, if not returned: refused all the same)
                await store.outputs_slice(checkpoint, *slice_)

    with pytest.raises(sg.CheckpointIntegrityError, match="its outputs are not a list"):
        asyncio.run(read())


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("status", b"idle"),
        ("error", b"\xff\x00"),
        ("superstep", "x"),
        ("pending_requests", 1.5),
        ("last_checkpoint", b"x"),
        ("started_at", "yesterday"),
        ("updated_at", float("inf")),
        ("started_at", 10**30 * 10**300),
        ("workflow", b"gate"),
    ],
)
def test_a_run_record_of_the_wrong_types_is_refused_and_skipped_in_listings(
    tmp_path: Path, column: str, value: Any
) -> None:
    path = tmp_path / "runs.sqlite"
    stored_run(path)
    other = stored_run(path)  # (a second run, left intact)

    async def ids() -> list[str]:
        with sg.SqliteCheckpointStore(path) as store:
            return [info.run_id for info in await store.runs()]

    damaged, intact = asyncio.run(ids())
    with sqlite3.connect(path) as db:
        if isinstance(value, int) and value > 2**63:  # (beyond SQLite's int: stored as text)
            value = str(value)
        db.execute(f"UPDATE runs SET {column} = ? WHERE run_id = ?", (value, damaged))
    db.close()

    async def read() -> None:
        with sg.SqliteCheckpointStore(path) as store:
            with pytest.warns(sg.CheckpointWarning, match=f"damaged run record.*{damaged}"):
                assert [info.run_id for info in await store.runs()] == [intact]
            with pytest.raises(sg.CheckpointIntegrityError, match=f"run '{damaged}'.*{column}"):
                await store.run_info(damaged)
            assert (await store.run_info(intact)) is not None
            assert await store.delete_run(damaged) >= 1  # (removed without reading it)
            assert await store.run_info(damaged) is None

    asyncio.run(read())
    assert other
