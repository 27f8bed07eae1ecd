"""Executors: ``Executor`` subclasses with ``@handler`` methods, and
``@executor`` for plain functions.

Dispatch picks the most specific handler for a message's type (exact class,
then nearest base in the MRO, then unions, then ``Any``), never the first by
name; the choice is cached per message class. A sync handler runs in a worker
thread so it never blocks the event loop.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from ._core import MessageTypeError, RetryPolicy, WorkflowContext, type_name
from ._exceptions import WorkflowDefinitionError
from ._handlers import HandlerOptions, HandlerSpec, TypeArg, build_spec, mark, marked, union_of

__all__ = ["Executor", "FunctionExecutor", "executor", "handler"]

F = TypeVar("F", bound=Callable[..., Any])
_Call = Callable[[Any, WorkflowContext[Any, Any]], Any]


@overload
def handler(func: F, /) -> F: ...
@overload
def handler(
    *, input: TypeArg = None, output: TypeArg = None, workflow_output: TypeArg = None
) -> Callable[[F], F]: ...
def handler(
    func: F | None = None,
    /,
    *,
    input: TypeArg = None,
    output: TypeArg = None,
    workflow_output: TypeArg = None,
) -> F | Callable[[F], F]:
    """Mark an ``Executor`` method as a message handler.

    ``input``/``output``/``workflow_output`` (a type or a list of types)
    override what the annotations declare.
    """
    options = HandlerOptions(input, output, workflow_output)

    def decorate(f: F) -> F:
        if not callable(f):
            raise WorkflowDefinitionError(f"@handler applied to non-callable {f!r}")
        mark(f, options)
        return f

    return decorate(func) if func is not None else decorate


class Executor:
    """A node of a workflow. Subclass it and define ``@handler`` methods::

        class Upper(Executor):
            @handler
            async def on_text(self, text: str, ctx: WorkflowContext[str]) -> None:
                await ctx.send_message(text.upper())

    Instance attributes persist across runs of the same workflow; one run at a
    time uses an instance (see ``Workflow.run``).
    """

    id: str
    retry: RetryPolicy | None
    timeout: float | None

    def __init__(
        self,
        id: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        if id is None:
            id = type(self).__name__
        if not isinstance(id, str) or not id:
            raise WorkflowDefinitionError(
                f"executor id must be a non-empty str, got {id!r} ({type(self).__name__})"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise WorkflowDefinitionError(f"executor {id!r}: retry must be a RetryPolicy")
        if timeout is not None and not timeout > 0:
            raise WorkflowDefinitionError(
                f"executor {id!r}: timeout must be a positive number of seconds"
            )
        self.id = id
        self.retry = retry
        self.timeout = timeout
        specs = self._handler_specs()
        if not specs:
            raise WorkflowDefinitionError(
                f"executor {id!r} ({type(self).__name__}) defines no @handler methods"
            )
        self._specs = specs
        self._calls: dict[HandlerSpec, _Call] = {s: self._bind(s) for s in specs}
        self._dispatch: dict[type, HandlerSpec | tuple[HandlerSpec, ...]] = {}

    # -- definition ----------------------------------------------------------

    @classmethod
    def _handler_specs(cls) -> tuple[HandlerSpec, ...]:
        cached = cls.__dict__.get("_stepgraph_specs")
        if cached is not None:
            return typing.cast(tuple[HandlerSpec, ...], cached)
        found: dict[str, tuple[Callable[..., Any], HandlerOptions]] = {}
        for klass in reversed(cls.__mro__):
            for name, attr in vars(klass).items():
                options = marked(attr)
                if options is not None:
                    found[name] = (attr, options)
                elif name in found:
                    del found[name]  # overridden by a plain method
        specs = tuple(
            build_spec(func, options, owner=cls.__name__, is_method=True, order=i, name=name)
            for i, (name, (func, options)) in enumerate(found.items())
        )
        _reject_duplicates(specs, cls.__name__)
        cls._stepgraph_specs = specs  # type: ignore[attr-defined]
        return specs

    def _bind(self, spec: HandlerSpec) -> _Call:
        func = spec.func.__get__(self)
        if spec.takes_ctx:
            return typing.cast(_Call, func)
        return lambda message, _ctx: func(message)

    # -- introspection -----------------------------------------------------

    @property
    def input_types(self) -> list[Any]:
        """The message types this executor handles, in definition order."""
        return [s.input.annotation for s in self._specs]

    @property
    def output_types(self) -> Any:
        """The union of the types its handlers may send."""
        return union_of([s.contract.outputs.annotation for s in self._specs])

    @property
    def workflow_output_types(self) -> Any:
        """The union of the types its handlers may yield as workflow outputs."""
        return union_of([s.contract.workflow_outputs.annotation for s in self._specs])

    def handler_for(self, message: Any) -> HandlerSpec | None:
        """The handler that would process ``message``, or ``None``."""
        cls = type(message)
        entry = self._dispatch.get(cls)
        if entry is None:
            entry = self._dispatch[cls] = self._candidates(cls)
        if type(entry) is HandlerSpec:
            return entry
        for spec in entry:  # type: ignore[union-attr]
            if spec.input.matches(message):
                return spec
        return None

    def accepts(self, message: Any) -> bool:
        return self.handler_for(message) is not None

    def _candidates(self, cls: type) -> HandlerSpec | tuple[HandlerSpec, ...]:
        ranked = sorted(
            ((rank, spec.order), spec)
            for spec in self._specs
            if (rank := spec.input.rank(cls)) is not None
        )
        specs = tuple(spec for _, spec in ranked)
        if specs and not specs[0].input.structural:
            return specs[0]
        return specs

    # -- running -------------------------------------------------------------

    async def _invoke(self, message: Any, ctx: WorkflowContext[Any, Any]) -> None:
        spec = self.handler_for(message)
        if spec is None:
            raise MessageTypeError(
                f"executor {self.id!r} has no handler for {type_name(type(message))} "
                f"(it handles {', '.join(type_name(t) for t in self.input_types)})",
                executor_id=self.id,
            )
        ctx._contract = spec.contract
        call = self._calls[spec]
        if spec.is_async:
            result = await call(message, ctx)
        else:
            result = await ctx._in_thread(call, message, ctx)
        if result is not None:
            ctx.send_message(result)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r}>"


def _reject_duplicates(specs: tuple[HandlerSpec, ...], owner: str) -> None:
    seen: dict[Any, str] = {}
    for spec in specs:
        key = spec.input.annotation
        if key in seen:
            raise WorkflowDefinitionError(
                f"executor {owner}: handlers {seen[key]!r} and {spec.name!r} both handle "
                f"{type_name(key)}; keep one handler per input type"
            )
        seen[key] = spec.name


class FunctionExecutor(Executor):
    """An executor made from one function by ``@executor``."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        id: str | None = None,
        input: TypeArg = None,
        output: TypeArg = None,
        workflow_output: TypeArg = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        if not callable(func):
            raise WorkflowDefinitionError(f"@executor applied to non-callable {func!r}")
        name = id if id is not None else getattr(func, "__name__", None)
        self.func = func
        self._spec = build_spec(
            func,
            HandlerOptions(input, output, workflow_output),
            owner=f"{name!r} ({getattr(func, '__qualname__', func)!r})",
            is_method=False,
            order=0,
        )
        super().__init__(name, retry=retry, timeout=timeout)

    def _handler_specs(self) -> tuple[HandlerSpec, ...]:  # type: ignore[override]
        return (self._spec,)

    def _bind(self, spec: HandlerSpec) -> _Call:
        func = spec.func
        if spec.takes_ctx:
            return typing.cast(_Call, func)
        return lambda message, _ctx: func(message)

    def __repr__(self) -> str:
        return f"<FunctionExecutor id={self.id!r} func={getattr(self.func, '__qualname__', '?')}>"


@overload
def executor(func: Callable[..., Awaitable[Any]] | Callable[..., Any], /) -> FunctionExecutor: ...
@overload
def executor(
    *,
    id: str | None = None,
    input: TypeArg = None,
    output: TypeArg = None,
    workflow_output: TypeArg = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], FunctionExecutor]: ...
def executor(
    func: Callable[..., Any] | None = None,
    /,
    *,
    id: str | None = None,
    input: TypeArg = None,
    output: TypeArg = None,
    workflow_output: TypeArg = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> FunctionExecutor | Callable[[Callable[..., Any]], FunctionExecutor]:
    """Turn a function (async, or sync run in a worker thread) into an executor.

    The function takes ``(message)`` or ``(message, ctx)``; a non-``None``
    return value is sent as its message. ``id`` defaults to the function name.
    """

    def decorate(f: Callable[..., Any]) -> FunctionExecutor:
        return FunctionExecutor(
            f,
            id=id,
            input=input,
            output=output,
            workflow_output=workflow_output,
            retry=retry,
            timeout=timeout,
        )

    return decorate(func) if func is not None else decorate
