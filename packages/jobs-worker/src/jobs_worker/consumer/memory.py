"""InMemoryConsumer: a Consumer with SQS's visibility rules and no network, for unit tests
(the runtime's and users' own)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from jobs_worker.consumer.base import ReceivedMessage
from jobs_worker.errors import JobsWorkerError

__all__ = ["InMemoryConsumer"]

_MAX_RECEIVE = 10  # the most one ReceiveMessage returns
_MAX_VISIBILITY = 12 * 3600


@dataclass
class _Stored:
    message_id: str
    body: str
    visible_at: float = 0.0
    receipt: str = ""
    receive_count: int = 0


@dataclass
class InMemoryConsumer:
    """Queues of messages; a received message is invisible for `visibility_seconds` unless
    extended, then visible again, like SQS. `send` puts a body on a queue.

    Receipts behave as SQS documents them: only a message's latest receipt changes its
    visibility; a delete with an older one succeeds but leaves the message; deleting a message
    already gone succeeds; a receipt never handed out fails."""

    visibility_seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    queues: dict[str, list[_Stored]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _issued: set[str] = field(default_factory=set)
    _arrived: asyncio.Event | None = None

    def send(self, queue: str, body: str) -> str:
        message_id = f"m{next(self._ids)}"
        self.queues.setdefault(queue, []).append(_Stored(message_id, body))
        if self._arrived is not None:
            self._arrived.set()
        return message_id

    async def check_queue(self, queue: str) -> None:
        if queue not in self.queues:
            raise JobsWorkerError(f"no queue {queue!r}: send to it, or create it, first")

    def create_queue(self, queue: str) -> None:
        self.queues.setdefault(queue, [])

    def pending(self, queue: str) -> int:
        """Messages not deleted, visible or not."""
        return len(self.queues.get(queue, []))

    async def receive(
        self, queue: str, *, max_messages: int, wait_seconds: float
    ) -> list[ReceivedMessage]:
        deadline = self.clock() + wait_seconds
        while True:
            got = self._take(queue, max_messages)
            remaining = deadline - self.clock()
            if got or remaining <= 0:
                return got
            self._arrived = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(remaining, 0.05))

    def _take(self, queue: str, limit: int) -> list[ReceivedMessage]:
        now = self.clock()
        limit = max(1, min(limit, _MAX_RECEIVE))
        out: list[ReceivedMessage] = []
        for m in self.queues.get(queue, []):
            if len(out) == limit:
                break
            if m.visible_at <= now:
                m.receive_count += 1
                m.receipt = f"{m.message_id}/{m.receive_count}"
                self._issued.add(m.receipt)
                m.visible_at = now + self.visibility_seconds
                out.append(ReceivedMessage(queue, m.message_id, m.receipt, m.body, m.receive_count))
        return out

    async def extend(self, messages: Sequence[ReceivedMessage], *, seconds: float) -> set[str]:
        failed = set()
        for msg in messages:
            stored = self._find(msg)
            if stored is None:
                failed.add(msg.receipt)
            else:
                # as SqsConsumer sends it: whole seconds, rounded up, at most 12 hours
                stored.visible_at = self.clock() + max(0, min(math.ceil(seconds), _MAX_VISIBILITY))
        return failed

    async def delete(self, messages: Sequence[ReceivedMessage]) -> set[str]:
        failed = set()
        for msg in messages:
            if msg.receipt not in self._issued:
                failed.add(msg.receipt)
                continue
            stored = self._find(msg)
            if stored is not None:
                self.queues[msg.queue].remove(stored)
                self.deleted.append(msg.message_id)
        return failed

    def _find(self, msg: ReceivedMessage) -> _Stored | None:
        # like SQS, only the latest delivery's receipt is valid
        for m in self.queues.get(msg.queue, []):
            if m.message_id == msg.message_id and m.receipt == msg.receipt:
                return m
        return None

    async def close(self) -> None:
        return None
