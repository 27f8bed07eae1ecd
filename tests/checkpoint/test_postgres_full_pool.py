"""A Postgres store whose pool had grown to its ``max_size`` (a busy server)
when its database went down: calls fail at once with the server's reason,
and work at once when it is back — the pool counts the connections it is
still trying to open as its own, which is not the same as every connection
being in use."""

from __future__ import annotations

import asyncio
import threading

import pytest

import stepgraph as sg
from stepgraph._checkpoint._postgres import PostgresCheckpointStore
from tests.checkpoint.test_postgres import counting
from tests.pg import own_cluster


async def grown(store: PostgresCheckpointStore) -> None:
    """Grow the store's pool to ``max_size``: as many calls as it may hold at once."""
    await counting(store).run(0)
    await asyncio.gather(*(store.runs() for _ in range(8 * store.max_size)))
    stats = store._connections().get_stats()
    assert stats["pool_size"] == store.max_size


async def test_a_full_pool_whose_server_went_down_fails_calls_with_the_servers_reason() -> None:
    with own_cluster() as cluster:
        dsn = cluster.create_database()
        with PostgresCheckpointStore(dsn, max_size=2, reconnect_timeout=0.5) as store:
            await grown(store)
            await asyncio.to_thread(cluster.halt)
            for _ in range(2):  # (not the pool's "couldn't get a connection after 29.75 sec")
                with pytest.raises(
                    sg.CheckpointError, match=r"listing runs failed: .*No such file"
                ):
                    await store.runs()
            await asyncio.to_thread(cluster.resume)
            assert len(await store.runs()) == 1  # back at once, the same store
            assert (await counting(store).run(0)).outputs == [0, 1, 2, 3]


async def test_a_full_pool_whose_connections_are_all_in_use_is_waited_for(pg_dsn: str) -> None:
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    with PostgresCheckpointStore(pg_dsn, max_size=2) as store:
        await grown(store)
        pool = store._connections()
        release = threading.Event()
        holding: list[int] = []

        def hold() -> None:  # (a call of the store's holding its connection)
            from stepgraph._checkpoint._postgres_sessions import live_connection

            with live_connection(pool, store._direct) as conn:
                holding.append(conn.execute(sessions).fetchone()[0])
                release.wait(30)

        holders = [asyncio.create_task(asyncio.to_thread(hold)) for _ in range(2)]
        while len(holding) < 2:
            await asyncio.sleep(0.01)
        direct: list[object] = []
        own = store._direct
        store._direct = lambda: direct.append(1) or own()  # type: ignore[method-assign]
        waiting = asyncio.create_task(store.runs())
        await asyncio.sleep(1)  # (four times PATIENCE: it would have connected by now)
        assert not waiting.done()  # waits for the pool: no session of its own
        release.set()
        await asyncio.gather(*holders)
        assert len(await waiting) == 1 and direct == []  # (on a pooled connection)


GATE: asyncio.Event | None = None  # what ``ticking`` waits for at 3
waiting: list[int] = []


@sg.executor(id="ticking")
async def ticking(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    if n == 3 and GATE is not None:
        waiting.append(n)
        await GATE.wait()  # (no save under way while the server goes down)
    if n > 1:
        await ctx.send_message(n - 1)
    else:
        await ctx.yield_output(n)


async def test_calls_fail_at_once_while_saves_wait_for_the_server() -> None:
    """Saves waiting for a server that is away (``reconnect_timeout``) held
    every one of the store's threads: a list or a read (a server's API
    call) waited behind them, for as long as they waited."""
    global GATE
    GATE = asyncio.Event()
    waiting.clear()
    with own_cluster() as cluster:
        dsn = cluster.create_database()
        with PostgresCheckpointStore(dsn, max_size=2, reconnect_timeout=30) as store:
            config = sg.CheckpointConfig(store, "sync")
            workflow = sg.WorkflowBuilder(start=ticking, checkpoints=config)
            workflow = workflow.add_edge(ticking, ticking).build()
            before = await workflow.run(1)
            runs = [asyncio.create_task(workflow.run(5)) for _ in range(3 * store.max_size)]
            while len(waiting) < len(runs):  # (each run past its first saves, none saving)
                await asyncio.sleep(0.01)
            await asyncio.to_thread(cluster.halt)
            GATE.set()
            await asyncio.sleep(1)  # (their next saves now wait for the server)
            with pytest.raises(sg.CheckpointError, match=r"listing runs failed: .*No such file"):
                await store.runs()
            with pytest.raises(sg.CheckpointError, match=r"failed: .*No such file"):
                await store.run_info(before.run_id)
            assert not any(run.done() for run in runs)  # (still waiting: not given up)
            await asyncio.to_thread(cluster.resume)
            results = await asyncio.gather(*runs)
            assert [r.outputs for r in results] == [[1]] * len(runs)
    GATE = None
