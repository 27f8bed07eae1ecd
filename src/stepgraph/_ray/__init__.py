"""The Ray backend: executors in Ray actors, same scheduler, same guarantees.

- ``_backend``: ``RayBackend`` — one call per inbox per superstep; state
  back to the driver at each run's end;
- ``_run_actors``: one run's actors, and the driver's copies of its
  executors kept as the actors leave them;
- ``_failures``: how what goes wrong on Ray becomes the run's failure;
- ``_host``: the actor body, and its live event stream;
- ``_pool``: warm actors kept between runs of a workflow;
- ``_cluster``: importing Ray (loopback only) and probing an address.
"""

import os

# Ray reads these when it is imported: set (unless the user did) before any
# import of Ray that comes after stepgraph's, so a local cluster stays on
# loopback and Ray sends no usage statistics.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ._backend import RayBackend

__all__ = ["RayBackend"]
