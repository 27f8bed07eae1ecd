"""Values as JSON for people to read (events, outputs): never for storage
or for rebuilding the values."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from ._typing import type_name

__all__ = ["jsonable", "lone_surrogate_at", "quoted", "readable"]


# How deep a rendering goes: below, a container is shown as one line saying
# so (a value nested thousands deep would exhaust the stack: a run whose
# output is one failed at its checkpoint, and the CLI could not print it).
_DEEPEST = 100


def jsonable(value: Any, _depth: int = 0) -> Any:
    """A JSON-friendly rendering of a value (for display, not for storage):
    strict JSON, so non-finite floats become the strings "nan", "inf", "-inf"."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 13_000:
        return f"<an int of about {int(value.bit_length() * 0.30103)} digits>"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if type(value) is str:
        return value if value.isascii() else readable(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return readable(str.__str__(value))  # (its text: a str enum shows its value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, _depth)
    deeper = _depth + 1
    nested = isinstance(value, (list, tuple, set, frozenset, dict)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )
    if nested and deeper > _DEEPEST:
        return f"<a {type(value).__name__} nested more than {_DEEPEST} levels deep>"
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, deeper) for v in value]
    if isinstance(value, dict):
        return {readable(str(k)): jsonable(v, deeper) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), deeper) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return jsonable(dump(mode="json"), _depth)
    if isinstance(value, type) or hasattr(value, "__origin__"):
        return type_name(value)
    if isinstance(value, BaseException):
        return readable(f"{type(value).__name__}: {value}")
    try:
        return readable(repr(value))
    except Exception:
        return f"<a {type(value).__name__} that cannot be shown>"


def readable(text: str) -> str:
    """``text``, but a lone surrogate (half a character, as a file name read
    with ``surrogateescape`` holds: UTF-8 has no form for it, so a stored
    checkpoint, a JSON line or a terminal could not hold it) written as its
    escape, ``\\udcff``, for people to see where it was."""
    if lone_surrogate_at(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def lone_surrogate_at(text: str) -> int | None:
    """Where ``text`` holds its first lone surrogate — half a character,
    which UTF-8 has no form for (a file name read with ``surrogateescape``,
    a JSON ``"\\ud800"``) — or ``None``: what a store, a JSON answer or a
    terminal can hold. Cheap for ASCII text (a flag of the string)."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def mended(text: str) -> str:
    """``text`` as Unicode can store it: a surrogate pair held as two
    halves (``"\\ud83d\\ude00"`` from a JSON escape) joined into its
    character, a lone surrogate (half a character, which UTF-8 has no form
    for: a checkpoint, an HTTP request or a log could not hold the text)
    replaced by U+FFFD. Cheap for ASCII text."""
    if lone_surrogate_at(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


_QUOTED = 100


def quoted(value: str) -> str:
    """What a user gave (an id, a name, a parameter), quoted as ``repr``
    does, cut after 100 characters saying how many more there were: an
    error names it, and never echoes a megabyte of it."""
    if len(value) <= _QUOTED:
        return repr(value)
    return f"{value[:_QUOTED]!r}... ({len(value) - _QUOTED:,} more characters)"
