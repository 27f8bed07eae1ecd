"""The Postgres store when the server ends its sessions — a restart, a
crash, an administrator's ``pg_terminate_backend``: runs after it work at
once, a run under way goes on, and a run whose lease went with its session
takes it back only if nobody else took or continued the run meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from stepgraph._checkpoint import new_holder
from stepgraph._checkpoint._postgres import PostgresCheckpointStore
from tests.checkpoint.test_postgres import counting, sql
from tests.checkpoint.test_stores import make
from tests.pg import own_cluster

GATES: dict[int, asyncio.Event] = {}  # superstep -> what its handler waits for


@sg.executor(id="gated")
async def gated(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await ctx.yield_output(n)
    if n in GATES:
        await GATES[n].wait()  # a superstep under way while the server goes away
    if n < 3:
        await ctx.send_message(n + 1)


def gated_workflow(store: sg.CheckpointStore, durability: str = "sync") -> sg.Workflow:
    config = sg.CheckpointConfig(store, durability)  # type: ignore[arg-type]
    return sg.WorkflowBuilder(start=gated, checkpoints=config).add_edge(gated, gated).build()


def end_sessions(dsn: str, *, leases_only: bool = False) -> int:
    """End other sessions on the test's database, as an administrator
    would — every one, or those holding a lease (an advisory lock); how many."""
    held = "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
    ended = sql(
        dsn,
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
        f"current_database() AND pid <> pg_backend_pid() {held if leases_only else ''}",
    )
    pids = [pid for pid, _ in ended]
    while sql(dsn, "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", pids):
        time.sleep(0.01)  # (asked to end; gone a moment later)
    return len(pids)


async def waiting_run(
    store: PostgresCheckpointStore, durability: str = "sync"
) -> tuple[asyncio.Task[sg.RunResult], str]:
    """A run stopped in its superstep 1 (its entry and first barrier stored):
    the task and its run id."""
    GATES.clear()
    GATES[1] = asyncio.Event()
    before = {run.run_id for run in await store.runs()}
    task = asyncio.create_task(gated_workflow(store, durability).run(0))
    while True:
        runs = [run for run in await store.runs() if run.run_id not in before]
        if runs and runs[0].superstep == 1:
            return task, runs[0].run_id
        await asyncio.sleep(0.02)


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresCheckpointStore]:
    with PostgresCheckpointStore(pg_dsn, min_size=3) as opened:
        yield opened


def noise(caplog: pytest.LogCaptureFixture) -> list[str]:
    """psycopg's warnings about what the store handles (printed on stderr
    when logging is not set up)."""
    handled = ("discarding", "error connecting", "error ignored")
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(handled)]


async def test_sessions_ended_while_idle_are_passed_over(
    store: PostgresCheckpointStore, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="psycopg")
    first = await counting(store).run(0)
    assert end_sessions(pg_dsn) >= 3  # the pool's idle connections
    for _ in range(4):  # more runs than the pool had connections, each at once
        assert (await counting(store).run(0)).outputs == [0, 1, 2, 3]
    assert (await store.load(first.last_checkpoint)).run_id == first.run_id
    assert len(await store.runs()) == 5
    assert noise(caplog) == []  # (not printed: the store handled them)


async def test_a_run_whose_lease_session_ended_takes_its_run_back(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    task, run_id = await waiting_run(store)
    assert end_sessions(pg_dsn, leases_only=True) == 1  # its lease's session: the lock is gone
    with PostgresCheckpointStore(pg_dsn) as other:  # free for now (given back at close)
        assert await other.lease(run_id, new_holder()) is None
    GATES[2] = asyncio.Event()
    GATES[1].set()
    while [i.superstep for i in await store.list(run_id)][-1] < 2:
        await asyncio.sleep(0.02)
    with PostgresCheckpointStore(pg_dsn) as other:  # its next save took it back
        assert await other.lease(run_id, new_holder()) is not None
    GATES[2].set()
    result = await asyncio.wait_for(task, timeout=30)
    assert result.status is sg.RunStatus.IDLE and result.outputs == [0, 1, 2, 3]
    listed = await store.list(run_id)
    assert [i.superstep for i in listed] == [0, 1, 2, 3, 4]  # nothing lost, nothing twice
    with PostgresCheckpointStore(pg_dsn) as other:  # given back at the end, as always
        assert await other.lease(run_id, new_holder()) is None


@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_a_run_taken_elsewhere_meanwhile_stops_and_records_nothing(
    store: PostgresCheckpointStore, pg_dsn: str, durability: str
) -> None:
    task, run_id = await waiting_run(store, durability)
    end_sessions(pg_dsn, leases_only=True)
    [before] = [run for run in await store.runs() if run.run_id == run_id]
    with PostgresCheckpointStore(pg_dsn) as other:
        thief = new_holder()
        assert await other.lease(run_id, thief) is None  # free: the lock went with the session
        GATES[1].set()
        with pytest.raises(
            sg.CheckpointLeaseLostError,
            match=rf"run '{run_id}' lost its lease .* and another call in this process, {os.getpid()} on ",
        ):
            await asyncio.wait_for(task, timeout=30)
        # Nothing written after, not even a "failed": the run is the other process's.
        assert await store.run_info(run_id) == before
        assert len(await store.list(run_id)) == 2
        with pytest.raises(sg.CheckpointLeaseLostError, match="taken over by another process"):
            await store.save(make("late", run=run_id, parent=before.last_checkpoint, step=2))
        await other.release(run_id, thief)


async def test_a_run_continued_elsewhere_meanwhile_stops(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    task, run_id = await waiting_run(store)
    end_sessions(pg_dsn, leases_only=True)
    [run] = [run for run in await store.runs() if run.run_id == run_id]
    with PostgresCheckpointStore(pg_dsn) as other:  # took it, wrote a checkpoint, gave it back
        holder = new_holder()
        onwards = make("elsewhere", run=run_id, parent=run.last_checkpoint, step=2)
        await other.save(dataclasses.replace(onwards, holder=holder))
        await other.release(run_id, holder)
        written = await other.run_info(run_id)
    GATES[1].set()
    with pytest.raises(
        sg.CheckpointLeaseLostError,
        match=r"newest stored checkpoint is elsewhere, not .*another process continued it",
    ):
        await asyncio.wait_for(task, timeout=30)
    assert [i.id for i in await store.list(run_id)][-1] == "elsewhere"
    assert await store.run_info(run_id) == written  # (not marked failed by the loser)
    with PostgresCheckpointStore(pg_dsn) as after:  # not kept: the run is free
        assert await after.lease(run_id, new_holder()) is None


async def test_a_run_deleted_meanwhile_stops_saying_so(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    # (the server that lost every write of the run in a crash looks the same;
    # the refusal said "its newest stored checkpoint is None")
    task, run_id = await waiting_run(store)
    end_sessions(pg_dsn, leases_only=True)
    with PostgresCheckpointStore(pg_dsn) as other:  # free: the lock went with the session
        await other.delete_run(run_id)
    GATES[1].set()
    with pytest.raises(sg.CheckpointLeaseLostError) as lost:
        await asyncio.wait_for(task, timeout=30)
    assert "none of its checkpoints is stored any more (the newest this process wrote was " in (
        str(lost.value)
    ) and "None" not in str(lost.value), lost.value
    assert await store.run_info(run_id) is None  # (nothing written after)


async def test_a_lease_outlives_idle_session_timeout(
    store: PostgresCheckpointStore, pg_dsn: str
) -> None:
    database = sql(pg_dsn, "SELECT current_database()")[0][0]
    sql(pg_dsn, f'ALTER DATABASE "{database}" SET idle_session_timeout = 500')  # (ms)
    end_sessions(pg_dsn)  # (sessions opened before keep the old setting)
    task, run_id = await waiting_run(store)
    await asyncio.sleep(1.5)  # the superstep goes on: its lease's session sits idle
    with PostgresCheckpointStore(pg_dsn) as other:
        assert await other.lease(run_id, new_holder()) is not None  # still held
    GATES[1].set()
    result = await asyncio.wait_for(task, timeout=30)
    assert result.outputs == [0, 1, 2, 3]
    assert [i.superstep for i in await store.list(run_id)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("mode", ["immediate", "fast"])
async def test_a_store_outlives_a_server_restart(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="psycopg")
    with own_cluster(durable=True) as cluster:  # (commits survive a crash)
        dsn = cluster.create_database()
        with PostgresCheckpointStore(dsn, min_size=3) as store:
            before = await counting(store).run(0)
            task, run_id = await waiting_run(store)
            await asyncio.to_thread(cluster.restart, mode)
            GATES[1].set()
            under_way = await asyncio.wait_for(task, timeout=60)
            assert under_way.outputs == [0, 1, 2, 3]
            assert [i.superstep for i in await store.list(run_id)] == [0, 1, 2, 3, 4]
            after = await counting(store).run(0)
            assert after.outputs == [0, 1, 2, 3]
            for result in (before, under_way, after):  # all there, and each resumes
                assert (await store.load(result.last_checkpoint)).run_id == result.run_id
    assert noise(caplog) == []


async def test_a_pool_of_ones_own_without_autocommit_too(pg_dsn: str) -> None:
    import psycopg_pool

    pool = psycopg_pool.ConnectionPool(pg_dsn, min_size=2, max_size=2, open=True)
    try:
        with PostgresCheckpointStore(pool=pool) as store:
            await counting(store).run(0)
            sql(pg_dsn, "SELECT pg_sleep(0.2)")  # (the pool has opened both)
            assert end_sessions(pg_dsn) == 3  # (and a spare lease session)
            for _ in range(3):
                assert (await counting(store).run(0)).outputs == [0, 1, 2, 3]
        with PostgresCheckpointStore(pg_dsn) as fresh:  # committed, every one
            assert len(await fresh.runs()) == 4
    finally:
        pool.close()


async def test_a_server_that_is_down_fails_calls_at_once_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="psycopg")
    with own_cluster() as cluster:
        dsn = cluster.create_database()
        with PostgresCheckpointStore(dsn, min_size=2, reconnect_timeout=0.5) as store:
            before = await counting(store).run(0)
            await asyncio.to_thread(cluster.halt)
            started = time.perf_counter()
            with pytest.raises(sg.CheckpointError, match=r"listing runs failed: .*No such file"):
                await store.runs()
            assert time.perf_counter() - started < 2  # not the pool's 30 s
            started = time.perf_counter()
            with pytest.raises(sg.CheckpointError, match=r"failed: .*No such file or directory"):
                await counting(store).run(0)  # its save waited for the server half a second
            assert 0.5 <= time.perf_counter() - started < 5
            await asyncio.to_thread(cluster.resume)
            after = await counting(store).run(0)  # the same store, back at work
            assert {r.run_id for r in await store.runs()} >= {before.run_id, after.run_id}
    assert noise(caplog) == []  # (the pool's tries to reconnect: not printed)


def test_a_session_on_a_descriptor_past_1023_is_not_taken_for_ended(pg_dsn: str) -> None:
    import os
    import resource

    import psycopg

    from stepgraph._checkpoint._postgres_sessions import ended

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2048), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # (a busy server's)
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            assert conn.fileno() > 1023
            assert not ended(conn)
            end_sessions(pg_dsn)
            assert ended(conn)
    finally:
        for fd in filler:
            os.close(fd)


def test_the_command_line_when_the_server_goes_down(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    with own_cluster() as cluster:
        dsn = cluster.create_database()
        marker = tmp_path / "started"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HOG_STARTED": str(marker)}

        def start(*args: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-m", "stepgraph", "run", *args, "--store", dsn],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
            )  # fmt: skip

        with PostgresCheckpointStore(dsn) as store:
            store.open()  # (the tables, so that the test can watch them)

        def under_way() -> subprocess.Popen[str]:
            running = start("tests.cli_flows:slow", "--input", "0")
            while len(sql(dsn, "SELECT 1 FROM stepgraph_segments")) < 3:
                time.sleep(0.02)
            return running

        # A server restarted while a run goes on: its saves wait for it.
        running = under_way()
        cluster.halt()
        time.sleep(1)
        cluster.resume()
        out, err = running.communicate(timeout=60)
        assert running.returncode == 0 and "output: 12" in out, out + err
        # One that stays down fails the run (after 10 s): its reason, how to go on.
        sql(dsn, "DELETE FROM stepgraph_segments")
        running = under_way()
        cluster.halt()
        out, err = running.communicate(timeout=60)
        said = out + err
        assert running.returncode == 1, said
        assert "failed: checkpoint database" in said and "Traceback" not in said, said
        assert "go on from the newest with: " in said and "--resume ID" in said
        # Ctrl-C while it is down: where the run got to cannot be read; how to go on.
        cluster.resume()
        hog = start("tests.cli_flows:hogging", "--input", "2")
        while not marker.exists():
            time.sleep(0.01)
        cluster.halt()
        hog.send_signal(signal.SIGINT)
        pressed = time.monotonic()
        out, err = hog.communicate(timeout=60)
        said = out + err
        assert hog.returncode == 130, said
        # (its handler's 2 s, then no wait for the server: the save waiting gives up)
        assert time.monotonic() - pressed < 6
        assert "stopped; where the run got to could not be read" in said
        assert "unexpected" not in said and "Traceback" not in said
        assert "go on from the newest with: " in said


async def test_a_save_waits_for_a_server_that_comes_back() -> None:
    with (
        own_cluster(durable=True) as cluster,
        PostgresCheckpointStore(cluster.create_database(), min_size=2) as store,
    ):
        task, run_id = await waiting_run(store)
        await asyncio.to_thread(cluster.halt)
        GATES[1].set()  # its next save finds the server gone
        await asyncio.sleep(1.0)
        assert not task.done()  # waiting for the server, not failed
        await asyncio.to_thread(cluster.resume)
        result = await asyncio.wait_for(task, timeout=30)
        assert result.status is sg.RunStatus.IDLE and result.outputs == [0, 1, 2, 3]
        assert [i.superstep for i in await store.list(run_id)] == [0, 1, 2, 3, 4]
        with PostgresCheckpointStore(cluster.create_database()) as other:  # (not held)
            assert await other.lease(run_id, new_holder()) is None


def test_connections_have_a_connect_timeout_unless_the_dsn_names_one(pg_dsn: str) -> None:
    import psycopg

    def timeout_of(store: PostgresCheckpointStore) -> str:
        return psycopg.conninfo.conninfo_to_dict(store._conninfo())["connect_timeout"]

    # (a server that accepts and never answers would hang libpq for ever)
    assert timeout_of(PostgresCheckpointStore(pg_dsn)) == "10"
    assert timeout_of(PostgresCheckpointStore(pg_dsn + "&connect_timeout=3")) == "3"
    with pytest.raises(ValueError, match="reconnect_timeout"):
        PostgresCheckpointStore(pg_dsn, reconnect_timeout=-1)


async def test_a_run_taken_back_is_checked_again_when_the_check_failed(
    store: PostgresCheckpointStore, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepgraph._checkpoint._postgres_sessions import ServerAway

    task, run_id = await waiting_run(store)
    end_sessions(pg_dsn, leases_only=True)
    checks: list[str] = []
    fetch = store._fetch

    def flaky(sql_text: str, args: Any, doing: str) -> list[tuple[Any, ...]]:
        if "last_checkpoint FROM stepgraph_runs" in sql_text:
            checks.append(doing)
            if len(checks) == 1:  # the server went away just then
                raise sg.CheckpointError("gone") from ServerAway(OSError("gone"))
        return fetch(sql_text, args, doing)

    monkeypatch.setattr(store, "_fetch", flaky)
    GATES[1].set()
    result = await asyncio.wait_for(task, timeout=30)
    assert result.outputs == [0, 1, 2, 3] and len(checks) == 2  # taken back, checked twice
    assert [i.superstep for i in await store.list(run_id)] == [0, 1, 2, 3, 4]


async def test_calls_do_not_wait_for_a_pool_still_backing_off(
    store: PostgresCheckpointStore, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg_pool

    await counting(store).run(0)
    pool = store._connections()
    waits: list[float] = []

    def backing_off(timeout: float | None = None) -> Any:
        # (after an outage the pool tries again on its own schedule: seconds away)
        waits.append(timeout or pool.timeout)
        raise psycopg_pool.PoolTimeout("couldn't get a connection")

    monkeypatch.setattr(pool, "getconn", backing_off)
    # The server processes of this database's sessions, but the asking one:
    # those opened from here on must all be gone (one the first run closed
    # may still be going when it is read first; it may go meanwhile).
    sessions = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    before = set(sql(pg_dsn, sessions))
    assert len(await store.runs()) == 1  # on a connection of its own, at once
    assert (await counting(store).run(0)).outputs == [0, 1, 2, 3]
    assert waits and max(waits) <= 0.25
    # Each closed after its call (its server process may take a moment to go).
    for _ in range(100):
        if set(sql(pg_dsn, sessions)) <= before:
            break
        await asyncio.sleep(0.05)
    assert set(sql(pg_dsn, sessions)) <= before
