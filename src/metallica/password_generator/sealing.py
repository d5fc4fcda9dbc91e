"""The generator's secrets at rest: a keyed digest of each password, a sealed copy for replays.

The generator never stores a password in clear. It keeps, for good, a **digest** of each one
(HMAC-SHA-256 under a secret key, bound to the username), enough to verify a password it is
shown; and, for as long as a repeated ``Idempotency-Key`` may ask for the first answer again, a
**sealed copy** (AES-256-GCM, a random 96-bit nonce per record, the idempotency key and the
username as associated data, so a copy moved to another record does not open).

Keys come from configuration as a **key ring**: entries ``<key id>:<base64 secret>``, the first
one current (it digests and seals everything new), every one usable to verify and open what
was made under its id (the rows store it), so keys rotate with no downtime: put the new key
first, keep the old ones listed. Each entry is one master secret (32 bytes or more, random)
from which HKDF-SHA-256 derives two independent sub-keys, one for the digest, one for the
seal: one secret per key id to keep and rotate, and neither use can weaken the other.

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

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEYS_VARIABLE = "METALLICA_GENERATOR_KEYS"
KEYS_FILE_VARIABLE = "METALLICA_GENERATOR_KEYS_FILE"
MIN_SECRET_BYTES = 32
NONCE_BYTES = 12
LOCAL_KEYS_FILE = "generator-keys"

_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_DIGEST_INFO = b"metallica/generator/digest/v1"
_SEAL_INFO = b"metallica/generator/seal/v1"
_DIGEST_DOMAIN = b"metallica/generator/password/v1\x00"
_SEAL_DOMAIN = b"metallica/generator/replay/v1\x00"


class KeyConfigError(ValueError):
    """The key ring's configuration is missing or malformed (the message names no secret)."""


class UnknownKeyId(LookupError):
    """A row names a key id the key ring does not hold (a key retired too early)."""


class SealBroken(ValueError):
    """A sealed copy does not open: tampered with, moved to another row, or another key."""


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


@dataclass(frozen=True)
class GeneratorKey:
    """One key of the ring: its id and the two sub-keys derived from its secret (never shown)."""

    key_id: str
    _digest_key: bytes = field(repr=False, compare=False)
    _aead: AESGCM = field(repr=False, compare=False)

    @classmethod
    def derive(cls, key_id: str, secret: bytes) -> GeneratorKey:
        if not _KEY_ID.fullmatch(key_id):
            raise KeyConfigError(
                "a key id is 1 to 32 characters: a letter or digit, then letters, digits, . _ -"
            )
        if len(secret) < MIN_SECRET_BYTES:
            raise KeyConfigError(
                f"key {key_id!r}: the secret must be at least {MIN_SECRET_BYTES} random bytes"
            )
        return cls(key_id, _derive(secret, _DIGEST_INFO), AESGCM(_derive(secret, _SEAL_INFO)))


def _digest_message(username_key: str, password: str) -> bytes:
    return _DIGEST_DOMAIN + username_key.encode() + b"\x00" + password.encode()


def _associated_data(idempotency_key: str, username_key: str) -> bytes:
    # Neither an Idempotency-Key (printable ASCII) nor a username key holds a NUL.
    return _SEAL_DOMAIN + idempotency_key.encode() + b"\x00" + username_key.encode()


class Keyring:
    """The configured keys: the first is current, each one verifies and opens its own rows."""

    def __init__(self, keys: Sequence[GeneratorKey]) -> None:
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
        return f"Keyring(current={self.current.key_id!r}, key_ids={list(self._keys)!r})"

    def _key(self, key_id: str) -> GeneratorKey:
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKeyId(f"no key {key_id!r} in the generator's key ring") from None

    # --- the lasting record --------------------------------------------------------------------

    def digest(self, username_key: str, password: str) -> Digest:
        """The digest of ``username_key``'s password, under the current key."""
        key = self.current
        value = hmac.new(key._digest_key, _digest_message(username_key, password), hashlib.sha256)
        return Digest(key.key_id, value.digest())

    def verify(self, username_key: str, password: str, key_id: str, digest: bytes) -> bool:
        """Whether ``password`` is the one digested as ``digest`` under ``key_id`` (constant
        time). Raises :class:`UnknownKeyId` if the ring lacks that key."""
        key = self._key(key_id)
        expected = hmac.new(
            key._digest_key, _digest_message(username_key, password), hashlib.sha256
        ).digest()
        return hmac.compare_digest(expected, bytes(digest))

    # --- the copy kept for replays ------------------------------------------------------------

    def seal(self, password: str, *, idempotency_key: str, username_key: str) -> Sealed:
        """``password`` encrypted under the current key, bound to its idempotency record."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self.current._aead.encrypt(
            nonce, password.encode(), _associated_data(idempotency_key, username_key)
        )
        return Sealed(self.current.key_id, nonce + sealed)

    def open(self, key_id: str, blob: bytes, *, idempotency_key: str, username_key: str) -> str:
        """The password sealed in ``blob`` for this record. Raises :class:`UnknownKeyId`, or
        :class:`SealBroken` when it does not open (tampered, moved, or sealed otherwise)."""
        key = self._key(key_id)
        blob = bytes(blob)
        if len(blob) < NONCE_BYTES + 16:  # a nonce and a tag at least
            raise SealBroken(f"a sealed copy under key {key_id!r} is truncated")
        try:
            clear = key._aead.decrypt(
                blob[:NONCE_BYTES],
                blob[NONCE_BYTES:],
                _associated_data(idempotency_key, username_key),
            )
        except InvalidTag:
            raise SealBroken(f"a sealed copy under key {key_id!r} does not open") from None
        return clear.decode()

    # --- configuration ------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, source: str = KEYS_VARIABLE) -> Keyring:
        """A ring from ``<key id>:<base64 secret>`` entries separated by commas or new lines
        (``#`` starts a comment). Errors name ``source``, the entry's position and its key id,
        never its secret."""
        keys = []
        for position, entry in enumerate(_entries(text), start=1):
            key_id, colon, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not colon or not key_id:
                raise KeyConfigError(f"{source}: entry {position} is not <key id>:<base64 secret>")
            try:
                secret = _b64decode(encoded.strip())
                keys.append(GeneratorKey.derive(key_id, secret))
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
    def generate(cls, key_id: str = "k1") -> Keyring:
        """A ring of one fresh random key (tests; in-process use)."""
        return cls([GeneratorKey.derive(key_id, secrets.token_bytes(MIN_SECRET_BYTES))])


def new_entry(key_id: str) -> str:
    """A fresh ``<key id>:<base64 secret>`` entry (32 random bytes)."""
    GeneratorKey.derive(key_id, bytes(MIN_SECRET_BYTES))  # checks the id
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


def load_keyring(keys: str | None, keys_file: str | Path | None) -> Keyring:
    """The ring configured by ``METALLICA_GENERATOR_KEYS`` or ``METALLICA_GENERATOR_KEYS_FILE``
    (exactly one of them). Raises :class:`KeyConfigError`, naming no secret."""
    if keys and keys_file:
        raise KeyConfigError(f"set {KEYS_VARIABLE} or {KEYS_FILE_VARIABLE}, not both")
    if keys:
        return Keyring.parse(keys, KEYS_VARIABLE)
    if keys_file:
        try:
            text = Path(keys_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise KeyConfigError(
                f"{KEYS_FILE_VARIABLE}: cannot read {keys_file}: {reason}"
            ) from None
        return Keyring.parse(text, f"{KEYS_FILE_VARIABLE} ({keys_file})")
    raise KeyConfigError(
        f"the generator needs its keys: set {KEYS_VARIABLE}=<key id>:<base64 of 32 random bytes>"
        f" (several, comma-separated: the first encrypts, all decrypt) or {KEYS_FILE_VARIABLE}"
        ' to a file of such entries; e.g. generate one with: python -c "import base64, secrets;'
        " print('k1:' + base64.b64encode(secrets.token_bytes(32)).decode())\""
    )


def keyring_from_env(env: Mapping[str, str]) -> Keyring:
    """The ring a process started with ``env`` uses (the lab's checker reads a stack's)."""
    return load_keyring(env.get(KEYS_VARIABLE), env.get(KEYS_FILE_VARIABLE))


def local_keys_file(data_dir: Path) -> Path:
    """The key file of a local stack's data directory, created (mode 0600) with one fresh key
    the first time: a stack started again on the same data keeps its keys."""
    path = data_dir / LOCAL_KEYS_FILE
    if path.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    draft = data_dir / f".{LOCAL_KEYS_FILE}.{secrets.token_hex(4)}"
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(
                "# this local stack's generator keys, <key id>:<base64 secret>, first current\n"
            )
            file.write(new_entry(f"local-{secrets.token_hex(3)}") + "\n")
        with contextlib.suppress(FileExistsError):  # another stack on this data dir was first
            os.link(draft, path)  # appears whole or not at all
    finally:
        draft.unlink()
    return path
