"""Loading what the command line names: workflows, inputs, stores."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import typing
from pathlib import Path
from typing import Any

from .._checkpoint import SqliteCheckpointStore
from .._core import TypeSpec, type_name
from .._workflow import Workflow

__all__ = ["CliError", "coerce", "load_workflow", "open_store", "parse_json"]


class CliError(Exception):
    """A usage problem, reported in one line (exit code 1)."""


def load_workflow(target: str) -> Workflow:
    """``MODULE:ATTR`` — a ``Workflow``, or a zero-argument function returning one.
    The current directory is importable, like ``python -m``."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"expected MODULE:ATTR (e.g. myflows:build), got {target!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Workflow) and callable(obj):
        obj = obj()
    if not isinstance(obj, Workflow):
        raise CliError(
            f"{target} is a {type(obj).__name__}, not a Workflow (or a function returning one)"
        )
    return obj


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}") from exc


def coerce(value: Any, annotation: Any) -> Any:
    """Turn a JSON value into ``annotation``: dataclasses and pydantic models
    from objects, lists and tuples item by item, unions member by member."""
    if TypeSpec(annotation).matches(value):
        return value
    origin = typing.get_origin(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        for member in typing.get_args(annotation):
            try:
                return coerce(value, member)
            except CliError:
                continue
    elif origin in (list, tuple, set, frozenset) and isinstance(value, list):
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        return origin(coerce(v, item) for v in value)
    elif isinstance(annotation, type) and isinstance(value, dict):
        if dataclasses.is_dataclass(annotation):
            hints = typing.get_type_hints(annotation)
            try:
                return annotation(**{k: coerce(v, hints.get(k, Any)) for k, v in value.items()})
            except TypeError as exc:
                raise CliError(f"cannot build {annotation.__name__} from {value!r}: {exc}") from exc
        validate = getattr(annotation, "model_validate", None)
        if validate is not None:
            try:
                return validate(value)
            except Exception as exc:
                raise CliError(f"cannot build {annotation.__name__}: {exc}") from exc
    raise CliError(f"the JSON value {json.dumps(value)} is not a {type_name(annotation)}")


def coerce_input(workflow: Workflow, value: Any) -> Any:
    """The run input for the start executor, from JSON."""
    start = workflow.start
    for annotation in start.input_types:
        try:
            candidate = coerce(value, annotation)
        except CliError:
            continue
        if start.accepts(candidate):
            return candidate
    accepted = ", ".join(type_name(t) for t in start.input_types)
    raise CliError(f"the input does not fit the start executor {start.id!r} (it takes {accepted})")


def open_store(spec: str) -> SqliteCheckpointStore:
    """``sqlite:PATH`` (a bare path means the same)."""
    kind, sep, path = spec.partition(":")
    if not sep:
        kind, path = "sqlite", spec
    if kind != "sqlite" or not path:
        raise CliError(f"unknown store {spec!r}; use sqlite:PATH")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteCheckpointStore(path)
