"""Every stepgraph exception survives pickling whole (an error raised in a Ray
actor reaches the driver as the same class, message and attributes)."""

from __future__ import annotations

import pickle
import re

import pytest

import stepgraph as sg
from stepgraph._exceptions import (
    ExecutorTimeoutError,
    RequestError,
    StateConflictError,
    SubworkflowError,
)


def test_exceptions_survive_pickling() -> None:
    errors = [
        ExecutorTimeoutError("slow", 1.5, superstep=3),
        SubworkflowError(("sub", "inner"), "boom", superstep=2),
        StateConflictError("k", "a", "b", 4),
        sg.WorkflowRunError("failed", executor_id="e", superstep=1),
        RequestError("answered already", executor_id="gate"),
        sg.ConvergenceError("did not converge", superstep=9),
        sg.CheckpointError("disk full"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert vars(copy) == vars(error)


async def test_a_handler_error_whose_str_fails_still_names_its_executor() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("str fails")

    @sg.executor(id="boom")
    async def boom(text: str) -> None:
        raise Unprintable

    events: list[sg.Event] = []
    with pytest.raises(sg.WorkflowRunError) as raised:
        async for event in sg.WorkflowBuilder(start=boom).build().stream("x"):
            events.append(event)
    assert str(raised.value) == (
        "executor 'boom' failed in superstep 1: Unprintable: (its str() raised RuntimeError)"
    )
    assert raised.value.executor_id == "boom"
    [failed] = [e for e in events if isinstance(e, sg.ExecutorFailedEvent)]
    assert failed.error == "Unprintable: (its str() raised RuntimeError)"


def test_every_exception_lives_in_the_exceptions_module_and_its_tree() -> None:
    import stepgraph._exceptions as exceptions

    errors = [
        name
        for name in sg.__all__
        if isinstance(getattr(sg, name), type) and issubclass(getattr(sg, name), BaseException)
    ]
    for name in errors:
        assert getattr(sg, name).__module__ == "stepgraph._exceptions", name
        assert name in exceptions.__all__, name
        assert re.search(rf"\b{name}\b", exceptions.__doc__ or ""), f"{name} is not in the tree"
