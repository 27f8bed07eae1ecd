"""Message types: runtime matching, dispatch specificity, static overlap.

A handler's input annotation is compiled once into a :class:`TypeSpec`:

- ``matches(value)`` checks a value at run time. Plain classes are checked with
  ``isinstance``; ``list[int]``, ``tuple[...]``, ``set[...]``, ``dict[K, V]``
  and their ``collections.abc`` counterparts are checked element by element;
  other parametrised generics are checked against their origin only.
- ``rank(cls)`` says how specifically the spec matches values of class ``cls``
  (lower is more specific), used to pick the most specific handler.
- :func:`may_overlap` tells whether a declared output type could ever be
  accepted by a declared input type; ``build()`` uses it per edge.
"""

from __future__ import annotations

import collections.abc as cabc
import types
import typing
from collections.abc import Callable
from typing import Any, NewType

# (a typing_extensions.TypedDict too, which pydantic asks for before Python 3.12)
from typing_extensions import is_typeddict

__all__ = [
    "ANY_SPEC",
    "NEVER_SPEC",
    "TypeSpec",
    "TypeSpecError",
    "a_type",
    "may_overlap",
    "spec_of",
    "type_name",
    "typeddict_fields",
]

_ANY_LIKE: tuple[Any, ...] = (Any, object)
_NEVER_LIKE: tuple[Any, ...] = (typing.Never, typing.NoReturn)
# Generic origins whose elements can be checked without consuming anything.
_ITEM_ORIGINS: tuple[type, ...] = (list, set, frozenset, cabc.Sequence, cabc.Set)
_MAP_ORIGINS: tuple[type, ...] = (dict, cabc.Mapping)


class TypeSpecError(TypeError):
    """An annotation cannot be used as a message type."""


def type_name(tp: Any) -> str:
    """A readable name for a type or annotation."""
    if tp is None or tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__ if tp.__module__ == "builtins" else tp.__name__
    return repr(tp).replace("typing.", "")


def a_type(tp: Any) -> str:
    """``type_name`` with its indefinite article: "an int", "a str", "an Audio"."""
    name = type_name(tp)
    low = name.lower()
    vowel = low[:1] in "aeio" or (low[:1] == "u" and not low.startswith(_YOU_SOUNDS))
    return f"{'an' if vowel else 'a'} {name}"


_YOU_SOUNDS = ("uni", "use", "usu", "uti", "uui", "ur")  # "a Union", "a UUID", "a URL"


def a_value_type(value: Any) -> str:
    """What ``value`` is, for messages: its type, and for a list, tuple,
    set or dict what it holds — "a list[int | str]", "an empty list" — so
    that an element of the wrong type shows."""
    cls = type(value)
    if cls in (list, tuple, set, frozenset, dict) and not value:
        return f"an empty {cls.__name__}"
    if cls in (list, tuple, set, frozenset):
        return f"{a_type(cls)}[{_held(value)}]"
    if cls is dict:
        return f"a dict[{_held(value.keys())}, {_held(value.values())}]"
    return a_type(cls)


def a_string(value: Any, what: str, error: type[Exception] = TypeError) -> str:
    """``value``, which must be a string; else ``error`` saying ``what``
    took one ("checkpoint= takes a checkpoint id, a string") and what it got
    instead (an int id failed deep inside a store with "'int' object has no
    attribute 'isascii'")."""
    if isinstance(value, str):
        return value
    raise error(f"{what}: {value!r:.200} is {a_value_type(value)}")


def _held(values: cabc.Iterable[Any]) -> str:
    names: dict[str, None] = {}
    for value in values:
        names[type_name(type(value))] = None
        if len(names) > 4:
            return " | ".join([*list(names)[:4], "..."])
    return " | ".join(names)


def _normalise(tp: Any) -> Any:
    """Strip wrappers that do not change which values match."""
    if tp is None:
        return type(None)
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _normalise(typing.get_args(tp)[0])
    if isinstance(tp, NewType):
        return _normalise(tp.__supertype__)
    if isinstance(tp, typing.TypeVar):
        raise TypeSpecError(f"unresolved TypeVar {tp.__name__}")
    if isinstance(tp, (str, typing.ForwardRef)):
        raise TypeSpecError(f"unresolved forward reference {tp!r}")
    return tp


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(_normalise(a) for a in typing.get_args(tp))
    return None


def _compile(tp: Any) -> tuple[Callable[[Any], bool] | None, bool]:
    """Return (matcher, structural). A ``None`` matcher matches everything."""
    tp = _normalise(tp)
    if tp in _ANY_LIKE:
        return None, False
    if tp in _NEVER_LIKE:
        return (lambda _v: False), False
    members = _union_members(tp)
    if members is not None:
        compiled = [_compile(m) for m in members]
        if any(m is None for m, _ in compiled):
            return None, False
        checks = [m for m, _ in compiled if m is not None]
        return (lambda v: any(c(v) for c in checks)), any(s for _, s in compiled)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        values = typing.get_args(tp)
        return (lambda v: any(type(v) is type(x) and v == x for x in values)), True
    if is_typeddict(tp):
        return _compile_typeddict(tp), True
    if origin is None:
        if not isinstance(tp, type):
            raise TypeSpecError(f"{tp!r} is not a type")
        cls = _checkable(tp)
        return (lambda v: isinstance(v, cls)), False
    return _compile_generic(tp, origin)


def typeddict_fields(tp: Any) -> tuple[dict[str, Any], frozenset[str]]:
    """A ``TypedDict``'s keys with their types (without ``Required``,
    ``NotRequired`` or ``ReadOnly``), and its required keys — also where its
    module's annotations are strings (``from __future__ import
    annotations``), which ``__required_keys__`` does not see through."""
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except Exception as exc:  # (a name its annotations use cannot be found)
        raise TypeSpecError(f"the fields of {tp.__name__} cannot be resolved: {exc}") from exc
    required = set(tp.__required_keys__)
    for key, hint in hints.items():
        while typing.get_origin(hint) in _FIELD_QUALIFIERS:
            if typing.get_origin(hint) is typing.NotRequired:
                required.discard(key)
            elif typing.get_origin(hint) is typing.Required:
                required.add(key)
            hint = typing.get_args(hint)[0]
        hints[key] = hint
    return hints, frozenset(required)


_FIELD_QUALIFIERS: tuple[Any, ...] = tuple(
    q
    for q in (getattr(typing, n, None) for n in ("Required", "NotRequired", "ReadOnly"))
    if q is not None
)


def _compile_typeddict(tp: Any) -> Callable[[Any], bool]:
    """A ``TypedDict`` holds no class of its own at run time: a dict
    matches when it has every required key, no key the type does not
    declare, and values of the declared types."""
    hints, required = typeddict_fields(tp)
    fields = {key: _compile(hint)[0] for key, hint in hints.items()}

    def check(v: Any) -> bool:
        if not isinstance(v, dict) or not required <= v.keys():
            return False
        for key, value in v.items():
            if key not in fields:
                return False
            field = fields[key]
            if field is not None and not field(value):
                return False
        return True

    return check


def _compile_generic(tp: Any, origin: Any) -> tuple[Callable[[Any], bool], bool]:
    args = typing.get_args(tp)
    if origin is type:
        inner = _normalise(args[0]) if args else Any
        if inner in _ANY_LIKE:
            return (lambda v: isinstance(v, type)), False
        bases = _union_members(inner) or (inner,)
        classes = tuple(b for b in bases if isinstance(b, type))
        return (lambda v: isinstance(v, type) and issubclass(v, classes)), True
    if not isinstance(origin, type):
        raise TypeSpecError(f"{tp!r} is not a supported message type")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item, _ = _compile(args[0])
            if item is None:
                return (lambda v: isinstance(v, tuple)), False
            check = item
            return (lambda v: isinstance(v, tuple) and all(check(x) for x in v)), True
        if args == ((),):  # tuple[()]
            return (lambda v: isinstance(v, tuple) and not v), True
        items = [_compile(a)[0] for a in args]
        n = len(items)
        return (
            lambda v: (
                isinstance(v, tuple)
                and len(v) == n
                and all(c is None or c(x) for c, x in zip(items, v, strict=True))
            )
        ), True
    if args and issubclass(origin, _MAP_ORIGINS) and len(args) == 2:
        key, _ = _compile(args[0])
        val, _ = _compile(args[1])

        def check_mapping(v: Any) -> bool:
            return isinstance(v, origin) and all(
                (key is None or key(k)) and (val is None or val(x))
                for k, x in typing.cast(cabc.Mapping[Any, Any], v).items()
            )

        return check_mapping, True
    if args and issubclass(origin, _ITEM_ORIGINS) and len(args) == 1:
        item, _ = _compile(args[0])
        if item is None:
            return (lambda v: isinstance(v, origin)), False
        check = item
        return (lambda v: isinstance(v, origin) and all(check(x) for x in v)), True  # type: ignore[attr-defined]
    # Other generics (user classes, iterators, callables): origin only.
    _checkable(origin)
    return (lambda v: isinstance(v, origin)), False


def _checkable(cls: type) -> type:
    """``cls``, refused if it is a Protocol that a message's class cannot
    be checked against (else: a TypeError from typing at the first message)."""
    if getattr(cls, "_is_protocol", False):
        try:
            issubclass(object, cls)
        except TypeError as exc:  # not @runtime_checkable, or with data members
            raise TypeSpecError(
                f"{type_name(cls)} is a Protocol that messages cannot be checked against "
                f"({exc}); use a @typing.runtime_checkable Protocol of methods only, or a class"
            ) from None
    return cls


class TypeSpec:
    """A compiled message type. Build with ``TypeSpec(annotation)``."""

    __slots__ = ("_cache", "_check", "annotation", "structural")

    def __init__(self, annotation: Any) -> None:
        self.annotation = _normalise(annotation)
        self._check, self.structural = _compile(self.annotation)
        # type(value) -> bool, only for specs that a class alone decides.
        self._cache: dict[type, bool] = {}

    @property
    def is_any(self) -> bool:
        return self._check is None

    @property
    def is_never(self) -> bool:
        return self.annotation in _NEVER_LIKE

    def matches(self, value: Any) -> bool:
        check = self._check
        if check is None:
            return True
        if self.structural:
            return check(value)
        cls = type(value)
        hit = self._cache.get(cls)
        if hit is None:
            hit = self._cache[cls] = check(value)
        return hit

    def rank(self, cls: type) -> tuple[int, int, int, int] | None:
        """How specifically values of ``cls`` match (lower is better), or
        ``None`` when no value of ``cls`` can match.

        Order: exact class, then nearest base in the MRO, then unions, then
        ``Any``; a parametrised generic beats its bare origin; a smaller union
        beats a larger one.
        """
        return _rank(self.annotation, cls)

    def __repr__(self) -> str:
        return type_name(self.annotation)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TypeSpec) and self.annotation == other.annotation

    def __hash__(self) -> int:
        return hash(self.annotation)


def _rank(tp: Any, cls: type) -> tuple[int, int, int, int] | None:
    if tp in _ANY_LIKE:
        return (3, 0, 0, 0)
    if tp in _NEVER_LIKE:
        return None
    members = _union_members(tp)
    if members is not None:
        ranks = [r for r in (_rank(m, cls) for m in members) if r is not None]
        if not ranks:
            return None
        best = min(ranks)
        return (max(2, best[0]), best[1], best[2], len(members))
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        classes = {type(v) for v in typing.get_args(tp)}
        return (0, 0, -1, 0) if cls in classes else None
    parametrised = origin is not None
    base = origin if parametrised else tp
    if is_typeddict(base):  # (a dict of declared keys: as specific as dict[K, V])
        base, parametrised = dict, True
    if base is type:
        return (1, 0, -1 if parametrised else 0, 0) if issubclass(cls, type) else None
    if not isinstance(base, type):
        return None
    try:
        distance = cls.__mro__.index(base)
    except ValueError:
        if not issubclass(cls, base):  # virtual subclasses (ABCs, Protocols)
            return None
        distance = len(cls.__mro__)
    return (0 if distance == 0 else 1, distance, -1 if parametrised else 0, 0)


ANY_SPEC = TypeSpec(Any)
NEVER_SPEC = TypeSpec(typing.Never)


def spec_of(tp: Any) -> TypeSpec:
    """The compiled spec of ``tp``, sharing the ``Any`` and ``Never`` ones."""
    if tp is Any:
        return ANY_SPEC
    if tp is typing.Never:
        return NEVER_SPEC
    return TypeSpec(tp)


def may_overlap(out_tp: Any, in_tp: Any) -> bool:
    """Whether some value of declared type ``out_tp`` may match ``in_tp``."""
    out_tp, in_tp = _normalise(out_tp), _normalise(in_tp)
    if out_tp in _ANY_LIKE or in_tp in _ANY_LIKE:
        return True
    if out_tp in _NEVER_LIKE or in_tp in _NEVER_LIKE:
        return False
    for side, other, flip in ((out_tp, in_tp, False), (in_tp, out_tp, True)):
        members = _union_members(side)
        if members is not None:
            return any(may_overlap(other, m) if flip else may_overlap(m, other) for m in members)
    out_origin, in_origin = typing.get_origin(out_tp), typing.get_origin(in_tp)
    if out_origin is typing.Literal or in_origin is typing.Literal:
        return _literal_overlap(out_tp, in_tp)
    if is_typeddict(out_tp) or is_typeddict(in_tp):  # (a dict of its keys)
        return may_overlap(
            dict if is_typeddict(out_tp) else out_tp,
            dict if is_typeddict(in_tp) else in_tp,
        )
    out_base = out_origin or out_tp
    in_base = in_origin or in_tp
    if not (isinstance(out_base, type) and isinstance(in_base, type)):
        return True
    if not (issubclass(out_base, in_base) or issubclass(in_base, out_base)):
        return False
    out_args, in_args = typing.get_args(out_tp), typing.get_args(in_tp)
    if out_base is tuple and in_base is tuple and out_args and in_args:
        return _tuples_overlap(out_args, in_args)
    if out_args and in_args and len(out_args) == len(in_args) and Ellipsis not in out_args:
        return all(
            may_overlap(a, b)
            for a, b in zip(out_args, in_args, strict=True)
            if b is not Ellipsis and a is not Ellipsis
        )
    return True


def _tuples_overlap(out_args: tuple[Any, ...], in_args: tuple[Any, ...]) -> bool:
    """Whether ``tuple[*out_args]`` and ``tuple[*in_args]`` share a value:
    fixed tuples of one length, item by item; ``tuple[X, ...]`` holds any
    length of X (the empty tuple included)."""
    out_items = None if len(out_args) == 2 and out_args[1] is Ellipsis else out_args
    in_items = None if len(in_args) == 2 and in_args[1] is Ellipsis else in_args
    if out_items is None and in_items is None:
        return True  # () is both
    if out_items is None:
        return all(may_overlap(out_args[0], b) for b in in_items or ())
    if in_items is None:
        return all(may_overlap(a, in_args[0]) for a in out_items)
    return len(out_items) == len(in_items) and all(
        may_overlap(a, b) for a, b in zip(out_items, in_items, strict=True)
    )


def _literal_overlap(out_tp: Any, in_tp: Any) -> bool:
    def values(tp: Any) -> list[Any] | None:
        return list(typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else None

    out_vals, in_vals = values(out_tp), values(in_tp)
    if out_vals is not None and in_vals is not None:
        return any(type(a) is type(b) and a == b for a in out_vals for b in in_vals)
    if out_vals is not None:
        return any(TypeSpec(in_tp).matches(v) for v in out_vals)
    assert in_vals is not None
    return any(TypeSpec(out_tp).matches(v) for v in in_vals)
