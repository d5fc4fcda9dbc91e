"""A stack checks that the process answering on a replica's port is the one it started: a
second `up`, or anything else on that port, is never taken for the service."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from metallica.listeners import PortReservation
from metallica.stack import LocalStack, Replica


class Impostor(http.server.BaseHTTPRequestHandler):
    """A server answering /healthz as a healthy service would, with another process id."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "service": "generator", "pid": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    """A replica whose started process is alive (it sleeps) while an impostor holds its port."""
    reservation = PortReservation()
    server = http.server.HTTPServer(("127.0.0.1", 0), Impostor, bind_and_activate=False)
    server.socket.close()
    server.socket = reservation.listener()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    started = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield Replica("generator", 0, reservation, {}, tmp_path / "g.log", process=started)
    finally:
        started.kill()
        started.wait()
        server.shutdown()
        server.server_close()
        reservation.close()


def test_a_healthy_answer_from_another_process_is_refused(replica: Replica, tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, "token")
    with pytest.raises(RuntimeError, match="another process \\(pid 1\\) answers"):
        stack.wait_healthy(replica, timeout=10)
