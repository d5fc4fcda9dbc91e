"""The group commit's rules, on a fake database that records what each transaction did (the
real backends: ``tests/storage/conformance.py``, ``GroupCommitConformance``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from metallica.storage import StorageUnavailable
from metallica.storage.group_commit import GroupCommit
from tests.waiting import eventually

WAIT = 10.0


class FakeTransaction:
    def __init__(self) -> None:
        self.writes: list[str] = []
        self.flushes = 0

    def execute(self, query: str, /, **params: Any) -> int:
        self.writes.append(query)
        return 1

    def flush(self) -> None:
        self.flushes += 1


class FakeDatabase:
    """Transactions that keep their writes only if they commit; ``fail_commits`` commits fail."""

    def __init__(self) -> None:
        self.committed: list[list[str]] = []
        self.fail_commits = 0
        self.inside = threading.Event()
        self.hold = threading.Event()
        self.hold.set()

    @contextmanager
    def transaction(
        self, *, write: bool = True, pipeline: bool = False
    ) -> Iterator[FakeTransaction]:
        tx = FakeTransaction()
        self.inside.set()
        yield tx
        assert self.hold.wait(WAIT)
        if self.fail_commits:
            self.fail_commits -= 1
            raise StorageUnavailable("the commit was lost")
        self.committed.append(tx.writes)


def writer(database: FakeDatabase) -> GroupCommit:
    return GroupCommit(database)  # type: ignore[arg-type]


def write(name: str) -> Any:
    def work(tx: FakeTransaction) -> str:
        tx.execute(name)
        return name

    return work


def test_alone_a_unit_is_its_own_transaction() -> None:
    database = FakeDatabase()
    group = writer(database)
    assert group.run(write("a")) == "a"
    assert database.committed == [["a"]]
    assert (group.batches, group.units) == (1, 1)


def test_units_that_arrive_while_a_batch_commits_share_the_next_commit() -> None:
    database = FakeDatabase()
    group = writer(database)
    database.hold.clear()  # the first batch holds its commit until the others wait
    first = threading.Thread(target=group.run, args=(write("first"),))
    first.start()
    assert database.inside.wait(WAIT)
    others = [threading.Thread(target=group.run, args=(write(f"u{i}"),)) for i in range(5)]
    for thread in others:
        thread.start()
    assert eventually(lambda: group.waiting == 5, WAIT)  # they wait for the next batch
    database.hold.set()
    for thread in [first, *others]:
        thread.join(WAIT)
    assert database.committed[0] == ["first"]
    assert sorted(database.committed[1]) == [f"u{i}" for i in range(5)]
    assert (group.batches, group.units) == (2, 6)


def test_a_unit_that_fails_gets_its_error_alone_and_the_others_commit_without_it() -> None:
    class Refused(Exception):
        pass

    def refused(tx: FakeTransaction) -> None:
        tx.execute("refused")
        raise Refused

    database = FakeDatabase()
    group = writer(database)
    outcomes: dict[str, object] = {}

    def run(name: str, work: Any) -> None:
        try:
            outcomes[name] = group.run(work)
        except Refused as error:
            outcomes[name] = error

    database.hold.clear()
    blocker = threading.Thread(target=run, args=("blocker", write("blocker")))
    blocker.start()
    assert database.inside.wait(WAIT)
    threads = [
        threading.Thread(target=run, args=("a", write("a"))),
        threading.Thread(target=run, args=("bad", refused)),
        threading.Thread(target=run, args=("b", write("b"))),
    ]
    for thread in threads:
        thread.start()
    assert eventually(lambda: group.waiting == 3, WAIT)
    database.hold.set()
    for thread in [blocker, *threads]:
        thread.join(WAIT)
    assert isinstance(outcomes.pop("bad"), Refused)
    assert outcomes == {"blocker": "blocker", "a": "a", "b": "b"}
    # The refused unit's write was rolled back with its transaction, the others' written again.
    assert all("refused" not in writes for writes in database.committed)
    assert sorted(w for writes in database.committed[1:] for w in writes) == ["a", "b"]


def test_a_failed_commit_fails_every_unit_of_its_batch() -> None:
    database = FakeDatabase()
    database.fail_commits = 1
    group = writer(database)
    with pytest.raises(StorageUnavailable):
        group.run(write("lost"))
    assert database.committed == []
    assert group.run(write("next")) == "next"  # the next batch is a new transaction
    assert database.committed == [["next"]]
