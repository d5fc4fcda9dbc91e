"""The write lock that SQLite writers of several processes queue on (``<database>-writer``).

SQLite lets one writer at a time into a file; a writer that finds it taken is left to SQLite's
busy handler, which *polls*, sleeping 1, 2, 5 ... up to 100 ms between tries. Several processes
on one file (replicas of a service on the embedded backend) then starve each other: a process
whose writer just committed takes the lock again at once for its next one, while the others are
asleep in their backoff; measured here, 60 commands sent at once to 3 protools replicas on one
file had 5 to 20 of them fail with ``storage-busy`` after waiting 2 s.

So our own processes queue on an ``flock`` of a file beside the database before they begin a
write: the kernel wakes a blocked waiter the moment the holder lets go, no polling. The blocking
``flock`` runs on a helper thread so that the wait is bounded (``acquire(timeout)``): a waiter
that gives up leaves the helper to release the lock as soon as it gets it. Only one thread of a
process waits here at a time (the adapter's in-process writer lock comes first). SQLite's own
locking still guards the file against every other program.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path


class ProcessWriterLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-writer-{path.name}")

    def acquire(self, timeout: float) -> bool:
        """Take the lock, waiting at most ``timeout`` seconds; False if it did not come."""
        taking = self._waiter.submit(fcntl.flock, self._fd, fcntl.LOCK_EX)
        try:
            taking.result(timeout)
        except FutureTimeout:
            taking.add_done_callback(self._release_when_taken)
            return False
        return True

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _release_when_taken(self, taking: Future[None]) -> None:
        if not taking.cancelled() and taking.exception() is None:
            self.release()  # its waiter gave up before it came

    def close(self) -> None:
        """Stop the helper (after any wait it still has) and close the file."""
        self._waiter.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(OSError):
            os.close(self._fd)
