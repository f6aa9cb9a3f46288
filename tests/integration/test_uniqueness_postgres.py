"""Uniqueness windows on PostgreSQL under concurrency: the key's advisory lock orders a window
check after every enqueue of the key before it, and concurrent enqueues of one key store one
job, whatever the mix of rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from jobs_schema import BackoffPolicy, UniqueRule, UniqueWindow
from jobs_server.clock import ManualClock
from jobs_server.service import JobIds
from jobs_server.store.base import EnqueueOutcome, EnqueueResult, IdempotentReplay, NewJob
from jobs_server.store.postgres import PostgresJobStore

BACKOFF = BackoffPolicy(kind="constant", base_seconds=1, cap_seconds=1, jitter=0)
HOUR = UniqueRule(key="k", window=UniqueWindow.ENQUEUED, seconds=3600)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


@pytest.fixture
async def store(database_url: str, clock: ManualClock) -> AsyncIterator[PostgresJobStore]:
    impl = await PostgresJobStore.connect(database_url, min_size=1, max_size=10, clock=clock)
    yield impl
    await impl.close()


def new_job(clock: ManualClock, ids: JobIds, rule: UniqueRule | None) -> NewJob:
    now = clock.now()
    return NewJob(
        id=ids.new(),
        use_case="uc",
        job_type="uc.run",
        payload={},
        priority=0,
        run_at=now,
        deadline=now + timedelta(seconds=60),
        max_attempts=3,
        backoff=BACKOFF,
        dedup_key="k",
        unique=rule,
    )


async def enqueue(store: PostgresJobStore, job: NewJob) -> EnqueueResult:
    out = await store.enqueue_jobs("acme", quota=None, jobs=[job])
    assert not isinstance(out, IdempotentReplay)
    return out[0]


async def test_a_check_waits_for_the_keys_enqueue_that_finished_meanwhile(
    store, clock, db, database_url
):
    """Another transaction holds the key and commits a job of it that has already finished:
    the waiting enqueue must find it, though no active job was ever there to conflict with."""
    ids = JobIds(clock)
    hold = await asyncpg.connect(database_url)
    try:
        tx = hold.transaction()
        await tx.start()
        key = "$1 || chr(31) || $2 || chr(31) || $3"
        await hold.execute(
            f"SELECT pg_advisory_xact_lock(hashtextextended({key}, 0))", "acme", "uc", "k"
        )
        earlier = ids.new()
        now = clock.now()
        await hold.execute(
            "INSERT INTO jobs (id, tenant, use_case, job_type, payload, status, run_at, deadline,"
            " max_attempts, backoff, dedup_key, created_at, updated_at, finished_at)"
            " VALUES ($1, 'acme', 'uc', 'uc.run', '{}', 'cancelled', $2, $2, 3, $3::jsonb, 'k',"
            " $2, $2, $2)",
            earlier,
            now,
            json.dumps(BACKOFF.model_dump(mode="json")),
        )
        waiting = asyncio.create_task(enqueue(store, new_job(clock, ids, HOUR)))
        while not waiting.done():
            blocked = await db.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            if blocked:
                break
            await asyncio.sleep(0.01)
        assert not waiting.done(), "the enqueue did not wait for the key's lock"
        await tx.commit()
        result = await waiting
    finally:
        await hold.close()
    assert result.outcome is EnqueueOutcome.DEDUPLICATED
    assert result.job is not None and result.job.id == earlier
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1


async def test_a_request_racing_another_with_its_idempotency_key_gets_that_ones_job(
    store, clock, db, database_url
):
    """The key is stored by the statement that stores the jobs: a request with a key another
    request's open transaction has just stored waits on the key's index entry, then fails on
    it with its job, and is answered from the first request's outcomes."""
    ids = JobIds(clock)
    first = ids.new()
    hold = await asyncpg.connect(database_url)
    try:
        tx = hold.transaction()
        await tx.start()
        await hold.execute(
            "INSERT INTO idempotency_keys (tenant, key, request_hash, created_at, response)"
            " VALUES ('acme', 'retry-1', 'h', now(), $1::jsonb)",
            json.dumps([[str(first), "created"]]),
        )
        second = new_job(clock, ids, None)
        racing = asyncio.create_task(
            store.enqueue_jobs(
                "acme", quota=None, jobs=[second], idempotency_key="retry-1", request_hash="h"
            )
        )
        while not racing.done():
            if await db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                break
            await asyncio.sleep(0.01)
        assert not racing.done(), "the request did not wait for the key's index entry"
        await tx.commit()
        answer = await racing
    finally:
        await hold.close()
    assert answer == IdempotentReplay("h", [(first, EnqueueOutcome.CREATED)])
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0  # its job went with its statement


RULES = [
    None,
    HOUR,
    UniqueRule(key="k", window=UniqueWindow.FINISHED, seconds=60),
    UniqueRule(key="k", window=UniqueWindow.STATES, states=["pending", "running", "succeeded"]),
]


async def test_concurrent_enqueues_of_one_key_under_every_rule_store_one(store, clock, db):
    ids = JobIds(clock)
    jobs = [new_job(clock, ids, RULES[i % len(RULES)]) for i in range(40)]
    # batches of two keyed jobs too, so locks are taken by calls of more than one job
    pairs = [[new_job(clock, ids, HOUR), new_job(clock, ids, None)] for _ in range(5)]
    singles = [enqueue(store, j) for j in jobs]
    batches = [store.enqueue_jobs("acme", quota=None, jobs=p) for p in pairs]
    results = await asyncio.gather(*singles, *batches)
    flat = [r for res in results for r in (res if isinstance(res, list) else [res])]
    created = [r for r in flat if r.outcome is EnqueueOutcome.CREATED]
    assert len(created) == 1
    assert {r.job.id for r in flat if r.job is not None} == {created[0].job.id}
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1
