"""The readable history (:func:`metallica.protools.history.compact`): runs of failed attempts
of one step as one entry, on streams grown the way the service grows them."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from metallica.protools import engine, history
from metallica.protools.engine import (
    STARTED,
    SUCCEEDED,
    Decision,
    RecordedEvent,
    Retry,
    Succeeded,
    WorkflowState,
)
from metallica.protools.password_workflow import GENERATE, MAIL
from tests.unit.test_engine import (
    DEFINITION,
    GENERATED,
    INPUT,
    T0,
    WORKFLOW_ID,
    fenced,
    outcome_of,
    recorded,
)

# --- the compact history ------------------------------------------------------------------------


class Stream:
    """A workflow's stored events, grown the way the service grows them: each decision is
    taken on the fold of the events so far and its events are appended."""

    def __init__(self, now: float = T0) -> None:
        self.events: list[RecordedEvent] = []
        self.append(engine.start(DEFINITION, WORKFLOW_ID, INPUT, now=now), now=now)

    @property
    def state(self) -> WorkflowState:
        folded = engine.fold(WORKFLOW_ID, self.events)
        assert folded is not None
        return folded

    def append(self, decision: Decision, *, now: float) -> Decision:
        for event in decision.events:
            self.events.append(recorded(len(self.events) + 1, event.type, event.data, now))
        return decision

    def attempt(
        self, attempt: int, outcome: engine.Outcome, *, now: float, step: str = GENERATE
    ) -> Decision:
        return self.append(outcome_of(self.state, step, attempt, outcome, now=now), now=now)

    def park(self, attempt: int, reason: str, *, now: float) -> Decision:
        decision = engine.decide_park(
            self.state, GENERATE, attempt, reason=reason, detail=f"{reason}!", delay=1.0, now=now
        )
        return self.append(decision, now=now)


REFUSED = Retry("connection-refused", "the service refused the connection", in_doubt=False)
TIMED_OUT = Retry("timeout", "no answer within the call timeout", in_doubt=True)


def kinds(entries: Sequence[RecordedEvent | history.FailureRun]) -> list[str]:
    return [
        history.ATTEMPTS_FAILED if isinstance(entry, history.FailureRun) else entry.type
        for entry in entries
    ]


def flattened(entries: Sequence[RecordedEvent | history.FailureRun]) -> list[RecordedEvent]:
    return [
        event
        for entry in entries
        for event in (entry.events if isinstance(entry, history.FailureRun) else (entry,))
    ]


@pytest.mark.parametrize("failures", [2, 7, 60, 500])
def test_a_dead_generator_is_one_entry_however_many_attempts_failed(failures: int) -> None:
    stream, now = Stream(), T0
    for attempt in range(1, failures + 1):
        now += 0.1  # all before the deadline
        stream.attempt(attempt, REFUSED, now=now)

    entries = history.compact(stream.events)

    assert kinds(entries) == [STARTED, history.ATTEMPTS_FAILED]
    run = entries[1]
    assert isinstance(run, history.FailureRun)
    assert (run.first.version, run.last.version) == (2, failures + 1)
    assert (run.first.recorded_at, run.last.recorded_at) == (T0 + 0.1, now)
    summary = run.summary()
    assert summary["step"] == GENERATE
    assert summary["in_doubt"] is False
    assert (summary["count"], summary["first_attempt"], summary["last_attempt"]) == (
        failures,
        1,
        failures,
    )
    assert summary["last_version"] == failures + 1
    assert summary["causes"] == [
        {
            "reason": "connection-refused",
            "count": failures,
            "first_attempt": 1,
            "first_detail": "the service refused the connection",
            "last_attempt": failures,
            "last_detail": "the service refused the connection",
        }
    ]
    assert summary["parked"] == []
    assert summary["replicas"] == ["http://generator-1"]
    assert summary["retry_in"] == stream.events[-1].data["retry_in"]
    # A view only: the stream keeps every attempt, and its fold is exact.
    assert flattened(entries) == stream.events
    assert len(stream.events) == failures + 1
    assert stream.state.attempts == {GENERATE: failures}
    assert stream.state.in_doubt == frozenset()


def test_the_failure_that_puts_the_step_in_doubt_starts_a_new_entry() -> None:
    stream = Stream()
    for attempt in (1, 2, 3):
        stream.attempt(attempt, REFUSED, now=T0 + attempt)
    stream.attempt(4, TIMED_OUT, now=T0 + 4)
    for attempt in (5, 6, 7):  # refused, but recorded in doubt: attempt 4 may have acted
        stream.attempt(attempt, Retry("connection-refused", "down", in_doubt=False), now=T0 + 5)
    stream.attempt(8, TIMED_OUT, now=T0 + 6)
    stream.attempt(9, Succeeded(GENERATED), now=T0 + 7)

    entries = history.compact(stream.events)

    assert kinds(entries) == [
        STARTED,
        history.ATTEMPTS_FAILED,
        history.ATTEMPTS_FAILED,
        SUCCEEDED,
    ]
    sure, doubtful = (entry for entry in entries if isinstance(entry, history.FailureRun))
    assert sure.summary()["in_doubt"] is False
    assert sure.summary()["count"] == 3
    later = doubtful.summary()
    assert later["in_doubt"] is True
    assert (later["count"], later["first_attempt"], later["last_attempt"]) == (5, 4, 8)
    assert [(cause["reason"], cause["count"]) for cause in later["causes"]] == [
        ("timeout", 2),  # the cause that put the step in doubt comes first
        ("connection-refused", 3),
    ]
    timeout, refused = later["causes"]
    assert (timeout["first_attempt"], timeout["last_attempt"]) == (4, 8)
    assert (refused["first_detail"], refused["last_detail"]) == ("down", "down")
    assert flattened(entries) == stream.events


def test_a_lone_failure_and_unusual_ones_stay_events() -> None:
    stream = Stream()
    stream.attempt(1, REFUSED, now=T0 + 1)
    stream.attempt(3, REFUSED, now=T0 + 2)  # attempt 2 was claimed and never recorded
    stream.attempt(4, TIMED_OUT, now=T0 + 3)
    stream.append(fenced(stream.state, 5, TIMED_OUT, T0 + 4), now=T0 + 4)  # lease lost
    stream.attempt(6, TIMED_OUT, now=T0 + 5)

    entries = history.compact(stream.events)

    assert entries == stream.events  # nothing to sum up: no two routine failures in a row
    assert stream.events[2].data["unrecorded"] == [2]
    assert stream.events[4].data["lease_lost"] is True


def test_parks_between_failures_join_their_run() -> None:
    stream = Stream()
    stream.attempt(1, REFUSED, now=T0 + 1)
    stream.attempt(2, REFUSED, now=T0 + 2)
    stream.park(3, "circuit-open", now=T0 + 3)
    stream.attempt(3, REFUSED, now=T0 + 4)  # the probe
    stream.park(4, "circuit-open", now=T0 + 5)
    stream.park(4, "retry-budget", now=T0 + 6)
    stream.attempt(4, REFUSED, now=T0 + 7)
    stream.attempt(5, Succeeded(GENERATED), now=T0 + 8)
    for attempt in (1, 2):
        stream.attempt(attempt, REFUSED, now=T0 + 9, step=MAIL)

    entries = history.compact(stream.events)

    assert kinds(entries) == [STARTED, history.ATTEMPTS_FAILED, SUCCEEDED, history.ATTEMPTS_FAILED]
    generate, mail = (entry for entry in entries if isinstance(entry, history.FailureRun))
    summary = generate.summary()
    assert (summary["count"], summary["last_attempt"], summary["last_version"]) == (4, 4, 8)
    assert summary["parked"] == [
        {"reason": "circuit-open", "count": 2, "last_detail": "circuit-open!"},
        {"reason": "retry-budget", "count": 1, "last_detail": "retry-budget!"},
    ]
    assert mail.summary()["step"] == MAIL
    assert mail.summary()["count"] == 2
    assert flattened(entries) == stream.events


def test_a_stream_of_one_step_failing_for_ever_stays_a_short_listing() -> None:
    # Causes that alternate (the step's attempts rotate over replicas, one down, one slow)
    # still make one entry per doubt: the listing does not grow with the attempts.
    stream, now = Stream(), T0
    for attempt in range(1, 301):
        now += 5.0
        outcome = REFUSED if attempt % 3 else TIMED_OUT
        if attempt % 7 == 0:
            stream.park(attempt, "circuit-open", now=now)
        stream.attempt(attempt, outcome, now=now)

    entries = history.compact(stream.events)

    assert kinds(entries) == [STARTED, history.ATTEMPTS_FAILED, history.ATTEMPTS_FAILED]
    sure, doubtful = entries[1:]
    assert isinstance(sure, history.FailureRun)
    assert isinstance(doubtful, history.FailureRun)
    assert sure.summary()["count"] == 2  # attempts 1 and 2, refused before the first timeout
    summary = doubtful.summary()
    assert summary["count"] == 298
    assert sum(cause["count"] for cause in summary["causes"]) == 298
    assert {cause["reason"]: cause["count"] for cause in summary["causes"]} == {
        "timeout": 100,
        "connection-refused": 198,
    }
    assert stream.state.in_doubt == {GENERATE}
