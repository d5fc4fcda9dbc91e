"""W3C ``traceparent``: what is accepted, what starts a new trace, what is sent on."""

from __future__ import annotations

import uuid

import pytest

from metallica import tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


def is_hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in "0123456789abcdef" for c in value)


def test_a_valid_header_gives_its_trace_parent_and_flags() -> None:
    assert tracing.parse(VALID) == (TRACE, PARENT, "01")
    assert tracing.parse(VALID.encode()) == (TRACE, PARENT, "01")
    assert tracing.parse(f"00-{TRACE}-{PARENT}-00") == (TRACE, PARENT, "00")
    assert tracing.parse(f" {VALID}\t") == (TRACE, PARENT, "01")  # optional white space


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        VALID[:-1],  # too short
        VALID + "-extra",  # version 00 is exactly 55 characters
        VALID.upper(),  # lowercase hex only
        f"00-{TRACE.upper()}-{PARENT}-01",
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"0g-{TRACE}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-0x",
        f"00_{TRACE}_{PARENT}_01",
        f"00-{TRACE[:-1]}-{PARENT}0-01",  # fields in the wrong places
        f"00-{TRACE}-{PARENT}-01".replace("-", "\u2010"),
    ],
)
def test_an_invalid_header_is_refused(value: str | None) -> None:
    assert tracing.parse(value) is None


def test_a_later_version_is_read_for_the_fields_it_shares() -> None:
    assert tracing.parse(f"01-{TRACE}-{PARENT}-03") == (TRACE, PARENT, "01")
    assert tracing.parse(f"cc-{TRACE}-{PARENT}-02-what-comes-next") == (TRACE, PARENT, "00")
    assert tracing.parse(f"01-{TRACE}-{PARENT}-01x") is None  # more, but not after a dash


def test_a_request_with_a_valid_header_continues_the_callers_trace_in_a_new_span() -> None:
    trace = tracing.from_header(VALID.encode())
    assert (trace.trace_id, trace.parent_id, trace.flags) == (TRACE, PARENT, "01")
    assert is_hex(trace.span_id, 16)
    assert trace.span_id != PARENT
    assert tracing.parse(trace.header()) == (TRACE, trace.span_id, "01")


@pytest.mark.parametrize("value", [None, b"", b"nonsense", f"00-{'0' * 32}-{PARENT}-01".encode()])
def test_a_missing_or_invalid_header_starts_a_new_trace(value: bytes | None) -> None:
    first, second = tracing.from_header(value), tracing.from_header(value)
    assert is_hex(first.trace_id, 32)
    assert first.trace_id not in (TRACE, "0" * 32)
    assert first.trace_id != second.trace_id
    assert first.parent_id is None
    assert tracing.parse(first.header()) is not None


def test_a_call_carries_the_trace_under_a_new_span_each_time() -> None:
    trace = tracing.from_header(VALID)
    headers = [trace.child_header(), trace.child_header()]
    parsed = [tracing.parse(header) for header in headers]
    assert [p[0] if p else None for p in parsed] == [TRACE, TRACE]
    spans = {p[1] for p in parsed if p}
    assert len(spans) == 2
    assert trace.span_id not in spans


def test_calls_outside_any_trace_send_no_header() -> None:
    assert tracing.current.get() is None
    assert tracing.outgoing_header() is None
    token = tracing.current.set(tracing.from_header(VALID))
    try:
        header = tracing.outgoing_header()
    finally:
        tracing.current.reset(token)
    assert header is not None
    assert tracing.parse(header) is not None
    assert header.startswith(f"00-{TRACE}-")


def test_a_workflows_trace_is_its_id_the_same_at_every_delivery() -> None:
    workflow_id = str(uuid.uuid4())
    first, second = tracing.for_workflow(workflow_id), tracing.for_workflow(workflow_id)
    assert first.trace_id == second.trace_id == uuid.UUID(workflow_id).hex
    assert first.span_id != second.span_id
    other = tracing.for_workflow("not-a-uuid")
    assert is_hex(other.trace_id, 32)
    assert other.trace_id == tracing.for_workflow("not-a-uuid").trace_id
    assert is_hex(tracing.for_workflow(str(uuid.UUID(int=0))).trace_id, 32)
    assert tracing.for_workflow(str(uuid.UUID(int=0))).trace_id != "0" * 32
