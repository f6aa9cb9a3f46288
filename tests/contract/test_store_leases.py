"""The store contract: heartbeats, expired leases and their reaping, and outcomes of jobs
marked for cancellation."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from jobs_schema import AttemptOutcome, JobStatus, LeaseRef, LeaseState
from jobs_server.store.base import LeaderLease, SucceededAttempt
from tests.contract.conftest import MakeJob, StoreAndClock, ids
from tests.contract.store_calls import claim, failure, store_jobs


async def test_extend_leases_answers_held_cancelled_or_lost(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    await store_jobs(impl, [make_job() for _ in range(3)])
    held, marked, done = await claim(impl, leader, lease_seconds=30)
    await impl.cancel_job(marked.id, tenant=None)
    await impl.complete_attempts([SucceededAttempt(done.id, 1, done.lease_token, None)])
    unknown = LeaseRef(job_id=uuid4(), attempt=1, lease_token=uuid4())
    out = await impl.extend_leases(
        [held.lease, marked.lease, done.lease, unknown], extend_seconds=[120, 120, 120, 120]
    )
    assert [s.id for s in out] == [held.id, marked.id, done.id, unknown.job_id]
    assert [s.state for s in out] == [
        LeaseState.HELD,
        LeaseState.CANCELLED,
        LeaseState.LOST,
        LeaseState.LOST,
    ]
    expected = clock.now() + timedelta(seconds=120)
    assert out[0].lease_expires_at is not None
    assert abs(out[0].lease_expires_at - expected) < timedelta(seconds=2)
    assert out[2].lease_expires_at is None and out[3].lease_expires_at is None
    # an extension never shortens a lease
    [shorter] = await impl.extend_leases([held.lease], extend_seconds=[5])
    assert shorter.state is LeaseState.HELD and shorter.lease_expires_at == out[0].lease_expires_at


async def test_expired_leases_are_found_and_reaped(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    await store_jobs(impl, [make_job(deadline=clock.now() + timedelta(hours=1)) for _ in range(3)])
    short, long_, extended = await claim(impl, leader, limit=1, lease_seconds=10) + await claim(
        impl, leader, limit=2, lease_seconds=20
    )
    await impl.extend_leases([extended.lease], extend_seconds=[300])
    assert await impl.find_expired_leases(limit=10) == []
    # the reaper's failure demands an expired lease
    assert (
        await impl.fail_attempts(
            [failure(short, next_status=JobStatus.DEAD, outcome=AttemptOutcome.LEASE_EXPIRED)],
            require_expired=True,
        )
        == {}
    )

    clock.advance(21)
    expired = await impl.find_expired_leases(limit=10)
    assert ids(expired) == [short.id, long_.id]  # the longest expired first
    assert (expired[0].attempt, expired[0].lease_token) == (1, short.lease_token)
    assert ids(await impl.find_expired_leases(limit=1)) == [short.id]
    assert await impl.get_lease_tenant(short.lease) is None
    assert await impl.get_lease_tenant(extended.lease) == "acme"

    retry_at = clock.now() + timedelta(seconds=5)
    assert await impl.fail_attempts(
        [
            failure(
                short,
                next_status=JobStatus.PENDING,
                run_at=retry_at,
                outcome=AttemptOutcome.LEASE_EXPIRED,
            ),
            failure(extended, next_status=JobStatus.DEAD, outcome=AttemptOutcome.LEASE_EXPIRED),
        ],
        require_expired=True,
    ) == {short.id: JobStatus.PENDING}  # the extended lease holds
    [attempt] = await impl.get_job_attempts(short.id)
    assert attempt.outcome is AttemptOutcome.LEASE_EXPIRED
    assert ids(await impl.find_expired_leases(limit=10)) == [long_.id]


async def test_outcomes_of_a_job_marked_for_cancellation_end_it_cancelled(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    await store_jobs(impl, [make_job(), make_job()])
    ok, bad = await claim(impl, leader)
    for c in (ok, bad):
        job = await impl.cancel_job(c.id, tenant=None)
        assert job is not None and job.status is JobStatus.RUNNING and job.cancel_requested
    assert await impl.complete_attempts([SucceededAttempt(ok.id, 1, ok.lease_token, {"r": 1})]) == {
        ok.id: JobStatus.CANCELLED
    }
    assert await impl.fail_attempts(
        [failure(bad, next_status=JobStatus.PENDING, run_at=ok.run_at)], require_expired=False
    ) == {bad.id: JobStatus.CANCELLED}
    [a_ok] = await impl.get_job_attempts(ok.id)
    [a_bad] = await impl.get_job_attempts(bad.id)
    assert a_ok.outcome is AttemptOutcome.CANCELLED and a_bad.outcome is AttemptOutcome.FAILED
    for job_id in (ok.id, bad.id):
        job = await impl.get_job(job_id, tenant=None)
        assert job is not None and job.status is JobStatus.CANCELLED
        assert job.finished_at is not None


async def test_mark_attempts_started_keeps_the_first_worker(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    await store_jobs(impl, [make_job()])
    [c] = await claim(impl, leader)
    await impl.mark_attempts_started([c.lease], worker_id="w1")
    [first] = await impl.get_job_attempts(c.id)
    await impl.mark_attempts_started([c.lease], worker_id="w2")
    [second] = await impl.get_job_attempts(c.id)
    assert second.worker_id == "w1" and second.started_at == first.started_at
    await impl.mark_attempts_started([], worker_id="w3")


async def test_a_heartbeat_past_expiry_still_holds_until_reaped(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    """A worker that paused past its lease keeps the job if it reports before the reaper."""
    impl, clock = store
    await store_jobs(impl, [make_job(deadline=clock.now() + timedelta(hours=1))])
    [c] = await claim(impl, leader, lease_seconds=10)
    clock.advance(15)
    assert ids(await impl.find_expired_leases(limit=10)) == [c.id]
    [status] = await impl.extend_leases([c.lease], extend_seconds=[30])
    assert status.state is LeaseState.HELD
    assert status.lease_expires_at == clock.now() + timedelta(seconds=30)
    assert await impl.find_expired_leases(limit=10) == []
    assert (
        await impl.fail_attempts(
            [failure(c, next_status=JobStatus.DEAD, outcome=AttemptOutcome.LEASE_EXPIRED)],
            require_expired=True,
        )
        == {}
    )


async def test_find_cancel_requested_answers_marked_leases_only_and_extends_nothing(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    await store_jobs(impl, [make_job(deadline=clock.now() + timedelta(hours=1)) for _ in range(4)])
    held, marked, finished, also_held = await claim(impl, leader, lease_seconds=10)
    for c in (marked, finished):
        await impl.cancel_job(c.id, tenant=None)
    await impl.complete_attempts([SucceededAttempt(finished.id, 1, finished.lease_token, None)])
    other_token = LeaseRef(job_id=marked.id, attempt=1, lease_token=uuid4())
    other_attempt = LeaseRef(job_id=marked.id, attempt=2, lease_token=marked.lease_token)
    unknown = LeaseRef(job_id=uuid4(), attempt=1, lease_token=uuid4())
    asked = [held.lease, marked.lease, finished.lease, other_token, other_attempt, unknown]
    assert await impl.find_cancel_requested([*asked, marked.lease]) == [marked.lease]
    assert await impl.find_cancel_requested([held.lease, also_held.lease]) == []
    assert await impl.find_cancel_requested([]) == []
    # a read: the leases asked about still expire when they would have
    clock.advance(15)
    assert sorted(ids(await impl.find_expired_leases(limit=10))) == sorted(
        [held.id, marked.id, also_held.id]
    )
