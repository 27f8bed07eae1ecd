"""Checkpoint stores: the protocol on every store, SQLite specifics, integrity."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

import stepgraph as sg
from stepgraph._checkpoint import MemoryCheckpointStore, blob_hash


def make(
    cid: str, run: str = "r1", parent: str | None = None, step: int = 0, **blobs: bytes
) -> sg.Checkpoint:
    hashed = {blob_hash(b): b for b in blobs.values()}
    return sg.Checkpoint(
        id=cid,
        run_id=run,
        workflow="wf",
        signature="sig",
        superstep=step,
        parent_id=parent,
        created_at=1.0 + step,
        status="in_progress",
        body={"state": {k: blob_hash(v) for k, v in blobs.items()}},
        refs=tuple(sorted(hashed)),
        blobs=hashed,
    )


async def test_save_load_latest_list(store: sg.CheckpointStore) -> None:
    await store.save(make("a", step=0, k=b"1"))
    await store.save(make("b", parent="a", step=1, k=b"2"), make("c", parent="b", step=2, k=b"2"))
    await store.save(make("x", run="r2", step=0))
    loaded = await store.load("b")
    assert loaded.parent_id == "a" and loaded.superstep == 1
    assert dict(loaded.blobs) == {blob_hash(b"2"): b"2"}
    latest = await store.latest("r1")
    assert latest is not None and latest.id == "c"
    assert await store.latest("nope") is None
    assert [i.id for i in await store.list("r1")] == ["a", "b", "c"]
    assert [i.id for i in await store.list(workflow="wf")] == ["a", "b", "c", "x"]
    assert [i.run_id for i in await store.runs()] == ["r1", "r2"]
    with pytest.raises(sg.CheckpointNotFoundError, match="'zzz'"):
        await store.load("zzz")


async def test_values_are_stored_once(store: sg.CheckpointStore) -> None:
    big = b"x" * 10_000
    await store.save(make("a", k=big))
    # "b" references the same value without sending it again.
    b = make("b", parent="a", step=1, k=big)
    await store.save(
        sg.Checkpoint(**{**{f: getattr(b, f) for f in b.__dataclass_fields__}, "blobs": {}})
    )
    assert (await store.load("b")).blobs == {blob_hash(big): big}
    infos = await store.list()
    assert infos[0].size > 10_000 > infos[1].size


async def test_missing_value_is_refused(store: sg.CheckpointStore) -> None:
    bad = make("a", k=b"1")
    bad = sg.Checkpoint(**{**{f: getattr(bad, f) for f in bad.__dataclass_fields__}, "blobs": {}})
    with pytest.raises(sg.CheckpointIntegrityError, match="does not hold"):
        await store.save(bad)
    assert await store.list() == []


async def test_delete_prune_and_garbage_collection(store: sg.CheckpointStore) -> None:
    for i in range(5):
        await store.save(
            make(f"c{i}", step=i, parent=f"c{i - 1}" if i else None, k=str(i).encode())
        )
    await store.save(make("other", run="r2", k=b"shared"))
    assert await store.prune("r1", keep_last=2) == 3
    assert [i.id for i in await store.list("r1")] == ["c3", "c4"]
    assert (await store.load("c4")).blobs == {blob_hash(b"4"): b"4"}
    with pytest.raises(sg.CheckpointNotFoundError):
        await store.load("c0")
    await store.delete("c3")
    assert await store.delete_run("r2") == 1
    with pytest.raises(sg.CheckpointNotFoundError, match="no run"):
        await store.delete_run("r2")
    with pytest.raises(ValueError, match="keep_last"):
        await store.prune(keep_last=0)
    if isinstance(store, sg.MemoryCheckpointStore):
        assert store.blob_bytes == 1  # only c4's value is left


async def test_memory_store_never_aliases() -> None:
    store = sg.MemoryCheckpointStore()
    body = {"state": {}, "list": [1]}
    cp = make("a")
    cp = sg.Checkpoint(**{**{f: getattr(cp, f) for f in cp.__dataclass_fields__}, "body": body})
    await store.save(cp)
    body["list"].append(2)
    loaded = await store.load("a")
    assert loaded.body["list"] == [1]
    loaded.body["list"].append(3)
    assert (await store.load("a")).body["list"] == [1]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_signed_checkpoints_refuse_tampering(kind: str, tmp_path: Path) -> None:
    secret = b"0123456789abcdef-secret"
    path = tmp_path / "signed.sqlite"
    store: MemoryCheckpointStore | sg.SqliteCheckpointStore = (
        sg.SqliteCheckpointStore(path, secret=secret)
        if kind == "sqlite"
        else sg.MemoryCheckpointStore(secret=secret)
    )
    await store.save(make("a", k=b"value"))
    assert (await store.load("a")).id == "a"
    if isinstance(store, sg.SqliteCheckpointStore):
        store.close()
        with sqlite3.connect(path) as db:
            record = bytearray(db.execute("SELECT record FROM checkpoints").fetchone()[0])
            record[record.index(b'"superstep":0') + 12] = ord("7")  # flip one byte
            db.execute("UPDATE checkpoints SET record = ?", (bytes(record),))
        db.close()
        store = sg.SqliteCheckpointStore(path, secret=secret)
        with pytest.raises(sg.CheckpointIntegrityError, match="signature does not match"):
            await store.load("a")
        # An unsigned checkpoint is refused by a store that requires signatures.
        unsigned = sg.SqliteCheckpointStore(path)
        await unsigned.save(make("u", run="r9"))
        unsigned.close()
        with pytest.raises(sg.CheckpointIntegrityError, match="unsigned"):
            await store.load("u")
        store.close()
    else:
        row = store._rows_by_id["a"]  # type: ignore[attr-defined]
        flipped = bytearray(row.record)
        flipped[row.record.index(b'"superstep":0') + 12] = ord("7")
        store._rows_by_id["a"] = dataclasses.replace(row, record=bytes(flipped))  # type: ignore[attr-defined]
        with pytest.raises(sg.CheckpointIntegrityError):
            await store.load("a")


async def test_corrupt_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    store = sg.SqliteCheckpointStore(path)
    await store.save(make("a", k=b"value"))
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE blobs SET data = ?", (b"valuf",))
    db.close()
    store = sg.SqliteCheckpointStore(path)
    with pytest.raises(sg.CheckpointIntegrityError, match="corrupt"):
        await store.load("a")
    store.close()


async def test_corrupt_database_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-db.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = sg.SqliteCheckpointStore(path)
    with pytest.raises(sg.CheckpointError, match="not-a-db.sqlite"):
        await store.list()
    store.close()


async def test_sqlite_prune_shrinks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.sqlite"
    store = sg.SqliteCheckpointStore(path)
    for i in range(20):
        await store.save(make(f"c{i}", step=i, k=bytes([i]) * 200_000))
    before = path.stat().st_size + Path(f"{path}-wal").stat().st_size
    await store.prune(keep_last=2)
    after = path.stat().st_size + (
        Path(f"{path}-wal").stat().st_size if Path(f"{path}-wal").exists() else 0
    )
    assert after < before / 5, (before, after)
    assert [i.id for i in await store.list()] == ["c18", "c19"]
    store.close()
    assert sg.SqliteCheckpointStore(path).integrity_check() == "ok"


def test_store_is_usable_across_event_loops(tmp_path: Path) -> None:
    import asyncio

    store = sg.SqliteCheckpointStore(tmp_path / "loops.sqlite")
    asyncio.run(store.save(make("a")))
    assert asyncio.run(store.load("a")).id == "a"
    store.close()
    store.close()  # idempotent
