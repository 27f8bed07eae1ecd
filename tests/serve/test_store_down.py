"""The server on a PostgreSQL store whose server goes down: calls that need
the store answer 503 with its reason (no password, no traceback), and a run
the outage failed before any of it was stored is still shown, failed, once
the store is back (not a 404)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stepgraph as sg
from tests.pg import own_cluster

from . import flows
from .test_api import wait_for


def test_a_store_gone_down_is_a_503_and_the_run_it_failed_stays_shown(serve):
    with own_cluster() as cluster:
        # (its saves wait half a second for a server that takes no connections)
        store = sg.PostgresCheckpointStore(cluster.create_database(), reconnect_timeout=0.5)
        server = serve(flows.gate, store=store)
        with server.client() as client:
            before = client.post("/api/workflows/gate/runs", json={"input": "before"})
            wait_for(client, before.json()["run_id"], "idle_with_pending_requests")
            cluster.halt()
            started = client.post("/api/workflows/gate/runs", json={"input": "during"})
            assert started.status_code == 201, started.text  # (its first save comes after)
            run_id = started.json()["run_id"]
            for path in (
                "/api/runs",
                f"/api/runs/{run_id}",
                f"/api/runs/{before.json()['run_id']}",
            ):
                down = client.get(path)
                assert down.status_code == 503, down.text
                assert "checkpoint database" in down.json()["error"]
            time.sleep(1.5)  # (the run's first save gave up meanwhile)
            cluster.resume()
            failed = wait_for(client, run_id, "failed")
            assert failed["error"] and "checkpoint database" in failed["error"]
            assert failed["checkpoints"] == []
            # Listed too (the console's runs page), first: the newest.
            for query in ({}, {"status": "failed"}, {"workflow": "gate"}):
                first = client.get("/api/runs", params=query).json()["runs"][0]
                assert first["run_id"] == run_id, query
                assert (first["status"], first["error"]) == ("failed", failed["error"])
                assert first["checkpoints"] == 0 and first["started_at"] > 0
            for query in ({"status": "idle"}, {"workflow": "slow"}):
                listed = client.get("/api/runs", params=query).json()["runs"]
                assert run_id not in [r["run_id"] for r in listed], query
            assert wait_for(client, before.json()["run_id"], "idle_with_pending_requests")


def stored_run(client) -> str:
    """A long run of ``slow`` started, once some of it is stored: its id."""
    going = client.post("/api/workflows/slow/runs", json={"input": {"steps": 400}})
    run_id = going.json()["run_id"]
    deadline = time.monotonic() + 20
    while not client.get(f"/api/runs/{run_id}").json().get("checkpoints"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return run_id


@contextmanager
def halted_during_a_run(
    serve, reconnect_timeout: float = 10.0
) -> Iterator[tuple[Any, Any, str, Any]]:
    """A server on a throwaway cluster, a long run some of which is stored,
    then the cluster halted: (server, client, that run's id, the cluster)."""
    with own_cluster() as cluster:
        store = sg.PostgresCheckpointStore(
            cluster.create_database(), reconnect_timeout=reconnect_timeout
        )
        server = serve(flows.slow, store=store)
        with server.client() as client:
            run_id = stored_run(client)
            cluster.halt()
            yield server, client, run_id, cluster


def test_runs_an_outage_ended_show_how_they_ended(serve):
    # Failed after some of it was stored: failed, not in progress for ever.
    with halted_during_a_run(serve, 0.5) as (_, client, run_id, cluster):
        time.sleep(1.5)  # (its next save gave up meanwhile: the run failed)
        # Cancelled before any of it was stored: still shown.
        started = client.post("/api/workflows/slow/runs", json={"input": {"steps": 400}})
        assert started.status_code == 201, started.text
        cancelled = started.json()["run_id"]
        assert client.post(f"/api/runs/{cancelled}/cancel", json={}).status_code == 202
        cluster.resume()
        failed = wait_for(client, run_id, "failed")
        assert "checkpoint database" in failed["error"] and failed["checkpoints"]
        # (the store still says in progress, held by no one: but no process was
        # killed, and the run was shown failed and "interrupted" at once)
        assert failed["interrupted"] is False
        [listed] = [r for r in client.get("/api/runs").json()["runs"] if r["run_id"] == run_id]
        assert listed["status"] == "failed" and listed["error"] == failed["error"]
        # (cancelled, or failed if its first save gave up first: not lost either way)
        ended = wait_for(client, cancelled, "cancelled", "failed")
        assert ended["checkpoints"] == []


def test_stopping_the_server_ends_a_save_waiting_for_the_database(serve):
    with halted_during_a_run(serve) as (server, _, run_id, _):  # (saves wait up to 10 s)
        time.sleep(0.5)  # (its next save waits for the server now)
        started = time.monotonic()
        assert server.call(server.service.close) == [run_id]
        assert time.monotonic() - started < 5  # not the save's 10 s


def test_a_run_cancelled_while_its_save_waits_shows_why_it_failed(serve):
    """Cancelled while its save waits for a database that is down: its
    queued checkpoints cannot be stored, so it ends failed — with the
    store's reason, here and in the listing, not a bare ``failed``."""
    with halted_during_a_run(serve, 1) as (_, client, run_id, cluster):
        time.sleep(0.3)  # (its next save waits for the server now)
        assert client.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 202
        cluster.resume()
        ended = wait_for(client, run_id, "failed")
        assert ended["error"] and "checkpoint database" in ended["error"], ended
        [listed] = [r for r in client.get("/api/runs").json()["runs"] if r["run_id"] == run_id]
        assert (listed["status"], listed["error"]) == ("failed", ended["error"])


class _GoesDownOnLease(sg.PostgresCheckpointStore):
    """Its database goes down (``halt``) once a run was taken to go on."""

    halt: Any = None

    async def lease(self, run_id: str, holder: str) -> str | None:
        busy = await super().lease(run_id, holder)
        if self.halt is not None:
            self.halt()
        return busy


def test_an_answer_the_database_failed_under_is_a_503_not_a_conflict(serve):
    # (the answer's first save failed with the database gone: refused 409,
    # as though the run had been answered or taken elsewhere)
    with own_cluster() as cluster:
        store = _GoesDownOnLease(cluster.create_database(), reconnect_timeout=0.5)
        server = serve(flows.gate, store=store)
        with server.client() as client:
            run_id = client.post("/api/workflows/gate/runs", json={"input": "q"}).json()["run_id"]
            waiting = wait_for(client, run_id, "idle_with_pending_requests")
            body = {"responses": {waiting["pending_requests"][0]["request_id"]: True}}
            store.halt = cluster.halt
            refused = client.post(f"/api/runs/{run_id}/responses", json=body)
            assert refused.status_code == 503, refused.text
            assert "checkpoint database" in refused.json()["error"]
            store.halt = None
            cluster.resume()
            # Asked again once the database is back: answered once.
            assert client.post(f"/api/runs/{run_id}/responses", json=body).status_code == 202
            assert wait_for(client, run_id, "idle")["outputs"] == ["q: yes"]
