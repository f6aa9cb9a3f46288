"""The one exception tree of jobs-sdk, mapped from the server's error envelope.

Switch on the class (or on `code`), never on `message`. `status` is the HTTP status the
server answered with; for an item of a batch it is the status the single endpoint would
have used, and None when no HTTP answer was involved (connection failure, local validation).
"""

from __future__ import annotations

from pydantic import JsonValue

from jobs_schema import ErrorBody, ErrorCode

__all__ = [
    "Conflict",
    "Forbidden",
    "IdempotencyMismatch",
    "JobsError",
    "JobsTimeout",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "error_for_status",
    "error_from_body",
]


class JobsError(Exception):
    """Root of every error jobs-sdk raises."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        status: int | None = None,
        details: dict[str, JsonValue] | None = None,
    ) -> None:
        # args stays (message,) so copy and pickle rebuild the error, attributes and all
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details: dict[str, JsonValue] = details or {}

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}" if self.code else self.message


class ValidationFailed(JobsError, ValueError):
    """The request breaks a rule: bad field, unknown use case or job type, malformed body."""


class PayloadTooLarge(JobsError):
    """The payload or the whole request body is over the server's limit."""


class Unauthorized(JobsError):
    """The token is missing or unknown."""


class Forbidden(JobsError):
    """The token is known but may not do this (read-only, worker or admin token)."""


class NotFound(JobsError):
    """No such job for this token (another tenant's job answers the same)."""


class Conflict(JobsError):
    """The job's state does not allow the action, e.g. cancelling a finished job."""


class IdempotencyMismatch(Conflict):
    """The Idempotency-Key was already used with a different request."""


class QuotaExceeded(JobsError):
    """The tenant has reached its maximum of active jobs; nothing was stored."""


class Unavailable(JobsError):
    """The server or its database could not be reached, after every retry."""


class ServerError(JobsError):
    """The server failed unexpectedly (HTTP 5xx other than 503)."""


class JobsTimeout(JobsError, TimeoutError):
    """A request, or a wait for a job to finish, took longer than allowed."""


_BY_CODE: dict[ErrorCode, tuple[type[JobsError], int]] = {
    ErrorCode.VALIDATION: (ValidationFailed, 422),
    ErrorCode.MALFORMED_JSON: (ValidationFailed, 400),
    ErrorCode.UNKNOWN_USE_CASE: (ValidationFailed, 422),
    ErrorCode.UNKNOWN_JOB_TYPE: (ValidationFailed, 422),
    ErrorCode.UNKNOWN_TENANT: (ValidationFailed, 422),
    ErrorCode.PAYLOAD_TOO_LARGE: (PayloadTooLarge, 413),
    ErrorCode.BATCH_TOO_LARGE: (PayloadTooLarge, 413),
    ErrorCode.UNAUTHORIZED: (Unauthorized, 401),
    ErrorCode.FORBIDDEN: (Forbidden, 403),
    ErrorCode.NOT_FOUND: (NotFound, 404),
    ErrorCode.CONFLICT: (Conflict, 409),
    ErrorCode.IDEMPOTENCY_MISMATCH: (IdempotencyMismatch, 409),
    ErrorCode.QUOTA_EXCEEDED: (QuotaExceeded, 429),
    ErrorCode.UNAVAILABLE: (Unavailable, 503),
    ErrorCode.INTERNAL: (ServerError, 500),
}

_BY_STATUS: dict[int, type[JobsError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: QuotaExceeded,
    503: Unavailable,
}


def error_from_body(body: ErrorBody, status: int | None = None) -> JobsError:
    """The exception for an error envelope's body (the code decides the class)."""
    cls, usual_status = _BY_CODE.get(body.code, (JobsError, None))
    return cls(
        body.message,
        code=body.code,
        status=status if status is not None else usual_status,
        details=dict(body.details),
    )


def error_for_status(status: int, message: str) -> JobsError:
    """The exception for an error answer without a readable envelope (e.g. from a proxy)."""
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else JobsError)
    return cls(message, status=status)
