"""Event ids of a run that goes from one server to another and back: a
client following it with ``Last-Event-ID`` (behind a load balancer, say)
gets every event of each continuation — the server it comes back to
numbers its continuation above the other server's ids, not on from its own
older ones."""

from __future__ import annotations

import time

import stepgraph as sg
from stepgraph._core import RunStartedEvent, StatusEvent
from stepgraph._serve._logs import RunLog

from . import flows
from .conftest import sse
from .test_api import wait_for


def test_a_run_back_from_another_server_numbers_above_that_servers_ids(serve, tmp_path):
    flows.STEP = 0.02
    path = tmp_path / "shared.sqlite"
    first = serve(flows.slow, store=sg.SqliteCheckpointStore(path))
    second = serve(flows.slow, store=sg.SqliteCheckpointStore(path))
    with first.client() as a, second.client() as b:
        run_id = a.post("/api/workflows/slow/runs", json={"input": {"steps": 90}}).json()["run_id"]
        time.sleep(0.3)
        assert b.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 202
        wait_for(a, run_id, "cancelled")
        on_first = sse(a, run_id)
        assert b.post(f"/api/runs/{run_id}/resume", json={}).status_code == 202
        time.sleep(0.3)
        assert a.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 202
        wait_for(b, run_id, "cancelled")
        on_second = sse(b, run_id)
        assert on_second[0]["id"] > on_first[-2]["id"]  # (a log opened later: above)
        assert a.post(f"/api/runs/{run_id}/resume", json={}).status_code == 202
        wait_for(a, run_id, "idle", timeout=60)
        # Back on the first server, a client that followed the run on the second.
        back = sse(a, run_id, last=on_second[-2]["id"])
        kinds = [e["kind"] for e in back]
        assert kinds[0] == "run_started" and kinds[-1] == "end"
        assert back[-1]["status"] == "idle" and "output" in kinds
        # All of the first server's log, each event once, in order.
        whole = sse(a, run_id)
        ids = [e["id"] for e in whole[:-1]]
        assert ids == sorted(set(ids))
        assert whole[: len(on_first) - 1] == on_first[:-1]
        assert whole[len(on_first) - 1 : -1] == back[:-1]
        # A client that had the first server's first part gets the rest.
        assert sse(a, run_id, last=on_first[-2]["id"]) == back


def test_a_log_renumbered_gives_each_record_once_after_any_id():
    log = RunLog("r", "w", base=100)
    started = RunStartedEvent(run_id="r", workflow="w")
    for _ in range(3):
        log.add(started)  # ids 101, 102, 103
    log.renumber()  # (now, in microseconds: far above)
    for _ in range(2):
        log.add(StatusEvent(status=sg.RunStatus.IN_PROGRESS))
    ids = [n for n, _ in log.after(0)]
    jump = ids[3]
    assert ids == [101, 102, 103, jump, jump + 1] and jump > 10**15
    assert log.last_id == jump + 1
    assert [n for n, _ in log.after(102)] == [103, jump, jump + 1]
    assert [n for n, _ in log.after(103)] == [jump, jump + 1]
    assert [n for n, _ in log.after(500)] == [jump, jump + 1]  # (an id from between)
    assert [n for n, _ in log.after(jump)] == [jump + 1]
    assert log.after(jump + 1) == []
