"""The store contract: reads with filters, cancellation of one job or in batches, and retries
of dead or cancelled jobs in batches under the dedup and quota rules."""

from __future__ import annotations

from datetime import timedelta

from jobs_schema import AttemptOutcome, JobStatus, LeaseState
from jobs_server.store.base import JobFilter, LeaderLease, RetryRules, SucceededAttempt
from tests.contract.conftest import MakeJob, StoreAndClock, ids
from tests.contract.store_calls import claim, failure, store_jobs

RULES = RetryRules(tolerances={"uc": 120.0}, quotas={}, default_quota=None)


async def test_list_and_count_jobs_newest_first_by_filter(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    a, b, c = make_job(job_type="uc.a", dedup_key="k"), make_job(), make_job(use_case="uc2")
    await store_jobs(impl, [a, b, c])
    d = make_job()
    await store_jobs(impl, [d], tenant="globex")
    [claimed] = await claim(impl, leader, use_case="uc2")

    assert ids(await impl.list_jobs(JobFilter())) == [d.id, c.id, b.id, a.id]
    assert ids(await impl.list_jobs(JobFilter(limit=2))) == [d.id, c.id]
    assert ids(await impl.list_jobs(JobFilter(before_id=c.id))) == [b.id, a.id]
    assert ids(await impl.list_jobs(JobFilter(tenant="acme"))) == [c.id, b.id, a.id]
    assert ids(await impl.list_jobs(JobFilter(status=JobStatus.RUNNING))) == [claimed.id]
    assert ids(await impl.list_jobs(JobFilter(use_case="uc2"))) == [c.id]
    assert ids(await impl.list_jobs(JobFilter(job_type="uc.a"))) == [a.id]
    assert ids(await impl.list_jobs(JobFilter(dedup_key="k"))) == [a.id]
    assert ids(await impl.list_jobs(JobFilter(job_id=b.id))) == [b.id]
    assert ids(await impl.list_jobs(JobFilter(max_id=b.id))) == [b.id, a.id]
    now = clock.now()
    assert len(await impl.list_jobs(JobFilter(created_after=now - timedelta(seconds=5)))) == 4
    assert await impl.list_jobs(JobFilter(created_after=now + timedelta(seconds=5))) == []
    assert await impl.list_jobs(JobFilter(created_before=now - timedelta(seconds=5))) == []
    assert len(await impl.list_jobs(JobFilter(created_before=now + timedelta(seconds=5)))) == 4
    assert {j.id for j in await impl.get_jobs([a.id, d.id, a.id])} == {a.id, d.id}

    assert await impl.count_jobs(JobFilter()) == (4, d.id)
    assert await impl.count_jobs(
        JobFilter(tenant="acme"), statuses=frozenset({JobStatus.PENDING})
    ) == (2, b.id)
    assert await impl.count_jobs(JobFilter(tenant="nobody")) == (0, None)


async def test_cancel_one_job(store: StoreAndClock, make_job: MakeJob, leader: LeaderLease) -> None:
    impl, _ = store
    pending, running = make_job(deadline=make_job().deadline + timedelta(hours=1)), make_job()
    await store_jobs(impl, [pending, running])
    [c] = await claim(impl, leader, limit=1)
    assert c.id == running.id

    assert await impl.cancel_job(pending.id, tenant="globex") is None  # another tenant's
    job = await impl.cancel_job(pending.id, tenant="acme")
    assert job is not None and job.status is JobStatus.CANCELLED and job.finished_at is not None
    assert await impl.cancel_job(pending.id, tenant=None) is None  # finished already

    job = await impl.cancel_job(running.id, tenant=None)
    assert job is not None and job.status is JobStatus.RUNNING and job.cancel_requested
    assert job.finished_at is None
    assert await impl.get_lease_tenant(c.lease) is None  # its credential dies at once
    [status] = await impl.extend_leases([c.lease], extend_seconds=[30])
    assert status.state is LeaseState.CANCELLED
    again = await impl.cancel_job(running.id, tenant=None)  # still running: marked again
    assert again is not None and again.cancel_requested


async def test_cancel_jobs_in_batches_newest_first(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    jobs = [make_job(use_case="uc"), make_job(use_case="uc2"), make_job(use_case="uc")]
    done = make_job(use_case="uc3")
    await store_jobs(impl, [*jobs, done])
    [finished] = await claim(impl, leader, use_case="uc3")
    await impl.complete_attempts([SucceededAttempt(finished.id, 1, finished.lease_token, None)])
    [running] = await claim(impl, leader, use_case="uc2")

    first = await impl.cancel_jobs(JobFilter(tenant="acme"), batch=2, before_id=None)
    # the newest two matching active jobs: jobs[2] (pending) and jobs[1] (running)
    assert (first.picked, first.touched, first.last_id) == (2, 2, jobs[1].id)
    assert first.use_cases == frozenset({"uc", "uc2"})
    second = await impl.cancel_jobs(JobFilter(tenant="acme"), batch=2, before_id=first.last_id)
    assert (second.picked, second.touched, second.last_id) == (1, 1, jobs[0].id)
    third = await impl.cancel_jobs(JobFilter(tenant="acme"), batch=2, before_id=second.last_id)
    assert (third.picked, third.touched, third.last_id) == (0, 0, None)
    assert third.use_cases == frozenset()

    statuses = {j.id: j.status for j in await impl.list_jobs(JobFilter())}
    assert statuses == {
        jobs[0].id: JobStatus.CANCELLED,
        jobs[1].id: JobStatus.RUNNING,
        jobs[2].id: JobStatus.CANCELLED,
        done.id: JobStatus.SUCCEEDED,
    }
    marked = await impl.get_job(running.id, tenant=None)
    assert marked is not None and marked.cancel_requested
    # a job marked already is not picked again
    again = await impl.cancel_jobs(JobFilter(), batch=10, before_id=None)
    assert (again.picked, again.touched) == (0, 0)


async def test_retry_jobs_makes_dead_and_cancelled_jobs_pending_now(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    dead, cancelled, done = make_job(max_attempts=1), make_job(), make_job()
    await store_jobs(impl, [dead, done])
    await store_jobs(impl, [cancelled])
    await impl.cancel_job(cancelled.id, tenant=None)
    c_dead, c_done = await claim(impl, leader)
    await impl.fail_attempts([failure(c_dead, next_status=JobStatus.DEAD)], require_expired=False)
    await impl.complete_attempts([SucceededAttempt(c_done.id, 1, c_done.lease_token, None)])
    old_deadline = (await impl.get_job(dead.id, tenant=None)).deadline  # type: ignore[union-attr]
    clock.advance(10)

    batch = await impl.retry_jobs(JobFilter(), batch=10, before_id=None, rules=RULES)
    assert (batch.picked, batch.touched, batch.last_id) == (2, 2, dead.id)
    assert batch.use_cases == frozenset({"uc"})
    job = await impl.get_job(dead.id, tenant=None)
    assert job is not None and job.status is JobStatus.PENDING
    assert job.run_at == clock.now() and job.deadline == clock.now() + timedelta(seconds=120)
    assert job.max_attempts == 2 and job.attempts == 1  # one more attempt allowed
    assert job.finished_at is None and job.result is None and not job.deadline_missed
    [attempt] = await impl.get_job_attempts(dead.id)
    assert attempt.deadline == old_deadline  # the deadline that attempt ran under
    assert attempt.outcome is AttemptOutcome.FAILED
    job = await impl.get_job(cancelled.id, tenant=None)
    assert job is not None and job.status is JobStatus.PENDING and job.max_attempts == 3
    still = await impl.get_job(done.id, tenant=None)
    assert still is not None and still.status is JobStatus.SUCCEEDED

    [again] = await claim(impl, leader, limit=1)
    assert again.id == dead.id and again.attempt == 2
    default = RetryRules(tolerances={}, quotas={}, default_quota=None, default_tolerance=7)
    await impl.cancel_job(cancelled.id, tenant=None)
    await impl.retry_jobs(JobFilter(job_id=cancelled.id), batch=1, before_id=None, rules=default)
    job = await impl.get_job(cancelled.id, tenant=None)
    assert job is not None and job.deadline == clock.now() + timedelta(seconds=7)


async def test_retry_jobs_keeps_dedup_keys_unique_among_active_jobs(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, _ = store
    held, old_twin, young_twin = (
        make_job(dedup_key="h"),
        make_job(dedup_key="t"),
        make_job(dedup_key="t"),
    )
    for job in (held, old_twin, young_twin):
        await store_jobs(impl, [job])
        await impl.cancel_job(job.id, tenant=None)
    active_holder = make_job(dedup_key="h")
    await store_jobs(impl, [active_holder])

    batch = await impl.retry_jobs(JobFilter(), batch=10, before_id=None, rules=RULES)
    assert (batch.picked, batch.touched) == (3, 1)
    statuses = {j.id: j.status for j in await impl.list_jobs(JobFilter())}
    assert statuses[young_twin.id] is JobStatus.PENDING  # the newest of those sharing a key
    assert statuses[old_twin.id] is JobStatus.CANCELLED
    assert statuses[held.id] is JobStatus.CANCELLED  # an active job holds its key


async def test_retry_jobs_within_each_tenants_quota(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, _ = store
    acme = [make_job() for _ in range(3)]
    globex = [make_job() for _ in range(2)]
    await store_jobs(impl, acme)
    await store_jobs(impl, globex, tenant="globex")
    await impl.cancel_jobs(JobFilter(), batch=10, before_id=None)
    await store_jobs(impl, [make_job()])  # one active job of acme's
    rules = RetryRules(tolerances={}, quotas={"acme": 3, "globex": None}, default_quota=1)

    batch = await impl.retry_jobs(JobFilter(), batch=10, before_id=None, rules=rules)
    assert (batch.picked, batch.touched) == (5, 3)
    pending = {j.id for j in await impl.list_jobs(JobFilter(status=JobStatus.PENDING))}
    # acme: room for 2 next to its active one, the newest first; globex falls back on the
    # default quota of 1
    assert {acme[2].id, acme[1].id, globex[1].id} <= pending
    assert not {acme[0].id, globex[0].id} & pending
