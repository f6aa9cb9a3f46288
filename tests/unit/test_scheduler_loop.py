"""The scheduler's loop decides when each service runs, by the injected clock: a test moves a
ManualClock and calls `step()`, and never sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs_schema import UseCaseConfig
from jobs_server.clock import ManualClock
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import InMemoryPublisher
from jobs_server.scheduler import Scheduler, SchedulerConfig
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.wiring import build_scheduler

CONFIG = SchedulerConfig(
    leader_ttl_seconds=9.0,
    reap_every_seconds=0.5,
    prune_every_seconds=60.0,
    stats_every_seconds=2.0,
    claim_batch=10,
)


class CountingStore:
    """A store that counts the calls made through it."""

    def __init__(self, inner: InMemoryJobStore) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await attr(*args, **kwargs)

        return counted


class Ticks:
    """A service of the test's own: it notes when it ran."""

    def __init__(self) -> None:
        self.ran: list[datetime] = []

    async def run_once(self, now: datetime) -> int:
        self.ran.append(now)
        return len(self.ran)


class Broken:
    async def run_once(self, now: datetime) -> None:
        raise RuntimeError("broken service")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def store(clock: ManualClock) -> CountingStore:
    return CountingStore(InMemoryJobStore(clock))


def scheduler(store: Any, clock: ManualClock, **config: Any) -> Scheduler:
    cfg = dataclasses.replace(CONFIG, **config)
    return build_scheduler(
        store,
        InMemoryPublisher(),
        {"uc": UseCaseConfig(queue="q")},
        outcomes=OutcomeService(store, clock=clock),
        clock=clock,
        config=cfg,
    )


async def settle(sched: Scheduler) -> None:
    """Let the background services' runs finish."""
    await asyncio.gather(*(e.task for e in sched.services if e.task is not None))


async def test_moving_the_clock_by_the_prune_period_runs_the_pruner_once(store, clock):
    sched = scheduler(store, clock)
    await sched.step()  # every service is due on the first step
    assert store.calls["prune_finished_jobs"] == 1
    for _ in range(3):
        await sched.step()
    clock.advance(CONFIG.prune_every_seconds - 1)
    await sched.step()
    assert store.calls["prune_finished_jobs"] == 1  # not yet: the clock has not moved enough
    clock.advance(1)
    await sched.step()
    await sched.step()
    assert store.calls["prune_finished_jobs"] == 2  # once per period, however many steps


async def test_dispatch_runs_on_every_step_and_each_service_on_its_period(store, clock):
    sched = scheduler(store, clock)
    await sched.step()
    await settle(sched)
    first = dict(store.calls)
    assert first["claim_due_jobs"] == 1
    assert first["find_expired_leases"] == 1  # the reaper
    assert first["record_scheduler_pass"] == 1  # the stats refresher, in the background
    clock.advance(0.4)
    await sched.step()
    await settle(sched)
    assert store.calls["claim_due_jobs"] == 2
    assert store.calls["find_expired_leases"] == 1
    clock.advance(0.1)
    await sched.step()
    await settle(sched)
    assert store.calls["find_expired_leases"] == 2
    assert store.calls["record_scheduler_pass"] == 1
    clock.advance(1.5)
    await sched.step()
    await settle(sched)
    assert store.calls["record_scheduler_pass"] == 2
    assert store.calls["claim_due_jobs"] == 4


async def test_a_plugged_in_service_runs_on_its_period(store, clock):
    sched = scheduler(store, clock)
    ticks = Ticks()
    sched.add(ticks, every=5.0)
    start = clock.now()
    await sched.step()
    clock.advance(4.9)
    await sched.step()
    clock.advance(0.1)
    await sched.step()
    clock.advance(12)
    await sched.step()
    assert ticks.ran == [start, start + timedelta(seconds=5), start + timedelta(seconds=17)]
    assert sched.service(Ticks) is ticks


async def test_run_due_says_what_the_foreground_services_did(store, clock):
    sched = scheduler(store, clock)
    ticks = Ticks()
    sched.add(ticks, every=1.0)
    done = dict(await sched.run_due(clock.now()))
    assert done["Ticks"] == 1
    assert {"Reaper", "Pruner"} <= set(done)
    assert await sched.run_due(clock.now()) == []  # nothing is due again at the same time


async def test_a_standby_runs_no_service(store, clock):
    leader, standby = scheduler(store, clock), scheduler(store, clock)
    ticks = Ticks()
    standby.add(ticks, every=1.0)
    await leader.step()
    before = dict(store.calls)
    clock.advance(5)  # the leader's lease runs to 9 s
    await standby.step()
    assert not standby.is_leader
    assert ticks.ran == []
    assert dict(store.calls) == before | {"acquire_leadership": before["acquire_leadership"] + 1}


async def test_a_full_batch_makes_the_step_ask_to_go_again(store, clock):
    sched = scheduler(store, clock)
    from tests.unit.test_scheduler_services import enqueue

    await enqueue(store._inner, clock, 10, use_case="uc")
    assert await sched.step() is True  # claim_batch 10: more may be due
    assert await sched.step() is False


async def test_a_failing_foreground_service_fails_the_step_a_background_one_does_not(store, clock):
    sched = scheduler(store, clock)
    sched.add(Broken(), every=1.0, background=True)
    await sched.step()
    await settle(sched)  # logged, not raised
    sched.add(Broken(), every=1.0)
    clock.advance(1)
    with pytest.raises(RuntimeError, match="broken service"):
        await sched.step()


async def test_the_loop_resigns_on_stop(store, clock):
    sched = scheduler(store, clock, tick_seconds=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    while not sched.is_leader:
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert not sched.is_leader
    assert store.calls["resign_leadership"] == 1


async def test_a_wake_up_for_enqueues_claims_for_their_use_cases_alone(store, clock):
    """At low load each enqueue wakes a pass: it claims where jobs arrived, not in every use
    case; slots freed, the tick and direct steps go over all of them."""
    sched = build_scheduler(
        store,
        InMemoryPublisher(),
        {name: UseCaseConfig(queue=name) for name in ("a", "b", "c")},
        outcomes=OutcomeService(store, clock=clock),
        clock=clock,
        config=CONFIG,
    )
    claimed: list[str] = []
    real = store.claim_due_jobs

    async def claim(use_case: str, **kwargs: Any) -> Any:
        claimed.append(use_case)
        return await real(use_case, **kwargs)

    store.claim_due_jobs = claim
    await sched.step()  # the first pass: every use case
    assert sorted(claimed) == ["a", "b", "c"]
    claimed.clear()
    now = clock.now().timestamp()
    sched._on_notify(f'{{"u": ["b"], "t": {now}}}')  # jobs enqueued in b, due now
    await sched.step()
    assert claimed == ["b"]
    claimed.clear()
    sched._on_notify('{"u": []}')  # slots freed: any use case may have room
    await sched.step()
    assert sorted(claimed) == ["a", "b", "c"]
    claimed.clear()
    # two wake-ups before a pass: both use cases; one for later: a timer, not a pass
    sched._on_notify(f'{{"u": ["a"], "t": {now}}}')
    sched._on_notify(f'{{"u": ["c"], "t": {now}}}')
    sched._on_notify(f'{{"u": ["b"], "t": {now + 60}}}')
    await sched.step()
    assert sorted(claimed) == ["a", "c"]
    claimed.clear()
    await sched.step()  # a step nothing woke (the tick's): every use case
    assert sorted(claimed) == ["a", "b", "c"]


async def test_a_wake_up_for_a_run_at_just_ahead_shortens_the_sleep_under_way(store, clock):
    """A job stamped a few milliseconds ahead of this scheduler's clock (the API's clock
    reading ran ahead of the scheduler's) wakes it with a run_at in its future: the sleep under
    way ends at that run_at, not at the tick (a minute here; it was up to a second, the p50 of
    a low-rate pickup once was 424 ms)."""
    sched = scheduler(store, clock, tick_seconds=60, leader_ttl_seconds=600)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    try:
        while store.calls["claim_due_jobs"] == 0:  # the first pass ran; now it sleeps
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        before = store.calls["claim_due_jobs"]
        sched.wake(clock.now() + timedelta(milliseconds=20), use_cases=frozenset({"uc"}))

        async def passed() -> None:
            while store.calls["claim_due_jobs"] == before:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(passed(), timeout=20)  # far under the minute's tick
    finally:
        stop.set()
        await task
