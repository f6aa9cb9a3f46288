"""Helpers for users' own tests: run a handler on a payload without SQS or a server
(`run_handler`), or run a whole Worker in memory (`InMemoryWorkerApi` with `InMemoryConsumer`).

    outcome = await run_handler(registry, "notifications.send_email", {"to": "a@b.c"})
    assert outcome == Succeeded({"sent": True})
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from jobs_schema import (
    HeartbeatItem,
    HeartbeatResult,
    JobMessage,
    JobStatus,
    LeaseRef,
    LeaseState,
    OutcomeAck,
    OutcomeKind,
    OutcomeReport,
    Payload,
)
from jobs_worker.consumer.memory import InMemoryConsumer
from jobs_worker.context import CancelSignal, JobContext, JobsClientProvider, job_logger
from jobs_worker.execution import Failed, Outcome, Succeeded, execute
from jobs_worker.registry import Registry
from jobs_worker.reporter import JobGone, ServerClock

__all__ = [
    "Failed",
    "InMemoryWorkerApi",
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
    clients: JobsClientProvider | None = None,
) -> JobContext:
    """A JobContext as the worker would build it; `cancelled` makes the job look cancelled."""
    job_id = job_id or uuid.uuid4()
    signal = CancelSignal()
    if cancelled:
        signal.set()
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
    )


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
        self.clock = ServerClock()
        self._embed = embed_payloads

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
        self.consumer.send(queue, message.model_dump_json())
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

    async def close(self) -> None:
        return None
