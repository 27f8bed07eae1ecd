"""Agent tools: schemas from signatures and docstrings, argument validation
with messages for the model, invocation off the event loop, result text."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import functools
import json
import threading
import time
from typing import Annotated, Any, Literal

import pydantic
import pytest

from stepgraph import StepgraphError, WorkflowDefinitionError
from stepgraph.agents._tools import Tool, ToolArgumentsError, as_tools, tool, tool_error_text


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Address(pydantic.BaseModel):
    street: str
    number: int = 1


class Customer(pydantic.BaseModel):
    name: str
    address: Address


class Opaque:
    """Neither pydantic nor JSON schema knows this class."""


def refs(node: Any) -> list[str]:
    """Every ``$ref`` in a schema."""
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


# -- schemas ------------------------------------------------------------------


def test_simple_types_make_an_object_schema() -> None:
    @tool
    def lookup(word: str, count: int, ratio: float, exact: bool) -> str:
        return word

    assert isinstance(lookup, Tool)
    assert lookup.name == "lookup"
    assert lookup.parameters == {
        "type": "object",
        "properties": {
            "word": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "exact": {"type": "boolean"},
        },
        "required": ["word", "count", "ratio", "exact"],
        "additionalProperties": False,
    }
    assert lookup.schema() == {
        "type": "function",
        "function": {"name": "lookup", "description": "", "parameters": lookup.parameters},
    }


def test_schema_returns_a_fresh_copy() -> None:
    @tool
    def ping(host: str) -> str:
        return host

    ping.schema()["function"]["parameters"]["properties"]["host"]["type"] = "integer"
    assert ping.parameters["properties"]["host"] == {"type": "string"}


def test_no_parameters() -> None:
    @tool
    def now() -> str:
        return "noon"

    assert now.parameters == {"type": "object", "properties": {}, "additionalProperties": False}
    assert now.parse("") == {}


def test_optional_and_defaults() -> None:
    @tool
    def search(query: str, limit: int = 10, after: str | None = None) -> str:
        return query

    props = search.parameters["properties"]
    assert search.parameters["required"] == ["query"]
    assert props["limit"] == {"type": "integer", "default": 10}
    assert props["after"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert search.parse('{"query": "tea"}') == {"query": "tea", "limit": 10, "after": None}
    assert search.parse('{"query": "tea", "after": null, "limit": 3}') == {
        "query": "tea",
        "limit": 3,
        "after": None,
    }


def test_a_default_json_cannot_hold_is_left_out_of_the_schema() -> None:
    sentinel = Opaque()

    @tool
    def f(x: int, marker: Any = sentinel) -> str:
        return str(x)

    assert f.parameters["properties"]["marker"] == {}
    assert f.parse('{"x": 1}')["marker"] is sentinel


def test_literal_and_enum() -> None:
    @tool
    def paint(color: Color, finish: Literal["matte", "gloss"] = "matte") -> str:
        return color.value

    props = paint.parameters["properties"]
    assert props["finish"] == {"type": "string", "enum": ["matte", "gloss"], "default": "matte"}
    assert props["color"] == {"$ref": "#/$defs/Color"}
    assert paint.parameters["$defs"]["Color"]["enum"] == ["red", "green"]
    assert paint.parse('{"color": "green"}') == {"color": Color.GREEN, "finish": "matte"}
    with pytest.raises(ToolArgumentsError, match=r"color: input should be 'red' or 'green'"):
        paint.parse('{"color": "blue"}')


def test_nested_model_and_dataclass_parameters() -> None:
    @tool
    def ship(customer: Customer, points: list[Point], tags: dict[str, int]) -> str:
        return customer.name

    params = ship.parameters
    assert params["properties"]["customer"] == {"$ref": "#/$defs/Customer"}
    assert params["properties"]["points"] == {"type": "array", "items": {"$ref": "#/$defs/Point"}}
    assert params["properties"]["tags"] == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
    }
    assert set(params["$defs"]) == {"Customer", "Address", "Point"}
    for ref in refs(params):  # every reference resolves inside the parameters schema
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in params["$defs"]

    args = ship.parse(
        '{"customer": {"name": "Ada", "address": {"street": "Main"}},'
        ' "points": [{"x": 1, "y": 2}], "tags": {"a": 1}}'
    )
    assert args == {
        "customer": Customer(name="Ada", address=Address(street="Main", number=1)),
        "points": [Point(1, 2)],
        "tags": {"a": 1},
    }
    assert type(args["customer"]) is Customer
    assert type(args["customer"].address) is Address
    assert type(args["points"][0]) is Point


def test_parameters_may_have_any_name() -> None:
    @tool
    def odd(json: str, model_config: int, schema: bool = False) -> str:
        return json

    assert list(odd.parameters["properties"]) == ["json", "model_config", "schema"]
    assert odd.parse('{"json": "{}", "model_config": 2}') == {
        "json": "{}",
        "model_config": 2,
        "schema": False,
    }


# -- descriptions ---------------------------------------------------------------


def test_docstring_summary_and_google_args() -> None:
    @tool
    def send_email(to: str, subject: str, body: str = "") -> None:
        """Send an email.

        Only to known addresses.

        Args:
            to: The recipient's
                address, as written in the address book.
            subject (str): A short subject line.

        Returns:
            Nothing.
        """

    assert send_email.description == "Send an email.\n\nOnly to known addresses."
    props = send_email.parameters["properties"]
    assert props["to"]["description"] == (
        "The recipient's address, as written in the address book."
    )
    assert props["subject"]["description"] == "A short subject line."
    assert "description" not in props["body"]


def test_numpy_parameters_section() -> None:
    @tool
    def area(width: float, height: float) -> float:
        """Area of a rectangle.

        Parameters
        ----------
        width : float
            Width in metres.
        height : float
            Height in
            metres.
        """
        return width * height

    assert area.description == "Area of a rectangle."
    assert area.parameters["properties"]["width"]["description"] == "Width in metres."
    assert area.parameters["properties"]["height"]["description"] == "Height in metres."


def test_annotated_descriptions() -> None:
    @tool
    def fetch(
        url: Annotated[str, "The page to fetch."],
        timeout: Annotated[float, pydantic.Field(description="Seconds to wait.", gt=0)] = 5.0,
        retries: Annotated[int, "From Annotated."] = 0,
    ) -> str:
        """Fetch a page.

        Args:
            retries: From the docstring.
        """
        return url

    props = fetch.parameters["properties"]
    assert props["url"] == {"type": "string", "description": "The page to fetch."}
    assert props["timeout"] == {
        "type": "number",
        "description": "Seconds to wait.",
        "exclusiveMinimum": 0,
        "default": 5.0,
    }
    # Annotated sits on the parameter itself, so it wins over the docstring.
    assert props["retries"]["description"] == "From Annotated."
    # Field constraints inside Annotated still validate.
    with pytest.raises(ToolArgumentsError, match=r"timeout: input should be greater than 0"):
        fetch.parse('{"url": "x", "timeout": 0}')


def test_name_and_description_overrides() -> None:
    @tool(name="web-search", description="Search the web.")
    def search(query: str) -> str:
        """Ignored summary."""
        return query

    assert search.name == "web-search"
    assert search.description == "Search the web."
    assert search.schema()["function"]["name"] == "web-search"
    assert search.parse('{"query": "q"}') == {"query": "q"}


@pytest.mark.parametrize("bad", ["", "has space", "dot.name", "x" * 65, "ünïcode"])
def test_invalid_names_are_rejected(bad: str) -> None:
    def f(x: int) -> int:
        return x

    with pytest.raises(WorkflowDefinitionError, match="not a valid tool name"):
        tool(name=bad)(f)


def test_a_name_of_64_characters_is_accepted() -> None:
    def f(x: int) -> int:
        return x

    assert tool(f, name="a" * 64).name == "a" * 64


def test_lambda_needs_a_name() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"no usable name; pass name="):
        tool(lambda: "x")
    named = tool(lambda: "x", name="constant")
    assert named.name == "constant"


# -- definition errors ----------------------------------------------------------


class Service:
    @staticmethod
    def helper(x: int) -> int:
        return x + 1

    def lookup(self, key: str) -> str:
        return key.upper()


def test_method_needing_self_is_rejected() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"'Service\.lookup'.*takes 'self'"):
        tool(Service.lookup)


async def test_bound_method_and_staticmethod_are_fine() -> None:
    bound = tool(Service().lookup)
    assert bound.name == "lookup"
    assert list(bound.parameters["properties"]) == ["key"]
    assert await bound.invoke(bound.parse('{"key": "k"}')) == "K"

    static = tool(Service.__dict__["helper"])  # the staticmethod object itself
    assert await static.invoke({"x": 1}) == "2"


def test_var_args_and_kwargs_are_rejected() -> None:
    def star(*items: int) -> int:
        return 0

    def double_star(q: str, **extra: int) -> int:
        return 0

    with pytest.raises(WorkflowDefinitionError, match=r"'.*star'.*parameter '\*items'"):
        tool(star)
    with pytest.raises(WorkflowDefinitionError, match=r"double_star'.*parameter '\*\*extra'"):
        tool(double_star)


def test_positional_only_is_rejected() -> None:
    def pos(a: int, /, b: int) -> int:
        return a + b

    with pytest.raises(WorkflowDefinitionError, match=r"pos'.*parameter 'a' is positional-only"):
        tool(pos)


def test_missing_annotation_is_rejected() -> None:
    def loose(a: int, b) -> int:  # type: ignore[no-untyped-def]
        return a

    with pytest.raises(
        WorkflowDefinitionError, match=r"loose'.*parameter 'b' has no type annotation"
    ):
        tool(loose)


def test_unsupported_type_names_the_parameter() -> None:
    def weird(ok: int, thing: Opaque) -> int:
        return ok

    with pytest.raises(WorkflowDefinitionError, match=r"weird'.*parameter 'thing' has a type"):
        tool(weird)


def test_unresolvable_annotation_is_rejected() -> None:
    def broken(x: NoSuchType) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 0

    with pytest.raises(
        WorkflowDefinitionError, match=r"broken'.*parameter 'x': NameError.*NoSuchType"
    ):
        tool(broken)


def test_only_parameter_annotations_need_to_resolve() -> None:
    def local_result(x: int) -> NoSuchResult:  # type: ignore[name-defined]  # noqa: F821
        return x

    made = tool(local_result)
    assert made.parameters["properties"] == {"x": {"type": "integer"}}


def test_other_definition_errors() -> None:
    def f(x: int) -> int:
        return x

    def gen(x: int) -> Any:
        yield x

    with pytest.raises(WorkflowDefinitionError, match="non-callable 42"):
        tool(42)  # type: ignore[call-overload]
    with pytest.raises(WorkflowDefinitionError, match="classmethod"):
        tool(classmethod(f))  # type: ignore[call-overload,arg-type]
    with pytest.raises(WorkflowDefinitionError, match="may not be a generator"):
        tool(gen)
    with pytest.raises(WorkflowDefinitionError, match="tool 'f': approval must be"):
        tool(f, approval="sometimes")  # type: ignore[call-overload]
    with pytest.raises(WorkflowDefinitionError, match="tool 'f': errors must be"):
        tool(f, errors="ignore")  # type: ignore[call-overload]

    async def async_check(args: dict[str, Any]) -> bool:
        return True

    with pytest.raises(WorkflowDefinitionError, match="approval callable must be synchronous"):
        tool(f, approval=async_check)  # type: ignore[arg-type]


# -- parsing --------------------------------------------------------------------


@tool
def search(query: str, limit: int = 10) -> list[str]:
    return [query] * limit


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"query": ', "not valid JSON ("),
        ("[1, 2]", "expected a JSON object, got an array"),
        ('"tea"', "expected a JSON object, got a string"),
        ("null", "expected a JSON object, got null"),
        ('{"limit": 3}', "query: field required"),
        ('{"query": "x", "page": 2}', "page: unknown argument; the arguments are: query, limit"),
        ('{"query": "x", "limit": "ten"}', "limit: input should be a valid integer"),
        ('{"query": ["x"]}', "query: input should be a valid string"),
    ],
)
def test_parse_errors_are_written_for_the_model(text: str, problem: str) -> None:
    with pytest.raises(ToolArgumentsError) as info:
        search.parse(text)
    message = str(info.value)
    assert message.startswith("invalid arguments for tool 'search': ")
    assert problem in message
    assert "pydantic" not in message
    assert "\n" not in message
    assert info.value.tool_name == "search"
    assert isinstance(info.value, StepgraphError)
    assert info.value.__cause__ is None


def test_parse_reports_every_bad_argument_at_once() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        search.parse('{"limit": "ten", "extra": 1}')
    assert info.value.problems == (
        "query: field required",
        "limit: input should be a valid integer, unable to parse string as an integer",
        "extra: unknown argument; the arguments are: query, limit",
    )


def test_parse_names_nested_locations() -> None:
    @tool
    def draw(points: list[Point]) -> str:
        return ""

    with pytest.raises(ToolArgumentsError, match=r"points\[1\]\.y: field required"):
        draw.parse('{"points": [{"x": 1, "y": 2}, {"x": 3}]}')


def test_empty_argument_text_means_no_arguments() -> None:
    @tool
    def status(verbose: bool = False) -> str:
        return "ok"

    assert status.parse("") == {"verbose": False}
    assert status.parse("  \n") == {"verbose": False}
    with pytest.raises(ToolArgumentsError, match="query: field required"):
        search.parse("")


def test_parse_coerces_json_values() -> None:
    @tool
    def book(day: datetime.date, seats: int, at: datetime.time | None = None) -> str:
        return ""

    assert book.parse('{"day": "2024-05-01", "seats": "3", "at": "09:30"}') == {
        "day": datetime.date(2024, 5, 1),
        "seats": 3,
        "at": datetime.time(9, 30),
    }


# -- invoking -------------------------------------------------------------------


async def test_sync_tool_runs_in_a_worker_thread() -> None:
    seen: list[int] = []

    @tool
    def where() -> str:
        seen.append(threading.get_ident())
        return "done"

    assert await where.invoke({}) == "done"
    assert seen and seen[0] != threading.get_ident()


async def test_sync_tool_does_not_block_the_loop() -> None:
    @tool
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "slept"

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        assert await slow.invoke({"seconds": 0.3}) == "slept"
    finally:
        task.cancel()
    assert ticks >= 5  # a blocked loop would have ticked at most once


async def test_async_tool_is_awaited_on_the_loop() -> None:
    seen: list[int] = []

    @tool
    async def fetch(url: str) -> str:
        seen.append(threading.get_ident())
        await asyncio.sleep(0)
        return f"<html>{url}</html>"

    assert await fetch.invoke(fetch.parse('{"url": "a"}')) == "<html>a</html>"
    assert seen == [threading.get_ident()]


async def test_callable_object_and_partial() -> None:
    class Adder:
        async def __call__(self, a: int, b: int) -> int:
            return a + b

    def scale(factor: int, value: int) -> int:
        return factor * value

    adder = tool(Adder(), name="add")
    assert await adder.invoke(adder.parse('{"a": 1, "b": 2}')) == "3"

    triple = tool(functools.partial(scale, 3), name="triple")
    assert list(triple.parameters["properties"]) == ["value"]
    assert await triple.invoke(triple.parse('{"value": 5}')) == "15"


@dataclasses.dataclass
class Report:
    title: str
    when: datetime.date


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain text", "plain text"),
        ("", ""),
        (None, ""),
        ({"a": [1, 2], "b": None}, '{"a":[1,2],"b":null}'),
        ([1, "x", True], '[1,"x",true]'),
        (42, "42"),
        (Address(street="Main", number=3), '{"street":"Main","number":3}'),
        (Report("Q1", datetime.date(2024, 1, 31)), '{"title":"Q1","when":"2024-01-31"}'),
        (datetime.datetime(2024, 5, 1, 12, 30), '"2024-05-01T12:30:00"'),
        (Color.RED, '"red"'),
        ({"key": Opaque}, '{"key":"<class \'tests.agents.test_tools.Opaque\'>"}'),
        ("naïve ☕", "naïve ☕"),
    ],
)
async def test_return_values_become_text(value: Any, text: str) -> None:
    @tool
    def produce() -> Any:
        return value

    assert await produce.invoke({}) == text


async def test_str_subclass_result_is_a_plain_str() -> None:
    class Shade(str, enum.Enum):  # noqa: UP042 (a str mixin, not StrEnum, on purpose)
        DARK = "dark"

    @tool
    def shade() -> Shade:
        return Shade.DARK

    result = await shade.invoke({})
    assert result == "dark"
    assert type(result) is str


async def test_unencodable_result_falls_back_to_str() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)

    @tool
    def loop() -> Any:
        return cycle

    assert await loop.invoke({}) == "[[...]]"


@dataclasses.dataclass
class Reading:
    name: str
    value: float


async def test_a_result_is_strict_json_for_non_finite_floats_and_lone_surrogates() -> None:
    """A result with NaN or an infinity reached the model as ``NaN``, which
    is no JSON; one with half a character in a list or a key fell back to
    Python's repr (``['caf\\udce9']``). Both are JSON now: non-finite floats
    as pydantic's strings, the half character as U+FFFD."""
    nan, inf = float("nan"), float("inf")
    cases: list[tuple[Any, str]] = [
        ({"a": nan, "b": inf, "c": -inf}, '{"a":"NaN","b":"Infinity","c":"-Infinity"}'),
        ([1.5, nan], '[1.5,"NaN"]'),
        (Reading("t", inf), '{"name":"t","value":"Infinity"}'),
        (["caf\udce9.txt"], '["caf\ufffd.txt"]'),
        ({"caf\udce9": [nan]}, '{"caf\ufffd":["NaN"]}'),
        ((Reading("caf\udce9", -inf),), '[{"name":"caf\ufffd","value":"-Infinity"}]'),
        (Address(street="caf\udce9", number=1), '{"street":"caf\ufffd","number":1}'),
    ]
    for value, text in cases:

        @tool
        def produce() -> Any:
            return value  # noqa: B023 (called at once)

        result = await produce.invoke({})
        assert result == text
        json.loads(result, parse_constant=_no_constant)  # strict JSON


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def test_a_result_with_no_text_of_its_own_is_refused() -> None:
    class Obj:
        pass

    @tool
    def opaque() -> Any:
        return {"found": Obj()}

    with pytest.raises(TypeError, match=r"returned an Obj that has no JSON form and no text"):
        await opaque.invoke({})

    class Named:
        def __str__(self) -> str:
            return "named thing"

    @tool
    def named() -> Any:
        return [Named()]

    assert await named.invoke({}) == '["named thing"]'


async def test_exceptions_propagate_unchanged() -> None:
    class Boom(Exception):
        pass

    @tool
    def sync_fail() -> str:
        raise Boom("sync")

    @tool
    async def async_fail() -> str:
        raise Boom("async")

    with pytest.raises(Boom, match="sync"):
        await sync_fail.invoke({})
    with pytest.raises(Boom, match="async"):
        await async_fail.invoke({})


def test_tool_error_text() -> None:
    assert (
        tool_error_text("send_email", ValueError("no such address"))
        == "tool 'send_email' failed: ValueError: no such address"
    )
    assert tool_error_text("x", KeyError("k")) == "tool 'x' failed: KeyError: 'k'"
    assert tool_error_text("x", RuntimeError()) == "tool 'x' failed: RuntimeError"
    assert tool_error_text("x", OSError("line one\n  line two")) == (
        "tool 'x' failed: OSError: line one line two"
    )
    bad = ToolArgumentsError("search", ["query: field required"])
    assert tool_error_text("search", bad) == (
        "invalid arguments for tool 'search': query: field required"
    )


# -- approval and options -------------------------------------------------------


def test_needs_approval_variants() -> None:
    def f(amount: int) -> str:
        return ""

    assert tool(f).needs_approval({"amount": 1}) is False
    assert tool(f, approval="always").needs_approval({"amount": 1}) is True
    large = tool(f, approval=lambda args: args["amount"] > 100)
    assert large.needs_approval({"amount": 500}) is True
    assert large.needs_approval({"amount": 5}) is False
    truthy = tool(f, approval=lambda args: args["amount"])
    assert truthy.needs_approval({"amount": 3}) is True

    def refuse(args: dict[str, Any]) -> bool:
        raise LookupError("no policy")

    with pytest.raises(LookupError, match="no policy"):
        tool(f, approval=refuse).needs_approval({"amount": 1})


def test_options_are_kept() -> None:
    def f(x: int) -> int:
        return x

    made = tool(f, errors="raise", approval="always")
    assert made.errors == "raise"
    assert made.approval == "always"
    assert made.fn is f
    assert tool(f).errors == "report"
    assert repr(made) == "<Tool 'f'>"


# -- as_tools -------------------------------------------------------------------


def test_as_tools_accepts_tools_and_functions() -> None:
    def ping(host: str) -> str:
        return host

    tools = as_tools([search, ping])
    assert list(tools) == ["search", "ping"]
    assert tools["search"] is search
    assert isinstance(tools["ping"], Tool)
    assert tools["ping"].fn is ping
    assert as_tools([]) == {}


def test_as_tools_rejects_duplicates_and_non_callables() -> None:
    def other() -> str:
        return ""

    with pytest.raises(WorkflowDefinitionError, match="two tools are named 'search'"):
        as_tools([search, tool(other, name="search")])
    with pytest.raises(WorkflowDefinitionError, match="not a tool or a function: 'search'"):
        as_tools([search, "search"])  # type: ignore[list-item]


def test_an_agent_given_one_tool_instead_of_a_list_is_told_so() -> None:
    from stepgraph import Agent
    from stepgraph.testing import ScriptedModel

    for one, kind in ((search, "Tool"), (search.fn, "function")):
        with pytest.raises(
            WorkflowDefinitionError,
            match=rf"agent 'a': tools takes a list .*got one {kind}: put it in a list",
        ):
            Agent("a", model=ScriptedModel(["x"]), tools=one)
    with pytest.raises(WorkflowDefinitionError, match="agent 'a': tools takes a list .*not int"):
        Agent("a", model=ScriptedModel(["x"]), tools=5)  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="not a dict .*pass its values"):
        Agent("a", model=ScriptedModel(["x"]), tools={"search": search})  # type: ignore[arg-type]
