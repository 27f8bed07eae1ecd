"""Shared helpers for the tests."""

from __future__ import annotations

from collections.abc import Iterable

import stepgraph as sg


def kinds(events: Iterable[sg.Event]) -> list[str]:
    return [e.kind for e in events]


def warnings(events: Iterable[sg.Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, sg.WarningEvent)]


def invocations(events: Iterable[sg.Event], executor_id: str) -> list[sg.Event]:
    """The ``executor_invoked`` events of one executor."""
    return [e for e in events if e.kind == "executor_invoked" and e.executor_id == executor_id]
