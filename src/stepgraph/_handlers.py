"""Handler introspection: from a function and its annotations to a HandlerSpec.

Rules (design §2):

- The message parameter's annotation (or ``@handler(input=...)``) is the input
  type. A second parameter, if present, receives the ``WorkflowContext``.
- Sent types: ``WorkflowContext[Out, ...]`` plus the return annotation (a
  non-``None`` return value is sent). Yielded types: ``WorkflowContext[_, WOut]``.
  A bare ``WorkflowContext`` declares neither (``Never``); an unannotated
  context or return leaves them undeclared (``Any``). ``output=`` and
  ``workflow_output=`` override the annotations.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from ._core import ANY_SPEC, NEVER_SPEC, Contract, TypeSpec, TypeSpecError, WorkflowContext
from ._exceptions import WorkflowDefinitionError

__all__ = ["HandlerOptions", "HandlerSpec", "TypeArg", "build_spec", "union_of"]

# A type, or several types given as a list/tuple (meaning their union).
TypeArg = Any

_HANDLER_MARK = "__stepgraph_handler__"
_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """What ``@handler(...)`` was given explicitly."""

    input: TypeArg = None
    output: TypeArg = None
    workflow_output: TypeArg = None


@dataclass(frozen=True, slots=True, eq=False)
class HandlerSpec:
    """One handler, resolved."""

    name: str
    func: Callable[..., Any]
    input: TypeSpec
    contract: Contract
    is_async: bool
    takes_ctx: bool
    order: int


def union_of(types: Sequence[Any]) -> Any:
    """``Union[...]`` of ``types`` (``Never`` when empty, ``Any`` absorbing)."""
    flat = [t for t in types if t is not typing.Never]
    if not flat:
        return typing.Never
    if any(t is Any or t is object for t in flat):
        return Any
    unique = list(dict.fromkeys(flat))
    return unique[0] if len(unique) == 1 else Union[tuple(unique)]  # noqa: UP007


def _type_arg(value: TypeArg) -> Any:
    if isinstance(value, (list, tuple)):
        return union_of(list(value))
    return value


def mark(func: Callable[..., Any], options: HandlerOptions) -> None:
    setattr(func, _HANDLER_MARK, options)


def marked(obj: object) -> HandlerOptions | None:
    options = getattr(obj, _HANDLER_MARK, None)
    return options if isinstance(options, HandlerOptions) else None


def build_spec(
    func: Callable[..., Any],
    options: HandlerOptions,
    *,
    owner: str,
    is_method: bool,
    order: int,
    name: str | None = None,
) -> HandlerSpec:
    """Resolve one handler; ``owner`` (and ``name``, the attribute it is
    defined under) name it in errors."""
    if name is None:
        name = getattr(func, "__name__", repr(func))
    where = f"{owner}.{name}" if is_method else owner

    def fail(problem: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(f"handler {where}: {problem}")

    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise fail("handlers may not be generators; use ctx.send_message/yield_output")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise fail(f"cannot read its signature ({exc})") from exc
    params = list(signature.parameters.values())
    if is_method:
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise fail("a handler method must take (self, message[, ctx])")
        params = params[1:]
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    others = [p for p in params if p not in positional]
    if others or not 1 <= len(positional) <= 2:
        raise fail(
            "a handler must take exactly (message) or (message, ctx) "
            f"{'after self ' if is_method else ''}— got ({', '.join(str(p) for p in params)})"
        )
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise fail(f"cannot resolve its annotations: {type(exc).__name__}: {exc}") from exc

    message_param = positional[0]
    input_type = _type_arg(options.input) if options.input is not None else None
    if input_type is None:
        if message_param.name not in hints:
            raise fail(
                f"parameter {message_param.name!r} has no type annotation; annotate it or "
                "pass @handler(input=...)"
            )
        input_type = hints[message_param.name]

    takes_ctx = len(positional) == 2
    ctx_out: Any = Any
    ctx_wout: Any = Any
    if takes_ctx:
        ctx_out, ctx_wout = _context_types(hints.get(positional[1].name, _EMPTY), fail)
    else:
        ctx_out = ctx_wout = typing.Never
    returned = hints.get("return", _EMPTY)
    return_out: Any = Any if returned is _EMPTY else returned
    if return_out is None or return_out is type(None) or return_out is typing.NoReturn:
        return_out = typing.Never
    if takes_ctx and returned is _EMPTY:
        return_out = typing.Never  # handlers that take ctx send through it
    outputs = (
        _type_arg(options.output) if options.output is not None else union_of([ctx_out, return_out])
    )
    wouts = _type_arg(options.workflow_output) if options.workflow_output is not None else ctx_wout
    try:
        input_spec = TypeSpec(input_type)
        contract = Contract(where, _spec(outputs), _spec(wouts))
    except TypeSpecError as exc:
        raise fail(str(exc)) from exc
    if input_spec.is_never:
        raise fail("its input type is Never; no message could ever reach it")
    return HandlerSpec(
        name=name,
        func=func,
        input=input_spec,
        contract=contract,
        is_async=inspect.iscoroutinefunction(func),
        takes_ctx=takes_ctx,
        order=order,
    )


def _spec(tp: Any) -> TypeSpec:
    if tp is Any:
        return ANY_SPEC
    if tp is typing.Never:
        return NEVER_SPEC
    return TypeSpec(tp)


def _context_types(
    annotation: Any, fail: Callable[[str], WorkflowDefinitionError]
) -> tuple[Any, Any]:
    if annotation is _EMPTY or annotation is Any:
        return Any, Any
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is WorkflowContext:
        return typing.Never, typing.Never
    if typing.get_origin(annotation) is WorkflowContext:
        args = typing.get_args(annotation)
        out = args[0] if args else typing.Never
        wout = args[1] if len(args) > 1 else typing.Never
        return out, wout
    raise fail(f"its context parameter must be annotated WorkflowContext[...], not {annotation!r}")
