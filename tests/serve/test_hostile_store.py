"""A store someone rewrote behind the server's back: damaged records are
refused naming the record (4xx), never a 500."""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Served


def test_a_damaged_run_record_is_named_not_a_server_failure(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    with served.client() as client:
        damaged = client.post("/api/workflows/gate/runs", json={"input": "one"}).json()["run_id"]
        intact = client.post("/api/workflows/gate/runs", json={"input": "two"}).json()["run_id"]
        for run_id in (damaged, intact):
            assert client.get(f"/api/runs/{run_id}").status_code == 200
        with sqlite3.connect(served.store.path) as db:  # (an error that is bytes, not text)
            db.execute(
                "UPDATE runs SET status = 'failed', error = ? WHERE run_id = ?",
                (b"executor 'x' failed in superstep 1: \xff", damaged),
            )
        db.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            page = client.get(f"/api/runs/{damaged}")
            listed = client.get("/api/runs")
        assert page.status_code == 409, page.text
        assert damaged in page.json()["error"] and "error" in page.json()["error"]
        assert listed.status_code == 200, listed.text
        assert [run["run_id"] for run in listed.json()["runs"]] == [intact]


@pytest.mark.parametrize("value", [float("inf"), -float("inf")])
def test_a_time_no_json_holds_is_refused(serve: Callable[..., Served], value: Any) -> None:
    served = serve()
    with served.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "one"}).json()["run_id"]
        with sqlite3.connect(served.store.path) as db:
            db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (value, run_id))
        db.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert client.get(f"/api/runs/{run_id}").status_code == 409
            assert client.get("/api/runs").json()["runs"] == []


@pytest.mark.parametrize(
    "error",
    [
        "executor '\\x' failed in superstep 1: boom",
        "executor '\\N' failed in superstep 1: boom",
        "executor 'a' failed in superstep " + "9" * 5000 + ": boom",
    ],
)
def test_a_stored_error_not_as_the_engine_writes_it_is_shown_as_it_is(
    serve: Callable[..., Served], error: str
) -> None:
    served = serve()
    with served.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "one"}).json()["run_id"]
        with sqlite3.connect(served.store.path) as db:
            db.execute(
                "UPDATE runs SET status = 'failed', error = ? WHERE run_id = ?", (error, run_id)
            )
        db.close()
        page = client.get(f"/api/runs/{run_id}")
        assert page.status_code == 200, page.text
        assert page.json()["error"] == error
        assert page.json()["failure"] is None


def test_a_second_answer_to_a_request_id_holding_a_backslash_is_refused_as_it_is() -> None:
    from stepgraph import RequestError
    from stepgraph._serve._refusals import refusal

    message = (
        "request '\\x' of run 'r' was already answered (at checkpoint c); to answer it again "
        "from an earlier checkpoint, fork the run"
    )
    problem = refusal(RequestError(message))
    assert (problem.status, problem.message) == (409, message)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("responses", '{"responses": {"\\ud800": true}}'),
        ("resume", '{"checkpoint_id": "\\ud800"}'),
        ("fork", '{"checkpoint_id": "a\\udfff"}'),
    ],
)
def test_an_id_holding_a_lone_surrogate_is_refused_not_a_server_failure(
    serve: Callable[..., Served], route: str, body: str
) -> None:
    served = serve()
    with served.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "one"}).json()["run_id"]
        answer = client.post(
            f"/api/runs/{run_id}/{route}",
            content=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 422, answer.text
        assert "lone surrogate" in answer.json()["error"]
        # (quoting at most 100 characters of it, as every refusal)
        long = body.replace("\\u", "x" * 5000 + "\\u", 1)
        answer = client.post(
            f"/api/runs/{run_id}/{route}",
            content=long.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 422, answer.text
        assert "(4,9" in answer.json()["error"] and len(answer.json()["error"]) < 400
