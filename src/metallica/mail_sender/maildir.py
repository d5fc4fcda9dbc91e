"""Maildir delivery, idempotent by name.

A mail is written to ``tmp/``, flushed, then linked into ``new/`` under a name derived from its
id: a reader never sees half a mail, and a second delivery of the same id (a retry, or another
replica sharing the Maildir) finds the name taken and writes nothing.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class Maildir:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def name_for(mail_id: str, created_at: float) -> str:
        """``<seconds>.M<id>.metallica``: unique per mail, the same for every delivery of it."""
        return f"{int(created_at)}.M{mail_id}.metallica"

    def find(self, name: str) -> Path | None:
        """Where a delivered mail is now: ``new/``, or ``cur/`` once a reader has seen it."""
        for candidate in (self.root / "new" / name, self.root / "cur" / name):
            if candidate.exists():
                return candidate
        return next((self.root / "cur").glob(f"{name}:*"), None)  # seen, with its flags

    def deliver(self, name: str, content: bytes) -> Path:
        """Put ``content`` in ``new/<name>`` unless a mail of that name is already there."""
        existing = self.find(name)
        if existing is not None:
            return existing
        temporary = self.root / "tmp" / f"{name}.{os.getpid()}.{secrets.token_hex(4)}"
        target = self.root / "new" / name
        with open(temporary, "xb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, target)
        except FileExistsError:
            pass  # another delivery of the same mail won the race: exactly one mail
        finally:
            temporary.unlink()
        _fsync_directory(target.parent)
        return target

    def mails(self) -> list[Path]:
        """Every delivered mail, seen or not."""
        return sorted([*(self.root / "new").iterdir(), *(self.root / "cur").iterdir()])


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
