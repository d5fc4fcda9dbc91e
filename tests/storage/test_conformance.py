"""The conformance suite, run on every backend (the ``backend`` fixture: SQLite, PostgreSQL)."""

from __future__ import annotations

from tests.storage import conformance


class TestMigrations(conformance.MigrationsConformance):
    pass


class TestEventStore(conformance.EventStoreConformance):
    pass


class TestLog(conformance.LogConformance):
    pass


class TestGroups(conformance.GroupConformance):
    pass


class TestOutbox(conformance.OutboxConformance):
    pass


class TestCommandStore(conformance.CommandStoreConformance):
    pass


class TestBulk(conformance.BulkConformance):
    pass


class TestTimeouts(conformance.TimeoutsConformance):
    pass


class TestTransactions(conformance.TransactionConformance):
    pass


class TestGroupCommit(conformance.GroupCommitConformance):
    pass


class TestPipeline(conformance.PipelineConformance):
    pass


class TestBoard(conformance.BoardConformance):
    pass


class TestClosing(conformance.ClosingConformance):
    pass
