"""The log's tailer and its followers: one read of the database fanned out to every stream of
a replica, a bounded buffer per follower, an end that says why (on a real SQLite file)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from metallica.protools import engine, store
from metallica.protools.log import EventLog, LogQuery, Reader
from metallica.protools.tailer import (
    Follower,
    LogTailer,
    ShuttingDown,
    SlowReader,
    TailerUnavailable,
)
from metallica.storage import Database, open_database
from metallica.storage.migrate import migrate

NOW = 1_700_000_000.0
ALL = Reader("auditor", whole_log=True)
WAIT = 10.0


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    opened = open_database(f"sqlite:///{tmp_path / 'protools.db'}", "protools")
    migrate(opened)
    try:
        yield opened
    finally:
        opened.close()


def append(database: Database, stream_id: str, *types: str) -> list[int]:
    with database.transaction() as tx:
        events = [engine.NewEvent(type=name, data={}) for name in types]
        return store.append(tx, stream_id, 0, events, now=NOW)


def logged(position: int, stream_id: str = "wf", client: str | None = "alice") -> store.LoggedEvent:
    event = engine.RecordedEvent(
        global_position=position,
        stream_id=stream_id,
        version=position,
        type="Started",
        data={},
        recorded_at=NOW,
    )
    return store.LoggedEvent(event, client)


def test_a_follower_that_falls_behind_is_ended_never_buffered_without_bound() -> None:
    async def main() -> None:
        follower = Follower(LogQuery(), ALL, capacity=3, start=0)
        follower.offer([logged(1), logged(2)])
        assert [e.event.global_position for e in await follower.next_batch(0.01)] == [1, 2]
        follower.offer([logged(3), logged(4), logged(5), logged(6)])  # 4 waiting > 3
        with pytest.raises(SlowReader, match="more than 3 events"):
            await follower.next_batch(WAIT)
        follower.offer([logged(7)])  # ended: nothing more is kept
        with pytest.raises(SlowReader):
            await follower.next_batch(0.01)

    asyncio.run(main())


def test_a_follower_keeps_only_what_its_query_and_reader_admit() -> None:
    async def main() -> None:
        alice = Follower(LogQuery(), Reader("alice", whole_log=False), capacity=10, start=0)
        one = Follower(LogQuery(workflow_id="wf-b"), ALL, capacity=10, start=0)
        batch = [logged(1, "wf-a", "alice"), logged(2, "wf-b", "bob"), logged(3, "wf-c", None)]
        for follower in (alice, one):
            follower.offer(batch)
        assert [e.event.global_position for e in await alice.next_batch(0.01)] == [1]
        assert [e.event.global_position for e in await one.next_batch(0.01)] == [2]
        assert await one.next_batch(0.01) == []  # nothing new: an empty batch after the wait

    asyncio.run(main())


def test_one_tailer_hands_each_new_event_to_every_follower_once(database: Database) -> None:
    before = append(database, "wf-old", "Started")

    async def main() -> None:
        tailer = LogTailer(database, EventLog(database, frozenset()), poll_interval=0.05)
        task = asyncio.create_task(tailer.run())
        try:
            async with (
                tailer.follow(LogQuery(), ALL, 100) as first,
                tailer.follow(LogQuery(types=("Called",)), ALL, 100) as called,
            ):
                assert first.start == called.start == before[-1]  # from the head when joined
                new = append(database, "wf-new", "Started", "Called")  # found by polling
                got: list[int] = []
                async with asyncio.timeout(WAIT):
                    while len(got) < 2:
                        got += [e.event.global_position for e in await first.next_batch(0.1)]
                assert got == new
                called_batch = await called.next_batch(WAIT)
                assert [e.event.type for e in called_batch] == ["Called"]
                assert tailer.followers == 2
                assert tailer.position == new[-1]
            assert tailer.followers == 0
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())


def test_closing_ends_every_follower_and_takes_no_new_one(database: Database) -> None:
    async def main() -> None:
        tailer = LogTailer(database, EventLog(database, frozenset()), poll_interval=0.05)
        task = asyncio.create_task(tailer.run())
        try:
            async with tailer.follow(LogQuery(), ALL, 100) as follower:
                tailer.close()
                with pytest.raises(ShuttingDown):
                    await follower.next_batch(WAIT)
            with pytest.raises(ShuttingDown):
                async with tailer.follow(LogQuery(), ALL, 100):
                    pass
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())


def test_a_tailer_that_cannot_read_turns_followers_away_with_a_reason(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("metallica.protools.tailer.START_TIMEOUT", 0.2)

    async def main() -> None:
        tailer = LogTailer(database, EventLog(database, frozenset()), poll_interval=0.05)
        # Not running: nobody reads the head, as when the database does not answer.
        with pytest.raises(TailerUnavailable, match="could not read the log"):
            async with tailer.follow(LogQuery(), ALL, 100):
                pass
        assert tailer.followers == 0

    asyncio.run(main())
