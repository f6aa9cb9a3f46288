"""What code that enqueues depends on, rather than on `JobsClient` itself, so a test can hand
it a `jobs_sdk.testing.FakeJobsClient` (or the worker's inline client) instead.

`Enqueuer` / `SyncEnqueuer` are the two calls a typed `Task` makes; `JobsApi` is everything a
producer may call on the async client, which is what a handler's `ctx.jobs` gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, Unpack, overload
from uuid import UUID

from pydantic import JsonValue

from jobs_schema import (
    BatchEnqueueResponse,
    BulkAction,
    BulkResult,
    EnqueueRequest,
    EnqueueResponse,
    Job,
    JobCount,
    JobPage,
    JobSelection,
)
from jobs_sdk._http import EnqueueOptions, JobFilters
from jobs_sdk._selection import SelectionFilters

__all__ = ["Enqueuer", "JobsApi", "SyncEnqueuer"]


class Enqueuer(Protocol):
    async def enqueue(
        self, request: EnqueueRequest, /, *, idempotency_key: str | None = None
    ) -> EnqueueResponse: ...

    async def enqueue_batch(
        self, requests: Sequence[EnqueueRequest], *, idempotency_key: str | None = None
    ) -> BatchEnqueueResponse: ...


class SyncEnqueuer(Protocol):
    def enqueue(
        self, request: EnqueueRequest, /, *, idempotency_key: str | None = None
    ) -> EnqueueResponse: ...

    def enqueue_batch(
        self, requests: Sequence[EnqueueRequest], *, idempotency_key: str | None = None
    ) -> BatchEnqueueResponse: ...


class JobsApi(Protocol):
    """The async producer interface: `JobsClient`, `FakeJobsClient` and `InlineJobs`."""

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

    async def enqueue_batch(
        self, requests: Sequence[EnqueueRequest], *, idempotency_key: str | None = None
    ) -> BatchEnqueueResponse: ...

    async def get(self, job_id: UUID | str) -> Job: ...

    async def cancel(self, job_id: UUID | str) -> Job: ...

    async def retry(self, job_id: UUID | str) -> Job: ...

    async def list_page(
        self, *, cursor: str | None = None, limit: int = 50, **filters: Unpack[JobFilters]
    ) -> JobPage: ...

    def list(
        self, *, page_size: int = 100, **filters: Unpack[JobFilters]
    ) -> AsyncIterator[Job]: ...

    async def count(
        self, *, action: BulkAction | None = None, **filters: Unpack[JobFilters]
    ) -> JobCount: ...

    async def cancel_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult: ...

    async def retry_where(
        self, selection: JobSelection | None = None, /, **filters: Unpack[SelectionFilters]
    ) -> BulkResult: ...
