"""Fixtures of the fault proxy tests: a ProxyThread and the servers behind it."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from metallica.faultproxy import ProxyThread
from tests.faultproxy import servers

# Starlette 1.10 wants ``httpx2`` for its TestClient and warns (an error here) when it finds
# only ``httpx``; the client works the same. Test modules import TestClient from here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["TestClient"]


@pytest.fixture
def proxies() -> Iterator[ProxyThread]:
    """Fault proxies on a loop in a thread; stopped (every connection closed) after the test."""
    with ProxyThread(seed=20240601) as thread:
        yield thread


@pytest.fixture
def echo() -> Iterator[servers.TcpServer]:
    with servers.TcpServer(servers.echo) as server:
        yield server


@pytest.fixture
def sink() -> Iterator[servers.TcpServer]:
    with servers.TcpServer(servers.sink) as server:
        yield server


@pytest.fixture
def blob() -> Iterator[servers.TcpServer]:
    with servers.TcpServer(servers.blob) as server:
        yield server


@pytest.fixture
def http_server() -> Iterator[servers.HttpServer]:
    with servers.HttpServer() as server:
        yield server
