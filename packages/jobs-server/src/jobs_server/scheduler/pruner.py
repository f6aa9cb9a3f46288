"""Deletes what has outlived its retention: finished jobs, idempotency keys, statistics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from jobs_server.stats import SchedulerStats
from jobs_server.store.base import PruneStore

__all__ = ["Pruned", "Pruner"]

STATS_RETENTION_SECONDS = 7 * 86_400
STATS_PRUNE_EVERY_SECONDS = 3_600.0


@dataclass(frozen=True, slots=True)
class Pruned:
    jobs: int
    idempotency_keys: int
    job_stats: int


class Pruner:
    """Finished jobs past their use case's retention and idempotency keys past theirs, in
    bounded batches; the dashboard's minute statistics, at most once an hour (by `now`)."""

    def __init__(
        self,
        store: PruneStore,
        retention_seconds: Mapping[str, float],
        *,
        batch: int,
        idempotency_retention_seconds: float,
        stats_retention_seconds: float = STATS_RETENTION_SECONDS,
        stats: SchedulerStats | None = None,
    ) -> None:
        self._store = store
        self._retention = dict(retention_seconds)
        self._batch = batch
        self._idempotency_retention = idempotency_retention_seconds
        self._stats_retention = stats_retention_seconds
        self._stats = stats
        self._stats_pruned_at: datetime | None = None

    async def run_once(self, now: datetime) -> Pruned:
        jobs = 0
        for use_case, retention in self._retention.items():
            jobs += await self._drain(use_case, retention)
        keys = await self._store.prune_idempotency_keys(
            older_than_seconds=self._idempotency_retention, limit=self._batch
        )
        if self._stats is not None:
            self._stats.pruned += jobs
        return Pruned(jobs=jobs, idempotency_keys=keys, job_stats=await self._prune_stats(now))

    async def _drain(self, use_case: str, retention: float) -> int:
        total = 0
        while True:
            n = await self._store.prune_finished_jobs(
                use_case, older_than_seconds=retention, limit=self._batch
            )
            total += n
            if n < self._batch:
                return total

    async def _prune_stats(self, now: datetime) -> int:
        last = self._stats_pruned_at
        if last is not None and (now - last).total_seconds() < STATS_PRUNE_EVERY_SECONDS:
            return 0
        self._stats_pruned_at = now
        return await self._store.prune_job_stats(older_than_seconds=self._stats_retention)
