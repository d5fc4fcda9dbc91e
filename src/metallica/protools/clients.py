"""Pooled HTTP clients towards the services, one per destination, spread over its replicas.

A call's replica is chosen from its key and attempt number: attempts of one call rotate over the
replicas, so a retry lands on another replica than the attempt before it (failover), while
different workflows spread evenly. A replica is a configured base URL, or one address of a
configured DNS name (``protools/resolver.py``: Compose gives all of a service's replicas one
name). A call returns what the service answered (a :class:`~engine.Response`: the step that made
it interprets it), or the transport's failure, classified here into a retry reason and whether
the service may have acted on the call (``in_doubt``).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence

import aiohttp

from metallica import deadlines, tracing
from metallica.deadlines import DEADLINE_HEADER
from metallica.faults import ATTEMPT_HEADER
from metallica.protools.engine import Call, Response, Retry
from metallica.protools.resolver import Resolve, ServiceReplicas, Target, resolve_addresses

# What an attempt comes back with: the service's answer, or a transport failure (no answer).
Answer = Response | Retry


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
    """aiohttp client sessions, one per service, each with a pool of ``max_connections``.

    aiohttp's client, not httpx's: on this workload it costs a fraction of the CPU per call
    (see ``bench/README.md``). The timeouts keep their meaning: ``connect_timeout`` to open a
    connection (a failure there is not in doubt: nothing was sent), ``call_timeout`` for the
    answer, between any two reads and in all.
    """

    def __init__(
        self,
        replicas: Mapping[str, Sequence[str]],
        *,
        token: str,
        connect_timeout: float,
        call_timeout: float,
        max_connections: int,
        resolve: Resolve = resolve_addresses,
    ) -> None:
        """``max_connections`` per service: the relay's delivery slots, so that a call never
        queues for a connection (and a wait for one is never mistaken for a connect timeout)."""
        self._replicas = {
            name: ServiceReplicas(urls, resolve=resolve) for name, urls in replicas.items()
        }
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            # How long we wait for each answer: the service drops work we gave up on.
            DEADLINE_HEADER: deadlines.header_value(call_timeout),
        }
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout + call_timeout,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=call_timeout,
        )
        self._sessions = {
            name: aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0),
                headers=self._headers,
                timeout=self._timeout,
                skip_auto_headers=("User-Agent",),
            )
            for name in self._replicas
        }

    def replica_for(self, call: Call, attempt: int) -> str:
        """The base URL for ``attempt`` (1-based) of ``call``."""
        return self._target_for(call, attempt).url

    def _target_for(self, call: Call, attempt: int) -> Target:
        targets = self._replicas[call.destination].targets()
        start = zlib.crc32(call.idempotency_key.encode())
        return targets[(start + attempt - 1) % len(targets)]

    async def send(self, call: Call, attempt: int) -> tuple[str, Answer]:
        """Make one attempt of ``call``; return the replica used and what the service answered,
        or, when it did not, the transport's failure as a :class:`~engine.Retry`."""
        replicas = self._replicas[call.destination]
        if not replicas.looked_up:
            await replicas.ready()
        target = self._target_for(call, attempt)
        base = target.url
        session = self._sessions[call.destination]
        headers = {"Idempotency-Key": call.idempotency_key, ATTEMPT_HEADER: str(attempt)}
        # The trace of the work making the call (the accepting request's, or the relay's for
        # the workflow) under a new span: the service's log lines carry its trace id.
        traceparent = tracing.outgoing_header()
        if traceparent is not None:
            headers[tracing.TRACEPARENT] = traceparent
        if target.host is not None:
            headers["Host"] = target.host  # connected to one address of the configured name
        try:
            async with session.request(
                call.method, base + call.path, data=json.dumps(call.body), headers=headers
            ) as answer:
                status, raw = answer.status, await answer.read()
                retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        except aiohttp.ConnectionTimeoutError:
            return base, Retry("connect-timeout", "no connection within the connect timeout", False)
        except aiohttp.ClientConnectorError:
            return base, Retry("connection-refused", "the service refused the connection", False)
        except (aiohttp.SocketTimeoutError, TimeoutError):
            return base, Retry("timeout", "no answer within the call timeout", True)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError):
            return base, Retry("reset", "the connection broke before the answer", True)
        except aiohttp.ClientError as error:
            return base, Retry("network-error", type(error).__name__, True)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        return base, Response(status, body if isinstance(body, dict) else {}, retry_after)

    async def aclose(self) -> None:
        for replicas in self._replicas.values():
            await replicas.aclose()
        for session in self._sessions.values():
            await session.close()
