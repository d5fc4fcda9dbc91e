"""The consumer groups' part of protools' OpenAPI document (``/v1/subscriptions``); every limit
from :mod:`metallica.protools.groups`, which enforces it."""

from __future__ import annotations

import copy
from typing import Any

from metallica.protools import groups
from metallica.protools.history import CURSOR_DIGITS
from metallica.protools.subscription_routes import PARKED_LIMIT_MAX
from metallica.web.openapi import (
    AT_THE_END,
    UNAUTHORIZED,
    UNAVAILABLE,
    command_body,
    json_body,
    problem,
)
from metallica.web.requests import MAX_BODY_BYTES, MAX_JSON_DEPTH

TAG = "subscriptions"
WHO = (
    "Only a client named in METALLICA_LOG_READERS may use consumer groups (they read the whole "
    "log); any other gets 403."
)
NAME = {
    "type": "string",
    "pattern": f"^{groups.NAME.pattern}{AT_THE_END}",
    "examples": ["billing", "audit.v2"],
}
MEMBER = {
    "type": "string",
    "pattern": f"^{groups.MEMBER.pattern}{AT_THE_END}",
    "description": "the member's name, chosen by the member: what it holds is leased to it",
    "examples": ["worker-1"],
}
POSITIONS = {
    "type": "array",
    "minItems": 1,
    "maxItems": groups.POSITIONS_MAX,
    "items": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    "description": "log positions of events the member was handed",
}
START = {
    "anyOf": [
        {"enum": list(groups.STARTS)},
        {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    ],
    "description": "start (the whole log), end (the log's head when asked) or a position: the "
    "group reads the events after it; a position past the head is a 404",
}
NAME_IN_PATH = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the group's name (one no group could have: 404 unknown-group)",
    "schema": NAME,
}
UNKNOWN = problem("unknown-group: no consumer group has this name")
FORBIDDEN = problem("forbidden: this client may not read the whole log")
NOT_LEASED = problem(
    "not-leased: some of these events are not leased to this member (acked, never delivered "
    "to it, or delivered to another since its lease ran out): nothing was changed; the "
    "problem's positions lists them"
)


def _errors(*, body: bool) -> dict[str, Any]:
    errors: dict[str, Any] = {
        "401": UNAUTHORIZED,
        "403": FORBIDDEN,
        "503": UNAVAILABLE,
    }
    if body:
        errors |= {
            "413": problem(f"payload-too-large: the body is over {MAX_BODY_BYTES} bytes"),
            "415": problem("unsupported-media-type: the body must be sent as application/json"),
            "422": problem(
                f"invalid-body (not a JSON object, nested deeper than {MAX_JSON_DEPTH}, an "
                "unknown field, a field missing, of the wrong type or out of range; field "
                "names it)"
            ),
        }
    return errors


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def _bare(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in schema.items() if key != "description"}


def subscription_paths(logged: dict[str, Any]) -> dict[str, Any]:
    """The paths of ``/v1/subscriptions``; ``logged``: an event as the log shows it."""
    settings = {
        "types": {
            "type": "array",
            "maxItems": groups.TYPES_MAX,
            "items": {"type": "string", "pattern": f"^{groups.TYPE_NAME.pattern}{AT_THE_END}"},
            "description": "only events of these types (default: all)",
        },
        "ack_wait": {
            "type": "number",
            "minimum": groups.ACK_WAIT_MIN,
            "maximum": groups.ACK_WAIT_MAX,
            "description": "seconds a member has to ack an event before it goes to a member "
            f"again (default {groups.ACK_WAIT_DEFAULT:g})",
        },
        "max_deliver": {
            "type": "integer",
            "minimum": 1,
            "maximum": groups.MAX_DELIVER_MAX,
            "description": "deliveries without an ack after which an event is parked "
            f"(default {groups.MAX_DELIVER_DEFAULT})",
        },
        "max_ack_pending": {
            "type": "integer",
            "minimum": 1,
            "maximum": groups.MAX_ACK_PENDING_MAX,
            "description": "events leased to one member at most "
            f"(default {groups.MAX_ACK_PENDING_DEFAULT})",
        },
    }
    count = {"type": "integer", "minimum": 0}
    group = _object(
        {
            "name": NAME,
            **{name: _bare(schema) for name, schema in settings.items()},
            "position": {**count, "description": "the group has read the log up to here"},
            "head": {**count, "description": "the log's head when asked"},
            "lag": _object(
                {"positions": count, "seconds": {"type": "number", "minimum": 0}},
                ["positions", "seconds"],
            ),
            "unfinished": count,
            "in_flight": count,
            "parked": count,
            "redeliveries": count,
            "members": {
                "type": "array",
                "items": _object({"member": MEMBER, "in_flight": count}, ["member", "in_flight"]),
            },
        },
        [
            "name",
            *settings,
            *("position", "head", "lag", "unfinished", "in_flight", "parked"),
            *("redeliveries", "members"),
        ],
    )
    message = copy.deepcopy(logged)
    message["required"] = [*message["required"], "deliveries"]
    message["properties"]["deliveries"] = {
        "type": "integer",
        "minimum": 1,
        "description": "how many times this event was handed out, this time included",
    }
    parked = copy.deepcopy(message)
    parked["required"] = [*parked["required"], "member", "parked_at"]
    parked["properties"] |= {
        "member": {"anyOf": [MEMBER, {"type": "null"}]},
        "parked_at": {"type": "string", "format": "date-time"},
    }
    member_positions = _object({"member": MEMBER, "positions": POSITIONS}, ["member", "positions"])
    group_json = json_body(group, "the group")

    def operation(
        operation_id: str,
        summary: str,
        responses: dict[str, Any],
        *,
        body: dict[str, Any] | None = None,
        parameters: list[dict[str, Any]] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        found: dict[str, Any] = {
            "operationId": operation_id,
            "tags": [TAG],
            "summary": summary,
            "description": f"{description} {WHO}".strip(),
            "parameters": parameters or [],
            "responses": {**_errors(body=body is not None), **responses},
        }
        if body is not None:
            found["requestBody"] = command_body(body)
        return found

    by_name = [NAME_IN_PATH]
    return {
        "/v1/subscriptions": {
            "post": operation(
                "createGroup",
                "Create a consumer group",
                {
                    "201": {
                        **group_json,
                        "description": "created",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "200": {**group_json, "description": "the same group existed already"},
                    "404": problem("position-past-head: start is past the log's head"),
                    "409": problem("group-exists: a group of this name has other settings"),
                },
                body=_object({"name": NAME, "start": START, **settings}, ["name"]),
                description="The group reads the log after start (default end) and shares "
                "its events among the members that pull them: at least once, in order per "
                "workflow. The same request again finds the group (200).",
            ),
            "get": operation(
                "listGroups",
                "The consumer groups",
                {
                    "200": json_body(
                        _object({"groups": {"type": "array", "items": group}}, ["groups"]),
                        "every group, by name",
                    ),
                    "400": problem("bad-request: a query parameter (this endpoint takes none)"),
                },
            ),
        },
        "/v1/subscriptions/{name}": {
            "get": operation(
                "getGroup",
                "A consumer group: settings, progress, lag, members",
                {
                    "200": group_json,
                    "400": problem("bad-request: a query parameter (this endpoint takes none)"),
                    "404": UNKNOWN,
                },
                parameters=by_name,
            ),
            "delete": operation(
                "deleteGroup",
                "Delete a consumer group and its progress",
                {"204": {"description": "deleted"}, "404": UNKNOWN},
                parameters=by_name,
            ),
        },
        "/v1/subscriptions/{name}/pull": {
            "post": operation(
                "pullEvents",
                "Lease the next events to a member",
                {
                    "200": json_body(
                        _object({"messages": {"type": "array", "items": message}}, ["messages"]),
                        "at most batch events, leased to the member for ack_wait seconds "
                        "(none when nothing came within wait, or the member holds "
                        "max_ack_pending)",
                    ),
                    "404": UNKNOWN,
                },
                body=_object(
                    {
                        "member": MEMBER,
                        "batch": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": groups.BATCH_MAX,
                            "description": f"events at most (default {groups.BATCH_DEFAULT})",
                        },
                        "wait": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": groups.PULL_WAIT_MAX,
                            "description": "seconds to wait for events when none is free "
                            "(default 0)",
                        },
                    },
                    ["member"],
                ),
                parameters=by_name,
                description="A workflow's events go to one member at a time, in log order.",
            ),
        },
        "/v1/subscriptions/{name}/ack": {
            "post": operation(
                "ackEvents",
                "The member handled these events",
                {
                    "200": json_body(_object({"acked": count}, ["acked"]), "done"),
                    "404": UNKNOWN,
                    "409": NOT_LEASED,
                },
                body=member_positions,
                parameters=by_name,
                description="An ack of an event the group finished already is harmless.",
            ),
        },
        "/v1/subscriptions/{name}/nack": {
            "post": operation(
                "nackEvents",
                "The member gives these events back",
                {
                    "200": json_body(
                        _object({"nacked": count, "parked": count}, ["nacked", "parked"]),
                        "given back; parked: those delivered max_deliver times",
                    ),
                    "404": UNKNOWN,
                    "409": NOT_LEASED,
                },
                body=_object(
                    {
                        "member": MEMBER,
                        "positions": POSITIONS,
                        "delay": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": groups.NACK_DELAY_MAX,
                            "description": "seconds before they are due again (default: "
                            f"{groups.BACKOFF_INITIAL:g} s doubled per delivery, "
                            f"{groups.BACKOFF_MAX:g} s at most)",
                        },
                    },
                    ["member", "positions"],
                ),
                parameters=by_name,
            ),
        },
        "/v1/subscriptions/{name}/extend": {
            "post": operation(
                "extendLeases",
                "The member needs longer for these events",
                {
                    "200": json_body(
                        _object(
                            {"extended": count, "ack_wait": {"type": "number"}},
                            ["extended", "ack_wait"],
                        ),
                        "their leases start afresh, for ack_wait seconds",
                    ),
                    "404": UNKNOWN,
                    "409": NOT_LEASED,
                },
                body=member_positions,
                parameters=by_name,
            ),
        },
        "/v1/subscriptions/{name}/rewind": {
            "post": operation(
                "rewindGroup",
                "Read the log again from a position",
                {
                    "200": group_json,
                    "404": problem(
                        "unknown-group, or position-past-head: to is past the log's head"
                    ),
                },
                body=_object({"to": START}, ["to"]),
                parameters=by_name,
                description="What the members hold is dropped (their acks get 409); parked "
                "events before the position stay parked.",
            ),
        },
        "/v1/subscriptions/{name}/parked": {
            "get": operation(
                "listParked",
                "The events the group parked",
                {
                    "200": json_body(
                        _object(
                            {
                                "parked": {"type": "array", "items": parked},
                                "next": {"type": ["integer", "null"]},
                            },
                            ["parked", "next"],
                        ),
                        "in log order; next: pass as ?after= for more (null: no more)",
                    ),
                    "400": problem(
                        "bad-request: after or limit not a whole number, limit out of range, "
                        "or another query parameter"
                    ),
                    "404": UNKNOWN,
                },
                parameters=[
                    *by_name,
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "pattern": f"^[0-9]{{1,{CURSOR_DIGITS}}}{AT_THE_END}",
                        },
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": PARKED_LIMIT_MAX},
                    },
                ],
            ),
        },
        "/v1/subscriptions/{name}/replay": {
            "post": operation(
                "replayParked",
                "Deliver parked events again",
                {
                    "200": json_body(_object({"replayed": count}, ["replayed"]), "how many"),
                    "404": UNKNOWN,
                },
                body=_object({"positions": POSITIONS}, []),
                parameters=by_name,
                description="These parked events (all of them without positions) are "
                "delivered again, their delivery count afresh, out of their workflow's order.",
            ),
        },
    }
