"""How an overload run is judged: recovery time, retry amplification, targets and bounds."""

from __future__ import annotations

from metallica.lab.overload import Calibration, amplification, judge, recovery_time
from metallica.load.openloop import OpenLoopResult
from metallica.load.records import ClientRecord
from metallica.load.schedule import Phase
from metallica.load.stats import COMPLETED, REJECTED, OpenSample, summarize, timeline

CALIBRATION = Calibration(capacity=100.0, unloaded_p99_ms=20.0, search={"probes": []})
PHASES = [Phase.constant(200, 10), Phase.constant(50, 20)]


def sample(at: float, latency: float, outcome: str = COMPLETED) -> OpenSample:
    status = 503 if outcome == REJECTED else 200
    record = ClientRecord(f"k{at}", f"u{at}")
    return OpenSample(at, 0.0, latency, status, outcome, outcome == REJECTED, record)


def run(samples: list[OpenSample]) -> OpenLoopResult:
    summary = summarize(samples, PHASES, goodput_deadline=1.0)
    return OpenLoopResult(PHASES, samples, 30.0, summary, timeline(samples, PHASES))


def overload_then_calm(calm_from: float) -> OpenLoopResult:
    samples = []
    for tenth in range(300):
        at = tenth / 10
        if at < calm_from:  # overloaded: slow answers, and a third refused
            samples.append(sample(at, 0.2))
            samples.append(sample(at + 0.01, 0.005, REJECTED))
            samples.append(sample(at + 0.02, 0.2))
        else:
            samples.append(sample(at, 0.015))
    return run(samples)


def test_recovery_is_the_first_second_after_which_refusals_and_latency_are_back() -> None:
    assert recovery_time(overload_then_calm(10.0), 10.0, CALIBRATION) == 0.0
    assert recovery_time(overload_then_calm(14.0), 10.0, CALIBRATION) == 4.0
    assert recovery_time(overload_then_calm(29.0), 10.0, CALIBRATION) is None  # never, in time


def test_the_judgement_holds_each_figure_to_its_target_and_its_bound() -> None:
    measured = judge("overload-recovery", overload_then_calm(14.0), CALIBRATION, recovery_from=10)
    assert measured.figures["recovered_in_s"] == 4.0
    key = "recovered within 10 s (rejections < 1 %, p99 <= 1.2x unloaded)"
    assert measured.targets[key]
    assert measured.bounds[key]
    assert measured.targets["every rejection has Retry-After"]
    assert measured.figures["rejected"] == 140  # one in three of 14 s at 10 a second
    assert not measured.targets["admitted p99 <= 3x unloaded"]  # 200 ms against 20 ms


def test_retry_amplification_is_attempts_per_first_attempt_of_the_worst_service() -> None:
    before = {"generator": {"first": 100.0, "retry": 5.0}, "mailer": {"first": 100.0}}
    after = {"generator": {"first": 200.0, "retry": 25.0}, "mailer": {"first": 200.0}}
    assert amplification(before, after) == 1.2
    assert amplification(after, after) == 1.0
