"""The in-memory pauses and schedules of `jobs_sdk.testing`: the server's rules for a tenant
token (the fake's tenant), on dicts, without I/O. They share the fake jobs' tenant, use cases
and clock. The sync and async namespaces of the fake clients both sit on these.

What a fake cannot do as the server does: it parses no cron expression (the server's cron
library is not a dependency of the SDK), so a cron schedule is accepted as the schema allows
and shows no `next_run_at`; an interval schedule shows its next tick. Nothing ticks: no job is
enqueued by a schedule, and a pause stops nothing (nothing runs jobs in a fake)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobs_schema import (
    ErrorCode,
    PauseList,
    PauseRequest,
    PauseState,
    Schedule,
    ScheduleCreate,
    ScheduleSource,
)
from jobs_schema.pauses import MAX_PAUSE_HISTORY
from jobs_schema.schedules import MAX_SCHEDULES_PER_TENANT, schedule_limit_reached
from jobs_sdk._fake import FakeJobs
from jobs_sdk._http import _validated
from jobs_sdk.errors import Conflict, Forbidden, NotFound, ValidationFailed
from jobs_sdk.schedules import ScheduleOptions

__all__ = ["FakePauseBook", "FakeScheduleBook"]


@dataclass
class FakePauseBook:
    """The pauses of one tenant token: its own tenant, in every use case or in one."""

    jobs: FakeJobs
    _states: dict[tuple[str, str], PauseState] = field(default_factory=dict)
    _history: list[PauseState] = field(default_factory=list)  # oldest first

    def pause(self, use_case: str | None, tenant: str | None, reason: str | None) -> PauseState:
        scope = self._scope(use_case, tenant, reason)
        current = self._states.get(scope)
        if current is not None and current.paused:
            return current.model_copy(update={"changed": False})
        return self._change(scope, paused=True, reason=reason)

    def resume(self, use_case: str | None, tenant: str | None, reason: str | None) -> PauseState:
        scope = self._scope(use_case, tenant, reason)
        current = self._states.get(scope)
        if current is None:
            return PauseState(
                use_case=scope[0] or None,
                tenant=scope[1],
                paused=False,
                changed=False,
                changed_by=None,
                changed_at=None,
                reason=None,
            )
        if not current.paused:
            return current.model_copy(update={"changed": False})
        return self._change(scope, paused=False, reason=reason)

    def list(self) -> PauseList:
        paused = [s.model_copy(update={"changed": False}) for _, s in sorted(self._states.items())]
        return PauseList(
            pauses=[s for s in paused if s.paused],
            history=self._history[::-1][:MAX_PAUSE_HISTORY],
        )

    def _scope(
        self, use_case: str | None, tenant: str | None, reason: str | None
    ) -> tuple[str, str]:
        """(use case or "", tenant), as the server's PauseService scopes a tenant token."""
        req = _validated(PauseRequest, {"use_case": use_case, "tenant": tenant, "reason": reason})
        own = self.jobs.tenant
        if req.tenant is not None and req.tenant != own:
            raise Forbidden(
                f"a tenant token pauses and resumes its own tenant only ({own!r})",
                code=ErrorCode.FORBIDDEN,
                status=403,
            )
        if req.use_case is not None:
            self.jobs.check_use_case(req.use_case)
        return req.use_case or "", own

    def _change(self, scope: tuple[str, str], *, paused: bool, reason: str | None) -> PauseState:
        state = PauseState(
            use_case=scope[0] or None,
            tenant=scope[1],
            paused=paused,
            changed=True,
            changed_by=f"tenant:{self.jobs.tenant}",
            changed_at=self.jobs.clock(),
            reason=reason,
        )
        self._states[scope] = state
        self._history.append(state)
        return state


@dataclass
class FakeScheduleBook:
    """The schedules of one tenant token, all made through the API (none from a config file)."""

    jobs: FakeJobs
    _schedules: dict[str, Schedule] = field(default_factory=dict)

    def create(self, name: str, use_case: str, job_type: str, options: ScheduleOptions) -> Schedule:
        body = _validated(
            ScheduleCreate, {"name": name, "use_case": use_case, "job_type": job_type, **options}
        )
        _check_zone(body.timezone)
        self.jobs.check_use_case(body.use_case, body.job_type)
        if len(self._schedules) >= MAX_SCHEDULES_PER_TENANT:
            raise Conflict(
                schedule_limit_reached(self.jobs.tenant),
                code=ErrorCode.CONFLICT,
                status=409,
                details={"limit": MAX_SCHEDULES_PER_TENANT},
            )
        if body.name in self._schedules:
            raise Conflict(
                f"tenant {self.jobs.tenant!r} has a schedule named {body.name!r} already; "
                "delete it first or pick another name",
                code=ErrorCode.CONFLICT,
                status=409,
                details={"name": body.name},
            )
        now = self.jobs.clock()
        schedule = Schedule(
            tenant=self.jobs.tenant,
            name=body.name,
            source=ScheduleSource.API,
            cron=body.cron,
            interval_seconds=body.interval_seconds,
            timezone=body.timezone,
            use_case=body.use_case,
            job_type=body.job_type,
            payload=body.payload,
            delay_tolerance_seconds=body.delay_tolerance_seconds,
            priority=body.priority,
            missed=body.missed,
            dedup_key=body.dedup_key,
            paused=False,
            next_run_at=_next_tick(body.interval_seconds, anchor=now, after=now),
            last_run_at=None,
            created_at=now,
        )
        self._schedules[body.name] = schedule
        return schedule

    def list(self, tenant: str | None) -> list[Schedule]:
        if tenant not in (None, self.jobs.tenant):
            return []
        return [s for _, s in sorted(self._schedules.items())]

    def get(self, name: str, tenant: str | None) -> Schedule:
        schedule = self._schedules.get(name) if tenant in (None, self.jobs.tenant) else None
        if schedule is None:
            owner = tenant or self.jobs.tenant
            raise NotFound(
                f"schedule {name!r} of tenant {owner!r} not found",
                code=ErrorCode.NOT_FOUND,
                status=404,
                details={"name": name},
            )
        return schedule

    def pause(self, name: str, tenant: str | None) -> Schedule:
        schedule = self.get(name, tenant)
        return self._set(schedule, paused=True, next_run_at=None)

    def resume(self, name: str, tenant: str | None) -> Schedule:
        """Ticks passed while paused are not made up: the schedule goes on at its next one."""
        schedule = self.get(name, tenant)
        if not schedule.paused:
            return schedule
        now = self.jobs.clock()
        tick = _next_tick(schedule.interval_seconds, anchor=schedule.created_at, after=now)
        return self._set(schedule, paused=False, next_run_at=tick)

    def delete(self, name: str, tenant: str | None) -> None:
        del self._schedules[self.get(name, tenant).name]

    def _set(self, schedule: Schedule, *, paused: bool, next_run_at: datetime | None) -> Schedule:
        changed = schedule.model_copy(update={"paused": paused, "next_run_at": next_run_at})
        self._schedules[schedule.name] = changed
        return changed


def _check_zone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed(
            f"timezone: unknown timezone {name!r}; give an IANA zone name such as UTC or "
            "Europe/Paris",
            code=ErrorCode.VALIDATION,
            status=400,
            details={"field": "timezone"},
        ) from exc


def _next_tick(interval: int | None, *, anchor: datetime, after: datetime) -> datetime | None:
    """An interval schedule's first tick strictly after `after`; None for cron (see above)."""
    if interval is None:
        return None
    step = timedelta(seconds=interval)
    return anchor + step * (math.floor((after - anchor) / step) + 1)
