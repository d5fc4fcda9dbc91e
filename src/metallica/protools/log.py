"""protools as a broker: the log of every event it records, in one order that no reader can
overtake, read a page at a time (``GET /v1/events``) or followed live (:mod:`.tailer`).

**Positions.** Every event gets a global position (``events.global_position``), drawn when it
is inserted. A follower asks for "everything after P" and then moves P to the last position it
saw, so the log must never show it, later, an event with a position at or below P. That is the
commit-order gap: a number is drawn at INSERT, but visible at COMMIT, and two writers may
commit in the other order (A draws 7, B draws 8, B commits, a reader reads 8 and moves past 7,
then A commits 7: lost for that reader). Skipping a gap after a timeout is unsound (an event
that commits after the timeout is lost); the sound ways make positions visible in order:

* **The log's turn** (our choice; the ``eventsourcing`` library's PostgreSQL recorder does the
  same with a table lock): the first append of a transaction takes a transaction-scoped
  advisory lock (one per schema) and holds it to the end, so writers of the log insert and
  commit one at a time, positions are drawn in commit order, and a reader that saw P has seen
  everything below P. The lock is taken by the append itself, which a use case does last
  (``WorkflowService._append``), so a writer holds it for the append and its commit only.
* **A transaction-id horizon** (Emmett, PgQ): stamp each row with ``pg_current_xact_id()`` and
  read only rows of transactions below ``pg_snapshot_xmin(pg_current_snapshot())``. Writers run
  free, but a row's place in the log is then ``(transaction id, position)``, not its position:
  a transaction that took its id first may draw its position last. Readers would have to page
  by that pair, and a reader's horizon stalls behind any long open transaction.

Measured on this workload (``bench/README.md``, "The log's positions"): at C=16 on one
replica the turn costs about 7 % of the throughput, as writers of the log commit one at a time,
each with its own WAL flush. A horizon would let them commit together, but it makes every
reader page by a (transaction id, position) pair and stall behind any long open transaction;
the write path's group commit (many workflows' records in one transaction, one turn, one
flush) takes most of that cost back without either. The followers are woken apart from the
commits (:mod:`.tailer`, "Announcing"): a ``NOTIFY`` in each appending transaction cost
another 8 %. SQLite has one writer at a time (``BEGIN IMMEDIATE``, and an ``flock`` between
processes): its positions are in commit order as they are.

A stall shows: a writer that holds the turn long (an open transaction) holds every other
writer of the log, and ``metallica_log_oldest_write_seconds`` says how long the oldest open
write transaction has been open; ``metallica_log_lag_seconds`` how far this replica's tailer
is behind the newest event. Nothing is ever skipped.

**Who sees what.** A client sees the events of the workflows it started; a client named in
``METALLICA_LOG_READERS`` sees the whole log. Secret fields are sealed at rest and masked in
every read (:func:`metallica.protools.history.redact`): the log never opens a seal.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metallica.errors import BadRequest, InvalidId, PositionPastHead
from metallica.protools import store
from metallica.protools.history import CURSOR_DIGITS, iso_time, redact
from metallica.storage import Database

LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX = 100, 1000
# Positions one page of a client's reads looks through at most: a client that started few of
# the log's workflows still gets an answer in bounded time, and ``next`` to go on from.
SCAN_WINDOW = 10_000
TYPES_MAX = 20
TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
LOG_PARAMETERS = ("after", "limit", "type", "workflow_id")
STREAM_PARAMETERS = ("after", "type", "workflow_id")


@dataclass(frozen=True)
class Reader:
    """Who reads the log: a client, and whether it may read all of it."""

    client: str
    whole_log: bool

    @property
    def client_filter(self) -> str:
        """The client to filter on ("" for none)."""
        return "" if self.whole_log else self.client


@dataclass(frozen=True)
class LogQuery:
    """A read of the log: after a position, at most ``limit``, only ``types`` (all when
    empty), only one workflow's when ``workflow_id`` is given."""

    after: int = 0
    limit: int = LOG_LIMIT_DEFAULT
    types: tuple[str, ...] = ()
    workflow_id: str = ""

    def admits(self, logged: store.LoggedEvent, reader: Reader) -> bool:
        """Whether ``logged`` is one this query, for ``reader``, returns (for live events)."""
        event = logged.event
        return (
            (not self.types or event.type in self.types)
            and (not self.workflow_id or event.stream_id == self.workflow_id)
            and (reader.whole_log or logged.client == reader.client)
        )


@dataclass(frozen=True)
class LogPage:
    """A page of the log: ``head`` is the log's last position when it was read; ``next`` the
    position to read after for the next page (the page's last event, or as far as it looked)."""

    events: list[store.LoggedEvent]
    head: int
    next: int


def position(text: str, *, field: str) -> int:
    """A log position from a query parameter or a ``Last-Event-ID``; a 400 naming ``field``
    when it is not a whole number."""
    if not (text.isascii() and text.isdigit() and len(text) <= CURSOR_DIGITS):
        raise BadRequest(f"{field} must be a log position: a whole number", field=field)
    return int(text)


def past_head(head: int, *, field: str) -> PositionPastHead:
    return PositionPastHead(
        f"{field} is past the log's head ({head}): no event has that position yet", field=field
    )


def resume_after(requested: int, last_event_id: str | None, head: int) -> int:
    """Where a stream starts: after the ``Last-Event-ID`` a reconnecting client sends (it
    overrides the position asked for in the query), else after ``requested``; a 400 naming
    the field for a position that is not one or lies past the log's ``head``."""
    field = "after"
    if last_event_id is not None:
        requested, field = position(last_event_id, field="Last-Event-ID"), "Last-Event-ID"
    if requested > head:
        raise past_head(head, field=field)
    return requested


def log_query(query: Mapping[str, str], *, paged: bool = True) -> LogQuery:
    """A :class:`LogQuery` from a request's query parameters: ``after`` a position, ``limit``
    1 to :data:`LOG_LIMIT_MAX` (pages only), ``type`` one event type or several,
    comma-separated, ``workflow_id`` a workflow's id; a 400 naming the parameter otherwise."""
    after = position(query["after"], field="after") if "after" in query else 0
    limit = LOG_LIMIT_DEFAULT
    if paged and "limit" in query:
        text = query["limit"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= LOG_LIMIT_MAX:
            raise BadRequest(
                f"limit must be a whole number from 1 to {LOG_LIMIT_MAX}", field="limit"
            )
        limit = int(text)
    types: tuple[str, ...] = ()
    if "type" in query:
        types = tuple(dict.fromkeys(query["type"].split(",")))
        if len(types) > TYPES_MAX or any(not TYPE_NAME.fullmatch(name) for name in types):
            raise BadRequest(
                f"type must be event types (letters), comma-separated, at most {TYPES_MAX}",
                field="type",
            )
    workflow_id = ""
    if "workflow_id" in query:
        try:
            workflow_id = str(uuid.UUID(query["workflow_id"]))
        except ValueError:
            raise InvalidId("workflow_id must be a UUID", field="workflow_id") from None
    return LogQuery(after, limit, types, workflow_id)


class EventLog:
    """Reads of the log, each in a transaction of its own."""

    def __init__(self, database: Database, secret_fields: frozenset[str]) -> None:
        self.database = database
        self.secret_fields = secret_fields

    def head(self) -> int:
        with self.database.transaction(write=False) as tx:
            return store.log_head(tx)

    def page(self, query: LogQuery, reader: Reader, *, until: int | None = None) -> LogPage:
        """The page of the log after ``query.after`` (up to ``until`` when given), as
        ``reader`` may see it. A position past the log's head is a 404 position-past-head.

        The head is read first, then the events up to it: every event at or below a position
        that is visible was visible before it (the log's turn), so a page never leaves out an
        event below its ``next``."""
        with self.database.transaction(write=False) as tx:
            head = store.log_head(tx)
            if query.after > head:
                raise past_head(head, field="after")
            bound = min(head, query.after + SCAN_WINDOW, head if until is None else until)
            found = store.read_log(
                tx,
                after=query.after,
                until=bound,
                limit=query.limit,
                types=query.types,
                stream_id=query.workflow_id,
                client=reader.client_filter,
            )
        following = found[-1].event.global_position if len(found) == query.limit else bound
        return LogPage(found, head, max(following, query.after))

    def announce(self) -> None:
        """Tell the log's followers on every replica that it grew (see :mod:`.tailer`)."""
        with self.database.transaction() as tx:  # NOTIFY needs a transaction that may write
            tx.fetch_one("notify_log")

    def oldest_write(self) -> float:
        with self.database.transaction(write=False) as tx:
            return store.oldest_write(tx)

    def read_after(self, after: int, limit: int) -> list[store.LoggedEvent]:
        """Every event after ``after``, at most ``limit`` (the tailer's read)."""
        with self.database.transaction(write=False) as tx:
            return store.read_log(tx, after=after, limit=limit)

    def entry(self, logged: store.LoggedEvent) -> dict[str, Any]:
        """An event as the log shows it, secret fields masked."""
        event = logged.event
        return {
            "position": event.global_position,
            "workflow_id": event.stream_id,
            "version": event.version,
            "type": event.type,
            "time": iso_time(event.recorded_at),
            "data": redact(event.data, self.secret_fields),
        }
