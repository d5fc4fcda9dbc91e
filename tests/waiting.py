"""Waiting on a condition, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    """Whether ``condition`` holds within ``seconds`` (checked every 20 ms)."""
    until = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > until:
            return False
        time.sleep(0.02)
    return True
