"""The store contract: uniqueness windows past "while active" (for a period after enqueue,
for a period after finishing, over named states), against the store's clock."""

from __future__ import annotations

import asyncio

from jobs_schema import JobStatus, UniqueRule, UniqueWindow
from jobs_server.store.base import EnqueueOutcome, LeaderLease, NewJob, SucceededAttempt
from tests.contract.conftest import MakeJob, StoreAndClock
from tests.contract.store_calls import claim, store_jobs


def rule(window: UniqueWindow, **fields: object) -> UniqueRule:
    return UniqueRule.model_validate({"key": "k", "window": window, **fields})


async def test_unique_for_a_period_after_enqueue_whatever_the_state(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, clock = store
    hour = rule(UniqueWindow.ENQUEUED, seconds=3600)
    first = make_job(dedup_key="k", unique=hour)
    [created] = await store_jobs(impl, [first])
    assert created.outcome is EnqueueOutcome.CREATED and created.job is not None
    assert created.job.unique == hour
    cancelled = await impl.cancel_job(first.id, tenant=None)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED

    clock.advance(3599)
    [dup] = await store_jobs(impl, [make_job(dedup_key="k", unique=hour)])
    assert dup.outcome is EnqueueOutcome.DEDUPLICATED
    assert dup.job is not None and dup.job.id == first.id
    assert dup.job.status is JobStatus.CANCELLED

    clock.advance(1)  # an hour after the first's enqueue: the window is over
    later = make_job(dedup_key="k", unique=hour)
    [fresh] = await store_jobs(impl, [later])
    assert fresh.outcome is EnqueueOutcome.CREATED and fresh.job is not None
    assert fresh.job.id == later.id


async def test_a_period_after_enqueue_still_holds_while_active(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, clock = store
    minute = rule(UniqueWindow.ENQUEUED, seconds=60)
    first = make_job(dedup_key="k", unique=minute)
    await store_jobs(impl, [first])
    clock.advance(600)  # past its window, but still pending
    [dup] = await store_jobs(impl, [make_job(dedup_key="k", unique=minute)])
    assert dup.outcome is EnqueueOutcome.DEDUPLICATED
    assert dup.job is not None and dup.job.id == first.id


async def test_unique_for_a_period_after_finishing(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    ten_minutes = rule(UniqueWindow.FINISHED, seconds=600)
    first = make_job(dedup_key="k", unique=ten_minutes)
    await store_jobs(impl, [first])
    [c] = await claim(impl, leader, limit=1)  # running: still a duplicate
    [dup] = await store_jobs(impl, [make_job(dedup_key="k", unique=ten_minutes)])
    assert dup.outcome is EnqueueOutcome.DEDUPLICATED and dup.job is not None
    assert dup.job.status is JobStatus.RUNNING

    await impl.complete_attempts([SucceededAttempt(c.id, c.attempt, c.lease_token, None)])
    clock.advance(599)
    [dup] = await store_jobs(impl, [make_job(dedup_key="k", unique=ten_minutes)])
    assert dup.outcome is EnqueueOutcome.DEDUPLICATED and dup.job is not None
    assert (dup.job.id, dup.job.status) == (first.id, JobStatus.SUCCEEDED)

    clock.advance(1)
    later = make_job(dedup_key="k", unique=ten_minutes)
    [fresh] = await store_jobs(impl, [later])
    assert fresh.outcome is EnqueueOutcome.CREATED and fresh.job is not None
    assert fresh.job.id == later.id


async def test_unique_over_named_states(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    until_done = rule(UniqueWindow.STATES, states=["pending", "running", "succeeded"])
    first = make_job(dedup_key="k", unique=until_done)
    await store_jobs(impl, [first])
    [c] = await claim(impl, leader, limit=1)
    await impl.complete_attempts([SucceededAttempt(c.id, c.attempt, c.lease_token, None)])
    clock.advance(30 * 86_400)  # succeeded holds the key however long ago
    [dup] = await store_jobs(impl, [make_job(dedup_key="k", unique=until_done)])
    assert dup.outcome is EnqueueOutcome.DEDUPLICATED and dup.job is not None
    assert (dup.job.id, dup.job.status) == (first.id, JobStatus.SUCCEEDED)

    # a cancelled job of another key is no state it names
    other = make_job(dedup_key="c", unique=until_done.model_copy(update={"key": "c"}))
    await store_jobs(impl, [other])
    await impl.cancel_job(other.id, tenant=None)
    again = make_job(dedup_key="c", unique=until_done.model_copy(update={"key": "c"}))
    [fresh] = await store_jobs(impl, [again])
    assert fresh.outcome is EnqueueOutcome.CREATED and fresh.job is not None
    assert fresh.job.id == again.id


async def test_the_new_jobs_rule_decides_and_the_key_is_per_use_case(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, _ = store
    first = make_job(dedup_key="k")  # while active only
    await store_jobs(impl, [first])
    await impl.cancel_job(first.id, tenant=None)
    hour = rule(UniqueWindow.ENQUEUED, seconds=3600)
    [dup] = await store_jobs(impl, [make_job(dedup_key="k", unique=hour)])
    assert dup.outcome is EnqueueOutcome.DEDUPLICATED
    assert dup.job is not None and dup.job.id == first.id
    [plain] = await store_jobs(impl, [make_job(dedup_key="k")])
    assert plain.outcome is EnqueueOutcome.CREATED
    [other_uc] = await store_jobs(impl, [make_job(dedup_key="k", use_case="uc2", unique=hour)])
    [other_tenant] = await store_jobs(impl, [make_job(dedup_key="k", unique=hour)], tenant="globex")
    assert [other_uc.outcome, other_tenant.outcome] == [EnqueueOutcome.CREATED] * 2


async def test_concurrent_enqueues_of_one_key_store_one(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, clock = store
    hour = rule(UniqueWindow.ENQUEUED, seconds=3600)
    # a finished job of the key, out of the window: each enqueue has only the others to find
    old = make_job(dedup_key="k")
    await store_jobs(impl, [old])
    await impl.cancel_job(old.id, tenant=None)
    clock.advance(3600)

    async def one(job: NewJob) -> list[object]:
        return list(await store_jobs(impl, [job]))

    jobs = [make_job(dedup_key="k", unique=hour) for _ in range(20)]
    # over real connections on PostgreSQL (a pool of 4), in one loop for the memory store
    results = [r for rs in await asyncio.gather(*(one(j) for j in jobs)) for r in rs]
    created = [r for r in results if r.outcome is EnqueueOutcome.CREATED]  # type: ignore[attr-defined]
    assert len(created) == 1
    winner = created[0].job.id  # type: ignore[attr-defined]
    assert {r.job.id for r in results} == {winner}  # type: ignore[attr-defined]
