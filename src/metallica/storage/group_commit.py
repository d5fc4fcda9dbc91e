"""Group commit: the write use cases that arrive together share one transaction and one commit.

A durable write costs a commit, and a commit costs a flush of the log to disk (PostgreSQL's
WAL, SQLite's WAL with ``synchronous = FULL``): a millisecond or more, during which protools'
writers of the event log wait their turn (:mod:`metallica.protools.log`). One workflow at a time,
that flush is the ceiling. Many workflows move at the same moment under load, so their records
can go to the database together: one transaction, one turn, one flush for all of them.

**The classic leader/follower log writer.** A caller hands :meth:`GroupCommit.run` its unit of
work (a function of a :class:`~metallica.storage.ports.Transaction`) and blocks. If no batch is
being written, it becomes the leader: it takes every unit waiting (at most ``max_batch``), runs
them one after the other in one transaction, commits, tells each caller its result, and hands
the lead on. Units that arrive meanwhile wait for the next batch, which therefore forms while
the previous one commits: no timer, no added latency when alone (a batch of one is an ordinary
transaction).

**What a caller is told, and when.** Never before its batch has committed: a unit's result is
returned only after the commit that made its writes durable, so nothing is acknowledged, and
no next call starts, before the state that justifies it is on disk. A unit that raises gets its
exception, alone: the transaction is rolled back and the other units run again, from the
start, in a new one (a unit is a function of its transaction only, so running it again is
running it for the first time). That costs a second round when a unit fails, which on the hot
path is rare (a version conflict, a key reused); savepoints would make it free, but they cost
two round trips per unit on every batch, measured as a fifth of the writer's time. A batch whose
transaction fails (the connection lost, the commit refused, the database unreachable) raises
that failure to every caller in it: their writes are gone, as they would be after a failed
transaction of their own, and they retry as they would have.

**One round trip per unit.** The batch's transaction is pipelined (PostgreSQL's pipeline mode,
``Database.transaction(pipeline=True)``): a unit sends its statements without waiting for each
other's answers (``Transaction.send``), and the batch waits for them once, at the unit's end
(``Transaction.flush``), so that an error is always the unit's own. BEGIN and the begin hook's
statements travel with the first unit's. A batch of n units costs n + 2 round trips (each
unit's, COMMIT's, and leaving pipeline mode's), where each statement waiting for its answer
cost about 4n + 3; protools' writer spent 92 % of its time waiting on those answers. A
connection that died in the pool shows only at the first answer, after the units ran: nothing
had reached the server, so the batch runs again, whole, on another connection
(:class:`~metallica.storage.errors.StaleConnection`).

**What a unit must be.** Short, and nothing but database work and pure decisions: no network
call, no sleep. A unit that waits on a lock (another replica holds a row it writes) holds up
its whole batch up to the database's lock timeout; on protools' hot path that happens only when
two requests race on one idempotency key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from metallica.storage.errors import DatabaseClosed, StaleConnection, StorageUnavailable
from metallica.storage.ports import Database, Transaction

T = TypeVar("T")

MAX_BATCH = 64
STALE_RETRIES = 8  # dead pooled connections a batch may meet in a row (a pool's size)


@dataclass(eq=False)
class _Unit(Generic[T]):
    work: Callable[[Transaction], T]
    value: T | None = None
    error: BaseException | None = None
    finished: bool = False

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # set when ran without error


class GroupCommit:
    """Batches the write transactions of one database (see the module's docstring)."""

    def __init__(
        self,
        database: Database,
        *,
        max_batch: int = MAX_BATCH,
        begin: Callable[[Transaction], None] | None = None,
    ) -> None:
        self.database = database
        self.max_batch = max_batch
        # Run first in each batch's transaction (protools: take the log's turn before any row).
        self.begin = begin
        self._turn = threading.Condition()
        self._waiting: list[_Unit[object]] = []
        self._leading = False
        # What the batches were: for the bench and the metrics.
        self.batches = 0
        self.units = 0

    @property
    def waiting(self) -> int:
        """Units waiting for the next batch."""
        with self._turn:
            return len(self._waiting)

    def run(self, work: Callable[[Transaction], T]) -> T:
        """``work(tx)`` in the next batch's transaction; its result once that has committed."""
        unit: _Unit[T] = _Unit(work)
        with self._turn:
            self._waiting.append(unit)  # type: ignore[arg-type]
        while True:
            with self._turn:
                while self._leading and not unit.finished:
                    self._turn.wait()
                if unit.finished:
                    return unit.outcome()
                self._leading = True
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
            try:
                self._write(batch)
            finally:
                with self._turn:
                    for each in batch:
                        each.finished = True
                    self._leading = False
                    self._turn.notify_all()

    def _write(self, batch: list[_Unit[object]]) -> None:
        pending = batch
        stale = 0
        while pending:
            failed = self._try(pending)
            if failed is None:
                break
            if failed is _STALE:
                # The pooled connection had died (a server restart): nothing reached the
                # server; run the batch again on another one, as many times as a pool is big.
                stale += 1
                if stale <= STALE_RETRIES:
                    continue
                for unit in pending:
                    unit.error = StorageUnavailable("every pooled connection was dead")
                break
            # One unit failed: the transaction is rolled back, and the others run again in a
            # new one (their work is a function of the transaction alone: nothing committed).
            pending = [unit for unit in pending if unit is not failed]
        self.batches += 1
        self.units += len(batch)

    def _try(self, units: list[_Unit[object]]) -> _Unit[object] | None:
        """Run ``units`` in one transaction and commit; the unit that failed, if one did (its
        error is its own, and nothing was committed), ``_STALE`` if the connection was found
        dead before anything was done, else None (each was told its outcome).

        The transaction is pipelined: a unit's statements travel together, and the unit waits
        for their answers once, at its end (``tx.flush()``), so that an error is the unit's
        own; the begin hook's travel with the first unit's."""
        failed: _Unit[object] | None = None
        try:
            with self.database.transaction(pipeline=True) as tx:
                if self.begin is not None:
                    self.begin(tx)
                for unit in units:
                    try:
                        unit.value = unit.work(tx)
                        tx.flush()
                    except Exception as error:
                        failed, unit.error = unit, error
                        raise _RolledBack from error
        except _RolledBack:
            assert failed is not None
            assert failed.error is not None
            if isinstance(failed.error, StaleConnection):
                failed.error = None
                return _STALE
            if isinstance(failed.error, StorageUnavailable | DatabaseClosed):
                for unit in units:  # the database, not the unit: none would fare better
                    unit.error = failed.error
                return None
            return failed
        except StaleConnection:  # found dead at BEGIN: nothing was done
            return _STALE
        except BaseException as error:  # BEGIN or COMMIT failed: no unit's writes are kept
            for unit in units:
                unit.error = error
            if not isinstance(error, Exception):
                raise
        return None


class _RolledBack(Exception):
    """A unit failed: roll its batch's transaction back."""


_STALE: _Unit[object] = _Unit(lambda tx: None)  # _try's answer: the connection was dead
