"""The scheduler against real PostgreSQL and a moto SQS server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from jobs_schema import UseCaseConfig
from jobs_server.clock import ManualClock
from jobs_server.publisher.sqs import SqsPublisher
from jobs_server.retries import LEASE_EXPIRED, decide_failure
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


def use_cases(prefix: str) -> dict[str, UseCaseConfig]:
    return {
        "fast": use_case(f"{prefix}-fast"),
        "one": use_case(f"{prefix}-one", capacity=1),
        "five": use_case(f"{prefix}-five", capacity=5),
        "fair": use_case(f"{prefix}-fair", capacity=10, per_tenant_running_cap=3),
        "unfair": use_case(f"{prefix}-unfair", capacity=10),
        "short": use_case(f"{prefix}-short", lease_seconds=0.5),
    }


@pytest.fixture
async def rig(database_url, sqs_endpoint, queue_prefix) -> AsyncIterator[Rig]:
    async with sqs_probe(sqs_endpoint) as probe:
        async for r in make_rig(database_url, sqs_endpoint, probe, use_cases(queue_prefix)):
            yield r


@pytest.fixture
def clock() -> ManualClock:
    # a day off this host's clock: a time taken from the host instead would stand out
    return ManualClock(datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))


@pytest.fixture
async def timed_rig(database_url, sqs_endpoint, queue_prefix, clock) -> AsyncIterator[Rig]:
    """A rig whose store and services read `clock`: the test moves time, nothing sleeps."""
    async with sqs_probe(sqs_endpoint) as probe:
        async for r in make_rig(
            database_url, sqs_endpoint, probe, use_cases(queue_prefix), clock=clock
        ):
            yield r


async def test_priority_classes_first_then_earliest_deadline(rig, db):
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
    # priority 9, then 1, whatever their deadlines; then class 0 in deadline order
    assert order == [high, low] + [ids[t] for t in sorted(tolerances)]
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
    early = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
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


async def test_future_job_is_due_at_its_run_at_by_the_clock(timed_rig, clock, db):
    rig = timed_rig
    due = clock.now() + timedelta(seconds=1.5)
    (job_id,) = await rig.enqueue("acme", "fast", run_at=due.isoformat())
    sched = rig.scheduler()
    assert await lead(sched)
    clock.advance(1.4)
    assert await dispatch(sched) == 0
    clock.advance(0.1)
    assert await dispatch(sched) == 1
    (msg,) = await rig.probe.drain(rig.use_cases["fast"].queue)
    assert str(msg.job_id) == job_id
    job = await db.fetchrow("SELECT run_at, created_at, deadline_missed FROM jobs")
    assert job["run_at"] == due
    assert job["created_at"] == due - timedelta(seconds=1.5)
    assert not job["deadline_missed"]
    dispatched = await db.fetchval("SELECT dispatched_at FROM job_attempts")
    assert dispatched == due


async def test_expired_lease_is_retried_with_backoff_then_dead(timed_rig, clock, db):
    rig = timed_rig
    await rig.enqueue("acme", "short")
    sched = rig.scheduler()
    assert await lead(sched)
    for attempt in (1, 2, 3):
        assert await dispatch(sched) == 1
        (msg,) = await rig.probe.drain(rig.use_cases["short"].queue)
        assert msg.attempt == attempt
        clock.advance(0.4)
        assert await reap(sched) == 0  # the 0.5 s lease holds...
        clock.advance(0.2)  # ...and runs out; nobody reports
        assert await reap(sched) == 1
        job = await db.fetchrow("SELECT status, run_at, updated_at FROM jobs")
        if attempt < 3:
            assert job["status"] == "pending"
            # constant backoff of 1 s, no jitter, counted from the clock's now
            assert job["updated_at"] == clock.now()
            assert job["run_at"] == clock.now() + timedelta(seconds=1)
            clock.advance(0.9)
            assert await dispatch(sched) == 0  # not due yet
            clock.advance(0.1)
    assert (await db.fetchval("SELECT status FROM jobs")) == "dead"
    assert (await db.fetchval("SELECT finished_at FROM jobs")) == clock.now()
    attempts = await db.fetch(
        "SELECT attempt, outcome, error_type FROM job_attempts ORDER BY attempt"
    )
    assert [(a["attempt"], a["outcome"], a["error_type"]) for a in attempts] == [
        (n, "lease_expired", "LeaseExpired") for n in (1, 2, 3)
    ]
    assert await db.fetchval("SELECT active FROM tenant_usage WHERE tenant = 'acme'") == 0


async def test_reported_failures_use_up_the_attempts_then_dead(timed_rig, clock, db):
    rig = timed_rig
    await rig.enqueue("acme", "fast", max_attempts=2)
    sched = rig.scheduler()
    assert await lead(sched)
    queue = rig.use_cases["fast"].queue
    assert await dispatch(sched) == 1
    (msg,) = await rig.probe.drain(queue)
    clock.advance(0.25)
    assert await rig.fail([msg]) == 1
    job = await db.fetchrow("SELECT status, run_at, attempts FROM jobs")
    assert (job["status"], job["attempts"]) == ("pending", 1)
    # the retry's run_at is the clock's now plus the constant 1 s backoff
    assert job["run_at"] == clock.now() + timedelta(seconds=1)
    assert await dispatch(sched) == 0
    clock.advance(1)
    assert await dispatch(sched) == 1
    (msg,) = await rig.probe.drain(queue)
    assert msg.attempt == 2
    clock.advance(0.25)
    assert await rig.fail([msg]) == 1  # the last attempt
    job = await db.fetchrow("SELECT status, attempts, finished_at, last_error FROM jobs")
    assert (job["status"], job["attempts"]) == ("dead", 2)
    assert job["finished_at"] == clock.now()
    assert job["last_error"] == "Boom: it broke"
    attempts = await db.fetch("SELECT attempt, outcome FROM job_attempts ORDER BY attempt")
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "failed"), (2, "failed")]
    assert await db.fetchval("SELECT active FROM tenant_usage WHERE tenant = 'acme'") == 0
    clock.advance(60)
    assert await lead(sched)
    assert await dispatch(sched) == 0  # dead stays dead


async def test_completion_between_reaper_read_and_write_wins(timed_rig, clock, db):
    rig = timed_rig
    await rig.enqueue("acme", "short")
    sched = rig.scheduler()
    assert await lead(sched)
    await dispatch(sched)
    (msg,) = await rig.probe.drain(rig.use_cases["short"].queue)
    clock.advance(0.6)
    expired = await rig.store.find_expired_leases(limit=10)  # the reaper reads...
    assert await rig.complete([msg]) == 1  # ...a completion lands...
    decided = [decide_failure(x, LEASE_EXPIRED, now=clock.now()) for x in expired]
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
