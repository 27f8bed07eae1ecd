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

import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from ._core import Contract, TypeSpec, TypeSpecError, WorkflowContext, spec_of
from ._exceptions import WorkflowDefinitionError

__all__ = [
    "HandlerOptions",
    "HandlerSpec",
    "ResponseOptions",
    "ResponseSpec",
    "TypeArg",
    "build_response_spec",
    "build_spec",
    "is_async",
    "union_of",
]

# A type, or several types given as a list/tuple (meaning their union).
TypeArg = Any

_HANDLER_MARK = "__stepgraph_handler__"
_RESPONSE_MARK = "__stepgraph_response_handler__"
_EMPTY = inspect.Parameter.empty


class _Unresolved:
    """An annotation that could not be resolved (a string naming a type the
    function's module does not have): an error only if it is needed, that is
    not overridden by ``@handler(input=..., output=...)`` and the like."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def fail(self, where: str, needed: str, instead: str) -> WorkflowDefinitionError:
        exc = self.error
        return WorkflowDefinitionError(
            f"handler {where}: cannot resolve its annotations: {type(exc).__name__}: {exc} "
            f"(the annotation of {needed}); string annotations (from __future__ import "
            "annotations) are looked up in the function's module, where a type defined "
            f"inside a function is not: define it at module level, or pass {instead}"
        )


def _each_hint(annotated: Any) -> dict[str, Any]:
    """``get_type_hints`` one annotation at a time: those that cannot be
    resolved become ``_Unresolved``."""
    globalns = inspect.unwrap(annotated) if callable(annotated) else annotated
    namespace = getattr(globalns, "__globals__", {})
    hints: dict[str, Any] = {}
    for name, value in dict(getattr(annotated, "__annotations__", None) or {}).items():
        holder = types.SimpleNamespace(__annotations__={name: value}, __globals__=namespace)
        try:
            hints[name] = typing.get_type_hints(holder, include_extras=True)[name]
        except Exception as exc:
            hints[name] = _Unresolved(exc)
    return hints


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


@dataclass(frozen=True, slots=True)
class ResponseOptions:
    """What ``@response_handler(...)`` was given explicitly."""

    request: TypeArg = None
    response: TypeArg = None
    output: TypeArg = None
    workflow_output: TypeArg = None


@dataclass(frozen=True, slots=True, eq=False)
class ResponseSpec:
    """One response handler, resolved: it takes (original request, response)."""

    name: str
    func: Callable[..., Any]
    request: TypeSpec
    response: TypeSpec
    contract: Contract
    is_async: bool
    takes_ctx: bool
    order: int


def mark(func: Callable[..., Any], options: HandlerOptions | ResponseOptions) -> None:
    attr = _HANDLER_MARK if isinstance(options, HandlerOptions) else _RESPONSE_MARK
    setattr(func, attr, options)


def marked(obj: object) -> HandlerOptions | ResponseOptions | None:
    for attr in (_HANDLER_MARK, _RESPONSE_MARK):
        options = getattr(obj, attr, None)
        if isinstance(options, (HandlerOptions, ResponseOptions)):
            return options
    return None


def _parse(
    func: Callable[..., Any], where: str, is_method: bool, arity: tuple[int, int], shape: str
) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """The positional parameters (after self) and resolved annotations."""

    def fail(problem: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(f"handler {where}: {problem}")

    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise fail("handlers may not be generators; use ctx.send_message/yield_output")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise fail(f"cannot read its signature ({exc})") from exc
    params = list(signature.parameters.values())
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if is_method:
        if not params or params[0].kind not in plain:
            raise fail(f"a handler method must take (self, {shape})")
        params = params[1:]
    positional = [p for p in params if p.kind in plain]
    # A keyword-only parameter with a default is never passed (the keyword a
    # functools.partial binds becomes one): only the others are refused.
    others = [
        p
        for p in params
        if p not in positional and not (p.kind is p.KEYWORD_ONLY and p.default is not _EMPTY)
    ]
    if others or not arity[0] <= len(positional) <= arity[1]:
        raise fail(
            f"a handler must take exactly ({shape}) "
            f"{'after self ' if is_method else ''}— got ({', '.join(str(p) for p in params)})"
        )
    annotated: Any = func
    while isinstance(annotated, functools.partial):
        annotated = annotated.func  # its parameters keep the names the function gave them
    if not (
        inspect.isfunction(annotated) or inspect.ismethod(annotated) or isinstance(annotated, type)
    ):
        # A callable object: its __call__ carries the annotations.
        annotated = type(annotated).__call__
    try:
        hints = typing.get_type_hints(annotated, include_extras=True)
    except NameError:
        hints = _each_hint(annotated)  # the names explicit types override need not resolve
    except Exception as exc:
        raise fail(f"cannot resolve its annotations: {type(exc).__name__}: {exc}") from exc
    return positional, hints


def _annotation(
    explicit: TypeArg, param: inspect.Parameter, hints: dict[str, Any], where: str, keyword: str
) -> Any:
    if explicit is not None:
        return _type_arg(explicit)
    if isinstance(hints.get(param.name), _Unresolved):
        raise hints[param.name].fail(where, repr(param.name), f"{keyword}=...)")
    if param.name not in hints:
        raise WorkflowDefinitionError(
            f"handler {where}: parameter {param.name!r} has no type annotation; annotate it "
            f"or pass {keyword}=..."
        )
    return hints[param.name]


def _outputs(
    ctx_param: inspect.Parameter | None,
    hints: dict[str, Any],
    output: TypeArg,
    workflow_output: TypeArg,
    where: str,
) -> tuple[Any, Any]:
    """Declared (sent, yielded) types from the context annotation, the return
    annotation and explicit overrides."""

    def fail(problem: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(f"handler {where}: {problem}")

    if ctx_param is not None and isinstance(hints.get(ctx_param.name), _Unresolved):
        if output is None or workflow_output is None:
            raise hints[ctx_param.name].fail(
                where, repr(ctx_param.name), "output=... and workflow_output=..."
            )
        hints = {**hints, ctx_param.name: _EMPTY}  # both overridden: not needed
    returned = hints.get("return", _EMPTY)
    if isinstance(returned, _Unresolved):
        if output is None:
            raise returned.fail(where, "its return value", "output=...")
        returned = _EMPTY
    if ctx_param is not None:
        ctx_out, ctx_wout = _context_types(hints.get(ctx_param.name, _EMPTY), fail)
    else:
        ctx_out = ctx_wout = typing.Never
    return_out: Any = Any if returned is _EMPTY else returned
    if return_out is None or return_out is type(None) or return_out is typing.NoReturn:
        return_out = typing.Never
    if ctx_param is not None and returned is _EMPTY:
        return_out = typing.Never  # handlers that take ctx send through it
    outputs = _type_arg(output) if output is not None else union_of([ctx_out, return_out])
    wouts = _type_arg(workflow_output) if workflow_output is not None else ctx_wout
    return outputs, wouts


def _compiled(tp: Any, where: str) -> TypeSpec:
    try:
        spec = TypeSpec(tp)
    except TypeSpecError as exc:
        raise WorkflowDefinitionError(f"handler {where}: {exc}") from exc
    if spec.is_never:
        raise WorkflowDefinitionError(
            f"handler {where}: its input type is Never; nothing could ever reach it"
        )
    return spec


def _contract(where: str, label: str, outputs: Any, wouts: Any) -> Contract:
    try:
        return Contract(label, spec_of(outputs), spec_of(wouts))
    except TypeSpecError as exc:
        raise WorkflowDefinitionError(f"handler {where}: {exc}") from exc


def _where(func: Callable[..., Any], owner: str, is_method: bool, name: str | None) -> str:
    if name is None:
        name = getattr(func, "__name__", repr(func))
    return f"{owner}.{name}" if is_method else owner


def _label(func: Callable[..., Any], where: str, is_method: bool) -> str:
    """How a running handler is named beside its executor id: ``Cls.method``,
    or a function's qualified name."""
    return where if is_method else str(getattr(func, "__qualname__", where))


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
    where = _where(func, owner, is_method, name)
    positional, hints = _parse(func, where, is_method, (1, 2), "message[, ctx]")
    input_type = _annotation(options.input, positional[0], hints, where, "@handler(input")
    ctx_param = positional[1] if len(positional) == 2 else None
    outputs, wouts = _outputs(ctx_param, hints, options.output, options.workflow_output, where)
    return HandlerSpec(
        name=name if name is not None else str(getattr(func, "__name__", func)),
        func=func,
        input=_compiled(input_type, where),
        contract=_contract(where, _label(func, where, is_method), outputs, wouts),
        is_async=is_async(func),
        takes_ctx=ctx_param is not None,
        order=order,
    )


def is_async(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` returns a coroutine: an ``async def``
    function (partials of one included) or an object whose ``__call__`` is."""
    if inspect.iscoroutinefunction(func):
        return True
    if inspect.isfunction(func) or inspect.ismethod(func) or isinstance(func, type):
        return False
    for klass in type(func).__mro__:  # the __call__ that a call would use
        if "__call__" in vars(klass):
            return inspect.iscoroutinefunction(vars(klass)["__call__"])
    return False


def build_response_spec(
    func: Callable[..., Any], options: ResponseOptions, *, owner: str, order: int, name: str
) -> ResponseSpec:
    """Resolve one ``@response_handler`` method: (self, request, response[, ctx])."""
    where = _where(func, owner, True, name)
    positional, hints = _parse(func, where, True, (2, 3), "original_request, response[, ctx]")
    request = _annotation(options.request, positional[0], hints, where, "@response_handler(request")
    response = _annotation(
        options.response, positional[1], hints, where, "@response_handler(response"
    )
    ctx_param = positional[2] if len(positional) == 3 else None
    outputs, wouts = _outputs(ctx_param, hints, options.output, options.workflow_output, where)
    return ResponseSpec(
        name=name,
        func=func,
        request=_compiled(request, where),
        response=_compiled(response, where),
        contract=_contract(where, where, outputs, wouts),
        is_async=is_async(func),
        takes_ctx=ctx_param is not None,
        order=order,
    )


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
