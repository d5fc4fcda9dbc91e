"""The client commands: `metallica password create`, `metallica workflow result|list|show`."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from metallica.cli.common import DEFAULT_URL, EXIT_RUNNING, find_token, token_places

# --- clients ----------------------------------------------------------------------------------


def client_options(function: Callable[..., Any]) -> Callable[..., Any]:
    @click.option(
        "--url",
        envvar="METALLICA_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="protools' base URL. [METALLICA_URL]",
    )
    @click.option(
        "--token",
        envvar="METALLICA_API_TOKEN",
        help="API token [METALLICA_API_TOKEN]; default: the .metallica/api-token that `up` "
        "wrote, in this directory or the nearest parent that has one.",
    )
    @functools.wraps(function)
    def wrapper(url: str, token: str | None, **kwargs: Any) -> Any:
        from metallica.client import ProtoolsClient

        resolved = token or find_token()
        if not resolved:
            places = token_places(Path.cwd())
            shown = ", ".join(str(path) for path in places[:3]) + (
                f" (and {len(places) - 3} more up to /)" if len(places) > 3 else ""
            )
            raise click.UsageError(
                f"no API token: pass --token, set METALLICA_API_TOKEN, or run `metallica up` "
                f"(it writes .metallica/api-token); looked in {shown}"
            )
        with ProtoolsClient(url, resolved) as client:
            try:
                return function(client, **kwargs)
            except Exception as error:
                import httpx

                if isinstance(error, httpx.HTTPError):
                    raise click.ClickException(
                        f"cannot reach protools at {url}: {error or type(error).__name__}"
                    ) from None
                raise

    return wrapper


def fail_with_problem(response: Any) -> None:
    """End the command with the service's problem, one line (and the workflow it concerns)."""
    try:
        problem = response.json()
        message = f"{problem.get('detail') or problem.get('title')} ({problem.get('type')})"
        if problem.get("workflow_id"):
            message += f"; workflow {problem['workflow_id']}"
    except (ValueError, AttributeError):
        message = " ".join(response.text[:200].split()) or response.reason_phrase
    raise click.ClickException(f"HTTP {response.status_code}: {message}")


WAIT = click.FloatRange(0, 30)


def _still_running(workflow_id: str, key: str | None) -> None:
    """Say on stderr that the workflow is still running, how to get its result, and exit
    :data:`EXIT_RUNNING`."""
    click.echo(f"still running: workflow {workflow_id}", err=True)
    click.echo(
        f"  get the password when it is done: metallica workflow result {workflow_id}", err=True
    )
    if key is not None:
        click.echo(f"  or run this command again with --key {key}", err=True)
    sys.exit(EXIT_RUNNING)


@click.group()
def password() -> None:
    """Create passwords through protools."""


@password.command("create")
@click.argument("username")
@click.option("--email", help="Where the mail goes (default: <username>@<mail domain>).")
@click.option(
    "--key",
    help="Idempotency-Key (default: a new one, printed on stderr). Run the command again with "
    "the same key to resume it: it never creates a second password.",
)
@click.option(
    "--wait", type=WAIT, default=5.0, show_default=True, help="Seconds to wait for the result."
)
@client_options
def password_create(
    client: Any, username: str, email: str | None, key: str | None, wait: float
) -> None:
    """Create a password for USERNAME and print it on stdout (nothing else goes there).

    The workflow id and the Idempotency-Key go to stderr. Exit status: 0 with the password;
    3 when the workflow is still running after --wait (get it with `metallica workflow result
    ID`, or run the same command again with --key); 1 when it failed or was refused.
    """
    import uuid

    key = key or str(uuid.uuid4())
    response = client.create_password(username, email=email, key=key, wait=wait)
    if response.status_code == 200:
        click.echo(response.json()["password"])
        click.echo(f"workflow {response.json()['workflow_id']} (key {key})", err=True)
    elif response.status_code == 202:
        _still_running(response.json()["workflow_id"], key)
    else:
        fail_with_problem(response)


@click.group()
def workflow() -> None:
    """Inspect workflows."""


@workflow.command("result")
@click.argument("workflow_id")
@click.option(
    "--wait", type=WAIT, default=30.0, show_default=True, help="Seconds to wait for the end."
)
@client_options
def workflow_result(client: Any, workflow_id: str, wait: float) -> None:
    """Wait for a workflow and print its password on stdout.

    Exit status: 0 with the password; 3 when still running after --wait; 1 when it failed
    (the reason on stderr) or cannot be read.
    """
    response = client.workflow(workflow_id, wait=wait)
    if response.status_code != 200:
        fail_with_problem(response)
    body = response.json()
    if body["status"] == "completed":
        click.echo(body["password"])
    elif body["status"] == "failed":
        error = body.get("error") or {}
        raise click.ClickException(
            f"workflow {workflow_id} failed: {error.get('detail') or error.get('title')}"
            f" ({error.get('type')})"
        )
    else:
        _still_running(workflow_id, None)


@workflow.command("list")
@click.option("--status", type=click.Choice(["running", "completed", "failed"]), help="Only these.")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--after", help="The cursor a previous page printed, for the next page.")
@client_options
def workflow_list(client: Any, status: str | None, limit: int, after: str | None) -> None:
    """Your workflows (this token's client), newest first, a page at a time."""
    from metallica.client import format_table

    response = client.list_workflows(status=status, limit=limit, after=after)
    if response.status_code != 200:
        fail_with_problem(response)
    page = response.json()
    rows = [
        [w["workflow_id"], w["status"], w["started_at"], w["username"] or ""]
        for w in page["workflows"]
    ]
    if rows:
        click.echo(format_table(["workflow", "status", "started", "username"], rows))
    else:
        click.echo("no workflows", err=True)
    if page["next"]:
        click.echo(f"more: metallica workflow list --after {page['next']}", err=True)


@workflow.command("show")
@click.argument("workflow_id")
@click.option(
    "--all",
    "every_event",
    is_flag=True,
    help="List every event; by default a run of failed attempts of a step is one line, with "
    "its count and causes.",
)
@client_options
def workflow_show(client: Any, workflow_id: str, every_event: bool) -> None:
    """Status and event history of a workflow, as a table."""
    from metallica.client import history_table

    state = client.workflow(workflow_id)
    if state.status_code != 200:
        fail_with_problem(state)
    events = client.events(workflow_id, view="all" if every_event else "compact")
    if events.status_code != 200:
        fail_with_problem(events)
    click.echo(f"workflow {workflow_id}: {state.json()['status']}")
    click.echo(history_table(events.json()["events"]))


# --- the fault lab ----------------------------------------------------------------------------
