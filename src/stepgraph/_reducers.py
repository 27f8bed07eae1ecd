"""Reducers for shared-state keys: ``WorkflowBuilder(reducers={...})``.

Any two-argument function ``(value, write) -> value`` folds writes into a
key (``operator.add`` appends lists and sums numbers); ``union`` merges
collections without repeats.
"""

from __future__ import annotations

from typing import Any

__all__ = ["union"]


def union(value: Any, write: Any) -> Any:
    """Merge ``write`` into ``value``: sets and frozensets by union, lists by
    appending the items not already there (order kept), dicts by update."""
    if isinstance(value, (set, frozenset)) and isinstance(write, (set, frozenset)):
        return value | write
    if isinstance(value, list) and isinstance(write, list):
        return value + [item for item in write if item not in value]
    if isinstance(value, dict) and isinstance(write, dict):
        return {**value, **write}
    raise TypeError(
        f"union of a {type(value).__name__} and a {type(write).__name__}: give two sets, two "
        "lists or two dicts"
    )
