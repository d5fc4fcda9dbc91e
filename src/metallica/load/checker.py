"""The invariant checker: what clients were told, against what the system holds.

It reads the final state from the three places that hold it (protools' event store and command
store, the generator's database, the Maildir) and checks the invariants of DESIGN.md:

- no accepted command lost: every command protools recorded has a workflow, and it is terminal;
- no duplicate password or mail: one mail per completed workflow, no mail or password without one;
- returned == stored == mailed, for every completed workflow and every client told "ok" (the
  generator keeps only a keyed digest of each password: "stored" means the returned password
  digests, under the generator's key, to what its row holds);
- the deadline never ends a workflow while a step may have acted: no ``deadline-exceeded``
  failure while its step was in doubt, or while an attempt of it was claimed and never recorded
  (past its deadline a workflow may still finish what is in doubt, and the mail);
- per-stream versions gap-free (1..n), global positions increasing.

A violation names the command and carries its history. The same checker serves tests and the CLI.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from metallica.load.records import OK, ClientRecord
from metallica.mail_sender.maildir import Maildir
from metallica.password_generator.sealing import GeneratorKeyring
from metallica.protools import engine, password_workflow, store
from metallica.protools.sealing import FieldSealer, ProtoolsKeyring
from metallica.storage import open_database

_PASSWORD_LINE = re.compile(r"^Your new password is: (?P<password>\S+)\r?$", re.MULTILINE)


@dataclass(frozen=True)
class Mail:
    path: Path
    to: str
    password: str | None


# Whether a password is the one the generator holds in a given stored form for a username key.
Matcher = Callable[[str, Any, str], bool]


def same(_username_key: str, stored: Any, password: str) -> bool:
    """The matcher of a store that held passwords themselves (the checker's own tests)."""
    return bool(stored == password)


def digest_matcher(keyring: GeneratorKeyring) -> Matcher:
    """The matcher of the generator's rows: ``stored`` is ``(key id, digest)``."""

    def matches(username_key: str, stored: Any, password: str) -> bool:
        key_id, digest = stored
        return keyring.verify(username_key, password, key_id, digest)

    return matches


@dataclass
class Snapshot:
    """The system's final state, read from its stores."""

    events: dict[str, list[engine.RecordedEvent]]
    global_positions: list[int]
    commands: dict[str, str]  # idempotency key -> workflow id
    passwords: dict[str, Any]  # username key -> what the generator holds of its password
    mails: list[Mail]
    matches: Matcher = same  # does a password match what the generator holds?

    def workflow(self, workflow_id: str) -> engine.WorkflowState | None:
        return engine.fold(workflow_id, self.events.get(workflow_id, []))


@dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str
    detail: str
    history: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"[{self.invariant}] {self.subject}: {self.detail}"]
        lines += [f"    {line}" for line in self.history]
        return "\n".join(lines)


INVARIANTS = (
    "no accepted command lost",
    "no duplicate password or mail",
    "returned == stored == mailed",
    "no deadline failure in doubt",
    "versions gap-free",
)


@dataclass
class Report:
    checked: tuple[str, ...]
    violations: list[Violation]
    workflows: int
    completed: int
    failed: int

    @property
    def ok(self) -> bool:
        return not self.violations


def read_mail(path: Path) -> Mail:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    body = message.get_body(("plain",))
    text = body.get_content() if body is not None else ""
    match = _PASSWORD_LINE.search(str(text))
    return Mail(path, str(message["To"]), match["password"] if match else None)


def read_snapshot(
    protools_url: str,
    generator_url: str,
    maildir: Path,
    *,
    generator_keys: GeneratorKeyring,
    protools_keys: ProtoolsKeyring,
    only: Sequence[ClientRecord] | None = None,
) -> Snapshot:
    """Read the final state of a stack from its databases and its Maildir; with ``only``, just
    what concerns those clients' commands (a store with a long history is not read whole).
    ``generator_keys``: to verify the passwords' digests; ``protools_keys``: to open the
    passwords sealed in protools' events."""
    sealer = FieldSealer(protools_keys, password_workflow.SECRET_FIELDS)
    protools = open_database(protools_url, "protools", pool_size=1)
    try:
        events: dict[str, list[engine.RecordedEvent]] = defaultdict(list)
        positions: list[int] = []
        with protools.transaction(write=False) as tx:
            if only is None:
                after = 0
                while batch := store.read_all(tx, after=after, limit=5000):
                    for event in batch:
                        event = replace(event, data=sealer.open(event.stream_id, event.data))
                        events[event.stream_id].append(event)
                        positions.append(event.global_position)
                    after = batch[-1].global_position
                commands = {
                    row["idempotency_key"]: row["workflow_id"]
                    for row in tx.fetch_all("all_commands")
                }
            else:
                commands = {}
                for record in only:
                    command = store.find_command(tx, record.key)
                    if command is not None:
                        commands[command.idempotency_key] = command.workflow_id
                for workflow_id in dict.fromkeys(commands.values()):
                    events[workflow_id] = [
                        replace(event, data=sealer.open(workflow_id, event.data))
                        for event in store.read_stream(tx, workflow_id)
                    ]
                positions = sorted(e.global_position for es in events.values() for e in es)
    finally:
        protools.close()
    generator = open_database(generator_url, "generator", pool_size=1)
    try:
        with generator.transaction(write=False) as tx:
            if only is None:
                rows = tx.fetch_all("all_passwords")
            else:
                found = (
                    tx.fetch_one("get_password", username_key=r.username.lower()) for r in only
                )
                rows = [row for row in found if row]
            passwords = {
                row["username_key"]: (row["digest_key_id"], bytes(row["digest"])) for row in rows
            }
    finally:
        generator.close()
    mails = [read_mail(path) for path in Maildir(maildir).mails()]
    if only is not None:
        recipients = {r.username.lower() for r in only}
        mails = [mail for mail in mails if mail.to.split("@")[0].lower() in recipients]
    return Snapshot(
        dict(events), positions, commands, passwords, mails, digest_matcher(generator_keys)
    )


def history(snapshot: Snapshot, workflow_id: str | None) -> tuple[str, ...]:
    """A workflow's events, one line each, passwords masked."""
    if workflow_id is None:
        return ("(no workflow)",)
    lines = []
    for event in snapshot.events.get(workflow_id, []):
        data = {key: value for key, value in event.data.items() if key not in ("result", "input")}
        lines.append(f"v{event.version} {event.type} {data}")
    return tuple(lines) or ("(no events)",)


def check(snapshot: Snapshot, records: Sequence[ClientRecord]) -> Report:
    """Check every invariant; return what was checked and every violation found."""
    violations: list[Violation] = []
    states = {wid: snapshot.workflow(wid) for wid in snapshot.events}
    completed = {
        wid: s for wid, s in states.items() if s is not None and s.status == engine.COMPLETED_STATUS
    }
    failed = sum(1 for s in states.values() if s is not None and s.status == engine.FAILED_STATUS)

    def violation(invariant: str, subject: str, detail: str, workflow_id: str | None) -> None:
        violations.append(Violation(invariant, subject, detail, history(snapshot, workflow_id)))

    # 1. No accepted command lost.
    for key, workflow_id in snapshot.commands.items():
        state = states.get(workflow_id)
        if state is None:
            violation(
                INVARIANTS[0],
                f"command {key!r}",
                "accepted, but its workflow has no events",
                workflow_id,
            )
        elif not state.terminal:
            violation(
                INVARIANTS[0],
                f"command {key!r}",
                f"workflow {workflow_id} is still running",
                workflow_id,
            )
    for record in records:
        if record.told == OK and record.key not in snapshot.commands:
            violation(INVARIANTS[0], f"command {record.key!r}", "told ok but never recorded", None)

    # 2. No duplicate password or mail; no password or mail without a completed workflow.
    mails_by_password = Counter(mail.password for mail in snapshot.mails)
    completed_by_user = Counter(engine_username(state).lower() for state in completed.values())
    for username, count in completed_by_user.items():
        if count > 1:
            violation(INVARIANTS[1], f"username {username!r}", f"{count} completed workflows", None)
    for count in mails_by_password.values():
        if count > 1:
            violation(INVARIANTS[1], "mail", f"{count} mails carry the same password", None)
    returned_to: dict[str, list[str]] = defaultdict(list)  # username key -> passwords returned
    for state in completed.values():
        returned_to[engine_username(state).lower()].append(
            state.results["generate_password"]["password"]
        )
    completed_passwords = {password for passwords in returned_to.values() for password in passwords}
    for mail in snapshot.mails:
        if mail.password not in completed_passwords:
            violation(
                INVARIANTS[1], f"mail {mail.path.name}", "no completed workflow returned it", None
            )
    for username_key, stored in snapshot.passwords.items():
        if not any(
            snapshot.matches(username_key, stored, password)
            for password in returned_to.get(username_key, [])
        ):
            violation(
                INVARIANTS[1],
                f"username {username_key!r}",
                "a password exists that no completed workflow received",
                None,
            )

    # 3. Returned == stored == mailed.
    mailed = {mail.password: mail for mail in snapshot.mails}
    for workflow_id, state in completed.items():
        username = engine_username(state)
        returned = state.results["generate_password"]["password"]
        stored = snapshot.passwords.get(username.lower())
        found = mailed.get(returned)
        if stored is None or not snapshot.matches(username.lower(), stored, returned):
            violation(
                INVARIANTS[2],
                f"workflow {workflow_id}",
                "stored password differs from returned",
                workflow_id,
            )
        if found is None:
            violation(
                INVARIANTS[2],
                f"workflow {workflow_id}",
                "no mail carries the returned password",
                workflow_id,
            )
        elif found.to != state.input["recipient"]:
            violation(
                INVARIANTS[2], f"workflow {workflow_id}", f"mail went to {found.to}", workflow_id
            )
    for record in records:
        if record.told == OK:
            stored = snapshot.passwords.get(record.username.lower())
            held = (
                stored is not None
                and record.password is not None
                and snapshot.matches(record.username.lower(), stored, record.password)
            )
            if not held or record.password not in mailed:
                violation(
                    INVARIANTS[2],
                    f"command {record.key!r}",
                    "the client was told another password than stored and mailed",
                    record.workflow_id,
                )

    # 4. The deadline never fails a workflow whose step may have acted.
    for workflow_id, events in snapshot.events.items():
        reason = _deadline_failure_in_doubt(workflow_id, events)
        if reason is not None:
            violation(INVARIANTS[3], f"workflow {workflow_id}", reason, workflow_id)

    # 5. Versions gap-free, global order increasing.
    for workflow_id, events in snapshot.events.items():
        versions = [event.version for event in events]
        if versions != list(range(1, len(versions) + 1)):
            violation(INVARIANTS[4], f"workflow {workflow_id}", f"versions {versions}", workflow_id)
    if snapshot.global_positions != sorted(set(snapshot.global_positions)):
        violations.append(Violation(INVARIANTS[4], "global log", "positions repeat or go back"))

    return Report(INVARIANTS, violations, len(states), len(completed), failed)


def _deadline_failure_in_doubt(
    workflow_id: str, events: Sequence[engine.RecordedEvent]
) -> str | None:
    """Why the workflow's ``deadline-exceeded`` failure came while its step was in doubt, if
    it did; None otherwise."""
    state = engine.WorkflowState(workflow_id)
    for event in events:
        error = event.data.get("error") if event.type == engine.FAILED else None
        if isinstance(error, dict) and str(error.get("type", "")).endswith("/deadline-exceeded"):
            step = str(event.data.get("step"))
            if step in state.in_doubt:
                return f"failed deadline-exceeded while {step} was in doubt"
            claimed = event.data.get("attempt")
            if isinstance(claimed, int) and engine.unrecorded_attempts(state, step, claimed):
                gap = engine.unrecorded_attempts(state, step, claimed)
                return f"failed deadline-exceeded while attempts {gap} of {step} were unrecorded"
        state = engine.evolve(state, event)
    return None


def engine_username(state: engine.WorkflowState) -> str:
    return str(state.input["username"])


def as_dict(report: Report) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "checked": list(report.checked),
        "violations": [str(v) for v in report.violations],
        "workflows": report.workflows,
    }
