"""A service started before its database waits for it, then serves (PostgreSQL only)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from metallica.faultproxy import Down, ProxyThread
from metallica.listeners import PortReservation
from metallica.password_generator.sealing import new_entry
from tests.pg_admin import create_database, drop_database, with_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def said_it_waited(log: str) -> bool:
    """The pool's or the service's log line for a failed try at the database."""
    return "error connecting" in log or "database.waiting" in log


def test_a_service_waits_for_its_database_then_serves(
    postgres_server_url: str, tmp_path: Path
) -> None:
    dbname = create_database(postgres_server_url)
    server = urlsplit(postgres_server_url)
    assert server.hostname is not None
    assert server.port is not None
    log = tmp_path / "generator.log"
    reservation = PortReservation()
    port = reservation.port
    with reservation, ProxyThread() as proxies:
        proxy_port = proxies.add_proxy("postgres", server.hostname, server.port)
        proxies.add_toxic("postgres", Down())
        through_proxy = with_database(
            postgres_server_url.replace(f":{server.port}/", f":{proxy_port}/"), dbname
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("METALLICA_")}
        env |= {
            "METALLICA_DATABASE_URL": through_proxy,
            "METALLICA_API_TOKEN": "t",
            "METALLICA_GENERATOR_KEYS": new_entry("k1"),
        }
        listener = reservation.listener()
        fd = str(listener.fileno())
        with open(log, "wb") as output, listener:
            process = subprocess.Popen(
                [sys.executable, "-m", "metallica", "serve", "generator", "--fd", fd],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
            )
        try:
            # Wait until the service has met the refused database and said so: a fixed sleep
            # raced a slow start on a loaded CI machine (the toxic went before the first try).
            until = time.monotonic() + 60
            while not said_it_waited(log.read_text()) and time.monotonic() < until:
                assert process.poll() is None, log.read_text()
                time.sleep(0.2)
            assert said_it_waited(log.read_text()), log.read_text()
            assert process.poll() is None, log.read_text()
            assert not healthy(f"http://127.0.0.1:{port}")

            proxies.remove_toxic("postgres", "down")
            until = time.monotonic() + 30
            while not healthy(f"http://127.0.0.1:{port}") and time.monotonic() < until:
                time.sleep(0.2)

            assert healthy(f"http://127.0.0.1:{port}"), log.read_text()
        finally:
            process.terminate()
            process.wait(10)
    drop_database(postgres_server_url, dbname)


def test_a_service_gives_up_on_its_database_when_its_wait_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each try is given what is left of the wait: a refused server costs seconds, not the
    # pool's ten at every try, and the log says how long it really waited.
    from metallica.storage import StorageUnavailable
    from metallica.web.app import open_migrated

    started = time.monotonic()
    with (
        caplog.at_level("WARNING", logger="metallica.web"),
        pytest.raises(StorageUnavailable) as raised,
    ):
        open_migrated("postgresql://127.0.0.1:1/x", "generator", pool_size=1, wait=6.0)
    elapsed = time.monotonic() - started
    assert elapsed < 6.0 + 3  # a try never runs past what is left of the wait
    assert "gave up after" in raised.value.detail
    assert "port 1 failed" in raised.value.detail  # the driver's reason, not "PoolTimeout"
    waits = [r for r in caplog.records if r.getMessage() == "database.waiting"]
    assert waits, "each failed try is logged"
    waited = [record.__dict__["waited_s"] for record in waits]
    assert waited == sorted(waited)
    assert waited[-1] <= elapsed
