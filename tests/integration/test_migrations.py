"""The migration policy, from the outside: ``metallica migrate`` is the deployment step, and a
service told not to migrate at start refuses a schema older than it knows, then starts once
migrated (SQLite; the same check on both backends is in the storage conformance suite)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from metallica.listeners import PortReservation

pytestmark = pytest.mark.slow


def _environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METALLICA_")}
    return env | {
        "METALLICA_DATABASE_URL": f"sqlite:///{tmp_path / 'mailer.db'}",
        "METALLICA_API_TOKEN": "t",
        "METALLICA_MAILDIR": str(tmp_path / "mail"),
        "METALLICA_MIGRATE_AT_START": "false",
    }


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    reservation = PortReservation()
    with reservation, reservation.listener() as listener, open(log, "wb") as output:
        fd = listener.fileno()
        process = subprocess.Popen(
            [sys.executable, "-m", "metallica", "serve", "mailer", "--fd", str(fd)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(fd,),
        )
        return process, reservation.port


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_service_that_does_not_migrate_waits_for_the_deployment_to_migrate(
    tmp_path: Path,
) -> None:
    env = _environment(tmp_path)
    log = tmp_path / "first.log"
    process, _ = _serve(env, log)
    try:
        status = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert status != 0
    assert "metallica migrate mailer" in log.read_text(), log.read_text()
    assert "metallica.startup_refused" in log.read_text()  # one line that says why,
    assert "Traceback" not in log.read_text()  # not a stack trace

    migrated = subprocess.run(
        [sys.executable, "-m", "metallica", "migrate", "mailer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("mailer: applied [1"), migrated.stdout

    log = tmp_path / "second.log"
    process, port = _serve(env, log)
    try:
        until = time.monotonic() + 30
        while not _ready(port) and time.monotonic() < until:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        assert _ready(port), log.read_text()
    finally:
        process.terminate()
        process.wait(10)


def test_a_replica_waits_while_another_holds_the_database_then_migrates(tmp_path: Path) -> None:
    # Replicas started together open and migrate one database at once. One that meets the
    # other's write lock past its lock timeout waits (and says so), rather than exiting: CI
    # saw the second protools replica of a stack die at start with status 3.
    import logging
    import sqlite3
    import threading

    from metallica.storage import Timeouts
    from metallica.storage.migrate import current_version, latest_version
    from metallica.web.app import open_migrated

    path = tmp_path / "protools.db"
    waited = threading.Event()

    class Waiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "database.waiting":
                waited.set()

    peer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    peer.execute("PRAGMA journal_mode = WAL")
    peer.execute("BEGIN IMMEDIATE")  # the other replica, in the middle of its migration

    def finish_when_waited_for() -> None:
        waited.wait(30)
        peer.execute("COMMIT")

    handler = Waiting()
    logging.getLogger("metallica.web").addHandler(handler)
    holder = threading.Thread(target=finish_when_waited_for)
    holder.start()
    try:
        database = open_migrated(
            f"sqlite:///{path}",
            "protools",
            timeouts=Timeouts(lock=0.2, statement=5, idle_in_transaction=5),
            pool_size=1,
            wait=20,
        )
    finally:
        waited.set()
        holder.join(35)
        peer.close()
        logging.getLogger("metallica.web").removeHandler(handler)
    try:
        assert waited.is_set()
        assert current_version(database) == latest_version(database)
    finally:
        database.close()
