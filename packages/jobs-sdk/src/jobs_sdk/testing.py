"""Test doubles for producers: clients that keep jobs in memory, and assertions on them.

    from jobs_sdk.testing import FakeJobsClient

    async def test_signup_sends_a_welcome_email():
        jobs = FakeJobsClient()
        await signup(jobs, "ada@example.com")            # your code, given the fake
        jobs.assert_enqueued(send_email, payload={"to": "ada@example.com"}, within=60)

`FakeJobsClient` has the methods of `JobsClient` (and `FakeSyncJobsClient` those of
`SyncJobsClient`) and the server's producer-facing rules: use-case defaults, deadlines, dedup
keys, idempotency keys, cancel, retry, listing, counts and bulk actions. Nothing runs the jobs:
for that, `jobs_worker.testing.InlineJobs` runs the worker's handlers as jobs are enqueued.

`client.pauses`, `client.schedules` and `client.webhooks` are there too, as a tenant token of
the fake's tenant sees them (its own tenant only; the same validation and errors as the
server). They record; nothing ticks, stops or is sent: a schedule enqueues no job, a webhook's
delivery log stays empty (and no host is resolved), and a cron schedule shows no
`next_run_at` (the fake parses no cron expression; an interval schedule shows its next tick).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack, overload
from uuid import UUID

from pydantic import BaseModel, JsonValue

from jobs_schema import (
    FINISHED_STATUSES,
    BatchEnqueueResponse,
    BulkAction,
    BulkResult,
    EnqueueRequest,
    EnqueueResponse,
    Job,
    JobCount,
    JobEvent,
    JobPage,
    JobSelection,
    JobStatus,
    PauseList,
    PauseState,
    Schedule,
    UseCaseConfig,
    UseCaseForecast,
)
from jobs_schema.workflows import ParentResult
from jobs_sdk import _http, workflows
from jobs_sdk._events import EventFilters
from jobs_sdk._fake import FakeJobs
from jobs_sdk._fake_flow import FakePauseBook, FakeScheduleBook
from jobs_sdk._fake_webhooks import FakeSyncWebhooks, FakeWebhookBook, FakeWebhooks
from jobs_sdk._http import EnqueueOptions, JobFilters
from jobs_sdk._selection import SelectionFilters, selection_of
from jobs_sdk.errors import JobsTimeout
from jobs_sdk.schedules import ScheduleOptions
from jobs_sdk.tasks import Task
from jobs_sdk.workflows import Workflow

Jobs = list[Job]  # `list` is a method name inside the clients
Parents = list[ParentResult]

__all__ = [
    "FakeJobsClient",
    "FakePauses",
    "FakeSchedules",
    "FakeSyncJobsClient",
    "FakeSyncPauses",
    "FakeSyncSchedules",
    "FakeSyncWebhooks",
    "FakeWebhooks",
]

P = TypeVar("P", bound=BaseModel)
Expected = BaseModel | Mapping[str, Any] | None
Clock = Callable[[], datetime]


class _Recorder:
    """What both fakes record, and the assertions on it."""

    def __init__(
        self,
        *,
        tenant: str = "test",
        use_cases: Mapping[str, UseCaseConfig] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._fake = FakeJobs(tenant=tenant, use_cases=use_cases)
        if clock is not None:
            self._fake.clock = clock
        self._pause_book = FakePauseBook(self._fake)
        self._schedule_book = FakeScheduleBook(self._fake)
        self._webhook_book = FakeWebhookBook(self._fake)

    @property
    def tenant(self) -> str:
        return self._fake.tenant

    @property
    def jobs(self) -> list[Job]:
        """Every job stored, oldest first."""
        return sorted(self._fake.jobs.values(), key=lambda j: j.id)

    def jobs_of(self, task: Task[Any] | str) -> list[Job]:
        """The jobs of a task (or of a job type), oldest first."""
        job_type, use_case = _task_key(task)
        return self._fake.of_type(job_type, use_case=use_case)

    def payloads(self, task: Task[P]) -> list[P]:
        """The payloads of the task's jobs, as its model, oldest first."""
        return [task.parse(job.payload) for job in self.jobs_of(task)]

    def clear(self) -> None:
        """Forget every job (e.g. between the steps of a test)."""
        self._fake.jobs.clear()

    def assert_enqueued(
        self,
        task: Task[Any] | str,
        *,
        payload: Expected = None,
        within: float | timedelta | None = None,
        count: int | None = None,
        **fields: object,
    ) -> Job:
        """The newest job of `task` that matches, else AssertionError saying what was enqueued.

        `payload`: a model instance (equal payload) or a mapping (these fields, at least).
        `within`: its deadline is at most this long (seconds or a timedelta) after it was
        enqueued. `count`: exactly this many jobs match. Other keywords compare Job fields
        (`dedup_key="k"`, `priority=5`, `status=JobStatus.PENDING`, ...)."""
        wanted = _Wanted(task, payload, within, fields)
        candidates = self.jobs_of(task)
        matching = [job for job in candidates if wanted.mismatch(job) is None]
        if matching and count in (None, len(matching)):
            return matching[-1]
        raise AssertionError(wanted.report(candidates, self.jobs, count, len(matching)))

    def assert_not_enqueued(
        self, task: Task[Any] | str, *, payload: Expected = None, **fields: object
    ) -> None:
        """AssertionError when a job of `task` matching `payload` and `fields` was enqueued."""
        wanted = _Wanted(task, payload, None, fields)
        found = [job for job in self.jobs_of(task) if wanted.mismatch(job) is None]
        if found:
            listed = "\n".join(f"  {_describe(job)}" for job in found)
            raise AssertionError(f"expected no {wanted}, but {len(found)} enqueued:\n{listed}")


class FakePauses:
    """`JobsClient.pauses` in memory: the fake's tenant paused and resumed, in every use case
    or in one (another tenant: Forbidden, as a tenant token)."""

    def __init__(self, book: FakePauseBook) -> None:
        self._book = book

    async def pause(
        self, *, use_case: str | None = None, tenant: str | None = None, reason: str | None = None
    ) -> PauseState:
        return self._book.pause(use_case, tenant, reason)

    async def resume(
        self, *, use_case: str | None = None, tenant: str | None = None, reason: str | None = None
    ) -> PauseState:
        return self._book.resume(use_case, tenant, reason)

    async def list(self) -> PauseList:
        return self._book.list()


class FakeSyncPauses:
    """`SyncJobsClient.pauses` in memory."""

    def __init__(self, book: FakePauseBook) -> None:
        self._book = book

    def pause(
        self, *, use_case: str | None = None, tenant: str | None = None, reason: str | None = None
    ) -> PauseState:
        return self._book.pause(use_case, tenant, reason)

    def resume(
        self, *, use_case: str | None = None, tenant: str | None = None, reason: str | None = None
    ) -> PauseState:
        return self._book.resume(use_case, tenant, reason)

    def list(self) -> PauseList:
        return self._book.list()


class FakeSchedules:
    """`JobsClient.schedules` in memory: the fake tenant's schedules."""

    def __init__(self, book: FakeScheduleBook) -> None:
        self._book = book

    async def create(
        self, name: str, *, use_case: str, job_type: str, **options: Unpack[ScheduleOptions]
    ) -> Schedule:
        return self._book.create(name, use_case, job_type, options)

    async def list(self, *, tenant: str | None = None) -> list[Schedule]:
        return self._book.list(tenant)

    async def get(self, name: str, *, tenant: str | None = None) -> Schedule:
        return self._book.get(name, tenant)

    async def pause(self, name: str, *, tenant: str | None = None) -> Schedule:
        return self._book.pause(name, tenant)

    async def resume(self, name: str, *, tenant: str | None = None) -> Schedule:
        return self._book.resume(name, tenant)

    async def delete(self, name: str, *, tenant: str | None = None) -> None:
        self._book.delete(name, tenant)


class FakeSyncSchedules:
    """`SyncJobsClient.schedules` in memory."""

    def __init__(self, book: FakeScheduleBook) -> None:
        self._book = book

    def create(
        self, name: str, *, use_case: str, job_type: str, **options: Unpack[ScheduleOptions]
    ) -> Schedule:
        return self._book.create(name, use_case, job_type, options)

    def list(self, *, tenant: str | None = None) -> list[Schedule]:
        return self._book.list(tenant)

    def get(self, name: str, *, tenant: str | None = None) -> Schedule:
        return self._book.get(name, tenant)

    def pause(self, name: str, *, tenant: str | None = None) -> Schedule:
        return self._book.pause(name, tenant)

    def resume(self, name: str, *, tenant: str | None = None) -> Schedule:
        return self._book.resume(name, tenant)

    def delete(self, name: str, *, tenant: str | None = None) -> None:
        self._book.delete(name, tenant)


class FakeJobsClient(_Recorder):
    """An in-memory `JobsClient` for producers' tests; see the module's docstring."""

    @property
    def pauses(self) -> FakePauses:
        """Pause and resume the fake's tenant (see FakePauses)."""
        return FakePauses(self._pause_book)

    @property
    def schedules(self) -> FakeSchedules:
        """Periodic jobs: create, list, get, pause, resume and delete schedules."""
        return FakeSchedules(self._schedule_book)

    @property
    def webhooks(self) -> FakeWebhooks:
        """Webhook subscriptions of the fake's tenant (nothing is sent)."""
        return FakeWebhooks(self._webhook_book)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        return None

    @overload
    async def enqueue(
        self, request: EnqueueRequest, /, *, idempotency_key: str | None = None
    ) -> EnqueueResponse: ...

    @overload
    async def enqueue(
        self,
        use_case: str,
        job_type: str,
        payload: Mapping[str, JsonValue] | None = None,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> EnqueueResponse: ...

    async def enqueue(
        self,
        use_case: str | EnqueueRequest,
        job_type: str | None = None,
        payload: Mapping[str, JsonValue] | None = None,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> EnqueueResponse:
        request = _http.enqueue_request(use_case, job_type, payload, options)
        self._admit()
        response = self._fake.enqueue(request, idempotency_key)
        await self._enqueued(self._fake.take_fresh())
        return response

    async def enqueue_batch(
        self, requests: Sequence[EnqueueRequest], *, idempotency_key: str | None = None
    ) -> BatchEnqueueResponse:
        self._admit()
        response = self._fake.enqueue_batch(requests, idempotency_key)
        await self._enqueued(self._fake.take_fresh())
        return response

    def _admit(self) -> None:
        """Called before anything is stored; raises to refuse the call."""

    async def _enqueued(self, jobs: list[Job]) -> None:
        """Called with the jobs each enqueue stored (none for a dedup or a replay)."""

    async def get(self, job_id: UUID | str) -> Job:
        return self._fake.get(job_id)

    async def enqueue_workflow(
        self, workflow: Workflow, *, idempotency_key: str | None = None
    ) -> Jobs:
        """As JobsClient.enqueue_workflow: children wait for their parents."""
        batch = await self.enqueue_batch(workflow.requests, idempotency_key=idempotency_key)
        return workflows.graph_jobs(batch)

    async def chain(self, *requests: EnqueueRequest) -> Jobs:
        return await self.enqueue_workflow(workflows.chain_of(requests))

    async def group(self, *requests: EnqueueRequest, then: EnqueueRequest | None = None) -> Jobs:
        return await self.enqueue_workflow(workflows.group_of(requests, then))

    async def parents(self, job_id: UUID | str) -> Parents:
        return self._fake.parents(job_id)

    async def forecast(self, use_case: str) -> UseCaseForecast:
        return self._fake.forecast(use_case)

    async def cancel(self, job_id: UUID | str) -> Job:
        return self._fake.cancel(job_id)

    async def retry(self, job_id: UUID | str) -> Job:
        self._admit()
        job = self._fake.retry(job_id)
        await self._enqueued(self._fake.take_fresh())
        return job

    async def wait(
        self,
        job_id: UUID | str,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 - JobsClient.wait's signature
        poll_interval: float = 0.5,
        stream: bool = True,
    ) -> Job:
        """The job if it has finished; JobsTimeout at once otherwise (nothing runs it here)."""
        return _finished(self._fake.get(job_id))

    async def events(
        self,
        *,
        use_case: str | None = None,
        job_type: str | None = None,
        status: Sequence[JobStatus | str] = (),
        tenant: str | None = None,
        reconnect: bool = True,
        idle_timeout: float = 60.0,
    ) -> AsyncIterator[JobEvent]:
        """A `job` event for each matching job as it is now, then the end (nothing changes
        here on its own)."""
        for event in self._fake.events(EventFilters(use_case, job_type, status, tenant)):
            yield event

    async def list_page(
        self, *, cursor: str | None = None, limit: int = 50, **filters: Unpack[JobFilters]
    ) -> JobPage:
        return self._fake.list_page(filters, cursor=cursor, limit=limit)

    async def list(
        self, *, page_size: int = 100, **filters: Unpack[JobFilters]
    ) -> AsyncIterator[Job]:
        for job in self._fake.list_all(filters):
            yield job

    async def count(
        self, *, action: BulkAction | None = None, **filters: Unpack[JobFilters]
    ) -> JobCount:
        return self._fake.count(filters, action)

    async def cancel_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult:
        return self._fake.bulk(BulkAction.CANCEL, selection_of(selection, filters))

    async def retry_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult:
        self._admit()
        result = self._fake.bulk(BulkAction.RETRY, selection_of(selection, filters))
        await self._enqueued(self._fake.take_fresh())
        return result


class FakeSyncJobsClient(_Recorder):
    """An in-memory `SyncJobsClient` for producers' tests."""

    @property
    def pauses(self) -> FakeSyncPauses:
        return FakeSyncPauses(self._pause_book)

    @property
    def schedules(self) -> FakeSyncSchedules:
        return FakeSyncSchedules(self._schedule_book)

    @property
    def webhooks(self) -> FakeSyncWebhooks:
        return FakeSyncWebhooks(self._webhook_book)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        return None

    @overload
    def enqueue(
        self, request: EnqueueRequest, /, *, idempotency_key: str | None = None
    ) -> EnqueueResponse: ...

    @overload
    def enqueue(
        self,
        use_case: str,
        job_type: str,
        payload: Mapping[str, JsonValue] | None = None,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> EnqueueResponse: ...

    def enqueue(
        self,
        use_case: str | EnqueueRequest,
        job_type: str | None = None,
        payload: Mapping[str, JsonValue] | None = None,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> EnqueueResponse:
        request = _http.enqueue_request(use_case, job_type, payload, options)
        response = self._fake.enqueue(request, idempotency_key)
        self._fake.take_fresh()
        return response

    def enqueue_batch(
        self, requests: Sequence[EnqueueRequest], *, idempotency_key: str | None = None
    ) -> BatchEnqueueResponse:
        response = self._fake.enqueue_batch(requests, idempotency_key)
        self._fake.take_fresh()
        return response

    def get(self, job_id: UUID | str) -> Job:
        return self._fake.get(job_id)

    def enqueue_workflow(self, workflow: Workflow, *, idempotency_key: str | None = None) -> Jobs:
        """As SyncJobsClient.enqueue_workflow: children wait for their parents."""
        batch = self.enqueue_batch(workflow.requests, idempotency_key=idempotency_key)
        return workflows.graph_jobs(batch)

    def chain(self, *requests: EnqueueRequest) -> Jobs:
        return self.enqueue_workflow(workflows.chain_of(requests))

    def group(self, *requests: EnqueueRequest, then: EnqueueRequest | None = None) -> Jobs:
        return self.enqueue_workflow(workflows.group_of(requests, then))

    def parents(self, job_id: UUID | str) -> Parents:
        return self._fake.parents(job_id)

    def forecast(self, use_case: str) -> UseCaseForecast:
        return self._fake.forecast(use_case)

    def cancel(self, job_id: UUID | str) -> Job:
        return self._fake.cancel(job_id)

    def retry(self, job_id: UUID | str) -> Job:
        return self._fake.retry(job_id)

    def wait(
        self,
        job_id: UUID | str,
        *,
        timeout: float = 60.0,
        poll_interval: float = 0.5,
        stream: bool = True,
    ) -> Job:
        """The job if it has finished; JobsTimeout at once otherwise (nothing runs it here)."""
        return _finished(self._fake.get(job_id))

    def events(
        self,
        *,
        use_case: str | None = None,
        job_type: str | None = None,
        status: Sequence[JobStatus | str] = (),
        tenant: str | None = None,
        reconnect: bool = True,
        idle_timeout: float = 60.0,
    ) -> Iterator[JobEvent]:
        """As FakeJobsClient.events."""
        yield from self._fake.events(EventFilters(use_case, job_type, status, tenant))

    def list_page(
        self, *, cursor: str | None = None, limit: int = 50, **filters: Unpack[JobFilters]
    ) -> JobPage:
        return self._fake.list_page(filters, cursor=cursor, limit=limit)

    def list(self, *, page_size: int = 100, **filters: Unpack[JobFilters]) -> Iterator[Job]:
        yield from self._fake.list_all(filters)

    def count(self, *, action: BulkAction | None = None, **filters: Unpack[JobFilters]) -> JobCount:
        return self._fake.count(filters, action)

    def cancel_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult:
        return self._fake.bulk(BulkAction.CANCEL, selection_of(selection, filters))

    def retry_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult:
        return self._fake.bulk(BulkAction.RETRY, selection_of(selection, filters))


def _finished(job: Job) -> Job:
    if job.status in FINISHED_STATUSES:
        return job
    raise JobsTimeout(
        f"job {job.id} is still {job.status.value}: nothing runs jobs in a fake client "
        "(jobs_worker.testing.InlineJobs runs their handlers)",
        details={"job_id": str(job.id), "status": job.status.value},
    )


def _task_key(task: Task[Any] | str) -> tuple[str, str | None]:
    return (task.job_type, task.use_case) if isinstance(task, Task) else (task, None)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class _Wanted:
    """One assertion's expectations, and why a job does not meet them."""

    def __init__(
        self,
        task: Task[Any] | str,
        payload: Expected,
        within: float | timedelta | None,
        fields: Mapping[str, object],
    ) -> None:
        unknown = sorted(set(fields) - set(Job.model_fields))
        if unknown:
            raise TypeError(f"Job has no field {unknown[0]!r}; fields: {sorted(Job.model_fields)}")
        self.job_type, self.use_case = _task_key(task)
        self.payload = _expected_payload(payload)
        self.exact = isinstance(payload, BaseModel)
        self.within = _seconds(within) if within is not None else None
        self.fields = dict(fields)

    def mismatch(self, job: Job) -> str | None:
        """Why `job` does not match; None when it does."""
        reasons = [
            *self._payload_mismatch(job.payload),
            *(
                f"{name} is {getattr(job, name)!r}, expected {value!r}"
                for name, value in self.fields.items()
                if getattr(job, name) != value
            ),
        ]
        if self.within is not None:
            due = (job.deadline - job.created_at).total_seconds()
            if due > self.within:
                reasons.append(f"due {due:g} s after enqueue, expected within {self.within:g} s")
        return "; ".join(reasons) or None

    def _payload_mismatch(self, actual: Mapping[str, JsonValue]) -> list[str]:
        if self.payload is None:
            return []
        names = sorted(set(self.payload) | (set(actual) if self.exact else set()))
        return [
            f"payload.{n} is {_shown(actual, n)}, expected {_shown(self.payload, n)}"
            for n in names
            if actual.get(n, _MISSING) != self.payload.get(n, _MISSING)
        ]

    def report(
        self, candidates: list[Job], everything: list[Job], count: int | None, n: int
    ) -> str:
        if not candidates:
            return f"expected {self}, but none was enqueued ({_inventory(everything)})"
        if n and count is not None:
            head = f"expected {count} of {self}, but {n} match"
        else:
            head = f"expected {self}, but none of the {len(candidates)} enqueued matches"
        lines = [f"  {_describe(j)}: {self.mismatch(j) or 'matches'}" for j in candidates[-10:]]
        return "\n".join([f"{head}:", *lines])

    def __str__(self) -> str:
        parts = [f"a {self.job_type!r} job"]
        if self.payload is not None:
            parts.append(f"with payload {'' if self.exact else 'including '}{self.payload}")
        parts += [f"{name}={value!r}" for name, value in self.fields.items()]
        if self.within is not None:
            parts.append(f"due within {self.within:g} s")
        return " ".join(parts)


_MISSING = object()


def _shown(payload: Mapping[str, object], name: str) -> str:
    return repr(payload[name]) if name in payload else "missing"


def _expected_payload(payload: Expected) -> dict[str, Any] | None:
    if payload is None:
        return None
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json", by_alias=True)
    return dict(payload)


def _describe(job: Job) -> str:
    return f"job {job.id} ({job.status.value}) payload={job.payload}"


def _inventory(jobs: list[Job]) -> str:
    if not jobs:
        return "nothing was enqueued"
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.job_type] = counts.get(job.job_type, 0) + 1
    return "enqueued: " + ", ".join(f"{n} {t!r}" for t, n in sorted(counts.items()))
