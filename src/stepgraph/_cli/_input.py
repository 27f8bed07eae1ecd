"""JSON from the command line into the types a workflow declares.

Validation is pydantic's, in its lax mode: what it accepts is accepted (``5``
for a ``float``, an object for a dataclass or model, a list for a tuple), and
what it refuses is reported field by field. One exception: a value whose type
is exactly ``bool`` must be JSON ``true`` or ``false`` — approvals are bools,
and a ``"yes"``, ``1`` or ``"False"`` must not decide one. Example values show
the JSON shape a type expects (for the ``--respond`` commands the CLI prints).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import enum
import json
import math
import pathlib
import types
import typing
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from typing_extensions import is_typeddict

from .._core import TypeSpec, a_type, type_name, typeddict_fields
from .._workflow import Workflow
from ._load import CliError, quoting_hint

__all__ = ["adapter", "coerce", "coerce_input", "example_json", "word_hint"]

_CONFIG = ConfigDict(arbitrary_types_allowed=True)
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(annotation: Any) -> TypeAdapter[Any]:
    """The (cached) pydantic adapter that validates JSON as ``annotation``."""
    try:
        return _ADAPTERS[annotation]
    except (KeyError, TypeError):
        pass
    adapter: TypeAdapter[Any]
    try:
        adapter = TypeAdapter(annotation, config=_CONFIG)
    except Exception:  # a config of its own (a pydantic model): no override
        adapter = TypeAdapter(annotation)
    with contextlib.suppress(TypeError):  # an unhashable annotation: not cached
        _ADAPTERS[annotation] = adapter
    return adapter


def _problems(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "the value"
        got = json.dumps(item.get("input"), default=repr, ensure_ascii=False)
        if len(got) > 60:
            got = got[:57] + "..."
        parts.append(f"{where}: {item['msg']} (got {got})")
    more = len(error.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def coerce(value: Any, annotation: Any, what: str) -> Any:
    """``value`` (parsed JSON) as ``annotation``; ``CliError`` naming each
    field that does not fit."""
    if annotation is bool and type(value) is not bool:
        raise CliError(
            f"{what} is not a valid bool: Input should be a valid boolean, true or false "
            f"(got {_shown(value)})"
        )
    if annotation in (int, float) and type(value) is bool:
        raise CliError(f"{what} is not a valid {annotation.__name__}: got {_shown(value)}")
    if TypeSpec(annotation).matches(value):
        return value
    if is_typeddict(annotation):  # (JSON as it is, or nothing: see _typeddict_misfit)
        raise CliError(
            f"{what} is not a valid {type_name(annotation)}: {_typeddict_misfit(annotation, value)}"
        )
    try:
        built = adapter(annotation).validate_python(value)
    except ValidationError as error:
        raise CliError(
            f"{what} is not a valid {type_name(annotation)}: {_problems(error)}"
        ) from None
    except Exception as exc:
        raise CliError(
            f"{what} cannot be built as {a_type(annotation)} from JSON: {type(exc).__name__}: {exc}"
        ) from None
    try:
        schema = adapter(annotation).json_schema()
    except Exception:  # (a type pydantic cannot describe: nothing more to check)
        return built
    unknown = _unknown_fields(annotation, value, schema, built)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise CliError(
            f"{what} has {'an unknown field' if len(unknown) == 1 else 'unknown fields'} "
            f"{names}: {type_name(annotation)} has no such field{'s' * (len(unknown) > 1)} (a "
            "misspelt name would leave the field it meant at its default)"
        )
    where = _loose(schema, value)
    if where is not None:
        field, got, kind = where
        named = what if field == "the value" else f"{what}: {field}"
        raise CliError(f"{named} must be {kind} (got {_shown(got)})")
    return built


def _typeddict_misfit(annotation: Any, value: Any) -> str:
    """Why ``value`` is not of the ``TypedDict`` ``annotation`` (whose
    values are the JSON's own: a dict of the declared keys, each of its
    type — nothing is built, as pydantic cannot build ``typing.TypedDict``
    before Python 3.12)."""
    if not isinstance(value, dict):
        return f"it takes a JSON object (got {_shown(value)})"
    hints, required = typeddict_fields(annotation)
    problems = [f"missing key {k!r}" for k in sorted(required - value.keys())]
    problems += [f"unknown key {k!r}" for k in value if k not in hints]
    for key, got in value.items():
        if key in hints and not TypeSpec(hints[key]).matches(got):
            problems.append(f"{key} must be {a_type(hints[key])} (got {_shown(got)})")
    return "; ".join(problems) or "its values do not fit"


def _unknown_fields(annotation: Any, value: Any, schema: Any, built: Any) -> list[str]:
    """The fields of ``value`` that no object of ``annotation`` has (dotted
    paths): lax validation drops them silently, so ``{"dryrun": true}``
    for ``dry_run`` ran with ``dry_run`` at its default. A field is left
    alone where its object takes or drops undeclared fields by its own
    word (a model's ``extra="allow"`` or ``extra="ignore"``) -- only there:
    such a model nested in another does not excuse a typo in the other."""
    try:
        adapter(annotation).validate_python(value, extra="forbid")
    except ValidationError as error:
        kinds = ("extra_forbidden", "unexpected_keyword_argument")
        unknown = []
        for item in error.errors():
            if item["type"] not in kinds:
                continue
            owner = _owner(built, item["loc"][:-1])
            if owner is _UNRESOLVED:
                # (a union's branch lax validation did not take, or a shape
                # not followed: as before, a type taking extras excuses it)
                if _takes_extra(schema):
                    continue
            elif _declares_extra(owner):
                continue
            unknown.append(".".join(str(p) for p in item["loc"]))
        return unknown
    except Exception:  # (no verdict: the lax validation stands)
        return []
    return []


_UNRESOLVED = object()


def _owner(built: Any, loc: Sequence[Any]) -> Any:
    """The object at ``loc`` in what lax validation built (``_UNRESOLVED``
    when ``loc`` does not lead into it, e.g. a union branch not taken)."""
    current = built
    for part in loc:
        if isinstance(current, dict):
            if part in current:
                current = current[part]
                continue
        elif isinstance(current, (list, tuple)):
            if isinstance(part, int) and -len(current) <= part < len(current):
                current = current[part]
                continue
        elif isinstance(part, str) and part in _field_names(current):
            current = getattr(current, part)
            continue
        if isinstance(part, str) and part == type(current).__name__:
            continue  # (the union branch lax validation took)
        return _UNRESOLVED
    return current


def _field_names(obj: Any) -> set[str]:
    if isinstance(obj, BaseModel):
        return set(type(obj).model_fields)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {field.name for field in dataclasses.fields(obj)}
    return set()


def _declares_extra(obj: Any) -> bool:
    """Whether ``obj``'s type says itself what becomes of undeclared fields
    (``extra="allow"`` keeps them, ``extra="ignore"`` drops them)."""
    if isinstance(obj, BaseModel):
        config: Any = type(obj).model_config
    else:
        config = getattr(type(obj), "__pydantic_config__", None) or {}
    return config.get("extra") in ("allow", "ignore")


def _takes_extra(schema: Any) -> bool:
    """Whether some object in ``schema`` has fields and takes others too."""
    if isinstance(schema, dict):
        if "properties" in schema and schema.get("additionalProperties") is True:
            return True
        return any(_takes_extra(sub) for sub in schema.values())
    if isinstance(schema, list):
        return any(_takes_extra(sub) for sub in schema)
    return False


def _shown(value: Any) -> str:
    got = json.dumps(value, default=repr, ensure_ascii=False)
    return got[:57] + "..." if len(got) > 60 else got


def _loose(schema: Any, value: Any, defs: Any = None, at: str = "the value") -> Any:
    """Where lax validation took a bool for anything but a JSON boolean, a
    JSON boolean for a number, or a string for a number JSON has not (NaN,
    Infinity, ``"1e999"``): ``(field, value, what it must be)``, or
    ``None``. Approvals are bools at any depth, and ``"yes"`` or ``1`` must
    not decide one; JSON's own ``NaN`` is refused, and so is ``"nan"``."""
    if not isinstance(schema, dict):
        return None
    defs = schema.get("$defs", defs) or {}
    while "$ref" in schema:  # ("#/$defs/Name", as pydantic writes them)
        schema = defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
    options = [o for o in schema.get("anyOf", ()) if o.get("type") != "null"]
    if len(options) == 1 and value is not None:
        return _loose(options[0], value, defs, at)
    kind = schema.get("type")
    if kind == "boolean" and type(value) is not bool:
        return at, value, "true or false"
    if kind in ("integer", "number") and type(value) is bool:
        return at, value, "a number"
    if kind == "number" and isinstance(value, str) and not _finite(value):
        return at, value, "a finite number"
    if kind == "object" and isinstance(value, dict):
        properties = schema.get("properties", {})
        rest = schema.get("additionalProperties")  # (a dict's values)
        for name, item in value.items():
            sub = properties.get(name, rest)
            found = _loose(sub, item, defs, name if at == "the value" else f"{at}.{name}")
            if found is not None:
                return found
    if kind == "array" and isinstance(value, list):
        fixed = schema.get("prefixItems")
        for index, item in enumerate(value):
            sub = fixed[index] if fixed and index < len(fixed) else schema.get("items")
            found = _loose(sub, item, defs, f"{at}[{index}]")
            if found is not None:
                return found
    return None


def _finite(text: str) -> bool:
    """Whether ``text``, read as a number, is not NaN nor infinite (text
    that is no number at all: pydantic says so)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return True


def coerce_input(workflow: Workflow, value: Any) -> Any:
    """The run input for the start executor, from JSON: the first of its
    input types that takes the value."""
    start = workflow.start
    accepted = ", ".join(type_name(t) for t in start.input_types)
    if value is None:  # (even where the type takes it: a run has no None message)
        raise CliError(
            f"the input is null, and None is never a message: give the start executor "
            f"{start.id!r} a value (it takes {accepted})"
        )
    problems = []
    for annotation in start.input_types:
        try:
            candidate = coerce(value, annotation, "the input")
        except CliError as exc:
            problems.append(str(exc))
            continue
        if start.accepts(candidate):
            return candidate
        problems.append(f"the input as {a_type(annotation)} has no handler")
    raise CliError(
        f"the input does not fit the start executor {start.id!r} (it takes {accepted}): "
        + " | ".join(problems)
    )


def word_hint(word: str, annotations: Sequence[Any]) -> str:
    """What to write instead of a bare ``word`` (not JSON) for a value of one
    of ``annotations``: quotes only when a string would be taken."""
    for annotation in annotations:
        try:
            coerce(word, annotation, "")
        except CliError:
            continue
        return quoting_hint(word)
    if all(a is bool for a in annotations):
        return "it takes true or false"
    names = " or ".join(type_name(a) for a in annotations)
    return f"it takes {names}, e.g. {example_json(annotations[0])}"


def example_json(annotation: Any) -> str:
    """A JSON value of the shape ``annotation`` expects, to show a user."""
    return json.dumps(_example(annotation, 0), ensure_ascii=False)


# Types whose JSON form is a string, and an example of it (the first that
# fits wins: a datetime is a date too).
_TEXTUAL: tuple[tuple[type, str], ...] = (
    (datetime.datetime, "2026-01-31T12:00:00"),
    (datetime.date, "2026-01-31"),
    (datetime.time, "12:00:00"),
    (datetime.timedelta, "PT1H"),
    (decimal.Decimal, "0.5"),
    (uuid.UUID, "00000000-0000-0000-0000-000000000000"),
    (pathlib.PurePath, "some/path"),
)


def _example(tp: Any, depth: int) -> Any:
    if depth > 4:
        return None
    simple = {bool: True, int: 0, float: 0.0, str: "text", type(None): None, bytes: ""}
    if tp in simple:
        return simple[tp]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _example(args[0], depth)
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _example(members[0], depth) if members else None
    if (origin is tuple or (isinstance(origin, type) and issubclass(origin, tuple))) and (
        len(args) != 2 or args[1] is not Ellipsis
    ):  # a fixed shape: one value per place (``tuple[()]``: none)
        return [_example(a, depth + 1) for a in args if a != ()]
    if origin in (list, tuple, set, frozenset) or (
        isinstance(origin, type) and issubclass(origin, (list, tuple, set, frozenset))
    ):
        return [_example(args[0], depth + 1)] if args and args[0] is not Ellipsis else []
    for kind, text in _TEXTUAL:  # (values JSON writes as strings)
        if isinstance(tp, type) and issubclass(tp, kind):
            return text
    if origin is dict or (isinstance(origin, type) and issubclass(origin, dict)):
        return {"key": _example(args[1], depth + 1)} if len(args) == 2 else {}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp)).value if len(tp) else None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        try:
            hints = typing.get_type_hints(tp)
        except Exception:
            hints = {}
        shown = [f for f in dataclasses.fields(tp) if f.init]
        required = [
            f
            for f in shown
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        # What must be given (all of it, when every field has a default).
        return {f.name: _example(hints.get(f.name, Any), depth + 1) for f in required or shown}
    fields = getattr(tp, "model_fields", None)  # a pydantic model
    if isinstance(tp, type) and isinstance(fields, dict):
        needed = {n: i for n, i in fields.items() if i.is_required()} or fields
        return {name: _example(info.annotation, depth + 1) for name, info in needed.items()}
    return None
