"""The pure workflow engine: the fold of a workflow's events, and every decision it takes."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from metallica.protools import engine, password_workflow
from metallica.protools.engine import (
    ATTEMPT_FAILED,
    COMPLETED,
    FAILED,
    STARTED,
    SUCCEEDED,
    Call,
    Decision,
    Failed,
    NewEvent,
    RecordedEvent,
    Retry,
    RetryPolicy,
    Step,
    Succeeded,
    WorkflowDefinition,
    WorkflowState,
)
from metallica.protools.password_workflow import GENERATE, MAIL

WORKFLOW_ID = "wf-1"
T0 = 1_000_000.0
DEADLINE_SECONDS = 60.0
POLICY = RetryPolicy(initial=0.2, maximum=10.0)
DEFINITION = password_workflow.definition(deadline_seconds=DEADLINE_SECONDS, retry=POLICY)
INPUT = password_workflow.workflow_input("alice", None, "example.com")
GENERATED = {"username": "alice", "password": "s3cr3t-P@ss"}


def recorded(version: int, type_: str, data: Mapping[str, Any], at: float = T0) -> RecordedEvent:
    return RecordedEvent(version, WORKFLOW_ID, version, type_, data, at)


def commit(state: WorkflowState | None, decision: Decision, *, now: float) -> WorkflowState:
    """What the service does with a decision: record its events after the current version."""
    version = 0 if state is None else state.version
    events = [
        recorded(version + offset, event.type, event.data, now)
        for offset, event in enumerate(decision.events, start=1)
    ]
    if state is None:
        folded = engine.fold(WORKFLOW_ID, events)
        assert folded is not None
        return folded
    for event in events:
        state = engine.evolve(state, event)
    return state


def started(now: float = T0) -> WorkflowState:
    return commit(None, engine.start(DEFINITION, WORKFLOW_ID, INPUT, now=now), now=now)


def outcome_of(
    state: WorkflowState,
    step: str,
    attempt: int,
    outcome: engine.Outcome,
    *,
    now: float,
    random: Callable[[], float] = lambda: 0.5,
    definition: WorkflowDefinition = DEFINITION,
    hold: engine.Hold | None = None,
) -> Decision:
    return engine.decide_outcome(
        state,
        definition,
        step,
        attempt,
        outcome,
        now=now,
        replica="http://generator-1",
        elapsed_ms=12.345,
        random=random,
        hold=hold,
    )


def generated(now: float = T0 + 1) -> WorkflowState:
    """A workflow whose password step succeeded."""
    state = started()
    return commit(state, outcome_of(state, GENERATE, 1, Succeeded(GENERATED), now=now), now=now)


def types(events: Sequence[NewEvent]) -> list[str]:
    return [event.type for event in events]


# --- evolve / fold -------------------------------------------------------------------------


def test_fold_of_an_empty_stream_is_none() -> None:
    assert engine.fold(WORKFLOW_ID, []) is None


def test_fold_of_workflow_started() -> None:
    events = [
        recorded(1, STARTED, {"workflow": "password-creation", "input": INPUT, "deadline": T0 + 60})
    ]
    state = engine.fold(WORKFLOW_ID, events)
    assert state is not None
    assert state.workflow_id == WORKFLOW_ID
    assert state.version == 1
    assert state.definition == "password-creation"
    assert state.input == INPUT
    assert state.status == engine.RUNNING
    assert not state.terminal
    assert state.started_at == T0
    assert state.deadline == T0 + 60
    assert state.results == {}
    assert state.in_doubt == frozenset()


def test_an_in_doubt_attempt_stays_in_doubt_until_the_step_succeeds() -> None:
    common = {"replica": "r", "elapsed_ms": 1.0, "detail": "", "retry_in": 0.1}
    events = [
        recorded(
            1, STARTED, {"workflow": "password-creation", "input": INPUT, "deadline": T0 + 60}
        ),
        recorded(
            2,
            ATTEMPT_FAILED,
            {**common, "step": GENERATE, "attempt": 1, "reason": "timeout", "in_doubt": True},
        ),
        recorded(
            3,
            ATTEMPT_FAILED,
            {
                **common,
                "step": GENERATE,
                "attempt": 2,
                "reason": "connection-refused",
                "in_doubt": False,
            },
        ),
    ]
    state = engine.fold(WORKFLOW_ID, events)
    assert state is not None
    assert state.version == 3
    assert state.attempts == {GENERATE: 2}
    assert state.in_doubt == {GENERATE}

    succeeded = recorded(
        4,
        SUCCEEDED,
        {"step": GENERATE, "attempt": 3, "result": GENERATED, "replica": "r", "elapsed_ms": 1.0},
    )
    state = engine.evolve(state, succeeded)
    assert state.version == 4
    assert state.attempts == {GENERATE: 3}
    assert state.results == {GENERATE: GENERATED}
    assert state.in_doubt == frozenset()
    assert state.status == engine.RUNNING


def test_completed_and_failed_are_terminal() -> None:
    state = generated()
    completed = engine.evolve(state, recorded(state.version + 1, COMPLETED, {}, T0 + 5))
    assert completed.status == engine.COMPLETED_STATUS
    assert completed.terminal
    assert completed.finished_at == T0 + 5

    in_doubt = engine.evolve(
        started(),
        recorded(
            2,
            ATTEMPT_FAILED,
            {
                "step": GENERATE,
                "attempt": 1,
                "reason": "timeout",
                "detail": "",
                "in_doubt": True,
                "retry_in": 0.1,
                "replica": "r",
                "elapsed_ms": 1.0,
            },
        ),
    )
    error = {"type": "https://metallica.dev/problems/username-taken", "status": 409}
    failed = engine.evolve(
        in_doubt, recorded(3, FAILED, {"step": GENERATE, "error": error}, T0 + 7)
    )
    assert failed.status == engine.FAILED_STATUS
    assert failed.terminal
    assert failed.error == error
    assert failed.finished_at == T0 + 7
    assert failed.in_doubt == frozenset()


def test_an_unknown_event_type_only_moves_the_version() -> None:
    state = started()
    later = engine.evolve(state, recorded(2, "SomethingFromTheFuture", {"x": 1}))
    assert later == WorkflowState(**{**vars(state), "version": 2})


# --- start -----------------------------------------------------------------------------------


def test_start_records_the_workflow_and_calls_the_generator() -> None:
    decision = engine.start(DEFINITION, WORKFLOW_ID, INPUT, now=T0, queued=0.0123)
    assert decision.events == (
        NewEvent(
            STARTED,
            {
                "workflow": "password-creation",
                "input": INPUT,
                "deadline": T0 + DEADLINE_SECONDS,
                "queued_ms": 12.3,  # how long the command waited for admission
            },
        ),
    )
    assert decision.send == Call(
        step=GENERATE,
        destination="generator",
        method="POST",
        path="/v1/passwords",
        body={"username": "alice"},
        idempotency_key=f"{WORKFLOW_ID}/generate_password",
    )
    assert decision.retry_at is None
    assert not decision.finishes


def test_a_call_survives_the_outbox_json_round_trip() -> None:
    call = engine.start(DEFINITION, WORKFLOW_ID, INPUT, now=T0).send
    assert call is not None
    assert Call.from_payload(json.loads(json.dumps(call.to_payload()))) == call


# --- decide_outcome: success and failure ------------------------------------------------------


def test_password_success_sends_the_mail_carrying_the_password() -> None:
    state = started()
    decision = outcome_of(state, GENERATE, 1, Succeeded(GENERATED), now=T0 + 1)
    assert decision.events == (
        NewEvent(
            SUCCEEDED,
            {
                "step": GENERATE,
                "attempt": 1,
                "replica": "http://generator-1",
                "elapsed_ms": 12.3,
                "result": GENERATED,
            },
        ),
    )
    assert decision.retry_at is None
    assert not decision.finishes
    mail = decision.send
    assert mail is not None
    assert mail.destination == "mailer"
    assert (mail.method, mail.path) == ("POST", "/v1/mails")
    assert mail.idempotency_key == f"{WORKFLOW_ID}/send_mail"
    assert mail.body["to"] == "alice@example.com"
    assert GENERATED["password"] in mail.body["body"]
    assert "\n" not in mail.body["subject"]


def test_mail_success_completes_the_workflow_with_the_password() -> None:
    state = generated()
    decision = outcome_of(state, MAIL, 1, Succeeded({"mail_id": "m-1"}), now=T0 + 2)
    assert types(decision.events) == [SUCCEEDED, COMPLETED]
    assert decision.send is None
    assert decision.retry_at is None
    assert decision.finishes
    done = commit(state, decision, now=T0 + 2)
    assert done.status == engine.COMPLETED_STATUS
    assert done.version == 4
    assert DEFINITION.result(done) == GENERATED


def test_failed_ends_the_workflow_with_the_error() -> None:
    error = {
        "type": "https://metallica.dev/problems/username-taken",
        "title": "Username taken",
        "status": 409,
        "detail": "This username already has a password.",
    }
    state = started()
    decision = outcome_of(state, GENERATE, 1, Failed(error), now=T0 + 1)
    assert decision.events == (NewEvent(FAILED, {"step": GENERATE, "error": error}),)
    assert decision.send is None
    assert decision.retry_at is None
    assert decision.finishes
    ended = commit(state, decision, now=T0 + 1)
    assert ended.status == engine.FAILED_STATUS
    assert ended.error == error


# --- decide_outcome: retries ----------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("unit", [0.0, 0.37, 0.999])
def test_retry_waits_a_full_jitter_delay(attempt: int, unit: float) -> None:
    now = T0 + 1
    decision = outcome_of(
        started(), GENERATE, attempt, Retry("timeout", "slow"), now=now, random=lambda: unit
    )
    bound = min(POLICY.maximum, POLICY.initial * 2 ** (attempt - 1))
    assert decision.retry_at is not None
    assert decision.retry_at == pytest.approx(now + unit * bound)
    assert now <= decision.retry_at <= now + bound
    assert decision.send is None
    assert not decision.finishes
    (event,) = decision.events
    assert event.type == ATTEMPT_FAILED
    assert event.data["retry_in"] == pytest.approx(unit * bound, abs=1e-3)
    assert event.data["reason"] == "timeout"
    assert event.data["detail"] == "slow"
    assert event.data["attempt"] == attempt


def test_retry_after_is_honoured_when_longer_than_the_jitter() -> None:
    retry = Retry("unavailable", "HTTP 503", in_doubt=False, retry_after=3.0)
    decision = outcome_of(started(), GENERATE, 1, retry, now=T0 + 1, random=lambda: 0.5)
    assert decision.retry_at == pytest.approx(T0 + 1 + 3.0)
    assert decision.events[0].data["retry_in"] == 3.0


def test_retry_after_is_capped_at_the_policy_maximum() -> None:
    retry = Retry("unavailable", "HTTP 503", in_doubt=False, retry_after=3600.0)
    decision = outcome_of(started(), GENERATE, 1, retry, now=T0 + 1, random=lambda: 0.0)
    assert decision.retry_at == pytest.approx(T0 + 1 + POLICY.maximum)


def test_a_shorter_retry_after_does_not_shorten_the_backoff() -> None:
    retry = Retry("unavailable", "HTTP 503", in_doubt=False, retry_after=0.0)
    decision = outcome_of(started(), GENERATE, 6, retry, now=T0 + 1, random=lambda: 1.0)
    assert decision.retry_at == pytest.approx(T0 + 1 + 6.4)


def test_retry_marks_the_step_in_doubt() -> None:
    state = started()
    decision = outcome_of(state, GENERATE, 1, Retry("timeout", in_doubt=True), now=T0 + 1)
    assert decision.events[0].data["in_doubt"] is True
    assert commit(state, decision, now=T0 + 1).in_doubt == {GENERATE}


def test_a_sure_failure_after_an_in_doubt_one_keeps_the_step_in_doubt() -> None:
    state = started()
    state = commit(state, outcome_of(state, GENERATE, 1, Retry("timeout"), now=T0 + 1), now=T0 + 1)
    refused = Retry("connection-refused", in_doubt=False)
    decision = outcome_of(state, GENERATE, 2, refused, now=T0 + 2)
    assert decision.events[0].data["in_doubt"] is True
    assert commit(state, decision, now=T0 + 2).in_doubt == {GENERATE}


def test_a_sure_failure_is_not_in_doubt() -> None:
    state = started()
    refused = Retry("connection-refused", in_doubt=False)
    decision = outcome_of(state, GENERATE, 1, refused, now=T0 + 1)
    assert decision.events[0].data["in_doubt"] is False
    assert commit(state, decision, now=T0 + 1).in_doubt == frozenset()


# --- past the deadline ----------------------------------------------------------------------

PAST = T0 + DEADLINE_SECONDS + 1


def refused_attempts(state: WorkflowState, count: int, *, now: float = T0 + 1) -> WorkflowState:
    """``state`` after ``count`` recorded attempts of the password step that were refused."""
    for attempt in range(1, count + 1):
        refused = Retry("connection-refused", in_doubt=False)
        state = commit(state, outcome_of(state, GENERATE, attempt, refused, now=now), now=now)
    return state


def test_past_the_deadline_a_step_not_in_doubt_fails_with_deadline_exceeded() -> None:
    state = refused_attempts(started(), 3)
    refused = Retry("connection-refused", in_doubt=False)
    decision = outcome_of(state, GENERATE, 4, refused, now=PAST)
    assert types(decision.events) == [ATTEMPT_FAILED, FAILED]
    assert decision.retry_at is None
    assert decision.send is None
    assert decision.finishes
    failed = decision.events[1].data
    assert failed["step"] == GENERATE
    assert failed["error"]["type"].endswith("/deadline-exceeded")
    assert failed["error"]["status"] == 504
    assert commit(state, decision, now=PAST).status == engine.FAILED_STATUS


@pytest.mark.parametrize("reason", ["timeout", "reset", "server-error"])
def test_past_the_deadline_an_in_doubt_step_keeps_retrying(reason: str) -> None:
    decision = outcome_of(started(), GENERATE, 9, Retry(reason, in_doubt=True), now=PAST)
    assert types(decision.events) == [ATTEMPT_FAILED]
    assert decision.retry_at is not None
    assert decision.retry_at >= PAST
    assert not decision.finishes


def test_past_the_deadline_a_step_once_in_doubt_never_ends_the_workflow() -> None:
    state = started()
    state = commit(state, outcome_of(state, GENERATE, 1, Retry("timeout"), now=T0 + 1), now=T0 + 1)
    now = PAST
    for attempt in range(2, 30):
        decision = outcome_of(
            state, GENERATE, attempt, Retry("connection-refused", in_doubt=False), now=now
        )
        assert not decision.finishes
        assert decision.retry_at is not None
        state = commit(state, decision, now=now)
        now = decision.retry_at + 1
    assert state.status == engine.RUNNING
    assert state.in_doubt == {GENERATE}


def test_past_the_deadline_the_mail_step_keeps_retrying() -> None:
    state = generated()
    refused = Retry("connection-refused", in_doubt=False)
    decision = outcome_of(state, MAIL, 5, refused, now=PAST)
    assert types(decision.events) == [ATTEMPT_FAILED]
    assert decision.retry_at is not None
    assert not decision.finishes


def test_a_password_generated_past_the_deadline_is_still_mailed() -> None:
    decision = outcome_of(started(), GENERATE, 7, Succeeded(GENERATED), now=PAST)
    assert types(decision.events) == [SUCCEEDED]
    assert decision.send is not None
    assert decision.send.destination == "mailer"
    assert GENERATED["password"] in decision.send.body["body"]
    assert not decision.finishes


def test_past_the_deadline_success_does_not_start_a_step_that_must_not_run_late() -> None:
    def call(step: str) -> Callable[[WorkflowState], Call]:
        return lambda state: Call(step, step, "POST", f"/{step}", {}, f"{state.workflow_id}/{step}")

    def ok(response: engine.Response) -> engine.Outcome:
        return Succeeded(dict(response.body))

    definition = WorkflowDefinition(
        name="two-steps",
        steps=(Step("first", "a", call("first"), ok), Step("second", "b", call("second"), ok)),
        deadline_seconds=DEADLINE_SECONDS,
        result=lambda state: {},
        parse=lambda body: engine.Command(body, body),
    )
    start = engine.start(definition, WORKFLOW_ID, {}, now=T0)
    state = commit(None, start, now=T0)
    decision = outcome_of(state, "first", 1, Succeeded({}), now=PAST, definition=definition)
    assert types(decision.events) == [SUCCEEDED, FAILED]
    assert decision.events[1].data["step"] == "second"
    assert decision.events[1].data["error"]["type"].endswith("/deadline-exceeded")
    assert decision.send is None
    assert decision.finishes

    in_time = outcome_of(state, "first", 1, Succeeded({}), now=T0 + 1, definition=definition)
    assert types(in_time.events) == [SUCCEEDED]
    assert in_time.send is not None
    assert in_time.send.idempotency_key == f"{WORKFLOW_ID}/second"


# --- is_current / decide_attempt --------------------------------------------------------------


def test_only_the_step_the_workflow_waits_on_is_current() -> None:
    state = started()
    assert engine.is_current(state, DEFINITION, GENERATE)
    assert not engine.is_current(state, DEFINITION, MAIL)

    state = generated()
    assert not engine.is_current(state, DEFINITION, GENERATE)  # a stale retry of a done step
    assert engine.is_current(state, DEFINITION, MAIL)

    done = commit(
        state, outcome_of(state, MAIL, 1, Succeeded({"mail_id": "m"}), now=T0 + 2), now=T0 + 2
    )
    assert not engine.is_current(done, DEFINITION, GENERATE)
    assert not engine.is_current(done, DEFINITION, MAIL)


def test_no_step_is_current_once_the_workflow_failed() -> None:
    state = started()
    failed = commit(
        state, outcome_of(state, GENERATE, 1, Failed({"status": 409}), now=T0 + 1), now=T0 + 1
    )
    assert not engine.is_current(failed, DEFINITION, GENERATE)
    assert not engine.is_current(failed, DEFINITION, MAIL)


def test_decide_attempt_goes_ahead_until_the_deadline() -> None:
    state = started()
    assert engine.decide_attempt(state, DEFINITION, GENERATE, 1, now=T0 + 1) is None
    assert engine.decide_attempt(state, DEFINITION, GENERATE, 1, now=state.deadline) is None


def test_decide_attempt_past_the_deadline_fails_a_step_not_in_doubt() -> None:
    state = refused_attempts(started(), 1)
    decision = engine.decide_attempt(state, DEFINITION, GENERATE, 2, now=PAST)
    assert decision is not None
    (event,) = decision.events
    assert event.type == FAILED
    assert event.data["step"] == GENERATE
    assert event.data["error"]["type"].endswith("/deadline-exceeded")
    assert event.data["attempt"] == 2
    assert decision.finishes
    assert decision.send is None


def test_decide_attempt_past_the_deadline_asks_an_in_doubt_step_again() -> None:
    state = started()
    state = commit(state, outcome_of(state, GENERATE, 1, Retry("timeout"), now=T0 + 1), now=T0 + 1)
    assert engine.decide_attempt(state, DEFINITION, GENERATE, 2, now=PAST) is None


def test_decide_attempt_past_the_deadline_still_sends_the_mail() -> None:
    assert engine.decide_attempt(generated(), DEFINITION, MAIL, 1, now=PAST) is None


# --- attempts claimed but never recorded ------------------------------------------------------


def test_an_attempt_claimed_but_never_recorded_is_in_doubt() -> None:
    # The case: attempt 1 refused; replica A claims attempt 2 just before the deadline,
    # the generator commits, A dies before recording; replica B claims attempt 3 past it.
    state = refused_attempts(started(), 1)
    assert state.in_doubt == frozenset()
    assert engine.unrecorded_attempts(state, GENERATE, 3) == [2]
    assert engine.is_in_doubt(state, GENERATE, 3)
    assert engine.decide_attempt(state, DEFINITION, GENERATE, 3, now=PAST) is None
    # The next attempt in line is not a gap.
    assert engine.unrecorded_attempts(state, GENERATE, 2) == []
    assert not engine.is_in_doubt(state, GENERATE, 2)


def test_a_first_claim_never_recorded_makes_the_second_in_doubt() -> None:
    assert engine.decide_attempt(started(), DEFINITION, GENERATE, 2, now=PAST) is None


def test_a_sure_failure_after_an_unrecorded_attempt_is_recorded_in_doubt() -> None:
    state = refused_attempts(started(), 1)
    refused = Retry("connection-refused", in_doubt=False)
    decision = outcome_of(state, GENERATE, 3, refused, now=PAST)
    assert types(decision.events) == [ATTEMPT_FAILED]  # not WorkflowFailed: attempt 2 may have
    (event,) = decision.events  # created the password
    assert event.data["in_doubt"] is True
    assert event.data["unrecorded"] == [2]
    assert decision.retry_at is not None
    after = commit(state, decision, now=PAST)
    assert after.in_doubt == {GENERATE}
    assert after.attempts == {GENERATE: 3}


def test_recorded_attempt_numbers_never_go_back() -> None:
    state = refused_attempts(started(), 3)
    late = engine.decide_fenced_outcome(
        state,
        DEFINITION,
        GENERATE,
        2,
        Retry("timeout"),
        now=T0 + 2,
        replica="r",
        elapsed_ms=1.0,
        random=lambda: 0.5,
    )
    assert late.events == ()  # attempt 2's outcome is known already
    older = recorded(
        state.version + 1,
        ATTEMPT_FAILED,
        {
            "step": GENERATE,
            "attempt": 1,
            "reason": "timeout",
            "in_doubt": True,
        },
    )
    assert engine.evolve(state, older).attempts == {GENERATE: 3}


# --- outcomes of a replica that lost its lease ------------------------------------------------


def fenced(state: WorkflowState, attempt: int, outcome: engine.Outcome, now: float) -> Decision:
    return engine.decide_fenced_outcome(
        state,
        DEFINITION,
        GENERATE,
        attempt,
        outcome,
        now=now,
        replica="r-a",
        elapsed_ms=5.0,
        random=lambda: 0.5,
    )


def test_a_fenced_success_is_still_recorded_and_moves_on_to_the_mail() -> None:
    decision = fenced(started(), 1, Succeeded(GENERATED), PAST)
    assert types(decision.events) == [SUCCEEDED]
    assert decision.send is not None
    assert decision.send.destination == "mailer"


def test_a_fenced_retry_only_joins_the_history() -> None:
    state = refused_attempts(started(), 1)
    decision = fenced(state, 2, Retry("connection-refused", in_doubt=False), PAST)
    (event,) = decision.events
    assert event.type == ATTEMPT_FAILED
    assert event.data["lease_lost"] is True
    assert event.data["retry_in"] is None
    assert decision.retry_at is None  # the lease holder decides when to try again
    assert not decision.finishes  # past the deadline, and still not the end
    assert decision.send is None


def test_a_fenced_timeout_marks_the_step_in_doubt() -> None:
    state = refused_attempts(started(), 1)
    decision = fenced(state, 2, Retry("timeout", in_doubt=True), T0 + 2)
    assert commit(state, decision, now=T0 + 2).in_doubt == {GENERATE}


# --- outcomes that come after the step is settled -----------------------------------------------


def test_a_late_success_that_repeats_the_result_changes_nothing() -> None:
    state = generated()
    late = engine.decide_late_outcome(
        state, GENERATE, 2, Succeeded(GENERATED), replica="r", elapsed_ms=3.0
    )
    assert late.events == ()


def test_a_late_success_for_a_failed_workflow_is_kept_not_dropped() -> None:
    state = refused_attempts(started(), 1, now=PAST)
    ended = commit(
        state,
        outcome_of(state, GENERATE, 2, Retry("connection-refused", in_doubt=False), now=PAST),
        now=PAST,
    )
    assert ended.status == engine.FAILED_STATUS
    late = engine.decide_late_outcome(
        ended, GENERATE, 3, Succeeded(GENERATED), replica="r", elapsed_ms=3.0
    )
    (event,) = late.events
    assert event.type == engine.SUCCEEDED_LATE
    assert event.data["result"] == GENERATED
    assert event.data["status"] == engine.FAILED_STATUS
    assert commit(ended, late, now=PAST).status == engine.FAILED_STATUS


def test_a_late_failure_teaches_nothing() -> None:
    late = engine.decide_late_outcome(
        generated(), GENERATE, 2, Retry("timeout"), replica="r", elapsed_ms=3.0
    )
    assert late.events == ()


# --- RetryPolicy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "bound"),
    [
        (1, 0.2),
        (2, 0.4),
        (3, 0.8),
        (4, 1.6),
        (5, 3.2),
        (6, 6.4),
        (7, 10.0),
        (8, 10.0),
        (9, 10.0),
        (10, 10.0),
    ],
)
def test_retry_policy_bounds(attempt: int, bound: float) -> None:
    policy = RetryPolicy(initial=0.2, maximum=10.0)
    assert policy.delay(attempt, lambda: 1.0) == pytest.approx(bound)
    assert policy.delay(attempt, lambda: 0.0) == 0.0
    assert policy.delay(attempt, lambda: 0.5) == pytest.approx(bound / 2)


def test_retry_policy_delays_stay_within_the_bound() -> None:
    import random

    source = random.Random(1234)
    policy = RetryPolicy(initial=0.1, maximum=2.0)
    for attempt in range(1, 40):
        bound = min(2.0, 0.1 * 2 ** (attempt - 1))
        delays = [policy.delay(attempt, source.random) for _ in range(50)]
        assert all(0.0 <= delay <= bound for delay in delays)
        assert max(delays) > bound / 2  # jitter spreads over the whole range, not a fixed wait


@pytest.mark.parametrize("attempt", [0, -3])
def test_retry_policy_treats_attempts_below_one_as_the_first(attempt: int) -> None:
    assert RetryPolicy(0.2, 10.0).delay(attempt, lambda: 1.0) == pytest.approx(0.2)


@pytest.mark.parametrize("attempt", [100, 1025, 5000, 10**6])
def test_retry_policy_is_capped_however_many_attempts(attempt: int) -> None:
    # An in-doubt step retries until it learns, however long the service stays down.
    assert RetryPolicy(0.2, 10.0).delay(attempt, lambda: 1.0) == 10.0


def test_a_call_stored_before_calls_carried_their_step_still_reads() -> None:
    old = {
        "destination": "mailer",
        "method": "POST",
        "path": "/v1/mails",
        "body": {},
        "idempotency_key": "wf-9/send_mail",
    }
    assert Call.from_payload(old).step == "send_mail"


def test_the_definition_reads_a_command_into_its_canonical_form_and_input() -> None:
    command = DEFINITION.parse({"username": "Alice"})
    assert command.canonical == {"username": "Alice", "email": None}
    assert command.input == {"username": "Alice", "email": None, "recipient": "Alice@example.com"}
    with pytest.raises(ValueError, match="not a mail domain"):
        password_workflow.definition(deadline_seconds=1, retry=POLICY, mail_domain="bad domain")


# --- parking -----------------------------------------------------------------------------------


def park(state: WorkflowState, reason: str, attempt: int = 1, now: float = T0 + 1) -> Decision:
    return engine.decide_park(
        state, GENERATE, attempt, reason=reason, detail="why", delay=2.0, now=now
    )


def test_a_parked_step_waits_without_an_attempt_or_a_doubt() -> None:
    state = started()
    decision = park(state, "circuit-open")
    assert types(decision.events) == [engine.PARKED]
    assert decision.events[0].data == {
        "step": GENERATE,
        "attempt": 1,
        "reason": "circuit-open",
        "detail": "why",
        "resume_in": 2.0,
    }
    assert decision.retry_at == T0 + 3
    assert decision.send is None
    assert not decision.finishes
    after = commit(state, decision, now=T0 + 1)
    assert after.parked == {GENERATE: "circuit-open"}
    assert after.attempts == {}  # no attempt was made: none is unrecorded either
    assert after.in_doubt == frozenset()
    assert not engine.is_in_doubt(after, GENERATE, 1)


def test_parking_again_for_the_same_reason_adds_no_event_until_an_attempt_is_made() -> None:
    state = commit(started(), park(started(), "circuit-open"), now=T0 + 1)
    again = park(state, "circuit-open")
    assert again.events == ()
    assert again.retry_at == T0 + 3
    other = park(state, "retry-budget")
    assert types(other.events) == [engine.PARKED]  # a new reason is worth saying

    failed = outcome_of(state, GENERATE, 1, Retry("timeout"), now=T0 + 2)
    state = commit(state, failed, now=T0 + 2)
    assert state.parked == {}
    assert types(park(state, "circuit-open", attempt=2).events) == [engine.PARKED]


def test_a_success_clears_the_parked_reason() -> None:
    state = commit(started(), park(started(), "circuit-open"), now=T0 + 1)
    state = commit(
        state, outcome_of(state, GENERATE, 1, Succeeded(GENERATED), now=T0 + 2), now=T0 + 2
    )
    assert state.parked == {}


def test_a_retry_held_past_its_backoff_is_parked_in_the_same_decision() -> None:
    """The failure that opens the circuit says so: the retry is due when the circuit lets a
    probe through (not after its backoff), and the history has the park with its reason."""
    state = started()
    hold = engine.Hold("circuit-open", "generator's circuit is open", 1.25)
    decision = outcome_of(state, GENERATE, 1, Retry("connection-refused"), now=T0 + 1, hold=hold)
    assert types(decision.events) == [ATTEMPT_FAILED, engine.PARKED]
    assert decision.events[0].data["retry_in"] == 0.1  # the backoff, as without the hold
    assert decision.events[1].data == {
        "step": GENERATE,
        "attempt": 2,
        "reason": "circuit-open",
        "detail": "generator's circuit is open",
        "resume_in": 1.25,
    }
    assert decision.retry_at == T0 + 2.25
    after = commit(state, decision, now=T0 + 1)
    assert after.parked == {GENERATE: "circuit-open"}
    assert after.attempts == {GENERATE: 1}


def test_a_hold_shorter_than_the_backoff_or_a_step_that_ends_parks_nothing() -> None:
    state = started()
    short = engine.Hold("circuit-open", "why", 0.05)
    decision = outcome_of(state, GENERATE, 1, Retry("timeout"), now=T0 + 1, hold=short)
    assert types(decision.events) == [ATTEMPT_FAILED]
    assert decision.retry_at == pytest.approx(T0 + 1.1)
    long = engine.Hold("circuit-open", "why", 5.0)
    for outcome in (Succeeded(GENERATED), Failed({"type": "refused", "title": "no"})):
        ended = outcome_of(state, GENERATE, 1, outcome, now=T0 + 1, hold=long)
        assert engine.PARKED not in types(ended.events)
