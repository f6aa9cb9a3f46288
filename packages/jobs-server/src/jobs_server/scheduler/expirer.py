"""Miss policy expire: pending jobs past their deadline plus grace end expired."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from jobs_server.events import JobsChanged
from jobs_server.metrics import ServerMetrics
from jobs_server.store.base import ExpiredJob, ExpireStore

__all__ = ["Expired", "Expirer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Expired:
    jobs: list[ExpiredJob]

    @property
    def count(self) -> int:
        return len(self.jobs)


class Expirer:
    """Ends up to `batch` pending jobs whose `expires_at` has passed, in one statement. The
    scheduler runs it every JOBS_EXPIRE_EVERY_SECONDS (0.25 s), not on every pass: the claim
    statements themselves pass over a job past its deadline plus grace (a job exactly at it is
    still claimed), so one is never dispatched between two runs. A backlog larger than `batch`
    drains over the following runs."""

    def __init__(
        self,
        store: ExpireStore,
        use_cases: Iterable[str],
        *,
        batch: int,
        metrics: ServerMetrics | None = None,
        on_changed: JobsChanged | None = None,
    ) -> None:
        self._on_changed = on_changed
        self._store = store
        self._use_cases = list(use_cases)
        self._batch = batch
        self._metrics = metrics

    async def run_once(self, now: datetime) -> Expired:
        if not self._use_cases:
            return Expired([])
        jobs = await self._store.expire_jobs(self._use_cases, limit=self._batch)
        if jobs:
            logger.info("jobs expired", extra={"count": len(jobs)})
            if self._metrics is not None:
                self._metrics.observe_expired(j.use_case for j in jobs)
            if self._on_changed is not None:
                self._on_changed(j.id for j in jobs)
        return Expired(jobs)
