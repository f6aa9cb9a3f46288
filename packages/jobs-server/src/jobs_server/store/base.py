"""The storage port: the only way the service and scheduler reach job state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from pydantic import JsonValue

from jobs_schema import (
    AttemptOutcome,
    AttemptRecord,
    BackoffPolicy,
    Job,
    JobStatus,
    LeaseRef,
    LeaseState,
    Payload,
)

__all__ = [
    "ClaimedJob",
    "EnqueueOutcome",
    "EnqueueResult",
    "FailedAttempt",
    "IdempotentReplay",
    "JobFilter",
    "JobStore",
    "LeaderLease",
    "LeaseStatus",
    "NewJob",
    "RunningLease",
    "Subscription",
    "SucceededAttempt",
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


@dataclass(frozen=True, slots=True)
class LeaderLease:
    name: str
    holder: str
    epoch: int


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job just leased for one attempt, with what its SQS message needs."""

    id: UUID
    tenant: str
    use_case: str
    job_type: str
    payload: Payload
    attempt: int
    max_attempts: int
    lease_token: UUID
    lease_expires_at: datetime
    deadline: datetime
    run_at: datetime
    created_at: datetime
    trace_context: dict[str, str] | None
    missed_deadline: bool

    @property
    def lease(self) -> LeaseRef:
        return LeaseRef(job_id=self.id, attempt=self.attempt, lease_token=self.lease_token)


@dataclass(frozen=True, slots=True)
class RunningLease:
    """A running attempt as the retry rules need it."""

    id: UUID
    attempt: int
    lease_token: UUID
    max_attempts: int
    backoff: BackoffPolicy


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    id: UUID
    attempt: int
    lease_token: UUID
    next_status: JobStatus  # pending (retry at run_at) or dead
    run_at: datetime | None
    outcome: AttemptOutcome  # failed or lease_expired
    error_type: str
    error_message: str
    traceback: str | None = None
    worker_id: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SucceededAttempt:
    id: UUID
    attempt: int
    lease_token: UUID
    result: JsonValue
    worker_id: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    id: UUID
    state: LeaseState
    lease_expires_at: datetime | None


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

    async def pending_migrations(self) -> list[int]: ...

    # -- scheduler and worker path ----------------------------------------------------------

    async def acquire_leadership(self, name: str, holder: str, *, ttl: float) -> int | None: ...

    async def resign_leadership(self, name: str, holder: str) -> None: ...

    async def claim_due_jobs(
        self,
        use_case: str,
        *,
        capacity: int,
        limit: int,
        lease_seconds: float,
        leader: LeaderLease,
        per_tenant_cap: int | None,
    ) -> list[ClaimedJob]: ...

    async def release_leases(self, leases: list[LeaseRef]) -> list[UUID]: ...

    async def complete_attempts(self, done: list[SucceededAttempt]) -> dict[UUID, JobStatus]: ...

    async def fail_attempts(
        self, failed: list[FailedAttempt], *, require_expired: bool
    ) -> dict[UUID, JobStatus]: ...

    async def find_expired_leases(self, *, limit: int) -> list[RunningLease]: ...

    async def get_leases(self, job_ids: list[UUID]) -> list[RunningLease]: ...

    async def extend_leases(
        self, leases: list[LeaseRef], *, extend_seconds: list[float]
    ) -> list[LeaseStatus]: ...

    async def mark_attempts_started(self, leases: list[LeaseRef], *, worker_id: str) -> None: ...

    async def get_payload(self, job_id: UUID) -> Payload | None: ...

    async def prune_finished_jobs(
        self, use_case: str, *, older_than_seconds: float, limit: int
    ) -> int: ...

    async def prune_idempotency_keys(self, *, older_than_seconds: float, limit: int) -> int: ...

    async def notify(self, channel: str, payload: str) -> None: ...

    async def listen(self, channel: str, callback: Callable[[str], None]) -> Subscription:
        """Call `callback(payload)` for each NOTIFY on `channel`, on a connection of its own."""
        ...

    async def close(self) -> None: ...


class Subscription(Protocol):
    @property
    def alive(self) -> bool: ...

    async def close(self) -> None: ...
