"""The consuming port: receive job messages from a use case's queue, keep them invisible while
their jobs run, delete them once their outcomes are recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Consumer", "ReceivedMessage"]


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    queue: str  # the queue's name or URL as configured
    message_id: str
    receipt: str  # this delivery's handle: visibility changes and deletes need it
    body: str
    receive_count: int = 1


class Consumer(Protocol):
    async def check_queue(self, queue: str) -> None:
        """Return once `queue` can be consumed; raise a JobsWorkerError saying why not (the
        worker waits for its queues before it takes jobs)."""
        ...

    async def receive(
        self, queue: str, *, max_messages: int, wait_seconds: float
    ) -> list[ReceivedMessage]:
        """Up to `max_messages` (at most 10), waiting up to `wait_seconds` for the first."""
        ...

    async def extend(self, messages: Sequence[ReceivedMessage], *, seconds: float) -> set[str]:
        """Keep the messages invisible for `seconds` from now (0: visible at once); return the
        receipts that could not be changed."""
        ...

    async def delete(self, messages: Sequence[ReceivedMessage]) -> set[str]:
        """Delete the messages; return the receipts that could not be deleted."""
        ...

    async def close(self) -> None: ...
