"""Per-run executors: ``WorkflowBuilder.register(id, factory)``.

An executor registered as a factory is made anew for each run, the first time
the run delivers to it; its instance lives in the run (``RunScope.instances``,
kept in the run state and in checkpoints through ``snapshot()``/``restore()``),
so runs never see each other's attributes and a workflow of factories and
function executors can run any number of times at once. ``build()`` makes one
*prototype* per factory to learn its handler types; the prototype never runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from ._core import WorkflowContext
from ._exceptions import WorkflowDefinitionError, WorkflowRunError
from ._executor import Executor

__all__ = ["Factory", "Registered", "make_executor", "per_run_invoke", "registered"]

Factory = type[Executor] | Callable[[], Executor]


@dataclass(frozen=True, slots=True)
class Registered:
    """A factory, how to call it, and the prototype made from it."""

    id: str
    make: Callable[[], Executor]
    prototype: Executor


def registered(executor_id: str, factory: Factory) -> Registered:
    """Check a factory by making its prototype (definition errors name it)."""
    if not isinstance(executor_id, str) or not executor_id:
        raise WorkflowDefinitionError(
            f"register: the id must be a non-empty str, got {executor_id!r}"
        )
    make: Callable[[], Executor]
    if isinstance(factory, type) and issubclass(factory, Executor):
        cls: type[Executor] = factory

        def make() -> Executor:
            return cls(executor_id)

    elif callable(factory) and not isinstance(factory, Executor):
        make = cast(Callable[[], Executor], factory)
    else:
        raise WorkflowDefinitionError(
            f"register({executor_id!r}, ...): give an Executor subclass or a function that "
            f"returns a new executor, not {type(factory).__name__} (an instance is shared: pass "
            "it to add_executor or to an edge instead)"
        )
    try:
        prototype = make_executor(make, executor_id)
    except WorkflowRunError as exc:
        raise WorkflowDefinitionError(str(exc)) from exc.__cause__
    return Registered(executor_id, make, prototype)


# Every executor a factory made, while it lives: a factory that hands out
# one of them again would let two runs share it.
_made: weakref.WeakValueDictionary[int, Executor] = weakref.WeakValueDictionary()


def make_executor(
    make: Callable[[], Executor],
    executor_id: str,
    label: str | None = None,
    same_id: bool = True,
) -> Executor:
    """A new instance from a factory, checked to be an executor (with that
    id, when ``same_id``). ``label`` names the factory in errors."""
    label = label or f"the factory of executor {executor_id!r}"
    try:
        made = make()
    except WorkflowDefinitionError:
        raise
    except Exception as exc:
        raise WorkflowRunError(
            f"{label} raised {type(exc).__name__}: {exc}", executor_id=executor_id
        ) from exc
    if not isinstance(made, Executor):
        raise WorkflowRunError(
            f"{label} returned a {type(made).__name__}, not an Executor", executor_id=executor_id
        )
    if _made.get(id(made)) is made:
        raise WorkflowRunError(
            f"{label} returned an executor it returned before; a factory makes a new "
            "executor at each call (runs must not share one)",
            executor_id=executor_id,
        )
    _made[id(made)] = made
    if same_id and made.id != executor_id:
        raise WorkflowRunError(
            f"the factory registered as {executor_id!r} made an executor with id {made.id!r}; "
            "give it the registered id",
            executor_id=executor_id,
        )
    return made


async def per_run_invoke(
    executor_id: str,
    make: Callable[[], Executor],
    message: Any,
    ctx: WorkflowContext[Any, Any],
) -> None:
    """A registered executor's handler call: on this run's own instance,
    made on the run's first delivery to it."""
    instances = ctx._scope.instances
    executor = instances.get(executor_id)
    if executor is None:
        try:
            executor = make_executor(make, executor_id)
        except WorkflowRunError as exc:
            # A failure of this executor like any other: the factory's own
            # exception (if it raised) is the cause, noted as the factory's.
            cause = exc.__cause__
            if cause is None:  # it made something else than the executor
                raise TypeError(str(exc)) from None
            cause.add_note(f"raised by the factory of executor {executor_id!r}")
            raise cause from None
        instances[executor_id] = executor
    await executor._invoke(message, ctx)
