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
