"""Maildir delivery, idempotent by name.

A mail is written to ``tmp/``, flushed, then linked into ``new/`` under a name derived from its
id: a reader never sees half a mail, and a second delivery of the same id (a retry, or another
replica sharing the Maildir) finds the name taken and writes nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# A file in tmp/ older than this was left by a delivery that crashed (a delivery takes
# milliseconds); replicas share the Maildir, so a younger one may be another's delivery.
STALE_TMP_SECONDS = 300.0


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

    def deliver(self, name: str, content: bytes, *, look_first: bool = True) -> Path:
        """Put ``content`` in ``new/<name>`` unless a mail of that name is already there
        (``look_first=False``: the caller knows the name was never delivered; ``new/`` is still
        never overwritten)."""
        if look_first:
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

    def clean_tmp(self, *, older_than: float = STALE_TMP_SECONDS) -> int:
        """Remove what crashed deliveries left in ``tmp/``; return how many files went.

        Such a file never reached ``new/``: its mail is delivered again from the command store
        when protools retries, under the same name, so removing it loses nothing.
        """
        removed, limit = 0, time.time() - older_than
        for entry in (self.root / "tmp").iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime < limit:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # another replica cleaned it first
        if removed:
            logger.info("metallica.maildir_tmp_cleaned", extra={"removed": removed})
        return removed

    def mails(self) -> list[Path]:
        """Every delivered mail, seen or not."""
        return sorted([*(self.root / "new").iterdir(), *(self.root / "cur").iterdir()])


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
