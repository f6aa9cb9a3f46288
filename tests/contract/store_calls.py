"""Store calls the contract tests make again and again, with the defaults they share."""

from __future__ import annotations

from datetime import datetime

from jobs_schema import AttemptOutcome, JobStatus, RateLimit
from jobs_server.store.base import (
    ClaimedJob,
    EnqueueResult,
    FailedAttempt,
    IdempotentReplay,
    JobStore,
    LeaderLease,
    NewJob,
)


async def store_jobs(
    impl: JobStore, jobs: list[NewJob], *, tenant: str = "acme", quota: int | None = None
) -> list[EnqueueResult]:
    out = await impl.enqueue_jobs(tenant, quota=quota, jobs=jobs)
    assert not isinstance(out, IdempotentReplay)
    return out


async def claim(
    impl: JobStore,
    leader: LeaderLease,
    *,
    use_case: str = "uc",
    capacity: int = 10,
    limit: int = 10,
    lease_seconds: float = 30,
    per_tenant_cap: int | None = None,
    per_key_cap: int | None = None,
    rate_limit: RateLimit | None = None,
) -> list[ClaimedJob]:
    return await impl.claim_due_jobs(
        use_case,
        capacity=capacity,
        limit=limit,
        lease_seconds=lease_seconds,
        leader=leader,
        per_tenant_cap=per_tenant_cap,
        per_key_cap=per_key_cap,
        rate_limit=rate_limit,
    )


def failure(
    c: ClaimedJob,
    *,
    next_status: JobStatus,
    run_at: datetime | None = None,
    outcome: AttemptOutcome = AttemptOutcome.FAILED,
    worker_id: str | None = None,
    traceback: str | None = None,
) -> FailedAttempt:
    return FailedAttempt(
        id=c.id,
        attempt=c.attempt,
        lease_token=c.lease_token,
        next_status=next_status,
        run_at=run_at,
        outcome=outcome,
        error_type="ValueError",
        error_message="boom",
        traceback=traceback,
        worker_id=worker_id,
    )
