"""What a server keeps of a run's outputs (its newest, and those the store
may not hold yet), and how the API gives them: the newest in the details,
every one a page at a time."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import stepgraph as sg
from stepgraph._checkpoint import _store
from stepgraph._core import OutputEvent
from stepgraph._serve._logs import RunLog

from . import flows
from .conftest import Served
from .test_api import wait_for
from .test_runs import until


@pytest.fixture(autouse=True)
def _no_holds() -> Iterator[None]:
    yield
    flows.HOLD_AT = None  # (a run still held goes on, so its server can stop)


def _output(superstep: int, size: int = 100) -> OutputEvent:
    return OutputEvent(data="x" * size, superstep=superstep)


def test_a_log_keeps_its_newest_outputs_and_those_not_stored_yet() -> None:
    log = RunLog("r", "w", max_outputs=3, max_output_bytes=10**9)
    for step in range(1, 11):
        log.add(_output(step))
    # Not known stored: all kept (the details add them to what the store holds).
    assert len(log.kept) == 10 and [s for s, _ in log.fresh] == list(range(1, 11))
    assert log.over
    log.stored_through(7)  # (the store holds the checkpoint of superstep 7)
    assert [s for s, _ in log.fresh] == [8, 9, 10] and len(log.kept) == 3 and not log.over
    assert log.outputs_count == 10 and log.outputs_dropped == 7
    assert log.output_bytes == sum(n for _, _, n in log.kept)
    assert log.held == log.size + log.output_bytes
    log.add(_output(11))
    log.let_go()  # (the continuation ended: it flushed its checkpoints)
    assert log.fresh == [] and len(log.kept) == 3 and log.outputs_dropped == 8
    # At most its bytes, and always the newest one.
    tight = RunLog("r", "w", max_output_bytes=1)
    for step in range(1, 4):
        tight.add(_output(step))
    tight.let_go()
    assert [s for s, _, _ in tight.kept] == [3] and tight.outputs_dropped == 2


def _start_bulky(client: httpx.Client, steps: int) -> str:
    body = {"input": {"steps": steps}}
    return str(client.post("/api/workflows/bulky/runs", json=body).json()["run_id"])


def _pages(client: httpx.Client, run_id: str, limit: int) -> list[Any]:
    out: list[Any] = []
    while True:
        page = client.get(
            f"/api/runs/{run_id}/outputs", params={"offset": len(out), "limit": limit}
        ).json()
        assert page["offset"] == len(out) and page["dropped"] == 0
        out += page["outputs"]
        if not page["outputs"]:
            return out


def test_a_run_yielding_many_large_outputs_keeps_the_servers_memory_bounded(
    serve: Callable[..., Served],
) -> None:
    # (every output stayed in memory, in the log and in the details' cache,
    # outside the server's budget: 3,001 outputs of 100 KB held 368 MB, and
    # one look at the run's details took it to 1.1 GB)
    server = serve(flows.bulky, keep_run_outputs=10, keep_run_output_bytes=45_000)
    steps, held_at = 300, 60
    every = [f"{n:06d}:" + "x" * flows.BULK for n in range(steps, 0, -1)]
    with server.client() as client:
        flows.HOLD_AT = held_at
        run_id = _start_bulky(client, steps)
        until(lambda: flows.holding == held_at, "the run to go past 240 outputs")
        run_log = server.service.logs[run_id]
        # Going on: the newest, and those the store may not hold yet (a few
        # supersteps' worth: it is asked which at most every 50 ms).
        assert run_log.outputs_count == steps - held_at
        assert len(run_log.kept) <= 40, len(run_log.kept)
        assert run_log.output_bytes <= 40 * (flows.BULK + 500)
        run = client.get(f"/api/runs/{run_id}").json()
        assert run["outputs_total"] == steps - held_at and run["outputs_dropped"] == 0
        assert run["outputs"] == every[: steps - held_at][-200:]
        flows.HOLD_AT = None
        run = wait_for(client, run_id, "idle")
        # Ended: its newest outputs only, within its bytes.
        assert len(run_log.kept) == 4 and run_log.output_bytes <= 45_000
        assert run_log.outputs_count == steps and run_log.outputs_dropped == steps - 4
        # The details: the newest 200 and how many in all, every one by pages.
        assert run["outputs_total"] == steps and run["outputs_dropped"] == 0
        assert run["outputs"] == every[-200:]
        assert _pages(client, run_id, 70) == every
        cached = server.service._describer._outputs.values()
        assert cached and all(len(known.newest) <= 200 for known in cached)
        # The server's budget counts them.
        assert run_log.held == run_log.size + run_log.output_bytes
        page = client.get(f"/api/runs/{run_id}/outputs", params={"offset": 290}).json()
        assert page == {"outputs": every[290:], "offset": 290, "total": steps, "dropped": 0}
        for query in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": "x"}):
            refused = client.get(f"/api/runs/{run_id}/outputs", params=query)
            assert refused.status_code == 422, query
        assert client.get("/api/runs/nope/outputs").status_code == 404


def test_a_run_under_the_bound_shows_its_outputs_as_before(serve: Callable[..., Served]) -> None:
    server = serve(flows.counting)
    with server.client() as client:
        body = {"input": {"steps": 3}}
        run_id = client.post("/api/workflows/counting/runs", json=body).json()["run_id"]
        run = wait_for(client, run_id, "idle")
        assert run["outputs"] == ["left 3", "left 2", "left 1"]
        assert (run["outputs_total"], run["outputs_dropped"]) == (3, 0)
        page = client.get(f"/api/runs/{run_id}/outputs").json()
        assert page == {"outputs": run["outputs"], "offset": 0, "total": 3, "dropped": 0}
        assert server.service.logs[run_id].outputs == run["outputs"]


def test_a_run_the_store_holds_none_of_counts_the_outputs_it_let_go(
    serve: Callable[..., Served],
) -> None:
    server = serve(flows.counting, keep_run_outputs=2)
    with server.client() as client:
        body = {"input": {"steps": 5}}
        run_id = client.post("/api/workflows/counting/runs", json=body).json()["run_id"]
        wait_for(client, run_id, "idle")
    service = server.service
    service.logs[run_id].unstored = True  # (as after an outage: shown from memory)

    async def forget() -> None:
        await service.store.delete_run(run_id)

    server.call(forget)
    with server.client() as client:
        run = client.get(f"/api/runs/{run_id}").json()
        assert run["outputs"] == ["left 2", "left 1"]
        assert (run["outputs_total"], run["outputs_dropped"]) == (5, 3)
        page = client.get(f"/api/runs/{run_id}/outputs", params={"offset": 0}).json()
        assert page == {"outputs": ["left 2", "left 1"], "offset": 3, "total": 5, "dropped": 3}


class _Counting(sg.SqliteCheckpointStore):
    """A store that tells how much of a run its reads held at once (the
    largest page of records, in body bytes) and which checkpoints it read
    back for the outputs it returned."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.largest_page = 0
        self.read_back: list[str] = []

    def _rows_page(self, run_id: str, before: int | None, count: int) -> Any:
        rows, damaged, after = super()._rows_page(run_id, before, count)
        self.largest_page = max(self.largest_page, sum(len(r.body) for r in rows))
        return rows, damaged, after

    def _read_many(self, ids: list[str]) -> Any:
        self.read_back += ids
        return super()._read_many(ids)


def test_a_page_of_a_long_run_in_the_store_reads_only_its_outputs(
    serve: Callable[..., Served], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the first look at a long run this server did not run -- after a
    # restart, or run by another process -- read every output it yielded at
    # once: 3,000 outputs of 100 KB took the server 500 MB higher)
    monkeypatch.setattr(_store, "_PAGE_BYTES", 50_000)  # (five outputs' worth)
    steps = 300
    every = [f"{n:06d}:" + "x" * flows.BULK for n in range(steps, 0, -1)]
    path = tmp_path / "long.sqlite"
    with serve(flows.bulky, store=sg.SqliteCheckpointStore(path)).client() as client:
        wait_for(client, _start_bulky(client, steps), "idle")
    store = _Counting(path)
    with serve(flows.bulky, store=store).client() as client:
        [run] = client.get("/api/runs").json()["runs"]
        details = client.get(f"/api/runs/{run['run_id']}").json()
        assert details["outputs"] == every[-200:] and details["outputs_total"] == steps
        # The newest came with the count, read back page by small page.
        assert store.read_back == [] and store.largest_page <= 3 * 50_000
        tracemalloc.start()
        try:
            page = client.get(
                f"/api/runs/{run['run_id']}/outputs", params={"offset": 100, "limit": 5}
            ).json()
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert page == {"outputs": every[100:105], "offset": 100, "total": steps, "dropped": 0}
        # Counted a page of records at a time; then only the page's read again.
        assert len(store.read_back) == 5 and store.largest_page <= 3 * 50_000
        assert peak - held < len(every) * flows.BULK // 10, peak  # (all of them: 3 MB)
