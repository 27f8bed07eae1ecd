"""The codec: round trips of every supported type, and hostile input that must
be refused without importing or running anything."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepgraph import CheckpointDecodeError, CheckpointEncodeError
from stepgraph._checkpoint import TypeRegistry, decode, dumps, encode, loads, type_key


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclass(frozen=True)
class Point:
    x: int
    y: float
    tags: tuple[str, ...] = ()


@dataclass
class Box:
    items: list[Point]
    label: str = "box"
    meta: dict[Any, Any] = field(default_factory=dict)
    computed: int = field(default=0, init=False)


class Model(pydantic.BaseModel):
    name: str
    when: dt.datetime
    points: list[int]


class NotRegistered:
    pass


REG = TypeRegistry([Color, Box, Model])  # Box's fields register Point


def roundtrip(value: Any) -> Any:
    return decode(loads(dumps(encode(value, REG))), REG)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(10**30),
        1.5,
        float("inf"),
        float("-inf"),
        "text",
        "",
        [1, [2, [3]]],
        {"a": 1, "b": {"c": [1, 2]}},
        {"$t": "not a tag, a key"},
        {1: "int key", (1, 2): "tuple key", None: "none key", Color.RED: "enum key"},
        (1, "a", (2.0,)),
        (),
        {1, 2, 3},
        frozenset({"a", "b"}),
        b"\x00\xffbytes",
        dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC),
        dt.date(2026, 1, 1),
        dt.time(23, 59, 1, 5),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        decimal.Decimal("3.14159265358979323846"),
        Color.RED,
        Color.BLUE,
        Point(1, 2.5, ("a",)),
        Box([Point(1, 2.0)], meta={(1,): {2}}),
        Model(name="m", when=dt.datetime(2026, 1, 1), points=[1, 2]),
    ],
)
def test_round_trip(value: Any) -> None:
    assert roundtrip(value) == value
    assert type(roundtrip(value)) is type(value)


def test_nan_round_trips() -> None:
    assert roundtrip(float("nan")) != roundtrip(float("nan"))


def test_non_init_fields_survive() -> None:
    box = Box([Point(1, 1.0)])
    box.computed = 7
    assert roundtrip(box).computed == 7


def test_sets_encode_canonically() -> None:
    assert dumps(encode({3, 1, 2}, REG)) == dumps(encode({2, 3, 1}, REG))


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (NotRegistered(), r"state\['k'\]: cannot store a .*NotRegistered"),
        ({"x": [1, object()]}, r"state\['k'\]\['x'\]\[1\]: cannot store a builtins.object"),
        (lambda: 1, r"state\['k'\]: cannot store a .*function"),
        (NotRegistered, r"state\['k'\]: the type .*NotRegistered is neither declared"),
        (list[NotRegistered], r"the type list\[.*NotRegistered\] is neither declared"),
    ],
)
def test_unsupported_values_name_their_path(value: Any, pattern: str) -> None:
    with pytest.raises(CheckpointEncodeError, match=pattern):
        encode(value, REG, "state['k']")


def test_registered_types_are_stored_by_reference() -> None:
    registry = TypeRegistry([Point, list[int], bool])
    for tp in (Point, list[int], bool):
        encoded = encode(tp, registry)
        assert encoded == {"$t": "type", "v": type_key(tp)}
        assert decode(loads(dumps(encoded)), registry) == tp
    with pytest.raises(CheckpointDecodeError, match="neither declares nor registers"):
        decode({"$t": "type", "v": "os.system"}, registry)


def test_unregistered_dataclass_is_refused_on_encode() -> None:
    @dataclass
    class Local:
        a: int

    with pytest.raises(CheckpointEncodeError, match="neither declared .* nor registered"):
        encode(Local(1), REG, "msg")


HOSTILE: list[tuple[str, bytes]] = [
    ("pickle bytes", b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system"),
    ("os.system dataclass", json.dumps({"$t": "dataclass", "type": "os.system", "v": {}}).encode()),
    (
        "subprocess enum",
        json.dumps({"$t": "enum", "type": "subprocess.Popen", "v": ["ls"]}).encode(),
    ),
    ("builtins.eval", json.dumps({"$t": "pydantic", "type": "builtins.eval", "v": "1+1"}).encode()),
    (
        "dotted path",
        json.dumps(
            {"$t": "dataclass", "type": "importlib.import_module", "v": {"name": "antigravity"}}
        ).encode(),
    ),
    ("unknown tag", json.dumps({"$t": "pickle", "v": "x"}).encode()),
    (
        "tag with extra keys",
        json.dumps({"$t": "tuple", "v": [], "__reduce__": "os.system"}).encode(),
    ),
    ("tag not a string", json.dumps({"$t": ["os", "system"], "v": 1}).encode()),
    ("wrong payload type", json.dumps({"$t": "timedelta", "v": "1 day"}).encode()),
    ("bad base64", json.dumps({"$t": "bytes", "v": "!!!"}).encode()),
    ("bad date", json.dumps({"$t": "datetime", "v": "yesterday"}).encode()),
    ("unhashable key", json.dumps({"$t": "map", "v": [[[1], 2]]}).encode()),
    ("NaN literal", b"NaN"),
    ("truncated", b'{"$t": "tuple", "v": [1, 2'),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000),
    ("deeply nested tags", (b'{"$t":"tuple","v":[' * 300) + (b"]}" * 300)),
    ("huge int", b"9" * 100_000),
    ("not utf-8", b'"\xff\xfe"'),
    (
        "dataclass unknown field",
        json.dumps(
            {
                "$t": "dataclass",
                "type": f"{Point.__module__}.Point",
                "v": {"x": 1, "y": 1.0, "__class__": "os"},
            }
        ).encode(),
    ),
]


@pytest.mark.parametrize(("name", "data"), HOSTILE, ids=[n for n, _ in HOSTILE])
def test_hostile_input_is_refused_without_side_effects(name: str, data: bytes) -> None:
    modules_before = set(sys.modules)
    with pytest.raises(CheckpointDecodeError):
        decode(loads(data), REG)
    assert set(sys.modules) == modules_before, set(sys.modules) - modules_before


def test_pickle_payload_in_a_bytes_field_stays_inert_bytes() -> None:
    payload = "gASVHwAAAAAAAACMAm9zlIwGc3lzdGVtlJOU"  # a pickle of os.system
    modules_before = set(sys.modules)
    value = decode(loads(json.dumps({"$t": "bytes", "v": payload}).encode()), REG)
    assert type(value) is bytes and value.startswith(b"\x80\x04")
    assert set(sys.modules) == modules_before


def test_decoding_names_the_unknown_type() -> None:
    data = json.dumps({"$t": "dataclass", "type": "os.system", "v": {}}).encode()
    with pytest.raises(CheckpointDecodeError, match="'os.system'"):
        decode(loads(data), REG)


def test_registered_type_of_the_wrong_kind_is_refused() -> None:
    data = json.dumps({"$t": "enum", "type": f"{Box.__module__}.Box", "v": 1}).encode()
    with pytest.raises(CheckpointDecodeError, match="is not an Enum"):
        decode(loads(data), REG)


def test_oversized_document_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from stepgraph._checkpoint import _codec

    monkeypatch.setattr(_codec, "MAX_DOCUMENT_BYTES", 10)
    with pytest.raises(CheckpointDecodeError, match="exceeds the limit"):
        loads(b"[1, 2, 3, 4, 5, 6]")


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.datetimes()
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.sampled_from(Color)
    | st.builds(Point, st.integers(), st.floats(allow_nan=False), st.tuples(st.text()))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.dictionaries(st.integers() | st.tuples(st.integers()), inner, max_size=3)
        | st.frozensets(st.integers() | st.text(), max_size=4)
        | st.sets(st.integers(), max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_round_trip_property(value: Any) -> None:
    assert roundtrip(value) == value
    assert dumps(encode(roundtrip(value), REG)) == dumps(encode(value, REG))


@settings(max_examples=100, deadline=None)
@given(values)
def test_reused_json_writer_matches_the_standard_library(value: Any) -> None:
    """The writer built once (C accelerator) and its pure-Python fallback
    write exactly what ``json.dumps`` writes with the same options."""
    encoded = encode(value, REG)
    expected = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert dumps(encoded) == expected.encode("utf-8")
    fallback = _json_writer_without_accelerator(sort_keys=True)
    assert fallback(encoded) == expected.encode("utf-8")


def _json_writer_without_accelerator(sort_keys: bool) -> Any:
    import json.encoder

    from stepgraph._checkpoint import _codec

    saved = json.encoder.c_make_encoder
    json.encoder.c_make_encoder = None  # type: ignore[attr-defined]
    try:
        return _codec._json_writer(sort_keys)
    finally:
        json.encoder.c_make_encoder = saved  # type: ignore[attr-defined]
