"""The scheduler as real processes: failover between two, a crash between commit and publish,
and PostgreSQL going away under a running scheduler."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from jobs_schema import JobMessage
from jobs_server.errors import StoreUnavailable
from jobs_server.store.postgres import PostgresJobStore
from tests.integration.proxy import start_database_proxy
from tests.integration.scheduler_support import (
    Rig,
    dispatch,
    lead,
    make_rig,
    reap,
    use_case,
)
from tests.integration.sqs import sqs_probe

pytestmark = pytest.mark.slow

TTL = 2.0
TICK = 0.2


@pytest.fixture
async def rig(database_url, sqs_endpoint, queue_prefix) -> AsyncIterator[Rig]:
    use_cases = {"work": use_case(f"{queue_prefix}-work", lease_seconds=2)}
    async with sqs_probe(sqs_endpoint) as probe:
        async for r in make_rig(database_url, sqs_endpoint, probe, use_cases):
            yield r


def start_scheduler(rig: Rig, database_url: str, sqs_url: str) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "JOBS_DATABASE_URL": database_url,
        "JOBS_SQS_ENDPOINT_URL": sqs_url,
        "JOBS_USE_CASES": json.dumps(
            {k: v.model_dump(mode="json") for k, v in rig.use_cases.items()}
        ),
        "JOBS_LEADER_TTL_SECONDS": str(TTL),
        "JOBS_SCHEDULER_TICK_SECONDS": str(TICK),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "jobs_server", "scheduler", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def leader(db: asyncpg.Connection) -> tuple[int, int] | None:
    """(pid, epoch) of the live leader."""
    row = await db.fetchrow("SELECT holder, epoch FROM scheduler_leader WHERE expires_at > now()")
    return (int(row["holder"].split(":")[1]), row["epoch"]) if row else None


async def eventually(check, timeout: float = 20.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(every)
    raise AssertionError("condition not met in time")


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


async def test_two_schedulers_one_leader_and_failover(rig, db, database_url, sqs_endpoint):
    a = start_scheduler(rig, database_url, sqs_endpoint)
    b = None
    try:
        pid_a, epoch_a = await eventually(lambda: leader(db))
        assert pid_a == a.pid
        b = start_scheduler(rig, database_url, sqs_endpoint)
        await eventually(lambda: _listeners(db, 2), timeout=60)  # the standby is up
        queue = rig.use_cases["work"].queue
        messages: list[JobMessage] = []
        ids = set(await rig.enqueue("acme", "work", 20))

        async def drained(n: int) -> bool:
            got = await rig.probe.drain(queue)
            messages.extend(got)
            await rig.complete(got)
            return len(messages) >= n

        await eventually(lambda: drained(20))
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        # the dead leader's last renewal, as the database holds it (it renewed every TTL / 3,
        # so its lease has most of a TTL to run: nobody can have taken it yet)
        dead = await db.fetchrow("SELECT holder, expires_at FROM scheduler_leader")
        assert int(dead["holder"].split(":")[1]) == pid_a
        pid_b, epoch_b = await eventually(lambda: _new_leader(db, pid_a), timeout=TTL + 30)
        assert pid_b == b.pid
        assert epoch_b == epoch_a + 1
        # Read off the schedulers' own clock (the database's), not this test's: the standby
        # took the lease only after the dead one's ran out (never two leaders), and within
        # one election period (a third of the TTL) of that, plus room for a busy machine to
        # wake the standby late.
        since = await db.fetchval("SELECT leader_since FROM scheduler_leader")
        gap = (since - dead["expires_at"]).total_seconds()
        assert 0 < gap <= TTL / 3 + 1.0, gap
        ids |= set(await rig.enqueue("acme", "work", 20))
        await eventually(lambda: drained(40))
        sent = [(str(m.job_id), m.attempt) for m in messages]
        assert len(sent) == len(set(sent)) == 40  # never sent twice for one attempt
        assert {j for j, _ in sent} == ids
        assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 40
    finally:
        kill(a)
        if b is not None:
            kill(b)


async def _listeners(db: asyncpg.Connection, n: int) -> bool:
    """Whether `n` schedulers listen for wake-ups (each does once it has started)."""
    count = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
    )
    return bool(count == n)


async def _new_leader(db: asyncpg.Connection, old_pid: int) -> tuple[int, int] | None:
    current = await leader(db)
    return current if current and current[0] != old_pid else None


async def test_crash_between_commit_and_publish_brings_the_job_back(
    rig, db, database_url, sqs_endpoint
):
    # An SQS endpoint that accepts connections and never answers: the scheduler commits its
    # claim, then hangs publishing, and is killed right there.
    async def blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)

    server = await asyncio.start_server(blackhole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proc = start_scheduler(rig, database_url, f"http://127.0.0.1:{port}")
    try:
        (job_id,) = await rig.enqueue("acme", "work")

        async def claimed() -> bool:
            return await db.fetchval("SELECT status FROM jobs") == "running"

        await eventually(claimed)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        kill(proc)
        server.close()
    sched = rig.scheduler(leader_ttl_seconds=TTL)
    await eventually(lambda: lead(sched), timeout=TTL + 5)  # the dead one's lease ends
    await eventually(lambda: reap(sched), timeout=10)  # its job's lease ends: attempt failed
    assert await db.fetchval("SELECT status FROM jobs") == "pending"
    await eventually(lambda: dispatch(sched), timeout=5)  # after the 1 s backoff it goes out
    (msg,) = await rig.probe.drain(rig.use_cases["work"].queue)
    assert (str(msg.job_id), msg.attempt) == (job_id, 2)
    assert await rig.complete([msg]) == 1
    history = await db.fetch("SELECT attempt, outcome FROM job_attempts ORDER BY attempt")
    assert [(h["attempt"], h["outcome"]) for h in history] == [
        (1, "lease_expired"),
        (2, "succeeded"),
    ]


async def enqueue_retrying(rig: Rig, n: int) -> None:
    """As a producer would: the first call may meet a connection the test just killed."""
    for _ in range(10):  # each killed connection of the pool fails once
        try:
            await rig.enqueue("acme", "work", n)
            return
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("enqueue kept failing")


async def test_scheduler_rides_out_database_restart_and_killed_backend(rig, db, database_url):
    proxy, proxied = await start_database_proxy(database_url)
    store = await PostgresJobStore.connect(proxied, min_size=1, max_size=4)
    sched = rig.scheduler(store=store, tick_seconds=TICK, leader_ttl_seconds=TTL)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    queue = rig.use_cases["work"].queue
    done = 0

    async def complete_some() -> None:
        nonlocal done
        msgs = await rig.probe.drain(queue)
        while msgs:
            try:
                done += await rig.complete(msgs)
                return
            except StoreUnavailable:
                await asyncio.sleep(0.1)

    async def finished(n: int) -> bool:
        await complete_some()
        return done >= n

    try:
        await rig.enqueue("acme", "work", 10)
        await eventually(lambda: finished(10))
        # kill every backend the scheduler holds (pool and LISTEN connection)
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert killed >= 1
        await enqueue_retrying(rig, 10)
        await eventually(lambda: finished(20), timeout=30)
        # the database goes away for a while, as in a restart, then comes back
        await proxy.stop()
        await enqueue_retrying(rig, 10)
        await asyncio.sleep(1.5)
        await proxy.start()
        await eventually(lambda: finished(30), timeout=30)
        assert await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0
        assert sched.is_leader
    finally:
        stop.set()
        await task
        await store.close()
        await proxy.stop()
