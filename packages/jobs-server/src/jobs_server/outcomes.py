"""OutcomeService: the rules of the worker API and the reaper. Outcomes are fenced by job id,
attempt and lease token in the store; here a report becomes a success, a retry or a death."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from uuid import UUID

from jobs_schema import (
    AttemptOutcome,
    CancellationsRequest,
    CancellationsResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    HeartbeatResult,
    JobStatus,
    LeaseRef,
    LeaseState,
    OutcomeAck,
    OutcomeKind,
    OutcomeReport,
    PayloadResponse,
    ReleaseRequest,
)
from jobs_server.clock import Clock
from jobs_server.errors import JobNotFound
from jobs_server.events import JobsChanged
from jobs_server.metrics import ServerMetrics
from jobs_server.retries import LEASE_EXPIRED, decide_failure
from jobs_server.store.base import FailedAttempt, JobStore, RunningLease, SucceededAttempt

__all__ = ["OutcomeService"]

logger = logging.getLogger(__name__)

# Called when running jobs finished or were given back: slots are free, the scheduler may run.
SlotsFreed = Callable[[], None]


class OutcomeService:
    def __init__(
        self,
        store: JobStore,
        *,
        clock: Clock,
        on_slots_freed: SlotsFreed | None = None,
        metrics: ServerMetrics | None = None,
        on_changed: JobsChanged | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_slots_freed = on_slots_freed
        self._on_changed = on_changed
        self._metrics = metrics

    async def report(self, reports: list[OutcomeReport]) -> list[OutcomeAck]:
        """Apply a batch of outcomes; a stale one (not the job's current lease) changes nothing."""
        unique = list({(r.job_id, r.attempt, r.lease_token): r for r in reports}.values())
        successes = [r for r in unique if r.outcome is OutcomeKind.SUCCEEDED]
        failures = [r for r in unique if r.outcome is OutcomeKind.FAILED]
        applied = await self._store.complete_attempts([_success(r) for r in successes])
        decided, leases = await self._decide(failures)
        applied |= await self._store.fail_attempts(decided, require_expired=False)
        _log_failures(decided, leases, applied)
        if self._metrics is not None:
            self._metrics.observe_outcomes(applied.get(r.job_id) for r in unique)
        if applied:
            self._slots_freed(applied)
        return [
            OutcomeAck(job_id=r.job_id, applied=r.job_id in applied, status=applied.get(r.job_id))
            for r in reports
        ]

    async def _decide(
        self, failures: list[OutcomeReport]
    ) -> tuple[list[FailedAttempt], dict[UUID, RunningLease]]:
        if not failures:
            return [], {}
        leases = {x.id: x for x in await self._store.get_leases([r.job_id for r in failures])}
        now = self._clock.now()
        decided = []
        for r in failures:
            lease = leases.get(r.job_id)
            if lease is None or (lease.attempt, lease.lease_token) != (r.attempt, r.lease_token):
                continue  # stale: the store would refuse it anyway
            assert r.failure is not None
            decided.append(
                decide_failure(
                    lease, r.failure, now=now, worker_id=r.worker_id, started_at=r.started_at
                )
            )
        return decided, leases

    async def heartbeat(self, req: HeartbeatRequest) -> HeartbeatResponse:
        statuses = await self._store.extend_leases(
            list(req.items), extend_seconds=[i.extend_seconds for i in req.items]
        )
        # the attempt learns its worker now, not only when it reports: a worker that dies
        # mid-handler is still named on the attempt the reaper closes
        held = {s.id for s in statuses if s.state is not LeaseState.LOST}
        await self._store.mark_attempts_started(
            [i for i in req.items if i.job_id in held], worker_id=req.worker_id
        )
        return HeartbeatResponse(
            results=[
                HeartbeatResult(job_id=s.id, state=s.state, lease_expires_at=s.lease_expires_at)
                for s in statuses
            ]
        )

    async def cancellations(self, req: CancellationsRequest) -> CancellationsResponse:
        """The worker's cancellation poll: which of its running attempts were cancelled. Fenced
        by lease like every worker call (an attempt's token is known only to its worker), and
        a read: polling every second costs no write, no lease extension."""
        leases = list(dict.fromkeys(req.leases))
        return CancellationsResponse(cancelled=await self._store.find_cancel_requested(leases))

    async def release(self, req: ReleaseRequest) -> list[UUID]:
        released = await self._store.release_leases(list(req.leases))
        if released:
            logger.info("leases released", extra={"count": len(released), "worker": req.worker_id})
            self._slots_freed(released)
        return released

    async def started(self, leases: list[LeaseRef], *, worker_id: str) -> None:
        await self._store.mark_attempts_started(leases, worker_id=worker_id)

    async def payload(self, job_id: UUID) -> PayloadResponse:
        payload = await self._store.get_payload(job_id)
        if payload is None:
            raise JobNotFound(job_id)
        return PayloadResponse(job_id=job_id, payload=payload)

    async def reap_expired(
        self, *, limit: int = 500, now: datetime | None = None
    ) -> dict[UUID, JobStatus]:
        """Expired leases count as failed attempts ("lease expired"): retried or dead. `now`
        (default: the clock's) is when the retries' backoff starts."""
        expired = await self._store.find_expired_leases(limit=limit)
        if not expired:
            return {}
        now = now or self._clock.now()
        decided = [
            decide_failure(x, LEASE_EXPIRED, now=now, outcome=AttemptOutcome.LEASE_EXPIRED)
            for x in expired
        ]
        applied = await self._store.fail_attempts(decided, require_expired=True)
        if applied:
            logger.warning("leases expired", extra={"count": len(applied)})
            _log_failures(decided, {x.id: x for x in expired}, applied)
            if self._metrics is not None:
                by_id = {x.id: x.use_case for x in expired}
                self._metrics.observe_lease_expiries(by_id[i] for i in applied)
            self._slots_freed(applied)
        return applied

    def _slots_freed(self, changed: Iterable[UUID]) -> None:
        if self._on_slots_freed is not None:
            self._on_slots_freed()
        if self._on_changed is not None:
            self._on_changed(changed)


def _log_failures(
    decided: list[FailedAttempt],
    leases: dict[UUID, RunningLease],
    applied: dict[UUID, JobStatus],
) -> None:
    """A line per failed attempt that counted, the job's fields bound (never its error text,
    which may quote the payload)."""
    for f in decided:
        status = applied.get(f.id)
        lease = leases.get(f.id)
        if status is None or lease is None:
            continue
        extra = {
            "job_id": str(f.id),
            "tenant": lease.tenant,
            "use_case": lease.use_case,
            "attempt": f.attempt,
            "error_type": f.error_type,
            "status": status.value,
        }
        if status is JobStatus.PENDING:
            logger.info("attempt failed; retry scheduled", extra={**extra, "run_at": f.run_at})
        elif status is JobStatus.DEAD:
            logger.warning("attempt failed; job dead", extra=extra)
        else:
            logger.info("attempt failed; job cancelled", extra=extra)


def _success(r: OutcomeReport) -> SucceededAttempt:
    return SucceededAttempt(
        id=r.job_id,
        attempt=r.attempt,
        lease_token=r.lease_token,
        result=r.result,
        worker_id=r.worker_id,
        started_at=r.started_at,
    )
