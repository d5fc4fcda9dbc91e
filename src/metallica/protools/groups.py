"""Consumer groups, the pure part: a group's settings, which pending events a pull hands out,
and when an event is tried again or parked. No I/O here (:mod:`.subscriptions` does that).

The knobs are those NATS JetStream consumers and EventStoreDB persistent subscriptions share,
under JetStream's names and, where they fit, its defaults:

* ``ack_wait`` (JetStream ``AckWait``, 30 s): how long a member has to ack an event before it
  is handed out again; a member may extend it (JetStream's "in progress").
* ``max_deliver`` (JetStream ``MaxDeliver``; EventStoreDB's ``maxRetryCount``, whose default of
  10 we take, since JetStream's is unlimited and an event must be able to be parked): after
  that many deliveries without an ack, the event is **parked** for this group, listed and
  replayed on request (EventStoreDB's parked messages).
* ``max_ack_pending`` (JetStream ``MaxAckPending``, 1,000): the most events leased to one member
  at a time.
* a nack without a delay backs off like JetStream's ``BackOff``: 1 s doubled per delivery, 60 s
  at most.

**Order per workflow, work shared.** A workflow's events go to one member at a time, in log
order: a pull hands out an event only when every earlier event of its workflow that the group
has yet to finish is in the same batch (an earlier one leased to someone, or waiting for its
redelivery, holds the workflow back). A parked event holds nothing back: it is out of the
order, and a replayed one comes back out of order (as in EventStoreDB). Events of different
workflows go to whichever member asks first, each to one member only while its lease lasts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metallica.errors import InvalidInput

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

ACK_WAIT_DEFAULT, ACK_WAIT_MIN, ACK_WAIT_MAX = 30.0, 0.1, 43_200.0
MAX_DELIVER_DEFAULT, MAX_DELIVER_MAX = 10, 1_000
MAX_ACK_PENDING_DEFAULT, MAX_ACK_PENDING_MAX = 1_000, 100_000
BATCH_DEFAULT, BATCH_MAX = 10, 1_000
PULL_WAIT_MAX = 30.0
POSITIONS_MAX = 1_000  # positions one ack, nack or extend may name
NACK_DELAY_MAX = 3_600.0
BACKOFF_INITIAL, BACKOFF_MAX = 1.0, 60.0
TYPES_MAX = 20
# Events a group keeps pending (not parked) at most: a pull reads no further into the log
# while this many wait; the group's lag shows it.
PENDING_MAX = 5_000
STARTS = ("start", "end")


@dataclass(frozen=True)
class GroupSettings:
    """How a group delivers: see the module's docstring for each knob."""

    types: tuple[str, ...] = ()
    ack_wait: float = ACK_WAIT_DEFAULT
    max_deliver: int = MAX_DELIVER_DEFAULT
    max_ack_pending: int = MAX_ACK_PENDING_DEFAULT

    def as_json(self) -> dict[str, Any]:
        return {
            "types": list(self.types),
            "ack_wait": self.ack_wait,
            "max_deliver": self.max_deliver,
            "max_ack_pending": self.max_ack_pending,
        }


@dataclass(frozen=True)
class Pending:
    """An event a group has yet to finish, as a pull sees it (times by the database's clock)."""

    position: int
    stream_id: str
    deliveries: int
    member: str | None
    leased_until: float | None
    due_at: float

    def free(self, now: float) -> bool:
        """Nobody holds it and it is due."""
        return (self.leased_until is None or self.leased_until <= now) and self.due_at <= now


def choose(pending: Iterable[Pending], now: float, limit: int) -> list[Pending]:
    """The events a pull hands out, at most ``limit``, in log order: for each workflow, its
    unfinished events from the first, as long as each is free (``pending`` in log order)."""
    chosen: list[Pending] = []
    held: set[str] = set()  # workflows with an earlier event that is not handed out now
    for event in pending:
        if len(chosen) >= limit:
            break
        if event.stream_id in held:
            continue
        if event.free(now):
            chosen.append(event)
        else:
            held.add(event.stream_id)
    return chosen


def next_free(pending: Iterable[Pending], now: float) -> float | None:
    """Seconds from ``now`` until the first of ``pending`` that is not free becomes free (a
    lease runs out, a nack's delay passes); None when none is waiting for time."""
    times = [
        max(event.leased_until or 0.0, event.due_at) - now
        for event in pending
        if not event.free(now)
    ]
    return max(0.0, min(times)) if times else None


def backoff(deliveries: int) -> float:
    """Seconds before an event nacked without a delay is due again, after ``deliveries``."""
    return min(BACKOFF_MAX, BACKOFF_INITIAL * 2.0 ** max(0, deliveries - 1))


def spent(pending: Iterable[Pending], now: float, settings: GroupSettings) -> list[Pending]:
    """The events whose last allowed lease has run out at ``now``: to be parked, never handed
    out again. Decided from the same reading of the clock as :func:`choose`, so an event
    cannot be too early to park and already free to lease."""
    return [
        event
        for event in pending
        if event.leased_until is not None
        and event.leased_until <= now
        and exhausted(event.deliveries, settings)
    ]


def exhausted(deliveries: int, settings: GroupSettings) -> bool:
    """Whether an event delivered ``deliveries`` times without an ack is to be parked."""
    return deliveries >= settings.max_deliver


# --- What requests say, checked -------------------------------------------------------------


def group_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidInput(
            "a group's name is 1 to 64 characters: lower-case letters, digits, . _ -, "
            "starting with a letter or digit",
            field="name",
        )
    return name


def member_name(body: Mapping[str, Any]) -> str:
    member = body.get("member")
    if not isinstance(member, str) or not MEMBER.fullmatch(member):
        raise InvalidInput(
            "'member' is required: 1 to 128 characters, letters, digits, . _ : -",
            field="member",
        )
    return member


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidInput(f"'{name}' must be a number from {low:g} to {high:g}", field=name)
    return float(value)


def _whole(value: Any) -> int | None:
    """A JSON integer (JSON Schema counts 16.0 as one), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _integer(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = _whole(body.get(name, default))
    if value is None or not low <= value <= high:
        raise InvalidInput(f"'{name}' must be an integer from {low} to {high}", field=name)
    return value


def settings_of(body: Mapping[str, Any]) -> GroupSettings:
    """A group's settings from a create request's body."""
    types = body.get("types", [])
    if (
        not isinstance(types, list)
        or len(types) > TYPES_MAX
        or not all(isinstance(kind, str) and TYPE_NAME.fullmatch(kind) for kind in types)
    ):
        raise InvalidInput(
            f"'types' must be a list of at most {TYPES_MAX} event type names", field="types"
        )
    return GroupSettings(
        types=tuple(sorted(set(types))),
        ack_wait=_number(body, "ack_wait", ACK_WAIT_DEFAULT, ACK_WAIT_MIN, ACK_WAIT_MAX),
        max_deliver=_integer(body, "max_deliver", MAX_DELIVER_DEFAULT, 1, MAX_DELIVER_MAX),
        max_ack_pending=_integer(
            body, "max_ack_pending", MAX_ACK_PENDING_DEFAULT, 1, MAX_ACK_PENDING_MAX
        ),
    )


def start_of(body: Mapping[str, Any], field: str = "start") -> str | int:
    """Where a group starts or rewinds to: "start", "end" (the head), or a position."""
    start = body.get(field, "end" if field == "start" else None)
    if start in STARTS:
        return str(start)
    position = _whole(start)
    if position is not None and 0 <= position < 2**63:
        return position
    raise InvalidInput(f'\'{field}\' must be "start", "end" or a position (>= 0)', field=field)


def batch_of(body: Mapping[str, Any]) -> tuple[int, float]:
    """A pull's batch size and how long it may wait for events (seconds)."""
    return (
        _integer(body, "batch", BATCH_DEFAULT, 1, BATCH_MAX),
        _number(body, "wait", 0.0, 0.0, PULL_WAIT_MAX),
    )


def positions_of(body: Mapping[str, Any]) -> list[int]:
    given = body.get("positions")
    positions = [_whole(p) for p in given] if isinstance(given, list) else []
    if not 1 <= len(positions) <= POSITIONS_MAX or not all(
        p is not None and 1 <= p < 2**63 for p in positions
    ):
        raise InvalidInput(
            f"'positions' must be a list of 1 to {POSITIONS_MAX} log positions", field="positions"
        )
    return sorted({p for p in positions if p is not None})


def nack_delay(body: Mapping[str, Any]) -> float | None:
    """A nack's delay in seconds, or None for the group's backoff."""
    if body.get("delay") is None:
        return None
    return _number(body, "delay", 0.0, 0.0, NACK_DELAY_MAX)


def types_json(types: Sequence[str]) -> str:
    return json.dumps(list(types))
