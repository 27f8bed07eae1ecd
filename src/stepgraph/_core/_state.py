"""Shared state: superstep isolation and the barrier commit.

During superstep k a handler reads the state committed at the end of k-1 plus
its own executor's writes; other executors' writes of the same superstep are
invisible until the barrier. Values are copied on the way in and out, so a
handler can never mutate committed state (or a write it already made) through
an alias. Immutable scalars are not copied.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["DELETED", "StateView", "commit_writes", "detached"]

_IMMUTABLE: frozenset[type] = frozenset(
    {int, float, complex, str, bytes, bool, type(None), frozenset, range}
)


class _Deleted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<deleted>"


DELETED: Any = _Deleted()
_MISSING: Any = object()


def detached(value: Any) -> Any:
    """A copy of ``value`` that shares no mutable part with it."""
    if type(value) in _IMMUTABLE:
        return value
    return copy.deepcopy(value)


def _check_key(key: object) -> str:
    if type(key) is not str:
        raise TypeError(f"shared-state keys must be str, not {type(key).__name__}: {key!r}")
    return key


class StateView:
    """The shared state as one executor sees it during one superstep.

    ``get``/``set``/``delete``/``contains`` (and ``in``) act on the committed
    state of the previous barrier overlaid with this executor's own writes.
    """

    __slots__ = ("_committed", "_writes")

    def __init__(self, committed: Mapping[str, Any], writes: dict[str, Any]) -> None:
        self._committed = committed
        self._writes = writes

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (a detached copy), or ``default``."""
        value = self._writes.get(_check_key(key), _MISSING)
        if value is _MISSING:
            value = self._committed.get(key, _MISSING)
        if value is _MISSING or value is DELETED:
            return default
        return detached(value)

    def set(self, key: str, value: Any) -> None:
        """Write ``key``; visible to other executors after the barrier."""
        self._writes[_check_key(key)] = detached(value)

    def delete(self, key: str) -> None:
        """Delete ``key`` (no error if it does not exist)."""
        self._writes[_check_key(key)] = DELETED

    def contains(self, key: str) -> bool:
        value = self._writes.get(_check_key(key), _MISSING)
        if value is _MISSING:
            return key in self._committed
        return value is not DELETED

    __contains__ = contains

    def keys(self) -> Iterator[str]:
        """The keys visible to this executor, committed ones first."""
        for key in self._committed:
            if self._writes.get(key, _MISSING) is not DELETED:
                yield key
        for key, value in self._writes.items():
            if value is not DELETED and key not in self._committed:
                yield key

    __iter__ = keys


def commit_writes(committed: dict[str, Any], writes: list[tuple[str, dict[str, Any]]]) -> None:
    """Apply each executor's writes, ``[(executor_id, {key: value})]``, in
    schedule order: for a key written twice, the later writer wins. Check
    :func:`find_conflicts` first to report such keys."""
    for _, delta in writes:
        for key, value in delta.items():
            if value is DELETED:
                committed.pop(key, None)
            else:
                committed[key] = value


def find_conflicts(writes: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str, str]]:
    """Keys written by more than one executor: ``(key, earlier, later)``."""
    if len(writes) < 2:
        return []
    writer: dict[str, str] = {}
    conflicts: list[tuple[str, str, str]] = []
    for executor_id, delta in writes:
        for key in delta:
            first = writer.get(key)
            if first is not None:
                conflicts.append((key, first, executor_id))
            writer[key] = executor_id
    return conflicts
