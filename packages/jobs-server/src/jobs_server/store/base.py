"""The storage port: the only way the service and scheduler reach job state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from jobs_schema import AttemptRecord, BackoffPolicy, Job, JobStatus, Payload

__all__ = [
    "EnqueueOutcome",
    "EnqueueResult",
    "IdempotentReplay",
    "JobFilter",
    "JobStore",
    "NewJob",
]


@dataclass(frozen=True, slots=True)
class NewJob:
    id: UUID
    use_case: str
    job_type: str
    payload: Payload
    priority: int
    run_at: datetime
    deadline: datetime
    max_attempts: int
    backoff: BackoffPolicy
    dedup_key: str | None = None
    trace_context: dict[str, str] | None = None


class EnqueueOutcome(StrEnum):
    CREATED = "created"
    DEDUPLICATED = "deduplicated"
    QUOTA_EXCEEDED = "quota_exceeded"
    # the duplicate it matched finished while we looked: enqueue it again
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    outcome: EnqueueOutcome
    job: Job | None


@dataclass(frozen=True, slots=True)
class IdempotentReplay:
    """The idempotency key was used before: its request hash and stored results."""

    request_hash: str
    results: list[tuple[UUID | None, EnqueueOutcome]] | None


@dataclass(frozen=True, slots=True)
class JobFilter:
    tenant: str | None = None
    status: JobStatus | None = None
    use_case: str | None = None
    job_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    before_id: UUID | None = None
    limit: int = 50


class JobStore(Protocol):
    async def enqueue_jobs(
        self,
        tenant: str,
        *,
        quota: int | None,
        jobs: list[NewJob],
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> list[EnqueueResult] | IdempotentReplay: ...

    async def get_job(self, job_id: UUID, *, tenant: str | None) -> Job | None: ...

    async def get_jobs(self, job_ids: list[UUID]) -> list[Job]: ...

    async def get_job_attempts(self, job_id: UUID) -> list[AttemptRecord]: ...

    async def list_jobs(self, flt: JobFilter) -> list[Job]: ...

    async def cancel_job(self, job_id: UUID, *, tenant: str | None) -> Job | None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
