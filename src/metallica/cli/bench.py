"""`metallica bench`: the closed loop, the open loop and the capacity search."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from metallica.cli.bench_options import concurrencies, open_phases, options_fit
from metallica.cli.common import exit_on_sigterm

if TYPE_CHECKING:
    from metallica.bench.openrunner import OpenConfig


def _bench_output() -> tuple[Callable[[str], None], Callable[[str], None]]:
    """``say`` (a line on stderr, with the time since the start) and ``progress_line`` (the live
    line, redrawn in place on a terminal, every 5 s in a log)."""
    started = time.monotonic()
    live = sys.stderr.isatty()

    def say(line: str) -> None:
        click.echo(
            f"\r\033[K[{time.monotonic() - started:6.1f}s] {line}"
            if live
            else f"[{time.monotonic() - started:6.1f}s] {line}",
            err=True,
        )

    last_drawn = [0.0]

    def progress_line(line: str) -> None:
        now = time.monotonic()
        if live:
            click.echo(f"\r\033[K{line}", err=True, nl=False)
        elif line and now - last_drawn[0] >= 5:  # a log, not a terminal: a line every 5 s
            last_drawn[0] = now
            click.echo(f"[{now - started:6.1f}s] {line}", err=True)

    return say, progress_line


def _bench_open(
    config: OpenConfig,
    say: Callable[[str], None],
    progress_line: Callable[[str], None],
    json_path: Path | None,
    plot_path: Path | None,
) -> None:
    """Run an open loop or a capacity search; print its report; exit 1 if an invariant broke."""
    from metallica.bench.openrunner import capacity_table, run_open, summary_lines
    from metallica.bench.runner import BenchError

    try:
        report = run_open(config, say, progress_line)
    except BenchError as error:
        raise click.ClickException(str(error)) from None
    if report.summary is not None:
        for line in summary_lines(report.summary):
            click.echo(line)
        if report.unsettled:
            click.echo(f"commands whose outcome stayed unknown: {report.unsettled}")
    if report.capacity is not None:
        click.echo(capacity_table(report.capacity))
    if json_path is not None:
        json_path.write_text(report.to_json())
        click.echo(f"results: {json_path}")
    if plot_path is not None:
        from metallica.load.plot import plot_capacity, plot_timeline

        try:
            if report.capacity is not None:
                plot_capacity(report.capacity, plot_path)
            else:
                plot_timeline(report.timeline, plot_path)
        except RuntimeError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"plot: {plot_path}")
    if report.checker is not None:
        verdict = "held" if report.checker["ok"] else "VIOLATED"
        click.echo(f"invariants over {report.checker['workflows']} workflows: {verdict}")
        for violation in report.checker["violations"][:10]:
            click.echo(f"  {violation}")
    if report.capacity is not None:
        click.echo(f"capacity: {report.capacity['capacity']:g} wf/s")
    if report.checker is not None and not report.checker["ok"]:
        sys.exit(1)


@click.command()
@click.option(
    "-c",
    "--concurrency",
    "concurrency",
    default="1,4,16,64",
    show_default=True,
    help="Closed-loop concurrencies to run, comma-separated.",
)
@click.option(
    "-n",
    "--count",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Workflows measured per concurrency.",
)
@click.option(
    "--warmup",
    type=click.IntRange(0),
    default=100,
    show_default=True,
    help="Workflows sent (not measured) before each round, or before an open loop or a "
    "capacity search.",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Replicas of each service in the stack the bench starts.",
)
@click.option("--postgres", is_flag=True, help="Run on a throwaway PostgreSQL cluster.")
@click.option("--database-url", help="Run on this PostgreSQL server (fresh schemas per run).")
@click.option(
    "--url",
    "urls",
    multiple=True,
    help="Measure a running protools instead (repeat for replicas); no floor, no check.",
)
@click.option("--token", envvar="METALLICA_API_TOKEN", help="The API token, with --url.")
@click.option(
    "--floor",
    is_flag=True,
    help="Also run each round through a non-durable orchestrator on the same HTTP "
    "stack and services, and give each durable figure as a ratio to it.",
)
@click.option(
    "--preload",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="After the rounds, store this many completed workflows (bulk path), then run "
    "the rounds again: throughput and latency with history.",
)
@click.option(
    "--consoles",
    type=click.IntRange(0, 50),
    default=0,
    show_default=True,
    help="Keep this many web consoles following the live log (/console/stream) during "
    "the closed-loop rounds: what open consoles cost the hot path.",
)
@click.option("--no-check", is_flag=True, help="Skip the invariant checker afterwards.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write results here.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    help="Draw throughput and p99 against concurrency into this PNG (matplotlib).",
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Keep the stack's files here.")
@click.option(
    "--open-loop",
    is_flag=True,
    help="Send commands at Poisson arrival times, whether or not earlier ones were answered "
    "(implied by --rate, --ramp and --phases).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, 5000, min_open=True),
    help="Open loop: arrivals per second, for --duration.",
)
@click.option(
    "--ramp", metavar="FROM:TO", help="Open loop: a rate rising linearly over --duration."
)
@click.option(
    "--duration",
    type=click.FloatRange(0, 3600, min_open=True),
    default=30.0,
    show_default=True,
    help="Open loop: seconds of --rate or --ramp.",
)
@click.option(
    "--phases",
    metavar="RATExSECONDS,...",
    help="Open loop: phases run one after the other, e.g. 400x30,100x20 (FROM:TOxSECONDS ramps).",
)
@click.option(
    "--goodput-deadline",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="Open loop: a command completed later than this (seconds) is not goodput.",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(0.5, 30),
    default=10.0,
    show_default=True,
    help="Open loop: each command asks protools to wait this long for the result (Prefer: wait).",
)
@click.option("--seed", type=int, help="Open loop: seed the arrival times (a replayable run).")
@click.option(
    "--capacity",
    is_flag=True,
    help="Find the highest arrival rate whose admitted p99 stays within --p99-bound-ms with "
    "under 1 %% shed, with short open-loop probes.",
)
@click.option(
    "--p99-bound-ms",
    type=click.FloatRange(1, 60_000),
    default=100.0,
    show_default=True,
    help="Capacity: the admitted p99 a sustainable rate keeps.",
)
@click.option(
    "--step-seconds",
    type=click.FloatRange(0.5, 60),
    default=5.0,
    show_default=True,
    help="Capacity: seconds per probe.",
)
@click.option(
    "--start-rate",
    type=click.FloatRange(1, 5000),
    default=25.0,
    show_default=True,
    help="Capacity: the first probe's rate (doubled until a probe fails, then bisected).",
)
@click.option(
    "--max-rate",
    type=click.FloatRange(1, 5000),
    default=2000.0,
    show_default=True,
    help="Capacity: never probe above this rate.",
)
@click.option(
    "--bisections",
    type=click.IntRange(0, 8),
    default=3,
    show_default=True,
    help="Capacity: probes between the last rate that passed and the first that failed.",
)
@click.pass_context
def bench(
    context: click.Context,
    concurrency: str,
    count: int,
    warmup: int,
    replicas: int,
    postgres: bool,
    database_url: str | None,
    urls: tuple[str, ...],
    token: str | None,
    floor: bool,
    preload: int,
    consoles: int,
    no_check: bool,
    json_path: Path | None,
    plot_path: Path | None,
    data_dir: Path | None,
    open_loop: bool,
    rate: float | None,
    ramp: str | None,
    duration: float,
    phases: str | None,
    goodput_deadline: float,
    wait_seconds: float,
    seed: int | None,
    capacity: bool,
    p99_bound_ms: float,
    step_seconds: float,
    start_rate: float,
    max_rate: float,
    bisections: int,
) -> None:
    """Measure workflows/s and latency in closed loops, then check the invariants.

    Starts its own stack (SQLite by default) unless given --url; prints a live progress line,
    one line per round, then a table with CPU ms per workflow of every process measured.

    With --open-loop (--rate, --ramp or --phases), commands arrive on a Poisson schedule instead
    and the report gives throughput, goodput, admitted and shed latencies and a timeline. With
    --capacity, short open-loop probes find the highest rate served within --p99-bound-ms.
    """
    from metallica.bench.runner import BenchConfig, run, table

    if sum(map(bool, (postgres, database_url, urls))) > 1:
        raise click.UsageError("--postgres, --database-url and --url exclude each other")
    if urls and not token:
        raise click.UsageError("--url needs the API token (--token or METALLICA_API_TOKEN)")
    if urls and (floor or preload):
        raise click.UsageError("--floor and --preload need a stack the bench starts (drop --url)")
    open_loop = open_loop or any(option is not None for option in (rate, ramp, phases))
    options_fit(context, open_loop=open_loop, capacity=capacity)
    exit_on_sigterm()
    config = BenchConfig(
        concurrencies=concurrencies(concurrency),
        count=count,
        warmup=warmup,
        replicas=replicas,
        postgres=postgres,
        database_url=database_url,
        urls=urls,
        token=token,
        floor=floor,
        preload=preload,
        consoles=consoles,
        check=not no_check and not urls,
        data_dir=data_dir,
    )
    say, progress_line = _bench_output()
    if open_loop or capacity:
        from metallica.bench.openrunner import OpenConfig

        if urls:
            from metallica.load.openloop import require_loopback

            try:
                require_loopback(urls)
            except ValueError as error:
                raise click.UsageError(str(error)) from None
        _bench_open(
            OpenConfig(
                config,
                phases=[] if capacity else open_phases(rate, ramp, duration, phases),
                capacity=capacity,
                warmup=warmup,
                goodput_deadline=goodput_deadline,
                wait_seconds=wait_seconds,
                seed=seed,
                p99_bound=p99_bound_ms / 1000,
                step_seconds=step_seconds,
                start_rate=min(start_rate, max_rate),
                max_rate=max_rate,
                bisections=bisections,
            ),
            say,
            progress_line,
            json_path,
            plot_path,
        )
        return

    from metallica.bench.runner import BenchError

    try:
        report = run(config, say, progress_line)
    except BenchError as error:
        raise click.ClickException(str(error)) from None
    click.echo(table(report))
    for name, (before, after) in sorted(report.memory_mb.items()):
        click.echo(f"rss {name}: {before:.1f} MB at the start, {after:.1f} MB at the end")
    if json_path is not None:
        json_path.write_text(report.to_json())
        click.echo(f"results: {json_path}")
    if plot_path is not None:
        from metallica.bench.plot import plot

        try:
            plot(report, plot_path)
        except RuntimeError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"plot: {plot_path}")
    if report.checker is not None:
        verdict = "held" if report.checker["ok"] else "VIOLATED"
        click.echo(f"invariants over {report.checker['workflows']} workflows: {verdict}")
        for violation in report.checker["violations"][:10]:
            click.echo(f"  {violation}")
        if not report.checker["ok"]:
            sys.exit(1)
