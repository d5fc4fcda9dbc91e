"""A workflow's timeline from its events: attempts, parks, backoff, deadline."""

from __future__ import annotations

from typing import Any

from metallica.protools import engine
from metallica.protools.console import timeline

T0 = 1_800_000_000.0


def event(version: int, type_: str, at: float, **data: Any) -> engine.RecordedEvent:
    return engine.RecordedEvent(version, "wf-1", version, type_, data, T0 + at)


def a_workflow_through_a_timeout_and_a_park() -> list[engine.RecordedEvent]:
    attempt = {"step": "generate_password", "elapsed_ms": 1000.0}
    return [
        event(1, engine.STARTED, 0, deadline=T0 + 3, input={"username": "carol"}),
        event(
            2,
            engine.ATTEMPT_FAILED,
            1.01,
            attempt=1,
            replica="gen-2",
            reason="timeout",
            detail="no answer in 1 s",
            in_doubt=True,
            retry_in=0.2,
            **attempt,
        ),
        event(
            3,
            engine.PARKED,
            1.3,
            step="generate_password",
            attempt=2,
            reason="circuit-open",
            detail="gen-2 open",
            resume_in=0.5,
        ),
        event(
            4,
            engine.SUCCEEDED,
            1.9,
            attempt=2,
            replica="gen-1",
            result={"password": "***"},
            step="generate_password",
            elapsed_ms=40.0,
        ),
        event(
            5,
            engine.SUCCEEDED,
            2.0,
            attempt=1,
            replica="mail-1",
            step="send_mail",
            elapsed_ms=20.0,
            result={},
        ),
        event(6, engine.COMPLETED, 2.0),
    ]


def test_each_attempt_is_a_bar_with_its_replica_duration_and_outcome() -> None:
    built = timeline.build(a_workflow_through_a_timeout_and_a_park())
    assert built is not None
    assert built.steps == ("generate_password", "send_mail")
    first, second, mail = built.attempts
    assert (first.replica, first.outcome, first.reason) == ("gen-2", timeline.IN_DOUBT, "timeout")
    assert round(first.start, 2) == 0.01
    assert round(first.duration_ms) == 1000
    assert (second.replica, second.outcome, round(second.duration_ms)) == ("gen-1", "succeeded", 40)
    assert mail.step == "send_mail"
    assert "gen-2: failed in doubt (timeout) after 1000 ms" in first.label
    (park,) = built.parks
    assert (park.reason, park.seconds, round(park.at, 2)) == ("circuit-open", 0.5, 1.3)
    assert built.status == engine.COMPLETED_STATUS
    assert built.ended == 2.0
    assert built.deadline == 3.0
    assert built.deadline_on_axis


def test_the_table_lists_attempts_and_parks_as_they_happened() -> None:
    built = timeline.build(a_workflow_through_a_timeout_and_a_park())
    assert built is not None
    described = [
        f"{e.step} {e.number} {e.outcome}"
        if isinstance(e, timeline.Attempt)
        else f"{e.step} {e.attempt} parked"
        for e in built.in_order
    ]
    assert described == [
        "generate_password 1 failed in doubt",
        "generate_password 2 parked",
        "generate_password 2 succeeded",
        "send_mail 1 succeeded",
    ]


def test_the_drawing_places_bars_in_time_order_and_the_deadline_last() -> None:
    built = timeline.build(a_workflow_through_a_timeout_and_a_park())
    assert built is not None
    drawing = timeline.layout(built)
    xs = [bar.x for bar in drawing.bars]
    assert xs == sorted(xs)
    assert drawing.bars[0].css == "failed-in-doubt"
    assert [b.label for b in drawing.backoffs] == ["backoff 0.2 s before attempt 2"]
    assert drawing.deadline_x is not None
    assert drawing.end_x is not None
    assert drawing.end_x < drawing.deadline_x <= drawing.width
    assert all(timeline.LABELS <= bar.x <= drawing.width for bar in drawing.bars)


def test_a_far_deadline_is_not_drawn_and_nothing_is_before_the_start() -> None:
    events = [
        event(1, engine.STARTED, 0, deadline=T0 + 30),
        event(2, engine.SUCCEEDED, 0.01, attempt=1, replica="g", step="s", elapsed_ms=8.0),
    ]
    built = timeline.build(events)
    assert built is not None
    assert not built.deadline_on_axis
    assert timeline.layout(built).deadline_x is None
    assert timeline.build([]) is None
    assert timeline.build(events[1:]) is None
