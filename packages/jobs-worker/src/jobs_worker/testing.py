"""Helpers for users' own tests: run a handler on a payload without SQS or a server
(`run_handler`), run handlers as jobs are enqueued (`InlineJobs`), or run a whole Worker in
memory (`InMemoryWorkerApi` with `InMemoryConsumer`).

    outcome = await run_handler(registry, "notifications.send_email", {"to": "a@b.c"})
    assert outcome == Succeeded({"sent": True})

    jobs = InlineJobs(registry)
    await analyse.enqueue(jobs, Analyse(...))    # runs the handler, and the jobs it enqueues
    jobs.assert_enqueued(label, payload={"text": "hi"}, status=JobStatus.SUCCEEDED)
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from jobs_schema import (
    FailureInfo,
    HeartbeatItem,
    HeartbeatResult,
    Job,
    JobMessage,
    JobStatus,
    LeaseRef,
    LeaseState,
    OutcomeAck,
    OutcomeKind,
    OutcomeReport,
    PackedMessage,
    Payload,
    UseCaseConfig,
)
from jobs_schema.workflows import ParentResult
from jobs_sdk import JobsApi
from jobs_sdk.testing import FakeJobsClient
from jobs_worker.consumer.memory import InMemoryConsumer
from jobs_worker.context import CancelSignal, JobContext, JobsClientProvider, job_logger
from jobs_worker.errors import PermanentFailure
from jobs_worker.execution import Failed, Interrupted, Outcome, Succeeded, execute
from jobs_worker.registry import Registry
from jobs_worker.reporter import JobGone, ServerClock

__all__ = [
    "Failed",
    "InMemoryWorkerApi",
    "InlineJobs",
    "Outcome",
    "Succeeded",
    "make_context",
    "run_handler",
]


def make_context(
    job_type: str,
    *,
    job_id: UUID | None = None,
    tenant: str = "test",
    use_case: str = "test",
    attempt: int = 1,
    max_attempts: int = 3,
    deadline: datetime | None = None,
    cancelled: bool = False,
    jobs: JobsApi | None = None,
    clients: JobsClientProvider | None = None,
) -> JobContext:
    """A JobContext as the worker would build it; `cancelled` makes the job look cancelled.

    `ctx.jobs` is `jobs`: by default a new `FakeJobsClient` of `tenant`, which records what
    the handler enqueues (read it back from `ctx.jobs`); pass an `InlineJobs` to run those
    jobs too. `clients` instead gives a client per context, as the worker's provider does."""
    job_id = job_id or uuid.uuid4()
    signal = CancelSignal()
    if cancelled:
        signal.set()
    if clients is None:
        client = jobs if jobs is not None else FakeJobsClient(tenant=tenant)
        clients = lambda _ctx: client  # noqa: E731 - one client for every access
    return JobContext(
        job_id=job_id,
        tenant=tenant,
        use_case=use_case,
        job_type=job_type,
        attempt=attempt,
        max_attempts=max_attempts,
        deadline=deadline or datetime.now(UTC) + timedelta(minutes=1),
        worker_id="test-worker",
        logger=job_logger(logging.getLogger("jobs_worker.testing"), job_id=job_id),
        _cancel=signal,
        _clients=clients,
        _loop=_running_loop(),
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    # so a sync handler's ctx.run_async works when the test runs in an event loop
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def run_handler(
    registry: Registry,
    job_type: str,
    payload: dict[str, Any],
    *,
    timeout_seconds: float = 60.0,
    context: JobContext | None = None,
) -> Outcome:
    """Validate `payload` and run the handler of `job_type` as the worker would: the result
    comes back as `Succeeded(result)` (JSON-ready), any failure as `Failed(FailureInfo)`."""
    ctx = context or make_context(job_type)
    return await execute(
        registry.get(job_type),
        payload,
        ctx,
        timeout_seconds=timeout_seconds,
        known=registry.names,
    )


_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("inline_depth", default=0)


class InlineJobs(FakeJobsClient):
    """A FakeJobsClient that runs each job it stores at once, in-process, with the handler
    `registry` has for its job type, as a worker would: validation, the timeout, retries of a
    retryable failure right away (no backoff, `Retry(delay=...)` included) up to the job's
    attempts. The handler's `ctx.jobs` is this client, so follow-up jobs run as well, inside
    the enqueue that made them. A job type without a handler stays pending.

    After `enqueue` returns, read the outcome back: `(await jobs.get(id)).status`, `.result`,
    `.last_error`, or `jobs.assert_enqueued(task, status=JobStatus.SUCCEEDED)`. An enqueue
    from a handler nested `max_depth` deep is refused with PermanentFailure (a job that
    enqueues itself forever): the handler that tried fails for good."""

    def __init__(
        self,
        registry: Registry,
        *,
        tenant: str = "test",
        use_cases: Mapping[str, UseCaseConfig] | None = None,
        timeout_seconds: float = 60.0,
        max_depth: int = 20,
    ) -> None:
        super().__init__(tenant=tenant, use_cases=use_cases)
        self.registry = registry
        self.failures: dict[UUID, list[FailureInfo]] = {}
        self._use_cases = use_cases or {}
        self._timeout = timeout_seconds
        self._max_depth = max_depth

    def _admit(self) -> None:
        depth = _DEPTH.get()
        if depth >= self._max_depth:
            raise PermanentFailure(
                f"InlineJobs refused an enqueue nested {depth} handlers deep: does a handler "
                "enqueue itself? (raise max_depth if the chain is real)"
            )

    async def _enqueued(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.job_type in self.registry:
                await self._run(job)

    async def _run(self, job: Job) -> None:
        token = _DEPTH.set(_DEPTH.get() + 1)
        try:
            while job.status is JobStatus.PENDING:
                job = await self._attempt(job)
        finally:
            _DEPTH.reset(token)
        # the children its end released run now, as a worker would pick them up next
        await self._enqueued(self._fake.take_fresh())

    async def _attempt(self, job: Job) -> Job:
        job = self._fake.update(job, status=JobStatus.RUNNING, attempts=job.attempts + 1)
        outcome = await execute(
            self.registry.get(job.job_type),
            job.payload,
            self._context(job),
            timeout_seconds=self._timeout_of(job.use_case),
            known=self.registry.names,
        )
        return self._record(self._fake.get(job.id), outcome)

    def _record(self, job: Job, outcome: Outcome) -> Job:
        now = datetime.now(UTC)
        if job.cancel_requested:
            return self._fake.update(job, status=JobStatus.CANCELLED, finished_at=now)
        if isinstance(outcome, Succeeded):
            return self._fake.update(
                job, status=JobStatus.SUCCEEDED, result=outcome.result, finished_at=now
            )
        if isinstance(outcome, Interrupted):  # given back, as the worker does: not counted
            return self._fake.update(job, status=JobStatus.PENDING, attempts=job.attempts - 1)
        self.failures.setdefault(job.id, []).append(outcome.failure)
        error = f"{outcome.failure.type}: {outcome.failure.message}"
        if outcome.failure.retryable and job.attempts < job.max_attempts:
            return self._fake.update(job, status=JobStatus.PENDING, last_error=error)
        return self._fake.update(job, status=JobStatus.DEAD, last_error=error, finished_at=now)

    def _context(self, job: Job) -> JobContext:
        ctx = make_context(
            job.job_type,
            job_id=job.id,
            tenant=job.tenant,
            use_case=job.use_case,
            attempt=job.attempts,
            max_attempts=job.max_attempts,
            deadline=job.deadline,
            jobs=self,
        )
        ctx._parents = lambda: self.parents(job.id)  # read from the fake, as from the server
        return ctx

    def _timeout_of(self, use_case: str) -> float:
        config = self._use_cases.get(use_case)
        return config.timeout_seconds if config is not None else self._timeout


@dataclass
class _FakeJob:
    message: JobMessage
    payload: Payload
    status: JobStatus = JobStatus.RUNNING
    cancel_requested: bool = False
    reports: list[OutcomeReport] = field(default_factory=list)


class InMemoryWorkerApi:
    """A WorkerApi that fences like the server: `dispatch()` leases a job and puts its message
    on an InMemoryConsumer; reports, heartbeats and releases count only for the current lease.
    Failed attempts are not retried here: the job just ends (status DEAD)."""

    def __init__(self, consumer: InMemoryConsumer, *, embed_payloads: bool = True) -> None:
        self.consumer = consumer
        self.jobs: dict[UUID, _FakeJob] = {}
        self.released: list[LeaseRef] = []
        self.heartbeats = 0
        self.cancellation_polls = 0
        self.clock = ServerClock()
        self._embed = embed_payloads
        # what `parents` answers per job id, for handlers that read ctx.parent_results()
        self.parent_results: dict[UUID, list[ParentResult]] = {}

    def dispatch(
        self,
        queue: str,
        job_type: str,
        payload: Payload,
        *,
        use_case: str = "test",
        tenant: str = "test",
        max_attempts: int = 3,
    ) -> JobMessage:
        message = self._lease(job_type, payload, use_case, tenant, max_attempts)
        self.consumer.send(queue, message.model_dump_json())
        return message

    def dispatch_pack(
        self,
        queue: str,
        jobs: list[tuple[str, Payload]],
        *,
        use_case: str = "test",
        tenant: str = "test",
        max_attempts: int = 3,
    ) -> list[JobMessage]:
        """Lease several jobs, (job type, payload) each, and put them on the queue in one
        packed message, as the scheduler does with a use case's `pack_max_jobs` over 1."""
        messages = [self._lease(t, p, use_case, tenant, max_attempts) for t, p in jobs]
        self.consumer.send(queue, PackedMessage(jobs=messages).model_dump_json())
        return messages

    def _lease(
        self, job_type: str, payload: Payload, use_case: str, tenant: str, max_attempts: int
    ) -> JobMessage:
        now = datetime.now(UTC)
        message = JobMessage(
            job_id=uuid.uuid4(),
            lease_token=uuid.uuid4(),
            attempt=1,
            tenant=tenant,
            use_case=use_case,
            job_type=job_type,
            payload=payload if self._embed else None,
            deadline=now + timedelta(minutes=1),
            lease_expires_at=now + timedelta(minutes=1),
            max_attempts=max_attempts,
        )
        self.jobs[message.job_id] = _FakeJob(message, payload)
        return message

    def cancel(self, job_id: UUID) -> None:
        self.jobs[job_id].cancel_requested = True

    def _current(self, ref: LeaseRef) -> _FakeJob | None:
        job = self.jobs.get(ref.job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            return None
        m = job.message
        return job if (m.attempt, m.lease_token) == (ref.attempt, ref.lease_token) else None

    async def report(self, reports: list[OutcomeReport]) -> list[OutcomeAck]:
        return [self._apply(r) for r in reports]

    def _apply(self, report: OutcomeReport) -> OutcomeAck:
        job = self._current(report)
        if job is None:
            status = self.jobs[report.job_id].status if report.job_id in self.jobs else None
            return OutcomeAck(job_id=report.job_id, applied=False, status=status)
        job.reports.append(report)
        if job.cancel_requested:
            job.status = JobStatus.CANCELLED
        elif report.outcome is OutcomeKind.SUCCEEDED:
            job.status = JobStatus.SUCCEEDED
        else:
            job.status = JobStatus.DEAD
        return OutcomeAck(job_id=report.job_id, applied=True, status=job.status)

    async def heartbeat(self, worker_id: str, items: list[HeartbeatItem]) -> list[HeartbeatResult]:
        self.heartbeats += 1
        return [HeartbeatResult(job_id=i.job_id, state=self._lease_state(i)) for i in items]

    def _lease_state(self, ref: LeaseRef) -> LeaseState:
        job = self._current(ref)
        if job is None:
            return LeaseState.LOST
        return LeaseState.CANCELLED if job.cancel_requested else LeaseState.HELD

    async def cancellations(self, worker_id: str, leases: list[LeaseRef]) -> list[LeaseRef]:
        self.cancellation_polls += 1
        return [r for r in leases if self._lease_state(r) is LeaseState.CANCELLED]

    async def release(self, worker_id: str, leases: list[LeaseRef]) -> list[UUID]:
        released = []
        for ref in leases:
            job = self._current(ref)
            if job is not None:
                job.status = JobStatus.CANCELLED if job.cancel_requested else JobStatus.PENDING
                self.released.append(ref)
                released.append(ref.job_id)
        return released

    async def payload(self, job_id: UUID) -> Payload:
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            raise JobGone(f"job {job_id} is not running")
        return job.payload

    async def parents(self, job_id: UUID) -> list[ParentResult]:
        """What a test put in `parent_results` for the job (none by default)."""
        return list(self.parent_results.get(job_id, []))

    async def close(self) -> None:
        return None
