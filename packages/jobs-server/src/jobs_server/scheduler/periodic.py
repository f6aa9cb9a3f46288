"""Turns the due ticks of schedules into jobs, through the enqueue rules, exactly once each."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobs_schema import JobsConfig, MissedTickPolicy
from jobs_server.errors import JobsServerError
from jobs_server.schedules import Cadence, config_schedules, job_request
from jobs_server.service import JobService
from jobs_server.store.base import (
    EnqueueOutcome,
    NewJob,
    ScheduleStore,
    ScheduleTick,
    StoredSchedule,
)

__all__ = ["PeriodicJobs", "Ticked"]

logger = logging.getLogger(__name__)

LATE_AFTER_SECONDS = 60.0
BATCH = 1_000


@dataclass(frozen=True, slots=True)
class Ticked:
    schedules: int  # due schedules this pass moved on
    created: int  # jobs stored
    refused: int  # jobs the tenant's quota refused, or its dedup key folded into an active one
    lost: int  # ticks another scheduler took first


class PeriodicJobs:
    """Each pass reads up to `batch` due schedules and stores, per schedule, its job in the
    transaction that moves its next tick on (ScheduleStore.enqueue_ticks), so a tick becomes
    one job across restarts, failovers and schedulers racing.

    A tick more than `late_after_seconds` old was missed (no scheduler ran): by the schedule's
    policy, `skip` makes nothing of missed ticks, `run_once` one job for all of them (run at
    once). The last tick, if not missed, gets its job either way. So a pass makes at most two
    jobs per schedule however long the outage, and the next tick is the first after `now`.

    The config file's schedules are written to the store on the first pass."""

    def __init__(
        self,
        store: ScheduleStore,
        jobs: JobService,
        *,
        config: JobsConfig | None = None,
        batch: int = BATCH,
        late_after_seconds: float = LATE_AFTER_SECONDS,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._config = config
        self._batch = batch
        self._late_after = timedelta(seconds=late_after_seconds)

    async def run_once(self, now: datetime) -> Ticked:
        if self._config is not None:
            await self._store.sync_config_schedules(config_schedules(self._config, now=now))
            self._config = None
        due = await self._store.due_schedules(limit=self._batch)
        ticks = [self._tick(s, now) for s in due]
        quotas = {t.tenant: self._jobs.quota(t.tenant) for t in ticks}
        results = await self._store.enqueue_ticks(ticks, quotas=quotas)
        created = refused = 0
        for tick, result in zip(ticks, results, strict=True):
            if result.results:
                use_cases = [j.use_case for j in tick.jobs]
                self._jobs.stored(tick.tenant, use_cases, result.results)
            made = sum(r.outcome is EnqueueOutcome.CREATED for r in result.results)
            created += made
            refused += len(result.results) - made
        won = sum(r.won for r in results)
        return Ticked(schedules=won, created=created, refused=refused, lost=len(results) - won)

    def _tick(self, schedule: StoredSchedule, now: datetime) -> ScheduleTick:
        definition = schedule.definition
        cadence = Cadence(definition, anchor=schedule.anchor_at)
        last = cadence.latest(now, since=schedule.next_run_at)
        on_time = now - last <= self._late_after
        missed = schedule.next_run_at < last or not on_time
        runs = []
        if missed and definition.missed is MissedTickPolicy.RUN_ONCE:
            runs.append(now)
        if on_time:
            runs.append(last)
        jobs = self._jobs_for(schedule, runs, now)
        return ScheduleTick(
            tenant=schedule.tenant,
            name=schedule.name,
            expected=schedule.next_run_at,
            next_run_at=cadence.next_after(now),
            jobs=jobs,
            ran_at=last if jobs else None,
        )

    def _jobs_for(
        self, schedule: StoredSchedule, runs: list[datetime], now: datetime
    ) -> list[NewJob]:
        try:
            return [
                self._jobs.prepare(job_request(schedule.definition, run_at=at), now) for at in runs
            ]
        except JobsServerError as exc:
            # the config changed under the schedule (use case gone, say): the tick passes
            logger.warning(
                "schedule tick refused",
                extra={"tenant": schedule.tenant, "schedule": schedule.name, "error": exc.message},
            )
            return []
