"""The one table from errors to HTTP status and envelope.

`response_for` turns any exception raised while serving one of our routes into the envelope;
`JobsRoute` (api/route.py) calls it inside each route, so an application that embeds ours keeps
its own handlers and error shapes. `install_error_handlers` covers what no route of ours sees
(unknown paths and methods) and is installed only on the standalone app."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs_schema import ErrorBody, ErrorCode, ErrorEnvelope
from jobs_server import errors

__all__ = [
    "BODY_ERRORS",
    "COMMON_ERRORS",
    "ApiError",
    "BodyTooLarge",
    "ErrorEntry",
    "documented_errors",
    "entry_for",
    "error_response",
    "install_error_handlers",
    "json_response",
    "response_for",
    "validation_details",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """How one kind of domain error is answered: by the API (status, code, the envelope) and by
    the dashboard (status, the error page). `message` and `page`: what the API and the page say
    instead of the error's own message (None: its own); `retry_after`: the header, if any."""

    status: int
    code: ErrorCode
    message: str | None = None
    page: str | None = None
    retry_after: str | None = None

    def api_message(self, exc: errors.JobsServerError) -> str:
        return self.message or exc.message

    def page_message(self, exc: errors.JobsServerError) -> str:
        return self.page or self.api_message(exc)


# When to ask again: the database is usually back within a second; a quota frees as jobs end.
_TABLE: list[tuple[type[errors.JobsServerError], ErrorEntry]] = [
    (errors.UseCaseNotFound, ErrorEntry(404, ErrorCode.NOT_FOUND)),
    (errors.UnknownUseCase, ErrorEntry(422, ErrorCode.UNKNOWN_USE_CASE)),
    (errors.UnknownJobType, ErrorEntry(422, ErrorCode.UNKNOWN_JOB_TYPE)),
    (errors.UnknownTenant, ErrorEntry(422, ErrorCode.UNKNOWN_TENANT)),
    (errors.PayloadTooLarge, ErrorEntry(413, ErrorCode.PAYLOAD_TOO_LARGE)),
    (errors.QuotaExceeded, ErrorEntry(429, ErrorCode.QUOTA_EXCEEDED, retry_after="5")),
    (errors.TooManyStreams, ErrorEntry(429, ErrorCode.TOO_MANY_STREAMS, retry_after="5")),
    (errors.StreamsFull, ErrorEntry(503, ErrorCode.TOO_MANY_STREAMS, retry_after="1")),
    (errors.JobNotFound, ErrorEntry(404, ErrorCode.NOT_FOUND)),
    (errors.Forbidden, ErrorEntry(403, ErrorCode.FORBIDDEN)),
    (errors.JobConflict, ErrorEntry(409, ErrorCode.CONFLICT)),
    (errors.ScheduleNotFound, ErrorEntry(404, ErrorCode.NOT_FOUND)),
    (errors.ScheduleConflict, ErrorEntry(409, ErrorCode.CONFLICT)),
    (errors.WebhookNotFound, ErrorEntry(404, ErrorCode.NOT_FOUND)),
    (errors.WebhookConflict, ErrorEntry(409, ErrorCode.CONFLICT)),
    (errors.IdempotencyMismatch, ErrorEntry(409, ErrorCode.IDEMPOTENCY_MISMATCH)),
    (
        errors.StoreUnavailable,
        ErrorEntry(
            503,
            ErrorCode.UNAVAILABLE,
            page="The database cannot be reached right now; try again in a moment.",
            retry_after="1",
        ),
    ),
    (errors.BadRequest, ErrorEntry(400, ErrorCode.VALIDATION)),
]
_UNMAPPED = ErrorEntry(
    500, ErrorCode.INTERNAL, message="internal error", page="Something went wrong on the server."
)
_RETRY_AFTER = {entry.status: entry.retry_after for _, entry in _TABLE if entry.retry_after}

_HTTP_CODES = {
    400: ErrorCode.MALFORMED_JSON,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.VALIDATION,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}

# What every route of ours can answer besides success (auth, validation, database down), and
# what a route with a request body adds (malformed JSON, body over the limit).
COMMON_ERRORS = (401, 403, 422, 503)
BODY_ERRORS = (400, 413)


class BodyTooLarge(StarletteHTTPException):
    """The request body is over the route's limit. An HTTPException, because FastAPI lets only
    those through unchanged from reading the body."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")
        self.limit = limit


class ApiError(Exception):
    """An error born in the HTTP layer itself (auth, malformed JSON, body too large)."""

    def __init__(self, status: int, code: ErrorCode, message: str, **details: object) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def entry_for(exc: errors.JobsServerError) -> ErrorEntry:
    """The entry answering a domain error, for the API and the dashboard alike. Logs what an
    operator should see: the database down, an error the table does not know."""
    entry = next((entry for cls, entry in _TABLE if isinstance(exc, cls)), _UNMAPPED)
    if entry is _UNMAPPED:
        logger.error("unmapped domain error", exc_info=exc)
    elif isinstance(exc, errors.StoreUnavailable):
        logger.warning("database unavailable", extra={"error": str(exc)})
    return entry


def error_response(
    status: int,
    code: ErrorCode,
    message: str,
    details: dict[str, object] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> Response:
    body = ErrorEnvelope(
        error=ErrorBody.model_validate({"code": code, "message": message, "details": details or {}})
    )
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status in _RETRY_AFTER:
        headers["Retry-After"] = _RETRY_AFTER[status]
    return Response(
        body.model_dump_json(), status_code=status, media_type="application/json", headers=headers
    )


def json_response(model: BaseModel, status: int = 200) -> Response:
    """A model as the JSON body, serialized once by pydantic (no second pass by FastAPI)."""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def documented_errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """The envelope as the documented body of each of these statuses (OpenAPI)."""
    return {code: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[code]} for code in codes}


_DESCRIPTIONS = {
    400: "Malformed JSON, or a request that breaks a rule",
    401: "Missing or unknown bearer token",
    403: "The token may not do this",
    404: "No such job (or not this tenant's)",
    409: "The job's state does not allow this, or the Idempotency-Key was used with another body",
    413: "Request body over the limit",
    422: "Invalid parameters or body; details name each field",
    429: "Tenant quota of active jobs reached (see Retry-After)",
    503: "Database unavailable (see Retry-After)",
}


def validation_details(exc: ValidationError | RequestValidationError) -> dict[str, object]:
    return {
        "errors": [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()[:20]
        ]
    }


def _summary(details: dict[str, object]) -> str:
    errs = details["errors"]
    assert isinstance(errs, list)
    return "; ".join(f"{'.'.join(e['loc']) or 'body'}: {e['msg']}" for e in errs[:5])


def response_for(exc: Exception) -> Response:
    """The envelope answering `exc`; an unexpected one is logged and answers 500."""
    if isinstance(exc, errors.JobsServerError):
        return _domain(exc)
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details)
    if isinstance(exc, RequestValidationError | ValidationError):
        return _invalid(exc)
    if isinstance(exc, StarletteHTTPException):
        return _http(exc)
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, ErrorCode.INTERNAL, "internal error")


def _domain(exc: errors.JobsServerError) -> Response:
    entry = entry_for(exc)
    details = None if entry is _UNMAPPED else exc.details
    return error_response(entry.status, entry.code, entry.api_message(exc), details)


def _invalid(exc: RequestValidationError | ValidationError) -> Response:
    details = validation_details(exc)
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        return error_response(
            400, ErrorCode.MALFORMED_JSON, "request body is not valid JSON", details
        )
    return error_response(422, ErrorCode.VALIDATION, _summary(details), details)


def _http(exc: StarletteHTTPException) -> Response:
    status = exc.status_code
    code = _HTTP_CODES.get(status, ErrorCode.INTERNAL)
    message = str(exc.detail)
    if status == 400:
        # FastAPI's answer to a body it cannot decode (e.g. invalid UTF-8).
        message = "request body is not valid JSON: send UTF-8 encoded JSON"
    elif status == 405:
        message = f"method not allowed here; allowed: {(exc.headers or {}).get('Allow', '')}"
    details: dict[str, object] = {"limit": exc.limit} if isinstance(exc, BodyTooLarge) else {}
    return error_response(status, code, message, details, headers=dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    """Our envelope for what reaches the app itself: unknown paths, wrong methods."""

    async def handle(_: Request, exc: Exception) -> Response:
        return response_for(exc)

    app.add_exception_handler(StarletteHTTPException, handle)
    app.add_exception_handler(Exception, handle)
