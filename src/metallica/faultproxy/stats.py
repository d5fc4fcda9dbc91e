"""Counters of one proxy: connections accepted and bytes forwarded each way."""

from __future__ import annotations

from dataclasses import dataclass

from metallica.faultproxy.toxics import Flow


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of a proxy's counters.

    Bytes are counted when written to the other side, so data a toxic dropped or cut off is
    not counted.
    """

    connections_accepted: int
    connections_active: int
    bytes_upstream: int
    bytes_downstream: int


class Counters:
    """The live counters a proxy and its connections update (on the proxy's event loop)."""

    def __init__(self) -> None:
        self.connections_accepted = 0
        self.bytes_upstream = 0
        self.bytes_downstream = 0

    def forwarded(self, flow: Flow, count: int) -> None:
        if flow == "upstream":
            self.bytes_upstream += count
        else:
            self.bytes_downstream += count

    def snapshot(self, active: int) -> ProxyStats:
        return ProxyStats(
            connections_accepted=self.connections_accepted,
            connections_active=active,
            bytes_upstream=self.bytes_upstream,
            bytes_downstream=self.bytes_downstream,
        )
