"""Batcher: concurrent single submissions become batch calls (outcome reports, deletes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`submit(item)` waits for `call(batch)` to answer for its item. A batch goes when it is
    full or `linger` seconds after its first item; `call` returns one answer per item, in order."""

    def __init__(
        self,
        call: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_batch: int = 100,
        linger: float = 0.02,
    ) -> None:
        self._call = call
        self._max_batch = max_batch
        self._linger = linger
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._waiting) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
        if self._waiting:
            self._timer = asyncio.get_running_loop().call_later(0, self._flush)
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._call([item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"batch call answered {len(answers)} of {len(batch)} items")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    async def aclose(self) -> None:
        """Send what is waiting and wait for every batch in flight."""
        while self._waiting or self._sending:
            self._flush()
            await asyncio.gather(*self._sending, return_exceptions=True)
