"""Periodic jobs on PostgreSQL: the unit tests of tests/unit/test_periodic.py again, and a
schedule ticking across a leader failover with the old leader still racing the new one, each
tick enqueued exactly once. The ManualClock drives every statement; nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from jobs_schema import JobFilter, JobsConfig, UseCaseConfig
from jobs_server.clock import ManualClock
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import InMemoryPublisher
from jobs_server.scheduler import PeriodicJobs, Scheduler, SchedulerConfig
from jobs_server.service import JobService
from jobs_server.store.base import JobFilter as StoreFilter
from jobs_server.store.postgres import PostgresJobStore
from jobs_server.wiring import build_scheduler
from tests.unit.test_periodic import (
    config,
    test_a_dedup_key_makes_no_job_while_the_last_is_active,
    test_a_dst_day_through_periodic_jobs,
    test_a_missed_daily_tick_is_skipped_or_run_once,
    test_a_paused_schedule_does_not_tick,
    test_a_ten_minute_outage_follows_the_missed_tick_policy,
    test_an_interval_schedule_makes_one_job_per_tick,
    test_two_instances_racing_make_one_job_per_tick,
)

__all__ = [
    "test_a_dedup_key_makes_no_job_while_the_last_is_active",
    "test_a_dst_day_through_periodic_jobs",
    "test_a_missed_daily_tick_is_skipped_or_run_once",
    "test_a_paused_schedule_does_not_tick",
    "test_a_ten_minute_outage_follows_the_missed_tick_policy",
    "test_an_interval_schedule_makes_one_job_per_tick",
    "test_two_instances_racing_make_one_job_per_tick",
]

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TTL = 30.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def store(database_url: str, clock: ManualClock) -> AsyncIterator[PostgresJobStore]:
    impl = await PostgresJobStore.connect(database_url, min_size=1, max_size=4, clock=clock)
    yield impl
    await impl.close()


@pytest.fixture
async def second_store(database_url: str, clock: ManualClock) -> AsyncIterator[PostgresJobStore]:
    """Another scheduler process's pool on the same database."""
    impl = await PostgresJobStore.connect(database_url, min_size=1, max_size=4, clock=clock)
    yield impl
    await impl.close()


async def settled(*schedulers: Scheduler) -> None:
    """Until the background runs the schedulers' last steps started have ended."""
    await asyncio.gather(
        *(e.task for sched in schedulers for e in sched.services if e.task is not None)
    )


def scheduler(store: PostgresJobStore, cfg: JobsConfig, holder: str) -> Scheduler:
    jobs = JobService(store, cfg, default_quota=None, max_payload_bytes=65536, clock=store.clock)
    return build_scheduler(
        store,
        InMemoryPublisher(),
        cfg.use_cases,
        outcomes=OutcomeService(store, clock=store.clock),
        clock=store.clock,
        config=SchedulerConfig(leader_ttl_seconds=TTL),
        holder=holder,
        jobs=jobs,
    )


async def test_each_tick_is_enqueued_once_across_a_failover(
    store: PostgresJobStore, second_store: PostgresJobStore, clock: ManualClock
) -> None:
    # leases outlast the test: no retry moves a job's run_at off its tick
    long = UseCaseConfig(queue="q", job_types=["reports.build"], lease_seconds=3600)
    cfg = config(every={"interval_seconds": 60}).model_copy(update={"use_cases": {"reports": long}})
    a, b = scheduler(store, cfg, "a"), scheduler(second_store, cfg, "b")
    holders = []

    async def both_step(at: datetime, *, minute: int) -> None:
        clock.set(at)
        if minute <= 3:  # both alive: a leads, b stands by
            await asyncio.gather(a.step(), b.step())
        elif minute == 4:  # a is gone; b takes over once a's lease has run out
            await b.step()
        else:  # a comes back unaware it lost the lease: its periodic pass races b's step
            await asyncio.gather(b.step(), a.service(PeriodicJobs).run_once(at))
        # the periodic pass runs in the background of a step: it ends before the clock moves
        # on, or, run late, it would see two ticks due and enqueue them by the missed policy
        await settled(a, b)
        holders.append((await store.get_scheduler_status("default")).holder)

    clock.set(START)
    await a.step()  # a leads first; the config's schedule is in, its first tick at 12:01
    await settled(a)
    for minute in range(7):
        for second in (0, 0.5, 10, 20, 30, 40, 50):
            await both_step(START + timedelta(minutes=minute, seconds=second), minute=minute)
    # a renews every 10 s through 12:03:50; its lease runs out at 12:04:20, and b takes over at
    # 12:04:30 (and enqueues 12:04's tick, 30 s late)
    assert holders == ["a"] * (4 * 7 + 4) + ["b"] * (3 + 2 * 7)
    rows = await store.list_jobs(StoreFilter.of(JobFilter(), limit=100))
    assert sorted(j.run_at for j in rows) == [START + timedelta(minutes=m) for m in range(1, 7)]
    schedule = await store.get_schedule("acme", "every")
    assert schedule is not None and schedule.next_run_at == START + timedelta(minutes=7)


async def test_many_racers_on_one_tick_store_one_job(
    store: PostgresJobStore, second_store: PostgresJobStore, clock: ManualClock
) -> None:
    cfg = config(every={"interval_seconds": 60})

    def racer(on: PostgresJobStore) -> PeriodicJobs:
        jobs = JobService(on, cfg, default_quota=None, max_payload_bytes=65536, clock=clock)
        return PeriodicJobs(on, jobs, config=cfg)

    racers = [racer(store if i % 2 else second_store) for i in range(6)]
    await racers[0].run_once(START)
    clock.set(START + timedelta(seconds=60))
    results = await asyncio.gather(*(r.run_once(clock.now()) for r in racers))
    assert sum(r.created for r in results) == 1
    # every other racer either lost the tick on the compare-and-set, or read the schedule
    # after the winner had moved it on and found nothing due
    assert all((r.created, r.lost) in {(1, 0), (0, 1), (0, 0)} for r in results), results
    assert len(await store.list_jobs(StoreFilter.of(JobFilter(), limit=10))) == 1


async def test_racers_moving_many_schedules_at_once_neither_deadlock_nor_double(
    store: PostgresJobStore, second_store: PostgresJobStore, clock: ManualClock
) -> None:
    cfg = config(**{f"s{i:02}": {"interval_seconds": 60} for i in range(60)})

    def racer(on: PostgresJobStore) -> PeriodicJobs:
        jobs = JobService(on, cfg, default_quota=None, max_payload_bytes=65536, clock=clock)
        return PeriodicJobs(on, jobs, config=cfg)

    first, second = racer(store), racer(second_store)
    await first.run_once(START)
    await second.run_once(START)
    for minute in range(1, 4):
        clock.set(START + timedelta(minutes=minute))
        results = await asyncio.gather(first.run_once(clock.now()), second.run_once(clock.now()))
        assert sum(r.created for r in results) == 60
    rows = await store.list_jobs(StoreFilter.of(JobFilter(), limit=1000))
    assert len(rows) == 180
