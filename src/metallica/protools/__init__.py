"""protools: the orchestrator. Event store, outbox, command store and the workflow engine."""

from __future__ import annotations
