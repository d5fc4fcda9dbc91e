"""The lab: a stack to break, clients that remember what they were told, and the checker.

A :class:`Lab` starts the three services (N replicas each) with fault injection enabled, a fault
proxy in front of every generator and mailer replica, and a supervisor that restarts what
crashes. Scenarios drive it through :meth:`Lab.submit` (a client command) and
:meth:`Lab.resolve` (the client learning the outcome, without resending), arm faults, stop and
start services, and finally :meth:`Lab.check` the invariants.
"""

from __future__ import annotations

import abc
import contextlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from metallica.faultproxy import ProxyThread, Toxic
from metallica.lab.followers import LogFollowers
from metallica.load.checker import Report, check, read_snapshot
from metallica.load.pg_cluster import ThrowawayCluster
from metallica.load.records import FAILED, OK, UNKNOWN, ClientRecord
from metallica.password_generator.sealing import GeneratorKeyring
from metallica.problems import code_of
from metallica.protools import projection
from metallica.protools.sealing import ProtoolsKeyring
from metallica.stack import LocalStack, Replica
from metallica.storage import open_database

# Fast, observable settings: a short call timeout so timeouts show quickly, short leases so a
# dead replica's work moves in seconds, a backoff cap of 5 s so a service that comes back is
# used within 5 s (the product's default cap is 10 s).
LAB_SETTINGS = {
    "METALLICA_CALL_TIMEOUT": "1",
    "METALLICA_CONNECT_TIMEOUT": "0.5",
    "METALLICA_RETRY_INITIAL": "0.1",
    "METALLICA_RETRY_MAX": "5",
    "METALLICA_LEASE_SECONDS": "3",
    "METALLICA_POLL_INTERVAL": "0.25",
    "METALLICA_WORKFLOW_DEADLINE": "120",
    "METALLICA_FAULTS": "1",
    "METALLICA_LOG_LEVEL": "WARNING",
    # Under the call timeout: a retry meeting its first attempt's open transaction hears
    # "in progress" before protools gives up on it.
    "METALLICA_DB_LOCK_TIMEOUT": "0.5",
}
CALL_TIMEOUT = 1.0
# 409 with Retry-After: another request with this key is being accepted; not an outcome.
IN_PROGRESS = "command-in-progress"
DEADLINE = 120.0


@dataclass
class LabConfig:
    replicas: int = 1
    data_dir: Path | None = None
    # Per-service database URLs (PostgreSQL); empty for SQLite files in the data dir.
    database_urls: Mapping[str, str] = field(default_factory=dict)
    # The cluster behind database_urls, when the lab may restart it (scenario 6).
    cluster: ThrowawayCluster | None = None
    down_seconds: float = 30.0
    wire_fault_seconds: float = 10.0
    log_level: str = "WARNING"  # the services'; DEBUG to look for secrets in every line

    @property
    def backend(self) -> str:
        return "postgres" if self.database_urls else "sqlite"


class BaseLab(abc.ABC):
    """What every lab does the same way: commands sent as a client would, each client's record
    of what it was told, and reads of the outcome. Each kind of lab (processes on this machine,
    :class:`Lab`; a Compose stack, :class:`metallica.lab.compose.ComposeLab`) says where
    protools' replicas answer, and how it arms faults, stops and starts a service and checks
    the invariants; the scenarios written against this class run on both."""

    def __init__(self, token: str) -> None:
        self.token = token
        # Followers of protools' log attached for the whole run, when this kind of lab has them.
        self.followers: LogFollowers | None = None
        self.records: list[ClientRecord] = []
        self._records_lock = threading.Lock()
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(40, connect=2)
        )

    @property
    @abc.abstractmethod
    def replicas(self) -> int:
        """How many protools replicas answer clients."""

    @property
    @abc.abstractmethod
    def down_seconds(self) -> float:
        """How long a scenario keeps a service down."""

    @abc.abstractmethod
    def protools_url(self, index: int = 0) -> str:
        """The base URL of protools' replica ``index`` (modulo :attr:`replicas`)."""

    @abc.abstractmethod
    def settle(self, timeout: float = 30.0) -> None:
        """Return once every replica of every service answers again."""

    @abc.abstractmethod
    def arm(
        self, service: str, fault: Mapping[str, Any], replicas: Iterable[int] | None = None
    ) -> None:
        """Arm a fault point on some (default: all) replicas of a service."""

    @abc.abstractmethod
    def disarm(self, service: str) -> None:
        """Disarm every fault point of a service."""

    @abc.abstractmethod
    def stop_service(self, service: str) -> None:
        """Stop every replica of ``service``."""

    @abc.abstractmethod
    def start_service(self, service: str) -> float:
        """Start every replica of ``service`` again; return when (wall clock) it is back."""

    @abc.abstractmethod
    def check(self, records: Iterable[ClientRecord] | None = None) -> Report:
        """The invariant checker's report on the stack's state, for ``records`` (default:
        every client's)."""

    def close_clients(self) -> None:
        self._http.close()

    def read_model_check(self) -> tuple[bool, str] | None:
        """Whether protools' workflows read model is the one its events give, and what
        differed; None where this lab cannot read protools' database."""
        return None

    # --- clients ----------------------------------------------------------------------------

    def new_record(self, username: str, key: str | None = None) -> ClientRecord:
        record = ClientRecord(key or f"lab-{uuid.uuid4().hex[:12]}", username)
        with self._records_lock:
            self.records.append(record)
        return record

    def post(self, record: ClientRecord, *, replica: int = 0, wait: float = 10.0) -> ClientRecord:
        """Send (or repeat) the client's command; note what it was told."""
        record.posts += 1
        try:
            response = self._http.post(
                self.protools_url(replica) + "/v1/workflows/password-creation",
                json={"username": record.username},
                headers={"Idempotency-Key": record.key, "Prefer": f"wait={wait:g}"},
                timeout=wait + 10,
            )
        except httpx.HTTPError as error:
            record.statuses.append(type(error).__name__)
            return record
        record.statuses.append(response.status_code)
        self._learn(record, response)
        return record

    def submit(
        self, username: str, *, key: str | None = None, replica: int = 0, wait: float = 10.0
    ) -> ClientRecord:
        return self.post(self.new_record(username, key), replica=replica, wait=wait)

    def _learn(self, record: ClientRecord, response: httpx.Response) -> None:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            return
        record.workflow_id = body.get("workflow_id", record.workflow_id)
        if response.status_code in (429, 503):  # the code, and the detail that says which limit
            detail = str(body.get("detail") or "")[:48]
            record.refusals.append(f"{code_of(body) or response.status_code}: {detail}")
        if response.status_code == 200 and body.get("status") == "completed":
            record.told, record.password = OK, body["password"]
        elif response.status_code == 200 and body.get("status") == "failed":
            record.told, record.error = FAILED, code_of(body.get("error") or {})
        elif (
            response.status_code in (409, 422)
            and record.told == UNKNOWN
            and code_of(body) != IN_PROGRESS  # the same command, still being accepted: later
        ):
            record.told, record.error = FAILED, code_of(body)

    def resolve(
        self,
        record: ClientRecord,
        *,
        timeout: float = 90.0,
        resend: bool = True,
        first_replica: int = 0,
    ) -> ClientRecord:
        """Learn the outcome: GET the workflow with ``Prefer: wait`` on any replica. A client that
        never learnt its workflow id (its request broke) repeats the same command, same key,
        when ``resend`` allows it."""
        until = time.monotonic() + timeout
        attempt = first_replica
        while record.told == UNKNOWN and time.monotonic() < until:
            replica, attempt = attempt, attempt + 1
            wait = max(1.0, min(25.0, until - time.monotonic()))
            if record.workflow_id is None:
                if not resend:
                    return record
                self.post(record, replica=replica, wait=wait)
                if record.told == UNKNOWN and record.workflow_id is None:
                    time.sleep(0.5)
                continue
            try:
                response = self._http.get(
                    f"{self.protools_url(replica)}/v1/workflows/{record.workflow_id}",
                    headers={"Prefer": f"wait={wait:g}"},
                    timeout=wait + 10,
                )
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            self._learn(record, response)
        return record

    def resolve_all(
        self, records: Iterable[ClientRecord], *, timeout: float = 90.0, resend: bool = True
    ) -> None:
        threads = [
            threading.Thread(
                target=self.resolve, args=(record,), kwargs={"timeout": timeout, "resend": resend}
            )
            for record in records
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def in_parallel(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """Run ``calls`` at once in threads; return their results in order."""
        results: list[Any] = [None] * len(calls)
        start = threading.Barrier(len(calls))

        def run(index: int) -> None:
            start.wait()
            results[index] = calls[index]()

        threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def events(self, workflow_id: str) -> list[dict[str, Any]]:
        response = self._http.get(f"{self.protools_url()}/v1/workflows/{workflow_id}/events")
        response.raise_for_status()
        events: list[dict[str, Any]] = response.json()["events"]
        return events


class Lab(BaseLab):
    def __init__(self, config: LabConfig, data_dir: Path) -> None:
        super().__init__(secrets.token_urlsafe(16))
        self.config = config
        self.data_dir = data_dir
        self.proxies = ProxyThread(seed=7)
        self.stack = LocalStack(
            data_dir,
            self.token,
            config.replicas,
            config.database_urls,
            extra_env={**LAB_SETTINGS, "METALLICA_LOG_LEVEL": config.log_level},
            route=self._proxy_for,
            supervise=True,
        )

    # --- life cycle -------------------------------------------------------------------------

    def _proxy_for(self, replica: Replica) -> str:
        port = self.proxies.add_proxy(replica.name, "127.0.0.1", replica.port)
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> Lab:
        self.proxies.start()
        try:
            self.stack.start()
            urls = self.stack.urls("protools")  # the replicas' proxies: they stay where they are
            self.followers = LogFollowers(
                lambda: urls, self.token, self.stack.database_url("protools")
            )
            self.followers.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.followers is not None:
            self.followers.stop()
        self.stack.stop()
        self.proxies.stop()
        self.close_clients()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every replica runs and answers (the supervisor restarts crashed ones)."""
        everyone = [replica for replicas in self.stack.members.values() for replica in replicas]
        until = time.monotonic() + timeout
        while any(r.process is None or r.process.poll() is not None for r in everyone):
            if time.monotonic() > until:
                raise RuntimeError("a replica did not come back")
            time.sleep(0.1)
        for replica in everyone:
            self.stack.wait_healthy(replica, max(1.0, until - time.monotonic()))

    @property
    def replicas(self) -> int:
        return self.config.replicas

    @property
    def down_seconds(self) -> float:
        return self.config.down_seconds

    def protools_url(self, index: int = 0) -> str:
        return self.stack.urls("protools")[index % self.replicas]

    # --- faults -----------------------------------------------------------------------------

    def arm(
        self, service: str, fault: Mapping[str, Any], replicas: Iterable[int] | None = None
    ) -> None:
        """Arm a fault point on some (default: all) replicas of a service."""
        for index in range(self.replicas) if replicas is None else replicas:
            response = self._http.post(
                self.stack.urls(service)[index] + "/v1/faults",
                json=dict(fault),
                headers=self._auth_for(service),
            )
            if response.status_code != 201:
                raise RuntimeError(f"arming {fault} on {service}-{index + 1}: {response.text}")

    def disarm(self, service: str) -> None:
        for url in self.stack.urls(service):
            with contextlib.suppress(httpx.HTTPError):  # a crashed one comes back unarmed
                self._http.delete(url + "/v1/faults", timeout=5, headers=self._auth_for(service))

    def _auth_for(self, service: str) -> dict[str, str]:
        """protools takes a client's token; the generator and the mailer, protools' own."""
        token = self.token if service == "protools" else self.stack.service_token
        return {"Authorization": f"Bearer {token}"}

    def secrets(self) -> list[str]:
        """Everything that must never show in a log: every password a client was told, the
        clients' and the services' tokens, the generator's keys."""
        found = [self.token, self.stack.service_token]
        found += [record.password for record in self.records if record.password]
        for replica in self.stack.members.get("generator", []):
            found += GeneratorKeyring.secrets_in(replica.env)
        for replica in self.stack.members.get("protools", []):
            found += ProtoolsKeyring.secrets_in(replica.env)
        return sorted(set(found))

    def logs(self) -> dict[Path, str]:
        """Every service log of the lab, by file."""
        return {
            path: path.read_text(encoding="utf-8", errors="replace")
            for path in sorted((self.data_dir / "logs").glob("*.log"))
        }

    def poison(self, service: str, toxic: Toxic) -> None:
        """Put a toxic on the wire from protools to every replica of ``service``."""
        for replica in self.stack.members[service]:
            self.proxies.add_toxic(replica.name, toxic)

    def cure(self, service: str) -> None:
        for replica in self.stack.members[service]:
            self.proxies.clear(replica.name)

    @contextlib.contextmanager
    def settings(self, service: str, env: Mapping[str, str]) -> Iterator[None]:
        """Run every replica of ``service`` with ``env`` added to its settings for the block
        (each is restarted into them, and back out of them afterwards)."""
        replicas = self.stack.members[service]
        saved = [dict(replica.env) for replica in replicas]
        try:
            for replica in replicas:
                replica.env.update(env)
                self.stack.restart(service, replica.index)
            yield
        finally:
            for replica, env_before in zip(replicas, saved, strict=True):
                replica.env = env_before
                self.stack.restart(service, replica.index)

    @property
    def generator_keys(self) -> GeneratorKeyring:
        """The generators' key ring (the checker verifies the stored digests with it)."""
        return self.stack.generator_keys()

    def has_password(self, username: str) -> bool:
        """Whether the generator holds a password for ``username`` yet."""
        database = open_database(self.stack.database_url("generator"), "generator", pool_size=1)
        try:
            with database.transaction(write=False) as tx:
                row = tx.fetch_one("get_password", username_key=username.lower())
        finally:
            database.close()
        return row is not None

    def stop_service(self, service: str) -> None:
        for index in range(self.replicas):
            self.stack.stop_replica(service, index)

    def start_service(self, service: str) -> float:
        """Start every replica again; return when (monotonic) the first one answered."""
        for index in range(self.replicas):
            self.stack.start_replica(service, index)
        return time.time()

    # --- reading back -----------------------------------------------------------------------

    def read_model_check(self) -> tuple[bool, str] | None:
        database = open_database(self.stack.database_url("protools"), "protools", pool_size=1)
        try:
            with database.transaction() as tx:
                found, _ = projection.compare(tx)
        finally:
            database.close()
        return found.identical, (
            f"{found.rows} workflows; {len(found.missing)} missing, {len(found.extra)} extra, "
            f"{len(found.changed)} changed (first: {(found.missing + found.changed)[:3]})"
        )

    def check(self, records: Iterable[ClientRecord] | None = None) -> Report:
        snapshot = read_snapshot(
            self.stack.database_url("protools"),
            self.stack.database_url("generator"),
            self.stack.maildir,
            generator_keys=self.generator_keys,
            protools_keys=self.stack.protools_keys(),
        )
        return check(snapshot, list(self.records if records is None else records))
