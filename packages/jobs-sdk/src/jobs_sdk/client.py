"""The producer clients: `JobsClient` (async) and `SyncJobsClient`, with the same methods.

Both build requests and read answers with the same code (`_http`, `_retry`); only the I/O and
the waiting differ. The async client also coalesces concurrent single enqueues into batches.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack, overload
from uuid import UUID

import httpx
from pydantic import BaseModel, JsonValue

from jobs_schema import (
    FINISHED_STATUSES,
    MAX_BATCH_SIZE,
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
    UseCaseForecast,
)
from jobs_schema.workflows import Batch, JobGraph, ParentResult, ParentsResponse
from jobs_sdk import _events, _http, _selection, workflows
from jobs_sdk._events import EventFilters, SseParser, StreamWait
from jobs_sdk._http import Call, EnqueueOptions, JobFilters
from jobs_sdk._retry import DEFAULT_RETRY_TIMEOUT, RetryPolicy
from jobs_sdk._selection import SelectionFilters
from jobs_sdk._transport import AsyncSender, Sent, SyncSender
from jobs_sdk.batching import Batcher, own_copy
from jobs_sdk.errors import Conflict, JobsError, JobsTimeout
from jobs_sdk.pauses import AsyncPauses, SyncPauses
from jobs_sdk.schedules import Schedules, SyncSchedules
from jobs_sdk.webhooks import SyncWebhooks, Webhooks
from jobs_sdk.workflows import Workflow

__all__ = ["JobsClient", "SyncJobsClient"]


M = TypeVar("M", bound=BaseModel)
Timeout = float | httpx.Timeout
EventHooks = Mapping[str, list[Callable[..., Any]]]
Outcomes = list[EnqueueResponse | JobsError]
Jobs = list[Job]  # `list` is a method name inside the clients
Parents = list[ParentResult]

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_SSE = {"Accept": "text/event-stream"}
_RECONNECT_DELAY = 0.5  # seconds before `events()` opens a lost stream again


def _env() -> tuple[str, str]:
    """JOBS_URL and JOBS_TOKEN, the settings `from_env()` reads."""
    missing = [name for name in ("JOBS_URL", "JOBS_TOKEN") if not os.environ.get(name)]
    if missing:
        raise ValueError(f"set {' and '.join(missing)} (the jobs server's URL and a token)")
    return os.environ["JOBS_URL"], os.environ["JOBS_TOKEN"]


def _cancelled_by_resend(err: Conflict, attempts: int) -> bool:
    """A resent cancel whose first send went through answers "already cancelled"."""
    return attempts > 1 and err.details.get("status") == JobStatus.CANCELLED.value


@dataclass
class _Waiting:
    """The bookkeeping of `wait()`: how long to sleep after each look at the job."""

    job_id: UUID | str
    timeout: float
    poll_interval: float

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def pause_after(self, job: Job) -> float | None:
        """None once the job has finished; raises JobsTimeout when time is up."""
        if job.status in FINISHED_STATUSES:
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise JobsTimeout(
                f"job {self.job_id} is still {job.status.value} after {self.timeout} s",
                details={"job_id": str(job.id), "status": job.status.value},
            )
        return min(self.poll_interval, remaining)


class JobsClient:
    """Async client of the jobs API. Use it as `async with JobsClient(url, token) as jobs:`.

    `timeout`: seconds per HTTP request (or an httpx.Timeout). A connection error, timeout or
    503 is retried for up to `retry_timeout` seconds (None: no time bound), and at most
    `retries` times (None: no count bound); or pass a RetryPolicy as `retries`. `coalesce`:
    concurrent `enqueue` calls without an idempotency key share batch requests, waiting at
    most `linger` seconds for company, at most `max_batch` jobs a request. `transport` and
    `event_hooks` go to httpx.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: int | RetryPolicy | None = None,
        retry_timeout: float | None = DEFAULT_RETRY_TIMEOUT,
        coalesce: bool = True,
        linger: float = 0.002,
        max_batch: int = 500,
        transport: httpx.AsyncBaseTransport | None = None,
        event_hooks: EventHooks | None = None,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH_SIZE:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH_SIZE}")
        self._retry = RetryPolicy.of(retries, timeout=retry_timeout)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_http.client_headers(token),
            timeout=timeout,
            transport=transport,
            event_hooks=event_hooks,
        )
        self._sender = AsyncSender(self._http, self._retry)
        self.pauses = AsyncPauses(self._sender)
        """Pause and resume a use case, a tenant, or a tenant within a use case."""
        self._schedules = Schedules(self._sender)
        self.webhooks = Webhooks(self._sender)
        """Webhook subscriptions: create, list, get, deliveries, pause, resume, delete."""
        self._coalescer: Batcher[EnqueueRequest, EnqueueResponse] | None = (
            Batcher(self._enqueue_each, linger=linger, max_batch=max_batch) if coalesce else None
        )

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """A client for JOBS_URL with JOBS_TOKEN; `options` as for the constructor."""
        return cls(*_env(), **options)

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
        """Send the enqueues still lingering, wait for them, then close the connections."""
        if self._coalescer is not None:
            await self._coalescer.aclose()
        await self._http.aclose()

    # -- enqueue -------------------------------------------------------------------------------

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
        """Enqueue one job. `delay_tolerance` is seconds or a timedelta; `unique` is a
        uniqueness rule in place of `dedup_key` (a UniqueRule or its fields); `miss_policy`
        ("run_late" or "expire") and `expire_grace` (seconds or a timedelta past the deadline,
        at most 30 days) override the use case's. With an
        `idempotency_key` the request goes alone, so the key covers exactly this job."""
        request = _http.enqueue_request(use_case, job_type, payload, options)
        linked = request.depends_on is not None or request.ref is not None
        if idempotency_key is None and self._coalescer is not None and not linked:
            return await self._coalescer.submit(request)
        return await self._enqueue_one(request, idempotency_key)

    async def enqueue_batch(
        self, requests: Sequence[EnqueueRequest], *, idempotency_key: str | None = None
    ) -> BatchEnqueueResponse:
        """Up to 1,000 jobs in one request and one transaction, with a result per item."""
        call = _http.batch_call(requests, idempotency_key or self._new_key())
        return await self._request(call, BatchEnqueueResponse)

    async def _enqueue_one(
        self, request: EnqueueRequest, idempotency_key: str | None = None
    ) -> EnqueueResponse:
        call = _http.enqueue_call(request, idempotency_key or self._new_key())
        return await self._request(call, EnqueueResponse)

    async def _enqueue_each(self, requests: Sequence[EnqueueRequest]) -> Outcomes:
        """The coalescer's sender: an outcome per request, never one caller's error for all
        unless it is everyone's (bad token, server unreachable)."""
        if len(requests) == 1:
            return [await _outcome(self._enqueue_one(requests[0]))]
        try:
            response = await self.enqueue_batch(requests)
        except JobsError as err:
            if not _http.is_item_error(err):
                raise
            return await self._resend_split(requests, err)
        return _http.batch_outcomes(response)

    async def _resend_split(self, requests: Sequence[EnqueueRequest], err: JobsError) -> Outcomes:
        # The server refuses a whole batch for one bad item: resend in parts until every
        # item's own result or error is known.
        groups = _http.split_groups(len(requests), err)
        parts = await asyncio.gather(
            *(self._enqueue_group([requests[i] for i in group]) for group in groups)
        )
        return _http.merge_groups(groups, parts)

    async def _enqueue_group(self, requests: Sequence[EnqueueRequest]) -> Outcomes:
        try:
            return await self._enqueue_each(requests)
        except JobsError as err:
            return [own_copy(err) for _ in requests]

    def _new_key(self) -> str | None:
        return _http.new_idempotency_key() if self._retry.may_resend else None

    # -- reads and cancel ----------------------------------------------------------------------

    async def get(self, job_id: UUID | str) -> Job:
        """The job with its attempt history."""
        return await self._request(_http.get_call(job_id), Job)

    async def cancel(self, job_id: UUID | str) -> Job:
        """Cancel a pending job, or mark a running one; Conflict if it already finished."""
        sent = await self._send(_http.cancel_call(job_id))
        try:
            return _http.parse(sent.response, Job)
        except Conflict as err:
            if _cancelled_by_resend(err, sent.attempts):
                return await self.get(job_id)
            raise

    async def wait(
        self,
        job_id: UUID | str,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 - polls many requests; the sync twin's signature
        poll_interval: float = 0.5,
        stream: bool = True,
    ) -> Job:
        """Until the job has finished (succeeded, dead, cancelled or expired), then the job;
        JobsTimeout after `timeout` s. Follows the job's event stream (one GET at the end);
        where the server streams nothing (an older server, a proxy, `stream=False`), polls
        every `poll_interval` s."""
        if stream:
            state = StreamWait(job_id, timeout)
            if await self._follow(state):
                return await self.get(job_id)
            timeout = max(state.remaining(), 0.0)
        waiting = _Waiting(job_id, timeout, poll_interval)
        while True:
            job = await self.get(job_id)
            pause = waiting.pause_after(job)
            if pause is None:
                return job
            await asyncio.sleep(pause)

    async def _follow(self, state: StreamWait) -> bool:
        """Follow the job's stream until it has finished (True), or until streaming is not
        possible (False: poll instead)."""
        path = _events.job_events_path(state.job_id)
        while state.worth_reopening():
            state.opened()
            read = _events.stream_timeout(self._http.timeout, max(state.remaining(), 0.01))
            try:
                async with self._http.stream("GET", path, headers=_SSE, timeout=read) as answer:
                    if not _events.is_stream(answer):
                        return False  # an older server (404), or the stream refused: poll
                    parser = SseParser()
                    async for line in answer.aiter_lines():
                        event = parser.feed(line)
                        if event is not None and state.seen(event):
                            return True
            except httpx.TimeoutException:
                pass
            except httpx.TransportError:
                return False
        if state.remaining() <= 0:
            raise state.timed_out()
        return False

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
        """The changes of this tenant's jobs as they happen (GET /v1/events), filtered; each
        a JobEvent with the job's current head, or a notice (`lagged`, `reconnected`,
        `shutdown`) after which events may have been missed: re-read what you follow. A
        stream that ends or drops is opened again when `reconnect` (a `reconnected` event
        says so); one that cannot be opened raises. Nothing is replayed: at most once."""
        params = _events.events_params(EventFilters(use_case, job_type, status, tenant))
        read = _events.stream_timeout(self._http.timeout, idle_timeout)
        while True:
            opened = False
            try:
                async with self._http.stream(
                    "GET", "/v1/events", params=params, headers=_SSE, timeout=read
                ) as answer:
                    if not answer.is_success:
                        await answer.aread()
                        raise _events.refusal(answer)
                    opened = True
                    parser = SseParser()
                    async for line in answer.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            yield event
            except httpx.TransportError as exc:
                if not opened or not reconnect:
                    raise _http.transport_error(exc) from exc
                yield _events.lost(exc)
            if not reconnect:
                return
            await asyncio.sleep(_RECONNECT_DELAY)

    async def list_page(
        self, *, cursor: str | None = None, limit: int = 50, **filters: Unpack[JobFilters]
    ) -> JobPage:
        """One page of jobs, newest first; pass `next_cursor` back as `cursor`."""
        return await self._request(_http.list_call(filters, cursor=cursor, limit=limit), JobPage)

    async def list(
        self, *, page_size: int = 100, **filters: Unpack[JobFilters]
    ) -> AsyncIterator[Job]:
        """Every matching job, newest first, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = await self.list_page(cursor=cursor, limit=page_size, **filters)
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def forecast(self, use_case: str) -> UseCaseForecast:
        """The use case's backlog by deadline horizon, the misses projected at the current
        throughput and the worker slots needed to meet every deadline."""
        return await self._request(_http.forecast_call(use_case), UseCaseForecast)

    @property
    def schedules(self) -> Schedules:
        """Periodic jobs: create, list, get, pause, resume and delete schedules."""
        return self._schedules

    # -- operator actions ----------------------------------------------------------------------

    async def retry(self, job_id: UUID | str) -> Job:
        """Make a dead, cancelled or expired job pending now, with one more attempt and a new
        deadline; Conflict if it is not dead, cancelled or expired, QuotaExceeded if the
        tenant's quota is full."""
        sent = await self._send(_selection.retry_call(job_id))
        try:
            return _http.parse(sent.response, Job)
        except Conflict as err:
            if _selection.retried_by_resend(err, sent.attempts):
                return await self.get(job_id)
            raise

    async def count(
        self, *, action: BulkAction | None = None, **filters: Unpack[JobFilters]
    ) -> JobCount:
        """How many jobs match (those `action` would change, when given), and the newest
        one's id: pass it as `max_id` to a bulk action to leave later jobs alone."""
        return await self._request(_selection.count_call(filters, action), JobCount)

    async def cancel_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult:
        """Cancel every pending job matching the filters, and mark every running one."""
        call = _selection.bulk_call(BulkAction.CANCEL, _selection.selection_of(selection, filters))
        return await self._request(call, BulkResult)

    async def retry_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult:
        """Retry now every dead, cancelled or expired job matching the filters."""
        call = _selection.bulk_call(BulkAction.RETRY, _selection.selection_of(selection, filters))
        return await self._request(call, BulkResult)

    # -- I/O -----------------------------------------------------------------------------------

    # -- workflows and batches (docs/workflows.md) ---------------------------------------------

    async def enqueue_workflow(
        self, workflow: Workflow, *, idempotency_key: str | None = None
    ) -> Jobs:
        """Every job of `workflow` in one request and one transaction, stored whole or not at
        all; the jobs in the order they were added."""
        call = workflows.workflow_call(workflow, idempotency_key or self._new_key())
        return workflows.graph_jobs(await self._request(call, BatchEnqueueResponse))

    async def chain(self, *requests: EnqueueRequest) -> Jobs:
        """The jobs one after another: each waits until the one before it has ended."""
        return await self.enqueue_workflow(workflows.chain_of(requests))

    async def group(self, *requests: EnqueueRequest, then: EnqueueRequest | None = None) -> Jobs:
        """The jobs side by side, and `then` once every one of them has ended (a fan-in)."""
        return await self.enqueue_workflow(workflows.group_of(requests, then))

    async def parents(self, job_id: UUID | str) -> Parents:
        """A job's parents with their states and results."""
        return (await self._request(workflows.parents_call(job_id), ParentsResponse)).parents

    async def workflow_graph(self, job_id: UUID | str) -> JobGraph:
        """The jobs linked to a job over dependencies, and their edges."""
        return await self._request(workflows.graph_call(job_id), JobGraph)

    async def create_batch(
        self, jobs: Sequence[EnqueueRequest], *, callback: EnqueueRequest | None = None
    ) -> Batch:
        """A batch of up to 1,000 jobs, and `callback` enqueued once all of them have ended."""
        return await self._request(workflows.create_batch_call(jobs, callback), Batch)

    async def add_to_batch(self, batch_id: UUID | str, jobs: Sequence[EnqueueRequest]) -> Batch:
        """More jobs for a batch that has not finished; Conflict once it has."""
        return await self._request(workflows.add_to_batch_call(batch_id, jobs), Batch)

    async def get_batch(self, batch_id: UUID | str) -> Batch:
        """A batch's progress: its jobs counted by how they ended."""
        return await self._request(workflows.get_batch_call(batch_id), Batch)

    async def _request(self, call: Call, model: type[M]) -> M:
        return await self._sender.request(call, model)

    async def _send(self, call: Call) -> Sent:
        return await self._sender.send(call)


async def _outcome(result: Awaitable[EnqueueResponse]) -> EnqueueResponse | JobsError:
    try:
        return await result
    except JobsError as err:
        return err


class SyncJobsClient:
    """The blocking twin of `JobsClient`: the same methods, without coalescing (a blocking
    call has no concurrent company to wait for). Use it as `with SyncJobsClient(...) as jobs:`.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: int | RetryPolicy | None = None,
        retry_timeout: float | None = DEFAULT_RETRY_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        event_hooks: EventHooks | None = None,
    ) -> None:
        self._retry = RetryPolicy.of(retries, timeout=retry_timeout)
        self._http = httpx.Client(
            base_url=base_url,
            headers=_http.client_headers(token),
            timeout=timeout,
            transport=transport,
            event_hooks=event_hooks,
        )
        self._sender = SyncSender(self._http, self._retry)
        self.pauses = SyncPauses(self._sender)
        """Pause and resume a use case, a tenant, or a tenant within a use case."""
        self._schedules = SyncSchedules(self._sender)
        self.webhooks = SyncWebhooks(self._sender)
        """Webhook subscriptions: create, list, get, deliveries, pause, resume, delete."""

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """A client for JOBS_URL with JOBS_TOKEN; `options` as for the constructor."""
        return cls(*_env(), **options)

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
        self._http.close()

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
        """Enqueue one job. `delay_tolerance` is seconds or a timedelta; `unique` is a
        uniqueness rule in place of `dedup_key` (a UniqueRule or its fields); `miss_policy`
        ("run_late" or "expire") and `expire_grace` (seconds or a timedelta past the deadline,
        at most 30 days) override the use case's."""
        request = _http.enqueue_request(use_case, job_type, payload, options)
        call = _http.enqueue_call(request, idempotency_key or self._new_key())
        return self._request(call, EnqueueResponse)

    def enqueue_batch(
        self, requests: Sequence[EnqueueRequest], *, idempotency_key: str | None = None
    ) -> BatchEnqueueResponse:
        """Up to 1,000 jobs in one request and one transaction, with a result per item."""
        call = _http.batch_call(requests, idempotency_key or self._new_key())
        return self._request(call, BatchEnqueueResponse)

    def _new_key(self) -> str | None:
        return _http.new_idempotency_key() if self._retry.may_resend else None

    def get(self, job_id: UUID | str) -> Job:
        """The job with its attempt history."""
        return self._request(_http.get_call(job_id), Job)

    def cancel(self, job_id: UUID | str) -> Job:
        """Cancel a pending job, or mark a running one; Conflict if it already finished."""
        sent = self._send(_http.cancel_call(job_id))
        try:
            return _http.parse(sent.response, Job)
        except Conflict as err:
            if _cancelled_by_resend(err, sent.attempts):
                return self.get(job_id)
            raise

    def wait(
        self,
        job_id: UUID | str,
        *,
        timeout: float = 60.0,
        poll_interval: float = 0.5,
        stream: bool = True,
    ) -> Job:
        """Until the job has finished, then the job; JobsTimeout after `timeout` s. Follows
        the job's event stream, or polls where there is none (as JobsClient.wait)."""
        if stream:
            state = StreamWait(job_id, timeout)
            if self._follow(state):
                return self.get(job_id)
            timeout = max(state.remaining(), 0.0)
        waiting = _Waiting(job_id, timeout, poll_interval)
        while True:
            job = self.get(job_id)
            pause = waiting.pause_after(job)
            if pause is None:
                return job
            time.sleep(pause)

    def _follow(self, state: StreamWait) -> bool:
        path = _events.job_events_path(state.job_id)
        while state.worth_reopening():
            state.opened()
            read = _events.stream_timeout(self._http.timeout, max(state.remaining(), 0.01))
            try:
                with self._http.stream("GET", path, headers=_SSE, timeout=read) as answer:
                    if not _events.is_stream(answer):
                        return False
                    parser = SseParser()
                    for line in answer.iter_lines():
                        event = parser.feed(line)
                        if event is not None and state.seen(event):
                            return True
            except httpx.TimeoutException:
                pass
            except httpx.TransportError:
                return False
        if state.remaining() <= 0:
            raise state.timed_out()
        return False

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
        """The changes of this tenant's jobs as they happen (as JobsClient.events)."""
        params = _events.events_params(EventFilters(use_case, job_type, status, tenant))
        read = _events.stream_timeout(self._http.timeout, idle_timeout)
        while True:
            opened = False
            try:
                with self._http.stream(
                    "GET", "/v1/events", params=params, headers=_SSE, timeout=read
                ) as answer:
                    if not answer.is_success:
                        answer.read()
                        raise _events.refusal(answer)
                    opened = True
                    parser = SseParser()
                    for line in answer.iter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            yield event
            except httpx.TransportError as exc:
                if not opened or not reconnect:
                    raise _http.transport_error(exc) from exc
                yield _events.lost(exc)
            if not reconnect:
                return
            time.sleep(_RECONNECT_DELAY)

    def list_page(
        self, *, cursor: str | None = None, limit: int = 50, **filters: Unpack[JobFilters]
    ) -> JobPage:
        """One page of jobs, newest first; pass `next_cursor` back as `cursor`."""
        return self._request(_http.list_call(filters, cursor=cursor, limit=limit), JobPage)

    def list(self, *, page_size: int = 100, **filters: Unpack[JobFilters]) -> Iterator[Job]:
        """Every matching job, newest first, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = self.list_page(cursor=cursor, limit=page_size, **filters)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def forecast(self, use_case: str) -> UseCaseForecast:
        """The use case's backlog by deadline horizon, the misses projected at the current
        throughput and the worker slots needed to meet every deadline."""
        return self._request(_http.forecast_call(use_case), UseCaseForecast)

    @property
    def schedules(self) -> SyncSchedules:
        """Periodic jobs: create, list, get, pause, resume and delete schedules."""
        return self._schedules

    def retry(self, job_id: UUID | str) -> Job:
        """Make a dead, cancelled or expired job pending now, with one more attempt and a new
        deadline; Conflict if it is not dead, cancelled or expired, QuotaExceeded if the
        tenant's quota is full."""
        sent = self._send(_selection.retry_call(job_id))
        try:
            return _http.parse(sent.response, Job)
        except Conflict as err:
            if _selection.retried_by_resend(err, sent.attempts):
                return self.get(job_id)
            raise

    def count(self, *, action: BulkAction | None = None, **filters: Unpack[JobFilters]) -> JobCount:
        """How many jobs match (those `action` would change, when given), and the newest
        one's id: pass it as `max_id` to a bulk action to leave later jobs alone."""
        return self._request(_selection.count_call(filters, action), JobCount)

    def cancel_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult:
        """Cancel every pending job matching the filters, and mark every running one."""
        call = _selection.bulk_call(BulkAction.CANCEL, _selection.selection_of(selection, filters))
        return self._request(call, BulkResult)

    def retry_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult:
        """Retry now every dead, cancelled or expired job matching the filters."""
        call = _selection.bulk_call(BulkAction.RETRY, _selection.selection_of(selection, filters))
        return self._request(call, BulkResult)

    # -- workflows and batches (docs/workflows.md) ---------------------------------------------

    def enqueue_workflow(self, workflow: Workflow, *, idempotency_key: str | None = None) -> Jobs:
        """Every job of `workflow` in one request and one transaction, stored whole or not at
        all; the jobs in the order they were added."""
        call = workflows.workflow_call(workflow, idempotency_key or self._new_key())
        return workflows.graph_jobs(self._request(call, BatchEnqueueResponse))

    def chain(self, *requests: EnqueueRequest) -> Jobs:
        """The jobs one after another: each waits until the one before it has ended."""
        return self.enqueue_workflow(workflows.chain_of(requests))

    def group(self, *requests: EnqueueRequest, then: EnqueueRequest | None = None) -> Jobs:
        """The jobs side by side, and `then` once every one of them has ended (a fan-in)."""
        return self.enqueue_workflow(workflows.group_of(requests, then))

    def parents(self, job_id: UUID | str) -> Parents:
        """A job's parents with their states and results."""
        return (self._request(workflows.parents_call(job_id), ParentsResponse)).parents

    def workflow_graph(self, job_id: UUID | str) -> JobGraph:
        """The jobs linked to a job over dependencies, and their edges."""
        return self._request(workflows.graph_call(job_id), JobGraph)

    def create_batch(
        self, jobs: Sequence[EnqueueRequest], *, callback: EnqueueRequest | None = None
    ) -> Batch:
        """A batch of up to 1,000 jobs, and `callback` enqueued once all of them have ended."""
        return self._request(workflows.create_batch_call(jobs, callback), Batch)

    def add_to_batch(self, batch_id: UUID | str, jobs: Sequence[EnqueueRequest]) -> Batch:
        """More jobs for a batch that has not finished; Conflict once it has."""
        return self._request(workflows.add_to_batch_call(batch_id, jobs), Batch)

    def get_batch(self, batch_id: UUID | str) -> Batch:
        """A batch's progress: its jobs counted by how they ended."""
        return self._request(workflows.get_batch_call(batch_id), Batch)

    def _request(self, call: Call, model: type[M]) -> M:
        return self._sender.request(call, model)

    def _send(self, call: Call) -> Sent:
        return self._sender.send(call)
