"""Shared state: superstep isolation and the barrier commit.

During superstep k a handler reads the state committed at the end of k-1 plus
its own executor's writes; other executors' writes of the same superstep are
invisible until the barrier. Values are copied on the way in and out, so a
handler can never mutate committed state (or a write it already made) through
an alias. Immutable scalars are not copied.

A key with a *reducer* (``WorkflowBuilder(reducers={"notes": operator.add})``)
keeps every write of a superstep instead of the last: the writes are folded
into the committed value at the barrier — in schedule order, then write order
— with ``reducer(value, write)``, so parallel writers never conflict. A
handler reads the committed value folded with its own writes so far.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._exceptions import WorkflowRunError
from ._requests import RequestId

__all__ = ["DELETED", "Fold", "Reducers", "StateView", "commit_writes", "detached"]

_IMMUTABLE: frozenset[type] = frozenset(
    {int, float, complex, str, bytes, bool, type(None), frozenset, range}
)

Reducers = Mapping[str, Callable[[Any, Any], Any]]
_NO_REDUCERS: Reducers = {}


class _Deleted:
    __slots__ = ()

    def __deepcopy__(self, memo: Any) -> _Deleted:
        return self  # a marker: copies of a fold keep it

    def __repr__(self) -> str:
        return "<deleted>"


DELETED: Any = _Deleted()
_MISSING: Any = object()


class Fold(list[Any]):
    """One executor's writes to a reduced key in one superstep, in order
    (``DELETED`` for a delete, which restarts the fold from nothing)."""

    __slots__ = ()


def detached(value: Any) -> Any:
    """A copy of ``value`` that shares no mutable part with it."""
    if type(value) in _IMMUTABLE:
        return value
    return copy.deepcopy(value)


def _copied(key: str, value: Any) -> Any:
    """``detached(value)`` for a write to ``key``: a value that cannot be
    copied (a lock, a socket, a list nested past the recursion limit) is
    refused naming the key, not with ``copy``'s own words."""
    try:
        return detached(value)
    except Exception as exc:
        raise TypeError(
            f"cannot write shared-state key {key!r}: its value, a "
            f"{type(value).__module__}.{type(value).__qualname__}, cannot be copied "
            f"({type(exc).__name__}: {exc}); state values are copied on every write "
            "and read, so store plain data"
        ) from exc


def _check_key(key: object) -> str:
    if type(key) is not str:
        if type(key) is RequestId:  # (what ctx.request_info returned: the str it is)
            return str(key)
        raise TypeError(f"shared-state keys must be str, not {type(key).__name__}: {key!r}")
    return key


def fold(
    key: str,
    value: Any,
    writes: Fold,
    reducer: Callable[[Any, Any], Any],
    writer: str | None = None,
) -> Any:
    """``value`` (``_MISSING`` for none) with ``writes`` folded in. The first
    write to a missing key is its value (passed through the reducer's
    ``first_write`` when it has one: ``union`` drops repeats); the reducer
    combines the rest."""
    for write in writes:
        if write is DELETED:
            value = _MISSING
        elif value is _MISSING:
            first = getattr(reducer, "first_write", None)
            value = write if first is None else first(write)
        else:
            try:
                value = reducer(value, write)
            except Exception as exc:
                name = getattr(reducer, "__qualname__", None) or type(reducer).__name__
                raise WorkflowRunError(
                    f"the reducer {name} of state key {key!r} raised {type(exc).__name__}: "
                    f"{exc}" + (f" (folding a write of {writer!r})" if writer else ""),
                    executor_id=writer,
                ) from exc
    return value


class StateView:
    """The shared state as one executor sees it during one superstep.

    ``get``/``set``/``delete``/``contains`` (and ``in``) act on the committed
    state of the previous barrier overlaid with this executor's own writes.
    """

    __slots__ = ("_committed", "_guard", "_reducers", "_writes")

    def __init__(
        self,
        committed: Mapping[str, Any],
        writes: dict[str, Any],
        reducers: Reducers = _NO_REDUCERS,
        guard: Callable[[], None] | None = None,
    ) -> None:
        self._committed = committed
        self._writes = writes
        self._reducers = reducers
        self._guard = guard  # raises once the handler call that writes has ended

    def _value(self, key: str) -> Any:
        key = _check_key(key)
        value = self._writes.get(key, _MISSING)
        if type(value) is Fold:
            committed = self._committed.get(key, _MISSING)
            if committed is not _MISSING:
                committed = detached(committed)  # the reducer may change it in place
            # ...and the buffered writes too (the first one to a missing key
            # becomes the value): a read must leave them as they were written.
            return fold(key, committed, Fold(map(detached, value)), self._reducers[key])
        if value is _MISSING:
            value = self._committed.get(key, _MISSING)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (a detached copy), or ``default``."""
        value = self._value(key)
        if value is _MISSING or value is DELETED:
            return default
        return detached(value)

    def set(self, key: str, value: Any) -> None:
        """Write ``key``; visible to other executors after the barrier (for a
        reduced key: folded in with the other writes)."""
        if self._guard is not None:
            self._guard()
        key = _check_key(key)
        if self._reducers and key in self._reducers:
            self._fold(key).append(_copied(key, value))
        else:
            self._writes[key] = _copied(key, value)

    def delete(self, key: str) -> None:
        """Delete ``key`` (no error if it does not exist)."""
        if self._guard is not None:
            self._guard()
        key = _check_key(key)
        if self._reducers and key in self._reducers:
            self._fold(key).append(DELETED)
        else:
            self._writes[key] = DELETED

    def _fold(self, key: str) -> Fold:
        writes = self._writes.get(key)
        if type(writes) is not Fold:
            writes = self._writes[key] = Fold()
        return writes

    def contains(self, key: str) -> bool:
        value = self._value(key)
        return value is not _MISSING and value is not DELETED

    __contains__ = contains

    def keys(self) -> Iterator[str]:
        """The keys visible to this executor, committed ones first."""
        for key in self._committed:
            if key not in self._writes or self.contains(key):
                yield key
        for key in self._writes:
            if key not in self._committed and self.contains(key):
                yield key

    __iter__ = keys


def commit_writes(
    committed: dict[str, Any],
    writes: list[tuple[str, dict[str, Any]]],
    reducers: Reducers = _NO_REDUCERS,
) -> None:
    """Apply each executor's writes, ``[(executor_id, {key: value})]``, in
    schedule order: for a plain key written twice, the later writer wins
    (check :func:`find_conflicts` first to report such keys); a reduced key
    folds every write in."""
    for writer, delta in writes:
        for key, value in delta.items():
            if type(value) is Fold:
                value = fold(key, committed.get(key, _MISSING), value, reducers[key], writer)
                if value is _MISSING:
                    committed.pop(key, None)
                    continue
            if value is DELETED:
                committed.pop(key, None)
            else:
                committed[key] = value


def find_conflicts(writes: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str, str]]:
    """Plain keys written by more than one executor: ``(key, earlier, later)``."""
    if len(writes) < 2:
        return []
    writer: dict[str, str] = {}
    conflicts: list[tuple[str, str, str]] = []
    for executor_id, delta in writes:
        for key, value in delta.items():
            if type(value) is Fold:
                continue  # folded, not overwritten
            first = writer.get(key)
            if first is not None:
                conflicts.append((key, first, executor_id))
            writer[key] = executor_id
    return conflicts
