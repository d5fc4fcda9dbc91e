"""What a bench round wrote, per workflow: protools' commits and, on PostgreSQL, the WAL.

protools' own figures come from its metrics (``metallica_commit_batches`` and
``metallica_commit_units``: the hot path's group commit, read from every replica). PostgreSQL's
come from the cluster: ``pg_stat_wal`` (WAL records, bytes and flushes) and ``pg_stat_database``
(the commits of protools' database, all of its transactions, the recovery loop's and the
readers' included). ``pg_stat_wal`` counts the whole cluster, so the bench gives protools a
cluster of its own (``runner.started_stack``): the generator's and the mailer's writes do not
count in protools' share.

Backends report their statistics about once a second, not at each commit: after a round the
counters are read until two reads half a second apart agree (at most :data:`SETTLE_SECONDS`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import psycopg

SETTLE_SECONDS = 5.0
WAL_QUERY = """
SELECT w.wal_records, w.wal_bytes, w.wal_sync, d.xact_commit
FROM pg_stat_wal AS w, pg_stat_database AS d
WHERE d.datname = current_database()
"""
COUNTERS = ("metallica_commit_batches_total", "metallica_commit_units_total")


@dataclass(frozen=True)
class Writes:
    """Counters at one instant; subtract two to get a round's share."""

    batches: float = 0.0  # protools' group commits
    units: float = 0.0  # the use cases they carried
    wal_records: float | None = None
    wal_bytes: float | None = None
    wal_syncs: float | None = None
    commits: float | None = None  # all of protools' database's transactions that committed

    def __sub__(self, other: Writes) -> Writes:
        def minus(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a - b

        return Writes(
            self.batches - other.batches,
            self.units - other.units,
            minus(self.wal_records, other.wal_records),
            minus(self.wal_bytes, other.wal_bytes),
            minus(self.wal_syncs, other.wal_syncs),
            minus(self.commits, other.commits),
        )

    def per_workflow(self, workflows: int) -> dict[str, float]:
        """The figures a round reports, each divided by its workflows."""
        n = max(workflows, 1)
        figures = {
            "protools commits": self.batches / n,
            "use cases per commit": self.units / self.batches if self.batches else 0.0,
        }
        if self.commits is not None:
            figures["db commits"] = self.commits / n
        if self.wal_records is not None and self.wal_bytes is not None:
            figures["WAL records"] = self.wal_records / n
            figures["WAL bytes"] = self.wal_bytes / n
        if self.wal_syncs is not None:
            figures["WAL syncs"] = self.wal_syncs / n
        return {name: round(value, 2) for name, value in figures.items()}


class WriteCounters:
    """Reads :class:`Writes` from protools' replicas and (when given) its database's cluster."""

    def __init__(self, protools_urls: Sequence[str], database_url: str | None) -> None:
        self.protools_urls = list(protools_urls)
        self.database_url = database_url

    def _once(self) -> Writes:
        batches = units = 0.0
        for url in self.protools_urls:
            text = httpx.get(f"{url}/metrics", timeout=10).text
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name == COUNTERS[0]:
                    batches += float(value)
                elif name == COUNTERS[1]:
                    units += float(value)
        if self.database_url is None:
            return Writes(batches, units)
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as db:
            row = db.execute(WAL_QUERY).fetchone()
        assert row is not None
        records, size, syncs, commits = (float(value) for value in row)
        return Writes(batches, units, records, size, syncs, commits)

    def read(self) -> Writes:
        """The counters once the cluster's statistics have caught up with the last commits."""
        until = time.monotonic() + SETTLE_SECONDS
        last = self._once()
        while time.monotonic() < until:
            time.sleep(0.5)
            now = self._once()
            # Each read commits a transaction of its own: compare what the round wrote.
            if (now.wal_records, now.batches) == (last.wal_records, last.batches):
                return now
            last = now
        return last
