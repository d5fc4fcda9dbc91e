"""The overload building blocks: adaptive limit, breaker, retry budget, client rates."""

from __future__ import annotations

import asyncio

import pytest

from metallica.overload.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from metallica.overload.budget import RetryBudget
from metallica.overload.limits import GradientLimit, Limiter
from metallica.overload.rates import ClientRates, retry_after_seconds
from metallica.protools.engine import Failed, Retry, Succeeded
from metallica.protools.flow import (
    BUSY,
    HEALTHY,
    SICK,
    Admission,
    DownstreamGuard,
    FlowSettings,
    classify,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the adaptive limit ------------------------------------------------------------------------


def test_the_limit_grows_while_latency_holds_and_shrinks_when_it_rises() -> None:
    limit = GradientLimit(initial=10, minimum=2, maximum=100)
    for _ in range(200):
        limit.update(0.010, in_flight=limit.limit)
    grown = limit.limit
    assert grown > 30  # steady latency, fully used: it grew
    for _ in range(30):
        limit.update(0.100, in_flight=limit.limit)  # ten times slower: a queue formed
    assert limit.limit < grown / 2


def test_an_unused_limit_does_not_grow() -> None:
    limit = GradientLimit(initial=10, minimum=2, maximum=100)
    for _ in range(200):
        limit.update(0.010, in_flight=1)
    assert limit.limit == 10


def test_drops_shrink_the_limit_down_to_its_minimum_never_below() -> None:
    limit = GradientLimit(initial=50, minimum=4, maximum=100)
    for _ in range(20):
        limit.update(0.010, in_flight=50)
    for _ in range(500):
        limit.update(0.010, in_flight=1, dropped=True)
    assert limit.limit == 4


def test_the_limiter_refuses_or_queues_beyond_the_limit_and_grants_in_order() -> None:
    asyncio.run(_test_the_limiter_refuses_or_queues_beyond_the_limit_and_grants_in_order())


async def _test_the_limiter_refuses_or_queues_beyond_the_limit_and_grants_in_order() -> None:
    limiter = Limiter(GradientLimit(initial=2, minimum=2, maximum=2))
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert not await limiter.acquire(0.01)  # timed out: no permit taken
    first = asyncio.ensure_future(limiter.acquire(5))
    second = asyncio.ensure_future(limiter.acquire(5))
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    limiter.release(0.01)
    assert await first
    assert not second.done()
    limiter.release(0.01)
    assert await second
    assert limiter.in_flight == 2


def test_a_cancelled_waiter_leaks_no_permit() -> None:
    asyncio.run(_test_a_cancelled_waiter_leaks_no_permit())


async def _test_a_cancelled_waiter_leaks_no_permit() -> None:
    limiter = Limiter(GradientLimit(initial=1, minimum=1, maximum=1))
    assert limiter.try_acquire()
    waiter = asyncio.ensure_future(limiter.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release(None)
    assert limiter.in_flight == 0
    assert limiter.try_acquire()


# --- the breaker -------------------------------------------------------------------------------


def test_the_breaker_opens_after_failures_in_a_row_and_a_probe_closes_it() -> None:
    clock, changes = Clock(), []
    breaker = CircuitBreaker(
        "generator",
        failure_threshold=3,
        open_seconds=1,
        clock=clock,
        on_change=lambda name, state: changes.append(state),
    )
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # the run is broken: start counting again
    breaker.failed()
    breaker.failed()
    assert breaker.state == CLOSED
    assert breaker.allow()
    breaker.failed()
    assert breaker.state == OPEN
    assert not breaker.allow()
    assert breaker.opens_again_in() == pytest.approx(1)
    clock.now += 1.01
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # one at a time
    breaker.succeeded()
    assert breaker.state == CLOSED
    assert breaker.allow()
    assert changes == [OPEN, CLOSED]


def test_a_failed_probe_opens_the_breaker_for_longer_each_time_up_to_a_cap() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        "g", failure_threshold=1, open_seconds=1, max_open_seconds=3, clock=clock
    )
    breaker.failed()
    spells = []
    for _ in range(4):
        spells.append(breaker.opens_again_in())
        clock.now += spells[-1] + 0.01
        assert breaker.allow()
        breaker.failed()
    assert spells == pytest.approx([1, 2, 3, 3])


def test_an_abandoned_probe_lets_another_one_go() -> None:
    clock = Clock()
    breaker = CircuitBreaker("g", failure_threshold=1, open_seconds=1, clock=clock)
    breaker.failed()
    clock.now += 1.5
    assert breaker.allow()
    breaker.abandoned()
    assert breaker.allow()


# --- the retry budget --------------------------------------------------------------------------


def test_retries_are_at_most_a_fifth_of_calls_plus_the_floor() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, floor_per_second=2, clock=clock)
    for _ in range(100):
        budget.deposit()
    allowed = sum(budget.try_spend() for _ in range(100))
    assert allowed == 20 + 2  # 100 calls' worth, and the floor's reserve
    assert not budget.try_spend()
    clock.now += 0.5
    assert budget.try_spend()  # the floor refills with time: one retry per half second
    assert not budget.try_spend()


# --- client rates ------------------------------------------------------------------------------


def test_a_client_over_its_rate_is_told_when_to_come_back_and_others_are_not_affected() -> None:
    clock = Clock()
    rates = ClientRates(rate=10, burst=2, clock=clock)
    assert rates.take("a") == 0
    assert rates.take("a") == 0
    wait = rates.take("a")
    assert wait == pytest.approx(0.1)
    assert rates.take("b") == 0
    clock.now += 0.1
    assert rates.take("a") == 0
    assert retry_after_seconds(wait) == 1
    assert retry_after_seconds(2.2) == 3


def test_forgotten_clients_bound_the_memory() -> None:
    rates = ClientRates(rate=1, burst=1, max_clients=3, clock=Clock())
    for client in "abcde":
        rates.take(client)
    assert rates.take("a") == 0  # forgotten, so a new full bucket
    assert rates.take("e") > 0  # still remembered, and empty


def test_a_zero_rate_means_no_limit() -> None:
    rates = ClientRates(rate=0, burst=1, clock=Clock())
    assert all(rates.take("a") == 0 for _ in range(100))


# --- protools' flow control --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [
        (Succeeded({}), HEALTHY),
        (Failed({}), HEALTHY),
        (Retry("refused", in_doubt=False), HEALTHY),
        (Retry("connection-refused", in_doubt=False), SICK),
        (Retry("timeout"), SICK),
        (Retry("server-error"), SICK),
        (Retry("overloaded", in_doubt=False), BUSY),
    ],
)
def test_outcomes_are_classified_for_the_breaker_and_the_limit(
    outcome: Succeeded | Failed | Retry, kind: str
) -> None:
    assert classify(outcome) == kind


def test_a_guard_opens_its_breaker_on_an_unwell_service_but_not_on_an_overloaded_one() -> None:
    asyncio.run(_a_guard_opens_its_breaker())


async def _a_guard_opens_its_breaker() -> None:
    guard = DownstreamGuard.create("generator", FlowSettings(breaker_failures=2))
    for _ in range(5):
        assert await guard.limiter.acquire(1)
        guard.learn(Retry("overloaded", in_doubt=False), 0.01)
    assert guard.breaker.state == CLOSED
    for _ in range(2):
        assert await guard.limiter.acquire(1)
        guard.learn(Retry("connection-refused", in_doubt=False), 0.01)
    assert guard.breaker.state == OPEN
    assert guard.limiter.in_flight == 0


def test_admission_refuses_past_its_limit_or_a_full_backlog_and_takes_back_places() -> None:
    async def scenario() -> None:
        admission = Admission(FlowSettings(admission_limit=2, backlog_max=10))
        assert (await admission.admit(backlog=0, patience=0)).refusal is None
        assert (await admission.admit(backlog=0, patience=0)).refusal is None
        assert (await admission.admit(backlog=0, patience=0)).refusal == "queue-timeout"
        admission.finished(0.01)
        assert (await admission.admit(backlog=10, patience=0)).refusal == "backlog-full"
        assert (await admission.admit(backlog=9, patience=0)).refusal is None

    asyncio.run(scenario())
