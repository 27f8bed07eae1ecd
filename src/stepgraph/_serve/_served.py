"""The workflows a server runs: :class:`ServedWorkflow`, one named on the
command line (with the factory that gives a run its own instance when it
needs one), and :func:`unroutable`, the names the API could not reach."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._workflow import Workflow
from ._refusals import Problem

__all__ = ["ServedWorkflow", "unroutable"]


def unroutable(name: str) -> str | None:
    """Why a workflow of this name could not be started through the API
    (``POST /api/workflows/{name}/runs``), or ``None``: a name is one
    segment of a URL path, which ``/`` would split and which clients
    resolve away when it is ``.`` or ``..`` (even percent-encoded)."""
    if name in ("", ".", ".."):
        return f"a workflow named {name!r} cannot be named in a URL"
    if "/" in name:
        return f"workflow {name!r} holds '/', which would split its URL"
    return None


@dataclass(slots=True)
class ServedWorkflow:
    """A workflow named on the command line; ``factory`` (when the target
    was a function) builds a fresh one for each run of a workflow whose
    executor instances cannot serve two runs at once."""

    workflow: Workflow
    factory: Callable[[], Workflow] | None = None
    description: str = ""

    @property
    def name(self) -> str:
        return self.workflow.name

    def for_run(self) -> Workflow:
        if self.workflow.concurrent or self.factory is None:
            return self.workflow
        fresh = self.factory()
        if not isinstance(fresh, Workflow) or fresh.signature != self.workflow.signature:
            raise Problem(500, f"the factory of workflow {self.name!r} built another workflow")
        return fresh
