"""Feasibility at enqueue and the forecast, end to end in memory: JobService over the
InMemoryJobStore, the leader's FeasibilityFolder measuring rates, a ManualClock."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest

from jobs_schema import EnqueueRequest, JobsConfig
from jobs_server.auth import Principal, Role
from jobs_server.clock import ManualClock
from jobs_server.errors import JobConflict, StoreUnavailable, UseCaseNotFound
from jobs_server.feasibility import Feasibility, FeasibilityFolder, RateWindow
from jobs_server.metrics import ServerMetrics
from jobs_server.service import JobService
from jobs_server.store.base import LeaderLease, SucceededAttempt
from jobs_server.store.memory import InMemoryJobStore

TENANT = Principal(role=Role.TENANT, tenant="acme")


def config(capacity: int, *, tenant_cap: int | None = None) -> JobsConfig:
    uc = {"queue": "q", "capacity": capacity, "per_tenant_running_cap": tenant_cap}
    return JobsConfig.model_validate({"use_cases": {"uc": uc, "other": {"queue": "o"}}})


class World:
    """A use case driven by hand: enqueue, claim within capacity, complete, fold."""

    def __init__(self, capacity: int, *, tenant_cap: int | None = None) -> None:
        self.tenant_cap = tenant_cap
        self.clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
        self.store = InMemoryJobStore(self.clock)
        self.capacity = capacity
        self.metrics = ServerMetrics()
        self.folder = FeasibilityFolder(
            self.store, config(capacity).use_cases, default_duration=1.0, metrics=self.metrics
        )
        self.jobs = self.service(capacity)
        self.leader: LeaderLease | None = None
        self.running: list[SucceededAttempt] = []

    def service(self, capacity: int, *, risk_margin: float = 0.0) -> JobService:
        cfg = config(capacity, tenant_cap=self.tenant_cap)
        feasibility = Feasibility(
            self.store, cfg, default_duration=1.0, max_age=0, risk_margin=risk_margin
        )
        return JobService(
            self.store,
            cfg,
            default_quota=None,
            max_payload_bytes=65536,
            clock=self.clock,
            feasibility=feasibility,
        )

    async def enqueue(
        self, n: int, *, within: float, priority: int = 0, tenant: str = "acme"
    ) -> None:
        reqs = [self.req(within, priority) for _ in range(n)]
        for i in range(0, n, 1000):
            await self.jobs.enqueue_batch(tenant, reqs[i : i + 1000])

    def req(self, within: float, priority: int = 0) -> EnqueueRequest:
        return EnqueueRequest(
            use_case="uc",
            job_type="t",
            payload={},
            delay_tolerance_seconds=within,
            priority=priority,
        )

    async def dispatch(self) -> int:
        if self.leader is None:
            epoch = await self.store.acquire_leadership("main", "s", ttl=10**6)
            assert epoch is not None
            self.leader = LeaderLease("main", "s", epoch)
        claimed = await self.store.claim_due_jobs(
            "uc",
            capacity=self.capacity,
            limit=10_000,
            lease_seconds=600,
            leader=self.leader,
            per_tenant_cap=None,
        )
        self.running += [SucceededAttempt(c.id, c.attempt, c.lease_token, None) for c in claimed]
        return len(claimed)

    async def complete_all(self) -> None:
        await self.store.complete_attempts(self.running)
        self.running = []

    async def second(self) -> None:
        """One second of work: dispatch, jobs take 1 s, complete, fold."""
        await self.dispatch()
        self.clock.advance(1)
        await self.complete_all()
        await self.folder.run_once(self.clock.now())


async def test_steady_load_below_capacity_is_not_at_risk() -> None:
    w = World(capacity=10)
    for _ in range(5):
        await w.enqueue(6, within=5)
        await w.second()
    answer = await w.jobs.enqueue("acme", w.req(2))
    assert answer.expected_start_at == w.clock.now()
    assert not answer.at_risk
    batch = await w.jobs.enqueue_batch("acme", [w.req(2) for _ in range(4)])
    assert all(r.expected_start_at == w.clock.now() and not r.at_risk for r in batch.results)
    forecast = await w.jobs.forecast(TENANT, "uc")
    assert forecast.mean_duration_seconds == pytest.approx(1.0)
    assert forecast.throughput == pytest.approx(6.0)
    assert forecast.projected_misses == 0


async def test_backlog_over_capacity_puts_short_deadlines_at_risk_not_long_ones() -> None:
    w = World(capacity=2)
    for _ in range(3):  # a mean duration of 1 s observed
        await w.enqueue(2, within=30)
        await w.second()
    await w.enqueue(100, within=10)
    await w.dispatch()  # 2 start; 98 wait, at 2 jobs per second
    await w.folder.run_once(w.clock.now())
    short = await w.jobs.enqueue("acme", w.req(10))
    assert short.at_risk
    # 98 ahead, no free slot, 2 per second: it starts 49.5 s from now
    assert short.expected_start_at == w.clock.now() + timedelta(seconds=49.5)
    long = await w.jobs.enqueue("acme", w.req(120))
    assert not long.at_risk
    # a higher class goes before all of them
    urgent = await w.jobs.enqueue("acme", w.req(1, priority=5))
    assert not urgent.at_risk
    # in one batch, the items count each other: the second of two urgent ones waits for the
    # first, and once folded, the one enqueued above
    await w.folder.run_once(w.clock.now())
    two = await w.jobs.enqueue_batch("acme", [w.req(1, priority=5), w.req(1, priority=5)])
    waits = [(r.expected_start_at - w.clock.now()).total_seconds() for r in two.results]
    assert waits == [pytest.approx(1.0), pytest.approx(1.5)]
    await w.folder.run_once(w.clock.now())
    forecast = await w.jobs.forecast(TENANT, "uc")
    assert forecast.pending == 98 + 5
    assert forecast.projected_misses > 0
    horizons = {b.horizon: b for b in forecast.backlog}
    assert horizons["<10s"].pending == 3  # the urgent ones, due within 1 s
    assert horizons["<1min"].pending == 98 + 1  # due in 10 s exactly: not under 10 s
    assert horizons["<1min"].projected_misses > 0
    assert horizons["<10min"].pending == 1 and horizons["<10min"].projected_misses == 0
    # every one of the 98 due in 10 s, 1 s each, 2 running: ceil(103 / 11) slots at least
    assert forecast.worker_slots_needed >= math.ceil((2 + 98 + 4) / 11)
    text = w.metrics.render().decode()
    assert 'jobs_worker_slots_needed{use_case="uc"}' in text


async def test_the_risk_margin_flags_a_start_expected_just_in_time() -> None:
    w = World(capacity=2)
    for _ in range(3):
        await w.enqueue(2, within=30)
        await w.second()
    await w.enqueue(100, within=10)
    await w.dispatch()
    await w.folder.run_once(w.clock.now())
    # 98 ahead at 2 a second (services reading the summary afresh, no arrivals measured yet):
    # expected 49.5 s from now, inside a deadline 55 s out
    exact = await w.service(capacity=2).enqueue("acme", w.req(55))
    assert exact.expected_start_at == w.clock.now() + timedelta(seconds=49.5)
    assert not exact.at_risk
    # with a margin of a quarter of the wait (12.4 s) the same start is too close to call
    margined = w.service(capacity=2, risk_margin=0.25)
    near = await margined.enqueue("acme", w.req(55))
    assert near.expected_start_at == exact.expected_start_at  # not folded in yet
    assert near.at_risk
    # a deadline beyond the start plus the margin is not at risk
    assert not (await margined.enqueue("acme", w.req(62.5))).at_risk
    # a job due to run later: the margin counts its wait in the queue, not its delay
    later = w.req(55).model_copy(update={"run_at": w.clock.now() + timedelta(seconds=3600)})
    assert not (await margined.enqueue("acme", later)).at_risk


async def test_estimate_follows_capacity() -> None:
    w = World(capacity=2)
    for _ in range(3):
        await w.enqueue(2, within=30)
        await w.second()
    await w.enqueue(100, within=10)
    await w.folder.run_once(w.clock.now())
    assert (await w.jobs.enqueue("acme", w.req(10))).at_risk
    wider = w.service(capacity=60)  # the same backlog, a use case given 60 slots
    answer = await wider.enqueue("acme", w.req(10))
    assert not answer.at_risk
    # 100 ahead as of the last fold, 60 free, 60 per second: (100 - 60 + 1) / 60 s
    assert answer.expected_start_at == w.clock.now() + timedelta(seconds=41 / 60)
    assert (await wider.forecast(TENANT, "uc")).projected_misses == 0


async def test_no_throughput_observed_falls_back_to_the_default_duration() -> None:
    w = World(capacity=4)
    await w.enqueue(20, within=60)
    await w.folder.run_once(w.clock.now())
    answer = await w.jobs.enqueue("acme", w.req(60))
    # nothing ran yet: 4 slots of 1 s (the default) drain 4 per second; 20 ahead, 4 free
    assert answer.expected_start_at == w.clock.now() + timedelta(seconds=17 / 4)
    forecast = await w.jobs.forecast(TENANT, "uc")
    assert (forecast.throughput, forecast.mean_duration_seconds) == (None, None)


async def test_forecast_refuses_unknown_use_case_and_a_server_without_it() -> None:
    w = World(capacity=2)
    with pytest.raises(UseCaseNotFound, match="unknown use case 'nope'"):
        await w.jobs.forecast(TENANT, "nope")
    off = JobService(w.store, config(2), default_quota=None, max_payload_bytes=65536, clock=w.clock)
    with pytest.raises(JobConflict, match="JOBS_FEASIBILITY"):
        await off.forecast(TENANT, "uc")
    answer = await off.enqueue("acme", w.req(10))
    assert (answer.expected_start_at, answer.at_risk) == (None, False)


async def test_summary_is_read_at_most_once_per_max_age() -> None:
    w = World(capacity=2)
    reads = 0
    real = w.store.get_feasibility

    async def counting(use_case: str):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return await real(use_case)

    w.store.get_feasibility = counting  # type: ignore[method-assign]
    ticks = iter([0.0, 0.1, 0.5, 1.2, 1.3])
    cached = Feasibility(w.store, config(2), default_duration=1.0, monotonic=lambda: next(ticks))
    for _ in range(3):
        await cached.view("uc")
    assert reads == 1
    await cached.view("uc")  # 1.2 s after the read
    assert reads == 2


def test_rate_window_measures_over_its_span() -> None:
    window = RateWindow(seconds=10)
    assert window.add(0, 0, 0.0) is None
    assert window.add(5, 10, 20.0) == (2.0, 2.0)
    assert window.add(20, 10, 20.0) == (0.0, None)  # nothing ended in the last 15 s
    assert window.add(21, 5, 1.0) is None  # counters went back: start over


async def test_concurrent_requests_share_one_read_and_a_failed_read_is_not_kept() -> None:
    w = World(capacity=2)
    reads, fail = 0, True
    gate = asyncio.Event()
    real = w.store.get_feasibility

    async def slow(use_case: str):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        await gate.wait()
        if fail:
            raise StoreUnavailable("down")
        return await real(use_case)

    w.store.get_feasibility = slow  # type: ignore[method-assign]
    shared = Feasibility(w.store, config(2), default_duration=1.0)
    first = [asyncio.create_task(shared.view("uc")) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*first, return_exceptions=True)
    assert reads == 1 and all(isinstance(o, StoreUnavailable) for o in outcomes)
    jobs = JobService(
        w.store,
        config(2),
        default_quota=None,
        max_payload_bytes=65536,
        clock=w.clock,
        feasibility=shared,
    )
    # the job is stored and answered, without an estimate, while the summary cannot be read
    answer = await jobs.enqueue("acme", w.req(10))
    assert (answer.expected_start_at, answer.at_risk, reads) == (None, False, 2)
    fail = False
    answer = await jobs.enqueue("acme", w.req(10))  # nothing failed was kept
    assert answer.expected_start_at is not None and reads == 3


async def test_a_tenants_running_cap_holds_its_own_jobs_back() -> None:
    w = World(capacity=50, tenant_cap=2)
    for _ in range(3):  # 1 s a job observed
        await w.enqueue(2, within=30)
        await w.second()
    await w.enqueue(40, within=10)  # acme's: the use case has room, the tenant 2 slots
    await w.folder.run_once(w.clock.now())
    await w.store.refresh_job_counts("default")  # the leader's snapshot of active jobs
    mine = await w.jobs.enqueue("acme", w.req(10))
    # 40 of acme's ahead, 2 of its slots free, 2 a second: (40 - 2 + 1) / 2 s
    assert mine.expected_start_at == w.clock.now() + timedelta(seconds=19.5)
    assert mine.at_risk
    theirs = await w.jobs.enqueue("globex", w.req(10))
    assert theirs.expected_start_at == w.clock.now() and not theirs.at_risk
