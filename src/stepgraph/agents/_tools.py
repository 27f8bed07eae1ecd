"""Tools an agent's model can call: ``@tool`` turns a typed function into a
:class:`Tool` with a JSON schema, a validator and an async ``invoke``.

::

    @tool
    def search(query: str, limit: int = 10) -> list[Hit]:
        \"\"\"Search the index.

        Args:
            query: What to look for.
            limit: How many hits to return at most.
        \"\"\"

    search.schema()                          # the Chat Completions tool entry
    args = search.parse('{"query": "tea"}')  # {"query": "tea", "limit": 10}
    text = await search.invoke(args)         # the hits, JSON-encoded

The schema and the validator are built once, when the tool is defined;
a call costs one pydantic validation of the model's JSON text.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeAlias, overload

import pydantic
import pydantic_core
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaWarningKind

from .._core import mended
from .._core._threads import sync_pool
from .._core._typing import a_type
from .._exceptions import ToolArgumentsError, WorkflowDefinitionError

__all__ = ["Tool", "ToolArgumentsError", "as_tools", "json_text", "tool", "tool_error_text"]

_Approval: TypeAlias = Literal["never", "always"] | Callable[[dict[str, Any]], bool]
_Errors: TypeAlias = Literal["report", "raise"]

# What the Chat Completions API accepts as a function name.
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class Tool:
    """A function an agent's model may call, with everything the agent needs:
    ``name``, ``description`` and ``parameters`` (a JSON schema) for the
    model, ``parse`` for its argument text, ``invoke`` to run the function.

    ``approval`` is ``"never"``, ``"always"`` or a callable that takes the
    validated arguments and says whether a human must approve this call.
    ``errors="report"`` gives an exception from the function to the model as
    the call's result; ``errors="raise"`` fails the run. The original
    function is ``fn``. Usually made with ``@tool``.
    """

    __slots__ = (
        "_fields",
        "_is_async",
        "_model",
        "approval",
        "description",
        "errors",
        "fn",
        "name",
        "parameters",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        approval: _Approval = "never",
        errors: _Errors = "report",
    ) -> None:
        if isinstance(fn, staticmethod):
            fn = fn.__func__
        if isinstance(fn, classmethod):
            raise WorkflowDefinitionError(
                f"@tool applied to classmethod {fn.__func__.__qualname__!r}: there is no class "
                "to pass; use a plain function or a @staticmethod"
            )
        if not callable(fn):
            raise WorkflowDefinitionError(f"@tool applied to non-callable {fn!r}")
        where = _describe(fn)
        if name is None:
            name = getattr(fn, "__name__", None)
            if name is None or name == "<lambda>":
                raise WorkflowDefinitionError(
                    f"tool function {where}: it has no usable name; pass name=..."
                )
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise WorkflowDefinitionError(
                f"tool function {where}: name {name!r} is not a valid tool name (1 to 64 "
                "letters, digits, '_' or '-'); pass name=..."
            )
        if approval not in ("never", "always") and not callable(approval):
            raise WorkflowDefinitionError(
                f"tool {name!r}: approval must be 'never', 'always' or a callable, got {approval!r}"
            )
        if callable(approval) and inspect.iscoroutinefunction(approval):
            raise WorkflowDefinitionError(
                f"tool {name!r}: the approval callable must be synchronous and return a bool"
            )
        if errors not in ("report", "raise"):
            raise WorkflowDefinitionError(
                f"tool {name!r}: errors must be 'report' or 'raise', got {errors!r}"
            )

        base = _without_partials(fn)
        if inspect.isgeneratorfunction(base) or inspect.isasyncgenfunction(base):
            raise WorkflowDefinitionError(
                f"tool function {where}: a tool returns its result; it may not be a generator"
            )
        summary, documented = _parse_docstring(getattr(base, "__doc__", None))
        model, fields, parameters = _arguments_model(fn, name, where, documented)

        self.fn = fn
        self.name = name
        self.description = summary if description is None else description
        self.parameters = parameters
        self.approval = approval
        self.errors = errors
        self._model = model
        self._fields = fields
        self._is_async = _is_async(fn)

    def schema(self) -> dict[str, Any]:
        """The Chat Completions tool entry (a fresh copy each time)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.parameters),
            },
        }

    def parse(self, arguments: str) -> dict[str, Any]:
        """Validate the model's argument text against the signature: a dict
        of every parameter (defaults filled in), values coerced to their
        annotations (nested models become instances). An empty text means no
        arguments. Raises :class:`ToolArgumentsError`."""
        if not arguments.strip():
            arguments = "{}"
        try:
            validated = self._model.model_validate_json(arguments)
        except pydantic.ValidationError as exc:
            raise ToolArgumentsError(self.name, _problems(exc, arguments, self._fields)) from None
        return {param: getattr(validated, field) for field, param in self._fields}

    def needs_approval(self, arguments: dict[str, Any]) -> bool:
        """Whether this call (with its validated arguments) must be approved
        first. An approval callable that raises lets the exception through."""
        if self.approval == "always":
            return True
        if self.approval == "never":
            return False
        return bool(self.approval(arguments))

    async def invoke(self, arguments: Mapping[str, Any]) -> str:
        """Call the function with validated arguments and return the text for
        the model: a ``str`` as is, ``None`` as ``""``, anything else as
        strict JSON (:func:`json_text`: a NaN as ``"NaN"``); half a
        character in it (a lone surrogate, as a file name read with
        ``surrogateescape`` holds) as U+FFFD, which a checkpoint and an HTTP
        request can hold. A sync function runs in a worker thread.
        Exceptions propagate."""
        if self._is_async:
            result = await self.fn(**arguments)
        else:
            # The pool of sync handlers: a call cancelled meanwhile leaves its
            # thread to finish on its own, and shutdown does not wait for it.
            result = await sync_pool.run(functools.partial(self.fn, **arguments))
            if inspect.isawaitable(result):  # a sync wrapper around a coroutine function
                result = await result
        return mended(_as_text(result))

    def __repr__(self) -> str:
        return f"<Tool {self.name!r}>"


@overload
def tool(
    fn: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    approval: _Approval = "never",
    errors: _Errors = "report",
) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    approval: _Approval = "never",
    errors: _Errors = "report",
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    approval: _Approval = "never",
    errors: _Errors = "report",
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` of a sync or async function: ``@tool`` or
    ``@tool(name=..., description=..., approval=..., errors=...)``.

    Every parameter needs a type annotation and must be passable by keyword.
    The description defaults to the docstring's text before its sections
    (``Args:``, ``Returns:``, ...); parameters are described by the
    ``Args:`` section or by ``Annotated[T, "text"]``.
    """

    def make(fn: Callable[..., Any]) -> Tool:
        return Tool(fn, name=name, description=description, approval=approval, errors=errors)

    return make if fn is None else make(fn)


def as_tools(items: Iterable[Tool | Callable[..., Any]]) -> dict[str, Tool]:
    """Tools by name, from tools and plain functions (made tools with the
    default options). Rejects non-callables and two tools with one name."""
    if isinstance(items, Tool) or callable(items) or isinstance(items, str | bytes):
        raise WorkflowDefinitionError(
            f"tools takes a list of tools and functions, got one {type(items).__name__}: "
            "put it in a list (tools=[...])"
        )
    if isinstance(items, Mapping):
        raise WorkflowDefinitionError(
            "tools takes a list of tools and functions, not a dict (tools name themselves: "
            "pass its values, tools=[...])"
        )
    if not isinstance(items, Iterable):
        raise WorkflowDefinitionError(
            f"tools takes a list of tools and functions, not {type(items).__name__}"
        )
    tools: dict[str, Tool] = {}
    for item in items:
        if not isinstance(item, Tool):
            if not callable(item):
                raise WorkflowDefinitionError(f"not a tool or a function: {item!r}")
            item = Tool(item)
        if item.name in tools:
            raise WorkflowDefinitionError(
                f"two tools are named {item.name!r}; give one of them another name"
            )
        tools[item.name] = item
    return tools


def tool_error_text(tool_name: str, exc: BaseException) -> str:
    """The one line the model gets when a tool fails, e.g. ``tool
    'send_email' failed: ValueError: no such address``. Invalid arguments
    are reported with the :class:`ToolArgumentsError`'s own message."""
    try:
        detail = mended(" ".join(str(exc).split()))
    except Exception:
        detail = "<unprintable>"
    if isinstance(exc, ToolArgumentsError):
        return detail
    kind = type(exc).__name__
    return (
        f"tool {tool_name!r} failed: {kind}: {detail}"
        if detail
        else f"tool {tool_name!r} failed: {kind}"
    )


# -- the arguments model ------------------------------------------------------


class _ToolSchema(GenerateJsonSchema):
    """Schemas for a model to read: no generated titles on properties, and a
    default that JSON cannot hold is left out rather than warned about."""

    ignored_warning_kinds: set[JsonSchemaWarningKind] = {  # noqa: RUF012 (pydantic's hook)
        "skipped-choice",
        "non-serializable-default",
    }

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _arguments_model(
    fn: Callable[..., Any], name: str, where: str, documented: Mapping[str, str]
) -> tuple[type[pydantic.BaseModel], tuple[tuple[str, str], ...], dict[str, Any]]:
    """A pydantic model of the parameters, its (field, parameter) names and
    the parameters' JSON schema.

    Fields are named ``p0, p1, ...`` with the parameter names as aliases, so
    parameters may be called anything (``json``, ``model_config``, ``_id``)
    without clashing with ``BaseModel``'s own attributes."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise WorkflowDefinitionError(
            f"tool function {where}: cannot read its signature ({exc})"
        ) from exc
    params = list(signature.parameters.values())
    first = params[0] if params else None
    if (
        first is not None
        and inspect.isfunction(fn)
        and (first.name == "self" or (first.name == "cls" and first.annotation is first.empty))
    ):
        raise WorkflowDefinitionError(
            f"tool function {where}: it takes {first.name!r}, so it is a method; decorate "
            "a plain function, or make a tool of the bound method: tool(obj.method)"
        )
    for param in params:
        if param.kind is param.VAR_POSITIONAL or param.kind is param.VAR_KEYWORD:
            raise WorkflowDefinitionError(
                f"tool function {where}: parameter {_star(param)!r} is not allowed; the model "
                "passes named arguments only, so list each one"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise WorkflowDefinitionError(
                f"tool function {where}: parameter {param.name!r} is positional-only; the "
                "model passes arguments by name"
            )
    hints = _type_hints(fn, where, [param.name for param in params])
    fields: dict[str, Any] = {}
    names: list[tuple[str, str]] = []
    for index, param in enumerate(params):
        if param.name not in hints:
            raise WorkflowDefinitionError(
                f"tool function {where}: parameter {param.name!r} has no type annotation; "
                "annotate it so the model knows what to send"
            )
        annotation, described = _described(hints[param.name])
        options: dict[str, Any] = {"alias": param.name}
        if param.default is not param.empty:
            options["default"] = param.default
        if not _has_field_description(annotation):
            text = described if described is not None else documented.get(param.name)
            if text:
                options["description"] = text
        field = f"p{index}"
        fields[field] = (annotation, pydantic.Field(**options))
        names.append((field, param.name))
    try:
        model: type[pydantic.BaseModel] = pydantic.create_model(
            f"{name}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid"),
            __module__=getattr(fn, "__module__", None) or __name__,
            **fields,
        )
        generated = model.model_json_schema(schema_generator=_ToolSchema)
    except Exception as exc:
        raise _type_error(where, params, hints, exc) from exc
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": generated.get("properties", {}),
    }
    if generated.get("required"):
        parameters["required"] = generated["required"]
    parameters["additionalProperties"] = False
    if "$defs" in generated:  # refs are "#/$defs/...", so they stay at the top
        parameters["$defs"] = generated["$defs"]
    return model, tuple(names), parameters


def _type_hints(fn: Callable[..., Any], where: str, names: list[str]) -> dict[str, Any]:
    """The resolved annotations of the named parameters. Each is resolved on
    its own, so a return annotation (or another parameter) that cannot be
    resolved does not matter, and an error names its parameter."""
    base = _without_partials(fn)
    if not (inspect.isfunction(base) or inspect.ismethod(base)):
        # A class is described by its __init__, a callable object by its __call__.
        base = typing.cast(Any, base).__init__ if isinstance(base, type) else type(base).__call__
    raw: dict[str, Any] = getattr(base, "__annotations__", None) or {}
    globalns = getattr(inspect.unwrap(base), "__globals__", {})
    hints: dict[str, Any] = {}
    for name in names:
        if name not in raw:
            continue
        holder = types.SimpleNamespace(__annotations__={name: raw[name]})
        try:
            hints.update(typing.get_type_hints(holder, globalns, include_extras=True))
        except Exception as exc:
            raise WorkflowDefinitionError(
                f"tool function {where}: cannot resolve the annotation of parameter {name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return hints


def _described(annotation: Any) -> tuple[Any, str | None]:
    """``Annotated[T, "text", ...]`` without its strings (which pydantic
    would ignore), and the text they hold."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return annotation, None
    base, *metadata = typing.get_args(annotation)
    texts = [m for m in metadata if isinstance(m, str)]
    if not texts:
        return annotation, None
    rest = [m for m in metadata if not isinstance(m, str)]
    stripped = typing.Annotated[(base, *rest)] if rest else base
    return stripped, " ".join(t.strip() for t in texts)


def _has_field_description(annotation: Any) -> bool:
    if typing.get_origin(annotation) is not typing.Annotated:
        return False
    return any(
        isinstance(m, FieldInfo) and m.description is not None
        for m in typing.get_args(annotation)[1:]
    )


def _type_error(
    where: str, params: list[inspect.Parameter], hints: dict[str, Any], exc: Exception
) -> WorkflowDefinitionError:
    """Name the parameter whose type pydantic cannot handle, if one alone is."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for param in params:
        try:
            pydantic.TypeAdapter(_described(hints[param.name])[0]).json_schema()
        except Exception:
            return WorkflowDefinitionError(
                f"tool function {where}: parameter {param.name!r} has a type that cannot be "
                f"validated or described in JSON schema: {reason}"
            )
    return WorkflowDefinitionError(f"tool function {where}: cannot build its schema: {reason}")


def _problems(
    exc: pydantic.ValidationError, text: str, fields: tuple[tuple[str, str], ...]
) -> list[str]:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if not loc:  # the text as a whole
            if error["type"] == "json_invalid":
                reason = error.get("ctx", {}).get("error", error["msg"])
                problems.append(f"not valid JSON ({reason})")
            else:
                problems.append(f"expected a JSON object, got {_json_kind(text)}")
            continue
        where = str(loc[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
        if error["type"] == "extra_forbidden" and len(loc) == 1:
            known = ", ".join(param for _, param in fields)
            takes = f"the arguments are: {known}" if known else "this tool takes no arguments"
            problems.append(f"{where}: unknown argument; {takes}")
        else:
            message = error["msg"]
            problems.append(f"{where}: {message[:1].lower()}{message[1:]}")
    return problems


def _json_kind(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        return "something else"
    kinds: list[tuple[type, str]] = [
        (list, "an array"),
        (str, "a string"),
        (bool, "a boolean"),
        (int, "a number"),
        (float, "a number"),
    ]
    return next((kind for tp, kind in kinds if isinstance(value, tp)), "null")


# -- results and helpers ------------------------------------------------------


def _as_text(result: Any) -> str:
    if result is None:
        return ""
    if isinstance(result, str):
        return str.__str__(result)  # a plain str, even from a str subclass or enum
    faceless: list[Any] = []

    def fallback(value: Any) -> str:
        cls: Any = type(value)
        if cls.__repr__ is object.__repr__ and cls.__str__ is object.__str__:
            faceless.append(value)  # its text would be "<X object at 0x...>"
        return str(value)

    try:
        text = json_text(result, fallback)
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError):
        text = str(result)  # JSON cannot express it (e.g. a cycle)
    if faceless:
        raise TypeError(
            f"returned {a_type(type(faceless[0]))} that has no JSON form and no text of its "
            "own (the model would read '<... object at 0x...>'): return a str, numbers, "
            "lists, dicts, a dataclass or a pydantic model, or give the class a __str__"
        )
    return text


def json_text(value: Any, fallback: Callable[[Any], Any] | None = None) -> str:
    """``value`` as the JSON text a model reads (a tool's result, a
    reviewer's edited arguments): strict JSON, so a non-finite float is the
    string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (as pydantic writes
    them in its ``"strings"`` mode), and half a character in a string or a
    key (a lone surrogate, which UTF-8 has no form for) is U+FFFD. Raises
    what pydantic raises for a value JSON cannot express (a cycle)."""
    try:
        return pydantic_core.to_json(value, fallback=fallback, inf_nan_mode="strings").decode()
    except pydantic_core.PydanticSerializationError as exc:
        if "surrogates not allowed" not in str(exc):
            raise
    # (rare: the strings mended first, in the containers pydantic walks)
    mended_value = _mended_strings(value, 0)
    return pydantic_core.to_json(mended_value, fallback=fallback, inf_nan_mode="strings").decode()


def _mended_strings(value: Any, depth: int) -> Any:
    """``value`` with every text in it (dict keys too) :func:`mended`;
    containers become lists and dicts, models and dataclasses their fields.
    Below 200 levels it is left as is (a cycle: JSON cannot express it)."""
    if depth > 200:
        return value
    deeper = depth + 1
    if isinstance(value, str):
        return mended(str.__str__(value))
    if isinstance(value, Mapping):
        return {_mended_strings(k, deeper): _mended_strings(v, deeper) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mended_strings(v, deeper) for v in value]
    if isinstance(value, pydantic.BaseModel):
        return _mended_strings(value.model_dump(mode="python"), deeper)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name: _mended_strings(getattr(value, f.name), deeper) for f in fields}
    return value


def _star(param: inspect.Parameter) -> str:
    return ("*" if param.kind is param.VAR_POSITIONAL else "**") + param.name


def _is_async(fn: Callable[..., Any]) -> bool:
    base = _without_partials(fn)
    if inspect.isroutine(base) or isinstance(base, type):
        return inspect.iscoroutinefunction(fn)  # follows partials
    return inspect.iscoroutinefunction(type(base).__call__)  # an object with async __call__


def _without_partials(fn: Any) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _describe(fn: Any) -> str:
    base = _without_partials(fn)
    return repr(getattr(base, "__qualname__", None) or getattr(base, "__name__", None) or base)


# -- docstrings ---------------------------------------------------------------

# Section headers that end the description. Google style ends them with a
# colon; numpy style underlines them with dashes.
_SECTIONS = re.compile(
    r"(args|arguments|parameters|params|keyword args|keyword arguments|other parameters"
    r"|returns?|yields?|raises|examples?)",
    re.IGNORECASE,
)
_PARAM_SECTIONS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
_GOOGLE_ENTRY = re.compile(r"\**(\w+(?:\s*,\s*\**\w+)*)\s*(?:\([^)]*\))?\s*:(.*)")
_NUMPY_ENTRY = re.compile(r"(\w+(?:\s*,\s*\w+)*)\s*(?::.*)?")
_UNDERLINE = re.compile(r"\s*-{3,}\s*")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and the parameter
    descriptions of a Google- or numpy-style docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary_end = len(lines)
    described: dict[str, str] = {}
    i = 0
    while i < len(lines):
        header = lines[i].strip()
        numpy = i + 1 < len(lines) and bool(_UNDERLINE.fullmatch(lines[i + 1]))
        google = header.endswith(":") and bool(_SECTIONS.fullmatch(header[:-1].strip()))
        if not (google or (numpy and _SECTIONS.fullmatch(header))):
            i += 1
            continue
        summary_end = min(summary_end, i)
        title = header.rstrip(":").strip().lower()
        if numpy:
            end = next(
                (j for j in range(i + 2, len(lines) - 1) if _UNDERLINE.fullmatch(lines[j + 1])),
                len(lines),
            )
            body, entry = lines[i + 2 : end], _NUMPY_ENTRY
        else:
            indent = _indent(lines[i])
            end = next(
                (
                    j
                    for j in range(i + 1, len(lines))
                    if lines[j].strip() and _indent(lines[j]) <= indent
                ),
                len(lines),
            )
            body, entry = lines[i + 1 : end], _GOOGLE_ENTRY
        if title in _PARAM_SECTIONS:
            described.update(_entries(body, entry))
        i = end
    return "\n".join(lines[:summary_end]).strip(), described


def _entries(body: list[str], entry: re.Pattern[str]) -> dict[str, str]:
    """Parameter descriptions: an entry starts at the section's outer
    indentation; deeper lines continue it and are joined with spaces."""
    texts = [line for line in body if line.strip()]
    if not texts:
        return {}
    outer = min(_indent(line) for line in texts)
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in texts:
        match = entry.fullmatch(line.strip()) if _indent(line) == outer else None
        if match is None:
            current.append(line.strip())
            continue
        current = [match.group(2).strip()] if entry is _GOOGLE_ENTRY else []
        for name in match.group(1).split(","):
            found[name.strip().lstrip("*")] = current
    return {name: " ".join(p for p in parts if p) for name, parts in found.items()}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
