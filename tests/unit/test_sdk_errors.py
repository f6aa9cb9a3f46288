"""The exception tree and its mapping from the error envelope."""

from __future__ import annotations

import copy
import pickle

import pytest

from jobs_schema import ErrorBody, ErrorCode
from jobs_sdk import (
    Conflict,
    Forbidden,
    IdempotencyMismatch,
    JobsError,
    JobsTimeout,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from jobs_sdk.errors import error_for_status, error_from_body


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [
        (ErrorCode.VALIDATION, ValidationFailed, 422),
        (ErrorCode.MALFORMED_JSON, ValidationFailed, 400),
        (ErrorCode.UNKNOWN_USE_CASE, ValidationFailed, 422),
        (ErrorCode.UNKNOWN_JOB_TYPE, ValidationFailed, 422),
        (ErrorCode.UNKNOWN_TENANT, ValidationFailed, 422),
        (ErrorCode.PAYLOAD_TOO_LARGE, PayloadTooLarge, 413),
        (ErrorCode.BATCH_TOO_LARGE, PayloadTooLarge, 413),
        (ErrorCode.UNAUTHORIZED, Unauthorized, 401),
        (ErrorCode.FORBIDDEN, Forbidden, 403),
        (ErrorCode.NOT_FOUND, NotFound, 404),
        (ErrorCode.CONFLICT, Conflict, 409),
        (ErrorCode.IDEMPOTENCY_MISMATCH, IdempotencyMismatch, 409),
        (ErrorCode.QUOTA_EXCEEDED, QuotaExceeded, 429),
        (ErrorCode.UNAVAILABLE, Unavailable, 503),
        (ErrorCode.INTERNAL, ServerError, 500),
    ],
)
def test_every_code_has_its_class(code, cls, status):
    err = error_from_body(ErrorBody(code=code, message="m", details={"k": 1}))
    assert type(err) is cls
    assert (err.code, err.message, err.details, err.status) == (code, "m", {"k": 1}, status)


def test_the_answers_status_wins_over_the_usual_one():
    body = ErrorBody(code=ErrorCode.VALIDATION, message="bad")
    assert error_from_body(body, 400).status == 400


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, Unauthorized),
        (404, NotFound),
        (429, QuotaExceeded),
        (502, ServerError),
        (503, Unavailable),
        (418, JobsError),
    ],
)
def test_answers_without_an_envelope_map_by_status(status, cls):
    err = error_for_status(status, "from a proxy")
    assert type(err) is cls
    assert (err.status, err.code) == (status, None)


def test_errors_copy_and_pickle_whole():
    err = QuotaExceeded("full", code=ErrorCode.QUOTA_EXCEEDED, status=429, details={"quota": 10})
    for clone in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert type(clone) is QuotaExceeded
        assert (clone.code, clone.status, clone.details) == (err.code, 429, {"quota": 10})


def test_errors_fit_the_builtin_hierarchy_where_it_helps():
    assert issubclass(ValidationFailed, ValueError)
    assert issubclass(JobsTimeout, TimeoutError)
    assert issubclass(IdempotencyMismatch, Conflict)
    assert str(NotFound("job x not found", code=ErrorCode.NOT_FOUND)) == (
        "not_found: job x not found"
    )
