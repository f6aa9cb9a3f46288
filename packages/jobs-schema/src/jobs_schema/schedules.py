"""Periodic jobs: a schedule enqueues one job per tick of a cron expression or an interval.

A schedule comes from the config file (`[schedules.<name>]`, read-only through the API) or
from the API (tenant-scoped like jobs). Ranges:

- `cron`: a five-field cron expression (Debian cron's semantics, checked by the server);
  `interval_seconds`: a whole number of seconds from 1 to 366 days. Exactly one of the two.
- `timezone`: an IANA zone name (e.g. `Europe/Paris`), default UTC; cron ticks are read in it.
  The server checks it against its tz database (400 when unknown).
- `missed`: what a tick missed while no scheduler ran becomes: `skip` (nothing, the schedule
  goes on at its next tick) or `run_once` (one job for all of them, then on schedule).
- A tenant has at most `MAX_SCHEDULES_PER_TENANT` schedules made through the API (409 past
  it); the config file's are the operator's and do not count.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs_schema.limits import CheckedPayload, JsonInt, Key, Payload, Text, WholeNumber

__all__ = [
    "MAX_INTERVAL_SECONDS",
    "MAX_SCHEDULES_PER_TENANT",
    "MAX_SCHEDULE_PAGE",
    "MissedTickPolicy",
    "Schedule",
    "ScheduleConfig",
    "ScheduleCreate",
    "ScheduleDefinition",
    "SchedulePage",
    "ScheduleSource",
    "schedule_limit_reached",
]

MAX_INTERVAL_SECONDS = 366 * 86_400
# A tenant's schedules from the API: the leader's periodic pass and a tenant's schedule list
# stay bounded whatever one tenant creates (each tick is an enqueue, under its quota too).
MAX_SCHEDULES_PER_TENANT = 1000
MAX_SCHEDULE_PAGE = 1000  # schedules a page of the list, at most (and by default)


def schedule_limit_reached(tenant: str) -> str:
    """The refusal of one schedule too many (the server's and the test kit's)."""
    return (
        f"tenant {tenant!r} has {MAX_SCHEDULES_PER_TENANT} schedules, the most a tenant may "
        "create through the API; delete one it no longer needs first"
    )


class MissedTickPolicy(StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"


class ScheduleSource(StrEnum):
    CONFIG = "config"
    API = "api"


Zone = Annotated[Text, Field(min_length=1, max_length=64)]
CronText = Annotated[Text, Field(min_length=1, max_length=200)]


class ScheduleDefinition(BaseModel):
    """When and what a schedule enqueues: the config file's `[schedules.<name>]` (with a
    tenant) and the body of a create (without one: the token's)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            # exactly one given, and not null
            "oneOf": [
                {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
                {
                    "required": ["interval_seconds"],
                    "properties": {"interval_seconds": {"type": "integer"}},
                },
            ],
        },
    )

    cron: CronText | None = Field(default=None, description="five-field cron expression")
    interval_seconds: (
        Annotated[int, Field(ge=1, le=MAX_INTERVAL_SECONDS, strict=True), WholeNumber] | None
    ) = None
    timezone: Zone = "UTC"
    use_case: Key
    job_type: Key
    payload: CheckedPayload = Field(default_factory=dict)
    delay_tolerance_seconds: float | None = Field(default=None, ge=0, le=365 * 86_400, strict=True)
    priority: JsonInt = Field(default=0, ge=-1000, le=1000, strict=True)
    missed: MissedTickPolicy = MissedTickPolicy.SKIP
    dedup_key: Key | None = Field(
        default=None,
        description="each tick's job takes this dedup key: while the last one is still pending "
        "or running, a tick makes none",
    )

    @model_validator(mode="after")
    def _one_cadence(self) -> ScheduleDefinition:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError(
                "give exactly one of cron (e.g. '0 * * * *') and interval_seconds (e.g. 60)"
            )
        return self


class ScheduleConfig(ScheduleDefinition):
    """`[schedules.<name>]` of the config file: the definition and the tenant it runs for."""

    tenant: Key


class ScheduleCreate(ScheduleDefinition):
    """A schedule created through the API, for the token's tenant."""

    name: Key


class Schedule(BaseModel):
    """A schedule as the API shows it, with its last and next run."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    name: str
    source: ScheduleSource
    cron: str | None
    interval_seconds: int | None
    timezone: str
    use_case: str
    job_type: str
    payload: Payload
    delay_tolerance_seconds: float | None
    priority: int
    missed: MissedTickPolicy
    dedup_key: str | None
    paused: bool
    next_run_at: datetime | None = Field(description="the next tick; null while paused")
    last_run_at: datetime | None = Field(description="the tick of the last job it enqueued")
    created_at: datetime


class SchedulePage(BaseModel):
    """By tenant, then name. Pass `next_cursor` back as `cursor` for the next page; None: no
    more (a server before pages answered with every schedule and no cursor)."""

    model_config = ConfigDict(frozen=True)

    items: list[Schedule]
    next_cursor: str | None = None
