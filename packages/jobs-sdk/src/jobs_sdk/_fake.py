"""The in-memory jobs of `jobs_sdk.testing`: the server's producer-facing rules (defaults,
deadlines, dedup keys, idempotency keys, cancel and retry) on a dict, without I/O. The sync
and async fakes both sit on one of these."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from jobs_schema import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    BatchEnqueueRequest,
    BatchEnqueueResponse,
    BatchItemResult,
    BulkAction,
    BulkResult,
    EnqueueRequest,
    EnqueueResponse,
    ErrorBody,
    ErrorCode,
    EventKind,
    EventQuery,
    ForecastBucket,
    Job,
    JobCount,
    JobEvent,
    JobHead,
    JobPage,
    JobSelection,
    JobStatus,
    UniqueRule,
    UniqueWindow,
    UseCaseConfig,
    UseCaseForecast,
)
from jobs_schema.graph import parent_id
from jobs_schema.workflows import ParentResult
from jobs_sdk._events import EventFilters
from jobs_sdk._fake_graph import FakeGraph
from jobs_sdk._http import JobFilters, _validated
from jobs_sdk.errors import Conflict, IdempotencyMismatch, JobsError, NotFound, ValidationFailed

__all__ = ["FakeJobs"]

_RETRYABLE = frozenset({JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED})
_ACTIONABLE = {
    BulkAction.CANCEL: ACTIVE_STATUSES | {JobStatus.WAITING},
    BulkAction.RETRY: _RETRYABLE,
}
_DEFAULT_USE_CASE = UseCaseConfig(queue="fake")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Replay:
    body: tuple[EnqueueRequest, ...]
    response: EnqueueResponse | BatchEnqueueResponse


@dataclass
class FakeJobs:
    """Jobs of one tenant. `use_cases`: the server's config, to refuse unknown use cases and
    job types and take their defaults; None accepts any with the server's own defaults."""

    tenant: str = "test"
    use_cases: Mapping[str, UseCaseConfig] | None = None
    clock: Callable[[], datetime] = _utcnow
    jobs: dict[UUID, Job] = field(default_factory=dict)
    _seq: int = 0
    _keys: dict[str, _Replay] = field(default_factory=dict)
    _fresh: list[UUID] = field(default_factory=list)
    graph: FakeGraph = field(default_factory=FakeGraph)

    def take_fresh(self) -> list[Job]:
        """The jobs made pending (enqueued or retried) since the last call, oldest first."""
        fresh, self._fresh = self._fresh, []
        return [self.jobs[i] for i in fresh if i in self.jobs]

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue(self, request: EnqueueRequest, key: str | None) -> EnqueueResponse:
        replay = self._replay(key, (request,))
        if isinstance(replay, EnqueueResponse):
            return replay
        if request.depends_on:
            if any(parent_id(p) is None for p in request.depends_on):
                raise ValidationFailed(
                    "depends_on names a ref: refs name items of the same batch request",
                    code=ErrorCode.VALIDATION,
                    status=400,
                )
            [job] = self._enqueue_graph([request])
            response = _feasible(job)
            self._remember(key, (request,), response)
            return response
        response = self._enqueue(request)
        self._remember(key, (request,), response)
        return response

    def enqueue_batch(
        self, requests: Sequence[EnqueueRequest], key: str | None
    ) -> BatchEnqueueResponse:
        _validated_batch(requests)
        replay = self._replay(key, tuple(requests))
        if isinstance(replay, BatchEnqueueResponse):
            return replay
        if any(r.depends_on for r in requests):
            jobs = self._enqueue_graph(requests)
            results = [BatchItemResult(index=i, job=j) for i, j in enumerate(jobs)]
        else:
            results = [self._item(i, r) for i, r in enumerate(requests)]
        response = BatchEnqueueResponse(results=results)
        self._remember(key, tuple(requests), response)
        return response

    def _enqueue_graph(self, requests: Sequence[EnqueueRequest]) -> list[Job]:
        """A graph: every job stored, children waiting for their parents (docs/workflows.md)."""
        self.graph.check_parents(requests, self.jobs)
        created = [self._enqueue(r).job for r in requests]
        linked = self.graph.link(requests, created, self.jobs, self._put, self.clock())
        held = {j.id for j in linked if j.status is not JobStatus.PENDING}
        self._fresh = [i for i in self._fresh if i not in held]
        return linked

    def parents(self, job_id: UUID | str) -> list[ParentResult]:
        """A job's parents with their states and results."""
        return self.graph.parents(self.get(job_id).id, self.jobs)

    def _put(self, job: Job, **changes: object) -> Job:
        updated = job.model_copy(update={"updated_at": self.clock(), **changes})
        self.jobs[job.id] = updated
        return updated

    def _item(self, index: int, request: EnqueueRequest) -> BatchItemResult:
        try:
            done = self._enqueue(request)
        except JobsError as err:
            code = err.code or ErrorCode.VALIDATION
            return BatchItemResult(index=index, error=ErrorBody(code=code, message=err.message))
        return BatchItemResult(
            index=index,
            job=done.job,
            deduplicated=done.deduplicated,
            expected_start_at=done.expected_start_at,
            at_risk=done.at_risk,
        )

    def _enqueue(self, request: EnqueueRequest) -> EnqueueResponse:
        config = self._config(request)
        held = self._held_by(request)
        if held is not None:
            return _feasible(held, deduplicated=True)
        job = self._new_job(request, config)
        self.jobs[job.id] = job
        self._fresh.append(job.id)
        return _feasible(job)

    def _config(self, request: EnqueueRequest) -> UseCaseConfig:
        return self.check_use_case(request.use_case, request.job_type)

    def check_use_case(self, use_case: str, job_type: str | None = None) -> UseCaseConfig:
        """The use case's config; ValidationFailed for a use case (or one of its job types)
        the server would not know."""
        if self.use_cases is None:
            return _DEFAULT_USE_CASE
        config = self.use_cases.get(use_case)
        if config is None:
            raise ValidationFailed(
                f"unknown use case {use_case!r}; known: {sorted(self.use_cases)}",
                code=ErrorCode.UNKNOWN_USE_CASE,
            )
        if job_type is not None and config.job_types and job_type not in config.job_types:
            raise ValidationFailed(
                f"use case {use_case!r} has no job type {job_type!r}; known: {config.job_types}",
                code=ErrorCode.UNKNOWN_JOB_TYPE,
            )
        return config

    def _held_by(self, request: EnqueueRequest) -> Job | None:
        """The latest job of the request's key that its rule holds (as the server's)."""
        rule = request.unique
        if rule is None:
            return self._holding_dedup_key(request.use_case, request.dedup_key)
        now = self.clock()
        held = [
            j
            for j in self.jobs.values()
            if (j.use_case, j.dedup_key) == (request.use_case, rule.key)
            and rule.holds(j.status, created_at=j.created_at, finished_at=j.finished_at, now=now)
        ]
        return max(held, key=lambda j: j.created_at, default=None)

    def _holding_dedup_key(self, use_case: str, key: str | None) -> Job | None:
        if key is None:
            return None
        return next(
            (
                j
                for j in self.jobs.values()
                if (j.use_case, j.dedup_key) == (use_case, key) and j.status in ACTIVE_STATUSES
            ),
            None,
        )

    def _new_job(self, request: EnqueueRequest, config: UseCaseConfig) -> Job:
        now = self.clock()
        run_at = request.run_at or now
        tolerance = request.delay_tolerance_seconds
        if tolerance is None:
            tolerance = config.default_delay_tolerance_seconds
        deadline = request.deadline or run_at + timedelta(seconds=tolerance)
        try:
            expires_at = request.expires_at(config, deadline)
        except ValueError as exc:
            raise ValidationFailed(str(exc), code=ErrorCode.VALIDATION, status=400) from exc
        return Job(
            id=self._new_id(),
            tenant=self.tenant,
            use_case=request.use_case,
            job_type=request.job_type,
            payload=request.payload,
            status=JobStatus.PENDING,
            priority=request.priority,
            run_at=run_at,
            deadline=deadline,
            expires_at=expires_at,
            attempts=0,
            max_attempts=request.max_attempts or config.max_attempts,
            dedup_key=request.unique.key if request.unique is not None else request.dedup_key,
            unique=_past_active(request.unique),
            concurrency_key=request.concurrency_key,
            rate_key=request.rate_key,
            created_at=now,
            updated_at=now,
        )

    def _new_id(self) -> UUID:
        # ordered like the server's ids: a later job has a larger id
        self._seq += 1
        return UUID(int=(self._seq << 64) | random.getrandbits(64))

    def _replay(
        self, key: str | None, body: tuple[EnqueueRequest, ...]
    ) -> EnqueueResponse | BatchEnqueueResponse | None:
        seen = self._keys.get(key) if key is not None else None
        if seen is None:
            return None
        if seen.body != body:
            raise IdempotencyMismatch(
                f"Idempotency-Key {key!r} was used with another request",
                code=ErrorCode.IDEMPOTENCY_MISMATCH,
                status=409,
            )
        return seen.response

    def _remember(
        self,
        key: str | None,
        body: tuple[EnqueueRequest, ...],
        response: EnqueueResponse | BatchEnqueueResponse,
    ) -> None:
        if key is not None:
            self._keys[key] = _Replay(body, response)

    # -- reads -----------------------------------------------------------------------------

    def forecast(self, use_case: str) -> UseCaseForecast:
        """As if every slot were free (nothing runs jobs here): a slot per pending job, and
        only overdue jobs missed."""
        if self.use_cases is not None and use_case not in self.use_cases:
            raise NotFound(
                f"unknown use case {use_case!r}; known: {sorted(self.use_cases)}",
                code=ErrorCode.NOT_FOUND,
                status=404,
            )
        now = self.clock()
        pending = [
            j
            for j in self.jobs.values()
            if j.use_case == use_case and j.status is JobStatus.PENDING
        ]
        counts = dict.fromkeys([h for h, _ in _HORIZONS], 0)
        for j in pending:
            left = (j.deadline - now).total_seconds()
            counts[next(h for h, bound in _HORIZONS if left < bound)] += 1
        config = self._config_of(use_case)
        return UseCaseForecast(
            use_case=use_case,
            measured_at=now,
            capacity=config.capacity,
            running=0,
            pending=len(pending),
            throughput=None,
            mean_duration_seconds=None,
            drain_rate=0.0,
            projected_misses=counts["overdue"],
            worker_slots_needed=len(pending) - counts["overdue"],
            backlog=[
                ForecastBucket(horizon=h, pending=n, projected_misses=n if h == "overdue" else 0)
                for h, n in counts.items()
            ],
        )

    def _config_of(self, use_case: str) -> UseCaseConfig:
        if self.use_cases is None:
            return _DEFAULT_USE_CASE
        return self.use_cases[use_case]

    def get(self, job_id: UUID | str) -> Job:
        job = self.jobs.get(_job_id(job_id))
        if job is None:
            raise NotFound(f"job {job_id} not found", code=ErrorCode.NOT_FOUND, status=404)
        return job

    def list_page(self, filters: JobFilters, *, cursor: str | None, limit: int) -> JobPage:
        matching = self._matching(_selection(filters))
        if cursor is not None and not cursor.isdigit():
            raise ValidationFailed(f"not a cursor of this listing: {cursor!r}")
        start = int(cursor) if cursor else 0
        items = matching[start : start + limit]
        more = start + limit < len(matching)
        return JobPage(items=items, next_cursor=str(start + limit) if more else None)

    def list_all(self, filters: JobFilters) -> list[Job]:
        return self._matching(_selection(filters))

    def count(self, filters: JobFilters, action: BulkAction | None) -> JobCount:
        statuses = _ACTIONABLE[action] if action is not None else None
        found = [j for j in self._matching(_selection(filters)) if _has(j, statuses)]
        return JobCount(count=len(found), max_id=found[0].id if found else None)

    def events(self, filters: EventFilters) -> list[JobEvent]:
        """What `events()` sends of the jobs as they are now: a `job` event each, oldest
        first, for the filters the server would take (ValidationFailed otherwise)."""
        query = _validated(
            EventQuery,
            {
                "use_case": filters.use_case,
                "job_type": filters.job_type,
                "status": list(filters.status),
                "tenant": filters.tenant,
            },
        )
        jobs = sorted(self.jobs.values(), key=lambda j: j.id)
        heads = [JobHead.model_validate(j, from_attributes=True) for j in jobs]
        mine = [h for h in heads if self.tenant is None or h.tenant == self.tenant]
        return [JobEvent(kind=EventKind.JOB, job=h) for h in mine if query.matches(h)]

    def _matching(self, sel: JobSelection) -> list[Job]:
        """Newest first, as the server lists."""
        jobs = sorted(self.jobs.values(), key=lambda j: j.id, reverse=True)
        return [j for j in jobs if _selected(j, sel, self.tenant)]

    # -- changes ---------------------------------------------------------------------------

    def cancel(self, job_id: UUID | str) -> Job:
        job = self.get(job_id)
        if job.status in (JobStatus.PENDING, JobStatus.WAITING):
            return self.update(job, status=JobStatus.CANCELLED, finished_at=self.clock())
        if job.status is JobStatus.RUNNING:
            return self.update(job, cancel_requested=True)
        raise _conflict(job, "only pending or running jobs can be cancelled")

    def retry(self, job_id: UUID | str) -> Job:
        job = self.get(job_id)
        if job.status not in _RETRYABLE:
            raise _conflict(job, "only dead, cancelled or expired jobs can be retried")
        if self._holding_dedup_key(job.use_case, job.dedup_key) is not None:
            raise _conflict(job, f"an active job holds its dedup key {job.dedup_key!r}")
        return self._retried(job)

    def _retried(self, job: Job) -> Job:
        now = self.clock()
        deadline = now + timedelta(seconds=self._tolerance(job.use_case))
        grace = job.expires_at - job.deadline if job.expires_at is not None else None
        self._fresh.append(job.id)
        return self.update(
            job,
            status=JobStatus.PENDING,
            run_at=now,
            deadline=deadline,
            expires_at=deadline + grace if grace is not None else None,
            max_attempts=max(job.max_attempts, job.attempts + 1),
            result=None,
            cancel_requested=False,
            deadline_missed=False,
            finished_at=None,
        )

    def _tolerance(self, use_case: str) -> float:
        config = (self.use_cases or {}).get(use_case, _DEFAULT_USE_CASE)
        return config.default_delay_tolerance_seconds

    def bulk(self, action: BulkAction, sel: JobSelection) -> BulkResult:
        found = [j for j in self._matching(sel) if j.status in _ACTIONABLE[action]]
        chosen = found[: sel.limit]
        touched = skipped = 0
        for job in chosen:
            try:
                self.cancel(job.id) if action is BulkAction.CANCEL else self.retry(job.id)
                touched += 1
            except Conflict:
                skipped += 1
        return BulkResult(
            action=action, touched=touched, skipped=skipped, more=len(found) > sel.limit
        )

    def update(self, job: Job, **changes: object) -> Job:
        """Store a changed copy of `job` (e.g. an outcome, in the worker's inline mode); a job
        that ends releases or cancels its waiting children."""
        before = self.jobs.get(job.id, job).status
        updated = self._put(job, **changes)
        if updated.status in FINISHED_STATUSES and before not in FINISHED_STATUSES:
            released = self.graph.follow(updated, self.jobs, self._put, self.clock())
            self._fresh += [j.id for j in released]
        return updated

    def of_type(self, job_type: str, *, use_case: str | None = None) -> list[Job]:
        """Jobs of `job_type`, oldest first (the order they were enqueued)."""
        jobs = sorted(self.jobs.values(), key=lambda j: j.id)
        return [j for j in jobs if j.job_type == job_type and use_case in (None, j.use_case)]


def _job_id(job_id: UUID | str) -> UUID:
    try:
        return job_id if isinstance(job_id, UUID) else UUID(job_id)
    except ValueError as exc:
        raise ValidationFailed(f"not a job id: {job_id!r}") from exc


def _validated_batch(requests: Sequence[EnqueueRequest]) -> None:
    _validated(BatchEnqueueRequest, {"jobs": list(requests)})


def _selection(filters: JobFilters) -> JobSelection:
    return _validated(JobSelection, {k: v for k, v in filters.items() if v is not None})


def _has(job: Job, statuses: Iterable[JobStatus] | None) -> bool:
    return statuses is None or job.status in statuses


def _selected(job: Job, sel: JobSelection, tenant: str) -> bool:
    wanted = {
        "status": sel.status,
        "use_case": sel.use_case,
        "job_type": sel.job_type,
        "dedup_key": sel.dedup_key,
    }
    if any(value is not None and getattr(job, name) != value for name, value in wanted.items()):
        return False
    if sel.tenant not in (None, tenant):
        return False
    if sel.max_id is not None and job.id > sel.max_id:
        return False
    after, before = sel.created_after, sel.created_before
    return (after is None or job.created_at >= after) and (
        before is None or job.created_at < before
    )


def _conflict(job: Job, why: str) -> Conflict:
    return Conflict(
        f"job {job.id} is {job.status.value}; {why}",
        code=ErrorCode.CONFLICT,
        status=409,
        details={"status": job.status.value},
    )


def _past_active(rule: UniqueRule | None) -> UniqueRule | None:
    """The rule a job shows: None for "while active", which its dedup key alone says."""
    return None if rule is None or rule.window is UniqueWindow.ACTIVE else rule


# The server's display horizons: seconds left to the deadline, each up to its bound.
_HORIZONS = (
    ("overdue", 0.0),
    ("<10s", 10.0),
    ("<1min", 60.0),
    ("<10min", 600.0),
    ("<1h", 3600.0),
    ("later", float("inf")),
)


def _feasible(job: Job, *, deduplicated: bool = False) -> EnqueueResponse:
    """Nothing runs jobs in the fake, and nothing waits for a slot: each starts at its run_at."""
    return EnqueueResponse(
        job=job, deduplicated=deduplicated, expected_start_at=job.run_at, at_risk=False
    )
