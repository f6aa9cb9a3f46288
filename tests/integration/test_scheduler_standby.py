"""What a scheduler costs the database when it has nothing to do: a standby that is sent
wake-ups, and a leader whose database is unreachable."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from jobs_server.scheduler import Scheduler
from jobs_server.store.base import JobStore
from jobs_server.store.postgres import PostgresJobStore
from jobs_server.wakeups import WakeupSender
from tests.integration.proxy import start_database_proxy
from tests.integration.scheduler_support import Rig, make_rig, use_case
from tests.integration.sqs import sqs_probe

pytestmark = pytest.mark.slow

TTL = 1.5


class CountingStore:
    """A JobStore that counts the calls made through it (each one a round trip or more)."""

    def __init__(self, inner: JobStore) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            self.times.setdefault(name, []).append(time.monotonic())
            return await attr(*args, **kwargs)

        return counted


@pytest.fixture
async def rig(database_url, sqs_endpoint, queue_prefix) -> AsyncIterator[Rig]:
    use_cases = {"work": use_case(f"{queue_prefix}-work")}
    async with sqs_probe(sqs_endpoint) as probe:
        async for r in make_rig(database_url, sqs_endpoint, probe, use_cases):
            yield r


def scheduler(rig: Rig, store: Any) -> Scheduler:
    return rig.scheduler(store=store, tick_seconds=0.2, leader_ttl_seconds=TTL)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_standby_sent_wake_ups_only_tries_to_elect_itself_on_its_period(
    rig, db, database_url
):
    leader = scheduler(rig, rig.store)
    standby_store = await PostgresJobStore.connect(database_url, min_size=1, max_size=2)
    counting = CountingStore(standby_store)
    standby = scheduler(rig, counting)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(leader.run_forever(stop))]
    rig.service._on_enqueued = WakeupSender(rig.store).enqueued
    try:
        await eventually(lambda: _true(leader.is_leader))
        tasks.append(asyncio.create_task(standby.run_forever(stop)))
        await eventually(lambda: _true(counting.calls["listen"] == 1))
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 4 * TTL:
            await rig.enqueue("acme", "work")  # each enqueue NOTIFYs both schedulers
            sent += 1
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        calls = dict(counting.calls)
        assert not standby.is_leader
        await eventually(lambda: _drained(rig, db, sent))  # the leader did wake and dispatch
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await standby_store.close()
    # about three tries per TTL; a standby that woke on every NOTIFY would make hundreds
    periods = elapsed / TTL
    assert calls.get("acquire_leadership", 0) <= 3 * periods + 2, calls
    assert sum(calls.values()) <= 3 * periods + 4, calls


async def _true(value: bool) -> bool:
    return value


async def _drained(rig: Rig, db: Any, n: int) -> bool:
    await rig.complete(await rig.probe.drain(rig.use_cases["work"].queue))
    return await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") >= n


async def test_failed_passes_back_off_even_when_woken(rig, database_url):
    proxy, proxied = await start_database_proxy(database_url)
    store = await PostgresJobStore.connect(proxied, min_size=1, max_size=2, connect_timeout=1)
    counting = CountingStore(store)
    sched = scheduler(rig, counting)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    try:
        await eventually(lambda: _true(sched.is_leader))
        await proxy.stop()  # the database is gone for this scheduler
        counting.calls.clear()
        counting.times.clear()
        started = time.monotonic()
        while time.monotonic() - started < 5.0:
            sched.wake()  # as wake-ups would keep arriving from the API
            await asyncio.sleep(0.01)
        tries = counting.times["listen"]  # once a pass while the LISTEN connection is down
        gaps = [b - a for a, b in itertools.pairwise(tries)]
    finally:
        stop.set()
        await task
        await store.close()
        await proxy.stop()
    # waits of 0.25-0.5, 0.5-1, 1-2, 2-4 s: five or six tries in 5 s; a loop that woke on
    # every wake-up would make hundreds
    assert 2 <= len(tries) <= 10, gaps
    assert gaps[-1] > gaps[0], gaps
