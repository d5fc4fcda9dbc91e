"""W3C Trace Context (``traceparent``): the ids that join the log lines of one request across
the three services.

Each service reads the caller's ``traceparent`` when a request arrives (:func:`from_header`),
keeps the trace in :data:`current` while it serves the request, and every log line written
meanwhile carries its ``trace_id`` and ``span_id`` (:mod:`metallica.web.logging`); protools
passes the trace on to the generator and the mailer (:meth:`TraceContext.child_header`, a new
span id per call). A missing or invalid header starts a new trace: never an error.

No OpenTelemetry SDK: nothing here records or exports spans, and parsing a header and making
ids costs a few microseconds a request, where an SDK's span objects would cost many times that
on the hot path. A deployment that adds the SDK receives and sends the same headers.
``tracestate`` is neither read nor passed on.
"""

from __future__ import annotations

import contextvars
import hashlib
import random
import uuid
from dataclasses import dataclass

TRACEPARENT = "traceparent"
# The answer's own header (W3C Trace Context Level 2): the trace and the span that served it.
TRACERESPONSE = "traceresponse"

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_LENGTH = 55  # "00-" + 32 + "-" + 16 + "-" + 2
SAMPLED = "01"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace a unit of work belongs to: ``span_id`` is this work's own (a request served,
    a delivery), ``parent_id`` the caller's span when it sent one."""

    trace_id: str
    span_id: str
    parent_id: str | None = None
    flags: str = SAMPLED

    def header(self) -> str:
        """This span as a header value (the answer's ``traceresponse``)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child_header(self) -> str:
        """A ``traceparent`` for a call made from here: the same trace, a new span."""
        return f"00-{self.trace_id}-{new_span_id()}-{self.flags}"


# The trace of the work being done (a request, a delivery); None outside of any.
current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "metallica_current_trace", default=None
)


# Ids from a generator of our own, not the process-wide one other code may seed or watch.
_IDS = random.Random()


def new_trace_id() -> str:
    return f"{_IDS.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_IDS.getrandbits(64) or 1:016x}"


def parse(value: bytes | str | None) -> tuple[str, str, str] | None:
    """``(trace_id, parent_id, flags)`` of a valid ``traceparent``; None otherwise.

    Valid: lowercase hex fields separated by ``-``; version ``00`` exactly 55 characters; a
    trace id other than 32 zeros and a parent id other than 16 zeros. A later version (not
    ``ff``) is read for these fields and its sampled flag alone, as the specification asks.
    """
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip(" \t")
    if len(text) < _LENGTH or text[2] != "-" or text[35] != "-" or text[52] != "-":
        return None
    version, trace_id, parent_id, flags = text[:2], text[3:35], text[36:52], text[53:55]
    if not _HEX.issuperset(version + trace_id + parent_id + flags):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == "00":
        if len(text) != _LENGTH:
            return None
    elif version == "ff" or (len(text) > _LENGTH and text[_LENGTH] != "-"):
        return None
    else:
        flags = f"{int(flags, 16) & 1:02x}"  # the only flag this version defines that we know
    return trace_id, parent_id, flags


def from_header(value: bytes | str | None) -> TraceContext:
    """The trace of a request that came with ``traceparent: value`` (None: no header): the
    caller's trace under a new span, or a new trace when the header is missing or invalid."""
    parsed = parse(value)
    if parsed is None:
        return TraceContext(new_trace_id(), new_span_id())
    trace_id, parent_id, flags = parsed
    return TraceContext(trace_id, new_span_id(), parent_id, flags)


def for_workflow(workflow_id: str) -> TraceContext:
    """A trace for work on a workflow outside any request (the relay's retries and
    recoveries): its id is the workflow id's 32 hex digits (a UUID's), so the same on every
    replica and at every attempt, and searchable from the workflow id alone."""
    try:
        trace_id = uuid.UUID(workflow_id).hex
    except ValueError:
        trace_id = _ZERO_TRACE
    if trace_id == _ZERO_TRACE:  # not a UUID (or the nil one): a stable digest of the id
        trace_id = hashlib.sha256(workflow_id.encode()).hexdigest()[:32]
    return TraceContext(trace_id, new_span_id())


def outgoing_header() -> str | None:
    """The ``traceparent`` for a call made now: a child of :data:`current`; None outside a
    trace (the callee then starts its own)."""
    trace = current.get()
    return None if trace is None else trace.child_header()
