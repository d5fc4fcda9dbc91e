"""Pooled HTTP clients towards the services, one per destination, spread over its replicas.

A call's replica is chosen from its key and attempt number: attempts of one call rotate over the
replicas, so a retry lands on another replica than the attempt before it (failover), while
different workflows spread evenly. Transport failures are classified into retry reasons, and
whether the service may have acted on the call (``in_doubt``).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence

import httpx

from metallica.faults import ATTEMPT_HEADER
from metallica.protools.engine import Call, Outcome, Response, Retry


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only); None if absent or odd."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class ServiceClients:
    def __init__(
        self,
        replicas: Mapping[str, Sequence[str]],
        *,
        token: str,
        connect_timeout: float,
        call_timeout: float,
        max_connections: int,
    ) -> None:
        """``max_connections`` per service: the relay's delivery slots, so that a call never
        queues for a connection (and a wait for one is never mistaken for a connect timeout)."""
        self._replicas = {
            name: [url.rstrip("/") for url in urls] for name, urls in replicas.items()
        }
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        timeout = httpx.Timeout(call_timeout, connect=connect_timeout, pool=call_timeout)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._clients = {
            name: httpx.AsyncClient(timeout=timeout, limits=limits) for name in self._replicas
        }

    def replica_for(self, call: Call, attempt: int) -> str:
        """The base URL for ``attempt`` (1-based) of ``call``."""
        urls = self._replicas[call.destination]
        start = zlib.crc32(call.idempotency_key.encode())
        return urls[(start + attempt - 1) % len(urls)]

    async def send(
        self, call: Call, attempt: int, interpret: Callable[[Response], Outcome]
    ) -> tuple[str, Outcome]:
        """Make one attempt of ``call``; return the replica used and the classified outcome."""
        base = self.replica_for(call, attempt)
        client = self._clients[call.destination]
        try:
            answer = await client.request(
                call.method,
                base + call.path,
                content=json.dumps(call.body).encode(),
                headers={
                    **self._headers,
                    "Idempotency-Key": call.idempotency_key,
                    ATTEMPT_HEADER: str(attempt),
                },
            )
        except httpx.ConnectTimeout:
            return base, Retry("connect-timeout", "no connection within the connect timeout", False)
        except httpx.ConnectError:
            return base, Retry("connection-refused", "the service refused the connection", False)
        except httpx.PoolTimeout:
            return base, Retry("no-connection", "no pooled connection was free", False)
        except httpx.TimeoutException:
            return base, Retry("timeout", "no answer within the call timeout", True)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            return base, Retry("reset", "the connection broke before the answer", True)
        except httpx.HTTPError as error:
            return base, Retry("network-error", type(error).__name__, True)
        try:
            body = answer.json()
        except ValueError:
            body = {}
        response = Response(
            answer.status_code,
            body if isinstance(body, dict) else {},
            parse_retry_after(answer.headers.get("retry-after")),
        )
        return base, interpret(response)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
