"""Heartbeats: while an attempt runs (and until its outcome is acknowledged), extend its
server lease and its message's SQS visibility together, every third of the lease, in one
request for all attempts due. The server's answer per lease: held, lost or cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from jobs_schema import HeartbeatItem, HeartbeatResult, LeaseRef, LeaseState
from jobs_worker.consumer.base import Consumer, ReceivedMessage
from jobs_worker.context import CancelSignal
from jobs_worker.errors import WorkerApiError
from jobs_worker.reporter import WorkerApi

__all__ = ["Heartbeater", "HeldLease"]

logger = logging.getLogger(__name__)

_BEATS_PER_LEASE = 3
# A message stays invisible longer than the lease: when its worker dies, the lease expires and
# the reaper retries the job before the old message comes back (and is then dropped unrun).
_VISIBILITY_PER_LEASE = 1.5
_MIN_SLEEP = 0.05


@dataclass(eq=False)
class HeldLease:
    """One attempt's lease as the heartbeater keeps it alive."""

    ref: LeaseRef
    message: ReceivedMessage
    seconds: float  # the use case's lease duration: each beat extends by this much
    cancel: CancelSignal = field(default_factory=CancelSignal)
    on_lost: Callable[[], None] = lambda: None
    next_beat: float = 0.0
    state: LeaseState = LeaseState.HELD
    # the attempt's own report is on its way: a beat racing it sees the lease gone, as expected
    finishing: bool = False

    @property
    def interval(self) -> float:
        return self.seconds / _BEATS_PER_LEASE

    @property
    def visibility_seconds(self) -> float:
        return self.seconds * _VISIBILITY_PER_LEASE


class Heartbeater:
    def __init__(
        self,
        api: WorkerApi,
        consumer: Consumer,
        *,
        worker_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._consumer = consumer
        self._worker_id = worker_id
        self._clock = clock
        self._held: set[HeldLease] = set()
        self._changed = asyncio.Event()

    def track(self, lease: HeldLease) -> None:
        # The first beat (a third of the lease in) also tells the server which worker runs the
        # attempt; handlers shorter than that cost no heartbeat at all.
        lease.next_beat = self._clock() + lease.interval
        self._held.add(lease)
        self._changed.set()

    def untrack(self, lease: HeldLease) -> None:
        self._held.discard(lease)

    async def run(self) -> None:
        """Beat for every lease when due, until cancelled."""
        while True:
            due = self._due()
            if due:
                await self.beat(due)
                continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self._sleep())

    def _due(self) -> list[HeldLease]:
        now = self._clock()
        return [h for h in self._held if _beat_at(h) <= now]

    def _sleep(self) -> float:
        if not self._held:
            return 1.0
        return max(_MIN_SLEEP, min(_beat_at(h) for h in self._held) - self._clock())

    async def beat(self, leases: list[HeldLease]) -> list[HeldLease]:
        """Extend every lease on the server and its message's visibility; set each lease's
        `state` from the answer (unchanged when the server cannot be reached). Returns the
        leases the server did not answer for."""
        if not leases:
            return []
        now = self._clock()
        for h in leases:
            h.next_beat = now + h.interval
        results = await self._extend_leases(leases)
        for h in leases:
            result = results.get((h.ref.job_id, h.ref.attempt))
            if result is not None:
                self._apply(h, result)
        # an attempt that finished during the request has had its message deleted, or soon
        alive = [h for h in leases if h.state is not LeaseState.LOST and not self._done(h)]
        await self._extend_visibility(alive)
        return [h for h in leases if (h.ref.job_id, h.ref.attempt) not in results]

    async def _extend_leases(
        self, leases: list[HeldLease]
    ) -> dict[tuple[UUID, int], HeartbeatResult]:
        out: dict[tuple[UUID, int], HeartbeatResult] = {}
        # the server answers by job id: two attempts of one job go in separate requests
        for group in _unique_jobs(leases):
            items = [
                HeartbeatItem(
                    job_id=h.ref.job_id,
                    attempt=h.ref.attempt,
                    lease_token=h.ref.lease_token,
                    extend_seconds=h.seconds,
                )
                for h in group
            ]
            try:
                results = await self._api.heartbeat(self._worker_id, items)
            except WorkerApiError as exc:
                logger.warning(
                    "heartbeat failed", extra={"error": exc.message, "leases": len(items)}
                )
                continue
            attempts = {h.ref.job_id: h.ref.attempt for h in group}
            out.update({(r.job_id, attempts[r.job_id]): r for r in results if r.job_id in attempts})
        return out

    def _done(self, lease: HeldLease) -> bool:
        return lease.finishing and lease not in self._held

    def _apply(self, lease: HeldLease, result: HeartbeatResult) -> None:
        if result.state is LeaseState.CANCELLED and not lease.cancel.is_set():
            logger.info("job cancelled while running", extra={"job_id": str(lease.ref.job_id)})
            lease.cancel.set()
        if result.state is LeaseState.LOST and lease.state is not LeaseState.LOST:
            level = logging.DEBUG if lease.finishing else logging.WARNING
            logger.log(level, "lease lost", extra={"job_id": str(lease.ref.job_id)})
            lease.state = LeaseState.LOST
            self.untrack(lease)
            lease.on_lost()
            return
        lease.state = result.state

    async def _extend_visibility(self, leases: list[HeldLease]) -> None:
        # the jobs of a packed message share it: one change per message
        by_seconds: dict[float, dict[str, ReceivedMessage]] = {}
        for h in leases:
            by_seconds.setdefault(h.visibility_seconds, {})[h.message.receipt] = h.message
        for seconds, messages in by_seconds.items():
            failed = await self._consumer.extend(list(messages.values()), seconds=seconds)
            if failed:
                logger.warning("visibility not extended", extra={"count": len(failed)})


def _beat_at(lease: HeldLease) -> float:
    # a little early: leases due soon go along with those due now, in fewer, fuller requests
    return lease.next_beat - lease.interval / 4


def _unique_jobs(leases: list[HeldLease]) -> list[list[HeldLease]]:
    groups: list[list[HeldLease]] = []
    seen: Counter[UUID] = Counter()
    for h in leases:
        index = seen[h.ref.job_id]
        seen[h.ref.job_id] += 1
        if index == len(groups):
            groups.append([])
        groups[index].append(h)
    return groups
