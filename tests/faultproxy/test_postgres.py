"""PostgreSQL through the proxy: psycopg works normally, and fails as it should under toxics."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from metallica.faultproxy import Down, Latency, ProxyThread, ResetPeer

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxied_url(proxies: ProxyThread, postgres_server_url: str) -> str:
    """The test server's URL, through the proxy ``pg``."""
    params = conninfo_to_dict(postgres_server_url)
    port = proxies.add_proxy("pg", str(params["host"]), int(str(params["port"])))
    return make_conninfo(postgres_server_url, host="127.0.0.1", port=port, connect_timeout=3)


@pytest.fixture
def connection(proxied_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(proxied_url, autocommit=True) as connection:
        yield connection


def select_one(connection: psycopg.Connection[tuple[object, ...]]) -> object:
    row = connection.execute("SELECT 1").fetchone()
    return None if row is None else row[0]


def test_queries_pass_and_latency_slows_them(
    proxies: ProxyThread, connection: psycopg.Connection[tuple[object, ...]]
) -> None:
    assert select_one(connection) == 1
    proxies.add_toxic("pg", Latency(latency_ms=200))
    started = time.perf_counter()
    assert select_one(connection) == 1
    assert 0.2 <= time.perf_counter() - started < 1.5


def test_reset_peer_breaks_the_open_connection(
    proxies: ProxyThread, connection: psycopg.Connection[tuple[object, ...]]
) -> None:
    assert select_one(connection) == 1
    proxies.add_toxic("pg", ResetPeer())
    with pytest.raises(psycopg.OperationalError):
        select_one(connection)
    assert connection.closed


def test_down_refuses_connections_until_removed(
    proxies: ProxyThread, proxied_url: str, connection: psycopg.Connection[tuple[object, ...]]
) -> None:
    proxies.add_toxic("pg", Down())
    with pytest.raises(psycopg.OperationalError):
        select_one(connection)
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(proxied_url).close()
    proxies.remove_toxic("pg", "down")
    with psycopg.connect(proxied_url) as again:
        assert select_one(again) == 1
