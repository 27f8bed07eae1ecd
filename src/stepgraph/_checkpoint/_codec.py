"""The checkpoint codec: JSON with tagged values. No pickle, ever.

Plain JSON values (``None``, bools, ints, finite floats, strings, lists, and
dicts with string keys) encode as themselves. Everything else is an object
with a ``"$t"`` tag::

    {"$t": "tuple", "v": [...]}          {"$t": "bytes", "v": "<base64>"}
    {"$t": "set"|"frozenset", "v": [...]} (sorted by encoding: canonical)
    {"$t": "map", "v": [[k, v], ...]}     non-str keys, or a "$t" key
    {"$t": "float", "v": "nan"|"inf"|"-inf"}
    {"$t": "datetime"|"date"|"time", "v": "<ISO 8601>"}
    {"$t": "timedelta", "v": [days, seconds, microseconds]}
    {"$t": "uuid"|"decimal", "v": "<str>"}
    {"$t": "path"|"pureposixpath"|"purewindowspath", "v": "<str>"}
                                          (a concrete path: this system's Path)
    {"$t": "enum"|"dataclass"|"pydantic", "type": "<name>", "v": ...}
    {"$t": "type", "v": "<name>"}          a type (or annotation) itself
    {"$t": "part", "v": "<hash>"}         a SnapshotPart: a value of its own

Enums, dataclasses and pydantic models are rebuilt only from a
:class:`TypeRegistry` — the types a workflow declares plus those registered
explicitly — and a stored type reference (a request's response type, say)
resolves only to an annotation that registry holds. A type name is a key
into that registry and nothing else: no module is imported and nothing named
by a checkpoint is looked up or called.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import math
import pathlib
import sys
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .._core import RequestId, lone_surrogate_at
from .._exceptions import CheckpointDecodeError, CheckpointEncodeError

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "SnapshotPart",
    "TypeRegistry",
    "blob_hash",
    "collecting_parts",
    "decode",
    "dumps",
    "dumps_compact",
    "encode",
    "loads",
    "reading_parts",
    "type_key",
]

MAX_DEPTH = 200
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024
_TAG = "$t"
_NOT_FOUND: Any = object()


def blob_hash(data: bytes) -> str:
    """A stored value's address: the SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


class SnapshotPart:
    """A piece of an executor's ``snapshot()`` stored as a value of its own,
    by the hash of its encoding: stored once, however many checkpoints hold
    it, and encoded once per process for as long as the part object lives.
    An executor whose state grows (a conversation) keeps what no longer
    changes in parts it reuses, so each checkpoint costs what changed, not
    all it holds::

        def snapshot(self):
            return {"pages": self.pages, "recent": list(self.recent)}  # pages: [SnapshotPart]

    ``restore()`` gets the parts back (``part.value``). A part is encoded
    once: its value must not change after it was in a snapshot (keep tuples,
    frozen dataclasses; new content is a new part) — a change would not be
    stored. Equal parts of one snapshot come back as one object. Outside a
    snapshot a part is refused."""

    __slots__ = ("_stored", "raw", "value")

    def __init__(self, value: Any, *, raw: bool = False) -> None:
        self.value = value
        # ``raw``: the value is a stored part's JSON as it is (an encoding),
        # carried unchanged — a sub-workflow's snapshots nest in its parent's
        # with the parts they hold still parts.
        self.raw = raw
        self._stored: tuple[str, bytes] | None = None  # (hash, bytes), once encoded

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SnapshotPart) and other.value == self.value

    # (unhashable: its value may be mutable)
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SnapshotPart({self.value!r})"


# The parts met while a snapshot is encoded (hash -> bytes), and where a
# snapshot being decoded finds them (hash -> their JSON): set only around
# snapshots, by the run codec.
_PARTS: contextvars.ContextVar[dict[str, bytes] | None] = contextvars.ContextVar(
    "stepgraph_parts", default=None
)
_PART_SOURCE: contextvars.ContextVar[
    tuple[Callable[[str], Any], dict[str, SnapshotPart]] | None
] = contextvars.ContextVar("stepgraph_part_source", default=None)


@contextlib.contextmanager
def collecting_parts() -> Iterator[dict[str, bytes]]:
    """Encode a snapshot within: the parts it holds land in the dict given
    (hash -> bytes), each stored as a value of its own."""
    parts: dict[str, bytes] = {}
    token = _PARTS.set(parts)
    try:
        yield parts
    finally:
        _PARTS.reset(token)


@contextlib.contextmanager
def reading_parts(source: Callable[[str], Any]) -> Iterator[None]:
    """Decode a snapshot within: ``source(hash)`` gives a part's stored JSON.
    Each part is decoded once, however often it is referenced (a stored
    document whose parts repeat one another cannot blow up decoding)."""
    token = _PART_SOURCE.set((source, {}))
    try:
        yield
    finally:
        _PART_SOURCE.reset(token)


def type_key(tp: Any) -> str:
    """The registry name of a type or annotation: module-qualified, stable."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


def _is_pydantic(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # never imported here
    return pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)


class TypeRegistry:
    """The classes a checkpoint may name, and the annotations (for response
    types) it may refer to, by :func:`type_key`."""

    def __init__(self, types: Iterable[Any] = ()) -> None:
        self._classes: dict[str, type] = {}
        self._annotations: dict[str, Any] = {}
        for tp in types:
            self.add(tp)

    def add(self, tp: Any) -> None:
        """Register ``tp`` and every class reachable from it (union members,
        generic arguments, dataclass fields)."""
        self._annotations.setdefault(type_key(tp), tp)
        self._walk(tp, set())

    def _walk(self, tp: Any, seen: set[int]) -> None:
        if id(tp) in seen:
            return
        seen.add(id(tp))
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            self._walk(typing.get_args(tp)[0], seen)
            return
        if origin is not None:
            for arg in typing.get_args(tp):
                self._walk(arg, seen)
            if isinstance(origin, type):
                self._walk(origin, seen)
            return
        if not isinstance(tp, type):
            return
        if issubclass(tp, enum.Enum) or dataclasses.is_dataclass(tp) or _is_pydantic(tp):
            key = type_key(tp)
            known = self._classes.get(key)
            if known is not None and known is not tp:
                raise ValueError(f"two different types share the checkpoint name {key!r}")
            self._classes[key] = tp
        if dataclasses.is_dataclass(tp):
            try:
                hints = typing.get_type_hints(tp)
            except Exception:
                hints = {}
            for field in dataclasses.fields(tp):
                self._walk(hints.get(field.name, field.type), seen)

    def cls(self, key: str) -> type:
        found = self._classes.get(key)
        if found is None:
            raise CheckpointDecodeError(
                f"checkpoint names type {key!r}, which this workflow neither declares nor "
                "registers; register it (WorkflowBuilder(checkpoint_types=[...])) if it is yours"
            )
        return found

    def annotation(self, key: str) -> Any:
        found = self._annotations.get(key)
        if found is None:
            raise CheckpointDecodeError(
                f"checkpoint names type {key!r}, which this workflow neither declares nor registers"
            )
        return found

    def knows_annotation(self, key: str, tp: Any) -> bool:
        """Whether ``tp`` is the annotation registered under ``key``."""
        found = self._annotations.get(key, _NOT_FOUND)
        return found is tp or (found is not _NOT_FOUND and found == tp)

    def __contains__(self, tp: object) -> bool:
        return isinstance(tp, type) and self._classes.get(type_key(tp)) is tp


# -- encoding -----------------------------------------------------------------


class _Fail(Exception):
    """Unwinds an encoding failure, collecting the path on the way out (so a
    successful encoding builds no path strings)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.trail: list[str] = []


def encode(value: Any, registry: TypeRegistry, path: str | Callable[[], str] = "value") -> Any:
    """``value`` as a JSON-able structure; ``CheckpointEncodeError`` names
    ``path`` (extended to the failing element) when something is unsupported.
    ``path`` may be a function, called only then."""
    try:
        return _enc(value, registry, 0)
    except _Fail as fail:
        where = (path if isinstance(path, str) else path()) + _trail(fail.trail)
        raise CheckpointEncodeError(f"{where}: {fail.problem}") from None


def _trail(steps: list[str]) -> str:
    """The path below the value, outermost first; a long one keeps its ends."""
    steps = steps[::-1]
    if len(steps) <= 12:
        return "".join(steps)
    hidden = len(steps) - 8
    return f"{''.join(steps[:4])}…({hidden} more levels)…{''.join(steps[-4:])}"


def _enc_part(part: SnapshotPart, reg: TypeRegistry, d: int) -> str:
    sink = _PARTS.get()
    if sink is None:
        raise _Fail("a SnapshotPart is stored only within an executor's snapshot()")
    if part._stored is None:
        try:
            data = dumps(part.value if part.raw else _enc(part.value, reg, d))
        except _Fail as fail:
            fail.trail.append(".value")
            raise
        part._stored = (blob_hash(data), data)
    h, data = part._stored
    sink[h] = data
    return h


def _enc_list(values: Any, reg: TypeRegistry, d: int) -> list[Any]:
    out: list[Any] = []
    try:
        for v in values:
            out.append(_enc(v, reg, d))
    except _Fail as fail:
        fail.trail.append(f"[{len(out)}]")
        raise
    return out


# Ints inside this range always have a decimal form Python will write (and
# read back); beyond it, only as far as ``sys.set_int_max_str_digits`` allows.
_SAFE_INT = 10**4000


def _checked_int(value: int) -> int:
    if -_SAFE_INT < value < _SAFE_INT:
        return value
    try:
        repr(value)
    except ValueError:
        raise _Fail(
            f"an int of about {int(value.bit_length() * 0.30103)} digits is too large to "
            f"store (the limit is {sys.get_int_max_str_digits()} digits)"
        ) from None
    return value


def _checked_str(value: str) -> str:
    if value.isascii():  # O(1) in CPython: a flag of the string (every message's text)
        return value
    at = lone_surrogate_at(value)
    if at is not None:
        raise _Fail(
            f"the string holds a lone surrogate ({value[at]!r} at index {at}), "
            "which UTF-8 cannot store"
        )
    return value


def _enc(value: Any, reg: TypeRegistry, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise _Fail(f"nested deeper than {MAX_DEPTH} levels")
    cls = type(value)
    if value is None or cls is bool:
        return value
    if cls is str:
        return _checked_str(value)
    if cls is int:
        return _checked_int(value)
    if cls is float:
        if math.isfinite(value):
            return value
        return {_TAG: "float", "v": repr(value)}
    if cls is RequestId:  # (what ctx.request_info returned: stored as the str it is)
        return _checked_str(str(value))
    d = depth + 1
    if cls is list:
        return _enc_list(value, reg, d)
    if cls is dict:
        plain = _TAG not in value and all(type(k) is str for k in value)
        out: dict[str, Any] = {}
        pairs: list[Any] = []
        key: Any = None
        try:
            for key, v in value.items():
                if plain:
                    out[_checked_str(key)] = _enc(v, reg, d)
                else:
                    pairs.append([_enc(key, reg, d), _enc(v, reg, d)])
        except _Fail as fail:
            fail.trail.append(f"[{key!r}]")
            raise
        return out if plain else {_TAG: "map", "v": pairs}
    if cls is tuple:
        return {_TAG: "tuple", "v": _enc_list(value, reg, d)}
    if cls is SnapshotPart:
        return {_TAG: "rawpart" if value.raw else "part", "v": _enc_part(value, reg, d)}
    if cls is set or cls is frozenset:
        items = _enc_list(value, reg, d)
        items.sort(key=dumps)  # UTF-8 bytes sort as their code points
        return {_TAG: cls.__name__, "v": items}
    if cls is bytes:
        return {_TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
    if cls is dt.datetime or cls is dt.date or cls is dt.time:
        return {_TAG: cls.__name__, "v": value.isoformat()}
    if cls is dt.timedelta:
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if cls is uuid.UUID:
        return {_TAG: "uuid", "v": str(value)}
    if cls is decimal.Decimal:
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, pathlib.PurePath):
        tag = _PATHS.get(cls)
        if tag is not None:
            return {_TAG: tag, "v": str(value)}
    if isinstance(value, enum.Enum):
        _require(cls, reg)
        return {_TAG: "enum", "type": type_key(cls), "v": _enc(value.value, reg, d)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _require(cls, reg)
        fields: dict[str, Any] = {}
        name = ""
        try:
            for f in dataclasses.fields(value):
                name = f.name
                fields[name] = _enc(getattr(value, name), reg, d)
        except _Fail as fail:
            fail.trail.append(f".{name}")
            raise
        return {_TAG: "dataclass", "type": type_key(cls), "v": fields}
    if _is_pydantic(cls):
        _require(cls, reg)
        try:
            dumped = value.model_dump(mode="json")
        except Exception as exc:
            raise _Fail(f"{cls.__name__}.model_dump failed: {exc}") from exc
        return {_TAG: "pydantic", "type": type_key(cls), "v": _enc(dumped, reg, d)}
    if isinstance(value, type) or typing.get_origin(value) is not None or value is Any:
        key = type_key(value)
        if reg.knows_annotation(key, value):
            return {_TAG: "type", "v": key}
        raise _Fail(
            f"the type {key} is neither declared by the workflow's handlers nor registered "
            "(WorkflowBuilder(checkpoint_types=[...])), so a reference to it could not be restored"
        )
    raise _Fail(
        f"cannot store a {cls.__module__}.{cls.__qualname__} in a checkpoint "
        "(supported: JSON values, tuple, set, frozenset, bytes, datetime/date/time/timedelta, "
        "UUID, Decimal, paths, and registered Enum, dataclass and pydantic types)"
    )


def _require(cls: type, reg: TypeRegistry) -> None:
    if cls not in reg:
        raise _Fail(
            f"type {type_key(cls)} is neither declared by the workflow's handlers nor "
            "registered (WorkflowBuilder(checkpoint_types=[...])), so it could not be restored"
        )


def _unsupported(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON (encode() it first)")


def _json_writer(sort_keys: bool) -> Callable[[Any], bytes]:
    """A JSON writer built once and reused, for the fresh, acyclic,
    finite-float structures :func:`encode` builds: no circularity markers,
    compact separators, UTF-8 kept as is. ``json.dumps`` rebuilds its encoder
    on every call with these options, which costs more than writing a small
    checkpoint."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is not None:
        try:
            chunks = make(
                None, _unsupported, json.encoder.encode_basestring, None, ":", ",",
                sort_keys, False, False,
            )  # fmt: skip
        except TypeError:  # a C accelerator with another signature
            pass
        else:
            return lambda value: "".join(chunks(value, 0)).encode("utf-8")
    encoder = json.JSONEncoder(
        separators=(",", ":"),
        ensure_ascii=False,
        sort_keys=sort_keys,
        allow_nan=False,
        check_circular=False,
        default=_unsupported,
    )
    return lambda value: encoder.encode(value).encode("utf-8")


dumps = _json_writer(sort_keys=True)
"""Canonical bytes of an encoded structure (sorted keys, no spaces)."""

dumps_compact = _json_writer(sort_keys=False)
"""Bytes of an encoded structure in its own key order (no spaces): for
records, whose stored bytes are what is signed, not their canonical form."""


# -- decoding -------------------------------------------------------------------


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes safely: size-capped, depth-capped, no NaN literals."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CheckpointDecodeError(f"checkpoint document of {len(data)} bytes exceeds the limit")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise CheckpointDecodeError("checkpoint document is nested too deeply") from exc
    except (ValueError, TypeError) as exc:  # JSONDecodeError, bad UTF-8, huge ints
        raise CheckpointDecodeError(f"checkpoint document is not valid JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise CheckpointDecodeError(f"checkpoint document contains the non-JSON constant {name}")


def decode(data: Any, registry: TypeRegistry, path: str = "value") -> Any:
    """Rebuild a value from :func:`encode`'s structure."""
    try:
        return _dec(data, registry, path, 0)
    except CheckpointDecodeError:
        raise
    except RecursionError as exc:
        raise CheckpointDecodeError(f"{path}: nested too deeply") from exc
    except Exception as exc:  # a registered type refusing its own fields, bad base64, ...
        raise CheckpointDecodeError(f"{path}: {type(exc).__name__}: {exc}") from exc


def _dec(data: Any, reg: TypeRegistry, path: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise CheckpointDecodeError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    cls = type(data)
    if data is None or cls is bool or cls is int or cls is float or cls is str:
        return data
    d = depth + 1
    if cls is list:
        return [_dec(v, reg, f"{path}[{i}]", d) for i, v in enumerate(data)]
    if cls is not dict:
        raise CheckpointDecodeError(f"{path}: unexpected JSON value of type {cls.__name__}")
    tag = data.get(_TAG)
    if tag is None:
        return {k: _dec(v, reg, f"{path}[{k!r}]", d) for k, v in data.items()}
    if type(tag) is not str:
        raise CheckpointDecodeError(f"{path}: tag must be a string, got {tag!r}")
    extra = set(data) - {_TAG, "v", "type"}
    if extra or "v" not in data:
        raise CheckpointDecodeError(f"{path}: malformed {tag!r} value")
    v = data["v"]
    handler = _SIMPLE.get(tag)
    if handler is not None:
        return handler(v, reg, path, d)
    if tag in ("enum", "dataclass", "pydantic"):
        key = data.get("type")
        if type(key) is not str:
            raise CheckpointDecodeError(f"{path}: {tag} value without a type name")
        return _dec_typed(tag, reg.cls(key), v, reg, path, d)
    raise CheckpointDecodeError(f"{path}: unknown tag {tag!r}")


def _expect(v: Any, kind: type, tag: str, path: str) -> Any:
    if type(v) is not kind:
        raise CheckpointDecodeError(f"{path}: {tag} value must be a {kind.__name__}")
    return v


def _dec_items(v: Any, reg: TypeRegistry, path: str, d: int, tag: str) -> list[Any]:
    return [_dec(x, reg, f"{path}[{i}]", d) for i, x in enumerate(_expect(v, list, tag, path))]


def _dec_map(v: Any, reg: TypeRegistry, path: str, d: int) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for pair in _expect(v, list, "map", path):
        if type(pair) is not list or len(pair) != 2:
            raise CheckpointDecodeError(f"{path}: map entries must be [key, value] pairs")
        key = _dec(pair[0], reg, f"{path}.<key>", d)
        if isinstance(key, (list, dict, set)):
            raise CheckpointDecodeError(f"{path}: unhashable map key")
        out[key] = _dec(pair[1], reg, f"{path}[{key!r}]", d)
    return out


def _dec_float(v: Any, reg: TypeRegistry, path: str, d: int) -> float:
    if v not in ("nan", "inf", "-inf"):
        raise CheckpointDecodeError(f"{path}: bad float {v!r}")
    return float(v)


def _dec_str(parse: Any, tag: str) -> Any:
    def dec(v: Any, reg: TypeRegistry, path: str, d: int) -> Any:
        return parse(_expect(v, str, tag, path))

    return dec


def _dec_timedelta(v: Any, reg: TypeRegistry, path: str, d: int) -> dt.timedelta:
    parts = _expect(v, list, "timedelta", path)
    if len(parts) != 3 or any(type(p) is not int for p in parts):
        raise CheckpointDecodeError(f"{path}: timedelta must be [days, seconds, microseconds]")
    return dt.timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2])


def _dec_collection(kind: type) -> Any:
    def dec(v: Any, reg: TypeRegistry, path: str, d: int) -> Any:
        items = _dec_items(v, reg, path, d, kind.__name__)
        try:
            return kind(items)
        except TypeError as exc:
            raise CheckpointDecodeError(f"{path}: {exc}") from exc

    return dec


# Paths by class (a subclass of one is not one of these: it is refused).
_PATHS: dict[type, str] = {
    pathlib.PosixPath: "path",
    pathlib.WindowsPath: "path",
    pathlib.PurePosixPath: "pureposixpath",
    pathlib.PureWindowsPath: "purewindowspath",
}

_SIMPLE: dict[str, Any] = {
    "tuple": _dec_collection(tuple),
    "set": _dec_collection(set),
    "frozenset": _dec_collection(frozenset),
    "map": lambda v, reg, path, d: _dec_map(v, reg, path, d),
    "float": _dec_float,
    "bytes": _dec_str(lambda s: base64.b64decode(s.encode("ascii"), validate=True), "bytes"),
    "datetime": _dec_str(dt.datetime.fromisoformat, "datetime"),
    "date": _dec_str(dt.date.fromisoformat, "date"),
    "time": _dec_str(dt.time.fromisoformat, "time"),
    "timedelta": _dec_timedelta,
    "uuid": _dec_str(uuid.UUID, "uuid"),
    "decimal": _dec_str(decimal.Decimal, "decimal"),
    "path": _dec_str(pathlib.Path, "path"),
    "pureposixpath": _dec_str(pathlib.PurePosixPath, "pureposixpath"),
    "purewindowspath": _dec_str(pathlib.PureWindowsPath, "purewindowspath"),
    "type": lambda v, reg, path, d: reg.annotation(_expect(v, str, "type", path)),
    "part": lambda v, reg, path, d: _dec_part(_expect(v, str, "part", path), reg, path, d),
    "rawpart": lambda v, reg, path, d: _dec_part(
        _expect(v, str, "rawpart", path), reg, path, d, raw=True
    ),
}


def _dec_part(h: str, reg: TypeRegistry, path: str, d: int, raw: bool = False) -> SnapshotPart:
    reading = _PART_SOURCE.get()
    if reading is None:
        raise CheckpointDecodeError(f"{path}: a snapshot part outside an executor's snapshot")
    source, decoded = reading
    key = ("r" if raw else "p") + h
    part = decoded.get(key)
    if part is None:
        found = source(h)
        value = found if raw else _dec(found, reg, f"{path}<part {h[:12]}>", d)
        part = decoded[key] = SnapshotPart(value, raw=raw)
    return part


def _dec_typed(tag: str, cls: type, v: Any, reg: TypeRegistry, path: str, d: int) -> Any:
    if tag == "enum":
        if not issubclass(cls, enum.Enum):
            raise CheckpointDecodeError(f"{path}: {type_key(cls)} is not an Enum")
        return cls(_dec(v, reg, path, d))
    if tag == "dataclass":
        if not dataclasses.is_dataclass(cls):
            raise CheckpointDecodeError(f"{path}: {type_key(cls)} is not a dataclass")
        raw = _expect(v, dict, "dataclass", path)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(raw) - set(fields)
        if unknown:
            raise CheckpointDecodeError(f"{path}: {type_key(cls)} has no fields {sorted(unknown)}")
        values = {k: _dec(x, reg, f"{path}.{k}", d) for k, x in raw.items()}
        init = {k: x for k, x in values.items() if fields[k].init}
        obj = cls(**init)
        for k, x in values.items():
            if not fields[k].init:
                object.__setattr__(obj, k, x)
        return obj
    if not _is_pydantic(cls):
        raise CheckpointDecodeError(f"{path}: {type_key(cls)} is not a pydantic model")
    return cls.model_validate(_dec(v, reg, path, d))  # type: ignore[attr-defined]
