"""Named fault points: places inside a service where a test can make it misbehave.

Inert unless the service was started with faults enabled and a point was armed. A service
calls :meth:`FaultPoints.hit` at each named point; an armed point delays, fails, or kills the
process there, ``count`` times (DBOS ``_debug_trigger.py`` in spirit).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from metallica.errors import MetallicaError

logger = logging.getLogger(__name__)

ACTIONS = ("delay", "error", "drop", "crash")


class InjectedFault(MetallicaError):
    """A fault was injected here on purpose."""

    code = "injected-fault"
    status = 500
    title = "Injected fault"


class InjectedDrop(Exception):
    """Close the connection without an answer (the HTTP layer does it)."""


@dataclass
class Fault:
    point: str
    action: str
    delay_ms: int = 0
    count: int = 1
    status: int = 500


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

    def _take(self, point: str) -> Fault | None:
        with self._lock:
            fault = self._armed.get(point)
            if fault is None:
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
        logger.warning("metallica.fault_injected", extra={"point": point, "action": fault.action})
        if fault.action == "delay":
            time.sleep(fault.delay_ms / 1000)
        elif fault.action == "error":
            error = InjectedFault(f"fault injected at {point}")
            error.status = fault.status  # type: ignore[misc]
            raise error
        elif fault.action == "drop":
            raise InjectedDrop(point)
        elif fault.action == "crash":
            os._exit(137)
