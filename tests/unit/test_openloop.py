"""The open loop's pure parts (schedules, figures, the capacity search) and its sender against a
fake protools in this process: arrivals go out on time whatever the answers take."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from metallica.load import checker
from metallica.load import records as told
from metallica.load.capacity import Probe, Verdict, judge, search_capacity
from metallica.load.checker import Mail, Snapshot
from metallica.load.openloop import require_loopback, run_open_loop, settle, tell
from metallica.load.records import ClientRecord
from metallica.load.schedule import (
    MAX_RATE,
    MAX_SECONDS,
    Phase,
    arrivals,
    parse_phases,
    parse_ramp,
    rate_at,
)
from metallica.load.stats import (
    COMPLETED,
    ERROR,
    FAILED,
    PENDING,
    REJECTED,
    OpenSample,
    classify,
    percentile,
    summarize,
    timeline,
)
from tests.asgi_server import AsgiServer

# --- the schedule ----------------------------------------------------------------------------


def test_poisson_arrivals_have_the_mean_rate_and_exponential_gaps() -> None:
    times = list(arrivals([Phase.constant(200, 50)], random.Random(7)))
    assert abs(len(times) - 10_000) < 300  # 3 standard deviations of a Poisson count
    assert times == sorted(times)
    assert times[0] >= 0
    assert times[-1] < 50
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert statistics.fmean(gaps) == pytest.approx(1 / 200, rel=0.03)
    # exponential gaps: the standard deviation equals the mean (a fixed gap would give 0)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.05)


def test_a_seeded_schedule_replays() -> None:
    phases = [Phase.constant(50, 2)]
    assert list(arrivals(phases, random.Random(3))) == list(arrivals(phases, random.Random(3)))


def test_a_ramp_thins_arrivals_to_its_rising_rate() -> None:
    times = list(arrivals([Phase(0, 200, 100)], random.Random(11)))
    assert abs(len(times) - 10_000) < 300
    first_half = sum(1 for t in times if t < 50)  # the integral of 2t over 0..50: a quarter
    assert first_half / len(times) == pytest.approx(0.25, abs=0.02)


def test_phases_follow_each_other_and_a_quiet_phase_sends_nothing() -> None:
    phases = [Phase.constant(400, 5), Phase.constant(0, 2), Phase.constant(100, 10)]
    times = list(arrivals(phases, random.Random(5)))
    assert abs(sum(1 for t in times if t < 5) - 2000) < 135
    assert not [t for t in times if 5 <= t < 7]
    assert abs(sum(1 for t in times if t >= 7) - 1000) < 95
    assert rate_at(phases, 4.9) == 400
    assert rate_at(phases, 6) == 0
    assert rate_at(phases, 17) == 0


def test_the_arrival_cap_holds_whatever_the_rates_say() -> None:
    assert len(list(arrivals([Phase.constant(1000, 10)], random.Random(1), limit=25))) == 25


def test_phases_parse_rates_ramps_and_seconds() -> None:
    assert parse_phases("400x30, 100x20") == [Phase(400, 400, 30), Phase(100, 100, 20)]
    assert parse_phases("100:400x30,0x1.5") == [Phase(100, 400, 30), Phase(0, 0, 1.5)]
    assert str(Phase(100, 400, 30)) == "100:400x30"
    assert str(Phase.constant(7.5, 2)) == "7.5x2"
    assert parse_ramp("100:400", 30) == Phase(100, 400, 30)


@pytest.mark.parametrize(
    "text",
    ["", "400", "x30", "400x", "-1x5", "400x0", "a:bx3", "400x30,", f"{MAX_RATE + 1:g}x1"],
)
def test_a_bad_phase_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_phases(text)


def test_a_schedule_beyond_the_time_cap_or_a_bad_ramp_is_refused() -> None:
    with pytest.raises(ValueError, match="last more than"):
        parse_phases(f"10x{MAX_SECONDS:g},10x1")
    with pytest.raises(ValueError, match="FROM:TO"):
        parse_ramp("100", 10)


# --- the figures -----------------------------------------------------------------------------


def sample(
    scheduled: float,
    latency: float,
    status: int | str,
    *,
    completed: bool = False,
    retry_after: bool = False,
) -> OpenSample:
    body = {"status": "completed"} if completed else None
    record = ClientRecord(f"k{scheduled}", f"u{scheduled}")
    return OpenSample(
        scheduled, 0.001, latency, status, classify(status, body), retry_after, record
    )


def test_answers_are_classified_by_status_and_body() -> None:
    assert classify(200, {"status": "completed"}) == COMPLETED
    assert classify(200, {"status": "running"}) == ERROR
    assert classify(429, None) == REJECTED
    assert classify(503, {"type": "x"}) == REJECTED
    assert classify(202, {"status": "running"}) == PENDING
    assert classify(409, {"type": "username-taken"}) == FAILED
    assert classify(500, None) == ERROR
    assert classify("ClientConnectorError", None) == ERROR


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(100, 0, -1)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([3.0], 0.99) == 3
    assert percentile([], 0.5) is None


def test_the_summary_separates_goodput_admitted_and_shed() -> None:
    samples = [
        *(sample(0.1 * n, 0.010, 200, completed=True) for n in range(6)),  # fast
        sample(0.7, 1.5, 200, completed=True),  # completed after the goodput deadline
        sample(0.8, 0.002, 429, retry_after=True),
        sample(1.1, 0.004, 429, retry_after=True),
        sample(1.2, 0.003, 503),  # shed without Retry-After
        sample(1.3, 10.0, 202),
        sample(1.4, 20.0, "ServerTimeoutError"),
        sample(1.5, 0.02, 409),
    ]
    found = summarize(samples, [Phase.constant(6.5, 2)], goodput_deadline=1.0)

    assert found["arrivals"] == 13
    assert found["offered_rate"] == 6.5
    assert (found["completed"], found["throughput"], found["goodput"]) == (7, 3.5, 3.0)
    assert found["outcomes"] == {
        COMPLETED: 7,
        REJECTED: 3,
        PENDING: 1,
        FAILED: 1,
        ERROR: 1,
    }
    assert found["admitted"] == 10
    assert found["admitted_latency"] == {
        "p50_ms": 10.0,
        "p95_ms": 20_000.0,
        "p99_ms": 20_000.0,
        "max_ms": 20_000.0,
    }
    assert found["rejected"] == 3
    assert found["rejected_fraction"] == round(3 / 13, 4)
    assert found["rejection_latency"]["p50_ms"] == 3.0
    assert found["rejection_latency"]["p99_ms"] == 4.0
    assert found["rejections_by_status"] == {"429": 2, "503": 1}
    assert found["rejections_without_retry_after"] == 1
    assert found["pending"] == 1
    assert found["errors"] == {"409": 1, "ServerTimeoutError": 1}


def test_the_timeline_bins_by_scheduled_second() -> None:
    samples = [
        sample(0.2, 0.010, 200, completed=True),
        sample(0.9, 0.030, 200, completed=True),
        sample(1.5, 0.001, 429),
        sample(2.99, 0.050, 500),
    ]
    rows = timeline(samples, [Phase.constant(2, 3)])
    assert [row["arrivals"] for row in rows] == [2, 1, 1]
    assert [row["completed"] for row in rows] == [2, 0, 0]
    assert [row["rejected"] for row in rows] == [0, 1, 0]
    assert [row["errors"] for row in rows] == [0, 0, 1]
    assert rows[0]["admitted_p50_ms"] == 10.0
    assert rows[0]["admitted_p99_ms"] == 30.0
    assert rows[1]["admitted_p99_ms"] is None  # only a refusal that second
    assert [row["target_rate"] for row in rows] == [2, 2, 2]


# --- what the checker is told about a refusal --------------------------------------------------


def test_a_shed_command_that_was_never_stored_is_no_violation() -> None:
    shed = ClientRecord("k-shed", "u-shed", posts=1)
    tell(shed, REJECTED, 429, {"type": "https://metallica.dev/problems/overloaded"})
    assert shed.told == told.FAILED
    assert shed.error is not None
    assert shed.error.startswith("rejected: HTTP 429")
    unavailable = ClientRecord("k-503", "u-503", posts=1)
    tell(unavailable, REJECTED, 503, None)
    empty = Snapshot(events={}, global_positions=[], commands={}, passwords={}, mails=[])
    assert checker.check(empty, [shed, unavailable]).ok


def test_a_completed_answer_tells_the_password_for_the_checker() -> None:
    record = ClientRecord("k1", "ann")
    tell(record, COMPLETED, 200, {"workflow_id": "w1", "status": "completed", "password": "pw"})
    assert (record.told, record.workflow_id, record.password) == (told.OK, "w1", "pw")
    lonely = Snapshot(
        events={},
        global_positions=[],
        commands={},
        passwords={"ann": "pw"},
        mails=[Mail(Path("m"), "ann@example.com", "pw")],
    )
    assert not checker.check(lonely, [record]).ok  # told ok, never recorded: still caught


# --- the capacity search -----------------------------------------------------------------------


def fake_probe(capacity: float) -> tuple[Probe, list[float]]:
    probed: list[float] = []

    async def probe(rate: float) -> Verdict:
        probed.append(rate)
        passed = rate <= capacity
        return Verdict(rate, passed, 20.0 if passed else 900.0, 0.0, 0.0)

    return probe, probed


def test_the_search_grows_geometrically_then_bisects() -> None:
    probe, probed = fake_probe(237)
    found, verdicts = asyncio.run(search_capacity(probe, start_rate=25, bisections=3))
    assert probed[:5] == [25, 50, 100, 200, 400]
    assert probed[5:] == [300, 250, 225]
    assert found == 225
    assert [v.rate for v in verdicts] == probed


def test_the_search_halves_when_the_start_already_fails() -> None:
    probe, probed = fake_probe(30)
    found, _ = asyncio.run(search_capacity(probe, start_rate=100, bisections=2))
    assert probed == [100, 50, 25, 38, 32]
    assert found == 25


def test_the_search_stops_at_its_ceiling_and_at_its_floor() -> None:
    probe, probed = fake_probe(10_000)
    found, _ = asyncio.run(search_capacity(probe, start_rate=100, max_rate=500))
    assert (found, probed) == (500, [100, 200, 400, 500])
    probe, probed = fake_probe(0)
    found, _ = asyncio.run(search_capacity(probe, start_rate=4, min_rate=1))
    assert (found, probed) == (0.0, [4, 2, 1])


def test_a_probe_fails_on_latency_shedding_or_errors() -> None:
    def summary(**changes: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "arrivals": 1000,
            "rejected": 0,
            "outcomes": {"error": 0, "failed": 0, "pending": 0},
            "admitted_latency": {"p99_ms": 80.0},
        }
        return base | changes

    assert judge(100, summary(), p99_bound=0.1).passed
    slow = judge(100, summary(admitted_latency={"p99_ms": 120.0}), p99_bound=0.1)
    assert not slow.passed
    assert slow.reason == "p99 over the bound"
    shed = judge(100, summary(rejected=10), p99_bound=0.1)
    assert not shed.passed
    assert shed.reason == "1.0% shed"
    broken = judge(100, summary(outcomes={"error": 5, "failed": 0, "pending": 6}), p99_bound=0.1)
    assert not broken.passed
    assert "errors" in broken.reason
    assert not judge(100, summary(arrivals=0), p99_bound=0.1).passed


# --- the sender, against a fake protools -------------------------------------------------------


def test_only_loopback_urls_are_targets() -> None:
    assert require_loopback(["http://127.0.0.1:8000/", "http://localhost:1", "http://[::1]:2"]) == [
        "http://127.0.0.1:8000",
        "http://localhost:1",
        "http://[::1]:2",
    ]
    for url in ("http://example.com", "http://10.0.0.1:8000", "file:///etc/passwd"):
        with pytest.raises(ValueError, match="only targets this machine"):
            require_loopback([url])


class FakeProtools:
    """Answers slowly, sheds every third command (429 with Retry-After, or plain-text 503
    without), and leaves every fifth running (202) until someone asks for it again."""

    def __init__(self, answer_after: float) -> None:
        self.answer_after = answer_after
        self.waits: list[str] = []
        self.keys: list[str] = []

    def app(self) -> Starlette:
        async def create(request: Request) -> Response:
            self.waits.append(request.headers.get("prefer", ""))
            key = request.headers["idempotency-key"]
            self.keys.append(key)
            number = int(key.rsplit("k", 1)[1])
            body = await request.json()
            if number % 3 == 0:
                if number % 2:
                    return JSONResponse({"type": "overloaded"}, 429, headers={"Retry-After": "1"})
                return PlainTextResponse("busy", 503)
            await asyncio.sleep(self.answer_after)
            workflow = {"workflow_id": f"w{number}"}
            if number % 5 == 0:
                return JSONResponse({**workflow, "status": "running"}, 202)
            password = f"pw-{body['username']}"
            return JSONResponse({**workflow, "status": "completed", "password": password})

        async def read(request: Request) -> Response:
            workflow_id = request.path_params["workflow_id"]
            password = f"pw-{workflow_id}"
            body = {"workflow_id": workflow_id, "status": "completed", "password": password}
            return JSONResponse(body)

        return Starlette(
            routes=[
                Route("/v1/workflows/password-creation", create, methods=["POST"]),
                Route("/v1/workflows/{workflow_id}", read, methods=["GET"]),
            ]
        )


@pytest.fixture
def fake() -> Iterator[tuple[FakeProtools, str]]:
    protools = FakeProtools(answer_after=0.3)
    with AsgiServer(protools.app()) as server:
        yield protools, server.url


def test_arrivals_leave_on_schedule_even_when_answers_are_slow(
    fake: tuple[FakeProtools, str],
) -> None:
    protools, url = fake
    seen: list[int] = []
    phases = [Phase.constant(40, 1.5)]

    async def scenario() -> tuple[Any, int]:
        result = await run_open_loop(
            [url],
            "token",
            phases,
            prefix="t",
            wait_seconds=2,
            seed=4,
            progress=lambda status: seen.append(status.in_flight),
        )
        return result, await settle([url], "token", result.records, seconds=5)

    result, unknown = asyncio.run(scenario())
    expected = len(list(arrivals(phases, random.Random(4))))
    assert len(result.samples) == expected == len(protools.keys)
    assert all(wait == "wait=2" for wait in protools.waits)
    # a closed loop would have sent one at a time; here up to ~12 waited at once (40/s x 0.3 s)
    assert max(seen) >= 4
    summary = result.summary
    assert summary["errors"] == {}
    assert summary["arrivals"] == expected
    assert summary["send_lag_p99_ms"] < 100
    completed = [s for s in result.samples if s.outcome == COMPLETED]
    assert completed
    assert all(0.29 < s.latency < 1.0 for s in completed)
    shed = [s for s in result.samples if s.outcome == REJECTED]
    assert summary["rejected"] == len(shed) > 0
    assert summary["rejections_without_retry_after"] == summary["rejections_by_status"].get("503")
    assert all(s.record.told == told.FAILED for s in shed)
    assert summary["pending"] == sum(1 for s in result.samples if s.outcome == PENDING) > 0
    # settle() followed every 202 to its end, as a polling client would
    assert unknown == 0
    assert all(
        s.record.told == told.OK and s.record.password == f"pw-{s.record.workflow_id}"
        for s in result.samples
        if s.outcome == PENDING
    )
