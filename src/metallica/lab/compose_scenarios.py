"""The brief's cases against the Compose stack, through its published ports only.

The cases that need nothing but a lab's common verbs are the ones the local lab runs
(:mod:`metallica.lab.scenarios`: the generator slow before, during and after it persists, the
generator down, duplicates); the others are Compose's own: a protools container killed
mid-call, and faults the TCP proxy cannot make, at the packet level: a protools container cut
from PostgreSQL, a generator container taken off the network, latency and loss on the
generators' links.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from metallica.lab.compose import ComposeLab, Container
from metallica.lab.scenarios import (
    Check,
    Scenario,
    _all_told,
    _attempts,
    _duplicates,
    _name,
    _service_down,
    _slow_generator,
    _time,
)
from metallica.load.records import OK, UNKNOWN, ClientRecord

FAULT_SECONDS = 8.0  # how long a network fault lasts while commands arrive
COMMAND_GAP = 0.3  # seconds between two commands of the load that runs through a fault
HEAL_BOUND = 15.0  # every workflow complete within this many seconds of the fault's end


def _nominal(lab: ComposeLab) -> list[Check]:
    records = [lab.submit(_name("nominal"), replica=index, wait=10) for index in range(4)]
    lab.resolve_all(records, resend=False)
    answered = [r.statuses[:1] == [200] for r in records]
    return [
        _all_told(records),
        Check("each answered 200 with its password in one call", all(answered), f"{answered}"),
    ]


def _no_username(lab: ComposeLab) -> list[Check]:
    response = lab._http.post(
        lab.protools_url() + "/v1/workflows/password-creation",
        json={},
        headers={"Idempotency-Key": _name("nobody")},
    )
    kind = response.headers.get("content-type", "")
    return [
        Check(
            "a command without a username: 422 problem+json",
            response.status_code == 422 and kind.startswith("application/problem+json"),
            f"{response.status_code} {kind}",
        )
    ]


def _under_load(lab: ComposeLab, prefix: str, fault: Callable[[], None]) -> list[ClientRecord]:
    """Commands every :data:`COMMAND_GAP` seconds over every protools replica while ``fault``
    runs (it returns when the fault has healed), then a few more; each client then learns its
    outcome, resending the same command only if it never heard of its workflow."""
    records: list[ClientRecord] = []
    senders: list[threading.Thread] = []
    stop = threading.Event()

    def load() -> None:  # each command in its own thread: one stuck on a cut replica holds no other
        while not stop.is_set():
            record = lab.new_record(_name(prefix))
            records.append(record)
            index = len(records)
            sender = threading.Thread(
                target=lab.post, args=(record,), kwargs={"replica": index, "wait": 0.5}
            )
            senders.append(sender)
            sender.start()
            stop.wait(COMMAND_GAP)

    loader = threading.Thread(target=load, name="compose-load")
    loader.start()
    try:
        fault()
        stop.wait(1.0)
    finally:
        stop.set()
        loader.join(timeout=60)
        for sender in senders:
            sender.join(timeout=60)  # a post gives up after its wait + 10 s
    return records


def _after_the_fault(
    lab: ComposeLab, records: list[ClientRecord], healed: float
) -> tuple[float, int]:
    """Seconds from ``healed`` (wall clock) to the last workflow's completion, and how many
    attempts failed on the way (the fault's mark on the workflows)."""
    last, failed = healed, 0
    for record in records:
        if record.workflow_id:
            for event in lab.events(record.workflow_id):
                if event["type"] == "WorkflowCompleted":
                    last = max(last, _time(event))
                failed += event["type"] == "StepAttemptFailed"
    return last - healed, failed


def _heal_checks(lab: ComposeLab, records: list[ClientRecord], healed: float) -> list[Check]:
    lab.resolve_all(records, timeout=90)
    after, failed = _after_the_fault(lab, records, healed)
    told = {outcome: sum(r.told == outcome for r in records) for outcome in (OK, UNKNOWN)}
    return [
        _all_told(records),
        Check(
            f"every workflow complete within {HEAL_BOUND:g} s of the fault's end",
            after <= HEAL_BOUND,
            f"{len(records)} commands ({told[OK]} told ok), the last completed "
            f"{after:.1f} s after it healed; {failed} attempts failed on the way; "
            f"{sum(r.posts > 1 for r in records)} clients resent (never told of a workflow)",
        ),
    ]


def _protools_killed_mid_call(lab: ComposeLab) -> list[Check]:
    """The generator holds protools-1's first call 3 s; protools-1 is killed meanwhile; the
    other replica takes the work over once the lease (3 s) has passed."""
    victim = lab.stack.containers("protools")[0]
    lab.arm(
        "generator", {"point": "before_persist", "action": "delay", "delay_ms": 3000, "attempt": 1}
    )
    try:
        record = lab.submit(_name("killed"), replica=0, wait=0)
        time.sleep(0.5)
        lab.stack.docker("kill", victim.id)
        lab.resolve(record, first_replica=1, timeout=60)
    finally:
        lab.disarm("generator")
        lab.stack.start("protools")
        lab.settle()
    attempts = _attempts(lab, record.workflow_id, "generate_password")
    succeeded = [a for a in attempts if a["type"] == "StepSucceeded"]
    replicas = sorted({str(a.get("replica")) for a in attempts})
    return [
        _all_told([record]),
        Check("one generate success recorded", len(succeeded) == 1, f"attempts on {replicas}"),
    ]


def _protools_cut_from_postgres(lab: ComposeLab) -> list[Check]:
    victim = lab.stack.containers("protools")[0]
    (postgres,) = lab.stack.containers("postgres")
    healed = [0.0]

    def fault() -> None:
        with lab.partitioned(victim, postgres):
            time.sleep(FAULT_SECONDS)
        healed[0] = time.time()

    records = _under_load(lab, "cut-pg", fault)
    return _heal_checks(lab, records, healed[0])


def _generator_off_the_network(lab: ComposeLab) -> list[Check]:
    victim: Container = lab.stack.containers("generator")[0]
    healed = [0.0]

    def fault() -> None:
        lab.stack.disconnect(victim)
        try:
            time.sleep(FAULT_SECONDS)
        finally:
            lab.stack.connect(victim, aliases=("generator",))
        healed[0] = time.time()

    records = _under_load(lab, "cut-gen", fault)
    return _heal_checks(lab, records, healed[0])


def _generators_lossy(lab: ComposeLab) -> list[Check]:
    generators = lab.stack.containers("generator")
    healed, how = [0.0], [""]

    def fault() -> None:
        with contextlib.ExitStack() as faults:
            for container in generators:
                how[0] = faults.enter_context(lab.slow_lossy_link(container))
            time.sleep(FAULT_SECONDS)
        healed[0] = time.time()

    records = _under_load(lab, "lossy", fault)
    return [*_heal_checks(lab, records, healed[0]), Check("the fault", True, how[0])]


_IN_ORDER: list[Scenario[ComposeLab]] = [
    Scenario("nominal", "Nominal", "none: 4 commands over the replicas", _nominal),
    Scenario("no-username", "No username", "a command without a username", _no_username),
    Scenario(
        "same-username-twice",
        "The same username twice",
        "20 same-key submissions; 2 keys for 1 username",
        _duplicates,
    ),
    *(
        Scenario(
            f"timeout-{when}-persist",
            f"Timeout {when} persistence",
            fault,
            _slow_generator(point),
        )
        for when, point, fault in (
            ("before", "before_persist", "generator slow before persisting"),
            ("during", "during_persist", "generator slow inside its open transaction"),
            ("after", "after_persist", "generator's answer lost after its commit"),
        )
    ),
    Scenario(
        "generator-down",
        "Generator down",
        "docker compose stop generator while commands arrive, then start",
        _service_down("generator"),
    ),
    Scenario(
        "protools-killed",
        "A protools replica killed mid-call",
        "docker kill of protools-1 while its generator call is in flight",
        _protools_killed_mid_call,
    ),
    Scenario(
        "protools-cut-from-postgres",
        "protools cut from PostgreSQL",
        f"iptables DROP between protools-1 and PostgreSQL for {FAULT_SECONDS:g} s",
        _protools_cut_from_postgres,
    ),
    Scenario(
        "generator-off-the-network",
        "A generator off the network",
        f"docker network disconnect of generator-1 for {FAULT_SECONDS:g} s",
        _generator_off_the_network,
    ),
    Scenario(
        "generators-lossy",
        "Latency and loss to the generators",
        f"latency and 20 % loss on every generator's link for {FAULT_SECONDS:g} s (tc)",
        _generators_lossy,
    ),
]
COMPOSE_SCENARIOS = {scenario.name: scenario for scenario in _IN_ORDER}
