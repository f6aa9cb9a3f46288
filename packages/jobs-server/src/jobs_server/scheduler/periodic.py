"""Turns the due ticks of schedules into jobs, through the enqueue rules, exactly once each."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobs_schema import JobsConfig, MissedTickPolicy, ScheduleDefinition
from jobs_server.errors import JobsServerError
from jobs_server.schedules import Cadence, config_schedules, job_request
from jobs_server.service import JobService, JobTemplate
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
# schedules whose job template is kept between passes; past it the cache starts over
TEMPLATES = 10_000


@dataclass(frozen=True, slots=True)
class Ticked:
    schedules: int  # due schedules this pass moved on
    created: int  # jobs stored
    refused: int  # jobs the tenant's quota refused, or its dedup key folded into an active one
    lost: int  # ticks another scheduler took first


class PeriodicJobs:
    """Each pass reads up to `batch` due schedules and stores, per schedule, its job in the
    transaction that moves its next tick on (ScheduleStore.enqueue_ticks, one statement for
    the pass), so a tick becomes one job across restarts, failovers and schedulers racing.

    A tick more than `late_after_seconds` old was missed (no scheduler ran): by the schedule's
    policy, `skip` makes nothing of missed ticks, `run_once` one job for all of them (run at
    once). The last tick, if not missed, gets its job either way. So a pass makes at most two
    jobs per schedule however long the outage, and the next tick is the first after `now`.

    A schedule's job is checked by the enqueue rules once (JobService.template) and kept while
    its definition stays the same: a tick then costs a new id, run_at and deadline.

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
        self._templates: dict[
            tuple[str, str], tuple[ScheduleDefinition, JobTemplate | JobsServerError]
        ] = {}

    async def run_once(self, now: datetime) -> Ticked:
        if self._config is not None:
            await self._store.sync_config_schedules(config_schedules(self._config, now=now))
            self._config = None
        due = await self._store.due_schedules(limit=self._batch)
        ticks = [self._tick(s, now) for s in due]
        quotas = {t.tenant: self._jobs.quota(t.tenant) for t in ticks}
        results = await self._store.enqueue_ticks(ticks, quotas=quotas)
        by_tenant: dict[str, tuple[list[NewJob], list[EnqueueOutcome]]] = {}
        for tick, result in zip(ticks, results, strict=True):
            if result.outcomes:
                jobs, outcomes = by_tenant.setdefault(tick.tenant, ([], []))
                jobs += tick.jobs
                outcomes += result.outcomes
        created = refused = 0
        for tenant, (jobs, outcomes) in by_tenant.items():
            self._jobs.stored(tenant, jobs, outcomes)
            made = sum(o is EnqueueOutcome.CREATED for o in outcomes)
            created += made
            refused += len(outcomes) - made
        won = sum(r.won for r in results)
        return Ticked(schedules=won, created=created, refused=refused, lost=len(results) - won)

    def _tick(self, schedule: StoredSchedule, now: datetime) -> ScheduleTick:
        definition = schedule.definition
        cadence = Cadence(definition, anchor=schedule.anchor_at)
        following = cadence.next_after(now)
        last = cadence.latest(now, since=schedule.next_run_at, following=following)
        on_time = now - last <= self._late_after
        missed = schedule.next_run_at < last or not on_time
        runs = []
        if missed and definition.missed is MissedTickPolicy.RUN_ONCE:
            runs.append(now)
        if on_time:
            runs.append(last)
        template = self._template(schedule) if runs else None
        jobs = [self._jobs.job_of(template, at) for at in runs] if template is not None else []
        return ScheduleTick(
            tenant=schedule.tenant,
            name=schedule.name,
            expected=schedule.next_run_at,
            next_run_at=following,
            jobs=jobs,
            ran_at=last if jobs else None,
        )

    def _template(self, schedule: StoredSchedule) -> JobTemplate | None:
        key = (schedule.tenant, schedule.name)
        definition = schedule.definition
        cached = self._templates.get(key)
        if cached is None or (cached[0] is not definition and cached[0] != definition):
            made: JobTemplate | JobsServerError
            try:
                made = self._jobs.template(job_request(definition, run_at=None))
            except JobsServerError as exc:
                made = exc
            if len(self._templates) >= TEMPLATES:
                self._templates.clear()
            self._templates[key] = cached = (definition, made)
        made = cached[1]
        if isinstance(made, JobsServerError):
            # the config changed under the schedule (use case gone, say): the tick passes
            logger.warning(
                "schedule tick refused",
                extra={"tenant": schedule.tenant, "schedule": schedule.name, "error": made.message},
            )
            return None
        return made
