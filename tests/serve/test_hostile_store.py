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
