"""The lab against the Compose stack: the user's own environment, driven only from outside.

:class:`ComposeStack` runs ``docker compose`` on the checkout's ``docker-compose.yml`` with the
lab's override (``deploy/docker-compose.lab.yml``: fault points on, the lab's short timeouts,
the generators, protools and PostgreSQL published on ephemeral ports of 127.0.0.1, the Maildir
on a directory of the run), under a project name of its own, and reads back what Docker says of
its containers: their published ports, addresses and process ids. :class:`ComposeLab` is a
:class:`~metallica.lab.harness.BaseLab` on it: clients reach protools through its published
ports only, services are stopped and started, containers killed, and the network broken at
the packet level (``docker network disconnect``; ``iptables`` and ``tc netem`` run in a
container's network namespace by ``nsenter``, so the product's image carries no network tool).
The checker reads the stack's own PostgreSQL and Maildir.

Every ``docker`` command is bounded in time; :meth:`ComposeStack.down` removes the containers,
networks and volumes the run created, whatever happened.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from metallica.lab.followers import LogFollowers, ReplicasUnknown
from metallica.lab.harness import BaseLab
from metallica.load.checker import Report, check, read_snapshot
from metallica.load.records import ClientRecord
from metallica.password_generator.sealing import GeneratorKeyring
from metallica.protools.sealing import ProtoolsKeyring

COMPOSE_FILE = "docker-compose.yml"
LAB_OVERRIDE = "deploy/docker-compose.lab.yml"
SERVICE_PORT = 8000
POSTGRES_PORT = 5432
# The replicas the brief's author runs with.
REPLICAS = {"generator": 3, "mailer": 2, "protools": 2}
COMMAND_TIMEOUT = 120.0  # seconds any one docker command may take (builds excepted)
BUILD_TIMEOUT = 1200.0
UP_TIMEOUT = 180.0


class ComposeError(RuntimeError):
    """A ``docker`` command failed or ran past its time: its last lines of output."""


def _key_entry(key_id: str = "k1") -> str:
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def lab_env(maildir: Path, replicas: Mapping[str, int] = REPLICAS) -> dict[str, str]:
    """The ``.env`` of README's recipe (fresh secrets), the replica counts and the Maildir."""
    return {
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "METALLICA_SERVICE_TOKEN": secrets.token_hex(24),
        "METALLICA_CLIENT_TOKENS": f"lab:{secrets.token_hex(24)}",
        "METALLICA_GENERATOR_KEYS": _key_entry(),
        "METALLICA_PROTOOLS_KEYS": _key_entry(),
        "GENERATOR_REPLICAS": str(replicas["generator"]),
        "MAILER_REPLICAS": str(replicas["mailer"]),
        "PROTOOLS_REPLICAS": str(replicas["protools"]),
        "LAB_MAILDIR": str(maildir),
        # The lab's client follows the whole log (lab/followers.py).
        "METALLICA_LOG_READERS": "lab",
    }


@dataclass(frozen=True)
class Container:
    """One replica as Docker runs it."""

    id: str
    service: str
    number: int  # Compose's container number, from 1
    pid: int  # its first process, on the host: the way into its network namespace
    address: str  # on the project's network
    network: str
    ports: Mapping[int, int] = field(default_factory=dict)  # container port -> 127.0.0.1 port
    health: str = ""  # Docker's health check: starting, healthy, unhealthy ("" if none)

    @property
    def name(self) -> str:
        return f"{self.service}-{self.number}"


class ComposeStack:
    """``docker compose`` on one project: the checkout's file and the lab's override."""

    def __init__(self, root: Path, project: str, env: Mapping[str, str]) -> None:
        self.root = root
        self.project = project
        self.env = dict(env)

    # --- commands ---------------------------------------------------------------------------

    def docker(self, *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
        """Run ``docker *args`` (in the checkout, with the stack's environment); its output."""
        try:
            done = subprocess.run(
                ["docker", *args],
                cwd=self.root,
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ComposeError(f"docker {' '.join(args[:4])}: no end after {timeout:g} s") from None
        except FileNotFoundError as error:
            raise ComposeError(
                "no `docker` command: install the engine (scripts/docker-engine)"
            ) from error
        if check and done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise ComposeError(f"docker {' '.join(args[:4])} exited {done.returncode}:\n{tail}")
        return done.stdout

    def compose(self, *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
        files = ["-f", COMPOSE_FILE, "-f", LAB_OVERRIDE]
        return self.docker(
            "compose", "-p", self.project, *files, *args, timeout=timeout, check=check
        )

    def build(self) -> None:
        self.compose("build", timeout=BUILD_TIMEOUT)

    def up(self) -> None:
        """Start everything and return once every container is healthy."""
        self.compose(
            "up", "--detach", "--wait", "--wait-timeout", f"{UP_TIMEOUT:g}", timeout=UP_TIMEOUT + 30
        )

    def down(self) -> None:
        """Remove the project's containers, networks and volumes (never raises)."""
        with contextlib.suppress(ComposeError):
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=120)

    def stop(self, service: str) -> None:
        self.compose("stop", "--timeout", "5", service)

    def start(self, service: str) -> None:
        self.compose("start", service)

    # --- what Docker says -------------------------------------------------------------------

    def containers(self, service: str) -> list[Container]:
        """The service's containers, by container number (running or not)."""
        ids = self.compose("ps", "--all", "--quiet", service).split()
        if not ids:
            return []
        found = []
        for info in json.loads(self.docker("inspect", *ids)):
            labels = info["Config"]["Labels"]
            networks = info["NetworkSettings"]["Networks"] or {}
            network, settings = next(iter(networks.items()), ("", {"IPAddress": ""}))
            ports = {}
            for spec, bindings in (info["NetworkSettings"]["Ports"] or {}).items():
                for binding in bindings or []:
                    if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
                        ports[int(spec.split("/")[0])] = int(binding["HostPort"])
            found.append(
                Container(
                    id=info["Id"],
                    service=service,
                    number=int(labels["com.docker.compose.container-number"]),
                    pid=int(info["State"]["Pid"]),
                    address=str(settings.get("IPAddress") or ""),
                    network=network,
                    ports=ports,
                    health=str((info["State"].get("Health") or {}).get("Status") or ""),
                )
            )
        return sorted(found, key=lambda container: container.number)

    def url(self, container: Container, port: int = SERVICE_PORT) -> str:
        if port not in container.ports:
            raise ComposeError(f"{container.name} publishes no port {port} (is it running?)")
        return f"http://127.0.0.1:{container.ports[port]}"

    def database_url(self, database: str) -> str:
        """A service's database, through the port the lab's override publishes on 127.0.0.1."""
        (postgres,) = self.containers("postgres")
        port = postgres.ports[POSTGRES_PORT]
        password = self.env["POSTGRES_PASSWORD"]
        return f"postgresql://metallica:{password}@127.0.0.1:{port}/{database}"

    # --- the network, at the packet level ---------------------------------------------------

    def in_netns(self, container: Container, *command: str) -> None:
        """Run ``command`` (``tc``, ``iptables``) in the container's network namespace, from
        the host: the product's image has no network tool, and needs none."""
        args = ["nsenter", "--target", str(container.pid), "--net", "--", *command]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise ComposeError(f"{' '.join(command)} in {container.name}: {done.stderr.strip()}")

    def disconnect(self, container: Container) -> None:
        self.docker("network", "disconnect", container.network, container.id)

    def connect(self, container: Container, aliases: Sequence[str] = ()) -> None:
        alias_args = [arg for alias in aliases for arg in ("--alias", alias)]
        self.docker("network", "connect", *alias_args, container.network, container.id)


class ComposeLab(BaseLab):
    """The lab's scenarios on a Compose stack, through its published ports only."""

    def __init__(self, stack: ComposeStack, maildir: Path, down_seconds: float = 15.0) -> None:
        token = stack.env["METALLICA_CLIENT_TOKENS"].partition(":")[2]
        super().__init__(token)
        self.stack = stack
        self.maildir = maildir
        self._down_seconds = down_seconds
        self._protools: list[Container] = []

    def __enter__(self) -> ComposeLab:
        self.refresh()
        self.followers = LogFollowers(
            self._protools_urls, self.token, self.stack.database_url("protools")
        )
        try:
            self.followers.start()
        except BaseException:
            self.close_clients()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        try:
            if self.followers is not None:
                self.followers.stop()
        finally:
            self.close_clients()

    def _protools_urls(self) -> list[str]:
        """Where protools' replicas answer now, for the log's followers: a container that was
        killed and started again publishes new ports."""
        try:
            return [self.stack.url(container) for container in self.stack.containers("protools")]
        except ComposeError as error:
            raise ReplicasUnknown(str(error)) from error

    def refresh(self) -> None:
        """Read the containers again (after a restart their ports and pids change)."""
        self._protools = self.stack.containers("protools")

    @property
    def replicas(self) -> int:
        return len(self._protools)

    @property
    def down_seconds(self) -> float:
        return self._down_seconds

    def protools_url(self, index: int = 0) -> str:
        return self.stack.url(self._protools[index % len(self._protools)])

    def service_urls(self, service: str) -> list[str]:
        return [self.stack.url(container) for container in self.stack.containers(service)]

    def settle(self, timeout: float = 60.0) -> None:
        until = time.monotonic() + timeout
        for service in ("generator", "mailer", "protools"):
            self._wait_ready(service, until)
        self.refresh()

    def _wait_ready(self, service: str, until: float) -> None:
        """Until every container of ``service`` is ready: ``/readyz`` answers 200 on its
        published port, or (a service the lab does not publish) Docker calls it healthy."""
        while True:
            with contextlib.suppress(httpx.HTTPError, ComposeError):
                if all(self._ready(container) for container in self.stack.containers(service)):
                    return
            if time.monotonic() > until:
                raise ComposeError(f"{service} was not ready in time")
            time.sleep(0.25)

    def _ready(self, container: Container) -> bool:
        if SERVICE_PORT not in container.ports:
            return container.health == "healthy"
        return httpx.get(self.stack.url(container) + "/readyz", timeout=2).status_code == 200

    def _auth_for(self, service: str) -> dict[str, str]:
        token = self.token if service == "protools" else self.stack.env["METALLICA_SERVICE_TOKEN"]
        return {"Authorization": f"Bearer {token}"}

    def arm(
        self, service: str, fault: Mapping[str, Any], replicas: Iterable[int] | None = None
    ) -> None:
        urls = self.service_urls(service)
        for index in range(len(urls)) if replicas is None else replicas:
            response = self._http.post(
                urls[index] + "/v1/faults", json=dict(fault), headers=self._auth_for(service)
            )
            if response.status_code != 201:
                raise ComposeError(f"arming {fault} on {service}-{index + 1}: {response.text}")

    def disarm(self, service: str) -> None:
        for url in self.service_urls(service):
            with contextlib.suppress(httpx.HTTPError):
                self._http.delete(url + "/v1/faults", timeout=5, headers=self._auth_for(service))

    def stop_service(self, service: str) -> None:
        self.stack.stop(service)

    def start_service(self, service: str) -> float:
        self.stack.start(service)
        self._wait_ready(service, time.monotonic() + 60)
        return time.time()

    def secrets(self) -> list[str]:
        env = self.stack.env
        found = [self.token, env["METALLICA_SERVICE_TOKEN"], env["POSTGRES_PASSWORD"]]
        found += [record.password for record in self.records if record.password]
        found += GeneratorKeyring.secrets_in(env) + ProtoolsKeyring.secrets_in(env)
        return sorted(set(found))

    def logs(self) -> str:
        return self.stack.compose("logs", "--no-color", timeout=60, check=False)

    def check(self, records: Iterable[ClientRecord] | None = None) -> Report:
        snapshot = read_snapshot(
            self.stack.database_url("protools"),
            self.stack.database_url("generator"),
            self.maildir,
            generator_keys=GeneratorKeyring.from_env(self.stack.env),
            protools_keys=ProtoolsKeyring.from_env(self.stack.env),
        )
        return check(snapshot, list(self.records if records is None else records))

    @contextlib.contextmanager
    def partitioned(self, container: Container, peer: Container) -> Iterator[None]:
        """Drop every packet between ``container`` and ``peer`` (both ways), for the block."""
        rules = [("OUTPUT", "-d"), ("INPUT", "-s")]
        for chain, flag in rules:
            self.stack.in_netns(
                container, "iptables", "-I", chain, flag, peer.address, "-j", "DROP"
            )
        try:
            yield
        finally:
            for chain, flag in rules:
                self.stack.in_netns(
                    container, "iptables", "-D", chain, flag, peer.address, "-j", "DROP"
                )

    def interface(self, container: Container) -> str:
        """The container's interface on the project's network (``eth0`` at first; a
        container disconnected and connected again gets another name)."""
        args = ["nsenter", "--target", str(container.pid), "--net", "--", "ip", "-o", "-4", "addr"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        for line in done.stdout.splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3].split("/")[0] == container.address:
                return fields[1]
        raise ComposeError(f"{container.name} has no interface with {container.address}")

    @contextlib.contextmanager
    def slow_lossy_link(self, container: Container, loss: float = 0.2) -> Iterator[str]:
        """Latency and packet loss on the container's link, for the block; yields what was
        done. ``tc netem`` on its egress (delay 300 ms +-50 ms, ``loss``) where the kernel has
        it; where it does not (``CONFIG_NET_SCH_NETEM`` unset: "qdisc kind is unknown"), a
        token bucket at 64 kbit/s on its egress (a full packet ~190 ms on the wire, queueing
        up to 400 ms) and ``iptables`` rules dropping packets at random, both ways, with the
        same probability."""
        percent = f"{loss * 100:g}%"
        device = self.interface(container)
        try:
            self.stack.in_netns(
                container, "tc", "qdisc", "add", "dev", device, "root", "netem",
                "delay", "300ms", "50ms", "loss", percent,
            )  # fmt: skip
            done, rules = f"netem delay 300 ms +-50 ms, loss {percent}", list[list[str]]()
        except ComposeError as error:
            if "unknown" not in str(error):
                raise
            self.stack.in_netns(
                container, "tc", "qdisc", "add", "dev", device, "root", "tbf",
                "rate", "64kbit", "burst", "3200", "latency", "400ms",
            )  # fmt: skip
            random_drop = ["-m", "statistic", "--mode", "random", "--probability", str(loss)]
            rules = [[chain, *random_drop, "-j", "DROP"] for chain in ("OUTPUT", "INPUT")]
            for rule in rules:
                self.stack.in_netns(container, "iptables", "-I", *rule)
            done = (
                f"no netem in this kernel: tbf 64 kbit/s, latency 400 ms; {percent} loss both ways"
            )
        try:
            yield done
        finally:
            self.stack.in_netns(container, "tc", "qdisc", "del", "dev", device, "root")
            for rule in rules:
                self.stack.in_netns(container, "iptables", "-D", *rule)
