"""The brief's cases against the Compose stack, through its published ports only.

The cases that need nothing but a lab's common verbs are the ones the local lab runs
(:mod:`metallica.lab.scenarios`: the generator slow before, during and after it persists, the
generator down, duplicates); the others are Compose's own: a protools container killed
mid-call, and faults the TCP proxy cannot make, at the packet level: a protools container cut
from PostgreSQL, a generator container taken off the network, latency and loss on the
generators' links.
"""

from __future__ import annotations

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
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            records.append(lab.submit(_name(prefix), replica=len(records), wait=0.5))
            stop.wait(COMMAND_GAP)

    loader = threading.Thread(target=load, name="compose-load")
    loader.start()
    try:
        fault()
        stop.wait(1.0)
    finally:
        stop.set()
        loader.join(timeout=60)
    return records


def _completed_after(lab: ComposeLab, records: list[ClientRecord], healed: float) -> float:
    """Seconds from ``healed`` (wall clock) to the last workflow's completion."""
    from metallica.lab.scenarios import _time

    last = healed
    for record in records:
        if record.workflow_id:
            for event in lab.events(record.workflow_id):
                if event["type"] == "WorkflowCompleted":
                    last = max(last, _time(event))
    return last - healed


def _heal_checks(lab: ComposeLab, records: list[ClientRecord], healed: float) -> list[Check]:
    lab.resolve_all(records, timeout=90)
    after = _completed_after(lab, records, healed)
    told = {outcome: sum(r.told == outcome for r in records) for outcome in (OK, UNKNOWN)}
    return [
        _all_told(records),
        Check(
            f"every workflow complete within {HEAL_BOUND:g} s of the fault's end",
            after <= HEAL_BOUND,
            f"{len(records)} commands ({told[OK]} told ok), the last completed "
            f"{after:.1f} s after it healed; {sum(r.posts > 1 for r in records)} resent",
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
    healed = [0.0]

    def fault() -> None:
        import contextlib

        with contextlib.ExitStack() as faults:
            for container in generators:
                faults.enter_context(lab.netem(container, "delay", "300ms", "50ms", "loss", "10%"))
            time.sleep(FAULT_SECONDS)
        healed[0] = time.time()

    records = _under_load(lab, "netem", fault)
    return _heal_checks(lab, records, healed[0])


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
        f"tc netem delay 300 ms +-50 ms, loss 10 % on every generator for {FAULT_SECONDS:g} s",
        _generators_lossy,
    ),
]
COMPOSE_SCENARIOS = {scenario.name: scenario for scenario in _IN_ORDER}
