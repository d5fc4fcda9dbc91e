"""Errors every part of Metallica shares.

Each error carries a stable ``code`` (the last part of its problem+json ``type``), an HTTP
``status`` and a ``title``; the docstring is the default detail. The HTTP layer turns them into
RFC 9457 problem documents (see :mod:`metallica.problems`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class MetallicaError(Exception):
    """Something went wrong in Metallica."""

    code: ClassVar[str] = "internal-error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip()
        self.extensions = extensions
        super().__init__(self.detail)


class BadRequest(MetallicaError):
    """The request is malformed."""

    code = "bad-request"
    status = 400
    title = "Bad request"


class PayloadTooLarge(MetallicaError):
    """The body is larger than this endpoint accepts."""

    code = "payload-too-large"
    status = 413
    title = "Payload too large"


class HeadersTooLarge(MetallicaError):
    """The request's headers are larger than this service accepts."""

    code = "headers-too-large"
    status = 431
    title = "Request header fields too large"


class UnsupportedMediaType(MetallicaError):
    """The body must be JSON: send Content-Type: application/json."""

    code = "unsupported-media-type"
    status = 415
    title = "Unsupported media type"


class InvalidId(BadRequest):
    """The id in the path is not one this service ever gives out."""

    code = "invalid-id"


class MissingIdempotencyKey(BadRequest):
    """The Idempotency-Key header is required: 1 to 255 printable ASCII characters."""

    code = "idempotency-key-missing"
    title = "Idempotency-Key required"


class InvalidIdempotencyKey(BadRequest):
    """The Idempotency-Key header must be 1 to 255 printable ASCII characters, with no space
    at either end."""

    code = "idempotency-key-invalid"


class Unauthorized(MetallicaError):
    """A valid 'Authorization: Bearer <token>' header is required."""

    code = "unauthorized"
    status = 401
    title = "Unauthorized"


class Forbidden(MetallicaError):
    """This belongs to another client: only the client that created it may read it."""

    code = "forbidden"
    status = 403
    title = "Forbidden"


class NotFound(MetallicaError):
    """No such resource."""

    code = "not-found"
    status = 404
    title = "Not found"


class PositionPastHead(NotFound):
    """No event has this log position yet: it is past the log's head."""

    code = "position-past-head"


class UnknownGroup(NotFound):
    """No consumer group has this name."""

    code = "unknown-group"


class GroupExists(MetallicaError):
    """A consumer group of this name exists with other settings."""

    code = "group-exists"
    status = 409
    title = "Group exists"


class NotLeased(MetallicaError):
    """These events are not leased to this member (acked already, never delivered to it, or
    delivered to another member since its lease ran out): nothing was changed."""

    code = "not-leased"
    status = 409
    title = "Not leased to this member"


class InvalidInput(MetallicaError):
    """The request body is not valid."""

    code = "invalid-body"
    status = 422
    title = "Invalid request body"


class InvalidUsername(InvalidInput):
    """A username is 1 to 64 characters: a letter or digit, then letters, digits, . _ or -."""

    code = "invalid-username"
    title = "Invalid username"


class KeyReusedWithOtherBody(MetallicaError):
    """This Idempotency-Key was already used with another request body."""

    code = "idempotency-key-reused"
    status = 422
    title = "Idempotency-Key reused"


class UsernameTaken(MetallicaError):
    """This username already has a password."""

    code = "username-taken"
    status = 409
    title = "Username taken"


class CommandInProgress(MetallicaError):
    """A request with this Idempotency-Key is still being processed; retry later."""

    code = "command-in-progress"
    status = 409
    title = "Command in progress"


class ServiceUnavailable(MetallicaError):
    """The service cannot answer right now; retry later."""

    code = "service-unavailable"
    status = 503
    title = "Service unavailable"


class Overloaded(ServiceUnavailable):
    """The service is at its limit of work in flight; retry after the time it gives."""

    code = "overloaded"
    title = "Overloaded"


class TooManyRequests(MetallicaError):
    """This client sent more requests than its rate allows; retry after the time given."""

    code = "rate-limited"
    status = 429
    title = "Too many requests"


class DeadlinePassed(ServiceUnavailable):
    """The caller's deadline for this request passed before the work could start; it was not
    done."""

    code = "deadline-passed"
    title = "Deadline passed"


class IdempotencyRecordExpired(MetallicaError):
    """This Idempotency-Key's answer is past its retention: the password it created is no
    longer kept and cannot be sent again."""

    code = "idempotency-record-expired"
    status = 410
    title = "Idempotency record expired"


class PasswordLost(MetallicaError):
    """The generator created this workflow's password, but its record of the answer expired
    before the workflow could read it back: the username has a password nobody was told, and
    an operator must reset it."""

    code = "password-lost"
    status = 502
    title = "Password lost"
