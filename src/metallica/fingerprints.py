"""Fingerprints of command bodies: the same content gives the same fingerprint. Pure.

Command stores keep a body's fingerprint with its key, so a repeat of the key with another body
is told apart from a true repeat.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def fingerprint(payload: Any) -> str:
    """A stable digest of a request body: same content, same fingerprint."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
