"""``metallica bench --open-loop`` and ``--capacity``: a stack, the load, the drain, the checker.

The stack is the closed loop's (:func:`metallica.bench.runner.started_stack`: SQLite by default,
a throwaway PostgreSQL cluster, a server of the user's, or a running protools with ``--url``),
and so is the checker call. What differs is the load: an open loop on a schedule of phases
(:mod:`metallica.load.openloop`), or a capacity search made of short open loops
(:mod:`metallica.load.capacity`). Between the load and the checker, the commands still running
when their wait ended are followed to their end, as their clients would.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import psutil

from metallica.bench.runner import (
    BenchConfig,
    Say,
    check_invariants,
    run_on_uvloop,
    started_stack,
)
from metallica.load.capacity import CapacityResult, Verdict, find_capacity
from metallica.load.closedloop import ClosedLoop
from metallica.load.openloop import LiveStatus, run_open_loop, settle
from metallica.load.records import ClientRecord
from metallica.load.schedule import Phase
from metallica.load.stats import COMPLETED, ERROR, FAILED, REJECTED


@dataclass
class OpenConfig:
    """An open-loop run (``phases``) or a capacity search; ``stack`` says where, as for the
    closed loop (its closed-loop fields are unused)."""

    stack: BenchConfig
    phases: Sequence[Phase] = ()
    capacity: bool = False
    warmup: int = 100  # workflows sent in a closed loop first, not measured (but checked)
    goodput_deadline: float = 1.0
    wait_seconds: float = 10.0
    seed: int | None = None
    p99_bound: float = 0.100  # seconds
    step_seconds: float = 5.0
    start_rate: float = 25.0
    max_rate: float = 2000.0
    bisections: int = 3


@dataclass
class OpenReport:
    config: dict[str, Any]
    started_at: str
    machine: dict[str, Any]
    summary: dict[str, Any] | None = None  # the open loop's
    timeline: list[dict[str, Any]] = field(default_factory=list)
    capacity: dict[str, Any] | None = None
    unsettled: int = 0  # commands whose outcome their client never learnt
    checker: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(vars(self), indent=2)


def run_open(config: OpenConfig, say: Say, progress_line: Callable[[str], None]) -> OpenReport:
    """Run the open loop or the capacity search ``config`` describes, then check."""
    report = OpenReport(
        config={
            "mode": "capacity" if config.capacity else "open-loop",
            "backend": config.stack.backend,
            "replicas": config.stack.replicas,
            "warmup": config.warmup,
            "phases": [str(phase) for phase in config.phases],
            "goodput_deadline_s": config.goodput_deadline,
            "wait_s": config.wait_seconds,
            "seed": config.seed,
            **(
                {
                    "p99_bound_ms": round(config.p99_bound * 1000, 1),
                    "step_seconds": config.step_seconds,
                    "start_rate": config.start_rate,
                    "max_rate": config.max_rate,
                    "bisections": config.bisections,
                }
                if config.capacity
                else {}
            ),
        },
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine={
            "cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        },
    )
    token = config.stack.token or secrets.token_urlsafe(16)
    with ExitStack() as running:
        stack = None
        if config.stack.urls:
            urls = list(config.stack.urls)
        else:
            stack, _, _ = running.enter_context(started_stack(config.stack, token, say))
            urls = stack.urls("protools")
        prefix = f"o{uuid.uuid4().hex[:6]}"
        records: list[ClientRecord] = []
        if config.warmup:
            # The first commands pay for cold caches and new connections: with a few hundred
            # arrivals per probe, one of them would be the p99.
            say(f"warm-up: {config.warmup} workflows in a closed loop (C=4), not measured")
            warm = run_on_uvloop(ClosedLoop(urls, token, prefix=f"{prefix}w").run(4, config.warmup))
            records += [sample.record for sample in warm.samples]
        if config.capacity:
            found = _capacity(config, urls, token, prefix, say, progress_line)
            report.capacity = found.as_dict()
            records += found.records
        else:
            say(f"open loop: {', '.join(map(str, config.phases))} (rate x seconds)")
            result = run_on_uvloop(
                run_open_loop(
                    urls,
                    token,
                    config.phases,
                    prefix=prefix,
                    goodput_deadline=config.goodput_deadline,
                    wait_seconds=config.wait_seconds,
                    seed=config.seed,
                    progress=lambda status: progress_line(live_line("open loop", status)),
                )
            )
            progress_line("")
            report.summary, report.timeline = result.summary, result.timeline
            records += result.records
            report.unsettled = run_on_uvloop(settle(urls, token, result.records))
        if config.stack.check and stack is not None:
            say(f"checking the invariants over {len(records)} commands")
            report.checker = check_invariants(stack, records)
    return report


def _capacity(
    config: OpenConfig,
    urls: list[str],
    token: str,
    prefix: str,
    say: Say,
    progress_line: Callable[[str], None],
) -> CapacityResult:
    label = ["probe"]

    def started(number: int, rate: float) -> None:
        label[0] = f"probe {number} at {rate:g}/s"

    def probed(verdict: Verdict) -> None:
        progress_line("")
        say(probe_line(label[0], verdict))

    say(
        f"capacity search: admitted p99 <= {config.p99_bound * 1000:g} ms, < 1 % shed, "
        f"probes of {config.step_seconds:g} s from {config.start_rate:g}/s"
    )
    return run_on_uvloop(
        find_capacity(
            urls,
            token,
            p99_bound=config.p99_bound,
            step_seconds=config.step_seconds,
            prefix=prefix,
            start_rate=config.start_rate,
            max_rate=config.max_rate,
            bisections=config.bisections,
            wait_seconds=config.wait_seconds,
            goodput_deadline=config.goodput_deadline,
            seed=config.seed,
            on_start=started,
            on_probe=probed,
            progress=lambda status: progress_line(live_line(label[0], status)),
        )
    )


def live_line(label: str, status: LiveStatus) -> str:
    done = status.done
    return (
        f"{label}  {status.elapsed:5.1f} s  "
        f"{'draining' if status.draining else f'target {status.target_rate:,.0f}/s'}  "
        f"sent {status.sent:,}  in flight {status.in_flight:,}  "
        f"completed {done.get(COMPLETED, 0):,}  shed {done.get(REJECTED, 0):,}  "
        f"errors {done.get(ERROR, 0) + done.get(FAILED, 0):,}"
    )


def probe_line(label: str, verdict: Verdict) -> str:
    p99 = "-" if verdict.p99_ms is None else f"{verdict.p99_ms:.1f} ms"
    outcome = "passed" if verdict.passed else f"FAILED ({verdict.reason})"
    return (
        f"{label}: {outcome}  admitted p99 {p99}  shed {verdict.shed_fraction:.1%}  "
        f"errors {verdict.error_fraction:.1%}  "
        f"throughput {verdict.summary.get('throughput', 0):.1f} wf/s"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """An open loop's summary, for people."""
    admitted, shed = summary["admitted_latency"], summary["rejection_latency"]
    by_status = ", ".join(f"{s}: {n}" for s, n in summary["rejections_by_status"].items())
    errors = ", ".join(f"{s}: {n}" for s, n in summary["errors"].items())
    return [
        f"open loop {','.join(summary['phases'])}: {summary['arrivals']:,} arrivals in "
        f"{summary['seconds']:g} s ({summary['offered_rate']:.1f}/s offered)",
        f"throughput {summary['throughput']:.1f} wf/s  goodput {summary['goodput']:.1f} wf/s "
        f"(completed within {summary['goodput_deadline_s']:g} s)",
        f"admitted {summary['admitted']:,}: p50 {_ms(admitted['p50_ms'])} ms  "
        f"p95 {_ms(admitted['p95_ms'])} ms  p99 {_ms(admitted['p99_ms'])} ms  "
        f"max {_ms(admitted['max_ms'])} ms",
        f"shed {summary['rejected']:,} ({summary['rejected_fraction']:.1%}): "
        f"p50 {_ms(shed['p50_ms'])} ms  p99 {_ms(shed['p99_ms'])} ms  "
        f"by status: {by_status or 'none'}  without Retry-After: "
        f"{summary['rejections_without_retry_after']}",
        f"errors {sum(summary['errors'].values())} ({errors or 'none'})  still running when "
        f"the wait ended: {summary['pending']}  send lag p99 {_ms(summary['send_lag_p99_ms'])} ms",
    ]


def capacity_table(capacity: dict[str, Any]) -> str:
    """The probes of a capacity search as a plain text table."""
    from metallica.client import format_table

    headers = ["rate/s", "verdict", "p99 ms", "shed", "errors", "wf/s", "goodput/s"]
    rows = [
        [
            f"{probe['rate']:g}",
            "pass" if probe["passed"] else "fail",
            _ms(probe["p99_ms"]),
            f"{probe['shed_fraction']:.1%}",
            f"{probe['error_fraction']:.1%}",
            f"{probe['summary'].get('throughput', 0):.1f}",
            f"{probe['summary'].get('goodput', 0):.1f}",
        ]
        for probe in capacity["probes"]
    ]
    return format_table(headers, rows)
