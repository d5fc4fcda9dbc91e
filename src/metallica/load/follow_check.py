"""The followers' checker, in the style of Jepsen's queue checkers: what the store holds against
what a follower received, as lost, duplicated, unexpected (never stored, or stored otherwise),
out of order within a workflow, and (for a follower of the whole log in order) positions that
did not increase. Pure: the lab records, this judges."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Seen:
    """An event as stored, or as a follower received it."""

    position: int
    workflow_id: str
    version: int


@dataclass
class FollowReport:
    """What one follower got wrong; ``duplicated`` is a fault only for a follower promised
    exactly once (the stream), not for a consumer group (at least once)."""

    follower: str
    stored: int
    received: int
    lost: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)  # workflows
    non_monotonic: list[int] = field(default_factory=list)  # positions received too late
    duplicates_allowed: bool = False

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.out_of_order
            or self.non_monotonic
            or (self.duplicated and not self.duplicates_allowed)
        )

    def __str__(self) -> str:
        parts = [f"{self.follower}: {self.received} received of {self.stored} stored"]
        for name in ("lost", "duplicated", "unexpected", "out_of_order", "non_monotonic"):
            found = getattr(self, name)
            if found:
                parts.append(f"{len(found)} {name.replace('_', ' ')} (first: {found[:5]})")
        return "; ".join(parts)


def check_follow(
    follower: str,
    stored: Sequence[Seen],
    received: Sequence[Seen],
    *,
    in_log_order: bool,
    duplicates_allowed: bool = False,
) -> FollowReport:
    """Judge ``received`` against ``stored``. ``in_log_order``: the follower was promised the
    whole log in position order (a stream), so each position must be above the one before;
    otherwise only each workflow's order counts (a consumer group's members interleave)."""
    by_position = {event.position: event for event in stored}
    counts = Counter(event.position for event in received)
    report = FollowReport(
        follower, len(stored), len(received), duplicates_allowed=duplicates_allowed
    )
    report.lost = sorted(set(by_position) - set(counts))
    report.duplicated = sorted(position for position, n in counts.items() if n > 1)
    report.unexpected = sorted(
        {event.position for event in received if by_position.get(event.position) != event}
    )
    if in_log_order:
        report.non_monotonic = [
            later.position
            for earlier, later in itertools.pairwise(received)
            if later.position <= earlier.position
        ]
    first_seen: dict[str, list[int]] = {}
    sighted: set[int] = set()
    for event in received:
        if event.position not in sighted:
            sighted.add(event.position)
            first_seen.setdefault(event.workflow_id, []).append(event.version)
    report.out_of_order = sorted(
        workflow for workflow, versions in first_seen.items() if versions != sorted(versions)
    )
    return report
