"""What the details say of a failed run's failure once its events are gone
(a restart): which executor of the graph failed, and in which superstep."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import stepgraph as sg
from stepgraph._serve._refusals import failure_of

from . import flows
from .conftest import Served, sse
from .test_api import wait_for


def test_a_failure_inside_a_sub_workflow_names_the_node_of_this_graph(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    # (after a restart its details said "failure": null: the console could
    # not mark the map 'docs' whose item's sub-workflow failed)
    path = tmp_path / "inside.sqlite"
    first = serve(flows.failing_inside, store=sg.SqliteCheckpointStore(path))
    with first.client() as client:
        run_id = client.post("/api/workflows/failing_inside/runs", json={"input": 3}).json()[
            "run_id"
        ]
        run = wait_for(client, run_id, "failed")
        events = sse(client, run_id)
    assert run["error"].startswith("executor 'docs[2]/pages' failed in a sub-workflow: ")
    failed = [e for e in events if e["kind"] == "executor_failed" and not e["workflow_path"]]
    assert [(e["executor_id"], e["item"]) for e in failed] == [("docs", 2)]
    expected = {"executor_id": "docs", "superstep": failed[0]["superstep"]}
    assert run["failure"] == expected
    first.stop()
    second = serve(flows.failing_inside, store=sg.SqliteCheckpointStore(path))
    with second.client() as client:
        run = client.get(f"/api/runs/{run_id}").json()
    assert not run["events_kept"]
    assert run["failure"] == expected


def test_the_sub_workflow_form_of_a_failure_is_read_without_its_items() -> None:
    error = "executor 'docs[2]/pages' failed in a sub-workflow: boom"
    assert failure_of("failed", error, 4) == {"executor_id": "docs", "superstep": 5}
    nested = "executor 'lots[0]/wrap/docs[2]/pages' failed in a sub-workflow: boom"
    assert failure_of("failed", nested, 0) == {"executor_id": "lots", "superstep": 1}
    plain = "executor 'wrap/pages' failed in a sub-workflow: boom"
    assert failure_of("failed", plain, 2) == {"executor_id": "wrap", "superstep": 3}
    # (the superstep the message names wins; none known: no failure to mark)
    assert failure_of("failed", "executor 'a' failed in superstep 7: x", 2) == {
        "executor_id": "a",
        "superstep": 7,
    }
    assert failure_of("failed", error, None) is None
    assert failure_of("cancelled", error, 4) is None
