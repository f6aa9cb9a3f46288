"""The cancellation poll: while attempts run, ask the server every `interval` seconds, in one
request for all of them, which were cancelled, and set those attempts' cancel signals.

Heartbeats also carry cancellations, but only every third of the lease (50 s on a 150 s
lease). The poll is a read on the server (no lease extended, no row written), so asking every
second is cheap; a worker running nothing sends nothing. A slow or failing server only delays
the next poll: a failure is logged (once, then at most every `_LOG_EVERY` seconds) and the
poll tried again on the next tick."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from jobs_schema import LeaseRef, LeaseState
from jobs_worker.errors import WorkerApiError
from jobs_worker.heartbeats import HeldLease
from jobs_worker.reporter import WorkerApi

__all__ = ["CancelPoller"]

logger = logging.getLogger(__name__)

_LOG_EVERY = 60.0  # seconds between warnings while polls keep failing
_MIN_TIMEOUT = 5.0


class CancelPoller:
    """Sets `lease.cancel` on the tracked leases the server says were cancelled."""

    def __init__(
        self,
        api: WorkerApi,
        *,
        worker_id: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._worker_id = worker_id
        self._interval = interval
        # a poll slower than this is given up (and tried again on the next tick)
        self._timeout = max(_MIN_TIMEOUT, 5 * interval)
        self._clock = clock
        self._held: set[HeldLease] = set()
        self._changed = asyncio.Event()
        self._failing_since: float | None = None
        self._warned_at = -float("inf")

    def track(self, lease: HeldLease) -> None:
        self._held.add(lease)
        self._changed.set()

    def untrack(self, lease: HeldLease) -> None:
        self._held.discard(lease)

    async def run(self) -> None:
        """Poll every `interval` while leases are tracked, until cancelled."""
        next_at = self._clock() + self._interval
        while True:
            if not self._watched():
                self._changed.clear()
                await self._changed.wait()  # nothing runs: no requests at all
                next_at = self._clock() + self._interval
            await asyncio.sleep(max(0.0, next_at - self._clock()))
            started = self._clock()
            try:
                await self.poll()
            except Exception:
                logger.exception("cancellation poll crashed; retrying")
            # a slow answer shortens the next wait instead of adding to it
            next_at = max(started + self._interval, self._clock() + self._interval / 10)

    def _watched(self) -> list[HeldLease]:
        # a lease already cancelled, lost, or whose outcome is on its way needs no question
        return [
            h
            for h in self._held
            if h.state is LeaseState.HELD and not h.finishing and not h.cancel.is_set()
        ]

    async def poll(self) -> int:
        """One request for every lease still worth asking about; how many were newly
        cancelled. A failure is logged and answers 0."""
        leases = self._watched()
        if not leases:
            return 0
        try:
            cancelled = await asyncio.wait_for(
                self._api.cancellations(self._worker_id, [h.ref for h in leases]),
                timeout=self._timeout,
            )
        except (WorkerApiError, TimeoutError) as exc:
            self._failed(exc, len(leases))
            return 0
        self._recovered()
        return self._apply(leases, set(cancelled))

    def _apply(self, leases: list[HeldLease], cancelled: set[LeaseRef]) -> int:
        count = 0
        for h in leases:
            if h.ref in cancelled and not h.cancel.is_set():
                logger.info("job cancelled while running", extra={"job_id": str(h.ref.job_id)})
                h.state = LeaseState.CANCELLED
                h.cancel.set()
                count += 1
        return count

    def _failed(self, exc: Exception, leases: int) -> None:
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._warned_at >= _LOG_EVERY:
            self._warned_at = now
            error = exc.message if isinstance(exc, WorkerApiError) else "no answer in time"
            logger.warning(
                "cancellation poll failed; retrying",
                extra={
                    "error": error,
                    "leases": leases,
                    "failing_for": round(now - self._failing_since, 1),
                },
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            logger.info(
                "cancellation poll answered again",
                extra={"failed_for": round(self._clock() - self._failing_since, 1)},
            )
        self._failing_since = None
        self._warned_at = -float("inf")
