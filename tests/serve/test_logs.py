"""What a server keeps of a run's events: at most so many of a run's newest,
also while it goes on; a stream asking for dropped ones is told so."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import stepgraph as sg
from stepgraph._core import RunStartedEvent, StatusEvent
from stepgraph._serve._logs import RunLog

from . import flows
from .conftest import sse
from .test_api import wait_for
from .test_runs import hold_at


@pytest.fixture(autouse=True)
def _no_holds() -> Iterator[None]:
    yield
    flows.HOLD_AT = None  # (a run still held goes on, so its server can stop)


def _status() -> StatusEvent:
    return StatusEvent(status=sg.RunStatus.IN_PROGRESS)


def test_a_log_keeps_its_newest_events_and_counts_those_dropped():
    log = RunLog("r", "w", base=100, max_events=10)
    for _ in range(1000):
        log.add(_status())
    kept = log.after(0)
    assert [n for n, _ in kept] == list(range(1091, 1101))  # the newest ten, in order
    assert log.dropped == 990 and log.missed(0) == 990
    assert log.missed(1000) == 90 and log.missed(1090) == 0 and log.missed(1095) == 0
    assert [n for n, _ in log.after(1095)] == list(range(1096, 1101))
    # Bounded: the list holds at most as many places again (compacted).
    assert len(log.records) <= 2 * 10 + 1
    assert log.size == sum(len(r) for _, r in kept)


def test_a_log_keeps_at_most_its_bytes_and_always_the_newest_event():
    one = len(json.dumps({}))  # (any record is longer)
    log = RunLog("r", "w", base=0, max_bytes=1000)
    for _ in range(500):
        log.add(_status())
    assert 0 < log.size <= 1000 and log.dropped > 400
    assert log.size == sum(len(r) for _, r in log.after(0))
    tight = RunLog("r", "w", base=0, max_bytes=one)
    for _ in range(3):
        tight.add(_status())
    assert [n for n, _ in tight.after(0)] == [3] and tight.dropped == 2


def test_a_log_dropping_across_a_renumbering_counts_each_stretch():
    log = RunLog("r", "w", base=100, max_events=4)
    for _ in range(3):
        log.add(RunStartedEvent(run_id="r", workflow="w"))  # 101, 102, 103
    log.renumber()
    for _ in range(3):
        log.add(_status())  # jump, jump + 1, jump + 2
    ids = [n for n, _ in log.after(0)]
    jump = ids[1]
    assert ids == [103, jump, jump + 1, jump + 2] and jump > 10**15
    assert log.missed(0) == 2 and log.missed(101) == 1 and log.missed(102) == 0
    assert log.missed(500) == 0  # (an id from between: nothing of it dropped)
    assert [n for n, _ in log.after(101)] == ids


def test_a_long_run_keeps_its_newest_events_and_a_reconnect_hears_what_was_dropped(serve):
    flows.HOLD_AT = 400  # its first superstep
    server = serve(flows.long_counting, keep_run_events=50)
    with server.client() as client:
        body = {"input": {"steps": 400}}
        run_id = client.post("/api/workflows/long/runs", json=body).json()["run_id"]
        hold_at(400)
        # A client that heard the run's first events, then went away.
        heard = _first_events(client, run_id, 2)
        assert heard[0]["kind"] == "run_started"
        hold_at(5)  # 395 supersteps on: thousands of events, while it goes on
        run_log = server.service.log_of(run_id)
        assert run_log is not None and run_log.live
        kept = run_log.after(0)
        assert len(kept) == 50 and run_log.dropped > 1000
        assert len(run_log.records) <= 2 * 50 + 1
        going = client.get(f"/api/runs/{run_id}").json()
        assert going["live"] and going["events_dropped"] == run_log.dropped
        flows.HOLD_AT = None
        ended = wait_for(client, run_id, "idle", timeout=60)
        total = run_log.dropped + 50

        # It reconnects: told how many it missed and from where, then the rest.
        last = heard[-1]["id"]
        told, *rest = sse(client, run_id, last=last)
        assert told["kind"] == "dropped"
        resumes = rest[0]["id"]
        assert told == {
            "kind": "dropped",
            "dropped": resumes - last - 1,
            "after": last,
            "resumes_at": resumes,
            "sse_id": resumes - 1,
        }
        ids = [e["id"] for e in rest[:-1]]
        assert ids == list(range(resumes, resumes + 50))
        assert rest[-1] == {"kind": "end", "status": "idle"}
        assert rest[-2]["kind"] == "status" and rest[-2]["status"] == "idle"
        assert ended["events_dropped"] == total - 50 == told["dropped"] + 2
        # One that reconnects after the notice is not told again.
        again = sse(client, run_id, last=told["sse_id"])
        assert again == rest
        # A stream from the start is told of all that was dropped.
        whole = sse(client, run_id)
        assert whole[0]["dropped"] == total - 50 and whole[0]["after"] == 0
        assert whole[1:] == rest


def test_a_run_under_the_bound_streams_as_before(serve):
    server = serve(flows.counting, keep_run_events=50)
    with server.client() as client:
        body = {"input": {"steps": 3}}
        run_id = client.post("/api/workflows/counting/runs", json=body).json()["run_id"]
        run = wait_for(client, run_id, "idle")
        assert run["events_dropped"] == 0 and run["events_kept"]
        events = sse(client, run_id)
        assert "dropped" not in {e["kind"] for e in events}
        ids = [e["id"] for e in events[:-1]]
        assert ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) < 50
        assert events[0]["kind"] == "run_started" and events[-1]["kind"] == "end"
        assert sse(client, run_id, last=ids[1]) == events[2:]


def _first_events(client, run_id: str, count: int) -> list[dict]:
    """The first ``count`` events of the run's stream; then it disconnects."""
    out: list[dict] = []
    with client.stream("GET", f"/api/runs/{run_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line.removeprefix("data: ")))
                if len(out) == count:
                    break
    return out
