"""A local stack: N replicas of each service as real processes on 127.0.0.1.

Used by ``metallica up``, ``metallica demo`` and the integration tests. Each process is
``python -m metallica serve <service>`` with its own environment; the stack waits for every
``/healthz``, can kill (SIGKILL) and restart one replica, and stops only the processes it started.
Unless told otherwise, the generators get the key file of the data dir (created on first use).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from metallica.config import CALLEE_NAMES, PROTOOLS
from metallica.listeners import PortReservation
from metallica.password_generator.sealing import GeneratorKeyring
from metallica.protools.sealing import ProtoolsKeyring
from metallica.sealing import Keyring

SERVICES = (*CALLEE_NAMES, PROTOOLS)  # in the order they start: the callees first
# With a base port, protools listens on base, the generators on base+100, the mailers on base+200
# (and the benchmark's floor, when asked for, on base+300).
PORT_OFFSETS = {"protools": 0, "generator": 100, "mailer": 200, "floor": 300}
# The services that keep secrets at rest, and the key ring each one seals them with.
KEYRINGS: dict[str, type[Keyring]] = {"generator": GeneratorKeyring, "protools": ProtoolsKeyring}


@dataclass
class Replica:
    """One service process; its port is reserved by the stack for the stack's whole life, and
    each start hands the process a listening socket on it (see :mod:`metallica.listeners`)."""

    service: str
    index: int
    reservation: PortReservation
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    stopped_on_purpose: bool = False

    @property
    def port(self) -> int:
        return self.reservation.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index + 1}"


def _pid(answer: httpx.Response) -> int | None:
    """The process id a ``/healthz`` answer names (None if it names none)."""
    try:
        pid = answer.json().get("pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


def _tail(path: Path, lines: int = 20) -> str:
    """The last lines of a replica's log, for the error that says it died (CI keeps no file)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(unreadable: {error})"


@dataclass
class LocalStack:
    """The three services, ``replicas`` of each, with per-service databases under ``data_dir``.

    ``database_urls`` maps a service to its database URL; by default each gets a SQLite file.
    ``route`` gives the URL protools uses for a generator or mailer replica (a fault proxy in
    front of it, say); by default its own URL. With ``supervise``, a replica that dies without
    being stopped is started again, as a container runtime's restart policy would, and
    ``report`` (if given) is told at once, then again when the replica answers.
    """

    data_dir: Path
    api_token: str  # the clients' (the client named "default" at protools)
    replicas: int = 1
    database_urls: Mapping[str, str] = field(default_factory=dict)
    base_port: int | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    route: Callable[[Replica], str] | None = None
    supervise: bool = False
    services: tuple[str, ...] = SERVICES
    members: dict[str, list[Replica]] = field(default_factory=dict)
    # protools' own credential towards the generator and the mailer: no client holds it.
    service_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    restarts: int = 0
    report: Callable[[str], None] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _supervisor: threading.Thread | None = None
    _closing: threading.Event = field(default_factory=threading.Event)

    @property
    def maildir(self) -> Path:
        return self.data_dir / "maildir"

    def database_url(self, service: str) -> str:
        return self.database_urls.get(service) or f"sqlite:///{self.data_dir / (service + '.db')}"

    def urls(self, service: str) -> list[str]:
        return [replica.url for replica in self.members[service]]

    def _routes(self, service: str) -> list[str]:
        route = self.route or (lambda replica: replica.url)
        return [route(replica) for replica in self.members[service]]

    def _plan(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        for service in self.services:
            offset = PORT_OFFSETS[service]
            self.members[service] = []
            for index in range(self.replicas):
                port = self.base_port + offset + index if self.base_port else 0
                self.members[service].append(
                    Replica(
                        service,
                        index,
                        PortReservation("127.0.0.1", port),
                        {},
                        self.data_dir / "logs" / f"{service}-{index + 1}.log",
                    )
                )
        common = {
            "METALLICA_MAILDIR": str(self.maildir),
            "METALLICA_GENERATOR_URLS": ",".join(self._routes("generator")),
            "METALLICA_MAILER_URLS": ",".join(self._routes("mailer")),
            **self.extra_env,
        }
        for service, replicas in self.members.items():
            for replica in replicas:
                replica.env = {
                    **common,
                    **self._credentials(service),
                    "METALLICA_DATABASE_URL": self.database_url(service),
                    **self.service_env.get(service, {}),
                }
                if service == "protools":
                    replica.env.setdefault("METALLICA_REPLICA_ID", replica.name)
                    # The stack's one client is its operator: it reads the whole log.
                    replica.env.setdefault("METALLICA_LOG_READERS", "default")
                keyring = KEYRINGS.get(service)
                if keyring is not None and not (
                    replica.env.get(keyring.spec.variable)
                    or replica.env.get(keyring.spec.file_variable)
                ):  # a key of this data dir's own, kept across restarts of the stack
                    replica.env[keyring.spec.file_variable] = str(keyring.local_file(self.data_dir))

    def _credentials(self, service: str) -> dict[str, str]:
        """Clients' token to protools (and the floor); protools' own, distinct, to the others."""
        if service in CALLEE_NAMES:
            return {"METALLICA_SERVICE_TOKENS": f"protools:{self.service_token}"}
        return {
            "METALLICA_API_TOKEN": self.api_token,
            "METALLICA_SERVICE_TOKEN": self.service_token,
        }

    def generator_keys(self) -> GeneratorKeyring:
        """The key ring the generators run with (the checker verifies digests with it)."""
        return GeneratorKeyring.from_env(self.members["generator"][0].env)

    def protools_keys(self) -> ProtoolsKeyring:
        """The key ring protools seals passwords with (the checker opens its events with it)."""
        return ProtoolsKeyring.from_env(self.members["protools"][0].env)

    def start(self, timeout: float = 30.0) -> None:
        self._plan()
        everyone = [replica for service in self.services for replica in self.members[service]]
        for replica in everyone:  # all at once: protools retries until the others are up
            self._spawn(replica)
        for replica in everyone:
            self.wait_healthy(replica, timeout)
        if self.supervise:
            self._supervisor = threading.Thread(
                target=self._watch, name="stack-supervisor", daemon=True
            )
            self._supervisor.start()

    def _watch(self) -> None:
        """Start again every replica that died without being stopped."""
        while not self._closing.wait(0.1):
            for replica in [r for replicas in self.members.values() for r in replicas]:
                with self._lock:
                    dead = replica.process is not None and replica.process.poll() is not None
                    if not dead or replica.stopped_on_purpose or self._closing.is_set():
                        continue
                    self.restarts += 1
                    assert replica.process is not None
                    self._say(
                        f"{replica.name} exited with status {replica.process.returncode}; "
                        f"starting it again (see {replica.log_path})"
                    )
                    self._spawn(replica)
                try:
                    self.wait_healthy(replica)
                except RuntimeError as error:
                    self._say(str(error))
                    continue  # it died again: the next round starts it again
                self._say(f"{replica.name} is back at {replica.url}")

    def _say(self, line: str) -> None:
        if self.report is not None:
            self.report(line)

    def _spawn(self, replica: Replica) -> None:
        replica.stopped_on_purpose = False
        env = {key: value for key, value in os.environ.items() if not key.startswith("METALLICA_")}
        env |= replica.env
        env["METALLICA_PARENT_PID"] = str(os.getpid())  # the child dies with its stack
        log = open(replica.log_path, "ab")  # noqa: SIM115 (the child process owns it)
        listener = replica.reservation.listener()
        try:
            replica.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "metallica",
                    "serve",
                    replica.service,
                    "--fd",
                    str(listener.fileno()),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(listener.fileno(),),
            )
        finally:
            listener.close()  # the child has its own copy: the port now listens in it alone
            log.close()

    def wait_healthy(self, replica: Replica, timeout: float = 30.0) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            assert replica.process is not None
            if replica.process.poll() is not None:
                raise RuntimeError(
                    f"{replica.name} exited with {replica.process.returncode}; "
                    f"the end of {replica.log_path}:\n{_tail(replica.log_path)}"
                )
            try:
                answer = httpx.get(replica.url + "/healthz", timeout=1)
            except httpx.HTTPError:
                pass
            else:
                if answer.status_code == 200 and _pid(answer) == replica.process.pid:
                    return
                if answer.status_code == 200:  # someone else answers on our port
                    raise RuntimeError(
                        f"{replica.name}: another process (pid {_pid(answer)}) answers at "
                        f"{replica.url}, not the one started (pid {replica.process.pid})"
                    )
            time.sleep(0.05)
        raise RuntimeError(f"{replica.name} not healthy after {timeout} s; see {replica.log_path}")

    def kill(self, service: str, index: int = 0) -> None:
        """SIGKILL one replica, as a crash would."""
        replica = self.members[service][index]
        with self._lock:
            if replica.process is not None and replica.process.poll() is None:
                replica.process.send_signal(signal.SIGKILL)
                replica.process.wait()

    def stop_replica(self, service: str, index: int = 0, timeout: float = 10.0) -> None:
        replica = self.members[service][index]
        with self._lock:
            replica.stopped_on_purpose = True
        if replica.process is not None and replica.process.poll() is None:
            replica.process.terminate()
            try:
                replica.process.wait(timeout)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()

    def start_replica(self, service: str, index: int = 0, timeout: float = 30.0) -> None:
        """Start a replica that was stopped (or died) again, and wait until it is healthy."""
        replica = self.members[service][index]
        with self._lock:
            if replica.process is None or replica.process.poll() is not None:
                self._spawn(replica)
        self.wait_healthy(replica, timeout)

    def restart(self, service: str, index: int = 0, timeout: float = 30.0) -> None:
        self.stop_replica(service, index)
        self.start_replica(service, index, timeout)

    def stop(self) -> None:
        """Stop every process this stack started (TERM, then KILL after 10 s)."""
        self._closing.set()
        if self._supervisor is not None:
            self._supervisor.join()
        for service in reversed(self.services):
            for index in range(len(self.members.get(service, []))):
                self.stop_replica(service, index)
        for replicas in self.members.values():
            for replica in replicas:
                replica.reservation.close()

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
