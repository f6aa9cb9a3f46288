"""The store contract of the feasibility summary: every change of pending and running jobs
(enqueue, quota excess, claim, release, complete, retry, reaper, cancel, operator retry)
keeps it right once folded, and a rebuild counted afresh agrees with it."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from uuid import uuid4

from jobs_schema import AttemptOutcome, JobStatus
from jobs_schema.graph import OnParentFailure
from jobs_server.store.base import (
    FeasibilitySnapshot,
    GraphResult,
    JobFilter,
    LeaderLease,
    NewBatch,
    NewLink,
    RetryRules,
    SucceededAttempt,
    UseCaseRates,
)
from tests.contract.conftest import MakeJob, StoreAndClock
from tests.contract.store_calls import claim, failure, store_jobs


def second(at: datetime) -> int:
    return math.floor(at.timestamp())


def counts(snap: FeasibilitySnapshot) -> dict[tuple[int, int], int]:
    return {(b.priority, b.bucket): b.n for b in snap.pending}


async def test_summary_follows_every_change_of_pending_and_running(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    t0 = clock.now()
    soon, later = t0 + timedelta(seconds=5), t0 + timedelta(seconds=50)
    await store_jobs(impl, [make_job(deadline=soon) for _ in range(4)])
    await store_jobs(impl, [make_job(deadline=later, priority=2) for _ in range(2)])
    # over the quota: inserted and taken back in one statement, never counted
    await store_jobs(impl, [make_job(deadline=later) for _ in range(3)], quota=7)
    await store_jobs(impl, [make_job(use_case="other", deadline=soon)])
    await impl.fold_feasibility()
    snap = await impl.get_feasibility("uc")
    assert counts(snap) == {(0, second(soon)): 4, (2, second(later)): 2, (0, second(later)): 1}
    assert [(b.priority, b.bucket) for b in snap.pending] == [
        (2, second(later)),
        (0, second(soon)),
        (0, second(later)),
    ]
    assert snap.running == 0
    assert counts(await impl.get_feasibility("other")) == {(0, second(soon)): 1}

    a, b, c, d = await claim(impl, leader, limit=4)  # the priority-2 pair, then two soon ones
    released = await impl.release_leases([d.lease])
    assert released == [d.id]
    clock.advance(2)
    await impl.complete_attempts([SucceededAttempt(a.id, a.attempt, a.lease_token, None)])
    retry_at = clock.now() + timedelta(seconds=1)
    await impl.fail_attempts(
        [failure(b, next_status=JobStatus.PENDING, run_at=retry_at)], require_expired=False
    )
    clock.advance(60)  # c's lease (30 s) runs out: the reaper makes it dead
    await impl.fail_attempts(
        [failure(c, next_status=JobStatus.DEAD, outcome=AttemptOutcome.LEASE_EXPIRED)],
        require_expired=True,
    )
    pending = await impl.list_jobs(JobFilter(status=JobStatus.PENDING, use_case="uc"))
    await impl.cancel_job(pending[0].id, tenant=None)
    loads = {load.use_case: load for load in await impl.fold_feasibility()}
    assert loads["uc"].running == 0
    # a, b and c ended (d was released: it ran nothing)
    assert loads["uc"].finished == 3
    assert loads["uc"].busy_seconds == 2 + 2 + 62
    expected = _recount(await impl.list_jobs(JobFilter(status=JobStatus.PENDING, use_case="uc")))
    assert counts(await impl.get_feasibility("uc")) == expected
    assert sum(expected.values()) == 4

    # an operator's retry of dead and cancelled jobs: pending again, deadline from now
    rules = RetryRules(tolerances={"uc": 30.0}, quotas={}, default_quota=None)
    await impl.retry_jobs(JobFilter(use_case="uc"), batch=10, before_id=None, rules=rules)
    await impl.fold_feasibility()
    expected = _recount(await impl.list_jobs(JobFilter(status=JobStatus.PENDING, use_case="uc")))
    assert sum(expected.values()) == 6
    assert counts(await impl.get_feasibility("uc")) == expected
    # counted afresh, the summary is the same
    await impl.fold_feasibility(rebuild=True)
    assert counts(await impl.get_feasibility("uc")) == expected
    await impl.set_feasibility_rates([UseCaseRates("uc", throughput=2.5, mean_duration=0.5)])
    snap = await impl.get_feasibility("uc")
    assert (snap.throughput, snap.mean_duration) == (2.5, 0.5)


def _recount(jobs: list) -> dict[tuple[int, int], int]:  # type: ignore[type-arg]
    out: dict[tuple[int, int], int] = {}
    for j in jobs:
        key = (j.priority, second(j.deadline))
        out[key] = out.get(key, 0) + 1
    return out


async def test_a_released_child_and_a_batch_callback_are_counted_pending(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    """Jobs that become pending without an enqueue statement of their own (a child released
    by its parent's end, a batch's callback stored by its last job's end) are in the summary;
    a waiting child is not."""
    impl, _ = store
    batch = NewBatch(id=uuid4(), callback_job_id=uuid4(), callback=make_job(job_type="t.done"))
    parent, child = make_job(), make_job()
    links = [NewLink(child=1, parents=(0,), on_parent_failure=OnParentFailure.CANCEL)]
    out = await impl.enqueue_graph(
        "acme", quota=None, jobs=[parent, child], links=links, batch=batch
    )
    assert isinstance(out, GraphResult) and out.refused is None
    await impl.fold_feasibility()
    assert sum(b.n for b in (await impl.get_feasibility("uc")).pending) == 1  # the parent
    [claimed] = await claim(impl, leader)
    await impl.complete_attempts(
        [SucceededAttempt(claimed.id, claimed.attempt, claimed.lease_token, None)]
    )
    await impl.fold_feasibility()
    assert sum(b.n for b in (await impl.get_feasibility("uc")).pending) == 1  # the child
    [released] = await claim(impl, leader)
    await impl.complete_attempts(
        [SucceededAttempt(released.id, released.attempt, released.lease_token, None)]
    )
    await impl.fold_feasibility()
    assert sum(b.n for b in (await impl.get_feasibility("uc")).pending) == 1  # the callback
    expected = _recount(await impl.list_jobs(JobFilter(status=JobStatus.PENDING, use_case="uc")))
    assert counts(await impl.get_feasibility("uc")) == expected
