"""The one error envelope every jobs-server error response uses."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = ["ErrorBody", "ErrorCode", "ErrorEnvelope"]


class ErrorCode(StrEnum):
    """Machine-readable error codes. Clients switch on these, never on messages."""

    VALIDATION = "validation_error"
    MALFORMED_JSON = "malformed_json"
    UNKNOWN_USE_CASE = "unknown_use_case"
    UNKNOWN_JOB_TYPE = "unknown_job_type"
    UNKNOWN_TENANT = "unknown_tenant"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    BATCH_TOO_LARGE = "batch_too_large"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    IDEMPOTENCY_MISMATCH = "idempotency_key_mismatch"
    QUOTA_EXCEEDED = "quota_exceeded"
    TOO_MANY_STREAMS = "too_many_streams"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal_error"


class ErrorBody(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str
    details: dict[str, JsonValue] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    """`{"error": {"code": ..., "message": ..., "details": {...}}}`."""

    model_config = ConfigDict(frozen=True)

    error: ErrorBody
