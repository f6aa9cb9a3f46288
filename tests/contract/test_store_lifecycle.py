"""The store contract, part one: a job's life from enqueue to its end, and fencing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from jobs_schema import AttemptOutcome, JobStatus, LeaseRef
from jobs_server.store.base import (
    EnqueueOutcome,
    LeaderLease,
    SucceededAttempt,
)
from tests.contract.conftest import MakeJob, StoreAndClock
from tests.contract.store_calls import claim, failure, store_jobs


async def test_enqueue_stores_a_pending_job(store: StoreAndClock, make_job: MakeJob) -> None:
    impl, _ = store
    new = make_job(payload={"to": "a@b.c", "n": [1, 2]}, priority=3, dedup_key=None)
    [result] = await impl.enqueue_jobs("acme", quota=None, jobs=[new])  # type: ignore[misc]
    assert result.outcome is EnqueueOutcome.CREATED
    assert result.job is not None
    job = result.job
    assert (job.id, job.tenant, job.use_case, job.job_type) == (new.id, "acme", "uc", "uc.run")
    assert job.status is JobStatus.PENDING
    assert job.payload == {"to": "a@b.c", "n": [1, 2]}
    assert (job.priority, job.attempts, job.max_attempts) == (3, 0, 3)
    assert job.run_at == new.run_at and job.deadline == new.deadline
    assert job.finished_at is None and not job.cancel_requested and not job.deadline_missed
    assert await impl.get_job(new.id, tenant="acme") == job
    assert await impl.get_job(new.id, tenant="globex") is None
    assert await impl.get_job(new.id, tenant=None) == job
    assert await impl.get_job_attempts(new.id) == []
    assert await impl.get_payload(new.id) is None  # only a running job's payload is served


async def test_claim_start_complete(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    [created] = await store_jobs(impl, [make_job(trace_context={"traceparent": "00-x"})])
    assert created.job is not None
    [c] = await claim(impl, leader, lease_seconds=30)
    assert c.id == created.job.id and c.attempt == 1 and c.tenant == "acme"
    assert c.payload == {"n": 1} and c.trace_context == {"traceparent": "00-x"}
    assert not c.missed_deadline
    assert abs(c.lease_expires_at - (clock.now() + timedelta(seconds=30))) < timedelta(seconds=2)
    job = await impl.get_job(c.id, tenant=None)
    assert job is not None and job.status is JobStatus.RUNNING and job.attempts == 1
    assert await claim(impl, leader) == []  # nothing else is due
    assert await impl.get_payload(c.id) == {"n": 1}
    assert await impl.get_lease_tenant(c.lease) == "acme"
    [running] = await impl.get_leases([c.id])
    assert (running.id, running.attempt, running.lease_token) == (c.id, 1, c.lease_token)
    assert (running.max_attempts, running.tenant, running.use_case) == (3, "acme", "uc")

    await impl.mark_attempts_started([c.lease], worker_id="w1")
    [attempt] = await impl.get_job_attempts(c.id)
    assert attempt.outcome is AttemptOutcome.RUNNING and attempt.worker_id == "w1"
    assert attempt.started_at is not None and attempt.finished_at is None

    done = await impl.complete_attempts(
        [SucceededAttempt(c.id, c.attempt, c.lease_token, result={"ok": [1]}, worker_id="w1")]
    )
    assert done == {c.id: JobStatus.SUCCEEDED}
    job = await impl.get_job(c.id, tenant=None)
    assert job is not None and job.status is JobStatus.SUCCEEDED
    assert job.result == {"ok": [1]} and job.finished_at is not None
    [attempt] = await impl.get_job_attempts(c.id)
    assert attempt.outcome is AttemptOutcome.SUCCEEDED and attempt.finished_at is not None
    assert await impl.get_leases([c.id]) == []
    assert await impl.get_lease_tenant(c.lease) is None
    assert await impl.get_payload(c.id) is None


async def test_failures_retry_at_run_at_then_die(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    [created] = await store_jobs(impl, [make_job(max_attempts=2)])
    assert created.job is not None
    [c] = await claim(impl, leader)
    retry_at = clock.now() + timedelta(seconds=30)
    assert await impl.fail_attempts(
        [failure(c, next_status=JobStatus.PENDING, run_at=retry_at, worker_id="w1")],
        require_expired=False,
    ) == {c.id: JobStatus.PENDING}
    job = await impl.get_job(c.id, tenant=None)
    assert job is not None and job.status is JobStatus.PENDING
    assert job.run_at == retry_at and job.attempts == 1 and job.finished_at is None
    assert job.last_error == "ValueError: boom"
    [a1] = await impl.get_job_attempts(c.id)
    assert (a1.outcome, a1.error_type, a1.error_message) == (
        AttemptOutcome.FAILED,
        "ValueError",
        "boom",
    )
    assert a1.worker_id == "w1" and a1.finished_at is not None

    assert await claim(impl, leader) == []  # not due before its run_at
    clock.advance(31)
    [c2] = await claim(impl, leader)
    assert (c2.id, c2.attempt) == (c.id, 2) and c2.lease_token != c.lease_token
    assert await impl.fail_attempts(
        [failure(c2, next_status=JobStatus.DEAD, traceback="Traceback ...")], require_expired=False
    ) == {c.id: JobStatus.DEAD}
    job = await impl.get_job(c.id, tenant=None)
    assert job is not None and job.status is JobStatus.DEAD and job.finished_at is not None
    assert [a.attempt for a in await impl.get_job_attempts(c.id)] == [1, 2]
    assert (await impl.get_job_attempts(c.id))[1].traceback == "Traceback ..."


async def test_stale_reports_are_no_ops(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    await store_jobs(impl, [make_job()])
    [c] = await claim(impl, leader)
    stale_token = SucceededAttempt(c.id, c.attempt, c.lease.job_id, result=None)  # wrong token
    stale_attempt = SucceededAttempt(c.id, c.attempt + 1, c.lease_token, result=None)
    assert await impl.complete_attempts([stale_token, stale_attempt]) == {}
    wrong = LeaseRef(job_id=c.id, attempt=c.attempt, lease_token=c.lease.job_id)
    stale_failure = replace(failure(c, next_status=JobStatus.DEAD), lease_token=wrong.lease_token)
    assert await impl.fail_attempts([stale_failure], require_expired=False) == {}
    assert await impl.get_lease_tenant(wrong) is None
    assert await impl.release_leases([wrong]) == []
    [status] = await impl.extend_leases([wrong], extend_seconds=[60])
    assert status.state.value == "lost" and status.lease_expires_at is None
    job = await impl.get_job(c.id, tenant=None)
    assert job is not None and job.status is JobStatus.RUNNING and job.attempts == 1

    # once the job moved on to its next attempt, the first attempt's reports change nothing
    await impl.fail_attempts(
        [failure(c, next_status=JobStatus.PENDING, run_at=clock.now())], require_expired=False
    )
    [c2] = await claim(impl, leader)
    assert await impl.complete_attempts([SucceededAttempt(c.id, 1, c.lease_token, result=1)]) == {}
    assert await impl.get_lease_tenant(c.lease) is None
    assert await impl.get_lease_tenant(c2.lease) == "acme"
    assert await impl.complete_attempts([SucceededAttempt(c.id, 2, c2.lease_token, result=2)]) == {
        c.id: JobStatus.SUCCEEDED
    }
