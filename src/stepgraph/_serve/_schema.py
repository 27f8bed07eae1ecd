"""JSON schemas of the types a workflow takes, for forms and clients.

A schema comes from the pydantic adapter the CLI validates with; a type pydantic
cannot describe gets ``{}`` (any JSON), with its name in ``title`` so a
form can still say what is expected."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from .._cli._input import adapter
from .._core import type_name

__all__ = ["schema_of"]


def _schema(annotation: Any) -> dict[str, Any]:
    with contextlib.suppress(Exception):  # (pydantic cannot describe every type)
        schema = adapter(annotation).json_schema()
        if isinstance(schema, dict):
            return schema
    return {"title": type_name(annotation)}


def schema_of(annotations: Iterable[Any]) -> dict[str, Any]:
    """One type's schema, or ``anyOf`` the schemas of several."""
    schemas = [_schema(a) for a in annotations]
    if len(schemas) == 1:
        return schemas[0]
    defs: dict[str, Any] = {}
    for schema in schemas:  # one $defs for all (refs point at "#/$defs/...")
        defs.update(schema.pop("$defs", {}))
    merged: dict[str, Any] = {"anyOf": schemas}
    if defs:
        merged["$defs"] = defs
    return merged
