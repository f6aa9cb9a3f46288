"""Wake-ups between processes over LISTEN/NOTIFY.

NOTIFY takes a lock at commit that serializes the transactions holding it, so concurrent
enqueue transactions do not notify themselves: after their commits the server asks
WakeupSender to tell the scheduler, and concurrent requests coalesce into one NOTIFY in flight
per process, sent on its own autocommit statement. An enqueue with no other of its process in
flight notifies in its own statement instead (JobService, EnqueueStore.enqueue_jobs'
`announce`), with the payload this module writes. A lost wake-up costs at most one scheduler
tick, never a job."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from jobs_schema.limits import clamp_timestamp
from jobs_server.notify import Notifier
from jobs_server.store.base import JobStore
from jobs_server.store.channels import WAKEUP_CHANNEL

__all__ = ["CHANNEL", "Wakeup", "WakeupSender", "parse_wakeup"]

logger = logging.getLogger(__name__)

CHANNEL = WAKEUP_CHANNEL


@dataclass(frozen=True, slots=True)
class Wakeup:
    use_cases: frozenset[str]
    earliest_run_at: datetime | None  # None: slots were freed, run a pass now


def parse_wakeup(payload: str) -> Wakeup:
    try:
        data = json.loads(payload)
        at = data.get("t")
        return Wakeup(
            frozenset(data.get("u", [])),
            datetime.fromtimestamp(at, UTC) if at is not None else None,
        )
    except (ValueError, TypeError, AttributeError, OverflowError, OSError):
        return Wakeup(frozenset(), None)


class WakeupSender:
    def __init__(
        self, store: JobStore, *, channel: str = CHANNEL, notifier: Notifier | None = None
    ) -> None:
        self._notifier = notifier or Notifier(store)
        self._channel = channel
        self._use_cases: set[str] = set()
        self._earliest: datetime | None = None
        self._freed = False
        self._task: asyncio.Task[None] | None = None

    def enqueued(self, use_cases: set[str], earliest_run_at: datetime) -> None:
        earliest_run_at = clamp_timestamp(earliest_run_at)  # a row's time can be anything
        self._use_cases |= use_cases
        if self._earliest is None or earliest_run_at < self._earliest:
            self._earliest = earliest_run_at
        self._kick()

    def slots_freed(self) -> None:
        self._freed = True
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._use_cases or self._freed:
            body: dict[str, object] = {"u": sorted(self._use_cases)}
            if self._earliest is not None and not self._freed:
                body["t"] = self._earliest.timestamp()
            self._use_cases, self._earliest, self._freed = set(), None, False
            try:
                await self._notifier.notify(self._channel, json.dumps(body))
            except Exception as exc:  # a lost wake-up only delays a pass by one tick
                logger.debug("wake-up not sent", extra={"error": str(exc)})

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
