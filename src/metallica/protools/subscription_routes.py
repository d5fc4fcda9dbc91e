"""protools' HTTP routes for consumer groups (``/v1/subscriptions``): only HTTP here, each route
reads its request, hands plain values to :class:`~.subscriptions.Subscriptions` in a thread,
and answers (the rules are in :mod:`.groups` and :mod:`.subscriptions`).

A group reads the whole log, so only a client named in ``METALLICA_LOG_READERS`` may create,
read or consume one (403 for any other). A pull may wait for events (``wait``, up to 30 s): it
looks again when the replica's log tailer saw the log grow (:meth:`.LogTailer.watch`), after
an ack, nack, rewind or replay on this replica, when an event held back becomes free (a lease
run out, a nack's delay passed), and every ``METALLICA_LOG_POLL_INTERVAL`` (another replica's
ack may free a workflow's next event), until it has some or its time is up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica.errors import BadRequest, Forbidden, UnknownGroup
from metallica.protools import groups, log, store
from metallica.protools.engine import RecordedEvent
from metallica.protools.group_store import ParkedEvent
from metallica.protools.history import iso_time
from metallica.protools.subscriptions import Delivery, GroupView, Subscriptions
from metallica.protools.tailer import LogTailer
from metallica.threads import in_thread
from metallica.web.app import authenticated
from metallica.web.auth import Credentials
from metallica.web.requests import json_object, known_query

PARKED_LIMIT_DEFAULT, PARKED_LIMIT_MAX = 100, 1000
CREATE_FIELDS = ("name", "start", "types", "ack_wait", "max_deliver", "max_ack_pending")


def view_json(view: GroupView) -> dict[str, Any]:
    return {
        "name": view.name,
        **view.settings.as_json(),
        "position": view.filled_to,
        "head": view.head,
        "lag": {"positions": view.lag_positions, "seconds": round(view.lag_seconds, 3)},
        "unfinished": view.unfinished,
        "in_flight": view.in_flight,
        "parked": view.parked,
        "redeliveries": view.redeliveries,
        "members": [
            {"member": member, "in_flight": count} for member, count in view.members.items()
        ],
    }


def subscription_routes(
    credentials: Credentials,
    log_readers: frozenset[str],
    event_log: Callable[[Request], log.EventLog],
    subscriptions: Callable[[Request], Subscriptions],
    tailer: Callable[[Request], LogTailer],
    *,
    poll_interval: float,
) -> list[Route]:
    """The routes, each behind the clients' tokens and the right to read the whole log.
    ``poll_interval``: how often a waiting pull looks again for what nothing announces."""

    def entry(request: Request, event: RecordedEvent) -> dict[str, Any]:
        return event_log(request).entry(store.LoggedEvent(event, None))

    def message(request: Request, delivery: Delivery) -> dict[str, Any]:
        return {**entry(request, delivery.event), "deliveries": delivery.deliveries}

    def parked_json(request: Request, parked: ParkedEvent) -> dict[str, Any]:
        return {
            **entry(request, parked.event),
            "deliveries": parked.deliveries,
            "member": parked.member,
            "parked_at": iso_time(parked.parked_at),
        }

    def name_in_path(request: Request) -> str:
        name: str = request.path_params["name"]
        if not groups.NAME.fullmatch(name):  # no group could have it
            raise UnknownGroup(f"no consumer group named {name!r}", group=name)
        return name

    async def create(request: Request) -> Response:
        body = await json_object(request, fields=CREATE_FIELDS)
        name = body.get("name")
        if not isinstance(name, str):
            name = ""
        name = groups.group_name(name)
        settings, start = groups.settings_of(body), groups.start_of(body)
        view, created = await in_thread(subscriptions(request).create, name, settings, start)
        headers = {"Location": f"/v1/subscriptions/{name}"}
        return JSONResponse(view_json(view), 201 if created else 200, headers=headers)

    async def list_groups(request: Request) -> Response:
        known_query(request)
        views = await in_thread(subscriptions(request).all)
        return JSONResponse({"groups": [view_json(view) for view in views]})

    async def show(request: Request) -> Response:
        known_query(request)
        view = await in_thread(subscriptions(request).show, name_in_path(request))
        return JSONResponse(view_json(view))

    async def delete(request: Request) -> Response:
        await in_thread(subscriptions(request).delete, name_in_path(request))
        return Response(status_code=204)

    async def pull(request: Request) -> Response:
        name = name_in_path(request)
        body = await json_object(request, fields=("member", "batch", "wait"))
        member = groups.member_name(body)
        batch, wait = groups.batch_of(body)
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        with tailer(request).watch() as grew:
            while True:
                grew.clear()
                pulled = await in_thread(subscriptions(request).take, name, member, batch)
                left = until - loop.time()
                if pulled.deliveries or left <= 0:
                    break
                # New events wake it (the tailer), so do the acks, nacks, rewinds and replays
                # this replica serves, and the time at which an event held back becomes free
                # (a lease run out, a nack's delay passed); another replica's acks, which no
                # one announces, at the next look.
                free_in = pulled.free_in if pulled.free_in is not None else left
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, free_in + 0.01, poll_interval)):
                        await grew.wait()
        return JSONResponse({"messages": [message(request, d) for d in pulled.deliveries]})

    async def ack(request: Request) -> Response:
        name = name_in_path(request)
        body = await json_object(request, fields=("member", "positions"))
        positions = groups.positions_of(body)
        await in_thread(subscriptions(request).ack, name, groups.member_name(body), positions)
        tailer(request).wake_watchers()  # a workflow's next event may be free now
        return JSONResponse({"acked": len(positions)})

    async def nack(request: Request) -> Response:
        name = name_in_path(request)
        body = await json_object(request, fields=("member", "positions", "delay"))
        member, positions = groups.member_name(body), groups.positions_of(body)
        parked = await in_thread(
            subscriptions(request).nack, name, member, positions, groups.nack_delay(body)
        )
        tailer(request).wake_watchers()
        return JSONResponse({"nacked": len(positions), "parked": parked})

    async def extend(request: Request) -> Response:
        name = name_in_path(request)
        body = await json_object(request, fields=("member", "positions"))
        member, positions = groups.member_name(body), groups.positions_of(body)
        ack_wait = await in_thread(subscriptions(request).extend, name, member, positions)
        return JSONResponse({"extended": len(positions), "ack_wait": ack_wait})

    async def rewind(request: Request) -> Response:
        name = name_in_path(request)
        body = await json_object(request, fields=("to",))
        to = groups.start_of(body, field="to")
        await in_thread(subscriptions(request).rewind, name, to)
        tailer(request).wake_watchers()
        view = await in_thread(subscriptions(request).show, name)
        return JSONResponse(view_json(view))

    async def parked(request: Request) -> Response:
        name = name_in_path(request)
        known_query(request, "after", "limit")
        query = request.query_params
        after = log.position(query["after"], field="after") if "after" in query else 0
        limit = PARKED_LIMIT_DEFAULT
        if "limit" in query:
            limit = log.position(query["limit"], field="limit")
            if not 1 <= limit <= PARKED_LIMIT_MAX:
                raise BadRequest(f"limit must be from 1 to {PARKED_LIMIT_MAX}", field="limit")
        found = await in_thread(subscriptions(request).parked, name, after=after, limit=limit)
        following = found[-1].event.global_position if len(found) == limit else None
        return JSONResponse({"parked": [parked_json(request, p) for p in found], "next": following})

    async def replay(request: Request) -> Response:
        name = name_in_path(request)
        body = await json_object(request, fields=("positions",))
        positions = groups.positions_of(body) if "positions" in body else None
        replayed = await in_thread(subscriptions(request).replay, name, positions)
        tailer(request).wake_watchers()
        return JSONResponse({"replayed": replayed})

    def reader(endpoint: Callable[[Request], Awaitable[Response]]) -> Any:
        async def whole_log_only(request: Request) -> Response:
            if request.state.caller not in log_readers:
                raise Forbidden(
                    "consumer groups read the whole log: this client is not named in "
                    "METALLICA_LOG_READERS"
                )
            return await endpoint(request)

        whole_log_only.__name__ = endpoint.__name__
        return authenticated(credentials, whole_log_only)

    prefix = "/v1/subscriptions"
    return [
        Route(prefix, reader(create), methods=["POST"]),
        Route(prefix, reader(list_groups), methods=["GET"]),
        Route(prefix + "/{name}", reader(show), methods=["GET"]),
        Route(prefix + "/{name}", reader(delete), methods=["DELETE"]),
        Route(prefix + "/{name}/pull", reader(pull), methods=["POST"]),
        Route(prefix + "/{name}/ack", reader(ack), methods=["POST"]),
        Route(prefix + "/{name}/nack", reader(nack), methods=["POST"]),
        Route(prefix + "/{name}/extend", reader(extend), methods=["POST"]),
        Route(prefix + "/{name}/rewind", reader(rewind), methods=["POST"]),
        Route(prefix + "/{name}/parked", reader(parked), methods=["GET"]),
        Route(prefix + "/{name}/replay", reader(replay), methods=["POST"]),
    ]
