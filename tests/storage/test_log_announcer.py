"""On PostgreSQL, a replica's tailer hears of what another replica committed through that
replica's announcer (one NOTIFY after its commits), not by polling."""

from __future__ import annotations

import asyncio

import pytest

from metallica.protools import engine, store
from metallica.protools.log import EventLog, LogQuery, Reader
from metallica.protools.tailer import LogTailer
from tests.storage.conformance import NOW, DatabaseFactory

WAIT = 10.0


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_a_commit_on_one_replica_is_announced_to_the_followers_of_another(
    make_db: DatabaseFactory,
) -> None:
    url = make_db.url()
    writer_db, reader_db = make_db.open_url(url, "protools"), make_db.open_url(url, "protools")
    # Polls an hour apart: only the announcement can wake the reader's tailer in time.
    writer = LogTailer(writer_db, EventLog(writer_db, frozenset()), poll_interval=3600)
    reader = LogTailer(reader_db, EventLog(reader_db, frozenset()), poll_interval=3600)

    async def main() -> list[int]:
        tasks = [asyncio.create_task(writer.run()), asyncio.create_task(reader.run())]
        try:
            reader_listening = reader.listener_health
            async with asyncio.timeout(WAIT):
                while reader_listening.last_success is None:  # LISTEN is in place
                    await asyncio.sleep(0.01)
            async with reader.follow(LogQuery(), Reader("a", whole_log=True), 100) as follower:
                with writer_db.transaction() as tx:
                    store.append(tx, "wf", 0, [engine.NewEvent("Started", {})], now=NOW)
                writer.grew.set()  # what the relay's watchers do after a commit
                batch = await follower.next_batch(WAIT)
                return [logged.event.global_position for logged in batch]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    assert asyncio.run(main()) == [1]
