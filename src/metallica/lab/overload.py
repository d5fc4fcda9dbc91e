"""The brief's last case, network overload, as four scenarios measured against the lab's own
capacity.

A run first measures the capacity C of the lab it is given (``metallica bench --capacity``'s
search: the highest arrival rate whose admitted p99 stays under a bound with under 1 % refused)
and the unloaded p99 (at half of C, the rate the recovery phase comes back to), then:

1. ``overload-2x``: open-loop load at 2xC;
2. ``overload-slow-generator``: the same with a latency toxic of half the call timeout on the
   generator's wire;
3. ``overload-generator-down``: 0.5xC while every generator replica is stopped for 20 s: the
   breakers open, workflows park, nothing fails, everything resumes;
4. ``overload-recovery``: 2xC, then 0.5xC: rejections stop and latency comes back.

Each scenario prints what it measured against the issue's targets (goodput at least 80 % of C,
admitted p99 at most 3x unloaded, rejections answered in under 50 ms with ``Retry-After``,
recovery within 10 s, retry amplification at most 1.1 without faults) and checks the invariants
with the invariant checker. Its pass/fail checks use generous bounds (``Bounds``): the machine is
shared and noisy, the exact figures are for people to read.

The load runs in a process of its own (the lab's fault proxies run in this one: they would
compete with the load generator for one interpreter lock and make it lie about latency).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from metallica.faultproxy import Latency
from metallica.lab.harness import CALL_TIMEOUT, Lab
from metallica.load.capacity import CapacityResult, find_capacity
from metallica.load.openloop import OpenLoopResult, run_open_loop, settle
from metallica.load.plot import plot_timeline
from metallica.load.records import ClientRecord
from metallica.load.schedule import Phase
from metallica.load.stats import REJECTED

P99_BOUND = 0.25  # the capacity search's admitted p99 bound, seconds
GOODPUT_DEADLINE = 1.0  # a command answered completed within this counts as goodput
WAIT_SECONDS = 10.0  # each command asks protools to wait this long for its outcome


@dataclass(frozen=True)
class Targets:
    """The issue's figures."""

    goodput_fraction: float = 0.8
    admitted_p99_factor: float = 3.0
    rejection_p99_ms: float = 50.0
    recovery_seconds: float = 10.0
    recovered_rejections: float = 0.01
    recovered_p99_factor: float = 1.2
    amplification: float = 1.1


@dataclass(frozen=True)
class Bounds:
    """What the tests hold a run to: the same shape, generous (a shared 2-core machine)."""

    goodput_fraction: float = 0.4
    admitted_p99_factor: float = 15.0
    # A command refused from the admission queue waited there first, until CoDel judged the
    # queue standing (its target and interval: 0.35 s), then was shed: measured 400 to 490 ms
    # at p99 in the generator-down scenario, whose catch-up after the outage sheds new commands
    # for a few seconds (bench/README.md, "Admission queue"). 500 ms left no margin.
    rejection_p99_ms: float = 1000.0
    recovery_seconds: float = 20.0
    recovered_rejections: float = 0.05
    recovered_p99_factor: float = 3.0
    amplification: float = 1.5


TARGETS, BOUNDS = Targets(), Bounds()


@dataclass(frozen=True)
class Calibration:
    capacity: float  # C, workflows per second
    unloaded_p99_ms: float
    search: dict[str, Any]

    @property
    def probes(self) -> str:
        """Each probe of the search, in a few words."""
        return "; ".join(
            f"{probe['rate']:g}/s {'ok' if probe['passed'] else 'FAILED: ' + probe['reason']}"
            f" (p99 {probe['p99_ms']} ms)"
            for probe in self.search["probes"]
        )


@dataclass(frozen=True)
class Measured:
    """One scenario's figures, and whether each target and bound holds."""

    name: str
    figures: dict[str, Any]
    targets: dict[str, bool]
    bounds: dict[str, bool]


# --- the load, in a process of its own ----------------------------------------------------------


def _open_loop(
    urls: Sequence[str], token: str, phases: Sequence[Phase], prefix: str, seed: int
) -> OpenLoopResult:
    async def run() -> OpenLoopResult:
        result = await run_open_loop(
            urls,
            token,
            phases,
            prefix=prefix,
            goodput_deadline=GOODPUT_DEADLINE,
            wait_seconds=WAIT_SECONDS,
            seed=seed,
        )
        await settle(urls, token, result.records, seconds=60)
        return result

    return asyncio.run(run())


def _capacity(urls: Sequence[str], token: str, step_seconds: float, prefix: str) -> CapacityResult:
    async def run() -> CapacityResult:
        return await find_capacity(
            urls,
            token,
            p99_bound=P99_BOUND,
            step_seconds=step_seconds,
            prefix=prefix,
            start_rate=40,
            bisections=2,
            wait_seconds=WAIT_SECONDS,
            goodput_deadline=GOODPUT_DEADLINE,
            seed=11,
        )

    return asyncio.run(run())


_POOL = multiprocessing.get_context("spawn")


def in_own_process(function: Any, *args: Any) -> Any:
    with ProcessPoolExecutor(max_workers=1, mp_context=_POOL) as pool:
        return pool.submit(function, *args).result()


# --- calibration ---------------------------------------------------------------------------------

_CALIBRATIONS: weakref.WeakKeyDictionary[Lab, Calibration] = weakref.WeakKeyDictionary()


def calibrate(lab: Lab, *, step_seconds: float = 4.0) -> Calibration:
    """C and the unloaded p99 of ``lab``, measured once per lab."""
    known = _CALIBRATIONS.get(lab)
    if known is not None:
        return known
    urls = _urls(lab)
    search: CapacityResult = in_own_process(_capacity, urls, lab.token, step_seconds, "cal")
    lab.records.extend(search.records)
    capacity = max(search.capacity, 5.0)
    quiet: OpenLoopResult = in_own_process(
        _open_loop, urls, lab.token, [Phase.constant(capacity / 2, 10.0)], "quiet", 3
    )
    lab.records.extend(quiet.records)
    p99 = quiet.summary["admitted_latency"]["p99_ms"] or 1.0
    calibration = Calibration(capacity, p99, search.as_dict())
    _CALIBRATIONS[lab] = calibration
    return calibration


def _urls(lab: Lab) -> list[str]:
    return [lab.protools_url(index) for index in range(lab.replicas)]


# --- what protools' metrics say -----------------------------------------------------------------


def calls_by_attempt(lab: Lab) -> dict[str, dict[str, float]]:
    """Calls made so far to each service, first attempts and retries, over every replica."""
    totals: dict[str, dict[str, float]] = {}
    for url in _urls(lab):
        text = httpx.get(url + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "metallica_downstream_calls_total":
                    per = totals.setdefault(sample.labels["downstream"], {})
                    kind = sample.labels["attempt"]
                    per[kind] = per.get(kind, 0.0) + sample.value
    return totals


def amplification(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> float:
    """The worst, over the services, of attempts per first attempt made between two readings."""
    worst = 1.0
    for service, counts in after.items():
        first = counts.get("first", 0.0) - before.get(service, {}).get("first", 0.0)
        retries = counts.get("retry", 0.0) - before.get(service, {}).get("retry", 0.0)
        if first > 0:
            worst = max(worst, (first + retries) / first)
    return round(worst, 3)


# --- judging a run -------------------------------------------------------------------------------


def judge(
    name: str,
    result: OpenLoopResult,
    calibration: Calibration,
    *,
    amplified: float | None = None,
    recovery_from: float | None = None,
    expect_goodput: bool = True,
) -> Measured:
    """The figures of one overload run, against the targets and the bounds."""
    summary = result.summary
    admitted_p99 = summary["admitted_latency"]["p99_ms"] or 0.0
    rejection_p99 = summary["rejection_latency"]["p99_ms"] or 0.0
    unloaded = calibration.unloaded_p99_ms
    goodput_fraction = summary["goodput"] / calibration.capacity
    figures: dict[str, Any] = {
        "capacity": calibration.capacity,
        "offered": summary["offered_rate"],
        "throughput": summary["throughput"],
        "goodput": summary["goodput"],
        "goodput_of_capacity": round(goodput_fraction, 3),
        "admitted_p99_ms": admitted_p99,
        "unloaded_p99_ms": unloaded,
        "admitted_p99_x_unloaded": round(admitted_p99 / unloaded, 2),
        "rejected": summary["rejected"],
        "rejected_fraction": summary["rejected_fraction"],
        "rejections_by_status": summary["rejections_by_status"],
        "rejection_p99_ms": rejection_p99,
        "rejections_without_retry_after": summary["rejections_without_retry_after"],
        "errors": summary["errors"],
        "send_lag_p99_ms": summary["send_lag_p99_ms"],
    }
    targets: dict[str, bool] = {}
    bounds: dict[str, bool] = {}

    def both(key: str, value: float, target: float, bound: float, *, at_most: bool) -> None:
        targets[key] = value <= target if at_most else value >= target
        bounds[key] = value <= bound if at_most else value >= bound

    if expect_goodput:
        both(
            "goodput >= 0.8 C",
            goodput_fraction,
            TARGETS.goodput_fraction,
            BOUNDS.goodput_fraction,
            at_most=False,
        )
        both(
            "admitted p99 <= 3x unloaded",
            admitted_p99 / unloaded,
            TARGETS.admitted_p99_factor,
            BOUNDS.admitted_p99_factor,
            at_most=True,
        )
    if summary["rejected"]:
        both(
            "rejections p99 < 50 ms",
            rejection_p99,
            TARGETS.rejection_p99_ms,
            BOUNDS.rejection_p99_ms,
            at_most=True,
        )
    every_with_retry_after = summary["rejections_without_retry_after"] == 0
    targets["every rejection has Retry-After"] = bounds["every rejection has Retry-After"] = (
        every_with_retry_after
    )
    if amplified is not None:
        figures["retry_amplification"] = amplified
        both(
            "retry amplification <= 1.1",
            amplified,
            TARGETS.amplification,
            BOUNDS.amplification,
            at_most=True,
        )
    if recovery_from is not None:
        recovered_in = recovery_time(result, recovery_from, calibration)
        roughly = recovery_time(
            result,
            recovery_from,
            calibration,
            rejections=BOUNDS.recovered_rejections,
            p99_factor=BOUNDS.recovered_p99_factor,
        )
        figures["recovered_in_s"] = recovered_in
        figures["roughly_recovered_in_s"] = roughly
        key = "recovered within 10 s (rejections < 1 %, p99 <= 1.2x unloaded)"
        targets[key] = recovered_in is not None and recovered_in <= TARGETS.recovery_seconds
        bounds[key] = roughly is not None and roughly <= BOUNDS.recovery_seconds
    return Measured(name, figures, targets, bounds)


def recovery_time(
    result: OpenLoopResult,
    drop_at: float,
    calibration: Calibration,
    *,
    rejections: float = TARGETS.recovered_rejections,
    p99_factor: float = TARGETS.recovered_p99_factor,
) -> float | None:
    """Whole seconds after ``drop_at`` (an offset in the schedule) from which the commands due
    to the end of the run had under ``rejections`` of them refused and an admitted p99 within
    ``p99_factor`` of the unloaded one; None if no such second leaves 5 s of run to judge."""
    samples = [sample for sample in result.samples if sample.scheduled >= drop_at]
    end = max((sample.scheduled for sample in samples), default=drop_at)
    limit = calibration.unloaded_p99_ms * p99_factor
    second = 0
    while drop_at + second + 5 <= end:
        since = [s for s in samples if s.scheduled >= drop_at + second]
        refused = sum(1 for s in since if s.outcome == REJECTED) / len(since)
        latencies = sorted(s.latency for s in since if s.outcome != REJECTED)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0
        if refused < rejections and p99 * 1000 <= limit:
            return float(second)
        second += 1
    return None


# --- the scenarios -------------------------------------------------------------------------------


@dataclass
class OverloadRun:
    measured: Measured
    records: list[ClientRecord]
    result: OpenLoopResult


def save(run: OverloadRun, folder: Path) -> list[Path]:
    """Write a run's figures and timeline as JSON, and its latency/rejection plot when
    matplotlib is installed (``metallica[bench]``); return the files written."""
    name = run.measured.name
    data = {
        "scenario": name,
        "figures": run.measured.figures,
        "targets": run.measured.targets,
        "bounds": run.measured.bounds,
        "summary": run.result.summary,
        "timeline": run.result.timeline,
    }
    written = [folder / f"{name}.json"]
    written[0].write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    try:
        plot_timeline(run.result.timeline, folder / f"{name}.png", title=f"metallica {name}")
    except RuntimeError:  # no matplotlib: the JSON has it all
        return written
    return [*written, folder / f"{name}.png"]


def _load(lab: Lab, phases: Sequence[Phase], prefix: str) -> OpenLoopResult:
    result: OpenLoopResult = in_own_process(_open_loop, _urls(lab), lab.token, phases, prefix, 5)
    lab.records.extend(result.records)
    return result


def twice_capacity(lab: Lab, seconds: float = 60.0) -> OverloadRun:
    calibration = calibrate(lab)
    before = calls_by_attempt(lab)
    result = _load(lab, [Phase.constant(2 * calibration.capacity, seconds)], "over2x")
    measured = judge(
        "overload-2x", result, calibration, amplified=amplification(before, calls_by_attempt(lab))
    )
    return OverloadRun(measured, result.records, result)


def slow_generator(lab: Lab, seconds: float = 60.0) -> OverloadRun:
    calibration = calibrate(lab)
    lab.poison("generator", Latency(latency_ms=int(CALL_TIMEOUT * 500)))
    try:
        result = _load(lab, [Phase.constant(2 * calibration.capacity, seconds)], "overslow")
    finally:
        lab.cure("generator")
    # A 0.5 s generator puts every workflow past the goodput deadline's reach at this rate:
    # goodput is reported, not held to 0.8 C.
    measured = judge("overload-slow-generator", result, calibration, expect_goodput=False)
    return OverloadRun(measured, result.records, result)


def generator_down(lab: Lab, down_seconds: float = 20.0) -> OverloadRun:
    calibration = calibrate(lab)
    rate = calibration.capacity / 2
    total = down_seconds + 15.0
    with ProcessPoolExecutor(max_workers=1, mp_context=_POOL) as pool:
        started = time.monotonic()
        load = pool.submit(
            _open_loop, _urls(lab), lab.token, [Phase.constant(rate, total)], "overdown", 9
        )
        time.sleep(5.0)
        lab.stop_service("generator")
        try:
            time.sleep(down_seconds)
        finally:
            lab.start_service("generator")
        back_at = time.monotonic() - started
        result: OpenLoopResult = load.result()
    lab.records.extend(result.records)
    measured = judge("overload-generator-down", result, calibration, expect_goodput=False)
    failed = measured.figures["errors"]
    measured.figures["generator_back_at_s"] = round(back_at, 1)
    measured.targets["nothing failed"] = measured.bounds["nothing failed"] = not failed
    told = [record.told for record in result.records]
    completed = told.count("ok")
    measured.figures["completed"] = completed
    measured.targets["everything resumed"] = measured.bounds["everything resumed"] = (
        completed == len(result.records) - measured.figures["rejected"]
    )
    return OverloadRun(measured, result.records, result)


def recovery(lab: Lab, high_seconds: float = 30.0, low_seconds: float = 30.0) -> OverloadRun:
    calibration = calibrate(lab)
    phases = [
        Phase.constant(2 * calibration.capacity, high_seconds),
        Phase.constant(calibration.capacity / 2, low_seconds),
    ]
    result = _load(lab, phases, "overrecover")
    measured = judge(
        "overload-recovery", result, calibration, recovery_from=high_seconds, expect_goodput=False
    )
    return OverloadRun(measured, result.records, result)
