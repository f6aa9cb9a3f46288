"""Group commit for single enqueues: concurrent requests of one tenant share one store call.

Every enqueue of a tenant takes that tenant's quota row lock until it commits, so one-job
transactions of a busy tenant queue behind each other's commits. Here the first request goes
at once; those that arrive while a call is in flight wait for it and then go together, in
arrival order. Nothing lingers: at low load a request costs what it did alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from jobs_server.store.base import EnqueueResult, NewJob

__all__ = ["EnqueueBatcher"]

Send = Callable[[str, list[NewJob]], Awaitable[list[EnqueueResult]]]


class EnqueueBatcher:
    def __init__(self, send: Send, *, max_batch: int = 1000) -> None:
        self._send = send
        self._max_batch = max_batch
        self._queues: dict[str, list[tuple[NewJob, asyncio.Future[EnqueueResult]]]] = {}
        self._flights: dict[str, asyncio.Task[None]] = {}

    async def submit(self, tenant: str, job: NewJob) -> EnqueueResult:
        future: asyncio.Future[EnqueueResult] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(tenant, []).append((job, future))
        if tenant not in self._flights:
            self._flights[tenant] = asyncio.create_task(self._fly(tenant))
        return await future

    async def _fly(self, tenant: str) -> None:
        try:
            while queue := self._queues.get(tenant):
                batch = [(j, f) for j, f in queue[: self._max_batch] if not f.cancelled()]
                del queue[: self._max_batch]
                if batch:
                    await self._deliver(tenant, batch)
        finally:
            # no await since the queue was seen empty: nothing can have joined it meanwhile
            self._flights.pop(tenant, None)
            self._queues.pop(tenant, None)

    async def _deliver(
        self, tenant: str, batch: list[tuple[NewJob, asyncio.Future[EnqueueResult]]]
    ) -> None:
        try:
            results = await self._send(tenant, [j for j, _ in batch])
        except Exception as exc:  # the whole call failed: every caller hears why
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
