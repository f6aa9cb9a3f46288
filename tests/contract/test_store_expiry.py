"""The store contract of miss policy expire: expire_jobs ends only pending jobs past their
expires_at, a bounded batch at a time, and an expired job is finished like any other: counted
out of the tenant's active jobs, rolled up, pruned by retention, listed by status."""

from __future__ import annotations

from datetime import timedelta

from jobs_schema import JobStatus
from jobs_server.store.base import JobFilter, LeaderLease
from tests.contract.conftest import MakeJob, StoreAndClock, ids
from tests.contract.store_calls import claim, store_jobs


async def test_expire_jobs_ends_pending_jobs_past_expires_at_only(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    soon, deadline = now + timedelta(seconds=10), now + timedelta(seconds=5)
    running = make_job(deadline=deadline, expires_at=soon)
    await store_jobs(impl, [running], quota=4)
    [claimed] = await claim(impl, leader)  # running: never expired by the sweep
    expiring = [make_job(deadline=deadline, expires_at=soon) for _ in range(3)]
    late = make_job(deadline=now)  # runs late: no expires_at
    exactly = make_job(deadline=deadline, expires_at=soon + timedelta(seconds=1))
    elsewhere = make_job(use_case="uc2", deadline=deadline, expires_at=soon)
    results = await store_jobs(impl, [*expiring, late, exactly, elsewhere], quota=10)
    assert results[0].job is not None and results[0].job.expires_at == soon

    clock.set(soon + timedelta(seconds=1))  # past `soon`, at `exactly`'s
    first = await impl.expire_jobs(["uc"], limit=2)
    rest = await impl.expire_jobs(["uc"], limit=2)
    assert (len(first), len(rest)) == (2, 1)
    assert {e.id for e in first + rest} == {j.id for j in expiring}
    assert {(e.use_case, e.tenant, e.expires_at) for e in first} == {("uc", "acme", soon)}
    assert await impl.expire_jobs(["uc"], limit=10) == []

    got = {j.id: j for j in await impl.list_jobs(JobFilter(status=JobStatus.EXPIRED))}
    assert set(got) == {j.id for j in expiring}
    one = got[expiring[0].id]
    assert one.finished_at == clock.now() and one.attempts == 0
    assert one.last_error is not None and "passed before it could start" in one.last_error
    assert "plus a grace of 5 s" in one.last_error
    statuses = {j.id: j.status for j in await impl.get_jobs([claimed.id, late.id, exactly.id])}
    assert set(statuses.values()) == {JobStatus.RUNNING, JobStatus.PENDING}
    other = await impl.get_job(elsewhere.id, tenant=None)
    assert other is not None and other.status is JobStatus.PENDING  # not a use case asked for

    # finished: out of the quota's active count (4 active of 10: room for 6 more)
    more = await store_jobs(impl, [make_job(deadline=deadline) for _ in range(7)], quota=10)
    assert sum(r.job is not None for r in more) == 6

    clock.advance(6)
    assert await impl.roll_up_finished(
        "main", use_cases=["uc"], lag_seconds=5, max_window_seconds=7200
    )
    minute = (clock.now() - timedelta(seconds=6)).replace(second=0, microsecond=0)
    rows = await impl.get_minute_stats(since=minute, tenant="acme")
    assert [(r.expired, r.dead, r.cancelled, r.succeeded) for r in rows] == [(3, 0, 0, 0)]

    clock.advance(3600)
    assert await impl.prune_finished_jobs("uc", older_than_seconds=3600, limit=10) == 3
    assert await impl.list_jobs(JobFilter(status=JobStatus.EXPIRED)) == []


async def test_a_job_past_its_expiry_is_never_claimed_even_before_the_sweep(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    late = make_job(deadline=now + timedelta(seconds=5), expires_at=now + timedelta(seconds=10))
    on_time = make_job(deadline=now + timedelta(seconds=20))
    await store_jobs(impl, [late, on_time])
    clock.advance(10)  # exactly at deadline + grace: still claimable
    assert ids(await claim(impl, leader, limit=1)) == [late.id]
    early = make_job(deadline=now + timedelta(seconds=8), expires_at=now + timedelta(seconds=9))
    await store_jobs(impl, [early])
    # past its expiry but not swept yet: the claim passes over it, in every claim statement
    assert ids(await claim(impl, leader)) == [on_time.id]
    assert await claim(impl, leader, per_tenant_cap=5) == []
    assert await claim(impl, leader, per_key_cap=5) == []
