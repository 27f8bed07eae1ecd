"""Reducers for shared-state keys: ``WorkflowBuilder(reducers={...})``.

Any two-argument function ``(value, write) -> value`` folds writes into a
key (``operator.add`` appends lists and sums numbers); ``union`` merges
collections without repeats.

A reducer may also have a ``first_write(write) -> value`` attribute: the
barrier passes the first write to a missing key through it (otherwise that
write is the value as it is). ``union`` uses it so that even the first list
written holds each item once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["union"]


def union(value: Any, write: Any) -> Any:
    """Merge ``write`` into ``value``: sets and frozensets by union, dicts by
    update, lists as the items of ``value`` then ``write``, each once (the
    first occurrence kept, in order; items compared by hash, or by equality
    when they have none)."""
    if isinstance(value, (set, frozenset)) and isinstance(write, (set, frozenset)):
        return value | write
    if isinstance(value, list) and isinstance(write, list):
        return _unique([*value, *write])
    if isinstance(value, dict) and isinstance(write, dict):
        return {**value, **write}
    raise TypeError(
        f"union of a {type(value).__name__} and a {type(write).__name__}: give two sets, two "
        "lists or two dicts"
    )


def _first_write(write: Any) -> Any:
    """The first write to a missing key: a list without its repeats."""
    return _unique(write) if isinstance(write, list) else write


# Read by the barrier's fold (see the module docstring). An attribute, not a
# wrapper class, so that ``union`` keeps its identity — ``stepgraph._reducers.union``
# — in the graph signatures of checkpoints already written.
union.first_write = _first_write  # type: ignore[attr-defined]


def _unique(items: Iterable[Any]) -> list[Any]:
    """``items`` without repeats, first occurrences in order. Hashable items
    are found in a set (linear time); an unhashable one (a list, a dict) is
    compared by equality with every item kept."""
    kept: list[Any] = []
    hashed: set[Any] = set()
    unhashable: list[Any] = []
    for item in items:
        try:
            seen = item in hashed
        except TypeError:
            if item in kept:
                continue
            unhashable.append(item)
        else:
            # An unhashable item kept earlier may still equal this one.
            if seen or (unhashable and item in unhashable):
                continue
            hashed.add(item)
        kept.append(item)
    return kept
