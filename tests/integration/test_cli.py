"""The `metallica` command as users run it: the demo, migrate, serve's configuration errors."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from metallica.cli import main
from metallica.listeners import PortReservation

pytestmark = pytest.mark.slow


def metallica(
    *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``metallica ARGS`` as a user runs it: no METALLICA_ variable from this environment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("METALLICA_")}
    return subprocess.run(
        [sys.executable, "-m", "metallica", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
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


class Output:
    """A process's output lines, read by a thread, waited on with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        self._stream = process.stdout
        self._reader = threading.Thread(target=self._read, args=(self._stream,), daemon=True)
        self._reader.start()

    def rest(self) -> str:
        """Everything not yet taken, once the process has ended (its output closed)."""
        self._reader.join(timeout=30)
        self._stream.close()
        return "".join(self.lines.get() for _ in range(self.lines.qsize()))

    def _read(self, stream: Iterable[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def until(self, text: str, seconds: float = 60) -> list[str]:
        """The lines up to the first one holding ``text``."""
        deadline = time.monotonic() + seconds
        taken = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} in {seconds} s: {self.seen}") from None
            self.seen.append(line)
            taken.append(line)
            if text in line:
                return taken


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
        output = Output(up)
        lines = output.until("Ctrl-C to stop.")
        (protools,) = [line.split()[1] for line in lines if line.startswith("protools ")]
        (generator,) = [line.split()[1] for line in lines if line.startswith("generator ")]
        assert protools.startswith("http://127.0.0.1:"), lines
        token_file = tmp_path / ".metallica" / "api-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        (tmp_path / "deeper" / "still").mkdir(parents=True)

        def client(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "metallica", *args, "--url", protools],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        created = client("password", "create", "mia")
        assert created.returncode == 0, created.stderr
        password = created.stdout.strip()
        assert len(password) == 20
        workflow_id, key = created.stderr.split()[1], created.stderr.split()[-1].rstrip(")")
        shown = client("workflow", "show", workflow_id)
        assert "completed" in shown.stdout
        assert "WorkflowCompleted" in shown.stdout
        assert password not in shown.stdout  # the password is not shown
        # The result, on stdout alone; the same command with the same key resumes, never twice.
        assert client("workflow", "result", workflow_id).stdout.strip() == password
        again = client("password", "create", "mia", "--key", key)
        assert (again.returncode, again.stdout.strip()) == (0, password)
        taken = client("password", "create", "mia")
        assert taken.returncode == 1
        assert "username-taken" in taken.stderr
        assert "; workflow " in taken.stderr  # the failed workflow is named
        assert taken.stdout == ""

        # Still running after --wait 0: nothing on stdout, exit 3, how to get it on stderr.
        running = client("password", "create", "noa", "--wait", "0")
        assert running.returncode == 3, running.stderr
        assert running.stdout == ""
        assert "still running: workflow" in running.stderr
        assert "metallica workflow result" in running.stderr
        assert "--key" in running.stderr
        noa = running.stderr.split("still running: workflow ")[1].split()[0]
        noa_password = client("workflow", "result", noa).stdout.strip()
        assert len(noa_password) == 20

        # The token is found from a subdirectory too; the listing is this client's, newest first.
        listed = client("workflow", "list", cwd=tmp_path / "deeper" / "still")
        assert listed.returncode == 0, listed.stderr
        rows = [line.split() for line in listed.stdout.splitlines()[2:]]
        assert [row[0] for row in rows][:3] == [noa, rows[1][0], rows[2][0]]
        assert {row[3] for row in rows} == {"mia", "noa"}
        assert "failed" in {row[1] for row in rows}  # the second mia
        completed = client("workflow", "list", "--status", "completed", "--limit", "1")
        assert len(completed.stdout.splitlines()) == 3
        assert "more: metallica workflow list --after " in completed.stderr

        bad_wait = client("password", "create", "zoe", "--wait", "-1")
        assert bad_wait.returncode == 2
        assert "--wait" in bad_wait.stderr

        # A service that dies is reported at once and started again.
        pid = httpx.get(generator + "/healthz").json()["pid"]
        os.kill(pid, signal.SIGKILL)
        died = output.until("generator-1 exited with status -9")
        assert "starting it again" in died[-1]
        output.until("generator-1 is back")
        assert httpx.get(generator + "/healthz").json()["pid"] != pid
        assert client("password", "create", "ivy").returncode == 0
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)
        rest = output.rest()
    assert up.returncode == 0, rest
    assert "stopping" in rest


def test_the_client_says_where_it_looked_for_the_token(tmp_path: Path) -> None:
    result = metallica("workflow", "list", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert f"looked in {tmp_path}/.metallica/api-token" in result.stderr
    assert "METALLICA_API_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with PortReservation() as taken:
        result = metallica("up", "--port", str(taken.port), cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert f"127.0.0.1:{taken.port}" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / ".metallica" / "api-token").exists()  # nothing left of a failed up


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("up", "--port", "0", "--database-url", "postgresql://127.0.0.1:1/x"), "127.0.0.1"),
        (("migrate", "generator", "--database-url", "postgresql://127.0.0.1:1/x"), "port 1"),
        (("migrate", "generator", "--database-url", "mysql://x"), "sqlite:///"),
        (("serve", "generator", "--log-level", "bogus"), "'bogus' is not one of"),
        (("proxy", "toxic", "gen", "down", "--control", "http://127.0.0.1:1"), "127.0.0.1:1"),
        (("password", "create", "x", "--token", "t", "--url", "http://127.0.0.1:1"), "reach"),
        (("workflow", "result", "x", "--token", "t", "--wait", "-1"), "--wait"),
    ],
    ids=["up-db", "migrate-db", "migrate-mysql", "log-level", "proxy", "client", "wait"],
)
def test_a_failure_is_one_line_without_a_traceback(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    result = metallica(*args, cwd=tmp_path, timeout=60)
    assert result.returncode in (1, 2), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert says in errors[0], result.stderr
    assert not (tmp_path / ".metallica" / "api-token").exists()  # nothing written for a failure


def test_a_doubled_prefix_is_gone() -> None:
    result = metallica("serve", "mailer", "--database-url", "bogus", "--api-token", "t", timeout=30)
    assert result.returncode == 2
    assert "METALLICA_DATABASE_URL: METALLICA_DATABASE_URL" not in result.stderr
    assert "METALLICA_DATABASE_URL must start with" in result.stderr
