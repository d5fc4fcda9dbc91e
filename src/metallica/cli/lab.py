"""The fault lab's commands: `metallica scenarios list|run` and `metallica proxy serve|toxic`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from metallica.cli.common import exit_on_sigterm


@click.group()
def scenarios() -> None:
    """The brief's network failures, reproduced against a stack this command starts."""


@scenarios.command("list")
@click.option("--compose", is_flag=True, help="The scenarios run against the Compose stack.")
def scenarios_list(compose: bool) -> None:
    """Every scenario: its name and the fault it injects."""
    from metallica.client import format_table
    from metallica.lab.compose_scenarios import COMPOSE_SCENARIOS
    from metallica.lab.scenarios import SCENARIOS

    if compose:
        rows = [[s.name, "compose", s.title, s.fault] for s in COMPOSE_SCENARIOS.values()]
    else:
        rows = [[s.name, s.group, s.title, s.fault] for s in SCENARIOS.values()]
    click.echo(format_table(["name", "group", "scenario", "fault"], rows))


@scenarios.command("run")
@click.argument("names", nargs=-1)
@click.option("--replicas", type=click.IntRange(1, 5), default=1, show_default=True)
@click.option(
    "--database-url",
    envvar="METALLICA_DATABASE_URL",
    help="A PostgreSQL database to run on (fresh schemas per run); default: SQLite files.",
)
@click.option(
    "--postgres",
    is_flag=True,
    help="Start a throwaway PostgreSQL cluster (local binaries) to run on; lets scenario "
    "crash-and-db-restart restart it.",
)
@click.option("--down-seconds", type=float, default=30.0, show_default=True)
@click.option("--wire-seconds", type=float, default=10.0, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Keep the lab's files here.")
@click.option(
    "--overload",
    is_flag=True,
    help="Run the overload scenarios (default with no NAMES: the fault scenarios). They first "
    "measure the lab's capacity C; use them with --postgres --replicas 2.",
)
@click.option(
    "--compose",
    is_flag=True,
    help="Run the Compose scenarios against the checkout's docker-compose.yml (built with "
    "`docker compose build`, started with deploy/docker-compose.lab.yml, 3 generators, 2 "
    "mailers, 2 protools), through its published ports; needs a Docker engine with Compose v2 "
    "(scripts/docker-engine). See `metallica scenarios list --compose`.",
)
@click.option(
    "--no-build",
    is_flag=True,
    help="With --compose: use the image already built instead of running docker compose build.",
)
def scenarios_run(
    names: tuple[str, ...],
    replicas: int,
    database_url: str | None,
    postgres: bool,
    down_seconds: float,
    wire_seconds: float,
    data_dir: Path | None,
    overload: bool,
    compose: bool,
    no_build: bool,
) -> None:
    """Run the scenarios NAMES (default: every fault scenario, or with --overload every
    overload scenario); exit 1 on any violation."""
    import contextlib
    import logging
    import uuid

    from metallica.lab.harness import LabConfig
    from metallica.lab.runner import render, run_scenarios
    from metallica.lab.scenarios import FAULT_SCENARIOS, OVERLOAD_SCENARIOS, SCENARIOS
    from metallica.load.pg_cluster import ThrowawayCluster

    if compose:
        _run_compose(names, build=not no_build)
        return
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise click.UsageError(f"unknown scenarios {unknown}; see `metallica scenarios list`")
    if database_url and postgres:
        raise click.UsageError("--database-url and --postgres exclude each other")
    logging.getLogger("metallica.faultproxy").setLevel(logging.ERROR)
    exit_on_sigterm()
    started = time.monotonic()

    def progress(line: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {line}", err=True)

    with contextlib.ExitStack() as stack:
        cluster = None
        if postgres:
            progress("starting a throwaway PostgreSQL cluster")
            cluster = stack.enter_context(contextlib.closing(_Cluster(ThrowawayCluster())))
            database_url = cluster.url
        urls: dict[str, str] = {}
        if database_url:
            from metallica.services import drop_schemas, schema_urls

            prefix = f"lab_{uuid.uuid4().hex[:8]}_"
            stack.callback(drop_schemas, database_url, prefix)
            urls = schema_urls(database_url, prefix)
        config = LabConfig(
            replicas=replicas,
            data_dir=data_dir,
            database_urls=urls,
            cluster=cluster.cluster if cluster else None,
            down_seconds=down_seconds,
            wire_fault_seconds=wire_seconds,
        )
        default = OVERLOAD_SCENARIOS if overload else FAULT_SCENARIOS
        results = run_scenarios(list(names or default), config, progress)
    click.echo(render(results))
    bad = [result.name for result in results if not result.ok]
    click.echo(f"\n{len(results) - len(bad)}/{len(results)} scenarios held every invariant.")
    if bad:
        raise SystemExit(1)


def _run_compose(names: tuple[str, ...], *, build: bool) -> None:
    from metallica.lab.compose_scenarios import COMPOSE_SCENARIOS
    from metallica.lab.runner import render, run_compose_scenarios

    unknown = [name for name in names if name not in COMPOSE_SCENARIOS]
    if unknown:
        raise click.UsageError(
            f"unknown Compose scenarios {unknown}; see `metallica scenarios list --compose`"
        )
    root = Path.cwd()
    if not (root / "docker-compose.yml").is_file():
        raise click.UsageError("run it from the checkout: no docker-compose.yml here")
    exit_on_sigterm()
    started = time.monotonic()

    def progress(line: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {line}", err=True)

    results = run_compose_scenarios(root, list(names or COMPOSE_SCENARIOS), progress, build=build)
    click.echo(render(results))
    bad = [result.name for result in results if not result.ok]
    click.echo(f"\n{len(results) - len(bad)}/{len(results)} scenarios held every invariant.")
    if bad:
        raise SystemExit(1)


class _Cluster:
    """A started throwaway cluster that ``contextlib.closing`` stops."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        cluster.start()
        self.url: str = cluster.url

    def close(self) -> None:
        self.cluster.stop()


@click.group()
def proxy() -> None:
    """A TCP fault proxy (latency, down, timeout, reset_peer, limit_data, slicer, bandwidth)."""


@proxy.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Control API interface.")
@click.option("--port", type=int, default=8474, show_default=True, help="Control API port.")
@click.option(
    "--proxy",
    "proxies",
    multiple=True,
    metavar="NAME=LISTEN=UPSTREAM",
    help="A proxy to create at start, e.g. generator=127.0.0.1:9100=127.0.0.1:8100.",
)
def proxy_serve(host: str, port: int, proxies: tuple[str, ...]) -> None:
    """Run the proxy with its HTTP control API (Toxiproxy-like) until Ctrl-C."""
    from metallica.faultproxy import serve as serve_proxies

    parsed = []
    for entry in proxies:
        parts = entry.split("=")
        if len(parts) != 3:
            raise click.UsageError(f"--proxy {entry!r}: expected NAME=LISTEN=UPSTREAM")
        parsed.append((parts[0], parts[1], parts[2]))
    serve_proxies(host, port, parsed, log_level="warning")


@proxy.command("toxic")
@click.argument("proxy_name")
@click.argument(
    "kind",
    type=click.Choice(
        ["latency", "down", "timeout", "reset_peer", "limit_data", "slicer", "bandwidth", "clear"]
    ),
)
@click.option("--attr", "attributes", multiple=True, metavar="KEY=INT", help="e.g. latency_ms=2000")
@click.option("--direction", type=click.Choice(["upstream", "downstream", "both"]))
@click.option("--remove", is_flag=True, help="Remove the toxic of that type instead.")
@click.option(
    "--control", default="http://127.0.0.1:8474", show_default=True, help="Control API URL."
)
def proxy_toxic(
    proxy_name: str,
    kind: str,
    attributes: tuple[str, ...],
    direction: str | None,
    remove: bool,
    control: str,
) -> None:
    """Add (or --remove) a toxic on PROXY_NAME; KIND `clear` removes them all."""
    from metallica.faultproxy import ProxyControlClient, ProxyControlError, parse_toxic

    client = ProxyControlClient(control)
    try:
        if kind == "clear":
            client.clear(proxy_name)
        elif remove:
            client.remove_toxic(proxy_name, kind)
        else:
            values: dict[str, Any] = {}
            for item in attributes:
                key, _, value = item.partition("=")
                if not value.lstrip("-").isdigit():
                    raise click.UsageError(f"--attr {item!r}: expected KEY=INTEGER")
                values[key] = int(value)
            body: dict[str, Any] = {"type": kind, "attributes": values}
            if direction:
                body["direction"] = direction
            client.add_toxic(proxy_name, parse_toxic(body))
    except ProxyControlError as error:
        raise click.ClickException(str(error)) from None
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    for toxic in client.toxics(proxy_name):
        click.echo(f"{proxy_name}: {toxic.kind} {toxic.name} {toxic.direction} {toxic.attributes}")
