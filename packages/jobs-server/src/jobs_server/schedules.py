"""Periodic jobs: when a schedule ticks (`Cadence`) and every rule of managing schedules
(`ScheduleService`, which the API and the dashboard call). The leader's `PeriodicJobs`
(jobs_server.scheduler.periodic) turns due ticks into jobs.

Cron expressions follow Debian cron (cronsim), read in the schedule's zone: on a
spring-forward day a tick in the skipped hour runs at the first minute after the jump (02:30
becomes 03:00); on a fall-back day a tick in the repeated hour runs once, on its first pass.
Interval schedules tick every `interval_seconds` of elapsed time from their creation, whatever
the zone.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from jobs_schema import (
    EnqueueRequest,
    JobsConfig,
    Schedule,
    ScheduleCreate,
    ScheduleDefinition,
    SchedulePage,
    ScheduleSource,
)
from jobs_schema.limits import check_text
from jobs_schema.schedules import (
    MAX_SCHEDULE_PAGE,
    MAX_SCHEDULES_PER_TENANT,
    schedule_limit_reached,
)
from jobs_server.auth import Principal
from jobs_server.clock import Clock
from jobs_server.errors import BadRequest, ConfigError, ScheduleConflict, ScheduleNotFound
from jobs_server.service import JobService
from jobs_server.store.base import NewSchedule, ScheduleStore, StoredSchedule

__all__ = [
    "Cadence",
    "ScheduleService",
    "config_schedules",
    "job_request",
    "schedule_view",
    "stored",
]


# any time will do: CronSim parses the expression when built, before reading the time
_PARSE_AT = datetime(2000, 1, 1, tzinfo=UTC)


class Cadence:
    """The ticks of one schedule, as UTC times."""

    def __init__(self, definition: ScheduleDefinition, *, anchor: datetime) -> None:
        self._cron = definition.cron
        self._zone = ZoneInfo(definition.timezone)
        interval = definition.interval_seconds
        self._step = timedelta(seconds=interval) if interval is not None else None
        self._anchor = anchor

    @staticmethod
    def check(definition: ScheduleDefinition) -> None:
        """BadRequest naming the field: an unknown zone, or a cron expression cronsim refuses."""
        try:
            ZoneInfo(definition.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise BadRequest(
                f"timezone: unknown timezone {definition.timezone!r}; give an IANA zone name "
                "such as UTC or Europe/Paris",
                field="timezone",
            ) from exc
        if definition.cron is None:
            return
        try:
            CronSim(definition.cron, _PARSE_AT)
        except CronSimError as exc:
            raise BadRequest(
                f"cron: {exc}; give five fields (minute hour day month weekday), e.g. '30 2 * * *'",
                field="cron",
                cron=definition.cron,
            ) from exc

    def next_after(self, at: datetime) -> datetime:
        """The first tick strictly after `at`."""
        if self._cron is None:
            return self._anchor + self._interval() * (self._steps_until(at) + 1)
        return next(CronSim(self._cron, at.astimezone(self._zone))).astimezone(UTC)

    def latest(
        self, now: datetime, *, since: datetime, following: datetime | None = None
    ) -> datetime:
        """The last tick from `since` (itself a tick, at or before `now`) to `now`.
        `following`, when known, is `next_after(now)` (a cron schedule's costs most)."""
        if self._cron is None:
            return max(since, self._anchor + self._interval() * self._steps_until(now))
        if following is None:
            following = self.next_after(now)
        before = next(CronSim(self._cron, following.astimezone(self._zone), reverse=True))
        last = before.astimezone(UTC)
        return last if since <= last <= now else since

    def _interval(self) -> timedelta:
        assert self._step is not None
        return self._step

    def _steps_until(self, at: datetime) -> int:
        return math.floor((at - self._anchor) / self._interval())


def _encode_cursor(tenant: str, name: str) -> str:
    """The last schedule of a page, as the next page's cursor (opaque to callers)."""
    return base64.urlsafe_b64encode(json.dumps([tenant, name]).encode()).decode()


def _decode_cursor(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    try:
        tenant, name = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(tenant, str) and isinstance(name, str):
            return check_text(tenant), check_text(name)  # made by hand: no NUL for the store
    except (ValueError, TypeError, UnicodeError):
        pass
    raise BadRequest(
        "cursor: not one this server returned; pass a page's next_cursor, or none for the "
        "first page",
        field="cursor",
    )


def job_request(definition: ScheduleDefinition, *, run_at: datetime | None) -> EnqueueRequest:
    """The enqueue one tick makes (at `run_at`; None: any tick, for JobService.template)."""
    return EnqueueRequest.model_construct(
        use_case=definition.use_case,
        job_type=definition.job_type,
        payload=definition.payload,
        run_at=run_at,
        deadline=None,
        delay_tolerance_seconds=definition.delay_tolerance_seconds,
        priority=definition.priority,
        dedup_key=definition.dedup_key,
        max_attempts=None,
        backoff=None,
    )


def stored(
    tenant: str,
    name: str,
    definition: ScheduleDefinition,
    *,
    source: ScheduleSource,
    now: datetime,
) -> StoredSchedule:
    """A new schedule row, its first tick the first after `now`."""
    first = Cadence(definition, anchor=now).next_after(now)
    return StoredSchedule(
        tenant=tenant,
        name=name,
        source=source,
        definition=definition,
        paused=False,
        anchor_at=now,
        next_run_at=first,
        created_at=now,
    )


def config_schedules(config: JobsConfig, *, now: datetime) -> list[StoredSchedule]:
    """The config file's schedules as rows; ConfigError names a bad cron expression."""
    rows = []
    for name, cfg in config.schedules.items():
        definition = ScheduleDefinition.model_validate(cfg.model_dump(exclude={"tenant"}))
        try:
            Cadence.check(definition)
        except BadRequest as exc:
            raise ConfigError(f"schedules.{name}.{exc.message}") from exc
        rows.append(stored(cfg.tenant, name, definition, source=ScheduleSource.CONFIG, now=now))
    return rows


def schedule_view(row: StoredSchedule) -> Schedule:
    d = row.definition
    return Schedule(
        tenant=row.tenant,
        name=row.name,
        source=row.source,
        cron=d.cron,
        interval_seconds=d.interval_seconds,
        timezone=d.timezone,
        use_case=d.use_case,
        job_type=d.job_type,
        payload=d.payload,
        delay_tolerance_seconds=d.delay_tolerance_seconds,
        priority=d.priority,
        missed=d.missed,
        dedup_key=d.dedup_key,
        paused=row.paused,
        next_run_at=None if row.paused else row.next_run_at,
        last_run_at=row.last_run_at,
        created_at=row.created_at,
    )


class ScheduleService:
    """Create, read, pause, resume and delete schedules, tenant-scoped like jobs: a tenant's
    token manages its own; an admin's any (naming the tenant). Schedules from the config file
    are read-only here."""

    def __init__(self, store: ScheduleStore, jobs: JobService, *, clock: Clock) -> None:
        self._store = store
        self._jobs = jobs
        self._clock = clock

    async def create(self, who: Principal, body: ScheduleCreate) -> Schedule:
        if who.tenant is None:
            raise BadRequest("create a schedule with the tenant's token; it runs as that tenant")
        definition = ScheduleDefinition.model_validate(body.model_dump(exclude={"name"}))
        Cadence.check(definition)
        now = self._clock.now()
        self._jobs.prepare(job_request(definition, run_at=now), now)  # the enqueue rules
        row = stored(who.tenant, body.name, definition, source=ScheduleSource.API, now=now)
        outcome = await self._store.create_schedule(row, limit=MAX_SCHEDULES_PER_TENANT)
        if outcome is NewSchedule.NAME_TAKEN:
            raise ScheduleConflict(
                f"tenant {who.tenant!r} has a schedule named {body.name!r} already; "
                "delete it first or pick another name",
                name=body.name,
            )
        if outcome is NewSchedule.AT_LIMIT:
            raise ScheduleConflict(
                schedule_limit_reached(who.tenant), limit=MAX_SCHEDULES_PER_TENANT
            )
        return schedule_view(row)

    async def list(
        self,
        who: Principal,
        *,
        tenant: str | None = None,
        cursor: str | None = None,
        limit: int = MAX_SCHEDULE_PAGE,
    ) -> SchedulePage:
        """A page of schedules by (tenant, name): a tenant's own, or an admin's choice of
        tenant or every tenant's; `cursor` the previous page's `next_cursor`."""
        scope = who.tenant_scope
        if scope is not None and tenant is not None and tenant != scope:
            return SchedulePage(items=[])
        after = _decode_cursor(cursor)
        rows = await self._store.list_schedules(
            tenant=scope or tenant, after=after, limit=limit + 1
        )
        more = len(rows) > limit
        items = [schedule_view(r) for r in rows[:limit]]
        last = items[-1] if more else None
        return SchedulePage(
            items=items, next_cursor=_encode_cursor(last.tenant, last.name) if last else None
        )

    async def get(self, who: Principal, name: str, *, tenant: str | None = None) -> Schedule:
        return schedule_view(await self._row(who, name, tenant))

    async def pause(self, who: Principal, name: str, *, tenant: str | None = None) -> Schedule:
        row = await self._writable(who, name, tenant, "paused")
        return await self._set_paused(row, paused=True, next_run_at=row.next_run_at)

    async def resume(self, who: Principal, name: str, *, tenant: str | None = None) -> Schedule:
        """Ticks passed while paused are not made up: the schedule goes on at its next one."""
        row = await self._writable(who, name, tenant, "resumed")
        if not row.paused:
            return schedule_view(row)
        cadence = Cadence(row.definition, anchor=row.anchor_at)
        return await self._set_paused(
            row, paused=False, next_run_at=cadence.next_after(self._clock.now())
        )

    async def delete(self, who: Principal, name: str, *, tenant: str | None = None) -> None:
        row = await self._writable(who, name, tenant, "deleted")
        if not await self._store.delete_schedule(row.tenant, row.name):
            raise ScheduleNotFound(row.tenant, row.name)

    async def _set_paused(
        self, row: StoredSchedule, *, paused: bool, next_run_at: datetime
    ) -> Schedule:
        new = await self._store.set_schedule_paused(
            row.tenant, row.name, paused=paused, next_run_at=next_run_at
        )
        if new is None:
            raise ScheduleNotFound(row.tenant, row.name)
        return schedule_view(new)

    async def _row(self, who: Principal, name: str, tenant: str | None) -> StoredSchedule:
        scope = who.tenant_scope
        owner = scope if scope is not None else tenant
        if owner is None:
            raise BadRequest("name the schedule's tenant (?tenant=...)", field="tenant")
        row = None if tenant not in (None, owner) else await self._store.get_schedule(owner, name)
        if row is None:
            raise ScheduleNotFound(owner, name)
        return row

    async def _writable(
        self, who: Principal, name: str, tenant: str | None, what: str
    ) -> StoredSchedule:
        row = await self._row(who, name, tenant)
        if row.source is ScheduleSource.CONFIG:
            raise ScheduleConflict(
                f"schedule {name!r} comes from the config file and cannot be {what} through "
                "the API; change it in the config file",
                name=name,
            )
        return row
