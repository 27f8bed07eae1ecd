"""TypeSpec matching and static overlap."""

from __future__ import annotations

import collections.abc as cabc
from typing import (
    Annotated,
    Any,
    Literal,
    Never,
    NewType,
    NotRequired,
    Protocol,
    TypedDict,
    TypeVar,
    runtime_checkable,
)

import pytest
import typing_extensions

import stepgraph as sg
from stepgraph._core import TypeSpec, TypeSpecError, may_overlap

UserId = NewType("UserId", int)
T = TypeVar("T")


@pytest.mark.parametrize(
    ("annotation", "good", "bad"),
    [
        (int, [1, True], ["1", 1.0]),
        (Any, [1, None, "x"], []),
        (int | str, [1, "a"], [1.0]),
        (list[int], [[], [1, 2]], [[1, "x"], (1,), "ab"]),
        (dict[str, int], [{}, {"a": 1}], [{"a": "b"}, {1: 1}]),
        (tuple[int, ...], [(), (1, 2)], [(1, "a"), [1]]),
        (tuple[int, str], [(1, "a")], [(1,), (1, 2), ("a", 1)]),
        (cabc.Sequence[int], [[1], (1,)], [["a"], {1}]),
        (set[str], [{"a"}], [{1}]),
        (Literal["a", 1], ["a", 1], ["b", True, 1.0]),
        (Annotated[int, "meta"], [1], ["x"]),
        (UserId, [1], ["1"]),
        (type[int], [int, bool], [str, 1]),
        (None, [None], [0]),
        (list[int | None], [[1, None]], [["x"]]),
    ],
)
def test_matches(annotation: Any, good: list[Any], bad: list[Any]) -> None:
    spec = TypeSpec(annotation)
    for value in good:
        assert spec.matches(value), (annotation, value)
    for value in bad:
        assert not spec.matches(value), (annotation, value)


def test_unusable_annotations() -> None:
    with pytest.raises(TypeSpecError, match="unresolved TypeVar T"):
        TypeSpec(T)
    with pytest.raises(TypeSpecError, match="forward reference"):
        TypeSpec("Later")
    with pytest.raises(TypeSpecError, match="not a type"):
        TypeSpec(3)


class Greets(Protocol):
    def greet(self) -> str: ...


@runtime_checkable
class Numbered(Protocol):
    number: int


@runtime_checkable
class Named(Protocol):
    def name(self) -> str: ...


class Pet:
    number = 1

    def name(self) -> str:
        return "rex"


async def test_a_protocol_a_message_cannot_be_checked_against_is_refused_at_definition() -> None:
    # Both were taken, and failed at the first message with typing's own
    # TypeError from deep in dispatch ("Instance and class checks can only be
    # used with @runtime_checkable protocols", "Protocols with non-method
    # members don't support issubclass()").
    with pytest.raises(TypeSpecError, match=r"^Greets is a Protocol that messages cannot be chec"):
        TypeSpec(Greets)
    with pytest.raises(
        sg.WorkflowDefinitionError,
        match=r"handler 'numbers' .*: Numbered is a Protocol that messages cannot be checked "
        r"against \(Protocols with non-method members .*\); use a @typing.runtime_checkable "
        r"Protocol of methods only, or a class",
    ):

        @sg.executor(id="numbers")
        async def numbers(message: Numbered) -> None: ...

    with pytest.raises(
        sg.WorkflowDefinitionError, match="handler 'sends' .*: Greets is a Protocol"
    ):

        @sg.executor(id="sends")
        async def sends(n: int, ctx: sg.WorkflowContext[Greets]) -> None: ...

    @sg.executor(id="names")
    async def names(pet: Named, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(pet.name())

    assert (await sg.WorkflowBuilder(start=names).build().run(Pet())).outputs == ["rex"]


def test_never_matches_nothing() -> None:
    assert not TypeSpec(Never).matches(1) and TypeSpec(Never).is_never


class A:
    pass


class B(A):
    pass


class C:
    pass


@pytest.mark.parametrize(
    ("out", "inp", "expected"),
    [
        (int, int, True),
        (bool, int, True),
        (A, B, True),  # an A-typed value may be a B
        (A, C, False),
        (int, str, False),
        (Any, str, True),
        (int, Any, True),
        (int | str, str, True),
        (int, str | bytes, False),
        (list[int], list[str], False),
        (list[int], list[Any], True),
        (list[int], cabc.Sequence[int], True),
        (Literal["a"], str, True),
        (Literal["a"], Literal["b"], False),
        (str, Literal["a"], True),
        (Never, int, False),
        # Tuples: fixed ones item by item and length; tuple[X, ...] is any
        # length of X (the empty tuple too). These were all said to overlap.
        (tuple[int, ...], tuple[str, str], False),
        (tuple[str, str], tuple[int, ...], False),
        (tuple[int], tuple[int, int], False),
        (tuple[int, str], tuple[int, bytes], False),
        (tuple[int, ...], tuple[str, ...], True),  # ()
        (tuple[int, ...], tuple[int, int], True),
        (tuple[bool, int], tuple[int, ...], True),
        (tuple[int | str, ...], tuple[str], True),
        (tuple[Any, ...], tuple[str, str], True),
        (tuple[int, str], tuple, True),
    ],
)
def test_may_overlap(out: Any, inp: Any, expected: bool) -> None:
    assert may_overlap(out, inp) is expected


class Job(TypedDict):
    name: str
    n: int
    tag: NotRequired[str]


class ExtJob(typing_extensions.TypedDict):  # (the kind pydantic asks for before Python 3.12)
    name: str
    n: int
    tag: typing_extensions.NotRequired[str]


@pytest.mark.parametrize("Job", [Job, ExtJob])
def test_a_typeddict_is_a_dict_of_its_keys_and_types(Job: Any) -> None:
    """A TypedDict has no class at run time: a dict matches when it has the
    required keys, no other, and values of the declared types — one of
    typing_extensions too (it was compiled as a class, and refused isinstance
    at the first message)."""
    spec = TypeSpec(Job)
    assert spec.matches({"name": "a", "n": 1}) and spec.matches({"name": "a", "n": 1, "tag": "t"})
    for bad in ({"name": "a"}, {"name": "a", "n": "1"}, {"name": "a", "n": 1, "x": 0}, ["a"]):
        assert not spec.matches(bad), bad
    assert spec.rank(dict) is not None and spec.rank(list) is None
    assert TypeSpec(Job).rank(dict) < TypeSpec(dict).rank(dict)  # (a handler of dict is wider)
    assert may_overlap(Job, dict) and may_overlap(dict[str, Any], Job) and may_overlap(Job, Job)
    assert not may_overlap(Job, list[int]) and not may_overlap(str, Job)
