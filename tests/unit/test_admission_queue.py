"""The admission queue and its CoDel judgement, on an injected clock: no sleeps."""

from __future__ import annotations

import asyncio

import pytest

from metallica.overload.queue import (
    ADMITTED,
    BACKLOG_FULL,
    CANCELLED,
    CODEL,
    QUEUE_TIMEOUT,
    REFUSED,
    WAITING,
    AdmissionQueue,
    QueueSettings,
    Ticket,
)
from metallica.protools.flow import Admission, FlowSettings

SETTINGS = QueueSettings(
    target=0.1, interval=0.2, timeout=2.0, overload_timeout=0.05, max_length=1000
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_queue(settings: QueueSettings = SETTINGS) -> tuple[AdmissionQueue, Clock]:
    clock = Clock()
    return AdmissionQueue(settings, clock=clock), clock


def test_a_burst_waits_first_in_first_out_and_is_served_without_a_refusal() -> None:
    queue, clock = make_queue()
    tickets = [queue.offer(patience=5) for _ in range(4)]
    assert all(ticket.state == WAITING for ticket in tickets)
    assert queue.length == 4
    served = []
    for _ in range(4):
        clock.advance(0.03)  # a place frees every 30 ms: the queue drains in 120 ms
        served.append(queue.admit_next())
    assert served == tickets
    assert [ticket.state for ticket in tickets] == [ADMITTED] * 4
    assert [round(ticket.waited, 2) for ticket in tickets] == [0.03, 0.06, 0.09, 0.12]
    assert queue.length == 0
    assert not queue.standing
    assert queue.admit_next() is None


def test_a_command_never_waits_past_its_own_patience_nor_the_queue_timeout() -> None:
    queue, clock = make_queue(QueueSettings(interval=10, timeout=2.0))
    impatient = queue.offer(patience=0.5)
    patient = queue.offer(patience=60)  # capped at the queue's timeout, 2 s
    assert queue.next_deadline() == pytest.approx(clock.now + 0.5)
    clock.advance(0.5)
    assert queue.expire() == [impatient]
    assert (impatient.state, impatient.reason) == (REFUSED, QUEUE_TIMEOUT)
    assert impatient.waited == pytest.approx(0.5)
    assert patient.state == WAITING
    assert queue.next_deadline() == pytest.approx(clock.now + 1.5)
    clock.advance(1.5)
    assert queue.expire() == [patient]
    assert patient.reason == QUEUE_TIMEOUT
    assert queue.next_deadline() is None


def test_a_client_that_will_not_wait_is_refused_at_once_and_a_full_queue_refuses() -> None:
    queue, _ = make_queue(QueueSettings(max_length=5))
    at_once = queue.offer(patience=0)
    assert (at_once.state, at_once.reason) == (REFUSED, QUEUE_TIMEOUT)
    for _ in range(5):
        assert queue.offer(patience=5).state == WAITING
    full = queue.offer(patience=5)
    assert (full.state, full.reason) == (REFUSED, BACKLOG_FULL)
    assert queue.length == 5


def test_a_long_queue_that_drains_fast_is_not_standing() -> None:
    """Length is not the test: 5 waiting, each served within the target, for many intervals."""
    queue, clock = make_queue()
    for _ in range(40):
        while queue.length < 5:
            queue.offer(patience=5)
        clock.advance(0.02)
        admitted = queue.admit_next()
        assert admitted is not None
        assert admitted.waited < SETTINGS.target
    assert not queue.standing


def test_a_queue_that_grows_while_every_departure_waited_past_the_target_stands() -> None:
    """An open loop past capacity: two arrivals for each departure, 10 ms apart."""
    queue, clock = make_queue(QueueSettings(target=0.1, interval=0.2, max_length=1000))
    for _ in range(20):
        queue.offer(patience=5)
    steps = 0
    while not queue.standing:
        clock.advance(0.01)
        queue.offer(patience=5)
        queue.offer(patience=5)
        assert queue.admit_next() is not None
        steps += 1
        assert steps < 100, "never stood"
    # The first departure past the target came at 100 ms; the verdict one interval later.
    assert 0.29 <= steps * 0.01 <= 0.33


def test_a_closed_loop_queue_stands_still_and_is_never_shed() -> None:
    """A closed loop: each departure's client sends again once answered, so 40 wait all the
    time, each for 400 ms, far past the target, for a thousand intervals: not standing."""
    queue, clock = make_queue(QueueSettings(target=0.1, interval=0.2, max_length=1000))
    for _ in range(40):
        queue.offer(patience=5)
    for step in range(20_000):
        clock.advance(0.01)
        admitted = queue.admit_next()
        assert admitted is not None
        assert admitted.state == ADMITTED
        if step % 7 != 3:  # the answers come back unevenly: the length wavers by a few
            queue.offer(patience=5)
        if step % 7 == 6:
            queue.offer(patience=5)
        assert 35 <= queue.length <= 41
        assert not queue.standing
    assert queue.expire() == []


def test_a_burst_queue_that_only_shrinks_is_not_shed() -> None:
    queue, clock = make_queue(QueueSettings(target=0.1, interval=0.2, max_length=1000))
    burst = [queue.offer(patience=10) for _ in range(60)]
    while queue.length:
        clock.advance(0.008)  # 60 served in 480 ms: most waited past the target
        queue.admit_next()
        assert not queue.standing
    assert {ticket.state for ticket in burst} == {ADMITTED}


def test_a_burst_that_nobody_leaves_yet_is_not_shed_its_commands_wait_their_deadlines() -> None:
    """A first workflow slow to start holds every place while a burst waits: no growth."""
    queue, clock = make_queue()
    burst = [queue.offer(patience=5) for _ in range(5)]
    clock.advance(1.0)
    assert queue.expire() == []
    assert not queue.standing
    clock.advance(1.0)  # the queue's timeout, 2 s
    assert queue.expire() == burst
    assert {ticket.reason for ticket in burst} == {QUEUE_TIMEOUT}


def test_a_queue_that_nobody_leaves_while_it_grows_stands() -> None:
    queue, clock = make_queue()
    queue.offer(patience=5)
    for _ in range(40):
        clock.advance(0.01)
        queue.offer(patience=5)
    assert queue.standing  # the oldest waited past the target for an interval, and it grew


def test_one_departure_within_the_target_restarts_the_clock() -> None:
    queue, clock = make_queue()
    for _ in range(10):
        queue.offer(patience=5)
    clock.advance(0.15)
    queue.admit_next()  # 150 ms: the clock starts, with 9 waiting
    for _ in range(8):
        queue.offer(patience=5)
    clock.advance(0.01)
    fast = queue.offer(patience=5)
    for ticket in list(queue._arrivals):  # everyone ahead of it gives up
        if ticket is not fast:
            queue.cancel(ticket)
    assert queue.admit_next() is fast  # 0 ms: under the target, the clock stops
    for _ in range(30):
        queue.offer(patience=5)
    clock.advance(0.15)
    queue.admit_next()  # 150 ms, the queue much longer: the clock starts again, from here
    assert not queue.standing


def test_while_standing_the_newest_is_served_first_and_the_short_timeout_sheds() -> None:
    queue, clock = make_queue()
    leftover = stand(queue, clock)
    old = [queue.offer(patience=5) for _ in range(2)]
    clock.advance(0.03)
    new = queue.offer(patience=5)
    assert queue.admit_next() is new  # adaptive LIFO: newest first
    assert queue.next_deadline() == pytest.approx(leftover.arrived + SETTINGS.overload_timeout)
    clock.advance(0.02)  # the older ones have waited 50 ms: CoDel's short timeout
    assert queue.expire() == [leftover, *old]
    assert {(ticket.state, ticket.reason) for ticket in old} == {(REFUSED, CODEL)}


def test_a_standing_queue_stops_standing_once_empty_for_an_interval() -> None:
    queue, clock = make_queue()
    leftover = stand(queue, clock)
    assert queue.admit_next() is leftover
    assert queue.length == 0
    clock.advance(0.1)
    assert queue.standing  # an empty moment in an overload does not end it
    served_newest = [queue.offer(patience=5), queue.offer(patience=5)]
    assert queue.admit_next() is served_newest[1]
    assert queue.admit_next() is served_newest[0]
    clock.advance(SETTINGS.interval)
    assert not queue.standing  # empty for an interval: the load fell below what is served
    waiting = queue.offer(patience=5)
    clock.advance(0.15)
    assert queue.expire() == []  # first in, first out again, with the long timeout
    assert waiting.state == WAITING


def test_a_cancelled_ticket_no_longer_waits() -> None:
    queue, _ = make_queue()
    first, second = queue.offer(patience=5), queue.offer(patience=5)
    queue.cancel(first)
    assert first.state == CANCELLED
    assert queue.length == 1
    assert queue.admit_next() is second
    queue.cancel(second)  # already admitted: nothing changes
    assert second.state == ADMITTED


def test_retry_after_follows_the_measured_drain_rate() -> None:
    queue, clock = make_queue(QueueSettings(max_length=1000))
    assert queue.retry_after() == 1.0  # nothing measured yet
    for _ in range(1000):  # 100 a second for 10 s
        queue.admitted_directly()
        clock.advance(0.01)
    assert queue.drain.rate == pytest.approx(100, rel=0.05)
    for _ in range(399):
        queue.offer(patience=5)
    assert queue.retry_after() == pytest.approx(4.0, rel=0.05)  # 400 ahead at 100/s


def stand(queue: AdmissionQueue, clock: Clock) -> Ticket:
    """Bring ``queue`` to standing (an interval of departures past the target while it grew),
    shed what waited past the short timeout, and return the one fresh command left waiting."""
    for _ in range(100):
        if queue.standing:
            break
        for _ in range(3):
            queue.offer(patience=5)
        clock.advance(0.05)
        queue.admit_next()
    assert queue.standing
    clock.advance(SETTINGS.overload_timeout)
    queue.expire()  # everything older than the short timeout: shed
    assert queue.length == 0
    assert queue.standing  # empty, but not for an interval yet
    return queue.offer(patience=5)


# --- the admission, with its queue, in an event loop ---------------------------------------------


def test_admission_queues_over_its_limit_and_hands_each_freed_place_on() -> None:
    async def scenario() -> None:
        admission = Admission(FlowSettings(admission_limit=2, admission_floor=2, backlog_max=10))
        decided: list[Ticket] = []
        admission.on_decided = decided.append
        first = await admission.admit(backlog=0, patience=5)
        second = await admission.admit(backlog=0, patience=5)
        assert (first.refusal, second.refusal) == (None, None)
        third = asyncio.create_task(admission.admit(backlog=0, patience=5))
        await asyncio.sleep(0)
        assert admission.queue.length == 1
        assert not third.done()
        admission.finished(0.01)  # a place frees: the queued command gets it
        admitted = await asyncio.wait_for(third, 5)
        assert admitted.refusal is None
        assert admitted.queued >= 0
        assert admission.limiter.in_flight == 2
        assert [ticket.state for ticket in decided] == [ADMITTED]

        refused = await admission.admit(backlog=0, patience=0)  # will not wait
        assert refused.refusal == QUEUE_TIMEOUT
        assert refused.retry_after >= 0
        assert (await admission.admit(backlog=10, patience=5)).refusal == BACKLOG_FULL

    asyncio.run(scenario())


def test_admission_refuses_a_queued_command_when_its_wait_runs_out() -> None:
    async def scenario() -> None:
        admission = Admission(FlowSettings(admission_limit=1, admission_floor=1))
        assert (await admission.admit(backlog=0, patience=5)).refusal is None
        waited = await asyncio.wait_for(admission.admit(backlog=0, patience=0.05), 5)
        assert waited.refusal == QUEUE_TIMEOUT
        assert waited.queued >= 0.05
        assert admission.queue.length == 0
        admission.finished(None)
        assert (await admission.admit(backlog=0, patience=0)).refusal is None

    asyncio.run(scenario())


def test_a_client_that_leaves_the_queue_gives_back_nothing_it_did_not_take() -> None:
    async def scenario() -> None:
        admission = Admission(FlowSettings(admission_limit=1, admission_floor=1))
        assert (await admission.admit(backlog=0, patience=5)).refusal is None
        leaving = asyncio.create_task(admission.admit(backlog=0, patience=5))
        await asyncio.sleep(0)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert admission.queue.length == 0
        assert admission.limiter.in_flight == 1  # still the first one's place
        admission.finished(None)
        assert admission.limiter.in_flight == 0

    asyncio.run(scenario())
