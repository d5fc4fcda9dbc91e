"""An httpx client through the proxy: normal traffic, and the error each fatal toxic gives it.

The client keeps its connection alive between requests, as service clients do, so these tests
also show that toxics reach connections already open.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from metallica.faultproxy import (
    Bandwidth,
    Down,
    Latency,
    LimitData,
    ProxyThread,
    ResetPeer,
    Slicer,
    Timeout,
    Toxic,
)
from tests.faultproxy import servers


@pytest.fixture
def web(proxies: ProxyThread, http_server: servers.HttpServer) -> str:
    """The base URL of the HTTP server, through the proxy ``web``."""
    port = proxies.add_proxy("web", "127.0.0.1", http_server.port)
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(5.0, read=2.0)) as client:
        yield client


def hello(client: httpx.Client, web: str) -> None:
    response = client.get(f"{web}/hello")
    assert (response.status_code, response.content) == (200, b"hello")


def test_requests_pass_through_on_one_keep_alive_connection(
    proxies: ProxyThread, web: str, client: httpx.Client
) -> None:
    for _ in range(3):
        hello(client, web)
    response = client.get(f"{web}/big", params={"size": 1_000_000})
    assert response.content == servers.pattern(1_000_000)
    assert proxies.stats("web").connections_accepted == 1


@pytest.mark.parametrize(
    "toxic",
    [
        Latency(latency_ms=50, jitter_ms=20, direction="both"),
        Slicer(average_size=500, size_variation=400, delay_us=10),
        Bandwidth(rate_kb_per_s=2000),
    ],
    ids=lambda toxic: toxic.kind,
)
def test_slow_toxics_keep_responses_intact(
    proxies: ProxyThread, web: str, client: httpx.Client, toxic: Toxic
) -> None:
    hello(client, web)
    proxies.add_toxic("web", toxic)
    response = client.get(f"{web}/big", params={"size": 200_000})
    assert response.content == servers.pattern(200_000)
    assert proxies.stats("web").connections_accepted == 1


def test_latency_slows_requests_on_the_open_connection(
    proxies: ProxyThread, web: str, client: httpx.Client
) -> None:
    hello(client, web)
    proxies.add_toxic("web", Latency(latency_ms=200))
    started = time.perf_counter()
    hello(client, web)
    assert 0.2 <= time.perf_counter() - started < 1.5
    assert proxies.stats("web").connections_accepted == 1


def test_down_gives_connect_error_then_recovers(
    proxies: ProxyThread, web: str, client: httpx.Client
) -> None:
    hello(client, web)
    proxies.add_toxic("web", Down())
    with pytest.raises(httpx.ConnectError):
        client.get(f"{web}/hello")
    proxies.remove_toxic("web", "down")
    hello(client, web)


def test_timeout_gives_read_timeout(proxies: ProxyThread, web: str, client: httpx.Client) -> None:
    hello(client, web)
    proxies.add_toxic("web", Timeout())
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"{web}/hello", timeout=httpx.Timeout(5.0, read=0.3))
    proxies.remove_toxic("web", "timeout")
    hello(client, web)


def test_reset_peer_during_a_request_gives_read_error(
    proxies: ProxyThread, web: str, client: httpx.Client
) -> None:
    hello(client, web)
    proxies.add_toxic("web", ResetPeer(timeout_ms=100))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.get(f"{web}/slow", params={"ms": 500})


def test_reset_peer_at_once_fails_every_request(
    proxies: ProxyThread, web: str, client: httpx.Client
) -> None:
    hello(client, web)
    proxies.add_toxic("web", ResetPeer())
    # The open connection is reset; the new one is reset as it is accepted, which the client
    # may see while connecting, sending (then reading) or reading.
    for _ in range(3):
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)):
            client.get(f"{web}/hello")


def test_limit_data_cuts_the_response(proxies: ProxyThread, web: str, client: httpx.Client) -> None:
    hello(client, web)
    before = proxies.stats("web").bytes_downstream
    proxies.add_toxic("web", LimitData(bytes=1000))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(f"{web}/big", params={"size": 100_000})
    assert proxies.stats("web").bytes_downstream - before == 1000
