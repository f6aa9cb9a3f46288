"""The statistics the dashboard reads, kept by the scheduler leader so that no page view counts
over the jobs table (migration 0002 has the tables):

- dispatches and their deadline slack (deadline - dispatch time) per minute, tenant and use
  case, summed in memory as the scheduler publishes (DispatchRollup) and added to
  job_stats_minute at each refresh: one small statement every few seconds, none per claim;
- finished jobs per minute, counted from jobs_finished_idx past a watermark, so outcomes and
  cancellations from any server process are counted without a hook or a trigger on their path;
- the active-jobs snapshot (job_counts): one GROUP BY over pending and running rows;
- the leader's last pass (scheduler_status).

A refresh runs in the background of the scheduler loop, never delaying dispatch, at most once
every `every_seconds`, and less often when it is slow (the snapshot's cost grows with the
backlog): its interval is at least ten times its last duration. Losing a refresh loses
nothing but freshness, except the dispatches summed since the last one if the leader dies."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from jobs_server.store.base import ClaimedJob, DispatchStat, JobStore, SchedulerPass

if TYPE_CHECKING:
    from jobs_server.scheduler import SchedulerStats

__all__ = ["DispatchRollup", "StatsRefresher"]

logger = logging.getLogger(__name__)

_RETENTION_SECONDS = 7 * 86_400
_PRUNE_EVERY_SECONDS = 3_600.0


@dataclass
class _Sum:
    dispatched: int = 0
    missed: int = 0
    slack_sum: float = 0.0
    slack_min: float = math.inf
    slack_max: float = -math.inf

    def add(self, slack: float, missed: bool) -> None:
        self.dispatched += 1
        self.missed += missed
        self.slack_sum += slack
        self.slack_min = min(self.slack_min, slack)
        self.slack_max = max(self.slack_max, slack)


class DispatchRollup:
    """Published jobs since the last flush, per minute, use case and tenant."""

    def __init__(self) -> None:
        self._sums: dict[tuple[datetime, str, str], _Sum] = {}

    def add(self, claimed: list[ClaimedJob], now: datetime) -> None:
        minute = now.replace(second=0, microsecond=0)
        for job in claimed:
            key = (minute, job.use_case, job.tenant)
            self._sums.setdefault(key, _Sum()).add(
                (job.deadline - now).total_seconds(), job.missed_deadline
            )

    def take(self) -> list[DispatchStat]:
        sums, self._sums = self._sums, {}
        return [
            DispatchStat(
                minute=minute,
                use_case=use_case,
                tenant=tenant,
                dispatched=s.dispatched,
                missed=s.missed,
                slack_sum=s.slack_sum,
                slack_min=s.slack_min,
                slack_max=s.slack_max,
            )
            for (minute, use_case, tenant), s in sums.items()
        ]

    def put_back(self, stats: list[DispatchStat]) -> None:
        """Stats a flush could not write, to go with the next one."""
        for st in stats:
            s = self._sums.setdefault((st.minute, st.use_case, st.tenant), _Sum())
            s.dispatched += st.dispatched
            s.missed += st.missed
            s.slack_sum += st.slack_sum
            s.slack_min = min(s.slack_min, st.slack_min)
            s.slack_max = max(s.slack_max, st.slack_max)


class SchedulerView(Protocol):
    """What a refresh reads from the scheduler."""

    @property
    def holder(self) -> str: ...

    @property
    def epoch(self) -> int | None: ...

    @property
    def stats(self) -> SchedulerStats: ...

    @property
    def rollup(self) -> DispatchRollup: ...


class StatsRefresher:
    def __init__(
        self,
        store: JobStore,
        use_cases: list[str],
        *,
        name: str,
        every_seconds: float = 2.0,
        lag_seconds: float = 5.0,
        max_window_seconds: float = 600.0,
    ) -> None:
        self._store = store
        self._use_cases = use_cases
        self._name = name
        self._every = every_seconds
        self._lag = lag_seconds
        self._max_window = max_window_seconds
        self._interval = every_seconds
        self._last = -math.inf
        self._pruned = -math.inf
        self._task: asyncio.Task[None] | None = None
        self.last_duration = 0.0

    def poke(self, scheduler: SchedulerView) -> None:
        """Start a refresh in the background if one is due and none is running."""
        if self._task is not None and not self._task.done():
            return
        if time.monotonic() - self._last < self._interval:
            return
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._refresh_logged(scheduler))

    async def _refresh_logged(self, scheduler: SchedulerView) -> None:
        try:
            await self.refresh(scheduler)
        except Exception:  # the top of this background loop: stats must never stop dispatch
            logger.exception("statistics refresh failed")

    async def refresh(self, scheduler: SchedulerView) -> None:
        started = time.monotonic()
        stats = scheduler.stats
        await self._store.record_scheduler_pass(
            self._name,
            SchedulerPass(
                holder=scheduler.holder,
                epoch=scheduler.epoch,
                last_pass_at=stats.last_pass_at,
                last_pass_seconds=stats.last_pass_seconds,
                passes=stats.passes,
                dispatched=stats.dispatched,
            ),
        )
        dispatched = scheduler.rollup.take()
        try:
            await self._store.add_dispatch_stats(dispatched)
        except BaseException:
            scheduler.rollup.put_back(dispatched)
            raise
        await self._store.roll_up_finished(
            self._name,
            use_cases=self._use_cases,
            lag_seconds=self._lag,
            max_window_seconds=self._max_window,
        )
        await self._store.refresh_job_counts(self._name)
        if time.monotonic() - self._pruned >= _PRUNE_EVERY_SECONDS:
            self._pruned = time.monotonic()
            await self._store.prune_job_stats(older_than_seconds=_RETENTION_SECONDS)
        self.last_duration = time.monotonic() - started
        self._interval = max(self._every, 10 * self.last_duration)

    async def close(self) -> None:
        """Let a running refresh finish (it holds dispatch stats), briefly."""
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            except TimeoutError:
                self._task.cancel()
