"""Executors: ``Executor`` subclasses with ``@handler`` methods, and
``@executor`` for plain functions.

Dispatch picks the most specific handler for a message's type (exact class,
then nearest base in the MRO, then unions, then ``Any``), never the first by
name; the choice is cached per message class. A sync handler runs in a worker
thread so it never blocks the event loop.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar, overload

from ._core import (
    Contract,
    MessageTypeError,
    PendingRequest,
    Placement,
    RequestError,
    Response,
    RetryPolicy,
    WorkflowContext,
    a_value_type,
    lone_surrogate_at,
    may_overlap,
    quoted,
    type_name,
)
from ._exceptions import WorkflowDefinitionError, WorkflowRunError
from ._handlers import (
    HandlerOptions,
    HandlerSpec,
    ResponseOptions,
    ResponseSpec,
    TypeArg,
    build_response_spec,
    build_spec,
    mark,
    marked,
    union_of,
)

__all__ = ["Executor", "FunctionExecutor", "executor", "handler", "response_handler"]

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
        _check_decorated(f, "@handler")
        mark(f, options)
        return f

    return decorate(func) if func is not None else decorate


def _check_decorated(f: object, decorator: str) -> None:
    if isinstance(f, classmethod):
        # (not callable: it would be refused as "non-callable", naming no method)
        raise WorkflowDefinitionError(
            f"{decorator} applied to classmethod {f.__func__.__qualname__!r}; handlers are "
            "instance methods, (self, message[, ctx]) - drop @classmethod, or make it a "
            "function executor with @executor"
        )
    if not callable(f):
        raise WorkflowDefinitionError(f"{decorator} applied to non-callable {f!r}")


@overload
def response_handler(func: F, /) -> F: ...
@overload
def response_handler(
    *,
    request: TypeArg = None,
    response: TypeArg = None,
    output: TypeArg = None,
    workflow_output: TypeArg = None,
) -> Callable[[F], F]: ...
def response_handler(
    func: F | None = None,
    /,
    *,
    request: TypeArg = None,
    response: TypeArg = None,
    output: TypeArg = None,
    workflow_output: TypeArg = None,
) -> F | Callable[[F], F]:
    """Mark a method ``(self, original_request, response[, ctx])`` as the
    receiver of answers to requests opened with ``ctx.request_info``. The most
    specific (request type, response type) match is chosen."""
    options = ResponseOptions(request, response, output, workflow_output)

    def decorate(f: F) -> F:
        _check_decorated(f, "@response_handler")
        mark(f, options)
        return f

    return decorate(func) if func is not None else decorate


def check_id(id: object, what: str, where: str = "") -> None:
    """An executor's (or map's) id: a non-empty str without ``/``, which
    joins the ids of an event's path and of a sub-workflow's requests."""
    if not isinstance(id, str) or not id:
        raise WorkflowDefinitionError(f"{what} must be a non-empty str, got {id!r}{where}")
    if "/" in id:
        raise WorkflowDefinitionError(
            f"{what} {id!r}{where} holds '/', which joins the ids of an event's path and of a "
            "sub-workflow's requests; choose an id without it"
        )
    check_whole(id, what, where)


def check_whole(text: str, what: str, where: str = "", other: str = "id") -> None:
    """A name every checkpoint, event and log line carries (an id, a
    workflow's name): one holding half a character (a lone surrogate, which
    UTF-8 has no form for) is refused here, where it is given."""
    half = lone_surrogate_at(text)
    if half is not None:
        raise WorkflowDefinitionError(
            f"{what} {quoted(text)}{where} holds half a character (a lone surrogate, at index "
            f"{half}), which no checkpoint, event stream or log can carry; choose another {other}"
        )


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
    placement: Placement | None
    # True for executors that keep no state between calls (functions, maps):
    # runs may share them.
    stateless = False

    def __init__(
        self,
        id: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        placement: Placement | None = None,
    ) -> None:
        if id is None:
            id = type(self).__name__
        check_id(id, "executor id", f" ({type(self).__name__})")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise WorkflowDefinitionError(f"executor {id!r}: retry must be a RetryPolicy")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise WorkflowDefinitionError(
                f"executor {id!r}: timeout must be a positive number of seconds, got {timeout!r}"
            )
        self.id = id
        self.retry = retry
        self.timeout = timeout
        self.placement = placement
        specs = self._handler_specs()
        if not specs:
            raise WorkflowDefinitionError(
                f"executor {id!r} ({type(self).__name__}) defines no @handler methods"
            )
        self._specs = specs
        self._calls: dict[HandlerSpec, _Call] = {s: self._bind(s) for s in specs}
        self._dispatch: dict[type, HandlerSpec | tuple[HandlerSpec, ...]] = {}
        self._response_specs = self._response_handler_specs()
        self._response_dispatch: dict[tuple[type, type], tuple[ResponseSpec, ...]] = {}

    # -- definition ----------------------------------------------------------

    @classmethod
    def _marked_methods(
        cls,
    ) -> dict[str, tuple[Callable[..., Any], HandlerOptions | ResponseOptions]]:
        found: dict[str, tuple[Callable[..., Any], HandlerOptions | ResponseOptions]] = {}
        for klass in reversed(cls.__mro__):
            for name, attr in vars(klass).items():
                options = marked(attr)
                if isinstance(attr, (staticmethod, classmethod)) and (
                    options is not None or marked(attr.__func__) is not None
                ):
                    # (its first parameter would be taken for self: the
                    # message for the context, or the class for the message)
                    raise WorkflowDefinitionError(
                        f"handler {klass.__name__}.{name} is a {type(attr).__name__}; "
                        "handlers are instance methods, (self, message[, ctx]) - drop "
                        f"@{type(attr).__name__}, or make it a function executor with @executor"
                    )
                if isinstance(attr, property) and marked(attr.fget) is not None:
                    raise WorkflowDefinitionError(
                        f"handler {klass.__name__}.{name} is a property; handlers are plain "
                        "methods, (self, message[, ctx]) - drop @property"
                    )
                if options is not None:
                    found[name] = (attr, options)
                elif name in found:
                    del found[name]  # overridden by a plain method
        return found

    @classmethod
    def _handler_specs(cls) -> tuple[HandlerSpec, ...]:
        cached = cls.__dict__.get("_stepgraph_specs")
        if cached is not None:
            return typing.cast(tuple[HandlerSpec, ...], cached)
        specs = tuple(
            build_spec(func, options, owner=cls.__name__, is_method=True, order=i, name=name)
            for i, (name, (func, options)) in enumerate(cls._marked_methods().items())
            if isinstance(options, HandlerOptions)
        )
        _reject_duplicates([(s.input.annotation, s.name) for s in specs], cls.__name__)
        _reject_unchecked_arguments(specs, cls.__name__)
        cls._stepgraph_specs = specs  # type: ignore[attr-defined]
        return specs

    @classmethod
    def _response_handler_specs(cls) -> tuple[ResponseSpec, ...]:
        cached = cls.__dict__.get("_stepgraph_response_specs")
        if cached is not None:
            return typing.cast(tuple[ResponseSpec, ...], cached)
        specs = tuple(
            build_response_spec(func, options, owner=cls.__name__, order=i, name=name)
            for i, (name, (func, options)) in enumerate(cls._marked_methods().items())
            if isinstance(options, ResponseOptions)
        )
        _reject_duplicates(
            [((s.request.annotation, s.response.annotation), s.name) for s in specs],
            cls.__name__,
        )
        cls._stepgraph_response_specs = specs  # type: ignore[attr-defined]
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
        """The union of the types its handlers and response handlers may send."""
        return union_of([c.outputs.annotation for c in self._contracts()])

    @property
    def workflow_output_types(self) -> Any:
        """The union of the types its handlers and response handlers may yield
        as workflow outputs."""
        return union_of([c.workflow_outputs.annotation for c in self._contracts()])

    def _why_it_sends_nothing(self) -> tuple[str, str]:
        """Why ``output_types`` is ``Never``, and what to do: for an edge
        that leaves it."""
        return (
            "its handlers' WorkflowContext is Never or bare",
            "declare them, e.g. WorkflowContext[str]",
        )

    def _contracts(self) -> list[Contract]:
        return [s.contract for s in self._specs] + [r.contract for r in self._response_specs]

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
        cls = type(message)
        entry = self._dispatch.get(cls)
        if type(entry) is HandlerSpec:  # decided by the class alone (routing asks often)
            return True
        if cls is Response:
            return self.response_handler_for(message.request.request, message.value) is not None
        return self.handler_for(message) is not None

    @property
    def declared_types(self) -> list[Any]:
        """Every type its handlers name: what its checkpoints may contain."""
        found: list[Any] = []
        for spec in self._specs:
            found += [spec.input.annotation, spec.contract.outputs.annotation]
            found.append(spec.contract.workflow_outputs.annotation)
        for rspec in self._response_specs:
            found += [rspec.request.annotation, rspec.response.annotation]
            found += [rspec.contract.outputs.annotation, rspec.contract.workflow_outputs.annotation]
        return found

    @property
    def handles_responses(self) -> bool:
        return bool(self._response_specs)

    def responds(self, request: Any, response_type: Any) -> bool:
        """Whether a response handler takes ``request`` answered with a
        ``response_type``."""
        return any(
            spec.request.matches(request) and may_overlap(response_type, spec.response.annotation)
            for spec in self._response_specs
        )

    def _takes_response(self, request: PendingRequest, response: Any) -> bool:
        """Whether a response handler takes this answer to ``request`` (one
        of this executor's): a request's response type need only overlap a
        handler's (``int`` with ``bool``), so an answer of that type may
        still fit none; it is refused before it is recorded."""
        return self.response_handler_for(request.request, response) is not None

    def response_handler_for(self, request: Any, response: Any) -> ResponseSpec | None:
        """The most specific response handler for (request, response), or ``None``."""
        key = (type(request), type(response))
        ranked = self._response_dispatch.get(key)
        if ranked is None:
            scored = []
            for spec in self._response_specs:
                first = spec.request.rank(key[0])
                second = spec.response.rank(key[1])
                if first is not None and second is not None:
                    scored.append(((first, second, spec.order), spec))
            ranked = self._response_dispatch[key] = tuple(s for _, s in sorted(scored))
        for spec in ranked:
            if spec.request.matches(request) and spec.response.matches(response):
                return spec
        return None

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

    # -- distributed backends ------------------------------------------------

    _ENGINE_ATTRIBUTES = frozenset(
        {"_specs", "_calls", "_dispatch", "_response_specs", "_response_dispatch", "func", "_spec"}
    )

    def _user_state(self) -> dict[str, Any]:
        """The instance attributes a remote copy may have changed (engine
        tables excluded): what a distributed backend brings back after a run."""
        return {k: v for k, v in vars(self).items() if k not in self._ENGINE_ATTRIBUTES}

    def _set_user_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key not in self._ENGINE_ATTRIBUTES:
                setattr(self, key, value)

    def __getstate__(self) -> object:
        """A copy (a Ray actor's) starts with empty dispatch caches: they hold
        every message class this object was asked about — a lock's, a class
        the workers cannot import — which would stop the copy from loading."""
        state = super().__getstate__()
        fresh: dict[str, Any] = {"_dispatch": {}, "_response_dispatch": {}}
        if isinstance(state, dict):
            return {**state, **fresh}
        if isinstance(state, tuple) and isinstance(state[0], dict):  # (with __slots__)
            return ({**state[0], **fresh}, *state[1:])
        return state

    # -- checkpoints -----------------------------------------------------------

    @property
    def takes_snapshots(self) -> bool:
        """Whether this executor's class overrides :meth:`snapshot`."""
        return type(self).snapshot is not Executor.snapshot

    def snapshot(self) -> Any:
        """Override (with :meth:`restore`) to store this executor's instance
        state in every checkpoint; the value must be checkpoint-encodable.
        Executors that do not override it are not asked."""
        raise NotImplementedError

    def snapshot_run(self) -> str | None:
        """Override when this executor's state belongs to one run — the run
        it was last called in, as an agent's conversation does: return that
        run's id (``None`` while it belongs to none). A shared instance's
        snapshot then goes into a run's checkpoints only when it belongs to
        that run or to one the run was forked from: another run's state is
        never stored with this one (a checkpoint without it restores
        nothing for this executor). The default, ``None``: the state is the
        executor's own, stored with every run."""
        return None

    def _snapshot_for(self, runs: tuple[str, ...] | None) -> Any:
        """The snapshot for a checkpoint of ``runs`` (a run, then the runs
        it was forked from; ``None``: for any) — the whole :meth:`snapshot`,
        unless the executor keeps the state of several runs apart."""
        return self.snapshot()

    def _forget_runs(self, run_ids: Collection[str]) -> None:
        """The workflow no longer keeps runs ``run_ids`` in memory (each
        ended, failed, or was let go past its limit): a shared instance
        drops what it kept for them — a sub-workflow, their waiting child
        runs. Most executors keep nothing per run."""

    def restore(self, snapshot: Any) -> None:
        """Override to take back what :meth:`snapshot` returned, when a run
        resumes from a checkpoint."""
        raise NotImplementedError(
            f"executor {self.id!r} ({type(self).__name__}) overrides snapshot() but not restore()"
        )

    # -- requests ------------------------------------------------------------

    def _withdraw(self, snapshot: Any, request_id: str) -> None:
        """``update_state(drop_requests=...)`` withdraws ``request_id``, one
        this executor opened: take it out of ``snapshot`` (its stored
        :meth:`snapshot`, changed in place) where that remembers it, or
        raise ``RequestError`` when it cannot be withdrawn. An executor
        whose snapshot keeps no requests has nothing to do."""

    def check_input(self, message: Any) -> None:
        """Override to refuse a run's input before the run starts, when this
        is its start executor — raise ``ValueError`` saying why; the caller
        of ``run()`` (or the CLI, or the server: a 422) gets a
        ``MessageTypeError`` naming the workflow and this executor, and no
        run starts. Called with an input one of its handlers takes."""

    def check_response(self, request: PendingRequest, response: Any) -> None:
        """Override to refuse an answer to one of this executor's requests
        before it is recorded — raise ``ValueError`` saying why; the caller
        of ``run(responses=...)`` (or the CLI, or the server) gets a
        ``RequestError`` naming the request, and the request stays open.
        Called with an answer of the request's response type."""

    # -- running -------------------------------------------------------------

    async def _invoke(self, message: Any, ctx: WorkflowContext[Any, Any]) -> None:
        if type(message) is Response:
            await self._respond(message, ctx)
            return
        entry = self._dispatch.get(type(message))  # usually decided by the class alone
        spec = entry if type(entry) is HandlerSpec else self.handler_for(message)
        if spec is None:
            raise MessageTypeError(  # (ctx's id: a map's worker runs under the map's)
                f"executor {ctx.executor_id!r} has no handler for {a_value_type(message)} "
                f"(it handles {', '.join(type_name(t) for t in self.input_types)})",
                executor_id=ctx.executor_id,
            )
        ctx._contract = spec.contract
        call = self._calls[spec]
        if spec.is_async:
            result = await call(message, ctx)
        else:
            result = await ctx._in_thread(call, message, ctx)
        ctx._send_result(result)

    async def _respond(self, response: Response, ctx: WorkflowContext[Any, Any]) -> None:
        request = response.request
        spec = self.response_handler_for(request.request, response.value)
        if spec is None:
            raise RequestError(
                f"executor {self.id!r} has no @response_handler for request "
                f"{type_name(type(request.request))} answered with "
                f"{type_name(type(response.value))}",
                executor_id=self.id,
            )
        ctx._contract = spec.contract
        method = spec.func.__get__(self)
        args = (
            (request.request, response.value, ctx)
            if spec.takes_ctx
            else (
                request.request,
                response.value,
            )
        )
        if spec.is_async:
            result = await method(*args)
        else:
            result = await ctx._in_thread(method, *args)
        ctx._send_result(result)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r}>"


def refusal(executor: Executor, hook: str, *args: Any) -> str | None:
    """Ask ``executor``'s ``hook`` (``check_input``, ``check_response``)
    about a value: why it refuses it (its ``ValueError``), or ``None``. Any
    other exception is the hook's own fault, raised as ``WorkflowRunError``
    naming the executor and the hook (the exception its cause), not as
    though stepgraph had failed."""
    try:
        getattr(executor, hook)(*args)
    except ValueError as exc:
        return str(exc)
    except Exception as exc:
        raise WorkflowRunError(
            f"executor {executor.id!r}: its {hook}() raised {type(exc).__name__}: {exc}",
            executor_id=executor.id,
        ) from exc
    return None


def _reject_duplicates(keys: list[tuple[Any, str]], owner: str) -> None:
    seen: dict[Any, str] = {}
    for key, name in keys:
        if key in seen:
            shown = " x ".join(map(type_name, key)) if isinstance(key, tuple) else type_name(key)
            raise WorkflowDefinitionError(
                f"executor {owner}: handlers {seen[key]!r} and {name!r} both handle "
                f"{shown}; keep one handler per input type"
            )
        seen[key] = name


def _reject_unchecked_arguments(specs: tuple[HandlerSpec, ...], owner: str) -> None:
    """Two handlers of one generic class whose type arguments are not checked
    at run time (``Box[int]`` and ``Box[str]`` of a user's ``Box(Generic[T])``,
    or ``Box`` itself): every ``Box`` would go to the same one of them, and the
    other would never be called."""
    seen: dict[type, HandlerSpec] = {}
    for spec in specs:
        annotation = spec.input.annotation
        origin = typing.get_origin(annotation)
        if spec.input.structural or not isinstance(origin, type) or origin is types.UnionType:
            origin = annotation if isinstance(annotation, type) else None
        if origin is None:
            continue
        first = seen.setdefault(origin, spec)
        if first is not spec:
            raise WorkflowDefinitionError(
                f"executor {owner}: handlers {first.name!r} ({type_name(first.input.annotation)}) "
                f"and {spec.name!r} ({type_name(annotation)}) cannot be told apart: a message's "
                f"class decides between them, and the type arguments of {type_name(origin)} are "
                "not checked at run time (only those of list, tuple, dict, set and the like "
                "are), so one of them would never be called; keep one handler for "
                f"{type_name(origin)}"
            )


class FunctionExecutor(Executor):
    """An executor made from one function by ``@executor``."""

    stateless = True

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
        placement: Placement | None = None,
    ) -> None:
        if isinstance(func, classmethod):
            raise WorkflowDefinitionError(
                f"@executor applied to classmethod {func.__func__.__qualname__!r}: a function "
                "executor has no class to pass; use a plain function or a @staticmethod"
            )
        if isinstance(func, staticmethod):
            func = func.__func__  # the function itself: async stays async
        if not callable(func):
            raise WorkflowDefinitionError(f"@executor applied to non-callable {func!r}")
        name = id if id is not None else _default_id(func)
        self.func = func
        self._spec = build_spec(
            func,
            HandlerOptions(input, output, workflow_output),
            owner=f"{name!r} ({getattr(func, '__qualname__', func)!r})",
            is_method=False,
            order=0,
        )
        super().__init__(name, retry=retry, timeout=timeout, placement=placement)

    def _handler_specs(self) -> tuple[HandlerSpec, ...]:  # type: ignore[override]
        return (self._spec,)

    def _response_handler_specs(self) -> tuple[ResponseSpec, ...]:  # type: ignore[override]
        return ()

    def _bind(self, spec: HandlerSpec) -> _Call:
        func = spec.func
        if spec.takes_ctx:
            return typing.cast(_Call, func)
        return lambda message, _ctx: func(message)

    def __repr__(self) -> str:
        return f"<FunctionExecutor id={self.id!r} func={getattr(self.func, '__qualname__', '?')}>"


def _default_id(func: Callable[..., Any]) -> str:
    """A function's name; that of the function a ``functools.partial``
    wraps; a callable object's class name."""
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__name__


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
    placement: Placement | None = None,
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
    placement: Placement | None = None,
) -> FunctionExecutor | Callable[[Callable[..., Any]], FunctionExecutor]:
    """Turn a function (async, or sync run in a worker thread) into an executor.

    The function takes ``(message)`` or ``(message, ctx)``; a non-``None``
    return value is sent as its message. ``id`` defaults to the function name.
    A ``functools.partial`` of such a function (keywords it binds included)
    or a callable object works too, named after the function or the class.
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
            placement=placement,
        )

    return decorate(func) if func is not None else decorate
