"""The Ray backend: executors in Ray actors, same scheduler, same guarantees.

- ``_backend``: ``RayBackend`` — one call per inbox per superstep; state
  back to the driver at each run's end;
- ``_host``: the actor body, and its live event stream;
- ``_pool``: warm actors kept between runs of a workflow;
- ``_cluster``: importing Ray (loopback only) and probing an address.
"""

from ._backend import RayBackend

__all__ = ["RayBackend"]
