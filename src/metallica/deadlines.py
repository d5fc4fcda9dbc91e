"""Deadlines that travel with a call: the caller says how long it will still wait.

protools sends every call with ``X-Deadline-Ms``: the milliseconds it will wait for the answer,
counted from when it sent the request (relative, so the two machines' clocks never need to
agree). A service turns it into a deadline on its own monotonic clock when the request arrives,
and checks it (:func:`check`) just before it starts the work: work nobody waits for any more is
dropped with a clear 503 ``deadline-passed`` instead of being done for nothing, which under
overload is most of what a queue holds.
"""

from __future__ import annotations

import contextvars
import time

from metallica.errors import DeadlinePassed

DEADLINE_HEADER = "X-Deadline-Ms"

# The monotonic time past which nobody waits for the request being served, if its caller said.
current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "metallica_current_deadline", default=None
)


def parse(value: bytes | str | None, *, now: float | None = None) -> float | None:
    """The deadline a header value gives, on this process's monotonic clock; None when the
    value is absent or not a non-negative number of milliseconds."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    try:
        milliseconds = float(text)
    except ValueError:
        return None
    if not milliseconds >= 0 or milliseconds == float("inf"):
        return None
    return (time.monotonic() if now is None else now) + milliseconds / 1000


def header_value(seconds: float) -> str:
    """The header value for a caller that will wait ``seconds`` more."""
    return str(max(0, int(seconds * 1000)))


def check() -> None:
    """Raise :class:`DeadlinePassed` if the caller of the request being served gave up."""
    deadline = current_deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlinePassed()
