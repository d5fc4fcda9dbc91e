"""Orderly close: a database is closed only once no transaction runs on it.

Closing a connection another thread is using is undefined behaviour in ``sqlite3``'s C module
(it crashed a test worker with a segmentation fault) and a broken transaction in psycopg. So
each adapter counts the transactions under way (:meth:`InUse.using`), and its ``close()``:

1. refuses new transactions (:class:`~metallica.storage.errors.DatabaseClosed`);
2. waits, at most ``timeout`` seconds, for those under way to end;
3. closes the idle connections. If some transaction still runs after the wait, it raises
   :class:`~metallica.storage.errors.StillInUse` saying how many (a shutdown out of order is a
   bug to see, not to hide) and leaves that connection alone: the thread using it closes it
   when its transaction ends (:attr:`InUse.closed` tells it to).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from metallica.storage.errors import DatabaseClosed, StillInUse

# Every transaction is bounded by the database's timeouts (lock 2 s, statement 10 s): a close
# that waits longer than this is waiting on a bug.
CLOSE_TIMEOUT = 15.0


class InUse:
    """The transactions under way on one database, and whether it is closed."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count = 0
        self.closed = False

    @property
    def count(self) -> int:
        return self._count

    @contextmanager
    def using(self) -> Iterator[None]:
        """Around one transaction: refused once the database is closed."""
        with self._changed:
            if self.closed:
                raise DatabaseClosed("the database is closed: the service is shutting down")
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                self._changed.notify_all()

    def close(self, timeout: float) -> None:
        """Refuse new transactions, then wait for those under way to end, at most ``timeout``
        seconds; :class:`StillInUse` if some did not."""
        with self._changed:
            self.closed = True
            if not self._changed.wait_for(lambda: self._count == 0, timeout):
                raise StillInUse(
                    f"{self._count} transaction(s) still running {timeout:g} s after the "
                    "database was closed: something uses it after its owner shut down"
                )
