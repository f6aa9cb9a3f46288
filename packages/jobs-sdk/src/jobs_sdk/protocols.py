"""What code that enqueues depends on, rather than on `JobsClient` itself, so a test can hand
it a `jobs_sdk.testing.FakeJobsClient` (or the worker's inline client) instead.

`Enqueuer` / `SyncEnqueuer` are the two calls a typed `Task` makes; `JobsApi` is everything a
producer may call on the async client, which is what a handler's `ctx.jobs` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from jobs_schema import BatchEnqueueResponse, EnqueueRequest, EnqueueResponse

__all__ = ["Enqueuer", "SyncEnqueuer"]


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
