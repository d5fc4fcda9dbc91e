"""Events that evolve: each event type's schema version, and the upcasters that bring an event
stored in an older shape to the current one as it is read. Pure.

Events are never rewritten (the log is history): an event keeps the schema version it was
written with (``events.schema_version``), and :func:`upcast` runs, on every read, the chain of
upcasters from that version to the type's current one, so the engine, the listings and the
log's followers only ever see current shapes. To change an event's shape: raise its version in
:data:`CURRENT`, register an upcaster from the previous version that turns an old ``data`` into
the new one (without reading anything else: it must be pure and total), and add the old shape
to the tests. An upcaster must be idempotent: the migration that added versions marked every
event then stored as version 1, whatever shape it had.

The versions so far:

* ``WorkflowStarted`` 2: ``queued_ms`` (how long the command waited for admission, issue 15);
  version 1 had none, which reads as 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Data = Mapping[str, Any]
Upcaster = Callable[[Data], Data]

CURRENT: dict[str, int] = {"WorkflowStarted": 2}


def _started_v1_to_v2(data: Data) -> Data:
    return {**data, "queued_ms": data.get("queued_ms", 0.0)}


# (type, version it reads) -> the upcaster to version + 1
UPCASTERS: dict[tuple[str, int], Upcaster] = {("WorkflowStarted", 1): _started_v1_to_v2}


def current_version(event_type: str) -> int:
    """The schema version events of this type are written with now."""
    return CURRENT.get(event_type, 1)


def upcast(event_type: str, version: int, data: Data) -> Data:
    """``data`` of an event written at schema ``version``, in its type's current shape."""
    target = current_version(event_type)
    if version > target:
        raise ValueError(
            f"a {event_type} event of schema version {version}: this code knows up to {target}"
        )
    while version < target:
        data = UPCASTERS[(event_type, version)](data)
        version += 1
    return data
