"""RFC 9457 problem details as plain data: building them, reading their code. Pure.

The HTTP layer (:mod:`metallica.web.problems`) answers with them; the workflow reads the
services' ones with :func:`code_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metallica.errors import MetallicaError

PROBLEM_TYPE_BASE = "https://metallica.dev/problems/"
MEDIA_TYPE = "application/problem+json"


def problem(status: int, code: str, title: str, detail: str, **extensions: Any) -> dict[str, Any]:
    """A problem document as a dict."""
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        **extensions,
    }


def from_error(error: MetallicaError, instance: str | None = None) -> dict[str, Any]:
    """The problem document describing a Metallica error."""
    extra = dict(error.extensions)
    if instance:
        extra["instance"] = instance
    return problem(error.status, error.code, error.title, error.detail, **extra)


def code_of(document: Mapping[str, Any]) -> str:
    """The short code at the end of a problem's ``type``."""
    return str(document.get("type", "")).rsplit("/", 1)[-1]
