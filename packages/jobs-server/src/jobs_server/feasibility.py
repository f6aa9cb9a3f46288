"""Deadline feasibility at enqueue, the forecast per use case and the slots-needed gauge.

Where the numbers come from (docs/feasibility.md has the whole story):

- the enqueue statements, and statement-level triggers on `jobs` for updates and deletes
  (migrations 0012, 0022), append what each statement changed to two delta tables: pending
  jobs per (use case, priority, deadline second), and per use case running jobs and running
  attempts ended with their time from dispatch to end;
- the leader's `FeasibilityFolder`, about once a second, folds the deltas into the summary
  (`feasibility_pending`, `feasibility_load`), measures throughput and mean duration over a
  rolling window from the growing counters, and exports `jobs_worker_slots_needed`;
- every API process's `Feasibility` reads a use case's summary at most once a second (one read
  shared by every request meanwhile) and answers each enqueue in Python from prefix sums
  (jobs_server.forecast): no statement on the enqueue path counts anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from jobs_schema import ForecastBucket, Job, JobsConfig, UseCaseConfig, UseCaseForecast
from jobs_server.errors import UnknownUseCase
from jobs_server.forecast import (
    ArrivalMeter,
    Arrivals,
    Backlog,
    by_horizon,
    drain_rate,
    expected_wait,
    expected_wait_with_arrivals,
    projected_misses,
    slots_needed,
)
from jobs_server.metrics import ServerMetrics
from jobs_server.store.base import (
    FeasibilitySnapshot,
    FeasibilityStore,
    JobCounts,
    UseCaseLoad,
    UseCaseRates,
)

__all__ = [
    "Estimate",
    "Feasibility",
    "FeasibilityFolder",
    "Folded",
    "RateWindow",
    "SummaryReads",
    "TenantLoad",
    "View",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Estimate:
    expected_start_at: datetime
    at_risk: bool


@dataclass(frozen=True, slots=True)
class TenantLoad:
    """A tenant's jobs in a use case with a per-tenant running cap."""

    pending: int
    running: int
    cap: int


@dataclass(frozen=True, slots=True)
class View:
    """One use case's summary as read, ready for estimates."""

    snapshot: FeasibilitySnapshot
    backlog: Backlog
    capacity: int
    rate: float
    arrivals: Arrivals | None = None

    @classmethod
    def of(
        cls,
        snapshot: FeasibilitySnapshot,
        uc: UseCaseConfig,
        *,
        default: float,
        arrivals: Arrivals | None = None,
    ) -> View:
        rate = drain_rate(
            uc.capacity,
            throughput=snapshot.throughput,
            mean_duration=snapshot.mean_duration,
            default_duration=default,
        )
        return cls(snapshot, Backlog(snapshot.pending), uc.capacity, rate, arrivals)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.snapshot.running)

    def duration(self) -> float:
        """The mean duration, or what the drain rate implies without one."""
        mean = self.snapshot.mean_duration
        return mean if mean is not None and mean > 0 else self.capacity / self.rate

    def estimate(
        self,
        job: Job,
        now: datetime,
        *,
        also_ahead: int = 0,
        tenant: TenantLoad | None = None,
        margin: float = 0.0,
    ) -> Estimate:
        """The expected start; at risk when it, plus `margin` times the expected wait in the
        queue (the estimate's own uncertainty grows with the wait), falls after the deadline."""
        deadline = job.deadline.timestamp()
        summed = self.backlog.ahead(job.priority, deadline)
        wait = expected_wait_with_arrivals(
            summed + also_ahead,
            free=self.free,
            rate=self.rate,
            slack=deadline - max(now, job.run_at).timestamp(),
            arrivals=self.arrivals,
            priority=job.priority,
        )
        if tenant is not None:
            # The tenant's own jobs ahead, taken as its share of the backlog ahead (the summary
            # is not per tenant), start at most `cap` at a time.
            share = tenant.pending / self.backlog.total if self.backlog.total else 1.0
            mine = min(tenant.pending, round(share * summed)) + also_ahead
            rate = min(self.rate, tenant.cap / self.duration())
            free = max(0, tenant.cap - tenant.running)
            wait = max(wait, expected_wait(mine, free=free, rate=rate))
        start = max(now + timedelta(seconds=wait), job.run_at)
        queued = start - max(now, job.run_at)
        return Estimate(expected_start_at=start, at_risk=start + margin * queued > job.deadline)

    def forecast(self, now: datetime) -> UseCaseForecast:
        at = now.timestamp()
        snap = self.snapshot
        rows = by_horizon(self.backlog, now=at, free=self.free, rate=self.rate)
        return UseCaseForecast(
            use_case=snap.use_case,
            measured_at=now,
            capacity=self.capacity,
            running=snap.running,
            pending=self.backlog.total,
            throughput=snap.throughput,
            mean_duration_seconds=snap.mean_duration,
            drain_rate=self.rate,
            projected_misses=sum(m for _, _, m in rows),
            worker_slots_needed=self.slots_needed(now),
            backlog=[ForecastBucket(horizon=h, pending=n, projected_misses=m) for h, n, m in rows],
        )

    def slots_needed(self, now: datetime, *, lead: float = 0.0) -> int:
        return slots_needed(
            self.backlog,
            now=now.timestamp(),
            mean_duration=self.duration(),
            running=self.snapshot.running,
            lead=lead,
        )

    def projected_misses(self, now: datetime) -> int:
        return projected_misses(self.backlog, now=now.timestamp(), free=self.free, rate=self.rate)


@dataclass
class _Entry(Generic[T]):
    value: T | None = None
    read_at: float = -math.inf  # monotonic
    reading: asyncio.Future[T] | None = None


class _Shared(Generic[T]):
    """Values read at most once per `max_age` seconds each: one read in flight per key, which
    every caller asking meanwhile waits for; a failed read is not kept."""

    def __init__(self, max_age: float, monotonic: Callable[[], float]) -> None:
        self._max_age = max_age
        self._monotonic = monotonic
        self._entries: dict[str, _Entry[T]] = {}

    async def get(self, key: str, read: Callable[[], Awaitable[T]]) -> T:
        entry = self._entries.setdefault(key, _Entry())
        if entry.value is not None and self._monotonic() - entry.read_at < self._max_age:
            return entry.value
        if entry.reading is not None:
            return await asyncio.shield(entry.reading)
        reading = entry.reading = asyncio.get_running_loop().create_future()
        try:
            value = await read()
            entry.value, entry.read_at = value, self._monotonic()
            reading.set_result(value)
        except Exception as exc:
            reading.set_exception(exc)
            reading.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        except BaseException:
            reading.cancel()  # this request was cancelled: its waiters' reads fail with it
            raise
        finally:
            entry.reading = None
        return value


class SummaryReads(Protocol):
    """What the API side reads: the summary, and the leader's active-jobs snapshot (for the
    per-tenant running cap)."""

    async def get_feasibility(self, use_case: str) -> FeasibilitySnapshot: ...

    async def get_job_counts(self, *, tenant: str | None) -> list[JobCounts]: ...


class Feasibility:
    """The API side: estimates for enqueue answers and the forecast, from each use case's
    summary read at most once per `max_age` seconds (monotonic), shared by every request."""

    def __init__(
        self,
        store: SummaryReads,
        config: JobsConfig,
        *,
        default_duration: float,
        max_age: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        risk_margin: float = 0.0,
    ) -> None:
        self._store = store
        self._margin = risk_margin
        self._config = config
        self._default = default_duration
        self._views: _Shared[View] = _Shared(max_age, monotonic)
        self._meters: dict[str, ArrivalMeter] = {}
        self._tenants: _Shared[dict[str, JobCounts]] = _Shared(max_age, monotonic)

    async def view(self, use_case: str, now: datetime | None = None) -> View:
        """The use case's view; with `now`, each new read also measures the arrivals since
        the last one (what grew in the backlog), which the estimates count as going ahead."""
        uc = self._config.use_cases.get(use_case)
        if uc is None:
            raise UnknownUseCase(use_case, sorted(self._config.use_cases))

        async def read() -> View:
            snapshot = await self._store.get_feasibility(use_case)
            arrivals = None
            if now is not None:
                meter = self._meters.setdefault(use_case, ArrivalMeter())
                arrivals = meter.add(now.timestamp(), snapshot.pending)
            return View.of(snapshot, uc, default=self._default, arrivals=arrivals)

        return await self._views.get(use_case, read)

    async def _tenant_load(self, tenant: str, use_case: str) -> TenantLoad | None:
        """The tenant's pending and running jobs in a use case with a per-tenant running cap,
        from the leader's snapshot (job_counts); None: no cap."""
        cap = self._config.use_cases[use_case].per_tenant_running_cap
        if cap is None:
            return None

        async def read() -> dict[str, JobCounts]:
            return {c.use_case: c for c in await self._store.get_job_counts(tenant=tenant)}

        counts = (await self._tenants.get(tenant, read)).get(use_case)
        if counts is None:
            return TenantLoad(pending=0, running=0, cap=cap)
        return TenantLoad(pending=counts.pending, running=counts.running, cap=cap)

    async def estimates(self, jobs: Sequence[Job | None], now: datetime) -> list[Estimate | None]:
        """One estimate per job (None for None). Jobs of the same call count each other as
        work ahead by claim order: the summary has not seen them yet."""
        views: dict[str, View] = {}
        tenants: dict[tuple[str, str], TenantLoad | None] = {}
        for job in jobs:
            if job is not None and job.use_case not in views:
                views[job.use_case] = await self.view(job.use_case, now)
            if job is not None and (job.tenant, job.use_case) not in tenants:
                tenants[(job.tenant, job.use_case)] = await self._tenant_load(
                    job.tenant, job.use_case
                )
        within = _ahead_within(jobs)
        return [
            None
            if job is None
            else views[job.use_case].estimate(
                job,
                now,
                also_ahead=within[i],
                tenant=tenants[(job.tenant, job.use_case)],
                margin=self._margin,
            )
            for i, job in enumerate(jobs)
        ]

    async def forecast(self, use_case: str, now: datetime) -> UseCaseForecast:
        return (await self.view(use_case)).forecast(now)


def _ahead_within(jobs: Sequence[Job | None]) -> list[int]:
    """For each job, the others of the list claimed before it (same use case, a higher class,
    or the same class and a deadline second at or before its own, earlier in the list)."""
    out = [0] * len(jobs)
    if len(jobs) < 2:
        return out
    keyed = sorted(
        (
            (j.use_case, -j.priority, math.floor(j.deadline.timestamp()), i)
            for i, j in enumerate(jobs)
            if j is not None
        ),
    )
    seen_uc, before = None, 0
    for uc, _p, _b, i in keyed:
        if uc != seen_uc:
            seen_uc, before = uc, 0
        out[i] = before
        before += 1
    return out


# -- the leader's side ------------------------------------------------------------------------


@dataclass
class RateWindow:
    """Throughput and mean duration of one use case from its growing counters, over the last
    `seconds` of samples (the first sample of a leader measures nothing yet)."""

    seconds: float = 60.0
    samples: deque[tuple[float, int, float]] = field(default_factory=deque)

    def add(self, at: float, finished: int, busy: float) -> tuple[float, float | None] | None:
        """(throughput, mean duration or None when no attempt ended) from the oldest sample
        kept to this one; None until two samples span time."""
        if self.samples and finished < self.samples[-1][1]:
            self.samples.clear()  # counters went back (a rebuilt or recreated store)
        self.samples.append((at, finished, busy))
        while len(self.samples) > 2 and at - self.samples[1][0] >= self.seconds:
            self.samples.popleft()
        t0, f0, b0 = self.samples[0]
        if at - t0 <= 0:
            return None
        ended = finished - f0
        mean = (busy - b0) / ended if ended > 0 else None
        return ended / (at - t0), mean


@dataclass(frozen=True, slots=True)
class Folded:
    use_cases: int
    rates_written: int


class FeasibilityFolder:
    """Folds the triggers' deltas into the summary, measures the rates, and exports the
    slots-needed gauges: one pass about every second, on the leader only."""

    def __init__(
        self,
        store: FeasibilityStore,
        use_cases: Mapping[str, UseCaseConfig],
        *,
        default_duration: float,
        metrics: ServerMetrics | None = None,
        window_seconds: float = 60.0,
        lead: float = 0.0,
    ) -> None:
        self._lead = lead
        self._store = store
        self._use_cases = use_cases
        self._default = default_duration
        self._metrics = metrics
        self._window = window_seconds
        self._windows: dict[str, RateWindow] = {}
        self._rebuilt = False
        # the last mean a window measured: kept while a window sees no attempt end
        self._means: dict[str, float] = {}

    async def run_once(self, now: datetime) -> Folded:
        loads = await self._store.fold_feasibility(rebuild=not self._rebuilt)
        self._rebuilt = True
        rates = [r for r in (self._measure(load, now) for load in loads) if r is not None]
        await self._store.set_feasibility_rates(rates)
        if self._metrics is not None:
            await self._export(now)
        return Folded(len(loads), len(rates))

    def _measure(self, load: UseCaseLoad, now: datetime) -> UseCaseRates | None:
        window = self._windows.setdefault(load.use_case, RateWindow(self._window))
        measured = window.add(now.timestamp(), load.finished, load.busy_seconds)
        if measured is None:
            return None
        throughput, mean = measured
        if mean is not None:
            self._means[load.use_case] = mean
        return UseCaseRates(
            use_case=load.use_case,
            throughput=throughput,
            mean_duration=self._means.get(load.use_case),
        )

    async def _export(self, now: datetime) -> None:
        assert self._metrics is not None
        for name, uc in self._use_cases.items():
            view = View.of(await self._store.get_feasibility(name), uc, default=self._default)
            self._metrics.set_feasibility(
                name,
                slots_needed=view.slots_needed(now, lead=self._lead),
                at_risk=view.projected_misses(now),
            )
