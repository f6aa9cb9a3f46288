"""The one source of job events: after a transaction that changed jobs' status committed, the
ids of those jobs go out as a PostgreSQL NOTIFY on CHANNEL, which every API process's
EventHub (jobs_server.streams) LISTENs to.

As with wake-ups (jobs_server.wakeups), concurrent transactions do not notify inside
themselves (NOTIFY takes a lock at commit that serializes them); a lone enqueue and the claims
do (JobService, announce_claimed).
The services call `EventSender.changed(ids)` after their store call returned; concurrent calls
coalesce into one flush in flight per process, each NOTIFY on its own autocommit statement,
the ids cut into payloads under PostgreSQL's 8000-byte limit. NOTIFY is not durable: a lost
one (the database went away between commit and NOTIFY, a listener was reconnecting) loses an
event, never a job; streams are state-based and clients re-read (docs/events.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from uuid import UUID

from jobs_server.notify import Notifier
from jobs_server.store.base import EnqueueStore
from jobs_server.store.channels import EVENTS_CHANNEL, MAX_PAYLOAD_BYTES, parse_ids
from jobs_server.store.channels import id_payloads as chunks

__all__ = ["CHANNEL", "MAX_PAYLOAD_BYTES", "EventSender", "JobsChanged", "chunks", "parse_ids"]

logger = logging.getLogger(__name__)

CHANNEL = EVENTS_CHANNEL

# The one hook of every service that changes jobs' status: called after the change committed,
# with the ids of the jobs it changed.
JobsChanged = Callable[[Iterable[UUID]], None]


class EventSender:
    """Coalesces changed ids and NOTIFYs them after commit; `enabled=False` sends nothing
    (JOBS_EVENTS_NOTIFY=false: no process streams events)."""

    def __init__(
        self,
        store: EnqueueStore,
        *,
        channel: str = CHANNEL,
        enabled: bool = True,
        notifier: Notifier | None = None,
    ) -> None:
        self._notifier = notifier or Notifier(store)
        self._channel = channel
        self._enabled = enabled
        self._ids: dict[UUID, None] = {}  # insertion-ordered set
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # NOTIFYs sent, for tests and the bench

    def changed(self, ids: Iterable[UUID]) -> None:
        if not self._enabled:
            return
        before = len(self._ids)
        self._ids.update(dict.fromkeys(ids))
        if len(self._ids) > before and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._ids:
            ids, self._ids = list(self._ids), {}
            for payload in chunks(ids):
                try:
                    await self._notifier.notify(self._channel, payload)
                    self.sent += 1
                except Exception as exc:  # a lost event costs a stream's update, never a job
                    logger.warning("job events not sent", extra={"error": str(exc)})

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
