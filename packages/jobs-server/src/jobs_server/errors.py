"""Domain errors of jobs-server. They carry domain data; the API maps them to HTTP."""

from __future__ import annotations

from typing import Any
from uuid import UUID

__all__ = [
    "BadRequest",
    "ConfigError",
    "Forbidden",
    "IdempotencyMismatch",
    "JobConflict",
    "JobNotFound",
    "JobsServerError",
    "PayloadTooLarge",
    "QuotaExceeded",
    "ScheduleConflict",
    "ScheduleNotFound",
    "StoreUnavailable",
    "StreamsFull",
    "TooManyStreams",
    "UnknownJobType",
    "UnknownTenant",
    "UnknownUseCase",
    "UseCaseNotFound",
    "WebhookConflict",
    "WebhookNotFound",
]


class JobsServerError(Exception):
    """Root of every error jobs-server raises on purpose."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(JobsServerError):
    """A setting is missing or wrong; the message names it and says how to fix it."""


class BadRequest(JobsServerError):
    """The request is well-formed but breaks a rule (e.g. a deadline already in the past)."""


class UnknownUseCase(JobsServerError):
    def __init__(self, use_case: str, known: list[str]) -> None:
        super().__init__(
            f"unknown use case {use_case!r}; configured use cases: {', '.join(known) or 'none'}",
            use_case=use_case,
            known=known,
        )


class UseCaseNotFound(UnknownUseCase):
    """A use case named in a path (GET /v1/use-cases/{use_case}/...) is not configured: 404."""


class UnknownJobType(JobsServerError):
    def __init__(self, use_case: str, job_type: str, allowed: list[str]) -> None:
        super().__init__(
            f"job type {job_type!r} is not allowed in use case {use_case!r}; "
            f"allowed: {', '.join(allowed)}",
            use_case=use_case,
            job_type=job_type,
            allowed=allowed,
        )


class UnknownTenant(JobsServerError):
    def __init__(self, tenant: str, known: list[str]) -> None:
        super().__init__(
            f"unknown tenant {tenant!r}; configured tenants: {', '.join(known) or 'none'}",
            tenant=tenant,
            known=known,
        )


class PayloadTooLarge(JobsServerError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit} bytes", limit=limit)


class QuotaExceeded(JobsServerError):
    def __init__(self, tenant: str, quota: int) -> None:
        super().__init__(
            f"tenant {tenant!r} has reached its quota of {quota} active (pending + running) jobs",
            quota=quota,
        )


class JobNotFound(JobsServerError):
    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"job {job_id} not found", job_id=str(job_id))


class Forbidden(JobsServerError):
    """The token may not do this (a read-only token asking for an action)."""


class JobConflict(JobsServerError):
    """The job's state does not allow the action (e.g. cancelling a finished job)."""


class IdempotencyMismatch(JobsServerError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request body; "
            "use a new key for a new request",
            key=key,
        )


class TooManyStreams(JobsServerError):
    def __init__(self, tenant: str, limit: int) -> None:
        super().__init__(
            f"tenant {tenant!r} has {limit} event streams open on this server, its limit "
            "(JOBS_EVENTS_MAX_STREAMS_PER_TENANT); close one, or retry later",
            limit=limit,
        )


class StreamsFull(JobsServerError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this server holds its maximum of {limit} event streams "
            "(JOBS_EVENTS_MAX_STREAMS), or is stopping; retry, another server may take it",
            limit=limit,
        )


class StoreUnavailable(JobsServerError):
    """PostgreSQL cannot be reached or refused the connection."""


class ScheduleNotFound(JobsServerError):
    def __init__(self, tenant: str, name: str) -> None:
        super().__init__(f"schedule {name!r} of tenant {tenant!r} not found", name=name)


class ScheduleConflict(JobsServerError):
    """A schedule of that name exists, the tenant has as many as it may, or the action does
    not apply to it (one from the config file is read-only through the API)."""


class WebhookNotFound(JobsServerError):
    def __init__(self, webhook_id: UUID) -> None:
        super().__init__(f"webhook {webhook_id} not found", webhook_id=str(webhook_id))


class WebhookConflict(JobsServerError):
    """Webhooks are off, or the tenant has as many subscriptions as it may."""
