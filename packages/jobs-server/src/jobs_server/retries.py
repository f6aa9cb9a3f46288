"""Retry rules: the backoff delay, and what a failed attempt leads to. One path serves both a
failure a worker reports and a lease the reaper finds expired."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from jobs_schema import AttemptOutcome, BackoffKind, BackoffPolicy, FailureInfo, JobStatus
from jobs_server.store.base import FailedAttempt, RunningLease

__all__ = ["LEASE_EXPIRED", "backoff_delay", "decide_failure"]

LEASE_EXPIRED = FailureInfo(
    type="LeaseExpired",
    message="the attempt's lease expired before its worker reported an outcome",
)


def backoff_delay(
    policy: BackoffPolicy, retry: int, *, rng: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `retry` (1 = after the first failure).

    The jitter spreads the delay downwards only, after the cap: the delay lies in
    `[d * (1 - jitter), d]` with `d = min(raw, cap)`. So `cap_seconds` is a promise that holds
    (no retry waits longer), and retries that reached the cap still spread out instead of
    lining up on it."""
    n = max(retry, 1)
    if policy.kind is BackoffKind.EXPONENTIAL:
        # past 2**63 the cap has long won; avoid float overflow
        raw = policy.base_seconds * 2.0 ** min(n - 1, 63)
    elif policy.kind is BackoffKind.LINEAR:
        raw = policy.base_seconds * n
    else:
        raw = policy.base_seconds
    delay = min(raw, policy.cap_seconds)
    return delay * (1.0 - policy.jitter * rng())


def decide_failure(
    lease: RunningLease,
    failure: FailureInfo,
    *,
    now: datetime,
    outcome: AttemptOutcome = AttemptOutcome.FAILED,
    worker_id: str | None = None,
    started_at: datetime | None = None,
    rng: Callable[[], float] = random.random,
) -> FailedAttempt:
    """Retry with backoff while attempts remain and the failure is retryable, else dead."""
    retry = failure.retryable and lease.attempt < lease.max_attempts
    run_at = None
    if retry:
        delay = (
            failure.retry_delay_seconds
            if failure.retry_delay_seconds is not None
            else backoff_delay(lease.backoff, lease.attempt, rng=rng)
        )
        run_at = now + timedelta(seconds=delay)
    return FailedAttempt(
        id=lease.id,
        attempt=lease.attempt,
        lease_token=lease.lease_token,
        next_status=JobStatus.PENDING if retry else JobStatus.DEAD,
        run_at=run_at,
        outcome=outcome,
        error_type=failure.type,
        error_message=failure.message,
        traceback=failure.traceback,
        worker_id=worker_id,
        started_at=started_at,
    )
