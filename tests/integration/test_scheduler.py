"""The scheduler against real PostgreSQL and a moto SQS server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from jobs_server.publisher.sqs import SqsPublisher
from jobs_server.scheduler import PublishFailed
from tests.integration.proxy import TcpProxy
from tests.integration.scheduler_support import (
    Rig,
    dispatch,
    lead,
    make_rig,
    prune,
    reap,
    use_case,
)
from tests.integration.sqs import sqs_probe


@pytest.fixture
async def rig(database_url, sqs_endpoint, queue_prefix) -> AsyncIterator[Rig]:
    use_cases = {
        "fast": use_case(f"{queue_prefix}-fast"),
        "one": use_case(f"{queue_prefix}-one", capacity=1),
        "five": use_case(f"{queue_prefix}-five", capacity=5),
        "fair": use_case(f"{queue_prefix}-fair", capacity=10, per_tenant_running_cap=3),
        "unfair": use_case(f"{queue_prefix}-unfair", capacity=10),
        "short": use_case(f"{queue_prefix}-short", lease_seconds=0.5),
    }
    async with sqs_probe(sqs_endpoint) as probe:
        async for r in make_rig(database_url, sqs_endpoint, probe, use_cases):
            yield r


async def test_earliest_deadline_first_then_priority(rig, db):
    base = datetime.now(UTC) - timedelta(seconds=1)
    tolerances = [50, 10, 40, 20, 30]
    ids = {}
    for t in tolerances:
        ids[t] = (
            await rig.enqueue("acme", "one", run_at=base.isoformat(), delay_tolerance_seconds=t)
        )[0]
    same = (base + timedelta(seconds=100)).isoformat()
    low = (await rig.enqueue("acme", "one", deadline=same, priority=1))[0]
    high = (await rig.enqueue("acme", "one", deadline=same, priority=9))[0]
    sched = rig.scheduler()
    assert await lead(sched)
    order = []
    for _ in range(len(tolerances) + 2):
        assert await dispatch(sched) == 1  # capacity 1: one job a pass
        (msg,) = await rig.probe.drain(rig.use_cases["one"].queue)
        order.append(str(msg.job_id))
        assert await rig.complete([msg]) == 1
    assert order == [ids[t] for t in sorted(tolerances)] + [high, low]
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 7


async def test_future_job_is_not_sent_early_and_is_sent_within_a_tick(rig):
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    (job_id,) = await rig.enqueue("acme", "fast", run_at=due.isoformat())
    sched = rig.scheduler(tick_seconds=0.3)
    rig.service._on_enqueued = None  # the scheduler must find it by its own clock
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    try:
        seen_at = None
        while seen_at is None and datetime.now(UTC) < due + timedelta(seconds=5):
            msgs = await rig.probe.drain(rig.use_cases["fast"].queue)
            if msgs:
                seen_at = datetime.now(UTC)
                assert [str(m.job_id) for m in msgs] == [job_id]
            else:
                await asyncio.sleep(0.05)
        assert seen_at is not None
        assert seen_at >= due
        # one tick (0.3 s) plus the time to poll the queue
        assert seen_at - due < timedelta(seconds=0.3 + 0.5)
    finally:
        stop.set()
        await task


async def test_capacity_is_never_exceeded(rig, database_url):
    await rig.enqueue("acme", "five", 100)
    sched = rig.scheduler()
    assert await lead(sched)
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        conn = await asyncpg.connect(database_url)
        try:
            while sampling:
                n = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE use_case = 'five' AND status = 'running'"
                )
                peak = max(peak, n)
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    sampler = asyncio.create_task(sample())
    done = 0
    while done < 100:
        await dispatch(sched)
        await dispatch(sched)  # a second pass in a row must not over-claim
        msgs = await rig.probe.drain(rig.use_cases["five"].queue)
        assert len(msgs) <= 5
        done += await rig.complete(msgs)
    sampling = False
    await sampler
    assert peak == 5
    assert sched.stats.dispatched == 100


async def test_per_tenant_cap_lets_a_small_tenant_through(rig):
    early = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    await rig.enqueue("big", "fair", 1000, deadline=early)
    await rig.enqueue("big", "unfair", 1000, deadline=early)
    (small_fair,) = await rig.enqueue("small", "fair")
    (small_unfair,) = await rig.enqueue("small", "unfair")
    sched = rig.scheduler()
    assert await lead(sched)
    await dispatch(sched)
    fair = await rig.probe.drain(rig.use_cases["fair"].queue)
    unfair = await rig.probe.drain(rig.use_cases["unfair"].queue)
    # with the cap: 3 of big's jobs, and small's one job in the very first pass
    assert sorted(m.tenant for m in fair) == ["big"] * 3 + ["small"]
    assert small_fair in {str(m.job_id) for m in fair}
    # without it, big's backlog takes every slot: the failure the cap exists to prevent
    assert {m.tenant for m in unfair} == {"big"}
    assert small_unfair not in {str(m.job_id) for m in unfair}


async def test_sqs_outage_loses_nothing_and_duplicates_record_one_outcome(rig, sqs_endpoint, db):
    host, port = sqs_endpoint.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    publisher = await SqsPublisher.connect(
        region="us-east-1", endpoint_url=f"http://127.0.0.1:{proxy.port}"
    )
    try:
        sched = rig.scheduler(publisher=publisher)
        await publisher.queue_url(rig.use_cases["fast"].queue)
        ids = await rig.enqueue("acme", "fast", 30)
        assert await lead(sched)
        await proxy.stop()
        with pytest.raises(PublishFailed):
            await dispatch(sched)
        rows = await db.fetch("SELECT status, attempts FROM jobs")
        assert {(r["status"], r["attempts"]) for r in rows} == {("pending", 0)}
        assert await db.fetchval("SELECT count(*) FROM job_attempts") == 0
        await proxy.start()
        await dispatch(sched)
        msgs = await rig.probe.drain(rig.use_cases["fast"].queue)
        assert sorted(str(m.job_id) for m in msgs) == sorted(ids)
        assert {m.attempt for m in msgs} == {1}
        assert await rig.complete(msgs) == 30
        assert await rig.complete(msgs) == 0  # a redelivery is refused: stale
        counts = await db.fetch(
            "SELECT job_id, count(*) AS n FROM job_attempts "
            "WHERE outcome <> 'running' GROUP BY job_id"
        )
        assert len(counts) == 30
        assert {r["n"] for r in counts} == {1}
        assert await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0
    finally:
        await proxy.stop()
        await publisher.close()


async def test_expired_lease_is_retried_with_backoff_then_dead(rig, db):
    await rig.enqueue("acme", "short")
    sched = rig.scheduler()
    assert await lead(sched)
    for attempt in (1, 2, 3):
        for _ in range(50):
            if await dispatch(sched):
                break
            await asyncio.sleep(0.1)
        (msg,) = await rig.probe.drain(rig.use_cases["short"].queue)
        assert msg.attempt == attempt
        await asyncio.sleep(0.6)  # the 0.5 s lease runs out; nobody reports
        assert await reap(sched) == 1
        job = await db.fetchrow("SELECT status, run_at, updated_at FROM jobs")
        if attempt < 3:
            assert job["status"] == "pending"
            # constant backoff of 1 s, no jitter
            delay = (job["run_at"] - job["updated_at"]).total_seconds()
            assert delay == pytest.approx(1.0, abs=0.05)
    assert (await db.fetchval("SELECT status FROM jobs")) == "dead"
    attempts = await db.fetch(
        "SELECT attempt, outcome, error_type FROM job_attempts ORDER BY attempt"
    )
    assert [(a["attempt"], a["outcome"], a["error_type"]) for a in attempts] == [
        (n, "lease_expired", "LeaseExpired") for n in (1, 2, 3)
    ]
    assert await db.fetchval("SELECT active FROM tenant_usage WHERE tenant = 'acme'") == 0


async def test_completion_between_reaper_read_and_write_wins(rig, db):
    await rig.enqueue("acme", "short")
    sched = rig.scheduler()
    assert await lead(sched)
    await dispatch(sched)
    (msg,) = await rig.probe.drain(rig.use_cases["short"].queue)
    await asyncio.sleep(0.6)
    expired = await rig.store.find_expired_leases(limit=10)  # the reaper reads...
    assert await rig.complete([msg]) == 1  # ...a completion lands...
    from jobs_server.retries import LEASE_EXPIRED, decide_failure

    decided = [decide_failure(x, LEASE_EXPIRED, now=datetime.now(UTC)) for x in expired]
    assert await rig.store.fail_attempts(decided, require_expired=True) == {}  # ...and wins
    assert await db.fetchval("SELECT status FROM jobs") == "succeeded"


async def test_deposed_leader_claims_nothing(rig, db):
    await rig.enqueue("acme", "fast", 5)
    old = rig.scheduler()
    new = rig.scheduler()
    assert await lead(old)
    assert not await lead(new)
    # the old leader stalls past its lease; the standby takes over
    await db.execute("UPDATE scheduler_leader SET expires_at = now() - interval '1 second'")
    assert await lead(new)
    assert new.epoch == old.epoch + 1
    assert old.is_leader  # it has not noticed yet...
    assert await dispatch(old) == 0  # ...but its claims are refused
    assert await dispatch(new) == 5


async def test_pruning_removes_finished_jobs_past_retention(rig, db):
    await rig.enqueue("acme", "fast", 10)
    await db.execute(
        "UPDATE jobs SET status = 'succeeded', finished_at = now() - interval '8 days' "
        "WHERE id IN (SELECT id FROM jobs LIMIT 6)"
    )
    sched = rig.scheduler(prune_batch=4)
    assert await prune(sched) == 6  # in two bounded batches
    assert await db.fetchval("SELECT count(*) FROM jobs") == 4


async def test_deadline_miss_is_counted_and_marked(rig, db):
    past = datetime.now(UTC) - timedelta(minutes=1)
    await rig.enqueue("acme", "fast", run_at=past.isoformat(), delay_tolerance_seconds=0)
    await rig.enqueue("acme", "fast")
    sched = rig.scheduler()
    assert await lead(sched)
    assert await dispatch(sched) == 2
    assert sched.stats.deadline_misses == 1
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE deadline_missed") == 1


async def test_enqueue_wakes_the_scheduler_before_its_tick(
    rig, start_server, sqs_endpoint, database_url
):
    sched = rig.scheduler(tick_seconds=30)  # without a wake-up it would wait 30 s
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    from jobs_server.wakeups import WakeupSender

    rig.service._on_enqueued = WakeupSender(rig.store).enqueued
    try:
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await rig.enqueue("acme", "fast")
        msgs = []
        while not msgs and time.monotonic() - started < 5:
            msgs = await rig.probe.drain(rig.use_cases["fast"].queue)
        assert len(msgs) == 1
        assert time.monotonic() - started < 2
    finally:
        stop.set()
        await task
