"""What each client was told in the end: the record that a load generator or a lab client keeps
of every command it sent, for the invariant checker (:mod:`metallica.load.checker`), which holds
a client's ``OK`` against the stores.

``OK``: the workflow completed and the client has its password; ``FAILED``: the command was
refused or its workflow failed; ``UNKNOWN``: the client never learnt which (no answer, or still
running when it stopped asking).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"


@dataclass
class ClientRecord:
    """One client command and what its client was told in the end."""

    key: str
    username: str
    told: str = UNKNOWN
    workflow_id: str | None = None
    password: str | None = None
    error: str | None = None
    statuses: list[int | str] = field(default_factory=list)
    posts: int = 0
    refusals: list[str] = field(default_factory=list)  # each 429/503: its code and detail


def summarize(records: Iterable[ClientRecord]) -> dict[str, int]:
    """How many clients were told ok, failed, unknown."""
    told = Counter(record.told for record in records)
    return {outcome: told.get(outcome, 0) for outcome in (OK, FAILED, UNKNOWN)}
