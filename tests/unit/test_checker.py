"""The invariant checker finds each kind of violation, and passes a sound state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from metallica.load.checker import Mail, Snapshot, check
from metallica.load.records import OK, ClientRecord
from metallica.protools.engine import RecordedEvent

START = 1_000.0


def stream(
    workflow_id: str,
    username: str,
    *,
    password: str | None,
    deadline: float = 100.0,
    versions: list[int] | None = None,
    finished: bool = True,
) -> list[RecordedEvent]:
    data: list[tuple[str, dict[str, Any]]] = [
        (
            "WorkflowStarted",
            {
                "workflow": "password-creation",
                "deadline": START + deadline,
                "input": {
                    "username": username,
                    "email": None,
                    "recipient": f"{username}@example.com",
                },
            },
        ),
    ]
    if password is not None:
        data.append(
            (
                "StepSucceeded",
                {
                    "step": "generate_password",
                    "attempt": 1,
                    "replica": "r",
                    "elapsed_ms": 1.0,
                    "result": {"username": username, "password": password},
                },
            )
        )
        data.append(
            (
                "StepSucceeded",
                {
                    "step": "send_mail",
                    "attempt": 1,
                    "replica": "r",
                    "elapsed_ms": 1.0,
                    "result": {"mail_id": "m"},
                },
            )
        )
        if finished:
            data.append(("WorkflowCompleted", {}))
    elif finished:
        data.append(
            (
                "WorkflowFailed",
                {"step": "generate_password", "error": {"type": "x/username-taken", "status": 409}},
            )
        )
    numbers = versions or list(range(1, len(data) + 1))
    return [
        RecordedEvent(0, workflow_id, version, kind, payload, START + index)
        for index, (version, (kind, payload)) in enumerate(zip(numbers, data, strict=True))
    ]


def sound() -> tuple[Snapshot, list[ClientRecord]]:
    events = {
        "w1": stream("w1", "ann", password="pw-ann"),
        "w2": stream("w2", "ANN", password=None),
    }
    snapshot = Snapshot(
        events=events,
        global_positions=[1, 2, 3, 4, 5, 6],
        commands={"k1": "w1", "k2": "w2"},
        passwords={"ann": "pw-ann"},
        mails=[Mail(Path("m1"), "ann@example.com", "pw-ann")],
    )
    records = [ClientRecord("k1", "ann", told=OK, workflow_id="w1", password="pw-ann")]
    return snapshot, records


def invariants(snapshot: Snapshot, records: list[ClientRecord]) -> set[str]:
    return {violation.invariant for violation in check(snapshot, records).violations}


def test_a_sound_state_passes() -> None:
    snapshot, records = sound()
    report = check(snapshot, records)
    assert report.ok, [str(v) for v in report.violations]
    assert (report.workflows, report.completed, report.failed) == (2, 1, 1)


def test_a_running_workflow_is_a_lost_command() -> None:
    snapshot, records = sound()
    snapshot.events["w1"] = stream("w1", "ann", password="pw-ann", finished=False)
    found = invariants(snapshot, records)
    assert "no accepted command lost" in found
    # its password and mail belong to no completed workflow yet: flagged as well
    assert found <= {"no accepted command lost", "no duplicate password or mail"}


def test_a_command_without_events_is_lost_and_names_the_key() -> None:
    snapshot, records = sound()
    snapshot.commands["k3"] = "w3"
    report = check(snapshot, records)
    assert [v.subject for v in report.violations] == ["command 'k3'"]


def test_a_second_mail_is_a_duplicate() -> None:
    snapshot, records = sound()
    snapshot.mails.append(Mail(Path("m2"), "ann@example.com", "pw-ann"))
    assert invariants(snapshot, records) == {"no duplicate password or mail"}


def test_a_password_nobody_received_is_a_violation() -> None:
    snapshot, records = sound()
    snapshot.passwords["bob"] = "pw-bob"
    assert "no duplicate password or mail" in invariants(snapshot, records)


def test_a_client_told_another_password_is_a_violation() -> None:
    snapshot, records = sound()
    records[0].password = "something-else"
    violations = check(snapshot, records).violations
    assert [v.invariant for v in violations] == ["returned == stored == mailed"]
    assert violations[0].history[0].startswith("v1 WorkflowStarted")


@pytest.mark.parametrize("field", ["stored", "mailed"])
def test_stored_or_mailed_differing_from_returned_is_a_violation(field: str) -> None:
    snapshot, records = sound()
    if field == "stored":
        snapshot.passwords["ann"] = "other"
    else:
        snapshot.mails[0] = Mail(Path("m1"), "ann@example.com", "other")
    assert "returned == stored == mailed" in invariants(snapshot, records)


def deadline_failure(
    workflow_id: str, username: str, attempts: list[dict[str, Any]], failed_attempt: int | None
) -> list[RecordedEvent]:
    """A stream that ends deadline-exceeded after the given failed attempts of the password."""
    started = stream(workflow_id, username, password=None, finished=False)
    tail: list[tuple[str, dict[str, Any]]] = [
        (
            "StepAttemptFailed",
            {"step": "generate_password", "replica": "r", "elapsed_ms": 1.0, **attempt},
        )
        for attempt in attempts
    ]
    failed: dict[str, Any] = {
        "step": "generate_password",
        "error": {"type": "https://metallica.dev/problems/deadline-exceeded", "status": 504},
    }
    if failed_attempt is not None:
        failed["attempt"] = failed_attempt
    tail.append(("WorkflowFailed", failed))
    return started + [
        RecordedEvent(0, workflow_id, len(started) + index, kind, data, START + 200 + index)
        for index, (kind, data) in enumerate(tail, start=1)
    ]


def test_a_workflow_finishing_past_its_deadline_is_fine() -> None:
    # Past its deadline a workflow still finishes a step in doubt, and the mail.
    snapshot, records = sound()
    snapshot.events["w1"] = stream("w1", "ann", password="pw-ann", deadline=1.0)
    assert invariants(snapshot, records) == set()


def test_a_deadline_failure_with_nothing_in_doubt_is_fine() -> None:
    snapshot, records = sound()
    refused = {"attempt": 1, "reason": "connection-refused", "in_doubt": False}
    snapshot.events["w2"] = deadline_failure("w2", "ANN", [refused], failed_attempt=2)
    assert invariants(snapshot, records) == set()


def test_a_deadline_failure_while_in_doubt_is_a_violation() -> None:
    snapshot, records = sound()
    timeout = {"attempt": 1, "reason": "timeout", "in_doubt": True}
    snapshot.events["w2"] = deadline_failure("w2", "ANN", [timeout], failed_attempt=2)
    assert invariants(snapshot, records) == {"no deadline failure in doubt"}


def test_a_deadline_failure_after_an_unrecorded_attempt_is_a_violation() -> None:
    # The case: attempt 1 refused, attempt 2 claimed and never recorded, attempt 3 failed
    # the workflow at the deadline.
    snapshot, records = sound()
    refused = {"attempt": 1, "reason": "connection-refused", "in_doubt": False}
    snapshot.events["w2"] = deadline_failure("w2", "ANN", [refused], failed_attempt=3)
    (violation,) = check(snapshot, records).violations
    assert violation.invariant == "no deadline failure in doubt"
    assert "[2]" in violation.detail


def test_a_version_gap_is_found() -> None:
    snapshot, records = sound()
    snapshot.events["w2"] = stream("w2", "ANN", password=None, versions=[1, 3])
    assert "versions gap-free" in invariants(snapshot, records)


def test_global_positions_going_back_are_found() -> None:
    snapshot, records = sound()
    snapshot.global_positions = [1, 3, 2]
    assert invariants(snapshot, records) == {"versions gap-free"}
