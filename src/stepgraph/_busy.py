"""``BusyGuard``: one run at a time on shared executor instances.

Executors given to the builder as *instances* are shared by every run, so a
workflow that has any (other than function executors) runs one run at a time
(``WorkflowBusyError`` otherwise), and an instance serves one running workflow
at a time — two handler calls of one executor can never overlap, even across
workflows built from shared instances. Executors *registered as factories*
belong to one run each: a workflow made only of those and of function
executors runs any number of times at once. Each workflow holds one guard,
and takes it for every run (``acquire``/``release``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._exceptions import WorkflowBusyError

if TYPE_CHECKING:
    from ._executor import Executor

__all__ = ["BusyGuard"]

# The guards of the workflows built on each shared executor instance (by id),
# so that a run checks only the workflows it shares an instance with; and a
# counter that tells each guard when to look again. A thread lock, not an
# asyncio one: it is never held across an await and binds to no loop.
_USERS: dict[int, weakref.WeakSet[BusyGuard]] = {}
_GENERATION = 0
_IN_USE_LOCK = threading.Lock()


class BusyGuard:
    """Counts one workflow's running runs, and refuses a run that would
    share an executor instance with another running one."""

    def __init__(
        self, name: str, claimable: list[Executor], shared_children: Mapping[str, str]
    ) -> None:
        self.name = name  # the workflow's, for the messages
        # Shared instances that carry their own state: claimed per run.
        self._claimable = claimable
        # Registered sub-workflows whose every call uses one executor instance
        # (what is said of it): the workflow's runs take turns too.
        self._shared_children = shared_children
        self._running = 0
        self._join()

    def _join(self) -> None:
        """Be found by the other workflows built on this one's shared instances."""
        self._rivals: list[tuple[weakref.ref[BusyGuard], Executor]] = []
        self._seen_generation = -1
        if self._claimable:
            global _GENERATION
            with _IN_USE_LOCK:
                for executor in self._claimable:
                    users = _USERS.get(id(executor))
                    if users is None:
                        users = _USERS[id(executor)] = weakref.WeakSet()
                        weakref.finalize(executor, _USERS.pop, id(executor), None)
                    users.add(self)
                _GENERATION += 1

    def __getstate__(self) -> dict[str, object]:
        # A copy (a workflow sent to a Ray actor inside a sub-workflow) runs
        # none of this one's runs and finds its own rivals where it lands.
        state = dict(vars(self))
        del state["_rivals"], state["_seen_generation"]
        state["_running"] = 0
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        vars(self).update(state)
        self._join()

    def acquire(self) -> None:
        """Count a run in, or raise ``WorkflowBusyError`` saying why it must wait."""
        with _IN_USE_LOCK:
            if self._running and self._shared_children:
                eid, why = next(iter(self._shared_children.items()))
                raise WorkflowBusyError(
                    f"workflow {self.name!r} is already running, and every executor its "
                    f"factory {eid!r} makes {why}, or register its executors as factories, "
                    "to run it concurrently",
                    executor_id=eid,
                )
            if not self._claimable:
                self._running += 1
                return
            if self._running:
                shared = ", ".join(repr(e.id) for e in self._claimable[:3])
                raise WorkflowBusyError(
                    f"workflow {self.name!r} is already running, and its executor instances "
                    f"({shared}) are shared by its runs, so it runs one run at a time; register "
                    "them as factories (builder.register(id, factory)) to run it concurrently"
                )
            for ref, executor in self._rivals_now():
                rival = ref()
                if rival is not None and rival._running:
                    raise WorkflowBusyError(
                        f"executor {executor.id!r} ({type(executor).__name__}) is in use by "
                        f"running workflow {rival.name!r}; an executor instance serves one run "
                        "at a time — build each concurrent workflow from its own instances",
                        executor_id=executor.id,
                    )
            self._running += 1

    def release(self) -> None:
        """Count a run out."""
        with _IN_USE_LOCK:
            self._running -= 1

    def _rivals_now(self) -> list[tuple[weakref.ref[BusyGuard], Executor]]:
        """The guards of the other workflows built on one of this one's shared
        instances (computed again only when a workflow was built since; lock
        held)."""
        if self._seen_generation != _GENERATION:
            self._rivals = [
                (weakref.ref(other), executor)
                for executor in self._claimable
                for other in _USERS.get(id(executor), ())
                if other is not self
            ]
            self._seen_generation = _GENERATION
        return self._rivals
