"""Batching: concurrent single submissions from one process become one batch call (the
producer client's enqueues; the worker's outcome reports and message deletes).

Nothing lingers when idle: with no batch in flight, a submission goes at once (with what
else was submitted in the same turn of the event loop). While a batch is in flight, new
submissions wait for company: they go when that batch returns, when `linger` seconds have
passed, or when `max_batch` of them are waiting, whichever comes first. So a batch's size
follows the load: one at a time when calls are rare, fuller ones as they come faster than a
call's round trip. Each caller still gets its own result or its own exception.

For work nobody waits on (the worker's message deletes), `eager=False` makes a submission
always wait for company, up to `linger`: a batch per linger at low load instead of a call per
item.

For work whose callers can wait a little but not always (the worker's outcome reports),
`paced=True` starts at most one batch a `linger`: a submission a quiet `linger` after the last
batch goes at once, the others wait for the next batch, due `linger` after the last one
started, whether or not it has returned. So calls are rare at any load: one an item when
items are rarer than one a linger, one a linger above that.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher", "SendBatch", "own_copy"]

T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E", bound=Exception)

# Given n items, returns n outcomes in the same order: a result or the item's own exception.
# Raising instead means the whole batch failed, and every caller gets (a copy of) that error.
SendBatch = Callable[[list[T]], Awaitable[Sequence[R | Exception]]]


class Batcher(Generic[T, R]):
    """`submit(item)` waits for `send(batch)` to answer for its item. A batch goes at once
    when none is in flight (unless `eager` is False); otherwise when it is full, when the
    batches in flight have returned, or `linger` seconds after its first item. `paced`: at
    once when none started in the last `linger`, else when full or `linger` after the last
    one started. After `aclose()` submissions are refused."""

    def __init__(
        self,
        send: SendBatch[T, R],
        *,
        linger: float = 0.02,
        max_batch: int = 100,
        eager: bool = True,
        paced: bool = False,
    ) -> None:
        if linger < 0 or max_batch < 1:
            raise ValueError("linger must be >= 0 and max_batch >= 1")
        self._send = send
        self._linger = linger
        self._max_batch = max_batch
        self._eager = eager
        self._paced = paced
        self._last_start = -math.inf  # loop time the last batch left
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError("closed: no more submissions")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> asyncio.TimerHandle | asyncio.Handle:
        """When the batch now waiting goes: idle, at the end of this turn of the loop; busy,
        after the linger at most (paced: `linger` after the last batch started)."""
        if self._paced:
            wait = self._last_start + self._linger - loop.time()
            return loop.call_soon(self._flush) if wait <= 0 else loop.call_later(wait, self._flush)
        if self._eager and not self._inflight:
            return loop.call_soon(self._flush)
        return loop.call_later(self._linger, self._flush)

    async def aclose(self) -> None:
        """Send what is waiting, then wait for every batch in flight."""
        self._closed = True
        while self._pending or self._inflight:
            self._flush()
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Callers that gave up (cancelled) before the batch left are not sent.
        batch = [(item, fut) for item, fut in self._pending if not fut.done()]
        self._pending = []
        if batch:
            self._last_start = asyncio.get_running_loop().time()
            task = asyncio.create_task(self._deliver(batch))
            self._inflight.add(task)
            task.add_done_callback(self._landed)

    def _landed(self, task: asyncio.Task[None]) -> None:
        """A batch returned: what waited for it goes now, once no other is in flight."""
        self._inflight.discard(task)
        if self._eager and not self._paced and self._pending and not self._inflight:
            self._flush()

    async def _deliver(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._send([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            outcomes = [own_copy(exc) for _ in batch]
        if len(outcomes) != len(batch):
            mismatch = RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
            outcomes = [mismatch] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            _settle(future, outcome)


def _settle(future: asyncio.Future[R], outcome: R | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def own_copy(exc: E) -> E:
    """A copy per caller, so one caller's traceback does not grow onto another's."""
    try:
        clone = copy.copy(exc)
    except Exception:
        return exc
    clone.__cause__ = exc.__cause__
    return clone
