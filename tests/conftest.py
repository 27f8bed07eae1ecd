"""Shared helpers for the tests."""

from __future__ import annotations

from collections.abc import Iterable

import stepgraph as sg


def kinds(events: Iterable[sg.Event]) -> list[str]:
    return [e.kind for e in events]


def warnings(events: Iterable[sg.Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, sg.WarningEvent)]
