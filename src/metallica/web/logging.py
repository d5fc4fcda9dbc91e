"""Log lines as JSON: the message is a stable event name, the fields come from ``extra=``.

Every line written while a request is served or a workflow delivered carries its ``trace_id``
and ``span_id`` (:mod:`metallica.tracing`): :class:`TraceFilter` reads them from the writer's
context as the line is handled, in the writer's thread (the storage calls run on threads that
keep the context: :func:`metallica.threads.in_thread`). An exception is a structured
field, not one escaped string: its type, message, frames (file, line, function; no locals, no
source text) and the exceptions that caused it.
"""

from __future__ import annotations

import datetime
import json
import logging
import types
from typing import IO, Any

from metallica import tracing

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}
MAX_FRAMES = 64  # the innermost ones, where it failed, are kept
MAX_CAUSES = 4  # links of a chain ("caused by", "while handling") followed
MAX_GROUPED = 8  # exceptions of a group shown


def _frames(traceback: types.TracebackType | None) -> list[dict[str, Any]]:
    frames = []
    while traceback is not None:
        code = traceback.tb_frame.f_code
        frames.append(
            {"file": code.co_filename, "line": traceback.tb_lineno, "function": code.co_name}
        )
        traceback = traceback.tb_next
    return frames[-MAX_FRAMES:]


def exception_fields(error: BaseException, depth: int = 0) -> dict[str, Any]:
    """``error`` as a log field: ``type``, ``message``, ``frames`` (outermost first, as a
    traceback reads), then ``cause`` (what it was raised from, or while handling) and, for a
    group, ``exceptions``."""
    kind = type(error)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    try:
        message = str(error)
    except Exception:
        message = "<unprintable>"
    fields: dict[str, Any] = {
        "type": name,
        "message": message,
        "frames": _frames(error.__traceback__),
    }
    if depth >= MAX_CAUSES:
        return fields
    cause = error.__cause__
    if cause is None and not error.__suppress_context__:
        cause = error.__context__
    if cause is not None:
        fields["cause"] = exception_fields(cause, depth + 1)
    if isinstance(error, BaseExceptionGroup):
        fields["exceptions"] = [
            exception_fields(member, depth + 1) for member in error.exceptions[:MAX_GROUPED]
        ]
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = record.__dict__
        if "trace_id" in fields:  # first after the event, whenever the filter put them last
            line["trace_id"], line["span_id"] = fields["trace_id"], fields.get("span_id")
        line |= {key: value for key, value in fields.items() if key not in _STANDARD}
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = exception_fields(record.exc_info[1])
        return json.dumps(line, default=str)


class TraceFilter(logging.Filter):
    """Puts the current trace's ``trace_id`` and ``span_id`` on each record it passes (a
    handler's filter: it runs in the thread that logs, before any buffering)."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = tracing.current.get()
        if trace is not None and not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = trace.trace_id, trace.span_id
        return True


class StartupRefusalFilter(logging.Filter):
    """A service that refuses to start for a reason of ours (a schema it does not know, a
    database it gave up on: a :class:`metallica.errors.MetallicaError`) says that reason in one
    line, not in the traceback the ASGI lifespan hands uvicorn; other failures keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == "uvicorn.error" and message.startswith("Traceback"):
            last = message.rstrip().rsplit("\n", 1)[-1]
            kind, _, detail = last.partition(": ")
            if kind.startswith("metallica.") and detail:
                record.msg, record.args = "metallica.startup_refused", ()
                record.error = kind.rsplit(".", 1)[-1]
                record.detail = detail
        return True


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing JSON lines, each with its trace, to ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceFilter())
    handler.addFilter(StartupRefusalFilter())
    return handler


def configure(level: str = "INFO") -> None:
    """JSON lines on stderr for the whole process (called from the CLI only)."""
    handler = json_handler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our access line (metallica.access) replaces uvicorn's.
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
