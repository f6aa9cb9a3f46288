"""The one table from domain errors to HTTP status and envelope, and the handlers using it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs_schema import ErrorBody, ErrorCode, ErrorEnvelope
from jobs_server import errors

__all__ = [
    "ApiError",
    "documented_errors",
    "error_response",
    "install_error_handlers",
    "json_response",
    "status_for",
    "validation_details",
]

logger = logging.getLogger(__name__)

_TABLE: list[tuple[type[errors.JobsServerError], int, ErrorCode]] = [
    (errors.UnknownUseCase, 422, ErrorCode.UNKNOWN_USE_CASE),
    (errors.UnknownJobType, 422, ErrorCode.UNKNOWN_JOB_TYPE),
    (errors.PayloadTooLarge, 413, ErrorCode.PAYLOAD_TOO_LARGE),
    (errors.QuotaExceeded, 429, ErrorCode.QUOTA_EXCEEDED),
    (errors.JobNotFound, 404, ErrorCode.NOT_FOUND),
    (errors.Forbidden, 403, ErrorCode.FORBIDDEN),
    (errors.JobConflict, 409, ErrorCode.CONFLICT),
    (errors.IdempotencyMismatch, 409, ErrorCode.IDEMPOTENCY_MISMATCH),
    (errors.StoreUnavailable, 503, ErrorCode.UNAVAILABLE),
    (errors.BadRequest, 400, ErrorCode.VALIDATION),
]


def status_for(exc: errors.JobsServerError) -> tuple[int, ErrorCode]:
    """The status and code of a domain error, by the table; 500 for one it does not map."""
    for cls, status, code in _TABLE:
        if isinstance(exc, cls):
            return status, code
    return 500, ErrorCode.INTERNAL


class ApiError(Exception):
    """An error born in the HTTP layer itself (auth, malformed JSON, body too large)."""

    def __init__(self, status: int, code: ErrorCode, message: str, **details: object) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(
    status: int, code: ErrorCode, message: str, details: dict[str, object] | None = None
) -> Response:
    body = ErrorEnvelope(
        error=ErrorBody.model_validate({"code": code, "message": message, "details": details or {}})
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    return Response(
        body.model_dump_json(), status_code=status, media_type="application/json", headers=headers
    )


def json_response(model: BaseModel, status: int = 200) -> Response:
    """A model as the JSON body, serialized once by pydantic (no second pass by FastAPI)."""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def documented_errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """The envelope as the documented body of each of these statuses (OpenAPI)."""
    return {code: {"model": ErrorEnvelope} for code in codes}


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


def install_error_handlers(app: FastAPI) -> None:
    async def domain(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.JobsServerError)
        for cls, status, code in _TABLE:
            if isinstance(exc, cls):
                if status == 503:
                    logger.warning("database unavailable", extra={"error": str(exc)})
                return error_response(status, code, exc.message, exc.details)
        logger.error("unmapped domain error", exc_info=exc)
        return error_response(500, ErrorCode.INTERNAL, "internal error")

    async def api(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.details)

    async def invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError | ValidationError)
        details = validation_details(exc)
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return error_response(
                400, ErrorCode.MALFORMED_JSON, "request body is not valid JSON", details
            )
        return error_response(422, ErrorCode.VALIDATION, _summary(details), details)

    async def http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.VALIDATION}.get(
            exc.status_code, ErrorCode.INTERNAL
        )
        return error_response(exc.status_code, code, str(exc.detail))

    async def unexpected(_: Request, exc: Exception) -> Response:
        logger.error("unhandled error", exc_info=exc)
        return error_response(500, ErrorCode.INTERNAL, "internal error")

    app.add_exception_handler(errors.JobsServerError, domain)
    app.add_exception_handler(ApiError, api)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, unexpected)
