"""WorkflowBuilder validation: every error names what is at fault, and
building never mutates what it was given."""

from __future__ import annotations

from typing import Any

import pytest

import stepgraph as sg


@sg.executor(id="ints")
async def ints(n: int) -> int:
    return n


@sg.executor(id="texts")
async def texts(s: str) -> str:
    return s


@sg.executor(id="int_lists")
async def int_lists(items: list[int]) -> None: ...


@sg.executor(id="silent")
async def silent(n: int, ctx: sg.WorkflowContext) -> None: ...


@sg.executor(id="anything")
async def anything(m: Any, ctx: sg.WorkflowContext[Any, Any]) -> None: ...


class Counter(sg.Executor):
    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int, int]) -> None: ...


class Base:
    pass


class Sub(Base):
    pass


def B(**kw: Any) -> sg.WorkflowBuilder:
    return sg.WorkflowBuilder(start=ints, **kw)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (
            lambda: B().add_edge(ints, Counter("ints")),
            r"duplicate executor id 'ints': used by <FunctionExecutor id='ints'.*and by a "
            r"different object <Counter id='ints'>",
        ),
        (
            lambda: B().add_edge(ints, anything).add_edge("ints", "anything"),
            r"duplicate edge ints -> anything: declared by edge ints -> anything and by edge",
        ),
        (
            lambda: B().add_edge(ints, anything).add_fan_out(ints, [anything]),
            r"duplicate edge ints -> anything",
        ),
        (lambda: B().add_fan_out(ints, [anything, anything]), r"fan_out .*a target is listed"),
        (lambda: B().add_fan_in([ints, ints], int_lists), r"fan_in .*a source is listed twice"),
        (
            lambda: B().add_edge(ints, texts),
            r"edge ints -> texts: 'texts' cannot accept what it would receive: int is sent, "
            r"it handles str",
        ),
        (
            lambda: B().add_fan_in([ints, anything], texts).add_edge(ints, anything),
            r"fan_in ints, anything -> texts: 'texts' cannot accept .*list\[.*\] is sent",
        ),
        (
            lambda: B().add_fan_in([ints], Counter("c")),
            r"fan_in ints -> c: 'c' cannot accept what it would receive: list\[int\] is sent",
        ),
        (
            lambda: B().add_edge(ints, silent).add_edge(silent, anything),
            r"edge silent -> anything: 'silent' declares no message types it sends",
        ),
        (lambda: B().add_edge(ints, "nowhere"), r"^edge \(ints, nowhere\) names unknown executor"),
        (
            lambda: B().add_fan_out(ints, [anything, "nowhere"]),
            r"^fan_out edge \(ints, anything, nowhere\) names unknown executor 'nowhere'",
        ),
        (lambda: B().add_executor(texts), r"\['texts'\] cannot be reached from .*'ints'"),
        (
            lambda: B(output_from=["missing"]).add_edge(ints, anything),
            r"output_from names 'missing', which is not an executor",
        ),
        (
            lambda: B(output_from=[ints]),
            r"output_from names 'ints', but none of its handlers declares workflow outputs",
        ),
        (lambda: B(output_from=[]), r"output_from=\[\] names no executor"),
    ],
)
def test_build_errors_name_the_culprit(make: Any, pattern: str) -> None:
    with pytest.raises(sg.WorkflowDefinitionError, match=pattern):
        make().build()


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: sg.WorkflowBuilder(start=ints, max_supersteps=0), "max_supersteps"),
        (lambda: sg.WorkflowBuilder(start=5), "start must be an Executor or the id"),  # type: ignore[arg-type]
        (lambda: B().add_fan_out(ints, []), "fan-out from ints: no targets"),
        (lambda: B().add_fan_in([], anything), "fan-in to anything: no sources"),
        (lambda: B().add_switch(ints, []), "switch from ints: no cases"),
        (
            lambda: B().add_switch(ints, [sg.Default(anything), sg.Case(bool, texts)]),
            "at most one Default, and it must come last",
        ),
        (lambda: B().add_multi_select(ints, [anything], "x"), "selector must be callable"),  # type: ignore[arg-type]
        (lambda: B().add_edge(ints, anything, condition=3), "condition must be callable"),  # type: ignore[arg-type]
        (lambda: B().add_chain([ints]), "at least two"),
        (lambda: B().add_edge(ints, 5), "expected an Executor or an executor id, got int"),  # type: ignore[arg-type]
        # name=5 was taken, and its runs wrote checkpoints that could not be read
        # back ("stored field 'workflow' has the wrong type"); a store URL raised
        # a TypeError.
        (lambda: B(name=5), "name must be a str, got 5"),
        # (half a character: a run then failed at its first checkpoint with an
        # encoding error that named no workflow)
        (lambda: B(name="w\udcff"), r"name 'w\\udcff' holds half a character .*at index 1"),
        (lambda: B().add_chain("ints"), "add_chain needs at least two executors"),  # type: ignore[arg-type]
        (
            lambda: B(checkpoints="sqlite:runs.db"),
            r"checkpoints must be a CheckpointStore .*not str \(a store URL is for the command "
            r"line's --store; here pass a store object, e.g. sg.SqliteCheckpointStore\(PATH\)\)",
        ),
    ],
)
def test_declaration_errors(make: Any, pattern: str) -> None:
    with pytest.raises(sg.WorkflowDefinitionError, match=pattern):
        make()


def test_uninitialised_executor_subclass_is_named() -> None:
    class Forgetful(sg.Executor):
        def __init__(self) -> None:  # forgets super().__init__
            pass

        @sg.handler
        async def on(self, n: int) -> None: ...

    with pytest.raises(sg.WorkflowDefinitionError, match="Forgetful instance was not initialised"):
        sg.WorkflowBuilder(start=Forgetful())


def test_build_does_not_mutate_inputs_and_can_be_repeated() -> None:
    counter = Counter("c")
    targets = [counter]
    before = dict(vars(counter))
    builder = B().add_fan_out(ints, targets)
    one, two = builder.build(), builder.build()
    assert targets == [counter]
    assert vars(counter) == before
    assert one is not two and one.executors["c"] is two.executors["c"]


def test_registration_order_and_description() -> None:
    c = Counter("c")
    workflow = (
        sg.WorkflowBuilder(start=ints, name="described", output_from=[c])
        .add_executor(anything)
        .add_edge(ints, c)
        .add_edge(ints, anything)
        .build()
    )
    assert list(workflow.executors) == ["ints", "anything", "c"]
    assert workflow.name == "described" and workflow.start is ints
    assert workflow.output_executors == frozenset({"c"})
    assert "described" in repr(workflow)


def test_compatible_edges_build() -> None:
    # Any on either side, unions, subclass relations and list[T] for fan-in.
    @sg.executor(id="emit_base")
    async def emit_base(n: int) -> Base:
        return Base()

    @sg.executor(id="takes_sub")
    async def takes_sub(s: Sub | str) -> None: ...

    @sg.executor(id="collect")
    async def collect(items: list[Base | int]) -> None: ...

    workflow = (
        B()
        .add_fan_out(ints, [emit_base, anything])
        .add_edge(emit_base, takes_sub)
        .add_fan_in([emit_base, ints], collect)
        .build()
    )
    assert set(workflow.executors) == {"ints", "emit_base", "anything", "takes_sub", "collect"}


async def test_response_handler_types_count_for_edges_and_outputs() -> None:
    """An executor that asks in its handler and sends (or yields) only from
    its response handler: its edge and output_from are accepted."""

    class Gate(sg.Executor):
        @sg.handler
        async def ask(self, text: str, ctx: sg.WorkflowContext) -> None:
            await ctx.request_info(text, bool)

        @sg.response_handler
        async def decided(self, text: str, ok: bool, ctx: sg.WorkflowContext[str, bool]) -> None:
            await ctx.send_message(text.upper())
            await ctx.yield_output(ok)

    @sg.executor(id="shout")
    async def shout(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(text)

    gate = Gate("gate")
    assert gate.output_types is str and gate.workflow_output_types is bool
    workflow = (
        sg.WorkflowBuilder(start=gate, output_from=[gate, shout], strict=True)
        .add_edge(gate, shout)
        .build()
    )
    first = await workflow.run("go")
    [request] = first.pending_requests
    done = await workflow.run(responses={request.request_id: True})
    assert done.outputs == [True, "GO"]


def test_one_id_where_a_list_is_expected_counts_as_a_list_of_one() -> None:
    # A str was taken letter by letter: add_fan_out(ints, "anything") named
    # unknown executors 'a', 'n', ...; one executor raised "TypeError:
    # 'FunctionExecutor' object is not iterable".
    workflow = (
        B().add_executor(anything).add_fan_out(ints, "anything").add_fan_in(ints, int_lists).build()
    )
    assert [(e.sources, e.targets) for e in workflow.graph.edges] == [
        (("ints",), ("anything",)),
        (("ints",), ("int_lists",)),
    ]
    assert list(B().add_fan_out(ints, anything).build().executors) == ["ints", "anything"]
