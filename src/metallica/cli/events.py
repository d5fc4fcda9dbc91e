"""The log's commands: `metallica events tail [--from P] [--type T] [--follow]` and
`metallica events export` (JSON Lines)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

import click

from metallica.cli.client import client_options, fail_with_problem

TYPES = click.option(
    "--type",
    "types",
    multiple=True,
    help="Only events of this type (repeat, or comma-separate, for several).",
)
WORKFLOW = click.option("--workflow", "workflow_id", help="Only this workflow's events.")
POSITION = click.IntRange(min=0)
PAGE = 1000


def split_types(given: tuple[str, ...]) -> list[str]:
    return [name for part in given for name in part.split(",") if name]


def _pages(
    client: Any, after: int, types: list[str], workflow_id: str | None
) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """The log's pages after ``after``, up to its head when the first page was read: each
    page's events and the position it looked up to (where to go on from)."""
    until: int | None = None
    while True:
        response = client.log(after=after, limit=PAGE, types=types, workflow_id=workflow_id)
        if response.status_code != 200:
            fail_with_problem(response)
        page = response.json()
        until = page["head"] if until is None else until
        events = [event for event in page["events"] if event["position"] <= until]
        after = min(page["next"], until)
        yield events, after
        if after >= until:
            return


def event_line(event: dict[str, Any]) -> str:
    from metallica.client import describe_event

    try:
        what = describe_event(event)
    except (KeyError, TypeError):  # an event of a shape this client does not know
        what = json.dumps(event["data"], separators=(",", ":"))[:200]
    return (
        f"{event['position']:>8}  {event['time']}  {event['workflow_id']}  {event['type']}  {what}"
    )


@click.group()
def events() -> None:
    """Read protools' event log: every event of every workflow, in commit order.

    A client sees the events of the workflows it started; a client named in
    METALLICA_LOG_READERS sees them all. Passwords are masked.
    """


@events.command("tail")
@click.option(
    "--from",
    "after",
    type=POSITION,
    help="Start after this position (default: the last --lines positions of the log).",
)
@click.option(
    "--lines",
    type=click.IntRange(1, 100_000),
    default=20,
    show_default=True,
    help="Without --from: how many positions before the head to start.",
)
@TYPES
@WORKFLOW
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Then print new events as they are recorded, until interrupted (Ctrl-C); a broken "
    "stream is resumed where it stopped, no event missed or repeated.",
)
@client_options
def events_tail(
    client: Any,
    after: int | None,
    lines: int,
    types: tuple[str, ...],
    workflow_id: str | None,
    follow: bool,
) -> None:
    """Print the log's events, one line each: position, time, workflow, type, what happened."""
    from metallica.client import LogStreamLost, LogStreamRefused

    wanted = split_types(types)
    try:  # Ctrl-C ends the command cleanly, whether it is catching up or following
        if after is None:
            head = client.log(limit=1)
            if head.status_code != 200:
                fail_with_problem(head)
            after = max(0, int(head.json()["head"]) - lines)
        last = after
        for page, looked_up_to in _pages(client, after, wanted, workflow_id):
            for event in page:
                click.echo(event_line(event))
            last = looked_up_to
        if not follow:
            return
        for event in client.follow_log(after=last, types=wanted, workflow_id=workflow_id):
            click.echo(event_line(event))
    except KeyboardInterrupt:
        return
    except LogStreamRefused as refused:
        fail_with_problem(refused.response)
    except LogStreamLost as lost:
        raise click.ClickException(str(lost)) from None


@events.command("export")
@click.option("--from", "after", type=POSITION, default=0, help="Start after this position.")
@TYPES
@WORKFLOW
@click.option(
    "--output",
    "-o",
    type=click.File("w"),
    default="-",
    help="Where the JSON Lines go (default: stdout).",
)
@client_options
def events_export(
    client: Any, after: int, types: tuple[str, ...], workflow_id: str | None, output: IO[str]
) -> None:
    """Write the log's events as JSON Lines, one event per line, from a position up to the
    log's head when the export started. Progress and the position to go on from go to
    stderr."""
    written, last = 0, after
    for page, last in _pages(client, after, split_types(types), workflow_id):
        for event in page:
            output.write(json.dumps(event, separators=(",", ":")) + "\n")
        written += len(page)
        click.echo(f"exported {written} events, looked up to position {last}", err=True)
    output.flush()
    click.echo(
        f"done: {written} events; go on with: metallica events export --from {last}", err=True
    )
