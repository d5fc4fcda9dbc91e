"""Toxics: the faults a fault proxy injects, as plain validated data.

A toxic is a frozen dataclass saying what to do, in which direction and to which share of the
connections. It is checked when it is built, so a toxic that exists is a valid one.
:func:`parse_toxic` builds one from the control API's JSON (Toxiproxy's shape: ``type``, ``name``,
``direction``, ``toxicity``, ``attributes``) and :func:`describe_toxic` turns it back into JSON.
This module is data only: what a toxic does to bytes lives in :mod:`.stages`, what it does to a
connection in :mod:`.connection`, and ``down`` is handled by the proxy itself.

Directions are seen from the client: ``upstream`` is client → server, ``downstream`` is
server → client, ``both`` is both. ``toxicity`` is the probability that a connection is affected,
drawn once per connection and toxic.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

from metallica.errors import InvalidInput
from metallica.faultproxy.errors import InvalidToxic

Direction: TypeAlias = Literal["upstream", "downstream", "both"]
Flow: TypeAlias = Literal["upstream", "downstream"]
"""The direction one piece of data travels: a toxic's ``both`` is two flows."""

DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream", "both")
FLOWS: tuple[Flow, ...] = ("upstream", "downstream")
MAX_MS = 24 * 3600 * 1000
"""No delay or timeout may exceed a day: a larger value is a typo, not a test."""
MAX_BYTES = 2**40

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COMMON = ("name", "direction", "toxicity")


def check_name(name: object, what: str, error: type[InvalidInput] = InvalidToxic) -> str:
    """``name`` if it is 1 to 64 characters: a letter or digit, then letters, digits, ``_.-``.

    Names go into URLs of the control API, hence the small alphabet.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise error(
            f"'{what}' must be 1 to 64 characters: a letter or digit, then letters, digits, "
            "'_', '.' or '-'",
            field=what,
        )
    return name


@dataclass(frozen=True, kw_only=True)
class Toxic:
    """What every toxic has: a name (default: its type), a direction and a toxicity."""

    kind: ClassVar[str] = ""

    name: str = ""
    direction: Direction = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        if not self.kind:
            raise TypeError("Toxic is abstract: build a Latency, Down, Timeout, ... instead")
        if self.name == "":
            object.__setattr__(self, "name", self.kind)
        check_name(self.name, "name")
        if self.direction not in DIRECTIONS:
            raise InvalidToxic(
                f"'direction' must be one of {', '.join(DIRECTIONS)}", field="direction"
            )
        toxicity = self.toxicity
        if (
            isinstance(toxicity, bool)
            or not isinstance(toxicity, int | float)
            or not 0.0 <= toxicity <= 1.0
        ):
            raise InvalidToxic("'toxicity' must be a number from 0 to 1", field="toxicity")
        object.__setattr__(self, "toxicity", float(toxicity))
        self._validate()

    def _validate(self) -> None:
        """Check the type's own attributes; raise :class:`InvalidToxic`."""

    def applies_to(self, flow: Flow) -> bool:
        """Whether data travelling in ``flow`` goes through this toxic."""
        return self.direction in (flow, "both")

    @property
    def attributes(self) -> dict[str, int]:
        """The type's own settings (``latency_ms``, ``bytes``, ...), as the JSON shows them."""
        return {field: getattr(self, field) for field in attribute_names(type(self))}

    def _check_int(self, field: str, *, minimum: int = 0, maximum: int = MAX_MS) -> None:
        value = getattr(self, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidToxic(f"'{field}' must be an integer", field=field)
        if not minimum <= value <= maximum:
            raise InvalidToxic(f"'{field}' must be from {minimum} to {maximum}", field=field)


@dataclass(frozen=True, kw_only=True)
class Latency(Toxic):
    """Delay each chunk by ``latency_ms`` ± a uniform ``jitter_ms``, keeping chunks in order.

    The delay counts from when the chunk arrived, so a stream is shifted in time, not slowed
    down chunk by chunk.
    """

    kind: ClassVar[str] = "latency"

    latency_ms: int
    jitter_ms: int = 0

    def _validate(self) -> None:
        self._check_int("latency_ms")
        self._check_int("jitter_ms")


@dataclass(frozen=True, kw_only=True)
class Down(Toxic):
    """The proxy is down: its port refuses connections and its open connections are closed.

    It acts on the whole proxy, so its direction does not matter and its toxicity must be 1.
    Removing it opens the same port again.
    """

    kind: ClassVar[str] = "down"

    direction: Direction = "both"

    def _validate(self) -> None:
        if self.toxicity != 1.0:
            raise InvalidToxic("a 'down' toxic takes the whole proxy down: toxicity must be 1")


@dataclass(frozen=True, kw_only=True)
class Timeout(Toxic):
    """A blackhole: data in the toxic's direction is read and dropped, nothing is answered.

    With ``timeout_ms`` > 0 the connection is closed that long after the toxic reached it;
    with 0 it stays open until the toxic is removed. The default direction is ``both``.
    """

    kind: ClassVar[str] = "timeout"

    direction: Direction = "both"
    timeout_ms: int = 0

    def _validate(self) -> None:
        self._check_int("timeout_ms")


@dataclass(frozen=True, kw_only=True)
class ResetPeer(Toxic):
    """Reset the connection (TCP RST, both ways) ``timeout_ms`` after the toxic reached it.

    Data flows normally until then. It acts on whole connections: the direction is ignored.
    """

    kind: ClassVar[str] = "reset_peer"

    direction: Direction = "both"
    timeout_ms: int = 0

    def _validate(self) -> None:
        self._check_int("timeout_ms")


@dataclass(frozen=True, kw_only=True)
class LimitData(Toxic):
    """Close the connection once ``bytes`` bytes went through in the toxic's direction.

    Counted per connection and direction, from when the toxic reached the connection; with 0,
    the connection is closed when data first arrives.
    """

    kind: ClassVar[str] = "limit_data"

    bytes: int

    def _validate(self) -> None:
        self._check_int("bytes", maximum=MAX_BYTES)


@dataclass(frozen=True, kw_only=True)
class Slicer(Toxic):
    """Cut each chunk into fragments of ``average_size`` ± ``size_variation`` bytes.

    The fragments are written separately, ``delay_us`` microseconds apart.
    """

    kind: ClassVar[str] = "slicer"

    average_size: int
    size_variation: int = 0
    delay_us: int = 0

    def _validate(self) -> None:
        self._check_int("average_size", minimum=1, maximum=MAX_BYTES)
        self._check_int("size_variation", maximum=MAX_BYTES)
        self._check_int("delay_us", maximum=MAX_MS * 1000)
        if self.size_variation >= self.average_size:
            raise InvalidToxic(
                "'size_variation' must be smaller than 'average_size'", field="size_variation"
            )


@dataclass(frozen=True, kw_only=True)
class Bandwidth(Toxic):
    """Let at most ``rate_kb_per_s`` kilobytes (1000 bytes) a second through."""

    kind: ClassVar[str] = "bandwidth"

    rate_kb_per_s: int

    def _validate(self) -> None:
        self._check_int("rate_kb_per_s", minimum=1, maximum=10**9)


TOXIC_TYPES: Mapping[str, type[Toxic]] = {
    cls.kind: cls for cls in (Latency, Down, Timeout, ResetPeer, LimitData, Slicer, Bandwidth)
}


def attribute_names(cls: type[Toxic]) -> tuple[str, ...]:
    """The fields of a toxic type beyond name, direction and toxicity."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _COMMON)


def parse_toxic(data: Mapping[str, Any]) -> Toxic:
    """A toxic from its JSON: ``{type, name?, direction?, toxicity?, attributes?}``.

    Unknown keys and attributes are refused rather than ignored: a typo must not quietly
    turn a fault test into a test of nothing.
    """
    unknown = sorted(set(data) - {"type", "attributes", *_COMMON})
    if unknown:
        raise InvalidToxic(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in TOXIC_TYPES:
        raise InvalidToxic(f"'type' must be one of {', '.join(sorted(TOXIC_TYPES))}", field="type")
    cls = TOXIC_TYPES[kind]
    attributes = data.get("attributes", {})
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, Mapping):
        raise InvalidToxic("'attributes' must be an object", field="attributes")
    allowed = attribute_names(cls)
    for key in attributes:
        if key not in allowed:
            accepted = ", ".join(allowed) if allowed else "none"
            raise InvalidToxic(
                f"'{kind}' has no attribute '{key}' (it takes: {accepted})", field=key
            )
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name in allowed
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    for key in required:
        if key not in attributes:
            raise InvalidToxic(f"'{kind}' needs the attribute '{key}'", field=key)
    common: dict[str, Any] = {}
    for key in _COMMON:
        value = data.get(key)
        if value is not None:
            common[key] = value
    return cls(**common, **dict(attributes))


def describe_toxic(toxic: Toxic) -> dict[str, Any]:
    """The JSON of a toxic, as :func:`parse_toxic` reads it."""
    return {
        "type": toxic.kind,
        "name": toxic.name,
        "direction": toxic.direction,
        "toxicity": toxic.toxicity,
        "attributes": toxic.attributes,
    }
