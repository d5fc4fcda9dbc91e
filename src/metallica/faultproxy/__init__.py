"""A TCP fault proxy for fault-injection tests, in the spirit of Shopify's Toxiproxy.

Put a :class:`FaultProxy` between a client and a server (an HTTP service, PostgreSQL) and add
toxics: ``latency``, ``down``, ``timeout``, ``reset_peer``, ``limit_data``, ``slicer``,
``bandwidth``. Toxics act on new and already open connections. Drive proxies from asyncio
(:class:`FaultProxy`), from synchronous tests (:class:`ProxyThread`), or over HTTP as a process
of their own (:func:`serve`, :func:`control_app`, :class:`ProxyControlClient`).
"""

from __future__ import annotations

from metallica.faultproxy.client import ProxyControlClient, ProxyControlError
from metallica.faultproxy.control import control_app, describe_proxy, serve
from metallica.faultproxy.errors import (
    InvalidProxy,
    InvalidToxic,
    ListenFailed,
    ProxyExists,
    ToxicExists,
    UnknownProxy,
    UnknownToxic,
)
from metallica.faultproxy.proxy import FaultProxy
from metallica.faultproxy.registry import ProxyRegistry, format_address, parse_address
from metallica.faultproxy.runner import ProxyThread
from metallica.faultproxy.stats import ProxyStats
from metallica.faultproxy.toxics import (
    TOXIC_TYPES,
    Bandwidth,
    Direction,
    Down,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    Timeout,
    Toxic,
    describe_toxic,
    parse_toxic,
)

__all__ = [
    "TOXIC_TYPES",
    "Bandwidth",
    "Direction",
    "Down",
    "FaultProxy",
    "InvalidProxy",
    "InvalidToxic",
    "Latency",
    "LimitData",
    "ListenFailed",
    "ProxyControlClient",
    "ProxyControlError",
    "ProxyExists",
    "ProxyRegistry",
    "ProxyStats",
    "ProxyThread",
    "ResetPeer",
    "Slicer",
    "Timeout",
    "Toxic",
    "ToxicExists",
    "UnknownProxy",
    "UnknownToxic",
    "control_app",
    "describe_proxy",
    "describe_toxic",
    "format_address",
    "parse_address",
    "parse_toxic",
    "serve",
]
