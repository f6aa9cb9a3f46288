"""Deletes what has outlived its retention: finished jobs, idempotency keys, statistics, rate
limits' spent starts and old pause history."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from jobs_server.stats import SchedulerStats
from jobs_server.store.base import PruneStore

__all__ = ["Pruned", "Pruner"]

STATS_RETENTION_SECONDS = 7 * 86_400
STATS_PRUNE_EVERY_SECONDS = 3_600.0
PAUSE_HISTORY_RETENTION_SECONDS = 90 * 86_400
# the longest rate-limit window (RateLimit.per_seconds): no limit counts a start older
RATE_WINDOW_MAX_SECONDS = 86_400.0
# rate_buckets rows looked at per pass: `batch` a step, at most this many steps
RATE_SWEEP_STEPS = 10


@dataclass(frozen=True, slots=True)
class Pruned:
    jobs: int
    idempotency_keys: int
    job_stats: int
    rate_buckets: int = 0
    pause_history: int = 0


class Pruner:
    """Finished jobs past their use case's retention and idempotency keys past theirs, in
    bounded batches; the dashboard's minute statistics, at most once an hour (by `now`).

    Rate limits' state: a rate_buckets row whose newest start is as old as its use case's
    window (`rate_windows`, per_seconds by use case) holds nothing a claim still counts, and
    is deleted; a use case without a rate limit now (or gone) keeps its rows for the longest
    window, a day. A pass sweeps up to RATE_SWEEP_STEPS * `batch` rows in key order and goes
    on from there the next pass, so a table of many keys costs each pass the same.

    Pause history (every pause and resume) past `pause_history_retention_seconds`, a batch a
    pass; the scopes' current state is never deleted."""

    def __init__(
        self,
        store: PruneStore,
        retention_seconds: Mapping[str, float],
        *,
        batch: int,
        idempotency_retention_seconds: float,
        stats_retention_seconds: float = STATS_RETENTION_SECONDS,
        stats: SchedulerStats | None = None,
        rate_windows: Mapping[str, float] | None = None,
        pause_history_retention_seconds: float = PAUSE_HISTORY_RETENTION_SECONDS,
    ) -> None:
        self._store = store
        self._retention = dict(retention_seconds)
        self._batch = batch
        self._idempotency_retention = idempotency_retention_seconds
        self._stats_retention = stats_retention_seconds
        self._stats = stats
        self._stats_pruned_at: datetime | None = None
        self._rate_windows = dict(rate_windows or {})
        self._rate_after: tuple[str, str] | None = None
        self._pause_history_retention = pause_history_retention_seconds

    async def run_once(self, now: datetime) -> Pruned:
        jobs = 0
        for use_case, retention in self._retention.items():
            jobs += await self._drain(use_case, retention)
        keys = await self._store.prune_idempotency_keys(
            older_than_seconds=self._idempotency_retention, limit=self._batch
        )
        if self._stats is not None:
            self._stats.pruned += jobs
        return Pruned(
            jobs=jobs,
            idempotency_keys=keys,
            job_stats=await self._prune_stats(now),
            rate_buckets=await self._sweep_rate_buckets(),
            pause_history=await self._store.prune_pause_history(
                older_than_seconds=self._pause_history_retention, limit=self._batch
            ),
        )

    async def _drain(self, use_case: str, retention: float) -> int:
        total = 0
        while True:
            n = await self._store.prune_finished_jobs(
                use_case, older_than_seconds=retention, limit=self._batch
            )
            total += n
            if n < self._batch:
                return total

    async def _sweep_rate_buckets(self) -> int:
        deleted = 0
        for _ in range(RATE_SWEEP_STEPS):
            step = await self._store.prune_rate_buckets(
                self._rate_windows,
                default_window_seconds=RATE_WINDOW_MAX_SECONDS,
                after=self._rate_after,
                limit=self._batch,
            )
            deleted += step.deleted
            self._rate_after = step.last
            if step.last is None:  # the end: the next pass starts over
                break
        return deleted

    async def _prune_stats(self, now: datetime) -> int:
        last = self._stats_pruned_at
        if last is not None and (now - last).total_seconds() < STATS_PRUNE_EVERY_SECONDS:
            return 0
        self._stats_pruned_at = now
        return await self._store.prune_job_stats(older_than_seconds=self._stats_retention)
