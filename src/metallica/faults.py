"""Named fault points: places inside a service where a test can make it misbehave.

Inert unless the service was started with faults enabled (``METALLICA_FAULTS=1``) and a point
was armed (``POST /v1/faults``). A service calls :meth:`FaultPoints.hit` at each named point; an
armed point then, ``count`` times:

- ``delay``: sleeps ``delay_ms``;
- ``error``: fails the request with ``status`` (500 or 503);
- ``drop``: closes the connection without an answer;
- ``crash``: kills the process on the spot with SIGKILL, as ``kill -9`` would.

A fault may be limited to one attempt number: protools sends each call's attempt in the
``Metallica-Attempt`` header, so "delay every first attempt" lets each retry through, whichever
replica it lands on (DBOS ``_debug_trigger.py`` in spirit).
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from metallica.errors import MetallicaError, ServiceUnavailable

logger = logging.getLogger(__name__)

ACTIONS = ("delay", "error", "drop", "crash")
ATTEMPT_HEADER = "Metallica-Attempt"

# The attempt number of the request being served, when the caller said (protools does).
current_attempt: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "metallica_current_attempt", default=None
)


class InjectedFault(MetallicaError):
    """A fault was injected here on purpose."""

    code = "injected-fault"
    status = 500
    title = "Injected fault"


class InjectedUnavailable(ServiceUnavailable):
    """A fault was injected here on purpose: the service pretends to be unavailable."""

    code = "injected-unavailable"


class InjectedDrop(Exception):
    """Close the connection without an answer (:mod:`metallica.web.app` does it)."""


@dataclass
class Fault:
    point: str
    action: str
    delay_ms: int = 0
    count: int = 1
    status: int = 500
    attempt: int | None = None

    def applies(self) -> bool:
        return self.attempt is None or self.attempt == current_attempt.get()


class FaultPoints:
    """The armed faults of one process. Thread-safe: points are hit from worker threads."""

    def __init__(self, points: tuple[str, ...] = (), *, enabled: bool = False) -> None:
        self.points = points
        self.enabled = enabled
        self._armed: dict[str, Fault] = {}
        self._lock = threading.Lock()

    def arm(self, fault: Fault) -> None:
        if not self.enabled:
            raise MetallicaError("fault injection is disabled (start with METALLICA_FAULTS=1)")
        with self._lock:
            self._armed[fault.point] = fault

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    @property
    def armed(self) -> bool:
        """Whether any point is armed (a cheap check before hitting points off the event loop)."""
        return bool(self._armed)

    def _take(self, point: str) -> Fault | None:
        with self._lock:
            fault = self._armed.get(point)
            if fault is None or not fault.applies():
                return None
            fault.count -= 1
            if fault.count <= 0:
                del self._armed[point]
            return fault

    def hit(self, point: str) -> None:
        """Misbehave here if ``point`` is armed; otherwise return at once."""
        if not self._armed:
            return
        fault = self._take(point)
        if fault is None:
            return
        logger.warning(
            "metallica.fault_injected",
            extra={"point": point, "action": fault.action, "attempt": current_attempt.get()},
        )
        if fault.action == "delay":
            time.sleep(fault.delay_ms / 1000)
        elif fault.action == "error":
            if fault.status == 503:
                raise InjectedUnavailable(f"fault injected at {point}", retry_after=1)
            raise InjectedFault(f"fault injected at {point}")
        elif fault.action == "drop":
            raise InjectedDrop(point)
        elif fault.action == "crash":
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
