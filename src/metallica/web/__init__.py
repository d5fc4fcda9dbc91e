"""HTTP plumbing the three services share: problem+json, authentication, idempotency keys."""

from __future__ import annotations
