"""What the commands share: where `up` keeps the API token, one-line errors, the command group's
error handling, and SIGTERM as a clean exit."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

DEFAULT_DATA_DIR = Path(".metallica")
DEFAULT_URL = "http://127.0.0.1:8000"


# `password create` and `workflow result` exit with this when the workflow is still running
# (the workflow id and the key go to stderr; stdout stays empty, so a script never takes them for
# a password).
EXIT_RUNNING = 3


def token_from(data_dir: Path) -> str | None:
    path = data_dir / "api-token"
    return path.read_text().strip() if path.exists() else None


def token_places(start: Path) -> list[Path]:
    """Where the client commands look for `up`'s token file: ./.metallica/api-token, then the
    same in each parent directory (as git looks for .git)."""
    here = start.resolve()
    return [folder / DEFAULT_DATA_DIR / "api-token" for folder in (here, *here.parents)]


def find_token() -> str | None:
    for path in token_places(Path.cwd()):
        if path.is_file():
            return path.read_text().strip() or None
    return None


def one_line(error: BaseException) -> str:
    """An unexpected error as one line for a person: what failed and why, no traceback."""
    import httpx

    from metallica.errors import MetallicaError

    if isinstance(error, MetallicaError):
        cause = error.__cause__  # a driver's error, translated at the storage edge
        if cause is not None and str(cause).strip():
            return f"{error.detail}: {str(cause).strip().splitlines()[0]}"
        return error.detail
    if isinstance(error, httpx.HTTPError):
        where = ""
        with contextlib.suppress(RuntimeError):  # no request attached
            where = f" {error.request.url.copy_with(query=None)}"
        return f"cannot reach{where}: {error or type(error).__name__}"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}{f': {error.filename}' if error.filename else ''}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class Commands(click.Group):
    """The command group: an error no command expected ends in one line and exit status 1, not
    a traceback (``METALLICA_DEBUG=1`` shows the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if os.environ.get("METALLICA_DEBUG"):
                raise
            raise click.ClickException(one_line(error)) from None


def exit_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit, so the command's stacks and clusters are cleaned up."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
