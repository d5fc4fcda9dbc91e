"""JSON log lines: the trace of the work being done on each, exceptions as structured fields."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from metallica import tracing
from metallica.threads import in_thread
from metallica.web.logging import MAX_FRAMES, json_handler

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

Lines = Callable[[], list[dict[str, Any]]]


class Boom(Exception):
    pass


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    named = logging.getLogger("tests.json_logging")
    named.setLevel(logging.DEBUG)
    named.propagate = False
    yield named
    named.handlers.clear()
    named.propagate = True
    named.setLevel(logging.NOTSET)


@pytest.fixture
def lines(logger: logging.Logger) -> Lines:
    stream = io.StringIO()
    logger.addHandler(json_handler(stream))
    return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]


def inner() -> None:
    raise Boom("the inner failure")


def middle() -> None:
    try:
        inner()
    except Boom as error:
        raise ValueError("what the caller sees") from error


def test_an_exception_is_a_structured_field_with_its_frames_and_cause(
    logger: logging.Logger, lines: Lines
) -> None:
    try:
        middle()
    except ValueError:
        logger.exception("tests.failed", extra={"step": "generate"})
    (line,) = lines()
    assert (line["event"], line["level"], line["step"]) == ("tests.failed", "error", "generate")
    exception = line["exception"]
    assert isinstance(exception, dict)
    assert (exception["type"], exception["message"]) == ("ValueError", "what the caller sees")
    frames = exception["frames"]
    assert [frame["function"] for frame in frames] == [
        "test_an_exception_is_a_structured_field_with_its_frames_and_cause",
        "middle",
    ]
    assert all(frame["file"] == __file__ for frame in frames)
    assert all(isinstance(frame["line"], int) and frame["line"] > 0 for frame in frames)
    assert set(frames[0]) == {"file", "line", "function"}  # no locals, no source text
    cause = exception["cause"]
    assert cause["type"] == f"{__name__}.Boom"
    assert cause["message"] == "the inner failure"
    assert [frame["function"] for frame in cause["frames"]] == ["middle", "inner"]
    assert "cause" not in cause


def test_an_exception_raised_while_handling_another_keeps_it_unless_suppressed(
    logger: logging.Logger, lines: Lines
) -> None:
    for suppressed in (False, True):
        try:
            try:
                inner()
            except Boom:
                if suppressed:
                    raise KeyError("k") from None
                raise KeyError("k")  # noqa: B904 - the implicit context is the point
        except KeyError as error:
            logger.error("tests.failed", exc_info=error)
    chained, alone = lines()
    assert chained["exception"]["cause"]["type"] == f"{__name__}.Boom"
    assert "cause" not in alone["exception"]


def test_a_group_lists_its_exceptions(logger: logging.Logger, lines: Lines) -> None:
    group = ExceptionGroup("two failed", [Boom("one"), ValueError("two")])
    logger.error("tests.failed", exc_info=group)
    (line,) = lines()
    assert line["exception"]["type"] == "ExceptionGroup"
    members = [(e["type"], e["message"]) for e in line["exception"]["exceptions"]]
    assert members == [(f"{__name__}.Boom", "one"), ("ValueError", "two")]


def test_a_deep_stack_keeps_its_innermost_frames(logger: logging.Logger, lines: Lines) -> None:
    def recurse(depth: int) -> None:
        if depth == 0:
            inner()
        recurse(depth - 1)

    try:
        recurse(MAX_FRAMES + 10)
    except Boom:
        logger.exception("tests.failed")
    frames = lines()[0]["exception"]["frames"]
    assert len(frames) == MAX_FRAMES
    assert frames[-1]["function"] == "inner"


def test_a_line_without_an_exception_has_no_exception_field(
    logger: logging.Logger, lines: Lines
) -> None:
    logger.info("tests.plain", extra={"count": 3})
    (line,) = lines()
    assert "exception" not in line
    assert line["count"] == 3
    assert "trace_id" not in line  # outside any trace


def test_lines_carry_the_current_trace_first_after_the_event(
    logger: logging.Logger, lines: Lines
) -> None:
    trace = tracing.from_header(TRACEPARENT)
    token = tracing.current.set(trace)
    try:
        logger.info("tests.traced", extra={"count": 1})
    finally:
        tracing.current.reset(token)
    logger.info("tests.untraced")
    traced, untraced = lines()
    assert (traced["trace_id"], traced["span_id"]) == (trace.trace_id, trace.span_id)
    assert list(traced)[:6] == ["time", "level", "logger", "event", "trace_id", "span_id"]
    assert "trace_id" not in untraced


def test_lines_logged_on_the_storage_threads_carry_the_callers_trace(
    logger: logging.Logger, lines: Lines
) -> None:
    trace = tracing.from_header(TRACEPARENT)

    async def serve() -> None:
        tracing.current.set(trace)  # in this task's context only
        await in_thread(logger.info, "tests.from_a_thread")
        await asyncio.gather(*(in_thread(logger.info, "tests.from_a_thread") for _ in range(4)))

    asyncio.run(serve())
    found = lines()
    assert len(found) == 5
    assert {(line["trace_id"], line["span_id"]) for line in found} == {
        (trace.trace_id, trace.span_id)
    }
