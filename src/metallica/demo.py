"""``metallica demo``: the stack on the embedded default, one password, its story, two errors."""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import click

from metallica.client import ProtoolsClient, history_table
from metallica.lab.harness import Lab, LabConfig
from metallica.lab.runner import render
from metallica.lab.scenarios import SCENARIOS, run_scenario
from metallica.stack import LocalStack


def _say(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


def run_demo(data_dir: Path | None) -> int:
    """Run the demo; return the exit code."""
    keep = data_dir is not None
    root = data_dir or Path(tempfile.mkdtemp(prefix="metallica-demo-"))
    token = secrets.token_urlsafe(24)
    _say(f"Starting protools, generator and mailer (SQLite under {root})")
    started = time.monotonic()
    try:
        with LocalStack(root / "stack", token, replicas=1) as stack:
            click.echo(
                f"up in {time.monotonic() - started:.1f} s: protools at {stack.urls('protools')[0]}"
            )
            with ProtoolsClient(stack.urls("protools")[0], token) as client:
                nominal = _scenario(client, stack)
        click.echo("\nstack stopped")
        return nominal or _tour(root / "lab")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
            click.echo("demo files removed")


def _scenario(client: ProtoolsClient, stack: LocalStack) -> int:
    _say("POST /v1/workflows/password-creation {'username': 'alice'}")
    started = time.monotonic()
    response = client.create_password("alice", key="demo-alice-1")
    elapsed = (time.monotonic() - started) * 1000
    body = response.json()
    if response.status_code != 200:
        click.echo(f"unexpected answer {response.status_code}: {body}")
        return 1
    click.echo(f"HTTP 200 in {elapsed:.0f} ms")
    click.echo(f"password: {body['password']}")
    click.echo(f"workflow: {body['workflow_id']}")

    _say("Its event history (GET /v1/workflows/{id}/events, passwords redacted)")
    click.echo(history_table(client.events(body["workflow_id"]).json()["events"]))

    _say("The mail, as the mailer wrote it into the Maildir")
    mails = sorted((stack.maildir / "new").iterdir())
    for mail in mails:
        click.echo(f"mail file: {mail}")
        click.echo(mail.read_text())
    same = any(body["password"] in mail.read_text() for mail in mails)
    click.echo(f"one mail: {len(mails) == 1}; it holds the returned password: {same}")

    _say("The same command again (same Idempotency-Key): the same answer, nothing redone")
    again = client.create_password("alice", key="demo-alice-1")
    click.echo(
        f"HTTP {again.status_code}, "
        f"same workflow: {again.json().get('workflow_id') == body['workflow_id']}"
    )

    _say("Error: the same username, another command -> 409 username-taken")
    taken = client.create_password("alice", key="demo-alice-2")
    click.echo(f"HTTP {taken.status_code} {taken.headers.get('content-type')}")
    click.echo(taken.text)

    _say("Error: no username -> 422, nothing stored or sent")
    missing = client.create_password(None, key="demo-missing")
    click.echo(f"HTTP {missing.status_code} {missing.headers.get('content-type')}")
    click.echo(missing.text)
    mails_after = len(list((stack.maildir / "new").iterdir()))
    click.echo(f"mails in the Maildir: {mails_after}")
    ok = (
        same
        and len(mails) == 1
        and again.status_code == 200
        and taken.status_code == 409
        and missing.status_code == 422
        and mails_after == 1
    )
    return 0 if ok else 1


TOUR = ("timeout-after-persist", "concurrent-duplicates", "protools-killed")


def _tour(root: Path) -> int:
    """Three scenarios of the fault lab, and the story of one retried step."""
    _say("A short tour of the fault lab: 3 replicas of each service, fault proxies in between")
    logging.getLogger("metallica.faultproxy").setLevel(logging.ERROR)
    results = []
    with Lab(LabConfig(replicas=3), root) as lab:
        click.echo("3 protools, 3 generators and 3 mailers up")
        for name in TOUR:
            click.echo(f"running {name}: {SCENARIOS[name].fault} ...")
            results.append(run_scenario(lab, SCENARIOS[name]))
        retried = results[0].records[0].workflow_id if results[0].records else None
        click.echo()
        click.echo(render(results))
        if retried:
            _say("The story of a retried step (as `metallica workflow show` tells it)")
            click.echo(history_table(lab.events(retried)))
    return 0 if all(result.ok for result in results) else 1
