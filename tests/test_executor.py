"""Executors and handlers: typing, most-specific dispatch, function executors,
definition errors that name the executor and method."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import pydantic
import pytest

import stepgraph as sg
from tests import cli_flows


class Animal:
    pass


class Dog(Animal):
    pass


class Puppy(Dog):
    pass


@dataclass(frozen=True)
class Note:
    text: str


class Model(pydantic.BaseModel):
    name: str


class Zoo(sg.Executor):
    """Handlers declared in an order that 'first by name' would get wrong."""

    @sg.handler
    async def a_any(self, m: Any, ctx: sg.WorkflowContext) -> None: ...

    @sg.handler
    async def b_animal(self, m: Animal, ctx: sg.WorkflowContext) -> None: ...

    @sg.handler
    async def c_dog(self, m: Dog, ctx: sg.WorkflowContext) -> None: ...

    @sg.handler
    async def d_union(self, m: int | str, ctx: sg.WorkflowContext) -> None: ...

    @sg.handler
    async def e_int(self, m: int, ctx: sg.WorkflowContext) -> None: ...

    @sg.handler
    async def f_bare_list(self, m: list, ctx: sg.WorkflowContext) -> None: ...  # type: ignore[type-arg]

    @sg.handler
    async def g_int_list(self, m: list[int], ctx: sg.WorkflowContext) -> None: ...

    @sg.handler
    async def h_models(self, m: dict[str, Model], ctx: sg.WorkflowContext) -> None: ...

    @sg.handler
    async def i_literal(self, m: Literal["stop"], ctx: sg.WorkflowContext) -> None: ...


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (Dog(), "c_dog"),  # exact class
        (Puppy(), "c_dog"),  # nearest in MRO
        (Animal(), "b_animal"),
        (5, "e_int"),  # exact beats union
        ("text", "d_union"),  # union beats Any
        ("stop", "i_literal"),  # a literal is more specific than its class
        (True, "e_int"),  # bool -> int via MRO, before the union
        ([1, 2], "g_int_list"),  # parametrised beats bare
        (["x"], "f_bare_list"),  # structural check fails, falls back
        ({"a": Model(name="m")}, "h_models"),
        ({"a": 1}, "a_any"),
        (Note("n"), "a_any"),
        (3.5, "a_any"),
    ],
)
def test_most_specific_handler_wins(message: Any, expected: str) -> None:
    zoo = Zoo("zoo")
    spec = zoo.handler_for(message)
    assert spec is not None and spec.name == expected
    assert zoo.handler_for(message) is spec  # cached answer is the same


def test_accepts_and_introspection() -> None:
    @sg.executor(id="f")
    async def f(note: Note, ctx: sg.WorkflowContext[str, int]) -> None: ...

    assert f.accepts(Note("x")) and not f.accepts("x")
    assert f.input_types == [Note]
    assert f.output_types is str
    assert f.workflow_output_types is int


async def test_function_forms() -> None:
    @sg.executor
    async def no_ctx(n: int) -> str:
        return str(n)

    @sg.executor(id="sync_fn")
    def sync_fn(text: str) -> Note:
        return Note(text)

    @sg.executor(id="done")
    async def done(note: Note, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(note.text)

    assert no_ctx.id == "no_ctx"
    assert no_ctx.output_types is str
    workflow = sg.WorkflowBuilder(start=no_ctx).add_chain([no_ctx, sync_fn, done]).build()
    assert (await workflow.run(42)).outputs == ["42"]


async def test_explicit_handler_types_override_annotations() -> None:
    class Explicit(sg.Executor):
        @sg.handler(input=[int, str], output=str, workflow_output=[int])
        async def handle(self, message, ctx):  # type: ignore[no-untyped-def]
            await ctx.send_message(str(message))

    ex = Explicit("x")
    assert ex.accepts(1) and ex.accepts("a") and not ex.accepts(1.0)
    assert ex.output_types is str and ex.workflow_output_types is int


async def test_return_value_of_a_method_is_sent() -> None:
    class Doubler(sg.Executor):
        @sg.handler
        async def double(self, n: int) -> int:
            return n * 2

    @sg.executor(id="out")
    async def out(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)

    d = Doubler("d")
    result = await sg.WorkflowBuilder(start=d).add_edge(d, out).build().run(4)
    assert result.outputs == [8]


def test_subclass_overrides_handler_by_name() -> None:
    class Base(sg.Executor):
        @sg.handler
        async def on(self, n: int) -> None: ...

    class Child(Base):
        @sg.handler
        async def on(self, n: int) -> None: ...  # replaces, not a duplicate

        @sg.handler
        async def other(self, s: str) -> None: ...

    child = Child("c")
    assert child.input_types == [int, str]
    spec = child.handler_for(1)
    assert spec is not None and spec.func is Child.__dict__["on"]


T = TypeVar("T")


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: type("Empty", (sg.Executor,), {})("e"), r"'e' \(Empty\) defines no @handler"),
        (
            lambda: _cls("Dup", one=_h(int), two=_h(int))("d"),
            r"Dup: handlers 'one' and 'two' both handle int",
        ),
        (
            lambda: _cls("NoAnn", on=sg.handler(_no_annotation))("n"),
            r"handler NoAnn.on: parameter 'message' has no type annotation",
        ),
        (
            lambda: _cls("Bad", on=sg.handler(_unresolvable))("b"),
            r"handler Bad.on: cannot resolve its annotations: NameError",
        ),
        (
            lambda: _cls("TooMany", on=sg.handler(_too_many))("t"),
            r"handler TooMany.on: a handler must take exactly \(message\[, ctx\]\)",
        ),
        (
            lambda: _cls("Var", on=sg.handler(_typevar))("v"),
            r"handler Var.on: unresolved TypeVar T",
        ),
        (
            lambda: _cls("BadCtx", on=sg.handler(_bad_ctx))("c"),
            r"handler BadCtx.on: its context parameter must be annotated WorkflowContext",
        ),
        (
            lambda: _cls("Gen", on=sg.handler(_generator))("g"),
            r"handler Gen.on: handlers may not be generators",
        ),
        (lambda: sg.executor(id="kw")(_kw_only), r"handler 'kw'.*exactly \(message\[, ctx\]\)"),
        (lambda: Zoo(""), r"executor id must be a non-empty str, got '' \(Zoo\)"),
        (lambda: Zoo("team/a"), r"executor id 'team/a' \(Zoo\) holds '/', which joins"),
        (lambda: sg.executor(id="x/y")(_takes_int), r"executor id 'x/y' .*holds '/'"),
        (
            lambda: Zoo("z\udc80"),
            r"executor id 'z\\udc80' \(Zoo\) holds half a character \(a lone surrogate, at index 1\)",
        ),
        (lambda: Zoo("z", timeout=0), r"executor 'z': timeout must be a positive"),
        (lambda: Zoo("z", timeout="x"), r"executor 'z': timeout must be .*got 'x'"),
        (lambda: Zoo("z", timeout=True), r"executor 'z': timeout must be .*got True"),
        (lambda: sg.executor(id="t", timeout="5")(_takes_int), r"'t': timeout must be"),
        (lambda: sg.WorkflowBuilder(start="s", max_supersteps=True), r"got True"),
        (lambda: sg.WorkflowBuilder(start="s", max_supersteps=2.5), r"got 2.5"),
    ],
)
def test_definition_errors_name_the_culprit(make: Any, pattern: str) -> None:
    with pytest.raises(sg.WorkflowDefinitionError, match=pattern):
        make()


def test_generic_executor_with_unresolved_typevar() -> None:
    class Box(sg.Executor, Generic[T]):
        @sg.handler
        async def on(self, item: T) -> None: ...

    with pytest.raises(sg.WorkflowDefinitionError, match="Box.on: unresolved TypeVar T"):
        Box("box")


def _cls(name: str, **handlers: Any) -> type[sg.Executor]:
    return type(name, (sg.Executor,), handlers)


def _h(tp: Any) -> Any:
    async def handle(self: Any, message: Any) -> None: ...

    return sg.handler(input=tp)(handle)


async def _takes_int(message: int) -> None: ...


async def _no_annotation(self: Any, message) -> None: ...  # type: ignore[no-untyped-def]


async def _unresolvable(self: Any, message: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821


async def _too_many(self: Any, a: int, b: sg.WorkflowContext, c: int) -> None: ...


async def _typevar(self: Any, message: T) -> None: ...


async def _bad_ctx(self: Any, message: int, ctx: int) -> None: ...


async def _generator(self: Any, message: int) -> Any:
    yield message


async def _kw_only(message: int, *, ctx: sg.WorkflowContext) -> None: ...


async def test_async_static_methods_and_async_callables_are_awaited() -> None:
    class Tools:
        @sg.executor(id="doubler")
        @staticmethod
        async def doubler(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
            await ctx.yield_output(n * 2)

    class Adder:
        async def __call__(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
            await ctx.yield_output(n + 1)

    class Loud(Adder):  # inherits the async __call__
        pass

    class Quiet(Adder):
        def __call__(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:  # type: ignore[override]
            ctx.yield_output(n - 1)

    results = []
    for executor in (Tools.doubler, sg.executor(id="adder")(Loud()), sg.executor(id="q")(Quiet())):
        results.append((await sg.WorkflowBuilder(start=executor).build().run(5)).outputs)
    assert results == [[10], [6], [4]]


def test_classmethod_executor_is_refused() -> None:
    with pytest.raises(
        sg.WorkflowDefinitionError,
        match=r"classmethod '.*Tools.f': a function executor has no class",
    ):

        class Tools:
            @sg.executor
            @classmethod
            async def f(cls, n: int) -> None: ...


async def test_a_sync_handler_returning_a_coroutine_fails_clearly() -> None:
    async def work(n: int) -> int:
        return n

    wrapped = sg.executor(id="wrapped", input=int, output=int)(lambda n: work(n))
    with pytest.raises(sg.WorkflowRunError) as raised:
        await sg.WorkflowBuilder(start=wrapped).build().run(1)
    cause = raised.value.__cause__
    assert isinstance(cause, TypeError)
    assert "was run as a sync function in a worker thread but returned coroutine" in str(cause)


@pytest.mark.parametrize(
    "arguments",
    [{"attempts": 2.5}, {"attempts": True}, {"attempts": 0}, {"backoff": "1"},
     {"backoff": float("nan")}, {"multiplier": 0.5}, {"max_backoff": None}],
)  # fmt: skip
def test_a_retry_policy_refuses_what_is_not_a_count_or_a_number(arguments: Any) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        sg.RetryPolicy(**arguments)


async def test_explicit_types_override_annotations_that_cannot_be_resolved() -> None:
    # With `from __future__ import annotations` (as in this module) the
    # annotations are strings, looked up in the module: a type defined here,
    # inside the test, is not there. The decorator's explicit types override
    # the annotations, so they must not have to resolve.
    @dataclass(frozen=True)
    class Local:
        x: int

    @sg.executor(id="fn", input=Local, output=Local, workflow_output=Local)
    async def fn(item: Local, ctx: sg.WorkflowContext[Local, Local]) -> None:
        await ctx.send_message(Local(item.x + 1))

    class Method(sg.Executor):
        @sg.handler(input=Local, workflow_output=Local)
        async def on(self, item: Local, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
            await ctx.yield_output(Local(item.x * 10))

    workflow = sg.WorkflowBuilder(start=fn).add_edge(fn, Method("method")).build()
    assert (await workflow.run(Local(1))).outputs == [Local(20)]

    class NotOverridden(sg.Executor):
        @sg.handler
        async def on(self, item: Local, ctx: sg.WorkflowContext) -> None: ...

    with pytest.raises(sg.WorkflowDefinitionError) as raised:
        NotOverridden("n")
    message = str(raised.value)
    assert "cannot resolve its annotations: NameError: name 'Local' is not defined" in message
    assert "(the annotation of 'item')" in message and "define it at module level" in message

    with pytest.raises(sg.WorkflowDefinitionError, match=r"the annotation of its return value"):

        @sg.executor(id="returns", input=int)
        def returns(n: int) -> Local:
            return Local(n)

    with pytest.raises(sg.WorkflowDefinitionError, match=r"the annotation of 'ctx'"):

        @sg.executor(id="context", input=int, output=int)
        async def context(n: int, ctx: sg.WorkflowContext[Local]) -> None: ...


def test_equally_specific_handlers_go_to_the_one_defined_first() -> None:
    # docs/concepts.md: ties between equally specific handlers (two unions
    # holding the class, list[int] and list[str] for an empty list) go to
    # the handler defined first, whatever the names.
    class First(sg.Executor):
        @sg.handler
        async def z_union(self, message: int | str, ctx: sg.WorkflowContext) -> None: ...

        @sg.handler
        async def a_union(self, message: str | bytes, ctx: sg.WorkflowContext) -> None: ...

        @sg.handler
        async def z_ints(self, message: list[int], ctx: sg.WorkflowContext) -> None: ...

        @sg.handler
        async def a_strs(self, message: list[str], ctx: sg.WorkflowContext) -> None: ...

    first = First("first")
    assert [first.handler_for(m).name for m in ("s", [], ["s"], [1])] == [  # type: ignore[union-attr]
        "z_union",
        "z_ints",
        "a_strs",
        "z_ints",
    ]


@dataclass
class Parcel(Generic[T]):
    content: T


def test_handlers_a_generic_class_alone_cannot_tell_apart_are_refused() -> None:
    # A user generic's type arguments are not checked at run time: with
    # handlers for Parcel[int] and Parcel[str], every Parcel went to the first
    # (Parcel("text") included) and the second was silently never called.
    class Both(sg.Executor):
        @sg.handler
        async def ints(self, parcel: Parcel[int], ctx: sg.WorkflowContext) -> None: ...

        @sg.handler
        async def strs(self, parcel: Parcel[str], ctx: sg.WorkflowContext) -> None: ...

    with pytest.raises(sg.WorkflowDefinitionError) as raised:
        Both("both")
    message = str(raised.value)
    assert "handlers 'ints'" in message and "'strs'" in message
    assert "cannot be told apart" in message and "keep one handler for Parcel" in message

    class BareAndArgs(sg.Executor):
        @sg.handler
        async def bare(self, parcel: Parcel, ctx: sg.WorkflowContext) -> None: ...  # type: ignore[type-arg]

        @sg.handler
        async def ints(self, parcel: Parcel[int], ctx: sg.WorkflowContext) -> None: ...

    with pytest.raises(sg.WorkflowDefinitionError, match="cannot be told apart"):
        BareAndArgs("bare")

    class Checked(sg.Executor):  # list's items are checked: these are told apart
        @sg.handler
        async def ints(self, values: list[int], ctx: sg.WorkflowContext) -> None: ...

        @sg.handler
        async def strs(self, values: list[str], ctx: sg.WorkflowContext) -> None: ...

        @sg.handler
        async def anything(self, values: list, ctx: sg.WorkflowContext) -> None: ...  # type: ignore[type-arg]

    checked = Checked("checked")
    assert [checked.handler_for(v).name for v in ([1], ["a"], [1.5])] == [  # type: ignore[union-attr]
        "ints",
        "strs",
        "anything",
    ]


def test_a_static_or_class_method_handler_is_refused_saying_so() -> None:
    # @handler over @staticmethod said "parameter 'ctx' has no type
    # annotation" (the message was taken for self); @staticmethod over
    # @handler said the executor "defines no @handler methods".
    def outer_static() -> type[sg.Executor]:
        class Outer(sg.Executor):
            @sg.handler
            @staticmethod
            async def on(n: int, ctx: sg.WorkflowContext) -> None: ...

        return Outer

    def inner_static() -> type[sg.Executor]:
        class Inner(sg.Executor):
            @staticmethod
            @sg.handler
            async def on(n: int, ctx: sg.WorkflowContext) -> None: ...

        return Inner

    def on_class() -> type[sg.Executor]:
        class OnClass(sg.Executor):
            @classmethod
            @sg.response_handler
            async def answered(cls, question: str, answer: str) -> None: ...

            @sg.handler
            async def on(self, n: int, ctx: sg.WorkflowContext) -> None: ...

        return OnClass

    for make, kind in ((outer_static, "staticmethod"), (inner_static, "staticmethod")):
        with pytest.raises(sg.WorkflowDefinitionError, match=rf"\.on is a {kind}; handlers are"):
            make()("x")
    with pytest.raises(sg.WorkflowDefinitionError, match=r"OnClass\.answered is a classmethod"):
        on_class()("x")


def test_handler_over_classmethod_or_under_property_is_refused_naming_the_method() -> None:
    # @handler over @classmethod said "@handler applied to non-callable
    # <classmethod(...)>"; @property over @handler said the executor "defines
    # no @handler methods".
    with pytest.raises(
        sg.WorkflowDefinitionError, match=r"@handler applied to classmethod '.*Over\.on'; handlers"
    ):

        class Over(sg.Executor):
            @sg.handler  # type: ignore[arg-type]
            @classmethod
            async def on(cls, n: int, ctx: sg.WorkflowContext) -> None: ...

    with pytest.raises(sg.WorkflowDefinitionError, match=r"@response_handler applied to classm"):

        class Answers(sg.Executor):
            @sg.response_handler  # type: ignore[arg-type]
            @classmethod
            async def answered(cls, question: str, answer: str) -> None: ...

    class Held(sg.Executor):
        @property
        @sg.handler
        def on(self, n: int, ctx: sg.WorkflowContext) -> None: ...

    with pytest.raises(sg.WorkflowDefinitionError, match=r"handler Held\.on is a property"):
        Held("x")


async def test_a_partial_of_an_annotated_function_is_an_executor_named_after_it() -> None:
    # Its annotations were looked up on functools.partial's __call__ ("parameter
    # 'n' has no type annotation"), a keyword it binds was refused as a third
    # parameter, and without id= it was named 'FunctionExecutor'.
    async def scale(factor: int, n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{n * factor}")

    def shift(n: int, *, by: int) -> int:
        return n + by

    tripled = sg.executor(functools.partial(scale, 3))
    shifted = sg.executor(functools.partial(shift, by=1))
    assert (tripled.id, shifted.id) == ("scale", "shift")
    assert tripled.input_types == [int] and shifted.input_types == [int]
    workflow = sg.WorkflowBuilder(start=shifted).add_edge(shifted, tripled).build()
    assert (await workflow.run(1)).outputs == ["6"]

    class Doubler:
        def __call__(self, n: int) -> int:
            return 2 * n

    assert sg.executor(Doubler()).id == "Doubler"


async def test_a_start_executor_refuses_an_input_before_the_run_or_fails_naming_its_check() -> None:
    store = sg.MemoryCheckpointStore()
    picky = cli_flows.Picky("picky")  # (refuses [], and its check breaks on a list of one)
    workflow = sg.WorkflowBuilder(start=picky, name="adder", checkpoints=store).build()
    with pytest.raises(sg.MessageTypeError) as refused:
        await workflow.run([])
    assert str(refused.value) == (
        "the input of workflow 'adder' is refused by its start executor 'picky': no items to add up"
    )
    with pytest.raises(sg.WorkflowRunError) as broken:
        await workflow.run([1])
    assert (
        str(broken.value)
        == "executor 'picky': its check_input() raised IndexError: list index out of range"
    )
    assert isinstance(broken.value.__cause__, IndexError)
    assert await store.runs() == []  # no run started either time
    assert (await workflow.run([1, 2])).outputs == [3]
