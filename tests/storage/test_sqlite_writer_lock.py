"""The write lock our processes share on one SQLite file: bounded waits, none left held."""

from __future__ import annotations

import threading
from pathlib import Path

from metallica.storage.writer_lock import ProcessWriterLock


def test_a_second_holder_waits_until_the_first_lets_go(tmp_path: Path) -> None:
    # Two locks on one file stand for two processes: flock locks belong to each open file.
    first, second = (
        ProcessWriterLock(tmp_path / "db-writer"),
        ProcessWriterLock(tmp_path / "db-writer"),
    )
    try:
        assert first.acquire(1)
        assert not second.acquire(0.05)  # bounded: it gives up
        taken = threading.Event()

        def take() -> None:
            if second.acquire(10):
                taken.set()

        waiter = threading.Thread(target=take)
        waiter.start()
        assert not taken.wait(0.05)
        first.release()
        assert taken.wait(10)  # woken by the release, not by a poll
        waiter.join(10)
        second.release()
        # The wait that gave up left nothing held: the first takes the lock again at once.
        assert first.acquire(1)
        first.release()
    finally:
        first.close()
        second.close()
