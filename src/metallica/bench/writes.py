"""What a bench round wrote, per workflow: protools' commits and, on PostgreSQL, the WAL.

protools' own figures come from its metrics (``metallica_commit_batches`` and
``metallica_commit_units``: the group commit's, read from every replica). PostgreSQL's from
protools' cluster, which the bench gives it alone (``runner.started_stack``), so that none of
it is the generator's or the mailer's:

* WAL bytes and records, exactly, between the WAL positions read before and after the round
  (``pg_current_wal_lsn``, and ``pg_walinspect``'s ``pg_get_wal_stats`` for the records);
* flushes (``pg_stat_wal.wal_sync``) and committed transactions (``pg_stat_database``): these
  statistics reach the views when each backend reports them, about once a second and, for a
  backend gone idle, up to 10 s later. They are read until they stay the same for a second
  and a half, at most :data:`SETTLE_SECONDS`: a figure read before the last report is low.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import httpx
import psycopg

SETTLE_SECONDS = 12.0
STATS_QUERY = """
SELECT pg_current_wal_lsn()::text AS lsn, w.wal_sync, d.xact_commit
FROM pg_stat_wal AS w, pg_stat_database AS d
WHERE d.datname = current_database()
"""
WAL_BETWEEN = """
SELECT pg_wal_lsn_diff(%(end)s::pg_lsn, %(start)s::pg_lsn)::float8 AS bytes,
       COALESCE((SELECT sum(count) FROM pg_get_wal_stats(%(start)s::pg_lsn, %(end)s::pg_lsn)),
                0)::float8 AS records
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
    lsn: str | None = None  # the WAL position (a snapshot's; None in a difference)

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
        if database_url is not None:
            with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as db:
                db.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")

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
            row = db.execute(STATS_QUERY).fetchone()
        assert row is not None
        lsn, syncs, commits = row
        return Writes(batches, units, wal_syncs=float(syncs), commits=float(commits), lsn=lsn)

    def read(self) -> Writes:
        """A snapshot, once the cluster's statistics have stopped moving (see the module)."""
        until = time.monotonic() + SETTLE_SECONDS
        last, steady_since = self._once(), time.monotonic()
        while time.monotonic() < until:
            time.sleep(0.5)
            now = self._once()
            if (now.wal_syncs, now.batches) != (last.wal_syncs, last.batches):
                steady_since = time.monotonic()
            elif time.monotonic() - steady_since >= 1.5:
                return now
            last = now
        return last

    def between(self, before: Writes, after: Writes) -> Writes:
        """What was written from ``before`` to ``after`` (two snapshots)."""
        written = after - before
        if self.database_url is None or before.lsn is None or after.lsn is None:
            return written
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as db:
            row = db.execute(WAL_BETWEEN, {"start": before.lsn, "end": after.lsn}).fetchone()
        assert row is not None
        size, records = row
        return replace(written, wal_bytes=float(size), wal_records=float(records))
