"""Metallica: run workflows across services that fail.

protools (the orchestrator) records every workflow as events, delivers its calls to the
password-generator and the mail-sender through a transactional outbox, and answers repeated
commands from its command store.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
