"""Key rings for secrets at rest: keyed digests and sealed (encrypted) copies, with rotation.

A service that keeps a secret in its database keeps it **sealed** (AES-256-GCM, a random
96-bit nonce per value, associated data that binds the value to its place, so a copy moved
elsewhere does not open) or, when it only needs to recognise it later, as a keyed **digest**
(HMAC-SHA-256). What each service seals, and the associated data, are its own (the
generator's :mod:`~metallica.password_generator.sealing`, protools'
:mod:`~metallica.protools.sealing`); the keys and their configuration are shared, here.

Keys come from configuration as a **key ring**: entries ``<key id>:<base64 secret>``, the
first one current (it digests and seals everything new), every one usable to verify and open
what was made under its id (the rows store it), so keys rotate with no downtime: put the new
key first, keep the old ones listed. Each entry is one master secret (32 bytes or more,
random) from which HKDF-SHA-256 derives two independent sub-keys, one for digests, one for
seals, under labels of the service's own: one secret per key id to keep and rotate, neither
use can weaken the other, and the same secret given to two services yields unrelated keys.

Nothing here logs, and no error message carries key material: only key ids and positions.
Pure apart from reading (and, for a local stack, writing) a key file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


class KeyConfigError(ValueError):
    """A key ring's configuration is missing or malformed (the message names no secret)."""


class UnknownKeyId(LookupError):
    """A row names a key id the key ring does not hold (a key retired too early)."""


class SealBroken(ValueError):
    """A sealed copy does not open: tampered with, moved to another row, or another key."""


@dataclass(frozen=True)
class KeySpec:
    """Whose keys: the variables that configure them, a local stack's key file, and the HKDF
    labels of the two sub-keys (never change a label: what was made under it would not open)."""

    owner: str
    variable: str
    file_variable: str
    local_file: str
    digest_info: bytes
    seal_info: bytes


@dataclass(frozen=True)
class Digest:
    key_id: str
    value: bytes


@dataclass(frozen=True)
class Sealed:
    key_id: str
    blob: bytes  # nonce || ciphertext || tag


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(secret)


def _check_key_id(key_id: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise KeyConfigError(
            "a key id is 1 to 32 characters: a letter or digit, then letters, digits, . _ -"
        )


@dataclass(frozen=True)
class Key:
    """One key of a ring: its id and the two sub-keys derived from its secret (never shown)."""

    key_id: str
    _digest_key: bytes = field(repr=False, compare=False)
    _aead: AESGCM = field(repr=False, compare=False)

    @classmethod
    def derive(cls, spec: KeySpec, key_id: str, secret: bytes) -> Key:
        _check_key_id(key_id)
        if len(secret) < MIN_SECRET_BYTES:
            raise KeyConfigError(
                f"key {key_id!r}: the secret must be at least {MIN_SECRET_BYTES} random bytes"
            )
        return cls(
            key_id, _derive(secret, spec.digest_info), AESGCM(_derive(secret, spec.seal_info))
        )


class Keyring:
    """A service's configured keys: the first is current, each one verifies and opens its own.

    Subclasses name their :class:`KeySpec` and say what they digest and seal, with which
    associated data; the primitives below take bytes.
    """

    spec: ClassVar[KeySpec]

    def __init__(self, keys: Sequence[Key]) -> None:
        if not keys:
            raise KeyConfigError("the key ring holds no key")
        self._keys = {key.key_id: key for key in keys}
        if len(self._keys) != len(keys):
            raise KeyConfigError("a key id is listed twice")
        self.current = keys[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(current={self.current.key_id!r}, key_ids={list(self._keys)!r})"
        )

    def _key(self, key_id: str) -> Key:
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKeyId(f"no key {key_id!r} in the {self.spec.owner}'s key ring") from None

    # --- primitives ----------------------------------------------------------------------------

    def digest_bytes(self, message: bytes) -> Digest:
        """HMAC-SHA-256 of ``message`` under the current key."""
        key = self.current
        return Digest(key.key_id, hmac.new(key._digest_key, message, hashlib.sha256).digest())

    def verify_bytes(self, message: bytes, key_id: str, digest: bytes) -> bool:
        """Whether ``digest`` is ``message``'s under ``key_id`` (constant time). Raises
        :class:`UnknownKeyId` if the ring lacks that key."""
        expected = hmac.new(self._key(key_id)._digest_key, message, hashlib.sha256).digest()
        return hmac.compare_digest(expected, bytes(digest))

    def seal_bytes(self, plaintext: bytes, associated_data: bytes) -> Sealed:
        """``plaintext`` encrypted under the current key, bound to ``associated_data``."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self.current._aead.encrypt(nonce, plaintext, associated_data)
        return Sealed(self.current.key_id, nonce + sealed)

    def open_bytes(self, key_id: str, blob: bytes, associated_data: bytes) -> bytes:
        """What ``blob`` seals, if it was sealed under ``key_id`` with ``associated_data``.
        Raises :class:`UnknownKeyId`, or :class:`SealBroken` when it does not open."""
        key = self._key(key_id)
        blob = bytes(blob)
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise SealBroken(f"a sealed copy under key {key_id!r} is truncated")
        try:
            return key._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise SealBroken(f"a sealed copy under key {key_id!r} does not open") from None

    # --- configuration ------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, source: str | None = None) -> Self:
        """A ring from ``<key id>:<base64 secret>`` entries separated by commas or new lines
        (``#`` starts a comment). Errors name ``source``, the entry's position and its key id,
        never its secret."""
        source = source or cls.spec.variable
        keys = []
        for position, entry in enumerate(_entries(text), start=1):
            key_id, colon, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not colon or not key_id:
                raise KeyConfigError(f"{source}: entry {position} is not <key id>:<base64 secret>")
            try:
                secret = _b64decode(encoded.strip())
                keys.append(Key.derive(cls.spec, key_id, secret))
            except KeyConfigError as error:
                raise KeyConfigError(f"{source}: entry {position}: {error}") from None
            except (binascii.Error, ValueError):
                raise KeyConfigError(
                    f"{source}: entry {position} (key {key_id!r}): the secret is not base64"
                ) from None
        if not keys:
            raise KeyConfigError(f"{source} holds no key")
        try:
            return cls(keys)
        except KeyConfigError as error:
            raise KeyConfigError(f"{source}: {error}") from None

    @classmethod
    def generate(cls, key_id: str = "k1") -> Self:
        """A ring of one fresh random key (tests; in-process use)."""
        return cls([Key.derive(cls.spec, key_id, secrets.token_bytes(MIN_SECRET_BYTES))])

    @classmethod
    def load(cls, keys: str | None, keys_file: str | Path | None) -> Self:
        """The ring configured by the spec's variable or its file variable (exactly one of
        them). Raises :class:`KeyConfigError`, naming no secret."""
        spec = cls.spec
        if keys and keys_file:
            raise KeyConfigError(f"set {spec.variable} or {spec.file_variable}, not both")
        if keys:
            return cls.parse(keys, spec.variable)
        if keys_file:
            try:
                text = Path(keys_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or type(error).__name__
                raise KeyConfigError(
                    f"{spec.file_variable}: cannot read {keys_file}: {reason}"
                ) from None
            return cls.parse(text, f"{spec.file_variable} ({keys_file})")
        raise KeyConfigError(
            f"the {spec.owner} needs its keys: set {spec.variable}=<key id>:<base64 of 32 random"
            " bytes> (several, comma-separated: the first encrypts, all decrypt) or"
            f" {spec.file_variable} to a file of such entries; e.g. generate one with:"
            ' python -c "import base64, secrets;'
            " print('k1:' + base64.b64encode(secrets.token_bytes(32)).decode())\""
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """The ring a process started with ``env`` uses (the invariant checker reads a stack's)."""
        return cls.load(env.get(cls.spec.variable), env.get(cls.spec.file_variable))

    @classmethod
    def local_file(cls, data_dir: Path) -> Path:
        """The key file of a local stack's data directory, created (mode 0600) with one fresh
        key the first time: a stack started again on the same data keeps its keys."""
        name = cls.spec.local_file
        path = data_dir / name
        if path.exists():
            return path
        data_dir.mkdir(parents=True, exist_ok=True)
        draft = data_dir / f".{name}.{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(
                    f"# this local stack's {cls.spec.owner} keys, <key id>:<base64 secret>,"
                    " first current\n"
                )
                file.write(new_entry(f"local-{secrets.token_hex(3)}") + "\n")
            with contextlib.suppress(FileExistsError):  # another stack on this data dir was first
                os.link(draft, path)  # appears whole or not at all
        finally:
            draft.unlink()
        return path

    @classmethod
    def secrets_in(cls, env: Mapping[str, str]) -> list[str]:
        """The base64 secrets configured in ``env`` (a test looks for them in logs)."""
        entries = env.get(cls.spec.variable, "")
        if keys_file := env.get(cls.spec.file_variable):
            entries += "\n" + Path(keys_file).read_text(encoding="utf-8")
        return [
            secret for entry in _entries(entries) if (secret := entry.partition(":")[2].strip())
        ]


def new_entry(key_id: str) -> str:
    """A fresh ``<key id>:<base64 secret>`` entry (32 random bytes)."""
    _check_key_id(key_id)
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(MIN_SECRET_BYTES)).decode()}"


def _entries(text: str) -> Iterable[str]:
    for line in text.splitlines():
        for entry in line.split("#", 1)[0].split(","):
            if entry.strip():
                yield entry.strip()


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not."""
    normalized = text.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    return base64.b64decode(normalized, validate=True)
