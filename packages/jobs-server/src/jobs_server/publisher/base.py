"""The publishing port: hand leased jobs' messages to the queue their use case names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from jobs_schema import MAX_SQS_MESSAGE_BYTES

__all__ = ["InMemoryPublisher", "OutgoingMessage", "Publisher", "QueueSpec"]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    key: str  # unique within one publish call; reported back when it failed
    body: str


@dataclass(frozen=True, slots=True)
class QueueSpec:
    queue: str  # name or URL
    visibility_timeout_seconds: int = 60
    max_receive_count: int = 5


class Publisher(Protocol):
    @property
    def max_message_bytes(self) -> int:
        """The largest message body the queue takes, in bytes."""
        ...

    async def publish(self, queue: str, messages: list[OutgoingMessage]) -> set[str]:
        """Send every message; return the keys of those that could not be sent."""
        ...

    async def ensure_queues(self, specs: list[QueueSpec]) -> dict[str, str]:
        """Create missing queues (with a dead-letter queue each); name -> URL. Idempotent."""
        ...

    async def close(self) -> None: ...


@dataclass
class InMemoryPublisher:
    """A Publisher for unit tests: keeps what it was given, by queue name (a URL from
    `ensure_queues` names its queue too); `down` makes every send fail. With `queues` given,
    only those queues (and those `ensure_queues` creates) exist, and a send to another fails as
    it does on SQS; without, every queue exists."""

    queues: set[str] | None = None
    sent: dict[str, list[str]] = field(default_factory=dict)
    down: bool = False
    max_message_bytes: int = MAX_SQS_MESSAGE_BYTES

    async def publish(self, queue: str, messages: list[OutgoingMessage]) -> set[str]:
        name = _queue_name(queue)
        if self.down or (self.queues is not None and name not in self.queues):
            return {m.key for m in messages}
        if messages:
            self.sent.setdefault(name, []).extend(m.body for m in messages)
        return set()

    async def ensure_queues(self, specs: list[QueueSpec]) -> dict[str, str]:
        names = {s.queue: _queue_name(s.queue) for s in specs}
        if self.queues is not None:
            self.queues.update(names.values())
        return {queue: f"{_URL_SCHEME}{name}" for queue, name in names.items()}

    async def close(self) -> None:
        return None


_URL_SCHEME = "memory://"


def _queue_name(queue: str) -> str:
    """A queue's name from its name or URL (its last path segment, as SqsPublisher reads it)."""
    return queue.rstrip("/").rsplit("/", 1)[-1]
