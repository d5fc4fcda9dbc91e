"""protools' secrets at rest: the secret fields of events and outbox messages, sealed.

A workflow definition names its secret fields (the password workflow: ``password``, and the
mail's ``body``, which carries it). Wherever such a field holds a string, in an event's data
or an outbox message's payload, at any depth, it is stored sealed (AES-256-GCM under
protools' key ring, :mod:`metallica.sealing`) as ``{"sealed": <key id>, "blob": <base64>}``,
bound to its workflow and its field name by the associated data: a sealed value copied into
another workflow or another field does not open. Everything else stays readable in the
database, for operators and for queries.

:class:`FieldSealer` is pure: the workflow service seals what it writes and opens what it
reads, so the engine, the relay and the HTTP API only ever see clear values (and the API
masks the same fields in event listings).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from metallica.sealing import Keyring, KeySpec, SealBroken

SPEC = KeySpec(
    owner="protools",
    variable="METALLICA_PROTOOLS_KEYS",
    file_variable="METALLICA_PROTOOLS_KEYS_FILE",
    local_file="protools-keys",
    digest_info=b"metallica/protools/digest/v1",
    seal_info=b"metallica/protools/seal/v1",
)

_DOMAIN = b"metallica/protools/field/v1\x00"
# (workflow id, field name, value) -> the value changed, or None to leave it as it is
_Change = Callable[[str, str, Any], Any]
_SEALED, _BLOB = "sealed", "blob"


class ProtoolsKeyring(Keyring):
    """The keys that seal protools' secret fields."""

    spec = SPEC


def _associated_data(stream_id: str, name: str) -> bytes:
    # A workflow id (a UUID) holds no NUL.
    return _DOMAIN + stream_id.encode() + b"\x00" + name.encode()


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {_SEALED, _BLOB}


class FieldSealer:
    """Seals and opens the values of ``secret_fields`` within one workflow's documents."""

    def __init__(self, keys: ProtoolsKeyring, secret_fields: frozenset[str]) -> None:
        self.keys = keys
        self.secret_fields = secret_fields

    def seal(self, stream_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``document`` with every secret field's string value sealed."""
        if not self.secret_fields:
            return dict(document)
        return self._walk_mapping(stream_id, document, self._seal_one)

    def open(self, stream_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``document`` with every sealed value opened. A value stored in clear (by
        a version before sealing) is kept as it is. Raises
        :class:`~metallica.sealing.SealBroken` or :class:`~metallica.sealing.UnknownKeyId`."""
        if not self.secret_fields:
            return dict(document)
        return self._walk_mapping(stream_id, document, self._open_one)

    def _seal_one(self, stream_id: str, name: str, value: Any) -> Any:
        if not isinstance(value, str):
            return None
        sealed = self.keys.seal_bytes(value.encode(), _associated_data(stream_id, name))
        return {_SEALED: sealed.key_id, _BLOB: base64.b64encode(sealed.blob).decode()}

    def _open_one(self, stream_id: str, name: str, value: Any) -> Any:
        if not is_sealed(value):
            return None
        try:
            blob = base64.b64decode(value[_BLOB], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise SealBroken(f"a sealed {name!r} of workflow {stream_id} is not base64") from None
        aad = _associated_data(stream_id, name)
        return self.keys.open_bytes(str(value[_SEALED]), blob, aad).decode()

    def _walk_mapping(
        self, stream_id: str, document: Mapping[str, Any], change: _Change
    ) -> dict[str, Any]:
        out = {}
        for name, value in document.items():
            changed = change(stream_id, name, value) if name in self.secret_fields else None
            out[name] = changed if changed is not None else self._walk(stream_id, value, change)
        return out

    def _walk(self, stream_id: str, value: Any, change: _Change) -> Any:
        if isinstance(value, Mapping):
            return self._walk_mapping(stream_id, value, change)
        if isinstance(value, list):
            return [self._walk(stream_id, item, change) for item in value]
        return value
