"""Checkpoint stores: the protocol on every store, SQLite specifics, integrity."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from stepgraph._checkpoint import MemoryCheckpointStore, blob_hash, new_holder
from stepgraph._checkpoint._store import BaseStore


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
    assert [i.run_id for i in await store.runs()] == ["r2", "r1"]  # most recent first
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
    # With a new value beside the missing one, and a second run in the save:
    # nothing of the save is kept, the new value neither.
    partly = make("b", k=b"2", j=b"3")
    partly = dataclasses.replace(partly, blobs={blob_hash(b"3"): b"3"})
    with pytest.raises(sg.CheckpointIntegrityError, match="does not hold"):
        await store.save(make("c", run="r2", k=b"4"), partly)
    assert await store.list() == [] and await store.runs() == []
    with pytest.raises(sg.CheckpointIntegrityError, match="does not hold"):
        await store.save(dataclasses.replace(make("d", run="r3", j=b"3"), blobs={}))


async def test_a_running_run_is_not_deleted_from_under_it(store: sg.CheckpointStore) -> None:
    from tests.test_pauses import long_step

    workflow = sg.WorkflowBuilder(start=long_step).add_edge(long_step, long_step).build()
    task = asyncio.create_task(workflow.run(0, checkpoints=store))
    while len(await store.list()) < 2:  # the entry and the first barrier: the long step runs
        await asyncio.sleep(0.02)
    [run] = await store.runs()
    with pytest.raises(
        sg.CheckpointError, match=r"is running \(another call in this process, \d+ on .*nothing was"
    ):
        await store.delete_run(run.run_id)
    with pytest.raises(
        sg.CheckpointError, match=r"is running \(another call in this process, \d+ on .*nothing was"
    ):
        await store.delete(run.last_checkpoint)  # one checkpoint of it neither
    assert len(await store.list(run.run_id)) == 2  # untouched
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.delete_run(run.run_id) == 2  # stopped: it goes
    assert await store.runs() == []
    with pytest.raises(sg.CheckpointNotFoundError):
        await store.delete_run(run.run_id)


@sg.executor(id="twice")
async def twice(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await ctx.yield_output(n)
    if n < 2:
        await ctx.send_message(n + 1)


async def test_a_run_deleted_as_a_continuation_starts_stays_deleted(
    store: sg.CheckpointStore,
) -> None:
    workflow = sg.WorkflowBuilder(start=twice).add_edge(twice, twice).build()
    first = await workflow.run(0, checkpoints=store)
    latest, stored = first.last_checkpoint, len(await store.list(first.run_id))
    # Deleting while a continuation is taking the run up: it is refused.
    with pytest.raises(
        sg.CheckpointError, match=r"is being deleted \(another call in this process, \d+"
    ):
        async with held(store, first.run_id, new_holder(deleting=True)):
            await workflow.run(checkpoint=latest, checkpoints=store)
    # Deleted between loading the checkpoint and taking the run: not revived.
    real, taking = store.lease, asyncio.Event()

    async def slow(run_id: str, holder: str) -> str | None:
        taking.set()
        await asyncio.sleep(0.3)
        return await real(run_id, holder)

    store.lease = slow  # type: ignore[method-assign]
    going = asyncio.create_task(workflow.run(checkpoint=latest, checkpoints=store))
    await asyncio.wait_for(taking.wait(), 10)  # (loaded; taking the run)
    store.lease = real  # type: ignore[method-assign]
    assert await store.delete_run(first.run_id) == stored
    with pytest.raises(sg.CheckpointNotFoundError, match="was deleted"):
        await going
    assert await store.runs() == [] and await store.list() == []


@contextlib.asynccontextmanager
async def held(store: sg.CheckpointStore, run_id: str, holder: str) -> AsyncIterator[None]:
    assert await store.lease(run_id, holder) is None
    try:
        yield
    finally:
        await store.release(run_id, holder)


@pytest.mark.parametrize("odd", ["a\x00b", "a\udcffb"], ids=["nul", "lone-surrogate"])
async def test_lookups_by_odd_ids_find_nothing(store: sg.CheckpointStore, odd: str) -> None:
    # (NUL: PostgreSQL's text cannot hold it; half a character: UTF-8 cannot)
    await store.save(make("a"))
    with pytest.raises(sg.CheckpointNotFoundError):
        await store.load(odd)
    assert await store.latest(odd) is None and await store.run_info(odd) is None
    assert await store.list(odd) == [] and await store.list(workflow=odd) == []
    assert await store.runs(workflow=odd) == [] and await store.find_request(odd) is None
    assert not await store.request_cancel(odd) and await store.answers(odd, [odd]) == {}
    with pytest.raises(sg.CheckpointNotFoundError):
        await store.delete_run(odd)
    with pytest.raises(sg.CheckpointNotFoundError):
        await store.runs(before=odd)
    assert await store.prune(odd) == 0
    with pytest.raises(sg.CheckpointNotFoundError):
        await store.delete(odd)
    with pytest.raises(sg.CheckpointNotFoundError):
        await store.outputs(odd)
    assert await store.lease_holder(odd) is None and await store.list(odd, last=3) == []
    assert not await store.cancel_asked(odd, 0.0)
    assert await store.runs(signature=odd) == []
    with pytest.raises(ValueError, match="unknown status"):  # (no status holds one)
        await store.runs(status=odd)
    assert [i.id for i in await store.list()] == ["a"]  # (nothing else touched)


async def test_a_lease_or_status_for_a_run_id_holding_half_a_character_is_refused(
    store: sg.CheckpointStore,
) -> None:
    with pytest.raises(ValueError, match=r"run id 'r\\udcff' holds half a character"):
        await store.lease("r\udcff", "someone")
    with pytest.raises(ValueError, match="holds half a character"):
        await store.set_status("r\udcff", "failed", "boom")
    await store.release("r\udcff", "someone")  # (never leased: nothing to give back)
    assert await store.runs() == []


async def test_ids_with_commas_are_refused(store: sg.CheckpointStore) -> None:
    for bad in ("a,b", ""):
        with pytest.raises(sg.CheckpointEncodeError, match="hold no comma"):
            await store.save(make("ok"), make(bad, parent="ok"))
    assert await store.list() == []


async def test_delete_prune_and_garbage_collection(store: sg.CheckpointStore) -> None:
    for i in range(5):
        await store.save(
            make(f"c{i}", step=i, parent=f"c{i - 1}" if i else None, k=str(i).encode())
        )
    await store.save(make("other", run="r2", k=b"shared"))
    huge = 10**20  # (past what SQL's integers hold: keeps them all)
    assert await store.prune("r1", keep_last=huge) == 0 and await store.prune(keep_last=huge) == 0
    assert len(await store.runs(limit=huge)) == 2
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


async def test_a_deleted_run_leaves_no_cancel_mark(store: sg.CheckpointStore) -> None:
    """Runs asked to cancel that ended otherwise (the ask came with their
    last save), then deleted: the store keeps nothing of their asks — a
    server deleting its runs for days keeps a constant number of marks."""
    holder = new_holder()
    for n in range(20):
        run = f"r{n}"
        await store.save(make(f"{run}-0", run=run))
        assert await store.lease(run, holder) is None
        assert await store.request_cancel(run)
        idle = make(f"{run}-1", run=run, parent=f"{run}-0", step=1)
        await store.save(dataclasses.replace(idle, status="idle"))  # (learns of the ask)
        assert store.cancel_requested(run, 0.0)
        await store.release(run, holder)
        if n % 2:
            assert await store.delete_run(run) == 2
        else:  # (one checkpoint at a time: the run goes with its last)
            await store.delete(f"{run}-1")
            assert store.cancel_requested(run, 0.0)  # (still there: the run too)
            await store.delete(f"{run}-0")
    assert not any(store.cancel_requested(f"r{n}", 0.0) for n in range(20))
    assert isinstance(store, BaseStore) and len(store._cancels) == 0


async def test_batched_saves(store: sg.CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """One save of many checkpoints (what async durability does), across
    runs and larger than a SQLite segment: every checkpoint stays loadable,
    listed in order, and deletable on its own, with its values kept."""
    monkeypatch.setattr("stepgraph._checkpoint._segments.SEGMENT_BYTES", 2_000)
    chain = [
        make(f"a{i}", step=i, parent=f"a{i - 1}" if i else None, k=b"%d" % (i % 3))
        for i in range(40)
    ]
    mixed = [*chain[:20], make("x0", run="r2", k=b"2"), *chain[20:]]
    mixed[-1].body["big"] = "y" * 5_000  # a checkpoint larger than a segment on its own
    await store.save(*mixed)
    assert [i.id for i in await store.list("r1")] == [cp.id for cp in chain]
    assert [i.id for i in await store.list("r2")] == ["x0"]
    for cp in mixed:
        loaded = await store.load(cp.id)
        assert (loaded.superstep, loaded.parent_id, loaded.body) == (
            cp.superstep,
            cp.parent_id,
            cp.body,
        )
        assert loaded.blobs == {h: cp.blobs[h] for h in cp.refs}
    latest = await store.latest("r1")
    assert latest is not None and latest.id == "a39"
    if isinstance(store, sg.SqliteCheckpointStore):  # the batch was cut into segments
        with sqlite3.connect(store.path) as db:
            stored = [data for (data,) in db.execute("SELECT data FROM segments ORDER BY seq")]
        db.close()
        entries = [json.loads(data)[4] for data in stored]
        assert len(stored) >= 4, [len(data) for data in stored]
        assert all(
            len(data) <= 2_000 or len(e) == 1 for data, e in zip(stored, entries, strict=True)
        )
        assert [entry[0] for e in entries for entry in e] == [cp.id for cp in mixed]
    await store.delete("a25")  # from the middle of a batch
    assert [i.id for i in await store.list("r1")] == [cp.id for cp in chain if cp.id != "a25"]
    assert (await store.load("a26")).parent_id == "a25"
    assert await store.prune("r1", keep_last=3) == 36
    assert [i.id for i in await store.list()] == ["x0", "a37", "a38", "a39"]
    assert (await store.load("a37")).blobs == {blob_hash(b"1"): b"1"}


async def test_list_last_reads_a_runs_newest(store: sg.CheckpointStore) -> None:
    """``list(run_id, last=N)``: the run's newest N in save order, the same
    as the tail of the whole listing — across saves of one checkpoint and
    batches, another run's saves in between, and after a deletion."""
    saves: list[list[sg.Checkpoint]] = []
    parent = None
    for n in range(120):
        size = 1 if n % 3 else 7  # (one record each, or a batch)
        batch = []
        for k in range(size):
            cid = f"a{n}_{k}"
            batch.append(make(cid, parent=parent, step=n))
            parent = cid
        saves.append(batch)
    for n, batch in enumerate(saves):
        await store.save(*batch)
        if n % 10 == 0:
            await store.save(make(f"o{n}", run="other", step=n))
    every = [i.id for i in await store.list("r1")]
    assert len(every) == sum(len(b) for b in saves)
    for last in (0, 1, 5, 16, 17, 100, 200, len(every), len(every) + 5):
        newest = [i.id for i in await store.list("r1", last=last)]
        assert newest == every[len(every) - min(last, len(every)) :], last
    await store.delete(every[-3])
    assert [i.id for i in await store.list("r1", last=4)] == [*every[-5:-3], *every[-2:]]
    assert await store.list("nope", last=3) == []
    assert await store.list("r1", workflow="other workflow", last=3) == []
    for bad in ({"last": -1}, {"last": True}):
        with pytest.raises(ValueError, match="last="):
            await store.list("r1", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs run_id"):
        await store.list(last=3)


async def test_a_stored_id_cannot_be_saved_again(store: sg.CheckpointStore) -> None:
    await store.save(make("a"))
    with pytest.raises(sg.CheckpointIntegrityError, match=r"already stored: \['a'\]"):
        await store.save(make("b", step=1), make("a", step=2))
    assert [i.id for i in await store.list()] == ["a"]  # nothing of the failed save
    assert (await store.load("a")).superstep == 0


async def test_corrupt_segment_is_refused_when_read_and_skipped_when_listed(
    tmp_path: Path,
) -> None:
    """A damaged record blocks nothing but itself: loading it is refused,
    listing skips it with a warning, the run index, pruning of healthy runs
    and deleting the damaged run all work."""
    path = tmp_path / "c.sqlite"
    store = sg.SqliteCheckpointStore(path)
    await store.save(make("a", k=b"1"), make("b", step=1, k=b"2"))
    for i in range(3):
        await store.save(make(f"h{i}", run="healthy", step=i, k=b"shared"))
    store.close()
    with sqlite3.connect(path) as db:
        (data,) = db.execute("SELECT data FROM segments WHERE run_id = 'r1'").fetchone()
        db.execute("UPDATE segments SET data = ? WHERE run_id = 'r1'", (data[: len(data) // 2],))
    db.close()
    store = sg.SqliteCheckpointStore(path)
    for read, of in ((store.load("b"), "of checkpoint 'b'"), (store.latest("r1"), "of run 'r1'")):
        with pytest.raises(sg.CheckpointIntegrityError, match=f"segment {of} is corrupt"):
            await read
    with pytest.warns(sg.CheckpointWarning, match=r"skipped 1 damaged checkpoint record\(s\): "
                      r"checkpoints a,b of run r1: .*segment is corrupt"):  # fmt: skip
        assert [i.id for i in await store.list()] == ["h0", "h1", "h2"]
    assert [r.run_id for r in await store.runs()] == ["healthy", "r1"]
    with pytest.warns(sg.CheckpointWarning, match=r"did not prune 1 damaged run\(s\).*run r1"):
        assert await store.prune(keep_last=1) == 2  # the healthy run's
    assert await store.delete_run("r1") == 2
    assert [i.id for i in await store.list()] == ["h2"]  # no warning any more
    assert (await store.load("h2")).blobs == {blob_hash(b"shared"): b"shared"}
    store.close()
    assert sg.SqliteCheckpointStore(path).integrity_check() == "ok"


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


# Each alteration: (how to change a stored Row, how to change a SQLite segment).
TAMPERINGS: dict[str, tuple[Any, Any]] = {
    "body": (
        lambda row: row._replace(body=row.body.replace(b'"state"', b'"stat"')),
        lambda doc: doc[4][0][8].update(extra=1),
    ),
    "superstep": (lambda row: row._replace(superstep=7), lambda doc: doc[4][0].__setitem__(2, 7)),
    "parent": (
        lambda row: row._replace(parent_id="elsewhere"),
        lambda doc: doc[4][0].__setitem__(1, "elsewhere"),
    ),
    "refs": (lambda row: row._replace(refs=""), lambda doc: doc[4][0].__setitem__(6, "")),
    "workflow": (
        lambda row: row._replace(workflow="other"),
        lambda doc: doc.__setitem__(2, "other"),
    ),
}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("field", sorted(TAMPERINGS))
async def test_signed_checkpoints_refuse_tampering(kind: str, field: str, tmp_path: Path) -> None:
    """Changing the body or any field of a signed checkpoint where it is
    stored is refused; so is an unsigned checkpoint in a store that requires
    signatures."""
    secret = b"0123456789abcdef-secret"
    path = tmp_path / "signed.sqlite"
    store: MemoryCheckpointStore | sg.SqliteCheckpointStore = (
        sg.SqliteCheckpointStore(path, secret=secret)
        if kind == "sqlite"
        else sg.MemoryCheckpointStore(secret=secret)
    )
    await store.save(make("a", k=b"value"))
    assert (await store.load("a")).id == "a"
    alter_row, alter_segment = TAMPERINGS[field]
    if isinstance(store, sg.SqliteCheckpointStore):
        store.close()
        with sqlite3.connect(path) as db:
            (data,) = db.execute("SELECT data FROM segments").fetchone()
            document = json.loads(data)
            alter_segment(document)
            db.execute("UPDATE segments SET data = ?", (json.dumps(document).encode(),))
        db.close()
        store = sg.SqliteCheckpointStore(path, secret=secret)
        with pytest.raises(sg.CheckpointIntegrityError, match="signature does not match"):
            await store.load("a")
        unsigned = sg.SqliteCheckpointStore(path)
        await unsigned.save(make("u", run="r9"))
        unsigned.close()
        with pytest.raises(sg.CheckpointIntegrityError, match="unsigned"):
            await store.load("u")
        store.close()
    else:
        row = store._by_id["a"]  # type: ignore[attr-defined]
        store._by_id["a"] = alter_row(row)  # type: ignore[attr-defined]
        with pytest.raises(sg.CheckpointIntegrityError, match="signature does not match"):
            await store.load("a")
        store._by_id["a"] = row._replace(mac=None)  # type: ignore[attr-defined]
        with pytest.raises(sg.CheckpointIntegrityError, match="unsigned"):
            await store.load("a")


async def test_runs_of_a_workflow(store: sg.CheckpointStore) -> None:
    """Listing checkpoints by workflow follows each checkpoint's own workflow
    name; a run is listed under the name of its latest checkpoint (a run
    resumed under a new name moves)."""
    await store.save(make("a", run="r1"))
    await store.save(dataclasses.replace(make("b", run="r2", parent=None), workflow="other"))
    await store.save(dataclasses.replace(make("c", run="r1", parent="a", step=1), workflow="other"))
    assert [i.id for i in await store.list(workflow="wf")] == ["a"]
    assert [i.id for i in await store.list(workflow="other")] == ["b", "c"]
    assert [i.id for i in await store.list("r1", workflow="other")] == ["c"]
    assert [i.run_id for i in await store.runs(workflow="other")] == ["r2", "r1"]
    assert await store.runs(workflow="wf") == []
    assert await store.list(workflow="nope") == []
    await store.delete("b")
    assert [i.run_id for i in await store.runs(workflow="other")] == ["r1"]


async def test_other_layouts_are_refused(tmp_path: Path) -> None:
    """A file of another layout (an older stepgraph's, or another
    application's database) is refused with a clear error, never altered."""
    older = tmp_path / "older.sqlite"
    with sqlite3.connect(older) as db:
        db.execute("CREATE TABLE checkpoints (seq INTEGER PRIMARY KEY, id TEXT, record BLOB)")
    db.close()
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.execute("PRAGMA user_version = 7")
    db.close()
    for path, layout in ((older, 0), (foreign, 7)):
        before = path.read_bytes()
        store = sg.SqliteCheckpointStore(path)
        with pytest.raises(sg.CheckpointError, match=f"has layout {layout}, but this version"):
            await store.list()
        # (migrate said "which this version of stepgraph cannot bring to layout 4")
        with pytest.raises(sg.CheckpointError, match="another application's database"):
            store.migrate()
        store.close()
        assert path.read_bytes() == before


@pytest.mark.parametrize("layout", [4, 3])
async def test_another_applications_file_of_our_layout_number_is_refused_as_such(
    tmp_path: Path, layout: int
) -> None:
    """Another application's database whose PRAGMA user_version happens to
    be a layout of ours (this one, or the one ``migrate`` steps up from) is
    refused as such — not read as ours until a query met its tables ("no
    such column: run_id"), a run's first save failed, and ``migrate`` said
    there was nothing to do — and left as it was."""
    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (a INTEGER, b TEXT)")  # a name stepgraph uses too
        db.execute(f"PRAGMA user_version = {layout}")
    db.close()
    before = path.read_bytes()
    refusal = f"has layout {layout} .*no table segments.* another application's database"
    for readonly in (False, True):
        store = sg.SqliteCheckpointStore(path, readonly=readonly)
        with pytest.raises(sg.CheckpointError, match=refusal):
            await store.runs()
        store.close()
    store = sg.SqliteCheckpointStore(path)
    with pytest.raises(sg.CheckpointError, match=refusal):
        await store.save(make("a"))
    with pytest.raises(sg.CheckpointError, match=refusal):
        store.migrate()
    store.close()
    assert path.read_bytes() == before
    # A stepgraph file of this layout with one of its tables changed by hand
    # (a column added is fine: what the store reads is there):
    ours = tmp_path / "ours.sqlite"
    with sg.SqliteCheckpointStore(ours) as store:
        await store.save(make("a"))
    with sqlite3.connect(ours) as db:
        db.execute("ALTER TABLE runs ADD COLUMN note TEXT")
    db.close()
    with sg.SqliteCheckpointStore(ours) as store:
        assert (await store.load("a")).id == "a"
    with sqlite3.connect(ours) as db:
        db.execute("DROP TABLE answers")
        db.execute("CREATE TABLE answers (x TEXT)")
    db.close()
    store = sg.SqliteCheckpointStore(ours)
    with pytest.raises(sg.CheckpointError, match="table answers lacks its columns"):
        await store.load("a")
    store.close()


async def test_migrating_a_file_of_this_layout_only_reads_it(tmp_path: Path) -> None:
    """``migrate`` on a file already of this layout says so without taking
    the write lock: it answers while another process writes (and on a
    read-only file), where it waited for the lock and then failed."""
    path = tmp_path / "c.sqlite"
    with sg.SqliteCheckpointStore(path) as store:
        await store.save(make("a"))
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        store = sg.SqliteCheckpointStore(path, busy_timeout=0.1)
        assert store.migrate() == (4, 4)
        store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


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


async def test_sqlite_prune_frees_space_and_vacuum_shrinks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.sqlite"

    def size() -> int:
        wal = Path(f"{path}-wal")
        return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def pages() -> tuple[int, int]:
        with sqlite3.connect(path) as db:
            counts = (db.execute("PRAGMA page_count").fetchone()[0],
                      db.execute("PRAGMA freelist_count").fetchone()[0])  # fmt: skip
        db.close()
        return counts

    store = sg.SqliteCheckpointStore(path)
    for i in range(20):
        await store.save(make(f"c{i}", step=i, k=bytes([i]) * 200_000))
    before = size()
    used, _ = pages()
    assert await store.prune(keep_last=2) == 18
    assert [i.id for i in await store.list()] == ["c18", "c19"]
    assert pages()[1] > used * 0.8  # the pruned values' pages are free
    # Pruning frees the pages for reuse: as much new data fits without growth.
    for i in range(20, 30):
        await store.save(make(f"c{i}", step=i, k=bytes([i]) * 200_000))
    assert pages()[0] <= used
    await store.prune(keep_last=2)
    store.vacuum()
    assert size() < before / 5, (before, size())
    assert (await store.load("c29")).blobs == {
        blob_hash(bytes([29]) * 200_000): bytes([29]) * 200_000
    }
    store.close()
    assert sg.SqliteCheckpointStore(path).integrity_check() == "ok"


def test_store_is_usable_across_event_loops(tmp_path: Path) -> None:
    import asyncio

    store = sg.SqliteCheckpointStore(tmp_path / "loops.sqlite")
    asyncio.run(store.save(make("a")))
    assert asyncio.run(store.load("a")).id == "a"
    store.close()
    store.close()  # idempotent


ODD = {"nul": "bad\x00thing", "surrogate": "lone \ud800 surrogate"}


@sg.executor(id="odd")
async def odd_failure(kind: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    raise ValueError(ODD[kind])  # (made here: the input itself must be storable)


@pytest.mark.parametrize("said", sorted(ODD))
async def test_a_run_failing_with_odd_text_is_recorded_failed(
    store: sg.CheckpointStore, said: str
) -> None:
    """An error's text holding NUL (PostgreSQL's text cannot) or a lone
    surrogate (UTF-8 cannot) is stored escaped — it was not stored at all,
    and the run stayed listed in_progress."""
    flow = sg.WorkflowBuilder(start=odd_failure, checkpoints=store).build()
    with pytest.raises(sg.WorkflowRunError):
        await flow.run(said)
    [info] = await store.runs()
    assert info.status == "failed" and info.error is not None
    assert "\x00" not in info.error and ("bad\\x00thing" in info.error or "\\ud800" in info.error)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_signed_run_is_not_continued_through_a_store_without_its_secret(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Read without the secret, a signed checkpoint is unverified; going on
    from it (an answer, a resume, a fork, an edit) would add unsigned
    checkpoints the signing users refuse: refused, nothing written."""
    from tests.test_requests import build

    secret = "0123456789abcdef-secret"
    where = request.getfixturevalue("pg_dsn") if kind == "postgres" else tmp_path / "s.sqlite"

    def opened(signing: bool) -> sg.CheckpointStore:
        key = secret if signing else None
        if kind == "postgres":
            return sg.PostgresCheckpointStore(str(where), secret=key)
        return sg.SqliteCheckpointStore(where, secret=key)

    signing, plain = opened(True), opened(False)
    try:
        assert signing.signs and not plain.signs  # type: ignore[attr-defined]
        first = await build(signing).run(["sure?"])
        [asked] = first.pending_requests
        assert first.last_checkpoint is not None
        stored = await plain.load(first.last_checkpoint)  # (reading it unverified is fine)
        assert stored.signed
        before = await plain.list(first.run_id)
        for how in ({"responses": {asked.request_id: True}}, {}, {"fork": True}):
            with pytest.raises(sg.CheckpointIntegrityError, match="opened without its secret"):
                await build(plain).run(checkpoint=first.last_checkpoint, **how)  # type: ignore[arg-type]
        with pytest.raises(sg.CheckpointIntegrityError, match="opened without its secret"):
            await build(plain).update_state(first.last_checkpoint, state={"k": 1})
        assert await plain.list(first.run_id) == before
        assert len(await plain.runs()) == 1  # (no fork was started either)
        done = await build(signing).run(
            checkpoint=first.last_checkpoint, responses={asked.request_id: True}
        )
        assert done.outputs == ["sure?: yes"]
    finally:
        signing.close()  # type: ignore[attr-defined]
        plain.close()  # type: ignore[attr-defined]


async def test_a_signature_that_is_not_hex_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with sg.SqliteCheckpointStore(path, secret=b"0123456789abcdef-secret") as store:
        await store.save(make("a"))
    with sqlite3.connect(path) as db:
        (data,) = db.execute("SELECT data FROM segments").fetchone()
        document = json.loads(data)
        document[4][0][9] = "zz" + document[4][0][9][2:]
        db.execute("UPDATE segments SET data = ?", (json.dumps(document).encode(),))
    db.close()
    store = sg.SqliteCheckpointStore(path, secret=b"0123456789abcdef-secret")
    with pytest.raises(
        sg.CheckpointIntegrityError,
        match="segment of checkpoint 'a' is corrupt: its signature is not hexadecimal text",
    ):
        await store.load("a")
    store.close()


async def test_who_holds_a_run_is_read_without_taking_it(store: sg.CheckpointStore) -> None:
    # (the server asks it of every run listed as going on that it does not
    # run itself: asking must not hold the run for a moment, refusing a
    # resume that comes then)
    assert isinstance(store, BaseStore)
    await store.save(make("c1", run="r1"))
    assert await store.lease_holder("r1") is None
    holder = new_holder()
    assert await store.lease("r1", holder) is None
    assert await store.lease_holder("r1") == holder
    await store.release("r1", holder)
    assert await store.lease_holder("r1") is None
    other = new_holder()
    assert await store.lease("r1", other) is None  # (asking took nothing)
    await store.release("r1", other)


async def test_who_holds_a_run_is_seen_from_another_process_store(
    pg_dsn: str, tmp_path: Path
) -> None:
    # Another store on the same database or file -- another process -- sees
    # the holder; none once it is given back.
    pairs = [
        (sg.SqliteCheckpointStore(tmp_path / "a.sqlite"), tmp_path / "a.sqlite"),
        (sg.PostgresCheckpointStore(pg_dsn), pg_dsn),
    ]
    for first, where in pairs:
        second = (
            sg.SqliteCheckpointStore(where)
            if isinstance(where, Path)
            else sg.PostgresCheckpointStore(str(where))
        )
        try:
            await first.save(make("c1", run="r1"))
            holder = new_holder()
            assert await first.lease("r1", holder) is None
            seen = await second.lease_holder("r1")
            assert seen is not None and seen.startswith(holder.rsplit(":", 1)[0]), seen
            assert await second.lease("r1", new_holder()) is not None  # (held indeed)
            await first.release("r1", holder)
            assert await second.lease_holder("r1") is None
        finally:
            first.close()
            second.close()
