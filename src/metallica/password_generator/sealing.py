"""The generator's secrets at rest: a keyed digest of each password, a sealed copy for replays.

The generator never stores a password in clear. It keeps, for good, a **digest** of each one
(HMAC-SHA-256 under a secret key, bound to the username), enough to verify a password it is
shown; and, for as long as a repeated ``Idempotency-Key`` may ask for the first answer again, a
**sealed copy** (AES-256-GCM, the idempotency key and the username as associated data, so a
copy moved to another record does not open). The keys, their configuration (
``METALLICA_GENERATOR_KEYS`` or ``METALLICA_GENERATOR_KEYS_FILE``) and their rotation are
:mod:`metallica.sealing`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from metallica.sealing import (
    Digest,
    KeyConfigError,
    Keyring,
    KeySpec,
    SealBroken,
    Sealed,
    UnknownKeyId,
    new_entry,
)

__all__ = [
    "KEYS_FILE_VARIABLE",
    "KEYS_VARIABLE",
    "GeneratorKeyring",
    "KeyConfigError",
    "SealBroken",
    "UnknownKeyId",
    "keyring_from_env",
    "load_keyring",
    "local_keys_file",
    "new_entry",
]

SPEC = KeySpec(
    owner="generator",
    variable="METALLICA_GENERATOR_KEYS",
    file_variable="METALLICA_GENERATOR_KEYS_FILE",
    local_file="generator-keys",
    digest_info=b"metallica/generator/digest/v1",
    seal_info=b"metallica/generator/seal/v1",
)
KEYS_VARIABLE, KEYS_FILE_VARIABLE = SPEC.variable, SPEC.file_variable

_DIGEST_DOMAIN = b"metallica/generator/password/v1\x00"
_SEAL_DOMAIN = b"metallica/generator/replay/v1\x00"


def _digest_message(username_key: str, password: str) -> bytes:
    return _DIGEST_DOMAIN + username_key.encode() + b"\x00" + password.encode()


def _associated_data(idempotency_key: str, username_key: str) -> bytes:
    # Neither an Idempotency-Key (printable ASCII) nor a username key holds a NUL.
    return _SEAL_DOMAIN + idempotency_key.encode() + b"\x00" + username_key.encode()


class GeneratorKeyring(Keyring):
    """The generator's keys: digests of passwords, sealed copies of answers."""

    spec = SPEC

    def digest(self, username_key: str, password: str) -> Digest:
        """The digest of ``username_key``'s password, under the current key."""
        return self.digest_bytes(_digest_message(username_key, password))

    def verify(self, username_key: str, password: str, key_id: str, digest: bytes) -> bool:
        """Whether ``password`` is the one digested as ``digest`` under ``key_id`` (constant
        time). Raises :class:`UnknownKeyId` if the ring lacks that key."""
        return self.verify_bytes(_digest_message(username_key, password), key_id, digest)

    def seal(self, password: str, *, idempotency_key: str, username_key: str) -> Sealed:
        """``password`` encrypted under the current key, bound to its idempotency record."""
        return self.seal_bytes(password.encode(), _associated_data(idempotency_key, username_key))

    def open(self, key_id: str, blob: bytes, *, idempotency_key: str, username_key: str) -> str:
        """The password sealed in ``blob`` for this record. Raises :class:`UnknownKeyId`, or
        :class:`SealBroken` when it does not open (tampered, moved, or sealed otherwise)."""
        aad = _associated_data(idempotency_key, username_key)
        return self.open_bytes(key_id, blob, aad).decode()


def load_keyring(keys: str | None, keys_file: str | Path | None) -> GeneratorKeyring:
    return GeneratorKeyring.load(keys, keys_file)


def keyring_from_env(env: Mapping[str, str]) -> GeneratorKeyring:
    return GeneratorKeyring.from_env(env)


def local_keys_file(data_dir: Path) -> Path:
    return GeneratorKeyring.local_file(data_dir)
