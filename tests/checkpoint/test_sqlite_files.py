"""The SQLite file as a user meets it: errors carry SQLite's own cause (a full
disk and a lock held elsewhere are not integrity errors), a store that does
not exist is not created by reading, a read-only store can be listed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import stepgraph as sg
from tests.checkpoint.test_stores import make


async def test_a_full_disk_is_a_plain_checkpoint_error(tmp_path: Path) -> None:
    store = sg.SqliteCheckpointStore(tmp_path / "full.sqlite")
    await store.save(make("a", k=b"small"))
    # Cap the file at its current size: the next write finds the disk full,
    # and SQLite rolls the transaction back on its own.
    store._worker.call(lambda: store._db().execute("PRAGMA max_page_count = 1"))
    with pytest.raises(sg.CheckpointError) as raised:
        await store.save(make("b", parent="a", step=1, k=b"x" * 100_000))
    assert not isinstance(raised.value, sg.CheckpointIntegrityError)
    assert "writing checkpoints failed: database or disk is full (SQLITE_FULL)" in str(raised.value)
    assert "cannot rollback" not in str(raised.value)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    store._worker.call(lambda: store._db().execute("PRAGMA max_page_count = 1000000"))
    await store.save(make("b", parent="a", step=1, k=b"x" * 100_000))  # room again
    assert [i.id for i in await store.list()] == ["a", "b"]
    store.close()


async def test_a_lock_held_elsewhere_is_a_plain_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite"
    store = sg.SqliteCheckpointStore(path, busy_timeout=0.1)
    await store.save(make("a"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing, for a long time
    try:
        with pytest.raises(sg.CheckpointError) as raised:
            await store.save(make("b", parent="a", step=1))
        assert not isinstance(raised.value, sg.CheckpointIntegrityError)
        message = str(raised.value)
        assert "database is locked" in message
        assert "held a write lock longer than busy_timeout=0.1 s" in message
        assert [i.id for i in await store.list()] == ["a"]  # reading still works
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.save(make("b", parent="a", step=1))
    store.close()


async def test_a_damaged_file_is_an_integrity_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.sqlite"
    store = sg.SqliteCheckpointStore(path)
    for i in range(50):
        await store.save(make(f"c{i}", step=i, k=bytes([i]) * 5_000))
    store.vacuum()
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[page:] = b"\xff" * (len(data) - page)  # scribble over every page but the first
    path.write_bytes(bytes(data))
    store = sg.SqliteCheckpointStore(path)
    with pytest.raises(sg.CheckpointIntegrityError, match="the file is damaged") as raised:
        await store.load("c7")
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
    store.close()


async def test_reading_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "x.sqlite"
    for store in (
        sg.SqliteCheckpointStore(missing, create=False),
        sg.SqliteCheckpointStore(missing, readonly=True),
    ):
        with pytest.raises(sg.CheckpointError, match=r"no checkpoint store at .*x.sqlite"):
            await store.list()
        store.close()
    assert not missing.parent.exists()
    # Creating one needs its folder; the message says which is missing.
    store = sg.SqliteCheckpointStore(missing)
    with pytest.raises(sg.CheckpointError, match=r"the folder '.*typo' does not exist"):
        await store.save(make("a"))
    store.close()
    assert not missing.parent.exists()
    fresh = sg.SqliteCheckpointStore(tmp_path / "new.sqlite")
    assert not fresh.created
    await fresh.list()
    assert fresh.created
    fresh.close()
    again = sg.SqliteCheckpointStore(tmp_path / "new.sqlite")
    await again.list()
    assert not again.created
    again.close()


async def test_a_read_only_store_lists_and_loads_but_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "ro.sqlite"
    with sg.SqliteCheckpointStore(path) as store:
        await store.save(make("a", k=b"value"))
    before = path.read_bytes()
    reader = sg.SqliteCheckpointStore(path, readonly=True)
    assert [i.id for i in await reader.list()] == ["a"]
    assert [r.run_id for r in await reader.runs()] == ["r1"]
    assert (await reader.load("a")).superstep == 0
    with pytest.raises(sg.CheckpointError, match="readonly"):
        await reader.save(make("b", parent="a", step=1))
    reader.close()
    assert path.read_bytes() == before
