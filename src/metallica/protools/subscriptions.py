"""Durable subscriptions: consumer groups that share the log among their members, at least
once, in order per workflow, with their progress kept by protools (the knobs, and how a pull
chooses, are in :mod:`.groups`).

A group reads the log forward from where it was created, like any follower, and keeps what
it has yet to finish in ``group_pending``. Each operation is one transaction that first locks
the group's row, so the pulls, acks and rewinds of every member on every replica take turns
per group:

* **pull**: read the log further into the group (up to :data:`~.groups.PENDING_MAX`
  pending); park the events whose last allowed lease ran out; lease the events
  :func:`.groups.choose` picks to the member, for ``ack_wait``. Both decisions read the
  database's clock once, together: with a reading for each, a lease running out between them
  was too early to park and free to lease, and went out once more than ``max_deliver``.
  Positions become visible in commit order (the log's turn, :mod:`.log`), so moving
  ``filled_to`` past what one read saw misses nothing.
* **ack**: the events are done; a position the member does not hold is a ``not-leased``
  problem and nothing changes. A position the group finished already (at or below where it
  read to, and no longer pending) is acked again without complaint: a retried ack is harmless.
* **nack**: the events are due again after a delay (the group's backoff unless given), or
  parked once delivered ``max_deliver`` times. **extend**: the lease starts afresh.
* **rewind**: the group reads the log again from a position; what it held is dropped (leases
  included: their acks become ``not-leased``), parked events before the position stay parked.

Delivery is at least once: an event whose member died, or acked after its lease ran out and
went to another, is delivered again. A member must therefore handle an event twice harmlessly
(the event's ``position`` is its key).
"""

from __future__ import annotations

from dataclasses import dataclass

from metallica.errors import GroupExists, NotLeased, UnknownGroup
from metallica.protools import group_store, groups, store
from metallica.protools.engine import RecordedEvent
from metallica.protools.group_store import Group, ParkedEvent
from metallica.protools.groups import GroupSettings
from metallica.protools.log import SCAN_WINDOW, past_head
from metallica.storage import Database, Transaction


@dataclass(frozen=True)
class Delivery:
    """An event handed to a member, and how many times it has been (this one included)."""

    event: RecordedEvent
    deliveries: int


@dataclass(frozen=True)
class Pulled:
    """What a pull handed out, and (when it handed out nothing) in how many seconds an event
    it holds back becomes free by time alone (None: only new events or acks can help)."""

    deliveries: list[Delivery]
    free_in: float | None


@dataclass(frozen=True)
class GroupView:
    """A group as ``show`` and ``list`` tell it."""

    name: str
    settings: GroupSettings
    filled_to: int
    head: int
    lag_positions: int  # positions from its oldest unfinished event to the head
    lag_seconds: float  # the age of that event
    unfinished: int
    in_flight: int
    parked: int
    redeliveries: int
    members: dict[str, int]  # each member with events leased to it now, and how many


def _known(group: Group | None, name: str) -> Group:
    if group is None:
        raise UnknownGroup(f"no consumer group named {name!r}", group=name)
    return group


def _locked(tx: Transaction, name: str) -> Group:
    return _known(group_store.lock(tx, name), name)


def _position(tx: Transaction, start: str | int, *, field: str) -> int:
    head = store.log_head(tx)
    if start == "start":
        return 0
    if start == "end":
        return head
    assert isinstance(start, int)
    if start > head:
        raise past_head(head, field=field)
    return start


class Subscriptions:
    """The consumer groups of one protools database; each method one transaction."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # --- groups ------------------------------------------------------------------------------

    def create(
        self, name: str, settings: GroupSettings, start: str | int
    ) -> tuple[GroupView, bool]:
        """Create a group reading the log after ``start``; the same request again finds it
        (False: not created now). The name with other settings is a ``group-exists``."""
        with self.database.transaction() as tx:
            created = group_store.create(
                tx, name, settings, filled_to=_position(tx, start, field="start")
            )
            group = _locked(tx, name)
            if not created and group.settings != settings:
                raise GroupExists(
                    f"the group {name!r} exists with other settings",
                    group=name,
                    settings=group.settings.as_json(),
                )
            return self._view(tx, group), created

    def all(self) -> list[GroupView]:
        with self.database.transaction(write=False) as tx:
            return [self._view(tx, group) for group in group_store.all_groups(tx)]

    def show(self, name: str) -> GroupView:
        with self.database.transaction(write=False) as tx:
            return self._view(tx, _known(group_store.find(tx, name), name))

    def delete(self, name: str) -> None:
        with self.database.transaction() as tx:
            _locked(tx, name)
            group_store.delete(tx, name)

    def _view(self, tx: Transaction, group: Group) -> GroupView:
        head = store.log_head(tx)
        held = group_store.state(tx, group.name)
        if held.oldest is not None:
            lag_positions = head - held.oldest + 1
            lag_seconds = group_store.event_age(tx, held.oldest)
        else:
            first = group_store.first_after(tx, group.settings.types, group.filled_to)
            lag_positions = head - group.filled_to if first is not None else 0
            lag_seconds = first[1] if first is not None else 0.0
        return GroupView(
            name=group.name,
            settings=group.settings,
            filled_to=group.filled_to,
            head=head,
            lag_positions=max(0, lag_positions),
            lag_seconds=lag_seconds,
            unfinished=held.unfinished,
            in_flight=held.in_flight,
            parked=held.parked,
            redeliveries=group.redeliveries,
            members=group_store.members(tx, group.name),
        )

    # --- members -----------------------------------------------------------------------------

    def pull(self, name: str, member: str, batch: int) -> list[Delivery]:
        """Lease to ``member`` at most ``batch`` events (none when it holds ``max_ack_pending``
        already, or when nothing is free)."""
        return self.take(name, member, batch).deliveries

    def take(self, name: str, member: str, batch: int) -> Pulled:
        """:meth:`pull`, telling also when an event held back becomes free (a pull that waits
        sleeps until then at most)."""
        with self.database.transaction() as tx:
            group = _locked(tx, name)
            filled_to = self._read_further(tx, group)
            pending, now = group_store.unparked(tx, name)
            spent = groups.spent(pending, now, group.settings)
            if spent:
                parked = {event.position for event in spent}
                group_store.park(tx, name, sorted(parked))
                pending = [event for event in pending if event.position not in parked]
            holding = sum(
                1
                for event in pending
                if event.member == member
                and event.leased_until is not None
                and event.leased_until > now
            )
            room = min(batch, group.settings.max_ack_pending - holding)
            chosen = groups.choose(pending, now, room) if room > 0 else []
            positions = [event.position for event in chosen]
            if positions:
                group_store.lease(
                    tx, name, positions, member=member, ack_wait=group.settings.ack_wait
                )
            redelivered = sum(1 for event in chosen if event.deliveries > 0)
            if filled_to != group.filled_to or redelivered:
                group_store.move(tx, name, filled_to, redeliveries=redelivered)
            events = group_store.read_positions(tx, positions)
        deliveries = {event.position: event.deliveries + 1 for event in chosen}
        return Pulled(
            [Delivery(event, deliveries[event.global_position]) for event in events],
            None if chosen else groups.next_free(pending, now),
        )

    def _read_further(self, tx: Transaction, group: Group) -> int:
        """Make the log's next events pending for the group; where it has read to now."""
        room = groups.PENDING_MAX - group_store.count_unparked(tx, group.name)
        bound = min(store.log_head(tx), group.filled_to + SCAN_WINDOW)
        if room <= 0 or bound <= group.filled_to:
            return group.filled_to
        types = group.settings.types
        found = group_store.next_positions(
            tx, types, after=group.filled_to, until=bound, limit=room
        )
        filled_to = found[-1] if len(found) == room else bound
        if found:
            group_store.fill(tx, group, after=group.filled_to, until=filled_to)
        return filled_to

    def _held_by(
        self, tx: Transaction, group: Group, member: str, positions: list[int], *, acking: bool
    ) -> list[int]:
        """The positions among ``positions`` that ``member`` holds (a ``not-leased`` problem
        when it does not hold them all); on an ack, those the group finished already pass."""
        held = group_store.held(tx, group.name, positions)
        wrong: list[int] = []
        for position in positions:
            found = held.get(position)
            if found is None:
                if not (acking and position <= group.filled_to):
                    wrong.append(position)
                continue
            leased = found.pending.leased_until is not None  # a parked event is not leased
            if found.pending.member != member or not (leased or (acking and found.parked)):
                wrong.append(position)
        if wrong:
            raise NotLeased(
                f"{len(wrong)} of these events are not leased to {member!r}: "
                f"{', '.join(map(str, wrong[:10]))}",
                positions=wrong,
            )
        return [position for position in positions if position in held]

    def ack(self, name: str, member: str, positions: list[int]) -> None:
        with self.database.transaction() as tx:
            group = _locked(tx, name)
            group_store.ack(tx, name, self._held_by(tx, group, member, positions, acking=True))

    def nack(self, name: str, member: str, positions: list[int], delay: float | None) -> int:
        """Give events back: due again after ``delay`` (the group's backoff when None), or
        parked after their last allowed delivery; how many were parked."""
        with self.database.transaction() as tx:
            group = _locked(tx, name)
            self._held_by(tx, group, member, positions, acking=False)
            held = group_store.held(tx, name, positions)
            exhausted = [
                p for p in positions if groups.exhausted(held[p].pending.deliveries, group.settings)
            ]
            group_store.park(tx, name, exhausted)
            for position in sorted(set(positions) - set(exhausted)):
                wait = (
                    delay
                    if delay is not None
                    else groups.backoff(held[position].pending.deliveries)
                )
                group_store.release(tx, name, [position], delay=wait)
            return len(exhausted)

    def extend(self, name: str, member: str, positions: list[int]) -> float:
        """Start the leases of these events afresh; the seconds they now last."""
        with self.database.transaction() as tx:
            group = _locked(tx, name)
            self._held_by(tx, group, member, positions, acking=False)
            group_store.extend(tx, name, positions, ack_wait=group.settings.ack_wait)
            return group.settings.ack_wait

    # --- operators ---------------------------------------------------------------------------

    def rewind(self, name: str, to: str | int) -> int:
        """Read the log again from after ``to``; the position the group now reads after."""
        with self.database.transaction() as tx:
            _locked(tx, name)
            position = _position(tx, to, field="to")
            group_store.forget_after(tx, name, position)
            group_store.move(tx, name, position)
            return position

    def parked(self, name: str, *, after: int, limit: int) -> list[ParkedEvent]:
        with self.database.transaction(write=False) as tx:
            _known(group_store.find(tx, name), name)
            return group_store.parked(tx, name, after=after, limit=limit)

    def replay(self, name: str, positions: list[int] | None) -> int:
        """Parked events (all of them for None) back to pending, delivered afresh; how many."""
        with self.database.transaction() as tx:
            _locked(tx, name)
            return group_store.unpark(tx, name, positions)
