"""JobService: every rule of enqueue, read and cancel. Routers call it; it calls the store."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID

from jobs_schema import (
    BackoffPolicy,
    BatchEnqueueResponse,
    EnqueueRequest,
    EnqueueResponse,
    ErrorBody,
    ErrorCode,
    Job,
    JobPage,
    JobsConfig,
    Payload,
    UniqueRule,
    UniqueWindow,
    UseCaseForecast,
)
from jobs_schema import JobFilter as JobFilterModel
from jobs_schema.jobs import expiry_of
from jobs_schema.limits import MAX_TIMESTAMP, JsonRefused, json_text
from jobs_server.auth import Principal
from jobs_server.batching import EnqueueBatcher
from jobs_server.clock import Clock
from jobs_server.errors import (
    BadRequest,
    IdempotencyMismatch,
    JobConflict,
    JobNotFound,
    JobsServerError,
    PayloadTooLarge,
    QuotaExceeded,
    UnknownJobType,
    UnknownUseCase,
    UseCaseNotFound,
)
from jobs_server.events import JobsChanged
from jobs_server.feasibility import Estimate, Feasibility
from jobs_server.job_ids import JobIds
from jobs_server.metrics import ServerMetrics
from jobs_server.store.base import (
    EnqueueOutcome,
    EnqueueResult,
    IdempotentReplay,
    JobFilter,
    JobStore,
    NewJob,
)
from jobs_server.tracing import Tracing

__all__ = [
    "EnqueueListener",
    "JobIds",
    "JobService",
    "JobTemplate",
    "request_hash",
    "scoped",
    "tenant_quota",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=JobFilterModel)

# Called after jobs were stored: the use cases touched and the earliest run_at among them.
EnqueueListener = Callable[[set[str], datetime], None]

_MAX_RETRIES = 3


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """A request as the enqueue rules make every job of it (JobService.template): the jobs of
    one template differ in id, run_at and deadline only."""

    use_case: str
    job_type: str
    payload: Payload
    priority: int
    tolerance_seconds: float  # deadline = run_at + tolerance
    max_attempts: int
    backoff: BackoffPolicy
    dedup_key: str | None
    unique: UniqueRule | None
    concurrency_key: str | None
    rate_key: str | None
    expire_grace_seconds: float | None  # None: runs late

    def deadline_for(self, run_at: datetime) -> datetime:
        # a tolerance reaching past the range is a deadline at its end, not an overflow
        return run_at + min(timedelta(seconds=self.tolerance_seconds), MAX_TIMESTAMP - run_at)

    def job(
        self,
        job_id: UUID,
        run_at: datetime,
        deadline: datetime,
        trace_context: dict[str, str] | None,
    ) -> NewJob:
        return NewJob(
            id=job_id,
            use_case=self.use_case,
            job_type=self.job_type,
            payload=self.payload,
            priority=self.priority,
            run_at=run_at,
            deadline=deadline,
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            dedup_key=self.dedup_key,
            trace_context=trace_context,
            unique=self.unique,
            concurrency_key=self.concurrency_key,
            rate_key=self.rate_key,
            expires_at=expiry_of(deadline, self.expire_grace_seconds),
        )


def tenant_quota(config: JobsConfig, tenant: str, *, default: int | None) -> int | None:
    """The most active (pending and running) jobs `tenant` may have; None: no limit."""
    cfg = config.tenants.get(tenant)
    if cfg is not None and cfg.max_active_jobs is not None:
        return cfg.max_active_jobs
    return default


def scoped(who: Principal, flt: F) -> F | None:
    """`flt` within what `who` may see: a tenant's principal sees its own jobs only; None when
    the filter names another tenant (it selects nothing). The one scoping rule of every read
    and bulk action."""
    scope = who.tenant_scope
    if scope is None:
        return flt
    if flt.tenant is not None and flt.tenant != scope:
        return None
    return flt.model_copy(update={"tenant": scope})


def _payload_json(payload: Payload) -> str:
    """The payload as JSON, or BadRequest when it breaks a rule of jobs_schema.limits (the
    request models check them already; this keeps a model built another way honest)."""
    try:
        return json_text(payload)
    except JsonRefused as exc:
        raise BadRequest(str(exc)) from exc


def request_hash(route: str, body: bytes) -> str:
    return hashlib.sha256(route.encode() + b"\0" + body).hexdigest()


class JobService:
    def __init__(
        self,
        store: JobStore,
        config: JobsConfig,
        *,
        default_quota: int | None,
        max_payload_bytes: int,
        clock: Clock,
        ids: JobIds | None = None,
        on_enqueued: EnqueueListener | None = None,
        metrics: ServerMetrics | None = None,
        tracing: Tracing | None = None,
        feasibility: Feasibility | None = None,
        on_changed: JobsChanged | None = None,
    ) -> None:
        self._feasibility = feasibility
        self._on_changed = on_changed
        self._store = store
        self._config = config
        self._default_quota = default_quota
        self._max_payload_bytes = max_payload_bytes
        self._clock = clock
        self._ids = ids or JobIds(clock)
        self._on_enqueued = on_enqueued
        self._metrics = metrics
        self._tracing = tracing or Tracing()
        self._batcher = EnqueueBatcher(self._store_batch)
        # an enqueue statement with no other of this service in flight NOTIFYs its own jobs
        # (EnqueueStore.enqueue_jobs' `announce`): one statement and transaction less a job
        # at low load, and none of NOTIFY's commit-time lock under concurrency
        self._may_announce = bool(
            store.announces_enqueues and on_enqueued is not None and on_changed is not None
        )
        self._in_flight = 0

    @property
    def config(self) -> JobsConfig:
        return self._config

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue(
        self, tenant: str, req: EnqueueRequest, *, idempotency: tuple[str, str] | None = None
    ) -> EnqueueResponse:
        result = (await self._enqueue(tenant, [req], idempotency))[0]
        if result.job is None:
            raise QuotaExceeded(tenant, self._quota(tenant) or 0)
        estimate = (await self._estimates([result.job]))[0]
        return EnqueueResponse(
            job=result.job,
            deduplicated=result.outcome is EnqueueOutcome.DEDUPLICATED,
            expected_start_at=estimate.expected_start_at if estimate else None,
            at_risk=estimate.at_risk if estimate else False,
        )

    async def _estimates(self, jobs: list[Job | None]) -> list[Estimate | None]:
        """Feasibility of each job (jobs_server.feasibility); None everywhere when it is off
        or its summary cannot be read (the jobs are stored: the answer must not fail)."""
        if self._feasibility is None:
            return [None] * len(jobs)
        try:
            return await self._feasibility.estimates(jobs, self._clock.now())
        except Exception as exc:
            logger.warning("feasibility not estimated", extra={"error": str(exc)})
            return [None] * len(jobs)

    async def enqueue_batch(
        self,
        tenant: str,
        reqs: list[EnqueueRequest],
        *,
        idempotency: tuple[str, str] | None = None,
    ) -> BatchEnqueueResponse:
        results = await self._enqueue(tenant, reqs, idempotency)
        quota = self._quota(tenant)
        estimates = await self._estimates([r.job for r in results])
        # One validation call for the whole response, not one per item: pydantic's overhead per
        # call was a good part of an item's cost.
        return BatchEnqueueResponse.model_validate(
            {
                "results": [
                    {
                        "index": i,
                        "job": r.job,
                        "deduplicated": r.outcome is EnqueueOutcome.DEDUPLICATED,
                        "expected_start_at": e.expected_start_at if e else None,
                        "at_risk": e.at_risk if e else False,
                        "error": None
                        if r.job is not None
                        else ErrorBody(
                            code=ErrorCode.QUOTA_EXCEEDED,
                            message=QuotaExceeded(tenant, quota or 0).message,
                            details={"quota": quota},
                        ),
                    }
                    for i, (r, e) in enumerate(zip(results, estimates, strict=True))
                ]
            }
        )

    async def _enqueue(
        self,
        tenant: str,
        reqs: list[EnqueueRequest],
        idempotency: tuple[str, str] | None,
    ) -> list[EnqueueResult]:
        now = self._clock.now()
        carrier = self._tracing.carrier()  # the jobs.enqueue span's, stored on each job
        new = [
            self._new_job(req, now, index=i if len(reqs) > 1 else None, trace_context=carrier)
            for i, req in enumerate(reqs)
        ]
        key, digest = idempotency if idempotency else (None, None)
        results: list[EnqueueResult | None] = [None] * len(new)
        todo = list(range(len(new)))
        for _ in range(_MAX_RETRIES):
            out = await self._store_jobs(tenant, [new[i] for i in todo], key, digest)
            if isinstance(out, IdempotentReplay):
                return await self._replay(out, digest, key)
            for i, r in zip(todo, out, strict=True):
                results[i] = r
            todo = [i for i, r in zip(todo, out, strict=True) if r.outcome is EnqueueOutcome.RETRY]
            # a retried call is a new request as far as idempotency goes: the key is taken
            key = digest = None
            if not todo:
                break
        final = [
            r if r and r.outcome is not EnqueueOutcome.RETRY else _quota_refusal() for r in results
        ]
        self._announce(final)
        if self._metrics is not None:
            self._metrics.observe_enqueue(tenant, [r.use_case for r in reqs], final)
        return final

    async def _store_jobs(
        self, tenant: str, jobs: list[NewJob], key: str | None, digest: str | None
    ) -> list[EnqueueResult] | IdempotentReplay:
        if len(jobs) == 1 and key is None:
            return [await self._batcher.submit(tenant, jobs[0])]
        return await self._store_call(tenant, jobs, key, digest)

    async def _store_batch(self, tenant: str, jobs: list[NewJob]) -> list[EnqueueResult]:
        out = await self._store_call(tenant, jobs, None, None)
        assert not isinstance(out, IdempotentReplay)
        return out

    async def _store_call(
        self, tenant: str, jobs: list[NewJob], key: str | None, digest: str | None
    ) -> list[EnqueueResult] | IdempotentReplay:
        announce = self._may_announce and self._in_flight == 0
        self._in_flight += 1
        try:
            return await self._store.enqueue_jobs(
                tenant,
                quota=self._quota(tenant),
                jobs=jobs,
                idempotency_key=key,
                request_hash=digest,
                announce=announce,
            )
        finally:
            self._in_flight -= 1

    def _announce(self, results: list[EnqueueResult]) -> None:
        """Wake the scheduler and tell the event streams of the created jobs that their
        statement did not announce itself."""
        created = [
            r.job
            for r in results
            if r.outcome is EnqueueOutcome.CREATED and r.job and not r.announced
        ]
        if created and self._on_enqueued is not None:
            self._on_enqueued({j.use_case for j in created}, min(j.run_at for j in created))
        if created and self._on_changed is not None:
            self._on_changed(j.id for j in created)

    async def _replay(
        self, replay: IdempotentReplay, digest: str | None, key: str | None
    ) -> list[EnqueueResult]:
        if replay.request_hash != digest or replay.results is None:
            raise IdempotencyMismatch(key or "")
        jobs = {j.id: j for j in await self._store.get_jobs([i for i, _ in replay.results if i])}
        return [
            EnqueueResult(outcome, jobs.get(job_id) if job_id else None)
            for job_id, outcome in replay.results
        ]

    def prepare(self, req: EnqueueRequest, now: datetime) -> NewJob:
        """The job `req` makes by the enqueue rules (use case, job type, payload, deadline),
        not stored."""
        return self._new_job(req, now, index=None)

    def template(self, req: EnqueueRequest) -> JobTemplate:
        """What every job of `req` is by the enqueue rules, checked once (JobsServerError as
        enqueue raises it): periodic jobs make each tick's job of their schedule's template,
        and store it with the tick (ScheduleStore.enqueue_ticks). `req` gives no deadline."""
        return self._template(req, {})

    def job_of(self, template: JobTemplate, run_at: datetime) -> NewJob:
        """A new job of `template`, due at `run_at`, its deadline `run_at` + its tolerance."""
        return template.job(self._ids.new(), run_at, template.deadline_for(run_at), None)

    def quota(self, tenant: str) -> int | None:
        return self._quota(tenant)

    def stored(self, tenant: str, jobs: list[NewJob], outcomes: list[EnqueueOutcome]) -> None:
        """What enqueue does once `jobs` were stored elsewhere with these outcomes: wake the
        dispatcher for the created ones, count them all."""
        created = [j for j, o in zip(jobs, outcomes, strict=True) if o is EnqueueOutcome.CREATED]
        if created and self._on_enqueued is not None:
            self._on_enqueued({j.use_case for j in created}, min(j.run_at for j in created))
        if created and self._on_changed is not None:
            self._on_changed(j.id for j in created)
        if self._metrics is not None and outcomes:
            results = [EnqueueResult(o, None) for o in outcomes]
            self._metrics.observe_enqueue(tenant, [j.use_case for j in jobs], results)

    def _new_job(
        self,
        req: EnqueueRequest,
        now: datetime,
        *,
        index: int | None,
        trace_context: dict[str, str] | None = None,
    ) -> NewJob:
        where = {} if index is None else {"index": index}
        template = self._template(req, where)
        run_at = req.run_at or now
        if req.deadline is not None:
            deadline = req.deadline
            if deadline < now:
                raise BadRequest("deadline is in the past", deadline=deadline.isoformat(), **where)
        else:
            deadline = template.deadline_for(run_at)
        return template.job(self._ids.new(now), run_at, deadline, trace_context)

    def _template(self, req: EnqueueRequest, where: dict[str, int]) -> JobTemplate:
        use_case = self._config.use_cases.get(req.use_case)
        if use_case is None:
            err: JobsServerError = UnknownUseCase(req.use_case, sorted(self._config.use_cases))
            err.details.update(where)
            raise err
        if use_case.job_types and req.job_type not in use_case.job_types:
            err = UnknownJobType(req.use_case, req.job_type, use_case.job_types)
            err.details.update(where)
            raise err
        size = len(_payload_json(req.payload))
        if size > self._max_payload_bytes:
            err = PayloadTooLarge(self._max_payload_bytes)
            err.details.update(where, payload_bytes=size)
            raise err
        tolerance = (
            req.delay_tolerance_seconds
            if req.delay_tolerance_seconds is not None
            else use_case.default_delay_tolerance_seconds
        )
        try:
            grace = req.expire_grace(use_case)
        except ValueError as exc:
            raise BadRequest(str(exc), field="expire_grace_seconds", **where) from exc
        return JobTemplate(
            use_case=req.use_case,
            job_type=req.job_type,
            payload=req.payload,
            priority=req.priority,
            tolerance_seconds=tolerance,
            max_attempts=req.max_attempts or use_case.max_attempts,
            backoff=req.backoff or use_case.backoff,
            dedup_key=req.unique.key if req.unique is not None else req.dedup_key,
            unique=_past_active(req.unique),
            concurrency_key=req.concurrency_key,
            rate_key=req.rate_key,
            expire_grace_seconds=grace,
        )

    def _quota(self, tenant: str) -> int | None:
        return tenant_quota(self._config, tenant, default=self._default_quota)

    # -- feasibility -----------------------------------------------------------------------

    async def forecast(self, who: Principal, use_case: str) -> UseCaseForecast:
        """The use case's deadline forecast. Any reader may see it: it counts jobs of every
        tenant of the use case, never says whose."""
        if use_case not in self._config.use_cases:
            raise UseCaseNotFound(use_case, sorted(self._config.use_cases))
        if self._feasibility is None:
            raise JobConflict(
                "the forecast is off on this server (JOBS_FEASIBILITY=off); set "
                "JOBS_FEASIBILITY=on on every jobs-server process to keep it",
                use_case=use_case,
            )
        return await self._feasibility.forecast(use_case, self._clock.now())

    # -- reads and cancel ------------------------------------------------------------------

    async def get(self, who: Principal, job_id: UUID) -> Job:
        job = await self._store.get_job(job_id, tenant=who.tenant_scope)
        if job is None:
            raise JobNotFound(job_id)
        history = await self._store.get_job_attempts(job_id)
        return job.model_copy(update={"history": history})

    async def list(
        self, who: Principal, flt: JobFilterModel, *, cursor: str | None = None, limit: int = 50
    ) -> JobPage:
        """A page of the jobs `flt` matches, newest first, within what `who` may see."""
        mine = scoped(who, flt)
        if mine is None:
            return JobPage(items=[])
        rows = await self._store.list_jobs(
            JobFilter.of(mine, before_id=_decode_cursor(cursor), limit=limit + 1)
        )
        more = len(rows) > limit
        items = rows[:limit]
        return JobPage(items=items, next_cursor=str(items[-1].id) if more and items else None)

    async def cancel(self, who: Principal, job_id: UUID) -> Job:
        job = await self._store.cancel_job(job_id, tenant=who.tenant_scope)
        if job is not None:
            if self._on_changed is not None:
                self._on_changed([job.id])
            return job
        current = await self._store.get_job(job_id, tenant=who.tenant_scope)
        if current is None:
            raise JobNotFound(job_id)
        raise JobConflict(
            f"job {job_id} is already {current.status.value}; only pending or running jobs "
            "can be cancelled",
            status=current.status.value,
        )


def _decode_cursor(cursor: str | None) -> UUID | None:
    if not cursor:
        return None
    try:
        return UUID(cursor)
    except ValueError as exc:
        raise BadRequest("cursor is not one this server returned", cursor=cursor) from exc


def _quota_refusal() -> EnqueueResult:
    return EnqueueResult(EnqueueOutcome.QUOTA_EXCEEDED, None)


def _past_active(rule: UniqueRule | None) -> UniqueRule | None:
    """The rule the store keeps: None for "while active", which the dedup key alone gives."""
    return None if rule is None or rule.window is UniqueWindow.ACTIVE else rule
