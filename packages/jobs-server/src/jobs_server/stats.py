"""The statistics the dashboard reads, kept by the scheduler leader so that no page view counts
over the jobs table (migration 0002 has the tables):

- dispatches and their deadline slack (deadline - dispatch time) per minute, tenant and use
  case, summed in memory as the scheduler publishes (DispatchRollup) and added to
  job_stats_minute at each refresh: one small statement every few seconds, none per claim;
- finished jobs per minute, counted from jobs_finished_idx past a watermark, so outcomes and
  cancellations from any server process are counted without a hook or a trigger on their path;
- the active-jobs snapshot (job_counts): one GROUP BY over pending and running rows;
- the leader's last pass (scheduler_status).

`StatsRefresher.run_once(now)` is one refresh; the scheduler runs it in the background of its
loop (never delaying dispatch) every few seconds, and the refresher skips a turn when it is
slow (the snapshot's cost grows with the backlog): it refreshes no more often than ten times
its last duration. Losing a refresh loses nothing but freshness, except the dispatches summed
since the last one if the leader dies.

`SchedulerStats` and `DispatchRollup` live here, not in the scheduler: the dispatcher adds to
them, the refresher reads them, and neither module imports the other's."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from jobs_server.store.base import (
    ClaimedJob,
    DispatchStat,
    LeaderLease,
    SchedulerPass,
    StatsStore,
)

__all__ = ["DispatchRollup", "LeaseView", "Refreshed", "SchedulerStats", "StatsRefresher"]

logger = logging.getLogger(__name__)


@dataclass
class SchedulerStats:
    """What this process's scheduler did since it started (the dispatcher, reaper and pruner
    add to it; the refresher records it for the dashboard)."""

    passes: int = 0
    dispatched: int = 0
    deadline_misses: int = 0
    publish_failures: int = 0
    released: int = 0
    reaped: int = 0
    pruned: int = 0
    last_pass_at: datetime | None = None
    last_pass_seconds: float = 0.0
    dispatched_by_use_case: dict[str, int] = field(default_factory=dict)


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


class LeaseView(Protocol):
    """Who leads, as the refresher records it (the scheduler's Elector is one)."""

    @property
    def holder(self) -> str: ...

    @property
    def lease(self) -> LeaderLease | None: ...


@dataclass(frozen=True, slots=True)
class Refreshed:
    dispatch_rows: int  # (minute, use case, tenant) sums written
    finished_rolled_up: int
    seconds: float


class StatsRefresher:
    """Records the last pass, flushes the dispatch rollup, rolls up finished jobs and refreshes
    the active-jobs snapshot."""

    def __init__(
        self,
        store: StatsStore,
        use_cases: list[str],
        *,
        name: str,
        lease: LeaseView,
        stats: SchedulerStats,
        rollup: DispatchRollup,
        lag_seconds: float = 5.0,
        max_window_seconds: float = 600.0,
    ) -> None:
        self._store = store
        self._use_cases = use_cases
        self._name = name
        self._lease = lease
        self._stats = stats
        self._rollup = rollup
        self._lag = lag_seconds
        self._max_window = max_window_seconds
        self._not_before: datetime | None = None
        self.last_duration = 0.0

    async def run_once(self, now: datetime) -> Refreshed | None:
        """One refresh; None when skipped because the last one was slow."""
        if self._not_before is not None and now < self._not_before:
            return None
        started = time.monotonic()
        await self._record_pass()
        dispatched = self._rollup.take()
        try:
            await self._store.add_dispatch_stats(dispatched)
        except BaseException:
            self._rollup.put_back(dispatched)
            raise
        rolled = await self._store.roll_up_finished(
            self._name,
            use_cases=self._use_cases,
            lag_seconds=self._lag,
            max_window_seconds=self._max_window,
        )
        await self._store.refresh_job_counts(self._name)
        self.last_duration = time.monotonic() - started
        self._not_before = now + timedelta(seconds=10 * self.last_duration)
        return Refreshed(len(dispatched), rolled, self.last_duration)

    async def _record_pass(self) -> None:
        lease, stats = self._lease.lease, self._stats
        await self._store.record_scheduler_pass(
            self._name,
            SchedulerPass(
                holder=self._lease.holder,
                epoch=lease.epoch if lease else None,
                last_pass_at=stats.last_pass_at,
                last_pass_seconds=stats.last_pass_seconds,
                passes=stats.passes,
                dispatched=stats.dispatched,
            ),
        )
