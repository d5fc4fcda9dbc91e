"""A benchmark run: start (or reach) the stack, run the rounds, measure, check, report.

For each concurrency C, the durable round (protools) and, with ``--floor``, the floor's round
run one after the other, in the same run and against the same generator and mailer, so every
durable figure comes with its ratio to the floor measured minutes apart on the same machine.
CPU time is read from each service process (and PostgreSQL's, when the run started it) before
and after each round; resident memory at the start and the end of the run. After the rounds,
the invariant checker (:mod:`metallica.load.checker`) reads the stores: returned == stored ==
mailed, nothing lost or doubled.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import uvloop

from metallica.bench.consoles import following_consoles
from metallica.bench.preload import preload
from metallica.bench.writes import WriteCounters, Writes
from metallica.config import FLOOR, PROTOOLS
from metallica.load import checker
from metallica.load.closedloop import ClosedLoop, Round
from metallica.load.pg_cluster import ThrowawayCluster
from metallica.load.records import ClientRecord
from metallica.services import CALLEES, NAMES, schema_urls
from metallica.stack import LocalStack

T = TypeVar("T")

# Quiet services: a log line per request would be part of what is measured.
BENCH_ENV = {"METALLICA_LOG_LEVEL": "WARNING"}
DURABLE = "metallica"  # the durable side of a ratio; the floor: FLOOR


@dataclass
class BenchConfig:
    concurrencies: Sequence[int] = (1, 4, 16, 64)
    count: int = 1000
    warmup: int = 100
    replicas: int = 1
    postgres: bool = False  # a throwaway cluster
    database_url: str | None = None  # or a server of the user's (a schema per service)
    urls: Sequence[str] = ()  # or a running protools (its replicas)
    token: str | None = None
    floor: bool = False
    preload: int = 0  # after the rounds, seed this many workflows, then run them again
    consoles: int = 0  # web consoles following the live log during the rounds
    check: bool = True
    data_dir: Path | None = None

    @property
    def backend(self) -> str:
        if self.urls:
            return "external"
        return "postgres" if self.postgres or self.database_url else "sqlite"


@dataclass
class RoundReport:
    target: str
    concurrency: int
    count: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    cpu_ms_per_workflow: dict[str, float]
    floor_ratio: float | None = None
    history: int = 0  # completed workflows already stored when the round ran
    refused: int = 0  # refusals for load (429/503 with Retry-After) waited out and resent
    # protools' commits and (PostgreSQL) its cluster's WAL, per workflow (bench/writes.py)
    writes_per_workflow: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, target: str, measured: Round, cpu: dict[str, float]) -> RoundReport:
        def ms(seconds: float) -> float:
            return round(seconds * 1000, 1)

        per_workflow = {
            name: round(seconds * 1000 / max(measured.count, 1), 2) for name, seconds in cpu.items()
        }
        return cls(
            target,
            measured.concurrency,
            measured.count,
            round(measured.elapsed, 2),
            round(measured.throughput, 1),
            ms(measured.percentile(0.50)),
            ms(measured.percentile(0.95)),
            ms(measured.percentile(0.99)),
            ms(measured.percentile(1.0)),
            measured.errors,
            per_workflow,
            refused=measured.refused,
        )


@dataclass
class BenchReport:
    config: dict[str, Any]
    rounds: list[RoundReport] = field(default_factory=list)
    memory_mb: dict[str, tuple[float, float]] = field(default_factory=dict)
    checker: dict[str, Any] | None = None
    started_at: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    console_events: list[int] = field(default_factory=list)  # received by each console

    def to_json(self) -> str:
        return json.dumps(
            {
                "config": self.config,
                "started_at": self.started_at,
                "machine": self.machine,
                "rounds": [vars(r) for r in self.rounds],
                "memory_mb": self.memory_mb,
                "checker": self.checker,
                "console_events": self.console_events,
            },
            indent=2,
        )


class Processes:
    """The processes whose CPU and memory a run reads, by name."""

    def __init__(self) -> None:
        self._processes: dict[str, list[psutil.Process]] = {}

    def add(self, name: str, pid: int, *, with_children: bool = False) -> None:
        process = psutil.Process(pid)
        found = [process, *(process.children(recursive=True) if with_children else [])]
        self._processes[name] = found

    def refresh_children(self, name: str) -> None:
        """Pick up children started since (PostgreSQL starts a backend per connection)."""
        parent = self._processes[name][0]
        self._processes[name] = [parent, *parent.children(recursive=True)]

    def cpu_seconds(self) -> dict[str, float]:
        totals = {}
        for name, processes in self._processes.items():
            total = 0.0
            for process in processes:
                try:
                    times = process.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += times.user + times.system
            totals[name] = total
        return totals

    def rss_mb(self) -> dict[str, float]:
        sizes = {}
        for name, processes in self._processes.items():
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            sizes[name] = round(total / 2**20, 1)
        return sizes


Say = Callable[[str], None]


@contextmanager
def started_stack(
    config: BenchConfig, token: str, say: Say
) -> Iterator[tuple[LocalStack, Processes, str | None]]:
    """The stack ``config`` asks for, started, with its processes to measure; stopped after."""
    with ExitStack() as cleanup:
        data_dir = config.data_dir or Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="metallica-bench-"))
        )
        urls: dict[str, str] = {}
        wal_url: str | None = None
        processes = Processes()
        if config.postgres:
            # protools on a cluster of its own, so that its WAL is measured alone
            # (bench/writes.py); the generator, the mailer and the floor on another.
            say("starting two throwaway PostgreSQL clusters (protools's, the services')")
            clusters = {
                name: ThrowawayCluster(durable=True) for name in ("postgres", "postgres-services")
            }
            for name, cluster in clusters.items():
                cluster.start()
                cleanup.callback(cluster.stop)
                processes.add(name, cluster.postmaster_pid(), with_children=True)
            urls = {
                **_databases(clusters["postgres-services"].url),
                PROTOOLS: _databases(clusters["postgres"].url)[PROTOOLS],
            }
            wal_url = clusters["postgres"].url
        elif config.database_url:
            urls = _databases(config.database_url)
        services = (*CALLEES, PROTOOLS, *((FLOOR,) if config.floor else ()))
        stack = LocalStack(
            data_dir,
            token,
            config.replicas,
            urls,
            base_port=None,
            extra_env=BENCH_ENV,
            services=services,
        )
        say(f"starting {config.replicas} replica(s) of {', '.join(services)} ({data_dir})")
        cleanup.callback(stack.stop)
        try:
            stack.start()
        except RuntimeError as error:
            raise BenchError(f"{error}:\n{_log_tails(stack)}") from None
        for service in services:
            for replica in stack.members[service]:
                assert replica.process is not None
                processes.add(replica.name, replica.process.pid)
        yield stack, processes, wal_url


class BenchError(Exception):
    """The benchmark could not run (its stack did not start)."""


def _log_tails(stack: LocalStack, lines: int = 5) -> str:
    tails = []
    for replicas in stack.members.values():
        for replica in replicas:
            if replica.log_path.exists():
                last = replica.log_path.read_text(errors="replace").splitlines()[-lines:]
                tails += [f"  {replica.name}: {line}" for line in last]
    return "\n".join(tails)


def _databases(server_url: str) -> dict[str, str]:
    """A schema per service in the database of ``server_url``, fresh for this run."""
    return schema_urls(server_url, f"bench_{uuid.uuid4().hex[:8]}_")


def run(config: BenchConfig, say: Say, progress_line: Callable[[str], None]) -> BenchReport:
    """Run the benchmark ``config`` describes; ``say`` prints a line, ``progress_line`` redraws
    the live one."""
    report = BenchReport(
        config={
            "concurrencies": list(config.concurrencies),
            "count": config.count,
            "warmup": config.warmup,
            "replicas": config.replicas,
            "backend": config.backend,
            "floor": config.floor,
            "preload": config.preload,
            "consoles": config.consoles,
        },
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine={
            "cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        },
    )
    token = config.token or secrets.token_urlsafe(16)
    records: list[ClientRecord] = []
    with ExitStack() as running:
        if config.urls:
            targets = {DURABLE: list(config.urls)}
            processes = Processes()
            stack = None
            counters = WriteCounters(config.urls, None)
        else:
            stack, processes, wal_url = running.enter_context(started_stack(config, token, say))
            targets = {DURABLE: stack.urls("protools")}
            counters = WriteCounters(stack.urls("protools"), wal_url)
            if config.floor:
                targets[FLOOR] = stack.urls("floor")
        consoles = running.enter_context(
            following_consoles(targets[DURABLE][0], token, config.consoles, say)
        )
        processes.add("bench-client", os.getpid())
        memory_before = processes.rss_mb()
        prefix = f"b{uuid.uuid4().hex[:6]}"
        histories = [0, *([config.preload] if config.preload else [])]
        for history in histories:
            if history:
                assert stack is not None
                say(f"preloading {history:,} completed workflows into the stores")
                seconds = preload(
                    {s: stack.database_url(s) for s in NAMES},
                    history,
                    progress_line,
                    generator_keys=stack.generator_keys(),
                    protools_keys=stack.protools_keys(),
                )
                progress_line("")
                say(f"preloaded {history:,} workflows in {seconds:.0f} s")
            for concurrency in config.concurrencies:
                durable_round: RoundReport | None = None
                for target, urls in targets.items():
                    name = f"{prefix}{target[0]}-h{history}-c{concurrency}"
                    measured, cpu, writes = _round(
                        ClosedLoop(urls, token, prefix=name),
                        concurrency,
                        config,
                        processes,
                        f"{target:<9} C={concurrency:<3}",
                        progress_line,
                        counters if target == DURABLE else None,
                    )
                    round_report = RoundReport.of(target, measured, cpu)
                    if writes is not None:
                        round_report.writes_per_workflow = writes.per_workflow(measured.count)
                    round_report.history = history
                    if target == DURABLE:
                        durable_round = round_report
                        records.extend(sample.record for sample in measured.samples)
                    elif durable_round is not None and round_report.throughput > 0:
                        durable_round.floor_ratio = round(
                            durable_round.throughput / round_report.throughput, 3
                        )
                    report.rounds.append(round_report)
                    progress_line("")
                    say(summary(round_report))
        if config.consoles:
            report.console_events = list(consoles.received)
            say(
                f"{config.consoles} consoles received {min(consoles.received):,} to "
                f"{max(consoles.received):,} events each"
                + (f"; {len(consoles.failures)} reconnections" if consoles.failures else "")
            )
        memory_after = processes.rss_mb()
        report.memory_mb = {
            name: (memory_before.get(name, 0.0), size) for name, size in memory_after.items()
        }
        if config.check and stack is not None:
            say(f"checking the invariants over {len(records)} workflows")
            # The floor's passwords and mails belong to no workflow, by design: leave them out.
            report.checker = check_invariants(
                stack,
                records,
                only=bool(config.preload),  # not a million preloaded ones
                leave_out=f"{prefix}{FLOOR[0]}",
            )
    return report


def check_invariants(
    stack: LocalStack,
    records: Sequence[ClientRecord],
    *,
    only: bool = False,
    leave_out: str | None = None,
) -> dict[str, Any]:
    """The invariant checker's verdict on ``stack``'s stores against what ``records`` were told.

    ``only``: read just those commands' workflows (a store with a long history is not read
    whole). ``leave_out``: passwords and mails of usernames with this prefix are none of the
    checker's business (the floor's, which no workflow owns).
    """
    snapshot = checker.read_snapshot(
        stack.database_url("protools"),
        stack.database_url("generator"),
        stack.maildir,
        generator_keys=stack.generator_keys(),
        protools_keys=stack.protools_keys(),
        only=records if only else None,
    )
    if leave_out:
        skipped = leave_out.lower()
        snapshot.passwords = {
            user: password
            for user, password in snapshot.passwords.items()
            if not user.startswith(skipped)
        }
        snapshot.mails = [m for m in snapshot.mails if not m.to.lower().startswith(skipped)]
    return checker.as_dict(checker.check(snapshot, records))


def _round(
    loop: ClosedLoop,
    concurrency: int,
    config: BenchConfig,
    processes: Processes,
    label: str,
    progress_line: Callable[[str], None],
    counters: WriteCounters | None = None,
) -> tuple[Round, dict[str, float], Writes | None]:
    """One measured round, after its warm-up; its CPU seconds by process, and what protools
    wrote (``counters``)."""
    if config.warmup:
        run_on_uvloop(loop.run(concurrency, config.warmup))
    for name in ("postgres", "postgres-services"):
        if name in processes.cpu_seconds():
            processes.refresh_children(name)
    written_before = counters.read() if counters is not None else None
    before = processes.cpu_seconds()

    def progress(done: int, total: int, seconds: float) -> None:
        rate = done / seconds if seconds > 0 else 0.0
        progress_line(f"{label} {done}/{total}  {rate:,.0f} wf/s")

    measured = run_on_uvloop(loop.run(concurrency, config.count, progress=progress))
    after = processes.cpu_seconds()
    writes = None
    if counters is not None and written_before is not None:
        writes = counters.between(written_before, counters.read())
    cpu = {name: after[name] - before.get(name, after[name]) for name in after}
    return measured, cpu, writes


def run_on_uvloop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run the load generator on uvloop: it shares the machine with what it measures."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def summary(round_report: RoundReport) -> str:
    errors = sum(round_report.errors.values())
    return (
        f"{round_report.target:<9} C={round_report.concurrency:<3} "
        f"{round_report.throughput:>7.1f} wf/s  p50 {round_report.p50_ms:>6.1f} ms  "
        f"p99 {round_report.p99_ms:>6.1f} ms  errors {errors}"
    )


# The write figures' column headers (each per workflow, except the batch's size).
WRITE_HEADERS = {
    "protools commits": "commits/wf",
    "use cases per commit": "batch",
    "db commits": "db tx/wf",
    "WAL records": "WAL rec/wf",
    "WAL bytes": "WAL B/wf",
    "WAL syncs": "fsync/wf",
}


def table(report: BenchReport) -> str:
    """The results as a plain text table."""
    from metallica.client import format_table

    names = sorted({name for r in report.rounds for name in r.cpu_ms_per_workflow})
    written = list(dict.fromkeys(name for r in report.rounds for name in r.writes_per_workflow))
    headers = [
        "target",
        "history",
        "C",
        "N",
        "wf/s",
        "x floor",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "refused",
        *[f"cpu {name}" for name in names],
        *[WRITE_HEADERS.get(name, name) for name in written],
    ]
    rows = [
        [
            r.target,
            f"{r.history:,}",
            str(r.concurrency),
            str(r.count),
            f"{r.throughput:.1f}",
            "" if r.floor_ratio is None else f"{r.floor_ratio:.2f}",
            f"{r.p50_ms:.1f}",
            f"{r.p95_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.max_ms:.1f}",
            str(sum(r.errors.values())),
            str(r.refused),
            *[
                f"{r.cpu_ms_per_workflow[name]:.2f}" if name in r.cpu_ms_per_workflow else ""
                for name in names
            ],
            *[
                f"{r.writes_per_workflow[name]:g}" if name in r.writes_per_workflow else ""
                for name in written
            ],
        ]
        for r in report.rounds
    ]
    return format_table(headers, rows)
