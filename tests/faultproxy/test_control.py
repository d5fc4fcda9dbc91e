"""The control API (through Starlette's TestClient) and its client, driving real proxies.

``with TestClient(app)`` keeps one event loop running in a thread for the whole test, so the
proxies the API creates really listen and forward while the test talks to them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from metallica.faultproxy import (
    Down,
    Latency,
    ProxyControlClient,
    ProxyControlError,
    Timeout,
    control_app,
)
from metallica.listeners import PortReservation
from tests.faultproxy import servers
from tests.faultproxy.conftest import TestClient
from tests.faultproxy.servers import connect, exchange

PROBLEM = "application/problem+json"


@pytest.fixture
def api(echo: servers.TcpServer) -> Iterator[TestClient]:
    """The control API with a proxy ``pre`` (to the echo server) created at startup."""
    app = control_app([("pre", "127.0.0.1:0", f"127.0.0.1:{echo.port}")])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def port_of(proxy: dict[str, Any]) -> int:
    return int(str(proxy["listen"]).rsplit(":", 1)[1])


def works(port: int) -> bool:
    """Whether an echo round trip through ``port`` succeeds (False if refused)."""
    try:
        with connect(port) as sock:
            return exchange(sock, b"ping") == b"ping"
    except ConnectionRefusedError:
        return False


def problem_code(response: Any) -> str:
    """The code of a problem+json answer (and check that it is one)."""
    assert response.headers["content-type"] == PROBLEM, response.text
    body = response.json()
    assert body["status"] == response.status_code
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    return str(body["type"]).rsplit("/", 1)[-1]


# --- the API -------------------------------------------------------------------------------------


def test_health(api: TestClient) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "faultproxy", "pid": os.getpid()}


def test_proxies_given_at_startup_are_listed_and_work(
    api: TestClient, echo: servers.TcpServer
) -> None:
    [proxy] = api.get("/proxies").json()["proxies"]
    assert proxy["name"] == "pre"
    assert proxy["upstream"] == f"127.0.0.1:{echo.port}"
    assert proxy["enabled"] is True
    assert proxy["toxics"] == []
    assert port_of(proxy) != 0
    assert works(port_of(proxy))
    stats = api.get("/proxies/pre").json()["stats"]
    assert stats["connections_accepted"] == 1
    assert stats["bytes_upstream"] == stats["bytes_downstream"] == 4


def test_create_a_proxy_then_delete_it(api: TestClient, echo: servers.TcpServer) -> None:
    body = {"name": "made", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo.port}"}
    response = api.post("/proxies", json=body)
    assert response.status_code == 201, response.text
    port = port_of(response.json())
    assert works(port)
    assert [p["name"] for p in api.get("/proxies").json()["proxies"]] == ["made", "pre"]

    assert api.delete("/proxies/made").status_code == 204
    assert not works(port)
    assert api.get("/proxies/made").status_code == 404


def test_toxics_are_added_listed_and_removed(api: TestClient) -> None:
    port = port_of(api.get("/proxies/pre").json())
    latency = {"type": "latency", "attributes": {"latency_ms": 100}}
    response = api.post("/proxies/pre/toxics", json=latency)
    assert response.status_code == 201, response.text
    assert response.json() == {
        "type": "latency",
        "name": "latency",
        "direction": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency_ms": 100, "jitter_ms": 0},
    }

    assert api.post("/proxies/pre/toxics", json={"type": "down"}).status_code == 201
    assert not works(port)
    proxy = api.get("/proxies/pre").json()
    assert proxy["enabled"] is False
    assert [t["name"] for t in proxy["toxics"]] == ["latency", "down"]

    assert api.delete("/proxies/pre/toxics/down").status_code == 204
    started = time.perf_counter()
    assert works(port)
    assert time.perf_counter() - started >= 0.1  # the latency is still on

    assert api.delete("/proxies/pre/toxics").status_code == 204
    assert api.get("/proxies/pre/toxics").json() == {"toxics": []}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/proxies/pre/toxics", {"type": "earthquake"}, 422, "invalid-toxic"),
        (
            "POST",
            "/proxies/pre/toxics",
            {"type": "latency", "attributes": {"latency_ms": -1}},
            422,
            "invalid-toxic",
        ),
        (
            "POST",
            "/proxies/pre/toxics",
            {"type": "latency", "attributes": {"latency_ms": 1, "lag": 2}},
            422,
            "invalid-toxic",
        ),
        ("POST", "/proxies/pre/toxics", {"type": "timeout", "toxicity": 2}, 422, "invalid-toxic"),
        ("POST", "/proxies/pre/toxics", "not json", 422, "invalid-body"),
        ("POST", "/proxies/pre/toxics", [1, 2], 422, "invalid-body"),
        ("POST", "/proxies/nope/toxics", {"type": "down"}, 404, "proxy-not-found"),
        ("GET", "/proxies/nope", None, 404, "proxy-not-found"),
        ("GET", "/proxies/nope/toxics", None, 404, "proxy-not-found"),
        ("DELETE", "/proxies/nope", None, 404, "proxy-not-found"),
        ("DELETE", "/proxies/nope/toxics", None, 404, "proxy-not-found"),
        ("DELETE", "/proxies/pre/toxics/nope", None, 404, "toxic-not-found"),
        (
            "POST",
            "/proxies",
            {"name": "pre", "listen": "127.0.0.1:0", "upstream": "h:1"},
            409,
            "proxy-exists",
        ),
        (
            "POST",
            "/proxies",
            {"name": "x", "listen": "nohost", "upstream": "h:1"},
            422,
            "invalid-proxy",
        ),
        (
            "POST",
            "/proxies",
            {"name": "x", "listen": "127.0.0.1:0", "upstream": "h:0"},
            422,
            "invalid-proxy",
        ),
        (
            "POST",
            "/proxies",
            {"name": "a b", "listen": "127.0.0.1:0", "upstream": "h:1"},
            422,
            "invalid-proxy",
        ),
        ("POST", "/proxies", {"name": "x", "listen": "127.0.0.1:0"}, 422, "invalid-body"),
        (
            "POST",
            "/proxies",
            {"name": "x", "listen": "127.0.0.1:0", "upstream": "h:1", "on": 1},
            422,
            "invalid-proxy",
        ),
        ("PUT", "/proxies", {}, 405, "method-not-allowed"),
    ],
)
def test_errors_are_problem_documents(
    api: TestClient, method: str, path: str, body: Any, status: int, code: str
) -> None:
    if isinstance(body, str):
        response = api.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = api.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert problem_code(response) == code


def test_a_taken_toxic_name_or_port_is_a_conflict(api: TestClient, echo: servers.TcpServer) -> None:
    assert api.post("/proxies/pre/toxics", json={"type": "timeout"}).status_code == 201
    response = api.post("/proxies/pre/toxics", json={"type": "timeout"})
    assert (response.status_code, problem_code(response)) == (409, "toxic-exists")

    body = {"name": "clash", "listen": f"127.0.0.1:{echo.port}", "upstream": "h:1"}
    response = api.post("/proxies", json=body)
    assert (response.status_code, problem_code(response)) == (409, "listen-failed")
    assert "clash" not in [p["name"] for p in api.get("/proxies").json()["proxies"]]


# --- the client ----------------------------------------------------------------------------------


def test_the_client_drives_the_api(api: TestClient, echo: servers.TcpServer) -> None:
    control = ProxyControlClient("http://testserver", client=api)
    assert control.healthy()
    proxy = control.create_proxy("made", "127.0.0.1:0", f"127.0.0.1:{echo.port}")
    port = port_of(proxy)

    latency = Latency(latency_ms=100, jitter_ms=5, direction="both", toxicity=0.75)
    control.add_toxic("made", latency)
    control.add_toxic("made", Down(name="off"))
    assert control.toxics("made") == [latency, Down(name="off")]
    assert control.proxy("made")["enabled"] is False
    assert not works(port)

    control.remove_toxic("made", "off")
    assert works(port)
    control.clear("made")
    assert control.toxics("made") == []

    with pytest.raises(ProxyControlError) as caught:
        control.add_toxic("nope", Timeout())
    assert (caught.value.status, caught.value.code) == (404, "proxy-not-found")
    control.delete_proxy("made")
    assert [p["name"] for p in control.proxies()] == ["pre"]


@pytest.mark.slow
def test_serve_runs_the_control_api_as_a_process(echo: servers.TcpServer) -> None:
    reservation = PortReservation()
    control_port = reservation.port
    listener = reservation.listener()
    code = (
        "from metallica.faultproxy import serve; "
        f"serve('127.0.0.1', 0, [('echo', '127.0.0.1:0', '127.0.0.1:{echo.port}')],"
        f" log_level='warning', fd={listener.fileno()})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(listener.fileno(),),
    )
    listener.close()
    try:
        with ProxyControlClient(f"http://127.0.0.1:{control_port}", timeout=2.0) as control:
            deadline = time.monotonic() + 15
            while not control.healthy():
                assert process.poll() is None, "the control API process exited"
                assert time.monotonic() < deadline, "the control API did not come up"
                time.sleep(0.05)
            [proxy] = control.proxies()
            port = port_of(proxy)
            assert works(port)
            control.add_toxic("echo", Down())
            assert not works(port)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
        reservation.close()
    # uvicorn shuts down gracefully (stopping the proxies), then re-raises the signal.
    assert process.returncode in (0, -signal.SIGTERM), stderr.decode()
    assert b"Traceback" not in stderr, stderr.decode()
