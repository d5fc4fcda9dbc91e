"""Consumer groups' commands: `metallica subscriptions create|list|show|rewind|parked|replay|
delete` (the members themselves use the API, or :class:`metallica.client.Consumer`)."""

from __future__ import annotations

import json
from typing import Any

import click

from metallica.cli.client import client_options, fail_with_problem
from metallica.cli.events import event_line, split_types


def _start(text: str) -> str | int:
    if text in ("start", "end"):
        return text
    if text.isdigit():
        return int(text)
    raise click.BadParameter("start, end, or a log position (a whole number)")


def _answer(response: Any, expected: tuple[int, ...] = (200,)) -> Any:
    if response.status_code not in expected:
        fail_with_problem(response)
    return response.json() if response.content else None


def _summary(group: dict[str, Any]) -> list[str]:
    return [
        group["name"],
        str(group["position"]),
        str(group["lag"]["positions"]),
        f"{group['lag']['seconds']:.1f}s",
        str(group["in_flight"]),
        str(group["parked"]),
        str(group["redeliveries"]),
        ",".join(group["types"]) or "all",
    ]


HEADERS = ["group", "read to", "lag", "lag age", "in flight", "parked", "redelivered", "types"]


@click.group()
def subscriptions() -> None:
    """Manage consumer groups: durable subscriptions to protools' log.

    A group's members pull the log's events (POST /v1/subscriptions/NAME/pull) and ack each
    once handled; protools keeps the group's progress. Delivery is at least once, in order per
    workflow, shared among members. Only a client named in METALLICA_LOG_READERS may use them.
    """


@subscriptions.command("create")
@click.argument("name")
@click.option(
    "--start",
    default="end",
    show_default=True,
    help="Where the group starts reading: start (the whole log), end (only new events) or "
    "after a position.",
)
@click.option(
    "--type",
    "types",
    multiple=True,
    help="Only events of this type (repeat, or comma-separate, for several).",
)
@click.option(
    "--ack-wait",
    type=click.FloatRange(0.1, 43_200),
    default=30.0,
    show_default=True,
    help="Seconds a member has to ack an event before it goes to a member again.",
)
@click.option(
    "--max-deliver",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Deliveries without an ack after which an event is parked.",
)
@click.option(
    "--max-ack-pending",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Events leased to one member at most.",
)
@client_options
def create(
    client: Any,
    name: str,
    start: str,
    types: tuple[str, ...],
    ack_wait: float,
    max_deliver: int,
    max_ack_pending: int,
) -> None:
    """Create the consumer group NAME (the same command again finds it)."""
    response = client.create_group(
        name,
        start=_start(start),
        types=split_types(types),
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )
    group = _answer(response, (200, 201))
    said = "created" if response.status_code == 201 else "exists already"
    click.echo(f"group {name} {said}: reads the log after position {group['position']}")


@subscriptions.command("list")
@client_options
def list_groups(client: Any) -> None:
    """List the consumer groups, their progress and lag."""
    from metallica.client import format_table

    found = _answer(client.groups())["groups"]
    if not found:
        click.echo("no consumer group (create one: metallica subscriptions create NAME)")
        return
    click.echo(format_table(HEADERS, [_summary(group) for group in found]))


@subscriptions.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The group as the API gives it.")
@client_options
def show(client: Any, name: str, as_json: bool) -> None:
    """Show the consumer group NAME: settings, progress, lag, members and what they hold."""
    group = _answer(client.group(name))
    if as_json:
        click.echo(json.dumps(group, indent=2))
        return
    lag = group["lag"]
    lines = [
        f"group          {group['name']}",
        f"types          {', '.join(group['types']) or 'all'}",
        f"read to        {group['position']} (head {group['head']})",
        f"lag            {lag['positions']} positions, oldest unfinished {lag['seconds']:.1f} s",
        f"unfinished     {group['unfinished']} ({group['in_flight']} in flight)",
        f"parked         {group['parked']}",
        f"redeliveries   {group['redeliveries']}",
        f"ack wait       {group['ack_wait']:g} s; max deliver {group['max_deliver']}; "
        f"max ack pending {group['max_ack_pending']} per member",
    ]
    lines += [f"member         {m['member']}: {m['in_flight']} in flight" for m in group["members"]]
    click.echo("\n".join(lines))


@subscriptions.command("rewind")
@click.argument("name")
@click.option(
    "--to",
    required=True,
    help="start (deliver the whole log again), end (skip to now) or a position.",
)
@client_options
def rewind(client: Any, name: str, to: str) -> None:
    """Make the group NAME read the log again after a position; what its members hold is
    dropped (their acks are refused), parked events before that position stay parked."""
    group = _answer(client.rewind(name, _start(to)))
    click.echo(f"group {name} now reads the log after position {group['position']}")


@subscriptions.command("parked")
@click.argument("name")
@click.option("--after", type=click.IntRange(min=0), default=0, help="After this position.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@client_options
def parked(client: Any, name: str, after: int, limit: int) -> None:
    """List the events the group NAME parked (delivered --max-deliver times, never acked)."""
    page = _answer(client.parked(name, after=after, limit=limit))
    if not page["parked"]:
        click.echo(f"group {name} has no parked event after position {after}")
        return
    for event in page["parked"]:
        click.echo(
            f"{event_line(event)}  [delivered {event['deliveries']}x, last to {event['member']}, "
            f"parked {event['parked_at']}]"
        )
    if page["next"] is not None:
        click.echo(f"more: --after {page['next']}", err=True)


@subscriptions.command("replay")
@click.argument("name")
@click.option(
    "--position",
    "positions",
    type=click.IntRange(min=1),
    multiple=True,
    help="A parked event to deliver again (repeat for several; default: all of them).",
)
@client_options
def replay(client: Any, name: str, positions: tuple[int, ...]) -> None:
    """Deliver parked events of the group NAME again, their delivery count afresh."""
    answer = _answer(client.replay(name, list(positions) if positions else None))
    click.echo(f"group {name}: {answer['replayed']} parked event(s) delivered again")


@subscriptions.command("delete")
@click.argument("name")
@client_options
def delete(client: Any, name: str) -> None:
    """Delete the consumer group NAME and its progress."""
    _answer(client.delete_group(name), (204,))
    click.echo(f"group {name} deleted")
