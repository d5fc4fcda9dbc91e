"""The `metallica` command as users run it: the demo, migrate, serve's configuration errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from metallica.cli import main
from metallica.listeners import PortReservation

pytestmark = pytest.mark.slow


def metallica(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("METALLICA_")}
    return subprocess.run(
        [sys.executable, "-m", "metallica", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_demo_prints_a_password_the_mail_and_the_two_errors() -> None:
    result = metallica("demo")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    password = next(
        line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("password: ")
    )
    mail_line = next(line for line in out.splitlines() if line.startswith("mail file: "))
    assert "/maildir/new/" in mail_line
    assert f"Your new password is: {password}" in out
    assert "one mail: True; it holds the returned password: True" in out
    assert "HTTP 409 application/problem+json" in out
    assert "HTTP 422 application/problem+json" in out
    assert "stack stopped" in out


@pytest.mark.parametrize("backend", ["sqlite"])
def test_migrate_applies_once_then_is_up_to_date(tmp_path: Path, backend: str) -> None:
    url = f"sqlite:///{tmp_path}/generator.db"
    runner = CliRunner()

    first = runner.invoke(main, ["migrate", "generator", "--database-url", url])
    second = runner.invoke(main, ["migrate", "generator", "--database-url", url])

    assert first.exit_code == 0, first.output
    assert first.output.strip() == "generator: applied [1, 2]"
    assert second.output.strip() == "generator: up to date"


def test_serve_without_configuration_names_the_missing_variable() -> None:
    result = metallica("serve", "protools", "--port", "1", timeout=30)

    assert result.returncode == 2
    assert "METALLICA_DATABASE_URL is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_rejects_an_unsupported_database_url(tmp_path: Path) -> None:
    result = metallica(
        "serve", "generator", "--database-url", "mysql://x", "--api-token", "t", timeout=30
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "METALLICA_DATABASE_URL" in result.stderr


def test_help_explains_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])

    assert result.exit_code == 0
    for command in ("serve", "migrate", "up", "password", "workflow", "demo"):
        assert command in result.output


def test_up_runs_the_stack_until_interrupted_and_the_client_commands_use_it(
    tmp_path: Path,
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("METALLICA_")}
    up = subprocess.Popen(
        [sys.executable, "-m", "metallica", "up", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        lines = []
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C to stop." in line:
                break
        (protools,) = [line.split()[1] for line in lines if line.startswith("protools ")]
        assert protools.startswith("http://127.0.0.1:"), lines
        token_file = tmp_path / ".metallica" / "api-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"

        def client(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "metallica", *args, "--url", protools],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        created = client("password", "create", "mia")
        assert created.returncode == 0, created.stderr
        workflow_id = created.stderr.split()[-1]
        shown = client("workflow", "show", workflow_id)
        assert "completed" in shown.stdout
        assert "WorkflowCompleted" in shown.stdout
        assert created.stdout.strip() not in shown.stdout  # the password is not shown
        taken = client("password", "create", "mia")
        assert taken.returncode == 1
        assert "username-taken" in taken.stderr
    finally:
        up.send_signal(signal.SIGINT)
        rest = up.communicate(timeout=30)[0]
    assert up.returncode == 0, rest
    assert "stopping" in rest


def test_up_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with PortReservation() as taken:
        result = subprocess.run(
            [sys.executable, "-m", "metallica", "up", "--port", str(taken.port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{taken.port}" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
