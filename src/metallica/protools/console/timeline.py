"""One workflow's timeline, from its events alone: each attempt a bar on a time axis, labelled
with the replica it went to, its duration and its outcome; the parks (why a step waited without
calling) and the backoff before each retry; the deadline as a line.

Pure: events in, a :class:`Timeline` out, and :func:`layout` turns it into the positions the page
draws in SVG. An attempt's bar ends when its outcome was recorded and starts ``elapsed_ms``
before (the call's own measure). Only the fields named here are read: no result, so no secret,
ever reaches the page through a timeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metallica.protools import engine

# An attempt's outcome, as the page colours and names it.
SUCCEEDED = "succeeded"
LATE = "succeeded late"
FAILED = "failed"
IN_DOUBT = "failed in doubt"
LEASE_LOST = "lease lost"


@dataclass(frozen=True)
class Attempt:
    """One call: seconds from the workflow's start to when it was made and when it ended."""

    step: str
    number: int
    replica: str
    start: float
    end: float
    outcome: str
    reason: str = ""
    detail: str = ""
    retry_in: float | None = None

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) * 1000

    @property
    def label(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"{self.step} attempt {self.number} to {self.replica or 'unknown replica'}: "
            f"{self.outcome}{why} after {self.duration_ms:.0f} ms"
        )


@dataclass(frozen=True)
class Park:
    """A step held back without a call, from ``at`` for ``seconds``, and why."""

    step: str
    attempt: int
    at: float
    seconds: float
    reason: str
    detail: str

    @property
    def label(self) -> str:
        return f"{self.step} attempt {self.attempt} parked: {self.reason} ({self.detail})"


@dataclass(frozen=True)
class Timeline:
    """A workflow's attempts and parks, in seconds from its start."""

    workflow_id: str
    started_at: float  # epoch seconds
    steps: tuple[str, ...]
    attempts: tuple[Attempt, ...]
    parks: tuple[Park, ...]
    deadline: float | None  # seconds from the start
    ended: float | None  # seconds from the start, once completed or failed
    status: str

    @property
    def activity(self) -> float:
        """Seconds from the start to the last attempt, park, backoff or end."""
        ends = [a.end for a in self.attempts] + [p.at for p in self.parks]
        ends += [a.end + (a.retry_in or 0) for a in self.attempts]
        if self.ended is not None:
            ends.append(self.ended)
        return max([0.001, *ends])

    @property
    def in_order(self) -> list[Attempt | Park]:
        """The attempts and parks as they happened (an attempt when it was made)."""
        dated: list[tuple[float, Attempt | Park]] = [(a.start, a) for a in self.attempts]
        dated += [(p.at, p) for p in self.parks]
        return [entry for _, entry in sorted(dated, key=lambda pair: pair[0])]

    @property
    def deadline_on_axis(self) -> bool:
        """Whether the deadline is drawn: when it is near what happened (a workflow that took
        20 ms against a 30 s deadline would be a dot at the left of its own axis)."""
        return self.deadline is not None and self.deadline <= 2 * self.activity

    @property
    def span(self) -> float:
        """The seconds the axis covers."""
        if self.deadline is not None and self.deadline_on_axis:
            return max(self.activity, self.deadline)
        return self.activity


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return "" if value is None else str(value)


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) else None


def build(events: Sequence[engine.RecordedEvent]) -> Timeline | None:
    """The timeline of one workflow's events (in version order); None before its start."""
    if not events or events[0].type != engine.STARTED:
        return None
    start = events[0].recorded_at
    deadline = _number(events[0].data, "deadline")
    steps: list[str] = []
    attempts: list[Attempt] = []
    parks: list[Park] = []
    ended: float | None = None
    status = engine.RUNNING
    for event in events[1:]:
        data, at = event.data, event.recorded_at - start
        step = _text(data, "step")
        if step and step not in steps:
            steps.append(step)
        if event.type in (engine.SUCCEEDED, engine.SUCCEEDED_LATE, engine.ATTEMPT_FAILED):
            elapsed = (_number(data, "elapsed_ms") or 0.0) / 1000
            if event.type == engine.SUCCEEDED:
                outcome = SUCCEEDED
            elif event.type == engine.SUCCEEDED_LATE:
                outcome = LATE
            elif data.get("lease_lost"):
                outcome = LEASE_LOST
            else:
                outcome = IN_DOUBT if data.get("in_doubt") else FAILED
            attempts.append(
                Attempt(
                    step=step,
                    number=int(_number(data, "attempt") or 0),
                    replica=_text(data, "replica"),
                    start=max(0.0, at - elapsed),
                    end=at,
                    outcome=outcome,
                    reason=_text(data, "reason"),
                    detail=_text(data, "detail"),
                    retry_in=_number(data, "retry_in"),
                )
            )
        elif event.type == engine.PARKED:
            parks.append(
                Park(
                    step=step,
                    attempt=int(_number(data, "attempt") or 0),
                    at=at,
                    seconds=_number(data, "resume_in") or 0.0,
                    reason=_text(data, "reason"),
                    detail=_text(data, "detail"),
                )
            )
        elif event.type in (engine.COMPLETED, engine.FAILED):
            ended = at
            status = (
                engine.COMPLETED_STATUS if event.type == engine.COMPLETED else engine.FAILED_STATUS
            )
    return Timeline(
        workflow_id=events[0].stream_id,
        started_at=start,
        steps=tuple(steps),
        attempts=tuple(attempts),
        parks=tuple(parks),
        deadline=None if deadline is None else deadline - start,
        ended=ended,
        status=status,
    )


# --- drawing ---------------------------------------------------------------------------------

WIDTH = 880  # the SVG's user units
LABELS = 110  # the left margin, where the steps' names go
ROW = 58
TOP = 28


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    css: str
    label: str
    text: str
    text_x: float = 0.0
    text_y: float = 0.0
    anchor: str = "start"  # the text's SVG text-anchor: it ends at the bar near the right edge


@dataclass(frozen=True)
class Drawing:
    """What the page draws: bars (attempts), marks (parks), dashed gaps (backoff), the deadline
    and the end, in SVG user units."""

    width: int
    height: int
    rows: tuple[tuple[str, float], ...]  # step name, y
    bars: tuple[Bar, ...]
    parks: tuple[Bar, ...]
    backoffs: tuple[Bar, ...]
    ticks: tuple[tuple[float, str], ...]  # x, label
    deadline_x: float | None
    end_x: float | None


def layout(timeline: Timeline) -> Drawing:
    """Positions for ``timeline`` on an axis from its start to its :attr:`~Timeline.span`."""
    scale = (WIDTH - LABELS - 20) / timeline.span

    def x(seconds: float) -> float:
        return round(LABELS + seconds * scale, 1)

    rows = {step: TOP + index * ROW for index, step in enumerate(timeline.steps)}
    bars = []
    for index, a in enumerate(a for a in timeline.attempts if a.step in rows):
        left, width = x(a.start), max(2.0, round((a.end - a.start) * scale, 1))
        near_right = left > WIDTH * 0.6
        bars.append(
            Bar(
                x=left,
                y=rows[a.step] + 6,
                width=width,
                css=a.outcome.replace(" ", "-"),
                label=a.label,
                text=f"{_host(a.replica)} {a.duration_ms:.0f} ms",
                text_x=round(left + width, 1) if near_right else left,
                text_y=rows[a.step] + 38 + 12 * (index % 2),  # neighbours on two lines
                anchor="end" if near_right else "start",
            )
        )
    backoffs = tuple(
        Bar(
            x=x(a.end),
            y=rows[a.step] + 16,
            width=round(a.retry_in * scale, 1),
            css="backoff",
            label=f"backoff {a.retry_in:g} s before attempt {a.number + 1}",
            text="",
        )
        for a in timeline.attempts
        if a.step in rows and a.retry_in
    )
    parks = tuple(
        Bar(
            x=x(p.at),
            y=rows[p.step] + 2,
            width=max(2.0, round(p.seconds * scale, 1)),
            css="parked",
            label=p.label,
            text=f"parked: {p.reason}",
        )
        for p in timeline.parks
        if p.step in rows
    )
    step = _tick_step(timeline.span)
    ticks = tuple((x(n * step), _seconds(n * step)) for n in range(int(timeline.span / step) + 1))
    height = TOP + max(1, len(rows)) * ROW + 10
    return Drawing(
        width=WIDTH,
        height=height,
        rows=tuple((name, y + 20) for name, y in rows.items()),
        bars=tuple(bars),
        parks=parks,
        backoffs=backoffs,
        ticks=ticks,
        deadline_x=x(timeline.deadline)
        if timeline.deadline is not None and timeline.deadline_on_axis
        else None,
        end_x=None if timeline.ended is None else x(timeline.ended),
    )


def _host(replica: str) -> str:
    """A replica's URL as a label: its host and port."""
    return replica.split("://", 1)[-1].rstrip("/")


def _tick_step(span: float) -> float:
    """A round step giving 4 to 10 ticks over ``span`` seconds."""
    step = 0.001
    while span / step > 10:
        for factor in (2, 2.5, 2):
            step *= factor
            if span / step <= 10:
                break
    return step


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:g} s"
