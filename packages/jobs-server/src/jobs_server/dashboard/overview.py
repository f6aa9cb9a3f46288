"""The overview page's numbers, per use case, read from the statistics tables the scheduler
keeps (jobs_server.stats): a handful of small indexed reads, whatever the size of `jobs`. A
tenant's overview is built from its own rows only."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobs_schema import JobsConfig, RateKeyState
from jobs_server.auth import Principal
from jobs_server.dashboard.charts import Chart, slack_chart, throughput_chart
from jobs_server.flow import rate_key_state
from jobs_server.scheduler import SchedulerConfig
from jobs_server.store.base import JobCounts, JobStore, MinuteStats, SchedulerStatus

__all__ = ["Overview", "UseCaseOverview", "load_overview"]

WINDOW_MINUTES = 60
RATE_KEYS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class UseCaseOverview:
    name: str
    capacity: int  # for a tenant: its running cap in the use case, if any
    pending: int
    due: int
    overdue: int
    running: int
    oldest_due_seconds: float | None
    most_urgent_slack: float | None  # deadline - now of the earliest-deadline due job
    dispatched: int
    missed: int
    succeeded: int
    dead: int
    cancelled: int
    expired: int
    mean_slack: float | None
    worst_slack: float | None
    throughput: Chart
    slack: Chart
    per_key_cap: int | None = None  # the use case's concurrency_limit_per_key
    rate_limit: str | None = None  # "10 / 1 s"
    rate_keys: tuple[RateKeyState, ...] = ()  # the busiest, for admins
    throttled: int = 0  # due jobs the rate limit holds back now, over rate_keys

    @property
    def capacity_used(self) -> float:
        return min(1.0, self.running / self.capacity) if self.capacity else 0.0


@dataclass(frozen=True, slots=True)
class Overview:
    now: datetime
    scheduler: SchedulerStatus
    use_cases: list[UseCaseOverview]

    @property
    def counts_age(self) -> float | None:
        at = self.scheduler.counts_at
        return (self.now - at).total_seconds() if at else None

    @property
    def pass_age(self) -> float | None:
        at = self.scheduler.last_pass_at
        return (self.now - at).total_seconds() if at else None


async def load_overview(store: JobStore, config: JobsConfig, who: Principal) -> Overview:
    scope = who.tenant_scope
    status = await store.get_scheduler_status(SchedulerConfig().name)
    start = status.now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)
    counts, minutes = await asyncio.gather(
        store.get_job_counts(tenant=scope), store.get_minute_stats(since=start, tenant=scope)
    )
    names = list(config.use_cases) + sorted({c.use_case for c in counts} - set(config.use_cases))
    keys = await asyncio.gather(*(_rate_keys(store, config, who, n, status.now) for n in names))
    return Overview(
        now=status.now,
        scheduler=status,
        use_cases=[
            _use_case(
                name,
                config,
                who,
                [c for c in counts if c.use_case == name],
                [m for m in minutes if m.use_case == name],
                start=start,
                now=status.now,
                rate_keys=rate_keys,
            )
            for name, rate_keys in zip(names, keys, strict=True)
        ],
    )


async def _rate_keys(
    store: JobStore, config: JobsConfig, who: Principal, name: str, now: datetime
) -> tuple[RateKeyState, ...]:
    """The busiest rate keys, for admins only: a key spans tenants."""
    uc = config.use_cases.get(name)
    if uc is None or uc.rate_limit is None or who.tenant_scope is not None:
        return ()
    buckets = await store.list_rate_buckets(
        name, per_seconds=uc.rate_limit.per_seconds, limit=RATE_KEYS_SHOWN
    )
    return tuple(rate_key_state(b, uc.rate_limit, now) for b in buckets)


def _use_case(
    name: str,
    config: JobsConfig,
    who: Principal,
    counts: list[JobCounts],
    minutes: list[MinuteStats],
    *,
    start: datetime,
    now: datetime,
    rate_keys: tuple[RateKeyState, ...] = (),
) -> UseCaseOverview:
    uc = config.use_cases.get(name)
    capacity = uc.capacity if uc else 0
    if uc and who.tenant_scope is not None and uc.per_tenant_running_cap:
        capacity = min(capacity, uc.per_tenant_running_cap)
    slots: list[MinuteStats | None] = [None] * WINDOW_MINUTES
    for m in minutes:
        i = int((m.minute - start).total_seconds() // 60)
        if 0 <= i < WINDOW_MINUTES:
            slots[i] = m
    oldest = min((c.oldest_due_run_at for c in counts if c.oldest_due_run_at), default=None)
    urgent = min((c.earliest_due_deadline for c in counts if c.earliest_due_deadline), default=None)
    dispatched = sum(m.dispatched for m in minutes)
    worst = [m.slack_min for m in minutes if m.slack_min is not None and m.dispatched]
    return UseCaseOverview(
        name=name,
        capacity=capacity,
        pending=sum(c.pending for c in counts),
        due=sum(c.due for c in counts),
        overdue=sum(c.overdue for c in counts),
        running=sum(c.running for c in counts),
        oldest_due_seconds=(now - oldest).total_seconds() if oldest else None,
        most_urgent_slack=(urgent - now).total_seconds() if urgent else None,
        dispatched=dispatched,
        missed=sum(m.missed for m in minutes),
        succeeded=sum(m.succeeded for m in minutes),
        dead=sum(m.dead for m in minutes),
        cancelled=sum(m.cancelled for m in minutes),
        expired=sum(m.expired for m in minutes),
        mean_slack=sum(m.slack_sum for m in minutes) / dispatched if dispatched else None,
        worst_slack=min(worst) if worst else None,
        throughput=throughput_chart(slots),
        slack=slack_chart(slots),
        per_key_cap=uc.concurrency_limit_per_key if uc else None,
        rate_limit=(
            f"{uc.rate_limit.starts} / {uc.rate_limit.per_seconds:g} s"
            if uc and uc.rate_limit
            else None
        ),
        rate_keys=rate_keys,
        throttled=sum(k.throttled for k in rate_keys),
    )
