"""ActionService: the rules of the operator actions, retry one job, cancel or retry every job
matching a filter, and the count that confirms a bulk action. The API (api/actions.py) and the
dashboard call the same methods with the caller's principal, so the dashboard can do nothing a
script holding the same token cannot.

A retry makes a dead, cancelled or expired job pending now:
- its attempts and their history stay, and it gets at least one more attempt
  (max_attempts becomes max(max_attempts, attempts + 1): a job that used up its attempts runs
  once more, one cancelled before running keeps the attempts it had left);
- its deadline becomes now + the use case's default tolerance: the old deadline has passed, and
  an operator's retry is a new request, not a late run of the old one (deadline_missed is reset);
  a job that expires (miss policy expire) keeps its grace: its new expires_at is the new
  deadline plus it;
- result, lease and cancellation mark are cleared; last_error stays until the next outcome;
- the tenant's quota of active jobs holds (retries past it are skipped, a single one is refused
  with 429), and a dedup key an active job holds is not taken twice (skipped, or 409).

Bulk actions run in bounded batches (one statement each, newest first) and stop after `limit`
matching jobs; `max_id` (from the count) keeps jobs created after the confirmation out."""

from __future__ import annotations

import logging
from uuid import UUID

from jobs_schema import (
    ACTIVE_STATUSES,
    BulkAction,
    BulkResult,
    Job,
    JobCount,
    JobsConfig,
    JobSelection,
    JobStatus,
)
from jobs_server.auth import Principal
from jobs_server.clock import Clock
from jobs_server.errors import Forbidden, JobConflict, JobNotFound, QuotaExceeded
from jobs_server.events import JobsChanged
from jobs_server.service import EnqueueListener, scoped, tenant_quota
from jobs_server.store.base import ActionBatch, JobFilter, JobStore, RetryRules

__all__ = ["ACTIONABLE", "RETRYABLE", "ActionService"]

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED})
# The statuses each bulk action can change.
# waiting jobs (docs/workflows.md) are cancelled as pending ones are
ACTIONABLE = {
    BulkAction.CANCEL: ACTIVE_STATUSES | {JobStatus.WAITING},
    BulkAction.RETRY: RETRYABLE,
}

_BATCH = 500


class ActionService:
    def __init__(
        self,
        store: JobStore,
        config: JobsConfig,
        *,
        default_quota: int | None,
        batch_size: int = _BATCH,
        on_enqueued: EnqueueListener | None = None,
        clock: Clock,
        on_changed: JobsChanged | None = None,
    ) -> None:
        self._on_changed = on_changed
        self._store = store
        self._config = config
        self._default_quota = default_quota
        self._batch = batch_size
        self._on_enqueued = on_enqueued
        self._clock = clock

    # -- one job ---------------------------------------------------------------------------

    async def retry(self, who: Principal, job_id: UUID) -> Job:
        _require_write(who)
        flt = JobFilter(tenant=who.tenant_scope, job_id=job_id)
        done = await self._store.retry_jobs(flt, batch=1, before_id=None, rules=self._rules())
        job = await self._store.get_job(job_id, tenant=who.tenant_scope)
        if job is None:
            raise JobNotFound(job_id)
        if done.touched:
            self._announce(done)
            logger.info("job retried", extra={"job_id": str(job_id), "tenant": job.tenant})
            return job
        if job.status not in RETRYABLE:
            raise JobConflict(
                f"job {job_id} is {job.status.value}; only dead, cancelled or expired jobs "
                "can be retried",
                status=job.status.value,
            )
        if await self._dedup_key_taken(job):
            raise JobConflict(
                f"job {job_id} cannot be retried: an active job holds its dedup key "
                f"{job.dedup_key!r}",
                dedup_key=job.dedup_key,
            )
        raise QuotaExceeded(job.tenant, self._quota(job.tenant) or 0)

    async def _dedup_key_taken(self, job: Job) -> bool:
        if job.dedup_key is None:
            return False
        same = await self._store.list_jobs(
            JobFilter(tenant=job.tenant, use_case=job.use_case, dedup_key=job.dedup_key, limit=20)
        )
        return any(j.status in ACTIVE_STATUSES for j in same)

    # -- many jobs -------------------------------------------------------------------------

    async def count(
        self, who: Principal, selection: JobSelection, *, action: BulkAction | None = None
    ) -> JobCount:
        """How many jobs match (those `action` can change, when given) and the newest one's
        id, to pass back as `max_id`."""
        flt = _selection_filter(who, selection)
        if flt is None:
            return JobCount(count=0, max_id=None)
        statuses = ACTIONABLE[action] if action is not None else None
        n, max_id = await self._store.count_jobs(flt, statuses=statuses)
        return JobCount(count=n, max_id=max_id)

    async def cancel_matching(self, who: Principal, selection: JobSelection) -> BulkResult:
        return await self._bulk(who, selection, BulkAction.CANCEL)

    async def retry_matching(self, who: Principal, selection: JobSelection) -> BulkResult:
        return await self._bulk(who, selection, BulkAction.RETRY)

    async def _bulk(
        self, who: Principal, selection: JobSelection, action: BulkAction
    ) -> BulkResult:
        _require_write(who)
        flt = _selection_filter(who, selection)
        picked = touched = 0
        cursor: UUID | None = None
        exhausted = flt is None
        while flt is not None and not exhausted and picked < selection.limit:
            batch = min(self._batch, selection.limit - picked)
            done = await self._batch_of(action, flt, batch, cursor)
            picked, touched, cursor = picked + done.picked, touched + done.touched, done.last_id
            if action is BulkAction.RETRY:
                self._announce(done)
            elif self._on_changed is not None and done.ids:
                self._on_changed(done.ids)
            exhausted = done.picked < batch
        logger.info(
            "bulk action",
            extra={"action": action.value, "touched": touched, "tenant": who.tenant_scope},
        )
        return BulkResult(
            action=action, touched=touched, skipped=picked - touched, more=not exhausted
        )

    async def _batch_of(
        self, action: BulkAction, flt: JobFilter, batch: int, cursor: UUID | None
    ) -> ActionBatch:
        if action is BulkAction.CANCEL:
            return await self._store.cancel_jobs(flt, batch=batch, before_id=cursor)
        return await self._store.retry_jobs(flt, batch=batch, before_id=cursor, rules=self._rules())

    # -- rules -----------------------------------------------------------------------------

    def _rules(self) -> RetryRules:
        return RetryRules(
            tolerances={
                name: uc.default_delay_tolerance_seconds
                for name, uc in self._config.use_cases.items()
            },
            quotas={tenant: self._quota(tenant) for tenant in self._config.tenants},
            default_quota=self._default_quota,
        )

    def _quota(self, tenant: str) -> int | None:
        return tenant_quota(self._config, tenant, default=self._default_quota)

    def _announce(self, done: ActionBatch) -> None:
        if done.touched and done.use_cases and self._on_enqueued is not None:
            self._on_enqueued(set(done.use_cases), self._clock.now())
        if done.ids and self._on_changed is not None:
            self._on_changed(done.ids)


def _require_write(who: Principal) -> None:
    if not who.can_write:
        raise Forbidden("this token is read-only")


def _selection_filter(who: Principal, selection: JobSelection) -> JobFilter | None:
    """The selection as a store filter within what `who` may see; None: it selects nothing."""
    mine = scoped(who, selection)
    return None if mine is None else JobFilter.of(mine, max_id=mine.max_id)
