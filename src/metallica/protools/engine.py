"""The workflow engine, pure: events, the fold of a workflow's state, and its decisions.

A workflow is a definition (ordered steps, each a call to a service, with a retry policy) and an
event stream. Its state is the fold of its events (:func:`evolve`); what to do next is decided
from the state alone (:func:`start`, :func:`decide_attempt`, :func:`decide_outcome`), returning
the events to append and the outbox message to send, which the service layer commits in one
transaction. Nothing here does I/O: the clock, the random source and the ids are parameters.

Events of a workflow stream::

    WorkflowStarted    {workflow, input, deadline, client?}
    StepAttemptFailed  {step, attempt, reason, detail, in_doubt, retry_in, replica, next_replica,
                        elapsed_ms, unrecorded?, lease_lost?}
    StepSucceeded      {step, attempt, result, replica, elapsed_ms}
    StepSucceededLate  {step, attempt, result, replica, elapsed_ms, status}
    StepParked         {step, attempt, reason, detail, resume_in}
    WorkflowCompleted  {}
    WorkflowFailed     {step, error, attempt?}

A step whose outcome is unknown is *in doubt*: the call timed out, the connection broke, the
service failed, or an attempt was claimed (the outbox counts claims) and its outcome was never
recorded, because its replica died or lost its lease mid-call. The workflow never ends while a
step is in doubt; past its deadline it starts no new step but keeps asking the in-doubt one,
with the same key, until it learns.

Every failed attempt stays one ``StepAttemptFailed`` event, however often it repeats: skipping
one would make its attempt number a gap in the stream, which is exactly how an attempt whose
replica died reads (:func:`unrecorded_attempts`), so a step that was only ever refused would turn
in doubt and outlive its deadline, and lease fencing would lose the record of which attempts
were answered. The readable history is a view instead (``history.compact``): consecutive failures
of one step with the same doubt, and the parks between them, become one ``StepAttemptsFailed``
entry with counts per cause (first and last attempt and detail of each), so a service down for
an hour reads as one entry per step, while the stream, the fold and the checker keep every
attempt. The stream itself grows by one event per attempt, paced by the backoff (on average
half of ``RetryPolicy.maximum`` once capped), and a step not in doubt ends at the deadline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metallica.config import default

STARTED = "WorkflowStarted"
ATTEMPT_FAILED = "StepAttemptFailed"
SUCCEEDED = "StepSucceeded"
SUCCEEDED_LATE = "StepSucceededLate"
PARKED = "StepParked"
COMPLETED = "WorkflowCompleted"
FAILED = "WorkflowFailed"

RUNNING, COMPLETED_STATUS, FAILED_STATUS = "running", "completed", "failed"


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its type and its JSON data."""

    type: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored: its place in its stream and in the global log."""

    global_position: int
    stream_id: str
    version: int
    type: str
    data: Mapping[str, Any]
    recorded_at: float


# --- definitions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff
    and Jitter"): retry n waits a uniform random time in [0, min(maximum, initial * 2^(n-1))].
    """

    initial: float = default("retry-initial")
    maximum: float = default("retry-max")

    def delay(self, attempt: int, random: Callable[[], float]) -> float:
        doublings = min(max(attempt - 1, 0), 1000)  # 2 ** 1024 no longer converts to a float
        ceiling = min(self.maximum, self.initial * 2**doublings)
        return float(random() * ceiling)


@dataclass(frozen=True)
class Call:
    """An HTTP call to a service, made by a step, as the outbox stores it."""

    step: str
    destination: str
    method: str
    path: str
    body: Mapping[str, Any]
    idempotency_key: str

    def to_payload(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"body": dict(self.body)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Call:
        # Messages stored before calls carried their step name it at the end of their key.
        step = payload.get("step") or str(payload["idempotency_key"]).rsplit("/", 1)[-1]
        return cls(**({**payload, "step": step}))


@dataclass(frozen=True)
class Command:
    """A client's command as its definition reads it: ``canonical``, the fields that make it
    this command (a repeat must match them); ``input``, the workflow's input."""

    canonical: Mapping[str, Any]
    input: Mapping[str, Any]


@dataclass(frozen=True)
class Response:
    """What a service answered."""

    status: int
    body: Mapping[str, Any]
    retry_after: float | None = None


@dataclass(frozen=True)
class Succeeded:
    result: Mapping[str, Any]


@dataclass(frozen=True)
class Retry:
    """Not done yet: try again. ``in_doubt`` when the service may have acted on the call."""

    reason: str
    detail: str = ""
    in_doubt: bool = True
    retry_after: float | None = None


@dataclass(frozen=True)
class Failed:
    """Definitely not done, and retrying cannot help: the workflow fails with ``error``."""

    error: Mapping[str, Any]


Outcome = Succeeded | Retry | Failed


@dataclass(frozen=True)
class Step:
    """One call of a workflow.

    ``request`` builds the call from the workflow's state; ``interpret`` classifies the answer.
    ``finish_past_deadline``: once the workflow reaches this step it runs to the end even past
    the deadline (the mail of a password that exists must go out).
    """

    name: str
    destination: str
    request: Callable[[WorkflowState], Call]
    interpret: Callable[[Response], Outcome]
    retry: RetryPolicy = RetryPolicy()
    finish_past_deadline: bool = False


@dataclass(frozen=True)
class WorkflowDefinition:
    """A workflow: its steps in order, its deadline, how it reads a client's command (raising
    an input error before anything is stored), and what it answers once completed.

    ``secret_fields``: the names of the fields, in step results and calls, whose string values
    are secrets: stored sealed, masked in every listing of events."""

    name: str
    steps: tuple[Step, ...]
    deadline_seconds: float
    result: Callable[[WorkflowState], dict[str, Any]]
    parse: Callable[[Mapping[str, Any]], Command]
    secret_fields: frozenset[str] = frozenset()

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)

    def step_after(self, name: str) -> Step | None:
        names = [step.name for step in self.steps]
        position = names.index(name) + 1
        return self.steps[position] if position < len(self.steps) else None


# --- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowState:
    """A workflow as its events tell it."""

    workflow_id: str
    version: int = 0
    definition: str = ""
    input: Mapping[str, Any] = field(default_factory=dict)
    status: str = RUNNING
    started_at: float = 0.0
    deadline: float = 0.0
    finished_at: float | None = None
    results: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    attempts: Mapping[str, int] = field(default_factory=dict)
    in_doubt: frozenset[str] = frozenset()
    error: Mapping[str, Any] | None = None
    client: str | None = None  # who started it: only they may read its results
    parked: Mapping[str, str] = field(default_factory=dict)  # step -> why it waits (no call)

    @property
    def terminal(self) -> bool:
        return self.status != RUNNING


def evolve(state: WorkflowState, event: RecordedEvent) -> WorkflowState:
    """The state after one more event."""
    data = event.data
    state = dataclasses.replace(state, version=event.version)
    if event.type == STARTED:
        return dataclasses.replace(
            state,
            definition=data["workflow"],
            input=data["input"],
            started_at=event.recorded_at,
            deadline=float(data["deadline"]),
            client=data.get("client"),
        )
    if event.type == ATTEMPT_FAILED:
        step = data["step"]
        doubt = state.in_doubt | {step} if data["in_doubt"] else state.in_doubt
        attempts = max(state.attempts.get(step, 0), int(data["attempt"]))
        return dataclasses.replace(
            state,
            attempts={**state.attempts, step: attempts},
            in_doubt=doubt,
            parked=_unparked(state, step),
        )
    if event.type == SUCCEEDED:
        step = data["step"]
        attempts = max(state.attempts.get(step, 0), int(data["attempt"]))
        return dataclasses.replace(
            state,
            attempts={**state.attempts, step: attempts},
            results={**state.results, step: data["result"]},
            in_doubt=state.in_doubt - {step},
            parked=_unparked(state, step),
        )
    if event.type == PARKED:
        return dataclasses.replace(state, parked={**state.parked, data["step"]: data["reason"]})
    if event.type == COMPLETED:
        return dataclasses.replace(state, status=COMPLETED_STATUS, finished_at=event.recorded_at)
    if event.type == FAILED:
        return dataclasses.replace(
            state,
            status=FAILED_STATUS,
            finished_at=event.recorded_at,
            error=data["error"],
            in_doubt=frozenset(),
        )
    return state  # an event type this version does not know changes nothing it tracks


def _unparked(state: WorkflowState, step: str) -> Mapping[str, str]:
    if step not in state.parked:
        return state.parked
    return {name: reason for name, reason in state.parked.items() if name != step}


def after(state: WorkflowState, events: Sequence[NewEvent], *, now: float) -> WorkflowState:
    """The state once ``events`` are appended after ``state`` at time ``now``."""
    for event in events:
        recorded = RecordedEvent(
            0, state.workflow_id, state.version + 1, event.type, event.data, now
        )
        state = evolve(state, recorded)
    return state


def fold(workflow_id: str, events: Sequence[RecordedEvent]) -> WorkflowState | None:
    """The state told by a stream's events; None for an empty stream."""
    if not events:
        return None
    state = WorkflowState(workflow_id)
    for event in events:
        state = evolve(state, event)
    return state


# --- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to commit: events to append, and what becomes of the outbox message.

    ``send``: a new message to enqueue (the next step). ``retry_at``: reschedule the current
    message. Neither: the current message is done and leaves the outbox.
    """

    events: tuple[NewEvent, ...] = ()
    send: Call | None = None
    retry_at: float | None = None

    @property
    def finishes(self) -> bool:
        return any(event.type in (COMPLETED, FAILED) for event in self.events)


def deadline_exceeded(state: WorkflowState, step: str) -> dict[str, Any]:
    return {
        "type": "https://metallica.dev/problems/deadline-exceeded",
        "title": "Deadline exceeded",
        "status": 504,
        "detail": f"the workflow's deadline passed before step {step!r} could run",
    }


def start(
    definition: WorkflowDefinition,
    workflow_id: str,
    workflow_input: Mapping[str, Any],
    *,
    now: float,
    client: str | None = None,
    queued: float = 0.0,
) -> Decision:
    """A new workflow: its first event and its first step's call. ``client``: who asked, the
    only one who may read its results; ``queued``: seconds the command waited for admission
    (recorded as ``queued_ms``)."""
    started = NewEvent(
        STARTED,
        {
            "workflow": definition.name,
            "input": dict(workflow_input),
            "deadline": now + definition.deadline_seconds,
            **({"client": client} if client is not None else {}),
            "queued_ms": round(queued * 1000, 1),
        },
    )
    state = evolve(
        WorkflowState(workflow_id),
        RecordedEvent(0, workflow_id, 1, started.type, started.data, now),
    )
    return Decision(events=(started,), send=definition.steps[0].request(state))


def is_current(state: WorkflowState, definition: WorkflowDefinition, step: str) -> bool:
    """Whether ``step`` is the one the workflow is waiting on (a stale message is not)."""
    if state.terminal or step in state.results:
        return False
    return all(
        earlier.name in state.results for earlier in definition.steps[: _index(definition, step)]
    )


def unrecorded_attempts(state: WorkflowState, step: str, attempt: int) -> list[int]:
    """Attempts of ``step`` before ``attempt`` that were claimed but whose outcome was never
    recorded: their replica died or lost its lease mid-call, so the service may have acted.

    Attempt numbers come from the outbox, which counts every claim; each recorded outcome
    carries its attempt number, and recording is in order per lease holder, so a number below
    ``attempt`` and above the last recorded one is an attempt nobody reported on.
    """
    return list(range(state.attempts.get(step, 0) + 1, attempt))


def is_in_doubt(state: WorkflowState, step: str, attempt: int) -> bool:
    """Whether the service may already have acted on ``step``, as far as attempt ``attempt``
    (about to be made, or being recorded) can tell."""
    return step in state.in_doubt or bool(unrecorded_attempts(state, step, attempt))


def decide_attempt(
    state: WorkflowState, definition: WorkflowDefinition, step: str, attempt: int, *, now: float
) -> Decision | None:
    """Before making ``attempt`` of ``step``: None to go ahead, or the decision that ends the
    workflow instead (past its deadline, with nothing in doubt)."""
    if (
        now <= state.deadline
        or definition.step(step).finish_past_deadline
        or is_in_doubt(state, step, attempt)
    ):
        return None
    failed = {"step": step, "attempt": attempt, "error": deadline_exceeded(state, step)}
    return Decision(events=(NewEvent(FAILED, failed),))


@dataclass(frozen=True)
class Hold:
    """Why a retry must wait longer than its backoff, and how long: the service's circuit
    opened (or was open) as the attempt failed, so the next attempt would not be let through
    before ``seconds``."""

    reason: str
    detail: str
    seconds: float


def decide_outcome(
    state: WorkflowState,
    definition: WorkflowDefinition,
    step_name: str,
    attempt: int,
    outcome: Outcome,
    *,
    now: float,
    replica: str,
    elapsed_ms: float,
    random: Callable[[], float],
    next_replica: str | None = None,
    hold: Hold | None = None,
) -> Decision:
    """The events (and next message) that record one attempt's outcome. A retry that must
    wait past its backoff (``hold``) is parked in the same commit: the history says why the
    step waits, and the message is due when the wait ends, not before."""
    step = definition.step(step_name)
    common = _attempt_fields(step_name, attempt, replica, elapsed_ms)
    if isinstance(outcome, Succeeded):
        succeeded = NewEvent(SUCCEEDED, {**common, "result": dict(outcome.result)})
        after = evolve(
            state,
            RecordedEvent(0, state.workflow_id, state.version + 1, SUCCEEDED, succeeded.data, now),
        )
        following = definition.step_after(step_name)
        if following is None:
            return Decision(events=(succeeded, NewEvent(COMPLETED, {})))
        if now > state.deadline and not following.finish_past_deadline:
            failed = NewEvent(
                FAILED, {"step": following.name, "error": deadline_exceeded(after, following.name)}
            )
            return Decision(events=(succeeded, failed))
        return Decision(events=(succeeded,), send=following.request(after))
    if isinstance(outcome, Failed):
        return Decision(
            events=(NewEvent(FAILED, {"step": step_name, "error": dict(outcome.error)}),)
        )
    delay = step.retry.delay(attempt, random)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, step.retry.maximum))
    unrecorded = unrecorded_attempts(state, step_name, attempt)
    in_doubt = outcome.in_doubt or is_in_doubt(state, step_name, attempt)
    failed_attempt = NewEvent(
        ATTEMPT_FAILED,
        {
            **common,
            "reason": outcome.reason,
            "detail": outcome.detail,
            "in_doubt": in_doubt,
            "retry_in": round(delay, 3),
            "next_replica": next_replica,
            **({"unrecorded": unrecorded} if unrecorded else {}),
        },
    )
    if now > state.deadline and not in_doubt and not step.finish_past_deadline:
        ended = NewEvent(FAILED, {"step": step_name, "error": deadline_exceeded(state, step_name)})
        return Decision(events=(failed_attempt, ended))
    if hold is not None and hold.seconds > delay:
        after_failure = evolve(
            state,
            RecordedEvent(
                0, state.workflow_id, state.version + 1, ATTEMPT_FAILED, failed_attempt.data, now
            ),
        )
        parked = decide_park(
            after_failure,
            step_name,
            attempt + 1,
            reason=hold.reason,
            detail=hold.detail,
            delay=hold.seconds,
            now=now,
        )
        return Decision(events=(failed_attempt, *parked.events), retry_at=parked.retry_at)
    return Decision(events=(failed_attempt,), retry_at=now + delay)


def decide_park(
    state: WorkflowState,
    step: str,
    attempt: int,
    *,
    reason: str,
    detail: str,
    delay: float,
    now: float,
) -> Decision:
    """Hold back ``attempt`` of ``step`` for ``delay`` seconds without calling (its service's
    circuit is open, the retry budget is spent, no call slot came): the attempt is not made, so
    nothing new is in doubt and the workflow does not fail. The history says why the step
    waited, once per reason: parking again for the same reason adds no event."""
    if state.parked.get(step) == reason:
        return Decision(retry_at=now + delay)
    parked = {
        "step": step,
        "attempt": attempt,
        "reason": reason,
        "detail": detail,
        "resume_in": round(delay, 3),
    }
    return Decision(events=(NewEvent(PARKED, parked),), retry_at=now + delay)


def decide_late_outcome(
    state: WorkflowState,
    step_name: str,
    attempt: int,
    outcome: Outcome,
    *,
    replica: str,
    elapsed_ms: float,
) -> Decision:
    """An outcome for a step the workflow no longer waits on: another attempt recorded first,
    or the workflow ended. A success that only repeats the recorded result (the same key gives
    the same answer) changes nothing; any other success is kept as a ``StepSucceededLate`` event,
    never dropped in silence. Late failures teach nothing: the step's fate is known."""
    if not isinstance(outcome, Succeeded) or state.results.get(step_name) == outcome.result:
        return Decision()
    late = {
        **_attempt_fields(step_name, attempt, replica, elapsed_ms),
        "result": dict(outcome.result),
        "status": state.status,
    }
    return Decision(events=(NewEvent(SUCCEEDED_LATE, late),))


def decide_fenced_outcome(
    state: WorkflowState,
    definition: WorkflowDefinition,
    step_name: str,
    attempt: int,
    outcome: Outcome,
    *,
    now: float,
    replica: str,
    elapsed_ms: float,
    random: Callable[[], float],
) -> Decision:
    """An outcome recorded by a replica that lost its lease: another replica claimed a later
    attempt and is driving the step. A success or a definite failure is still the truth and is
    recorded as usual; a retry only adds its attempt to the history: the lease holder decides
    when to try again, and whether the workflow ends."""
    if not isinstance(outcome, Retry):
        return decide_outcome(
            state,
            definition,
            step_name,
            attempt,
            outcome,
            now=now,
            replica=replica,
            elapsed_ms=elapsed_ms,
            random=random,
        )
    if state.attempts.get(step_name, 0) >= attempt:
        return Decision()  # this attempt's outcome is already recorded
    failed_attempt = NewEvent(
        ATTEMPT_FAILED,
        {
            **_attempt_fields(step_name, attempt, replica, elapsed_ms),
            "reason": outcome.reason,
            "detail": outcome.detail,
            "in_doubt": outcome.in_doubt or is_in_doubt(state, step_name, attempt),
            "retry_in": None,
            "next_replica": None,
            "lease_lost": True,
        },
    )
    return Decision(events=(failed_attempt,))


def _attempt_fields(step: str, attempt: int, replica: str, elapsed_ms: float) -> dict[str, Any]:
    """What every event about one attempt says: which step, which attempt, where, how long."""
    return {
        "step": step,
        "attempt": attempt,
        "replica": replica,
        "elapsed_ms": round(elapsed_ms, 1),
    }


def _index(definition: WorkflowDefinition, step: str) -> int:
    return [candidate.name for candidate in definition.steps].index(step)
