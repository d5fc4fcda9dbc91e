"""The brief's failure modes as scenarios, each run against a :class:`~metallica.lab.harness.Lab`.

Each scenario breaks something, sends commands as clients would, lets the clients learn their
outcome without resending (unless their request broke before they heard of a workflow), then
returns its own checks; the runner adds the invariant checker's report.
"""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg

from metallica.faultproxy import Latency, LimitData, ResetPeer, Timeout, Toxic
from metallica.lab import overload
from metallica.lab.harness import CALL_TIMEOUT, BaseLab, Lab
from metallica.load.checker import Report
from metallica.load.records import FAILED, OK, UNKNOWN, ClientRecord


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ScenarioResult:
    name: str
    fault: str
    records: list[ClientRecord] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    report: Report | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and all(check.ok for check in self.checks)
            and (self.report is None or self.report.ok)
        )


AnyLab = TypeVar("AnyLab", bound=BaseLab)
# A scenario for any lab runs on a lab of one kind: Scenario[BaseLab] is a Scenario[Lab].
LabKind = TypeVar("LabKind", bound=BaseLab, contravariant=True)


@dataclass(frozen=True)
class Scenario(Generic[LabKind]):
    """A failure mode: ``run`` breaks something on a lab of its kind, drives clients through
    it and returns its own checks."""

    name: str
    title: str
    fault: str
    run: Callable[[LabKind], list[Check]]
    slow: bool = False
    group: str = "faults"  # "overload": measured against the lab's capacity (lab/overload.py)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _time(event: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(event["time"]).timestamp()


def _attempts(lab: BaseLab, workflow_id: str | None, step: str) -> list[dict[str, Any]]:
    """The attempt events of one step: ``StepAttemptFailed`` and ``StepSucceeded``."""
    if workflow_id is None:
        return []
    return [
        event["data"] | {"type": event["type"], "time": _time(event)}
        for event in lab.events(workflow_id)
        if event["type"] in ("StepAttemptFailed", "StepSucceeded") and event["data"]["step"] == step
    ]


def _all_told(records: list[ClientRecord], told: str = OK) -> Check:
    bad = [f"{r.key}: {r.told} {r.error or ''} {r.statuses}" for r in records if r.told != told]
    return Check(f"every client told {told}", not bad, "; ".join(bad[:3]))


# --- 1-3: the generator is slow before, during or after it persists -----------------------------


def _slow_generator(point: str) -> Callable[[BaseLab], list[Check]]:
    def run(lab: BaseLab) -> list[Check]:
        lab.arm(
            "generator",
            {
                "point": point,
                "action": "delay",
                "delay_ms": int(CALL_TIMEOUT * 2500),
                "attempt": 1,
                "count": 100,
            },
        )
        try:
            records = [lab.submit(_name(point.split("_")[0]), replica=i, wait=25) for i in range(3)]
            lab.resolve_all(records)
        finally:
            lab.disarm("generator")
        checks = [_all_told(records)]
        timed_out, elsewhere = [], []
        for record in records:
            attempts = _attempts(lab, record.workflow_id, "generate_password")
            first, retry = [*attempts, {}, {}][:2]
            timed_out.append(first.get("reason") == "timeout")
            elsewhere.append(bool(retry) and first.get("replica") != retry.get("replica"))
        checks.append(Check("the first attempt timed out", all(timed_out), f"{timed_out}"))
        if lab.replicas > 1:
            checks.append(
                Check(
                    "the retry landed on another generator replica", all(elsewhere), f"{elsewhere}"
                )
            )
        own_taken = [r.key for r in records if r.error == "username-taken"]
        checks.append(
            Check(
                "never username-taken for the command's own username", not own_taken, f"{own_taken}"
            )
        )
        return checks

    return run


# --- 4: a service down for a while ---------------------------------------------------------


def _service_down(service: str) -> Callable[[BaseLab], list[Check]]:
    def run(lab: BaseLab) -> list[Check]:
        lab.stop_service(service)
        started, records = time.monotonic(), list[ClientRecord]()
        try:
            while time.monotonic() - started < lab.down_seconds:
                records.append(
                    lab.submit(_name(f"down-{service[:3]}"), replica=len(records), wait=1)
                )
                time.sleep(1.0)
        finally:
            back = lab.start_service(service)
        lab.resolve_all(records, resend=False)
        completed_at = []
        for record in records:
            events = lab.events(record.workflow_id) if record.workflow_id else []
            done = [_time(e) for e in events if e["type"] == "WorkflowCompleted"]
            completed_at.append(done[0] - back if done else float("inf"))
        slowest = max(completed_at, default=0.0)
        return [
            Check(
                f"clients got 202 while the {service} was down",
                all(r.statuses[:1] == [202] for r in records),
            ),
            Check("clients never resent", all(r.posts == 1 for r in records)),
            _all_told(records),
            Check(
                f"each completed within 10 s of the {service}'s return",
                slowest <= 10.0,
                f"slowest {slowest:.1f} s after it was back ({len(records)} commands)",
            ),
        ]

    return run


# --- 5: a protools replica killed at each step --------------------------------------------------


def _protools_killed(lab: Lab) -> list[Check]:
    other = 1 % lab.replicas
    first_restarts = lab.stack.restarts
    records = []

    def back_up(restarts_before: int) -> bool:
        """Wait until the supervisor restarted the dead replica and it answers."""
        restarted = _eventually(lambda: lab.stack.restarts > restarts_before, seconds=15)
        lab.stack.wait_healthy(lab.stack.members["protools"][0])
        return restarted

    # a. Just after accepting: the replica dies right after the commit, before any call.
    before = lab.stack.restarts
    lab.arm("protools", {"point": "after_accept", "action": "crash"}, replicas=[0])
    records.append(lab.submit(_name("kill-accept"), replica=0, wait=10))
    lab.resolve(records[-1], first_replica=other)
    died = [back_up(before)]
    # b. While the generator call is in flight.
    before = lab.stack.restarts
    lab.arm(
        "generator", {"point": "before_persist", "action": "delay", "delay_ms": 2000, "attempt": 1}
    )
    records.append(lab.submit(_name("kill-inflight"), replica=0, wait=0))
    time.sleep(0.5)
    lab.stack.kill("protools", 0)
    lab.resolve(records[-1], first_replica=other)
    lab.disarm("generator")
    died.append(back_up(before))
    # c. Between the generator's success and the mail.
    before = lab.stack.restarts
    lab.arm("protools", {"point": "after_record", "action": "crash"}, replicas=[0])
    records.append(lab.submit(_name("kill-between"), replica=0, wait=10))
    lab.resolve(records[-1], first_replica=other)
    died.append(back_up(before))
    generated = [
        sum(
            1
            for a in _attempts(lab, r.workflow_id, "generate_password")
            if a["type"] == "StepSucceeded"
        )
        for r in records
    ]
    return [
        _all_told(records),
        Check(
            "a protools process died at each of the three steps",
            all(died),
            f"{died}, {lab.stack.restarts - first_restarts} restarts",
        ),
        Check("one generate success recorded per workflow", generated == [1, 1, 1], f"{generated}"),
    ]


# --- 5b: a protools replica killed mid-call at the deadline, under leases shorter than calls ---

# A deadline shorter than a lease, a lease shorter than a call, a call timeout longer than the
# call: a replica killed at the deadline leaves a claim that outlives the deadline.
DEADLINE_KILL_SETTINGS = {
    "METALLICA_WORKFLOW_DEADLINE": "1",
    "METALLICA_LEASE_SECONDS": "1.5",
    "METALLICA_CALL_TIMEOUT": "6",
}
SLOW_CALL_MS = 4000  # longer than the lease and than the deadline


def _killed_at_the_deadline(lab: Lab) -> list[Check]:
    """The generator commits, then answers only after the workflow's deadline and after the
    caller's lease would have run out. (a) Nobody dies: the caller must keep its lease and
    record the success, past the deadline. (b) The caller is SIGKILLed at the deadline, its
    call in flight and the password committed: whoever takes over finds an attempt claimed
    and never recorded, so the step is in doubt and must be asked again, not failed."""
    other = 1 % lab.replicas
    slow_after_commit = {
        "point": "after_persist",
        "action": "delay",
        "delay_ms": SLOW_CALL_MS,
        "attempt": 1,
    }
    deadline = float(DEADLINE_KILL_SETTINGS["METALLICA_WORKFLOW_DEADLINE"])
    with lab.settings("protools", DEADLINE_KILL_SETTINGS):
        lab.settle()
        lab.arm("generator", slow_after_commit)
        slow = lab.submit(_name("slow-call"), replica=0, wait=15)
        lab.resolve(slow, first_replica=0)
        lab.disarm("generator")

        before = lab.stack.restarts
        lab.arm("generator", slow_after_commit)
        killed = lab.new_record(_name("killed"))
        submitted = time.monotonic()
        lab.post(killed, replica=0, wait=0)
        committed = _eventually(lambda: lab.has_password(killed.username), seconds=5)
        time.sleep(max(0.0, submitted + deadline - time.monotonic()))  # the fault's timing
        lab.stack.kill("protools", 0)
        lab.resolve(killed, first_replica=other)
        lab.disarm("generator")
        restarted = _eventually(lambda: lab.stack.restarts > before, seconds=15)
        lab.stack.wait_healthy(lab.stack.members["protools"][0])
    slow_attempts = _attempts(lab, slow.workflow_id, "generate_password")
    killed_attempts = _attempts(lab, killed.workflow_id, "generate_password")
    succeeded = [a for a in killed_attempts if a["type"] == "StepSucceeded"]
    return [
        _all_told([slow, killed]),
        Check(
            "a call slower than its lease kept it: one attempt, recorded past the deadline",
            [(a["type"], a["attempt"]) for a in slow_attempts] == [("StepSucceeded", 1)],
            f"{[(a['type'], a['attempt']) for a in slow_attempts]}",
        ),
        Check(
            "the caller died at the deadline after the generator committed",
            committed and restarted,
            f"committed: {committed}, restarted: {restarted}",
        ),
        Check(
            "the takeover asked the unrecorded attempt again and got the stored password",
            len(succeeded) == 1 and succeeded[0]["attempt"] >= 2,
            f"{[(a['type'], a['attempt'], a.get('reason')) for a in killed_attempts]}",
        ),
    ]


# --- 6: the generator crashes between commit and answer; PostgreSQL restarts --------------------


def _eventually(condition: Callable[[], bool], *, seconds: float) -> bool:
    """Whether ``condition`` holds within ``seconds`` (the supervisor restarts asynchronously)."""
    until = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > until:
            return False
        time.sleep(0.1)
    return True


def _postmaster_start(url: str) -> str:
    with psycopg.connect(url, connect_timeout=5) as connection:
        row = connection.execute("SELECT pg_postmaster_start_time()::text").fetchone()
    return str(row[0]) if row else ""


def _crash_and_database_restart(lab: Lab) -> list[Check]:
    restarts = lab.stack.restarts
    lab.arm("generator", {"point": "after_persist", "action": "crash", "attempt": 1})
    crashed = [lab.submit(_name("crash"), replica=0, wait=25)]
    lab.resolve_all(crashed)
    lab.disarm("generator")
    restarted = _eventually(lambda: lab.stack.restarts > restarts, seconds=10)
    first = _attempts(lab, crashed[0].workflow_id, "generate_password")[:1]
    checks = [
        _all_told(crashed),
        Check(
            "the generator died after its commit; the retry got the stored password",
            restarted and [a["type"] for a in first] == ["StepAttemptFailed"],
            f"first attempt: {first[0]['reason'] if first else '-'}",
        ),
    ]
    cluster = lab.config.cluster
    if cluster is None:
        reason = (
            "SQLite: no database server" if lab.config.backend == "sqlite" else "server not ours"
        )
        checks.append(Check(f"PostgreSQL restart skipped ({reason})", True))
        return checks
    records: list[ClientRecord] = []

    def load() -> None:
        for index in range(12):
            records.append(lab.submit(_name("pgrestart"), replica=index, wait=1))
            time.sleep(0.4)

    booted = _postmaster_start(cluster.url)
    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(1.5)
    cluster.restart_immediate()
    loader.join()
    lab.resolve_all(records)
    refused = sum(1 for r in records if r.statuses[:1] not in ([202], [200]))
    checks += [
        _all_told(records),
        Check(
            "PostgreSQL restarted mid-run; the services reconnected by themselves",
            _postmaster_start(cluster.url) != booted,
            f"{refused} of {len(records)} first requests refused while it restarted",
        ),
    ]
    return checks


# --- 7: concurrent duplicates ----------------------------------------------------------------


def _poster(lab: BaseLab, record: ClientRecord, replica: int) -> Callable[[], ClientRecord]:
    return lambda: lab.post(record, replica=replica, wait=25)


def _duplicates(lab: BaseLab) -> list[Check]:
    username, key = _name("dup"), f"dup-{uuid.uuid4().hex[:8]}"
    twins = [lab.new_record(username, key) for _ in range(20)]
    lab.in_parallel([_poster(lab, record, index) for index, record in enumerate(twins)])
    lab.resolve_all(twins)
    answers = {(r.told, r.workflow_id, r.password) for r in twins}
    rivals_name = _name("rival")
    rivals = [lab.new_record(rivals_name), lab.new_record(rivals_name)]
    lab.in_parallel([_poster(lab, record, index) for index, record in enumerate(rivals)])
    lab.resolve_all(rivals)
    outcomes = sorted((r.told, r.error or "") for r in rivals)
    return [
        Check(
            "20 identical submissions: one workflow, 20 identical answers",
            len(answers) == 1 and twins[0].told == OK,
            f"{len(answers)} distinct",
        ),
        Check(
            "two keys, one username: one wins, the other username-taken",
            outcomes == [(FAILED, "username-taken"), (OK, "")],
            f"{outcomes}",
        ),
    ]


# --- 7b: a burst on idle replicas --------------------------------------------------------------


BURST_USERNAMES = 30  # two keys each: 60 commands, sent at the same instant
BURST_WAIT = 10.0  # each asks protools to wait this long for its outcome


def _burst(lab: Lab) -> list[Check]:
    """60 commands at once on idle replicas: a burst is queued briefly, never refused."""
    records = [
        lab.new_record(username)
        for username in (_name("burst") for _ in range(BURST_USERNAMES))
        for _ in range(2)
    ]
    elapsed: list[float] = [0.0] * len(records)

    def timed_post(index: int) -> Callable[[], ClientRecord]:
        def post() -> ClientRecord:
            started = time.monotonic()
            lab.post(records[index], replica=index, wait=BURST_WAIT)
            elapsed[index] = time.monotonic() - started
            return records[index]

        return post

    lab.in_parallel([timed_post(index) for index in range(len(records))])
    refused = [status for r in records for status in r.statuses if status in (429, 503)]
    answered = sum(r.told != UNKNOWN for r in records)
    lab.resolve_all(records, resend=False)
    winners = {r.username for r in records if r.told == OK}
    taken = sorted({r.error or "" for r in records if r.told == FAILED})
    slowest = max(elapsed)
    return [
        Check(
            "no command refused",
            not refused,
            f"{len(refused)} of {len(records)} refused "
            f"({dict(Counter(code for r in records for code in r.refusals))})",
        ),
        Check(
            "each answered with its outcome within its Prefer: wait",
            answered == len(records) and slowest <= BURST_WAIT + 1,
            f"{answered} of {len(records)} answered, slowest {slowest * 1000:.0f} ms",
        ),
        Check(
            "one password per username, the other key told username-taken",
            len(winners) == BURST_USERNAMES and taken == ["username-taken"],
            f"{len(winners)} passwords, other outcomes {taken}",
        ),
    ]


# --- 8: wire faults between protools and the services ----------------------------------------


WIRE_TOXICS: list[tuple[str, Toxic]] = [
    ("reset_peer", ResetPeer()),
    ("timeout", Timeout()),
    ("limit_data", LimitData(bytes=64)),
    ("latency 2x call timeout", Latency(latency_ms=int(CALL_TIMEOUT * 2000))),
]


def _wire_faults(lab: Lab) -> list[Check]:
    records: list[ClientRecord] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            records.append(lab.submit(_name("wire"), replica=len(records), wait=0.5))
            stop.wait(0.3)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        for _, toxic in WIRE_TOXICS:
            lab.poison("generator", toxic)
            lab.poison("mailer", toxic)
            time.sleep(lab.config.wire_fault_seconds)
            lab.cure("generator")
            lab.cure("mailer")
    finally:
        stop.set()
        loader.join()
        lab.cure("generator")
        lab.cure("mailer")
    lab.resolve_all(records, resend=False)
    reasons = sorted(
        {
            attempt["reason"]
            for record in records
            for step in ("generate_password", "send_mail")
            for attempt in _attempts(lab, record.workflow_id, step)
            if attempt["type"] == "StepAttemptFailed"
        }
    )
    return [
        _all_told(records),
        Check("clients never resent", all(r.posts == 1 for r in records)),
        Check(
            "retries saw the faults",
            {"timeout", "reset"} <= set(reasons),
            f"retry reasons: {', '.join(reasons)}",
        ),
    ]


# --- 10-13: network overload, against the lab's own capacity ---------------------------------


def _overload(measure: Callable[[Lab], overload.OverloadRun]) -> Callable[[Lab], list[Check]]:
    def run(lab: Lab) -> list[Check]:
        calibration = overload.calibrate(lab)
        run = measure(lab)
        measured = run.measured
        saved = overload.save(run, lab.data_dir)
        checks = [
            Check(
                "capacity measured first",
                calibration.capacity > 0,
                f"C = {calibration.capacity:g} wf/s, unloaded p99 "
                f"{calibration.unloaded_p99_ms:g} ms; probes: {calibration.probes}",
            )
        ]
        for name, held in measured.bounds.items():
            target = "target met" if measured.targets.get(name) else "target NOT met"
            checks.append(Check(name, held, target))
        figures = ", ".join(f"{key}={value}" for key, value in measured.figures.items())
        checks.append(Check("figures", True, figures))
        checks.append(Check("saved", True, ", ".join(str(path) for path in saved)))
        return checks

    return run


SCENARIOS: dict[str, Scenario[Lab]] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "timeout-before-persist",
            "Timeout, late success, retry before persistence",
            "generator slow before persisting (every first attempt)",
            _slow_generator("before_persist"),
        ),
        Scenario(
            "timeout-during-persist",
            "Timeout, retry during persistence",
            "generator slow inside its open transaction",
            _slow_generator("during_persist"),
        ),
        Scenario(
            "timeout-after-persist",
            "Timeout, retry after persistence",
            "generator's answer lost after its commit",
            _slow_generator("after_persist"),
        ),
        Scenario(
            "generator-down",
            "Generator down",
            "every generator replica stopped",
            _service_down("generator"),
            slow=True,
        ),
        Scenario(
            "mailer-down",
            "Mail-sender down",
            "every mailer replica stopped",
            _service_down("mailer"),
            slow=True,
        ),
        Scenario(
            "protools-killed",
            "Protools replica killed at each step",
            "SIGKILL after accept, mid-call, between steps",
            _protools_killed,
        ),
        Scenario(
            "killed-at-deadline",
            "Protools replica killed mid-call at the deadline",
            "SIGKILL at the deadline, call slower than the lease, password committed",
            _killed_at_the_deadline,
        ),
        Scenario(
            "crash-and-db-restart",
            "Generator crash after commit; PostgreSQL restart",
            "generator SIGKILLed before answering; pg_ctl restart -m immediate",
            _crash_and_database_restart,
        ),
        Scenario(
            "concurrent-duplicates",
            "Concurrent duplicates",
            "20 same-key submissions; 2 keys for 1 username",
            _duplicates,
        ),
        Scenario(
            "burst",
            "A burst on idle replicas",
            "60 commands at the same instant (30 usernames, two keys each)",
            _burst,
        ),
        Scenario(
            "wire-faults",
            "Wire faults under load",
            "reset_peer, timeout, limit_data, latency on both hops",
            _wire_faults,
            slow=True,
        ),
        Scenario(
            "overload-2x",
            "Open-loop load at twice the capacity",
            "2xC for 60 s",
            _overload(overload.twice_capacity),
            slow=True,
            group="overload",
        ),
        Scenario(
            "overload-slow-generator",
            "Twice the capacity, slow generator",
            "2xC for 60 s, generator wire latency = half the call timeout",
            _overload(overload.slow_generator),
            slow=True,
            group="overload",
        ),
        Scenario(
            "overload-generator-down",
            "Generator down under half the capacity",
            "0.5xC, every generator replica stopped for 20 s",
            _overload(overload.generator_down),
            slow=True,
            group="overload",
        ),
        Scenario(
            "overload-recovery",
            "Recovery after overload",
            "2xC for 30 s, then 0.5xC for 30 s",
            _overload(overload.recovery),
            slow=True,
            group="overload",
        ),
    )
}
FAULT_SCENARIOS = [name for name, scenario in SCENARIOS.items() if scenario.group == "faults"]
OVERLOAD_SCENARIOS = [name for name, scenario in SCENARIOS.items() if scenario.group == "overload"]


def run_scenario(lab: AnyLab, scenario: Scenario[AnyLab]) -> ScenarioResult:
    """Run one scenario; never raises: a crash of the scenario itself is its result."""
    first = len(lab.records)
    started = time.monotonic()
    result = ScenarioResult(scenario.name, scenario.fault)
    try:
        lab.settle()  # what the previous scenario crashed is back before this one starts
        result.checks = scenario.run(lab)
    except Exception as error:  # a broken scenario is reported, and the others still run
        result.error = f"{type(error).__name__}: {error}"
    result.records = lab.records[first:]
    result.seconds = time.monotonic() - started
    try:
        result.report = lab.check(result.records)
    except Exception as error:
        result.error = (result.error or "") + f" checker: {type(error).__name__}: {error}"
    read_model = lab.read_model_check()
    if read_model is not None:
        ok, detail = read_model
        result.checks.append(Check("the workflows read model is the events' own", ok, detail))
    if lab.followers is not None:  # the log's followers, attached since the lab started
        ok, detail = lab.followers.verdict()
        result.checks.append(Check("the log's followers saw every event, in order", ok, detail))
    return result
