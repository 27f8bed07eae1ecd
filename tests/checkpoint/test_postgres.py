"""The Postgres store on a real server (``tests.pg``): the behaviours every
store is tested for, and what sharing one database between processes adds —
leases that die with their process, one answer per request under a race,
many processes writing runs at once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

import stepgraph as sg
from stepgraph._checkpoint import blob_hash, new_holder
from stepgraph._checkpoint._leases import holding, this_process
from stepgraph._checkpoint._postgres import PostgresCheckpointStore
from tests.checkpoint import test_stores as stores
from tests.checkpoint.racing import open_requests, race
from tests.checkpoint.test_stores import TAMPERINGS, held, make
from tests.conftest import ROOT
from tests.test_requests import build

SECRET = b"0123456789abcdef-secret"


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresCheckpointStore]:
    with PostgresCheckpointStore(pg_dsn) as opened:
        yield opened


def sql(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, args or None)
        return list(cur.fetchall()) if cur.description else []


def tables(dsn: str) -> list[tuple[Any, ...]]:
    return sql(
        dsn,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY 1, 2",
    )


# The behaviours every store has run here too: the ``store`` fixture of
# tests/conftest.py is parametrised over memory, SQLite and PostgreSQL. What
# follows is what only a database shows (its tables, its sessions, its locks).


async def test_values_are_collected_when_no_run_references_them(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    await stores.test_delete_prune_and_garbage_collection(store)
    assert sql(pg_dsn, "SELECT data FROM stepgraph_blobs") == [(b"4",)]  # c4's value only
    shared = b"s" * 1_000
    await store.save(make("a", run="x1", k=shared, own=b"only x1"))
    await store.save(make("b", run="x2", k=shared))
    await store.save(make("c", run="x2", parent="b", step=1, k=b"newer"))
    assert await store.delete_run("x1") == 1
    assert (await store.load("b")).blobs == {blob_hash(shared): shared}
    await store.prune("x2", keep_last=1)
    held = sorted(h for (h,) in sql(pg_dsn, "SELECT hash FROM stepgraph_blobs"))
    assert held == sorted([blob_hash(b"4"), blob_hash(b"newer")])


async def test_batched_saves_are_cut_into_segments(
    store: PostgresCheckpointStore, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stores.test_batched_saves(store, monkeypatch)
    left = sql(pg_dsn, "SELECT ids FROM stepgraph_segments ORDER BY seq")
    assert [i for (ids,) in left for i in ids.split(",")] == ["x0", "a37", "a38", "a39"]
    monkeypatch.setattr("stepgraph._checkpoint._segments.SEGMENT_BYTES", 2_000)
    chain = [make(f"b{i}", run="r3", step=i, k=b"%d" % i) for i in range(30)]
    await store.save(*chain)
    stored = [
        bytes(d)
        for (d,) in sql(
            pg_dsn, "SELECT data FROM stepgraph_segments WHERE run_id = 'r3' ORDER BY seq"
        )
    ]
    assert len(stored) >= 2 and all(len(d) <= 2_000 for d in stored)
    assert [e[0] for d in stored for e in json.loads(d)[4]] == [cp.id for cp in chain]


# -- integrity --------------------------------------------------------------------


@pytest.mark.parametrize("field", sorted(TAMPERINGS))
async def test_signed_checkpoints_refuse_tampering(pg_dsn: str, field: str) -> None:
    with PostgresCheckpointStore(pg_dsn, secret=SECRET) as signed:
        await signed.save(make("a", k=b"value"))
        assert (await signed.load("a")).id == "a"
        [(data,)] = sql(pg_dsn, "SELECT data FROM stepgraph_segments")
        document = json.loads(bytes(data))
        TAMPERINGS[field][1](document)
        sql(pg_dsn, "UPDATE stepgraph_segments SET data = %s", json.dumps(document).encode())
        with pytest.raises(sg.CheckpointIntegrityError, match="signature does not match"):
            await signed.load("a")
        with PostgresCheckpointStore(pg_dsn) as unsigned:
            await unsigned.save(make("u", run="r9"))
        with pytest.raises(sg.CheckpointIntegrityError, match="unsigned"):
            await signed.load("u")


async def test_damaged_records_are_refused_and_skipped(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    """A truncated segment blocks only itself; an altered value is refused."""
    await store.save(make("a", k=b"1"), make("b", step=1, k=b"2"))
    for i in range(3):
        await store.save(make(f"h{i}", run="healthy", step=i, k=b"shared"))
    sql(
        pg_dsn,
        "UPDATE stepgraph_segments SET data = substr(data, 1, length(data) / 2) "
        "WHERE run_id = 'r1'",
    )
    for read, of in ((store.load("b"), "of checkpoint 'b'"), (store.latest("r1"), "of run 'r1'")):
        with pytest.raises(sg.CheckpointIntegrityError, match=f"segment {of} is corrupt"):
            await read
    with pytest.warns(sg.CheckpointWarning, match=r"checkpoints a,b of run r1: .*corrupt"):
        assert [i.id for i in await store.list()] == ["h0", "h1", "h2"]
    with pytest.warns(sg.CheckpointWarning, match=r"did not prune 1 damaged run\(s\).*run r1"):
        assert await store.prune(keep_last=1) == 2
    assert await store.delete_run("r1") == 2
    assert [i.id for i in await store.list()] == ["h2"]
    sql(pg_dsn, "UPDATE stepgraph_blobs SET data = %s", b"sharee")
    with pytest.raises(sg.CheckpointIntegrityError, match="corrupt"):
        await store.load("h2")


async def test_a_hostile_stored_value_is_refused_without_importing_it(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    first = await build(store).run(["x"])
    [pending] = first.pending_requests
    sql(
        pg_dsn,
        "UPDATE stepgraph_segments SET data = convert_to(replace(convert_from(data, "
        "'UTF8'), 'tests.test_requests.Ask', 'antigravity.Fly'), 'UTF8')",
    )
    assert "antigravity" not in sys.modules
    with pytest.raises(sg.CheckpointError, match="antigravity.Fly"):
        await build(store).run(
            responses={pending.request_id: True}, checkpoint=first.last_checkpoint
        )
    assert "antigravity" not in sys.modules  # named, never imported


# -- layouts -------------------------------------------------------------------------


async def test_other_layouts_are_refused_and_left_untouched(pg_dsn: str) -> None:
    with PostgresCheckpointStore(pg_dsn) as store:
        await store.save(make("a"))
        assert store.migrate() == (4, 4)  # nothing to do
    cases = [
        ("3", "written by an earlier stepgraph.*stepgraph checkpoints migrate"),
        ("9", "written by a newer stepgraph"),
    ]
    for layout, message in cases:
        sql(pg_dsn, "UPDATE stepgraph_meta SET value = %s", layout)
        before = (tables(pg_dsn), sql(pg_dsn, "SELECT ids FROM stepgraph_segments"))
        with PostgresCheckpointStore(pg_dsn) as store:
            with pytest.raises(sg.CheckpointError, match=message):
                await store.list()
            with pytest.raises(sg.CheckpointError, match="cannot bring"):
                store.migrate()
        assert (tables(pg_dsn), sql(pg_dsn, "SELECT ids FROM stepgraph_segments")) == before
    # Another application's tables named like ours, with no layout record.
    sql(pg_dsn, "DROP TABLE stepgraph_meta")
    sql(pg_dsn, "CREATE TABLE stepgraph_extra (x int)")
    before = tables(pg_dsn)
    store = PostgresCheckpointStore(pg_dsn)
    with pytest.raises(sg.CheckpointError, match="no stepgraph layout record"):
        await store.runs()
    store.close()
    assert tables(pg_dsn) == before


@pytest.mark.parametrize(
    "table",
    [
        "stepgraph_meta (k int, v int)",  # no key and value columns
        "stepgraph_meta (key int, value int)",  # no text to compare 'layout' with
        "stepgraph_meta (key jsonb, value jsonb)",
    ],
)
async def test_another_applications_meta_table_is_refused_as_such(pg_dsn: str, table: str) -> None:
    """A ``stepgraph_meta`` of other columns or types is another
    application's: refused as such, rather than with the SQL error that
    reading it as ours raised, and left as it was."""
    sql(pg_dsn, f"CREATE TABLE {table}")
    row = ('"layout"', "4") if "jsonb" in table else (1, 4)
    sql(pg_dsn, "INSERT INTO stepgraph_meta VALUES (%s, %s)", *row)
    before = (tables(pg_dsn), sql(pg_dsn, "SELECT * FROM stepgraph_meta"))
    for create in (True, False):
        with PostgresCheckpointStore(pg_dsn, create=create) as store:
            with pytest.raises(sg.CheckpointError, match="another application's database"):
                await store.runs()
            with pytest.raises(sg.CheckpointError, match="another application's database"):
                store.migrate()
    assert (tables(pg_dsn), sql(pg_dsn, "SELECT * FROM stepgraph_meta")) == before


@pytest.mark.parametrize(
    "change",
    [
        "DROP TABLE stepgraph_answers",  # (tables dropped by hand)
        "DROP TABLE stepgraph_runs; CREATE TABLE stepgraph_runs (id int, name text)",
    ],
)
async def test_a_layout_record_without_that_layouts_tables_is_refused(
    pg_dsn: str, change: str
) -> None:
    """Tables whose layout record says this layout but that are not this
    layout's (a table missing, or another application's of the same name)
    are refused, naming what differs — not accepted, with ``migrate``
    saying there was nothing to do and a run failing at its first save
    ("relation stepgraph_answers does not exist") as if it had checkpoints
    to resume — and left as they are."""
    with PostgresCheckpointStore(pg_dsn) as store:
        await store.runs()  # (the tables, created)
    sql(pg_dsn, change)
    before = tables(pg_dsn)
    what = (
        "no table stepgraph_answers" if "answers" in change else "stepgraph_runs lacks its columns"
    )
    refusal = f"has stepgraph's layout record \\(layout 4\\) but not .*{what}"
    for create in (True, False):
        with PostgresCheckpointStore(pg_dsn, create=create) as store:
            with pytest.raises(sg.CheckpointError, match=refusal):
                await store.save(make("a"))
            with pytest.raises(sg.CheckpointError, match=refusal):
                store.migrate()
    assert tables(pg_dsn) == before


def test_a_database_on_the_default_host_is_named_as_libpq_finds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (no host named: libpq takes PGHOST, else its local socket; messages
    # said "localhost")
    monkeypatch.delenv("PGHOST", raising=False)
    store = PostgresCheckpointStore("postgresql:///orders")
    assert store.where() == "checkpoint database 'orders' on the local socket"
    monkeypatch.setenv("PGHOST", "db.internal")
    assert store.where() == "checkpoint database 'orders' on db.internal"
    named = PostgresCheckpointStore("postgresql://db2:5433/orders")
    assert named.where() == "checkpoint database 'orders' on db2:5433"


async def test_only_our_tables_are_created_and_errors_name_the_database(pg_dsn: str) -> None:
    sql(pg_dsn, "CREATE TABLE users (name text)")
    with PostgresCheckpointStore(pg_dsn) as store:
        assert await store.runs() == []
        assert "password" not in store.where() and "test_" in store.where()
    names = sorted({t for t, _ in tables(pg_dsn)})
    assert names[-1] == "users" and all(n.startswith("stepgraph_") for n in names[:-1])
    secret_dsn = pg_dsn.replace("postgresql:///", "postgresql://:hunter2@/").replace(
        "test_", "missing_"
    )
    with PostgresCheckpointStore(secret_dsn, max_size=1) as broken:
        with pytest.raises(sg.CheckpointError, match="'missing_") as raised:
            await broken.runs()
        assert "hunter2" not in str(raised.value)


def _a_role(pg_dsn: str, prefix: str, *grants: str) -> tuple[str, str]:
    """A new login role that may connect to the test database (and what
    ``grants`` give it, ``{}`` standing for its name): its name, and the DSN
    that logs in as it."""
    role = f"{prefix}_{os.getpid()}_{time.monotonic_ns()}"
    database = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")  # (names made here, never user input)
        conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        for grant in grants:
            conn.execute(grant.format(role))
    return role, pg_dsn.replace("user=stepgraph", f"user={role}")


def test_tables_that_cannot_be_created_are_refused_saying_why(pg_dsn: str) -> None:
    # (the server's message came with its statement: "permission denied for
    # schema public LINE 1: CREATE TABLE stepgraph_meta (key text PRIMARY KEY,
    # value tex... ^" -- PostgreSQL 15 lets no other role create in public)
    sql(pg_dsn, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    _, maker = _a_role(pg_dsn, "maker")
    cases = {
        maker: (
            "its role may not create stepgraph's tables (permission denied for schema public): "
            "grant it CREATE on that schema"
        ),
        f"{pg_dsn}&options=-csearch_path%3Dnosuch": (
            "has no schema to create stepgraph's tables in: the connection's search_path "
            "names none that exists (nothing was created)"
        ),
    }
    for dsn, expected in cases.items():
        with (
            PostgresCheckpointStore(dsn, max_size=1) as store,
            pytest.raises(sg.CheckpointError) as raised,
        ):
            store.open()
        assert expected in str(raised.value) and "LINE 1" not in str(raised.value), raised.value
    assert tables(pg_dsn) == []


async def test_a_store_that_must_exist_creates_nothing(pg_dsn: str) -> None:
    """``create=False`` (the command line's listing, showing, pruning and
    cancelling) refuses a database without our tables, leaving it as it
    was; once a run created them, it works."""
    sql(pg_dsn, "CREATE TABLE users (name text)")
    reader = PostgresCheckpointStore(pg_dsn, create=False)
    with reader, pytest.raises(sg.CheckpointError, match="holds no stepgraph checkpoint store"):
        await reader.runs()
    assert {t for t, _ in tables(pg_dsn)} == {"users"}
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "stepgraph", "checkpoints", "list", "--store", pg_dsn],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert listed.returncode == 1 and "holds no stepgraph checkpoint store" in listed.stderr
    assert {t for t, _ in tables(pg_dsn)} == {"users"}
    with PostgresCheckpointStore(pg_dsn) as writer:
        await build(writer).run(["pay?"])
    with PostgresCheckpointStore(pg_dsn, create=False) as reader:
        assert len(await reader.runs()) == 1


async def test_stored_bytes_are_compressed_with_lz4(pg_dsn: str) -> None:
    # (Debian's PostgreSQL has lz4; a server without it keeps pglz)
    with PostgresCheckpointStore(pg_dsn) as store:
        store.open()
    found = sql(
        pg_dsn,
        "SELECT attrelid::regclass::text, attcompression FROM pg_attribute "
        "WHERE attname = 'data' AND attrelid::regclass::text LIKE 'stepgraph_%' ORDER BY 1",
    )
    assert found == [("stepgraph_blobs", "l"), ("stepgraph_segments", "l")]


def test_usable_across_event_loops(pg_dsn: str) -> None:
    store = PostgresCheckpointStore(pg_dsn)
    asyncio.run(store.save(make("a")))
    assert asyncio.run(store.load("a")).id == "a"
    assert asyncio.run(store.lease("r1", "h:1:-:a")) is None
    asyncio.run(store.release("r1", "h:1:-:a"))
    store.close()
    store.close()  # idempotent
    assert asyncio.run(store.latest("r1")) is not None  # reconnects after close
    store.close()


# -- cancels, answers, leases ---------------------------------------------------------


async def test_a_save_learns_a_cancel_asked_from_elsewhere(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    await store.save(make("a"))
    async with held(store, "r1", new_holder()):  # (as its run holds it)
        with PostgresCheckpointStore(pg_dsn) as elsewhere:
            assert await elsewhere.request_cancel("r1")
        assert not store.cancel_requested("r1", 0.0)  # not yet: no save since
        await store.save(make("b", parent="a", step=1))
        assert store.cancel_requested("r1", 0.0)
        assert not store.cancel_requested("r1", time.time() + 60)
        await store.set_status("r1", "cancelled")
        assert not store.cancel_requested("r1", 0.0)
        assert sql(pg_dsn, "SELECT * FROM stepgraph_cancels") == []


class SlowDeleter(PostgresCheckpointStore):
    """Pauses half a second after locking the values it is about to delete:
    a save sent then finds them stored, then deleted."""

    in_window = threading.Event()

    def _transaction(self, fn: Any, doing: str, pipelined: bool = False) -> Any:
        if doing != "deleting stored values":
            return super()._transaction(fn, doing, pipelined)

        class Paused:
            def __init__(self, cur: Any) -> None:
                self.cur = cur

            def execute(self, sql: str, args: Any = ()) -> Any:
                done = self.cur.execute(sql, args)
                if "FOR UPDATE" in sql:
                    SlowDeleter.in_window.set()
                    time.sleep(0.5)
                return done

            def __getattr__(self, name: str) -> Any:
                return getattr(self.cur, name)

        return super()._transaction(lambda cur: fn(Paused(cur)), doing, pipelined)


@sg.executor(id="configure")
async def configure(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    ctx.state.set("config", "the same value in every run")
    await ctx.yield_output(n)


async def test_a_value_deleted_under_a_save_that_brings_it_is_put_back(pg_dsn: str) -> None:
    workflow = sg.WorkflowBuilder(start=configure).build()
    with PostgresCheckpointStore(pg_dsn) as writer, SlowDeleter(pg_dsn) as deleter:
        first = await workflow.run(1, checkpoints=writer)
        deleting = asyncio.create_task(deleter.delete_run(first.run_id))
        while not SlowDeleter.in_window.is_set():
            await asyncio.sleep(0.01)
        second = await workflow.run(2, checkpoints=writer)  # a new run, the same value
        assert second.outputs == [2] and await deleting == 2
        loaded = [await writer.load(info.id) for info in await writer.list(second.run_id)]
        assert all(set(cp.blobs) == set(cp.refs) for cp in loaded) and loaded[-1].refs
    assert sql(pg_dsn, "SELECT count(*) FROM stepgraph_blobs") == [(1,)]


async def test_a_long_superstep_is_stopped_whatever_the_clocks(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_pauses import long_step

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 120)  # this machine is 2 minutes fast
    runner = PostgresCheckpointStore(pg_dsn)
    workflow = sg.WorkflowBuilder(start=long_step).add_edge(long_step, long_step).build()
    task = asyncio.create_task(workflow.run(0, checkpoints=runner))
    while len(await runner.list()) < 2:  # the entry and the first barrier: the long step runs
        await asyncio.sleep(0.02)
    [run] = await runner.runs()
    monkeypatch.setattr(time, "time", lambda: real() - 120)  # the canceller's: 2 minutes slow
    with PostgresCheckpointStore(pg_dsn) as elsewhere:
        assert await elsewhere.request_cancel(run.run_id)
    started = real()
    result = await asyncio.wait_for(task, timeout=10)
    assert real() - started < 3  # within a poll or two, not after the 30 s
    assert result.status is sg.RunStatus.CANCELLED and result.outputs == [0]
    [run] = await runner.runs()
    assert run.status == "cancelled" and run.superstep == 1
    runner.close()


async def test_a_second_answer_is_refused_and_rolls_the_save_back(
    store: PostgresCheckpointStore,
) -> None:
    await store.save(make("a"))
    answer = dataclasses.replace(make("b", parent="a", step=1), answered=("q1",))
    await store.save(answer)
    again = dataclasses.replace(make("c", parent="a", step=1), answered=("q2", "q1"))
    with pytest.raises(sg.RequestError, match=r"request 'q1' of run 'r1'.*checkpoint b\)"):
        await store.save(make("c0", parent="a", step=1), again)
    assert [i.id for i in await store.list()] == ["a", "b"]  # nothing of that save
    assert await store.answers("r1", ["q1", "q2", "q3"]) == {"q1": "b"}
    twice = dataclasses.replace(make("d", step=2), answered=("q3",))
    with pytest.raises(sg.RequestError, match=r"\(at checkpoint d\)"):
        await store.save(twice, dataclasses.replace(make("e", step=3), answered=("q3",)))
    assert await store.answers("r1", ["q3"]) == {}


async def test_leases_are_taken_refused_and_given_back(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    mine, theirs = new_holder(), new_holder()
    assert await store.lease("r1", mine) is None
    assert await store.lease("r1", mine) is None  # (already held: still held)
    with PostgresCheckpointStore(pg_dsn) as other:
        # Another session: refused, naming the process (whose one session
        # holds all of its store's runs).
        assert await other.lease("r1", theirs) == this_process()
        assert holding(this_process()) == (
            f"another call in this process, {os.getpid()} on {socket.gethostname()}"
        )
        assert holding(f"elsewhere:4242:{this_process().split(':')[2]}:runs") == (
            "process 4242 on elsewhere"
        )
        assert await store.lease("r1", theirs) == mine  # another call of this process
        await store.release("r1", theirs)  # not its holder: nothing happens
        assert await other.lease("r1", theirs) == this_process()
        await store.release("r1", mine)
        assert await other.lease("r1", theirs) is None
        assert await store.lease("r1", mine) == this_process()  # (other store's session)
        named = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        assert sql(pg_dsn, named, this_process()) == [(2,)]  # one per store
    # Closing the store ended the session: the run is free at once.
    assert await store.lease("r1", mine) is None
    # A new run takes its lease with its first save and gives it back with its last.
    first = dataclasses.replace(make("n0", run="new"), holder=theirs)
    await store.save(first)
    assert await store.lease("new", mine) == theirs
    await store.save(
        dataclasses.replace(make("n1", run="new", step=1), holder=theirs, release=True)
    )
    assert await store.lease("new", mine) is None
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    assert sql(pg_dsn, held) == [(2,)]  # "new" and "r1", both by this store
    # A failed first save takes nothing.
    with pytest.raises(sg.CheckpointIntegrityError):
        await store.save(dataclasses.replace(make("n0", run="other"), holder=theirs))
    assert await store.lease("other", mine) is None


async def test_many_runs_at_once_share_a_few_sessions(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    """More runs going on at once than the server takes connections (300
    here): all of them hold their leases on one session of the store's, and
    their saves queue for the pool's connections instead of each opening
    one of its own."""
    runs = 320
    entered = 0
    everyone_in = asyncio.Event()

    @sg.executor(id="wait")
    async def wait(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        nonlocal entered
        entered += 1
        if entered == runs:
            everyone_in.set()
        await everyone_in.wait()  # every run holds its lease now
        await ctx.yield_output(n)

    workflow = sg.WorkflowBuilder(start=wait, checkpoints=store).build()
    going = [asyncio.ensure_future(workflow.run(n)) for n in range(runs)]
    await asyncio.wait_for(everyone_in.wait(), timeout=60)
    database = sql(pg_dsn, "SELECT current_database()")[0][0]
    sessions = sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", database)[0][
        0
    ]
    results = await asyncio.wait_for(asyncio.gather(*going), timeout=60)
    assert sorted(r.outputs[0] for r in results) == list(range(runs))
    assert sessions <= store.max_size + 2  # the pool's, the leases', this query's
    assert {r.status for r in await store.runs(limit=runs)} == {"idle"}


HOLD = """
import asyncio, sys
from stepgraph._checkpoint import new_holder
from stepgraph._checkpoint._postgres import PostgresCheckpointStore
store = PostgresCheckpointStore(sys.argv[1])
assert asyncio.run(store.lease("r1", new_holder())) is None
print("holding", flush=True)
import time; time.sleep(60)
"""


def test_a_lease_of_a_killed_process_is_free_at_once(pg_dsn: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, pg_dsn], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    store = PostgresCheckpointStore(pg_dsn)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        busy = asyncio.run(store.lease("r1", new_holder()))
        assert busy is not None and busy.split(":")[1] == str(holder.pid)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    started = time.perf_counter()
    while asyncio.run(store.lease("r1", new_holder())) is not None:
        assert time.perf_counter() - started < 2, "the lock outlived its process"
        time.sleep(0.01)
    store.close()


# -- workflows across processes ----------------------------------------------------------


@sg.executor(id="count")
async def count(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await ctx.yield_output(n)
    if n < 3:
        await ctx.send_message(n + 1)


def counting(store: sg.CheckpointStore) -> sg.Workflow:
    return sg.WorkflowBuilder(start=count, checkpoints=store).add_edge(count, count).build()


RESUME = """
import asyncio, json, sys
from stepgraph._checkpoint._postgres import PostgresCheckpointStore
from tests.checkpoint.test_postgres import counting
async def main():
    with PostgresCheckpointStore(sys.argv[1]) as store:
        result = await counting(store).run(checkpoint=sys.argv[2])
        print(json.dumps({"outputs": result.outputs, "run_id": result.run_id}))
asyncio.run(main())
"""


def run_python(script: str, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_a_pool_of_ones_own_without_autocommit(pg_dsn: str) -> None:
    import psycopg_pool

    pool = psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=2, open=True)
    try:
        with PostgresCheckpointStore(pool=pool) as store:
            plain = await counting(store).run(0)  # saves of one statement each
            stateful = await sg.WorkflowBuilder(start=configure).build().run(1, checkpoints=store)
            cancelled = await store.request_cancel(plain.run_id)  # (idle: nothing to stop)
            assert not cancelled and plain.outputs == [0, 1, 2, 3]
        assert not pool.closed  # (a pool passed in stays open)
        with PostgresCheckpointStore(pg_dsn) as fresh:  # all of it committed
            for run in (plain, stateful):
                listed = await fresh.list(run.run_id)
                assert listed and listed[-1].id == run.last_checkpoint
                assert (await fresh.load(listed[-1].id)).id == run.last_checkpoint
    finally:
        pool.close()


DROPPED = """
import asyncio, sys, time
import stepgraph as sg
for _ in range(20):
    store = sg.PostgresCheckpointStore(sys.argv[1], min_size=8)  # never closed
    asyncio.run(store.runs())
    del store  # (while the pool still opens connections in its threads)
time.sleep(0.3)
print("done")
"""


async def test_a_pool_it_cannot_use_is_refused_saying_why(pg_dsn: str) -> None:
    """An ``AsyncConnectionPool`` (the docs say why not) failed the first
    call with ``'coroutine' object has no attribute 'closed'`` and a
    coroutine never awaited; a connection string given as the pool, with an
    ``AttributeError``; a DSN beside a pool named one database in messages
    while the store used the other's."""
    import psycopg_pool

    async_pool = psycopg_pool.AsyncConnectionPool(pg_dsn, open=False)
    with pytest.raises(TypeError, match="not an AsyncConnectionPool: an async pool belongs"):
        PostgresCheckpointStore(pool=async_pool)
    with pytest.raises(TypeError, match="takes a psycopg_pool.ConnectionPool, got str"):
        PostgresCheckpointStore(pool=pg_dsn)
    pool = psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=1, open=False)
    with pytest.raises(ValueError, match="a dsn or a pool, not both"):
        PostgresCheckpointStore(pg_dsn, pool=pool)
    pool.open()
    try:
        with PostgresCheckpointStore(pool=pool) as store:
            assert await store.runs() == []
    finally:
        pool.close()


def test_a_store_dropped_without_close_goes_quietly(pg_dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", DROPPED, pg_dsn], capture_output=True, text=True, cwd=ROOT,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert done.stderr == ""


async def test_a_workflow_name_holding_nul_is_refused_by_name(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    """PostgreSQL's text cannot hold NUL, which the other stores keep in a
    workflow's name: the run is refused naming the workflow, writing
    nothing, rather than failing with the driver's error as a store gone
    wrong (which the command line answered with "run it again once the
    store works")."""
    named = sg.WorkflowBuilder(start=count, checkpoints=store, name="nul\x00name")
    with pytest.raises(sg.CheckpointEncodeError, match=r"workflow name 'nul\\x00name'"):
        await named.add_edge(count, count).build().run(0)
    assert await store.runs() == []
    assert sql(pg_dsn, "SELECT count(*) FROM stepgraph_segments") == [(0,)]
    assert (await counting(store).run(2)).outputs == [2, 3]  # the store works on


async def test_a_workflow_resumes_in_a_new_process(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    paused = await counting(store).run(0, interrupt_after=["count"])
    assert paused.status is sg.RunStatus.PAUSED and paused.outputs == [0]
    resumed = await asyncio.to_thread(run_python, RESUME, pg_dsn, paused.last_checkpoint or "")
    assert resumed == {"outputs": [1, 2, 3], "run_id": paused.run_id}
    [run] = await store.runs()
    assert (run.run_id, run.status) == (paused.run_id, "idle")
    assert run.checkpoints == len(await store.list(paused.run_id))
    assert await store.lease(paused.run_id, new_holder()) is None  # given back


MANY = """
import asyncio, json, sys
import stepgraph as sg
from stepgraph._checkpoint._postgres import PostgresCheckpointStore
from tests.checkpoint.test_postgres import counting
async def main():
    with PostgresCheckpointStore(sys.argv[1], max_size=4) as store:
        gate = asyncio.Semaphore(8)
        async def one(i):
            async with gate:
                durability = "sync" if i % 2 else "async"
                config = sg.CheckpointConfig(store, durability)
                result = await counting(store).run(i % 3, checkpoints=config)
                return [result.run_id, result.outputs]
        print(json.dumps(await asyncio.gather(*(one(i) for i in range(200)))))
asyncio.run(main())
"""


async def test_four_processes_writing_runs_at_once_lose_nothing(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    expected = await counting(store).run(0)
    checkpoints_of = {0: len(await store.list(expected.run_id))}
    await store.delete_run(expected.run_id)
    started = time.perf_counter()
    done = await asyncio.gather(*(asyncio.to_thread(run_python, MANY, pg_dsn) for _ in range(4)))
    elapsed = time.perf_counter() - started
    results = {run_id: outputs for process in done for run_id, outputs in process}
    assert len(results) == 800, elapsed  # 4 processes x 200 runs
    runs = {r.run_id: r for r in await store.runs(limit=10_000)}
    assert set(runs) == set(results)
    assert sql(pg_dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]
    for run_id, outputs in results.items():
        start = outputs[0]
        assert outputs == list(range(start, 4))
        listed = await store.list(run_id)
        assert runs[run_id].checkpoints == len(listed) == checkpoints_of[0] - start
        latest = await store.latest(run_id)
        assert latest is not None and latest.id == listed[-1].id == runs[run_id].last_checkpoint
        assert runs[run_id].status == "idle"
    # Every checkpoint loads (values present and intact).
    for info in await store.list():
        assert (await store.load(info.id)).id == info.id


def test_two_processes_racing_to_answer_one_request_one_wins(pg_dsn: str) -> None:
    rounds = 50
    runs = asyncio.run(open_requests(lambda: PostgresCheckpointStore(pg_dsn), rounds))
    tallies = race("postgres", pg_dsn, runs)
    for tally in tallies:
        assert tally.count("won") == 1 and tally[0] in ("answered", "busy"), tally
    answered = sql(pg_dsn, "SELECT run_id, request_id, checkpoint_id FROM stepgraph_answers")
    assert sorted(r for _, r, _ in answered) == sorted(r for _, r in runs)  # each once


async def test_two_stores_saving_one_answer_at_once_one_commits(pg_dsn: str) -> None:
    """Without leases in the way: two sessions save an answer to one request
    at the same moment, 20 times; the key lets exactly one commit, and the
    other is told which checkpoint holds the answer."""
    with PostgresCheckpointStore(pg_dsn) as one, PostgresCheckpointStore(pg_dsn) as two:
        await one.save(make("a"))
        for i in range(20):
            saves = [
                store.save(
                    dataclasses.replace(make(f"{name}{i}", parent="a", step=1), answered=(f"q{i}",))
                )
                for name, store in (("x", one), ("y", two))
            ]
            results = await asyncio.gather(*saves, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert len(errors) == 1 and isinstance(errors[0], sg.RequestError), results
            winner = (await one.answers("r1", [f"q{i}"]))[f"q{i}"]
            assert f"(at checkpoint {winner})" in str(errors[0])
            loser = ({f"x{i}", f"y{i}"} - {winner}).pop()
            with pytest.raises(sg.CheckpointNotFoundError):
                await one.load(loser)


def test_the_command_line_on_postgres(pg_dsn: str) -> None:
    import shlex

    from tests.test_cli import cli

    first = cli("run", "examples.approval:build", "--input", '{"who": "dana", "amount": 420}',
                "--store", pg_dsn)  # fmt: skip
    assert first.returncode == 2, first.stderr
    [command] = [line.strip() for line in first.stdout.splitlines() if "--respond" in line]
    done = cli(*shlex.split(command)[1:])
    assert done.returncode == 0 and "approved 420.00 for dana" in done.stdout, done.stderr
    listed = cli("checkpoints", "list", "--store", pg_dsn)
    assert listed.returncode == 0 and "expenses" in listed.stdout and "idle" in listed.stdout
    migrated = cli("checkpoints", "migrate", "--store", pg_dsn)
    assert migrated.returncode == 0 and "has layout 4 already" in migrated.stdout
    vacuum = cli("checkpoints", "vacuum", "--store", pg_dsn)
    assert vacuum.returncode == 1 and "PostgreSQL vacuums its tables itself" in vacuum.stderr


def test_a_message_of_several_lines_is_told_in_one_its_sentences_kept() -> None:
    from stepgraph._checkpoint._postgres_connect import one_line

    refused = 'at "h", port 1 failed: Connection refused\n\tIs the server running?\n'
    assert one_line(refused) == 'at "h", port 1 failed: Connection refused. Is the server running?'
    assert one_line("a  b:\n  c\nd\n\ne.\nF") == "a b: c; d; e. F"


def test_migrating_an_empty_database_says_there_is_nothing_to_migrate(pg_dsn: str) -> None:
    # (it said only "holds no stepgraph checkpoint tables", and failed: a
    # deployment migrating a new database stopped there)
    from tests.test_cli import cli

    empty = cli("checkpoints", "migrate", "--store", pg_dsn)
    assert empty.returncode == 0 and empty.stderr == "", empty.stderr
    assert empty.stdout.strip().endswith(
        "holds no stepgraph checkpoint tables: nothing to migrate; the first run with this "
        "store creates its tables (nothing was created)"
    )
    assert cli("run", "examples.hello:build", "--input", '"x"', "--store", pg_dsn).returncode == 0
    migrated = cli("checkpoints", "migrate", "--store", pg_dsn)
    assert migrated.returncode == 0 and "has layout 4 already" in migrated.stdout


def test_the_commands_that_write_refuse_at_once_a_role_that_only_reads(pg_dsn: str) -> None:
    # (a serve on a reading role started, and each run it was asked for then
    # failed at its first save; a run said "failed: ... permission denied")
    from tests.test_cli import cli
    from tests.test_cli_errors import one_line_error

    assert cli("run", "examples.hello:build", "--input", '"x"', "--store", pg_dsn).returncode == 0
    role, reader = _a_role(pg_dsn, "reader", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}")
    listed = cli("checkpoints", "list", "--store", reader)
    assert listed.returncode == 0 and "hello" in listed.stdout, listed.stderr
    for args in (
        ("run", "examples.hello:build", "--input", '"x"'),
        ("serve", "examples.hello:build", "--port", "0"),
        ("runs", "cancel", "nope"),
        ("checkpoints", "prune", "--keep-last", "1"),
    ):
        one_line_error(
            cli(*args, "--store", reader),
            f"role '{role}' may not write its tables (no INSERT on stepgraph_segments",
        )


def test_a_role_that_may_not_read_the_tables_is_named_with_what_to_grant(pg_dsn: str) -> None:
    # (every command said only "opening it failed: permission denied for
    # table stepgraph_meta", naming neither the role nor what to grant it)
    from tests.test_cli import cli
    from tests.test_cli_errors import one_line_error

    assert cli("run", "examples.hello:build", "--input", '"x"', "--store", pg_dsn).returncode == 0
    role, stranger = _a_role(pg_dsn, "stranger")
    for args in (
        ("checkpoints", "list"),
        ("run", "examples.hello:build", "--input", '"x"'),
    ):
        one_line_error(
            cli(*args, "--store", stranger),
            f"role '{role}' may not read stepgraph's tables (permission denied for table "
            "stepgraph_meta): grant it SELECT on the stepgraph_* tables",
        )


def test_the_command_line_never_prints_the_password(pg_dsn: str) -> None:
    import shlex

    from tests.test_cli import cli

    # (the throwaway cluster trusts local connections: any password goes)
    secret = pg_dsn.replace("postgresql:///", "postgresql://:S3CRETPW@/")
    secret += "&password=S3CRETPW"
    first = cli("run", "examples.approval:build", "--input", '{"who": "dana", "amount": 420}',
                "--store", secret)  # fmt: skip
    assert first.returncode == 2, first.stderr
    [command] = [line.strip() for line in first.stdout.splitlines() if "--respond" in line]
    assert "PGPASSWORD" in first.stdout  # (what to do instead)
    done = cli(*shlex.split(command)[1:])
    assert done.returncode == 0 and "approved 420.00 for dana" in done.stdout, done.stderr
    for args in (
        ("runs", "cancel", "nosuchrun"),
        ("checkpoints", "list", "--run", "nosuchrun"),
        ("checkpoints", "migrate"),
        ("checkpoints", "vacuum"),
    ):
        shown = cli(*args, "--store", secret)
        assert shown.stdout + shown.stderr and "S3CRETPW" not in shown.stdout + shown.stderr
    for output in (first.stdout, first.stderr, done.stdout, done.stderr):
        assert "S3CRETPW" not in output
    demo = cli("demo", "--auto-approve", "--store", secret)
    assert demo.returncode == 0 and "S3CRETPW" not in demo.stdout + demo.stderr, demo.stderr
    [inspect] = [line for line in demo.stdout.splitlines() if line.startswith("inspect:")]
    listed = cli(*shlex.split(inspect.partition(":")[2])[1:])  # (quoted: it runs as printed)
    assert listed.returncode == 0 and "review-pipeline" in listed.stdout, listed.stderr
    assert "PGPASSWORD" in demo.stdout
    # Connection strings libpq cannot parse: it quotes them, or the part at fault.
    for broken in (
        secret.replace("postgresql://:S3CRETPW@/", "postgresql://u:S3CRETPW@[/"),
        secret.replace("S3CRETPW@", "S3C%zzRETPW@"),
    ):
        for args in (("checkpoints", "list"), ("runs", "cancel", "r1")):
            shown = cli(*args, "--store", broken)
            said = shown.stdout + shown.stderr
            assert shown.returncode == 1 and "failed" in said, said
            assert "S3C" not in said and "RETPW" not in said
    # Stores the command line does not take (a mistyped kind, libpq's keywords).
    for mistyped in (
        "postgresq://app:S3CRETPW@/db?host=/tmp",
        "POSTGRESQL://app:S3CRETPW@/db",
        "host=/tmp password='S3CRET PW' user=app",
        "dbname=app password=S3CRETPW",
    ):
        shown = cli("checkpoints", "list", "--store", mistyped)
        said = shown.stdout + shown.stderr
        assert shown.returncode == 1 and "store" in said and "S3CRET" not in said, said


@sg.executor(id="tick")
async def _tick(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await asyncio.sleep(0.01)
    await ctx.yield_output(n)
    if n < 6:
        await ctx.send_message(n + 1)


async def test_a_run_cancelled_while_a_save_is_under_way_is_listed_cancelled(
    pg_dsn: str,
) -> None:
    """Cancelled (Ctrl-C) while a checkpoint is being saved on one of the
    store's threads: the save is not cut short, and the run's ending is
    recorded after it — not overwritten by it — before the caller hears of
    the cancel; the run's latest checkpoint is then the one just saved."""
    store = sg.PostgresCheckpointStore(pg_dsn)
    store.open()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # every save takes 0.3 s
        conn.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER slow BEFORE INSERT ON stepgraph_segments "
            "FOR EACH ROW EXECUTE FUNCTION slow()"
        )
    try:
        flow = sg.WorkflowBuilder(start=_tick, checkpoints=store).add_edge(_tick, _tick).build()
        task = asyncio.create_task(flow.run(1))
        for _ in range(200):  # (once the first barrier's save is stored: the next is under way)
            found = await store.runs()
            if found and found[0].superstep >= 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(2):
            [info] = await store.runs()
            latest = await store.latest(info.run_id)
            assert latest is not None and info.status == "cancelled", info
            assert (info.last_checkpoint, info.superstep) == (latest.id, latest.superstep)
            await asyncio.sleep(0.5)  # (nothing lands later)
        assert info.superstep >= 1
        resumed = await flow.run(checkpoint=info.last_checkpoint)
        assert resumed.outputs[-1] == 6
    finally:
        store.close()
