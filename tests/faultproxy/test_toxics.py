"""Toxic definitions: defaults, validation, and the JSON they are read from and shown as."""

from __future__ import annotations

from typing import Any

import pytest

from metallica.errors import InvalidInput
from metallica.faultproxy import (
    TOXIC_TYPES,
    Bandwidth,
    Down,
    InvalidProxy,
    InvalidToxic,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    Timeout,
    Toxic,
    describe_toxic,
    format_address,
    parse_address,
    parse_toxic,
)

EXAMPLES: list[Toxic] = [
    Latency(latency_ms=100, jitter_ms=10, direction="both", toxicity=0.5),
    Down(),
    Timeout(timeout_ms=250, direction="upstream"),
    ResetPeer(name="rst", timeout_ms=5),
    LimitData(bytes=1000),
    Slicer(average_size=10, size_variation=5, delay_us=100),
    Bandwidth(rate_kb_per_s=64, name="slow-link"),
]


def test_every_type_has_an_example() -> None:
    assert {toxic.kind for toxic in EXAMPLES} == set(TOXIC_TYPES)


def test_defaults_name_after_the_type_and_pick_a_direction() -> None:
    latency = Latency(latency_ms=5)
    assert (latency.name, latency.direction, latency.toxicity) == ("latency", "downstream", 1.0)
    assert latency.attributes == {"latency_ms": 5, "jitter_ms": 0}
    # Connection-wide faults act both ways unless told otherwise.
    assert Timeout().direction == "both"
    assert ResetPeer().direction == "both"
    assert Down().direction == "both"
    assert LimitData(bytes=1).direction == "downstream"


def test_directions_select_flows() -> None:
    assert Latency(latency_ms=1).applies_to("downstream")
    assert not Latency(latency_ms=1).applies_to("upstream")
    assert Latency(latency_ms=1, direction="upstream").applies_to("upstream")
    both = Latency(latency_ms=1, direction="both")
    assert both.applies_to("upstream")
    assert both.applies_to("downstream")


@pytest.mark.parametrize("toxic", EXAMPLES, ids=lambda toxic: toxic.kind)
def test_json_round_trip(toxic: Toxic) -> None:
    document = describe_toxic(toxic)
    assert document["type"] == toxic.kind
    assert parse_toxic(document) == toxic


def test_json_fields_are_optional_except_type_and_required_attributes() -> None:
    assert parse_toxic({"type": "down"}) == Down()
    assert parse_toxic({"type": "timeout", "attributes": None}) == Timeout()
    assert parse_toxic({"type": "latency", "attributes": {"latency_ms": 3}}) == Latency(
        latency_ms=3
    )


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"type": "earthquake"}, "type"),
        ({}, "type"),
        ({"type": 3}, "type"),
        ({"type": "latency"}, "latency_ms"),
        ({"type": "latency", "attributes": {"latency_ms": 1, "jitter": 2}}, "jitter"),
        ({"type": "latency", "attributes": {"latency_ms": -1}}, "latency_ms"),
        ({"type": "latency", "attributes": {"latency_ms": 1.5}}, "latency_ms"),
        ({"type": "latency", "attributes": {"latency_ms": True}}, "latency_ms"),
        ({"type": "latency", "attributes": {"latency_ms": "100"}}, "latency_ms"),
        ({"type": "latency", "attributes": {"latency_ms": 10**12}}, "latency_ms"),
        ({"type": "latency", "attributes": [1]}, "attributes"),
        ({"type": "down", "attributes": {"timeout_ms": 1}}, "timeout_ms"),
        ({"type": "timeout", "direction": "sideways"}, "direction"),
        ({"type": "timeout", "toxicity": 1.5}, "toxicity"),
        ({"type": "timeout", "toxicity": -0.1}, "toxicity"),
        ({"type": "timeout", "toxicity": "1"}, "toxicity"),
        ({"type": "timeout", "toxicity": float("nan")}, "toxicity"),
        ({"type": "timeout", "name": "has space"}, "name"),
        ({"type": "timeout", "name": "x" * 65}, "name"),
        ({"type": "timeout", "stream": "upstream"}, "stream"),
        ({"type": "slicer", "attributes": {"average_size": 0}}, "average_size"),
        ({"type": "slicer", "attributes": {"average_size": 4, "size_variation": 4}}, None),
        ({"type": "bandwidth", "attributes": {"rate_kb_per_s": 0}}, "rate_kb_per_s"),
        ({"type": "limit_data", "attributes": {"bytes": -5}}, "bytes"),
        ({"type": "down", "toxicity": 0.5}, None),
    ],
)
def test_invalid_toxics_are_refused(document: dict[str, Any], field: str | None) -> None:
    with pytest.raises(InvalidToxic) as caught:
        parse_toxic(document)
    error = caught.value
    # A 422 problem for the control API, a ValueError for Python callers.
    assert isinstance(error, InvalidInput)
    assert isinstance(error, ValueError)
    assert error.status == 422
    assert error.code == "invalid-toxic"
    if field is not None:
        assert error.extensions["field"] == field


def test_constructors_validate_too() -> None:
    with pytest.raises(InvalidToxic):
        Latency(latency_ms=-1)
    with pytest.raises(InvalidToxic):
        Slicer(average_size=5, size_variation=9)
    with pytest.raises(TypeError):
        Toxic()


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:5432", ("::1", 5432)),
        ("db.internal:5432", ("db.internal", 5432)),
    ],
)
def test_addresses_parse_and_format(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text, "listen") == address
    assert format_address(*address) == text


@pytest.mark.parametrize("text", ["nohost", ":80", "host:", "host:http", "host:70000", "", 80])
def test_bad_addresses_are_refused(text: object) -> None:
    with pytest.raises(InvalidProxy) as caught:
        parse_address(text, "upstream")
    assert caught.value.extensions["field"] == "upstream"
