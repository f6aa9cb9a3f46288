"""The store contract: enqueue's rules (quota of active jobs, dedup while active, idempotency
keys with their request hash)."""

from __future__ import annotations

import asyncio

from jobs_schema import JobStatus
from jobs_server.store.base import (
    EnqueueOutcome,
    IdempotentReplay,
    JobFilter,
    LeaderLease,
    SucceededAttempt,
)
from tests.contract.conftest import MakeJob, StoreAndClock
from tests.contract.store_calls import claim, store_jobs


def outcomes(results: list[object]) -> list[EnqueueOutcome]:
    return [r.outcome for r in results]  # type: ignore[attr-defined]


async def test_quota_counts_active_jobs_and_keeps_the_first_of_a_batch(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    jobs = [make_job() for _ in range(3)]
    results = await store_jobs(impl, jobs, quota=2)
    assert outcomes(results) == [EnqueueOutcome.CREATED] * 2 + [EnqueueOutcome.QUOTA_EXCEEDED]
    assert results[2].job is None
    assert await impl.get_job(jobs[2].id, tenant=None) is None  # nothing of it stays
    [refused] = await store_jobs(impl, [make_job()], quota=2)
    assert refused.outcome is EnqueueOutcome.QUOTA_EXCEEDED
    # another tenant's quota is its own
    [other] = await store_jobs(impl, [make_job()], tenant="globex", quota=2)
    assert other.outcome is EnqueueOutcome.CREATED

    # running jobs count; a finished one frees its place
    c1, _ = await claim(impl, leader, limit=2)
    [still] = await store_jobs(impl, [make_job()], quota=2)
    assert still.outcome is EnqueueOutcome.QUOTA_EXCEEDED
    await impl.complete_attempts([SucceededAttempt(c1.id, c1.attempt, c1.lease_token, None)])
    [room] = await store_jobs(impl, [make_job()], quota=2)
    assert room.outcome is EnqueueOutcome.CREATED


async def test_dedup_while_active(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    first, again, batch_twin = (
        make_job(dedup_key="k"),
        make_job(dedup_key="k"),
        make_job(dedup_key="k"),
    )
    [created] = await store_jobs(impl, [first])
    assert created.outcome is EnqueueOutcome.CREATED
    [dup] = await store_jobs(impl, [again])
    assert dup.outcome is EnqueueOutcome.DEDUPLICATED
    assert dup.job is not None and dup.job.id == first.id
    assert await impl.get_job(again.id, tenant=None) is None
    # the key is per tenant and use case
    [other_uc] = await store_jobs(impl, [make_job(dedup_key="k", use_case="uc2")])
    [other_tenant] = await store_jobs(impl, [make_job(dedup_key="k")], tenant="globex")
    assert outcomes([other_uc, other_tenant]) == [EnqueueOutcome.CREATED] * 2

    # still active while running (the oldest of equal deadlines is claimed first)
    [c] = await claim(impl, leader, limit=1)
    assert c.id == first.id
    [dup] = await store_jobs(impl, [batch_twin])
    assert dup.outcome is EnqueueOutcome.DEDUPLICATED and dup.job is not None
    assert dup.job.status is JobStatus.RUNNING
    # not once it finished
    await impl.complete_attempts([SucceededAttempt(c.id, c.attempt, c.lease_token, None)])
    later = make_job(dedup_key="k")
    [fresh] = await store_jobs(impl, [later])
    assert fresh.outcome is EnqueueOutcome.CREATED and fresh.job is not None
    assert fresh.job.id == later.id


async def test_dedup_within_one_batch_the_first_wins(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, _ = store
    a, b, c = make_job(dedup_key="k"), make_job(dedup_key="k"), make_job()
    results = await store_jobs(impl, [a, b, c])
    assert outcomes(results) == [
        EnqueueOutcome.CREATED,
        EnqueueOutcome.DEDUPLICATED,
        EnqueueOutcome.CREATED,
    ]
    assert results[1].job is not None and results[1].job.id == a.id


async def test_a_duplicate_of_a_job_over_the_quota_is_told_to_retry(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    """The job it matched is gone (it did not fit the quota): the caller enqueues it again."""
    impl, _ = store
    plain, first, twin = make_job(), make_job(dedup_key="k"), make_job(dedup_key="k")
    results = await store_jobs(impl, [plain, first, twin], quota=1)
    assert outcomes(results) == [
        EnqueueOutcome.CREATED,
        EnqueueOutcome.QUOTA_EXCEEDED,
        EnqueueOutcome.RETRY,
    ]
    assert results[2].job is None


async def test_idempotency_key_replays_and_reports_its_hash(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, _ = store
    jobs = [make_job(), make_job()]
    first = await impl.enqueue_jobs(
        "tiny", quota=1, jobs=jobs, idempotency_key="idem-1", request_hash="h1"
    )
    assert not isinstance(first, IdempotentReplay)
    assert outcomes(first) == [EnqueueOutcome.CREATED, EnqueueOutcome.QUOTA_EXCEEDED]

    replay = await impl.enqueue_jobs(
        "tiny", quota=1, jobs=[make_job()], idempotency_key="idem-1", request_hash="h1"
    )
    assert replay == IdempotentReplay(
        "h1", [(jobs[0].id, EnqueueOutcome.CREATED), (None, EnqueueOutcome.QUOTA_EXCEEDED)]
    )
    # a different request under the same key: the stored hash tells the caller it differs
    mismatch = await impl.enqueue_jobs(
        "tiny", quota=None, jobs=[make_job()], idempotency_key="idem-1", request_hash="h2"
    )
    assert isinstance(mismatch, IdempotentReplay) and mismatch.request_hash == "h1"
    assert len(await impl.list_jobs(JobFilter(tenant="tiny"))) == 1  # nothing more stored

    # keys are per tenant
    other = await impl.enqueue_jobs(
        "globex", quota=None, jobs=[make_job()], idempotency_key="idem-1", request_hash="h2"
    )
    assert not isinstance(other, IdempotentReplay)
    assert outcomes(other) == [EnqueueOutcome.CREATED]


async def test_requests_racing_with_one_key_store_one_job(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    """The key is written by the statement that stores the jobs: of requests sent together with
    one key, one stores its job and every other is answered with that job (on PostgreSQL the
    others wait on the key's index entry, then fail on it with their jobs)."""
    impl, _ = store
    jobs = [make_job() for _ in range(6)]
    answers = await asyncio.gather(
        *(
            impl.enqueue_jobs(
                "acme", quota=None, jobs=[job], idempotency_key="race", request_hash="h"
            )
            for job in jobs
        )
    )
    stored = await impl.list_jobs(JobFilter(tenant="acme"))
    assert len(stored) == 1
    ids = {
        a.results[0][0] if isinstance(a, IdempotentReplay) and a.results else a[0].job.id  # type: ignore[index,union-attr]
        for a in answers
    }
    assert ids == {stored[0].id}
    assert sum(not isinstance(a, IdempotentReplay) for a in answers) == 1


async def test_old_idempotency_keys_are_pruned(store: StoreAndClock, make_job: MakeJob) -> None:
    impl, clock = store
    for key in ("a", "b", "c"):
        await impl.enqueue_jobs(
            "acme", quota=None, jobs=[make_job()], idempotency_key=key, request_hash=key
        )
    assert await impl.prune_idempotency_keys(older_than_seconds=60, limit=10) == 0
    clock.advance(61)
    assert await impl.prune_idempotency_keys(older_than_seconds=60, limit=2) == 2
    assert await impl.prune_idempotency_keys(older_than_seconds=60, limit=2) == 1
    fresh = await impl.enqueue_jobs(
        "acme", quota=None, jobs=[make_job()], idempotency_key="a", request_hash="other"
    )
    assert not isinstance(fresh, IdempotentReplay)
