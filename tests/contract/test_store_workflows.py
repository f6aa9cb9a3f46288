"""The store contract for workflows and batches (docs/workflows.md): children wait until their
parents end, then run or are cancelled; batches count their jobs and store their callback once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID, uuid4

from jobs_schema import BulkAction, JobStatus
from jobs_schema.graph import OnParentFailure
from jobs_server.actions import ACTIONABLE
from jobs_server.events import CHANNEL as EVENTS_CHANNEL
from jobs_server.events import parse_ids
from jobs_server.store.base import (
    ClaimedJob,
    EnqueueResult,
    GraphRefusal,
    GraphResult,
    JobFilter,
    JobStore,
    LeaderLease,
    NewBatch,
    NewJob,
    NewLink,
    SucceededAttempt,
)
from jobs_server.wakeups import CHANNEL as WAKEUP_CHANNEL
from tests.contract.conftest import MakeJob, StoreAndClock
from tests.contract.store_calls import claim, failure, store_jobs


async def graph(
    impl: JobStore,
    jobs: list[NewJob],
    links: list[NewLink],
    *,
    tenant: str = "acme",
    quota: int | None = None,
    batch: NewBatch | None = None,
) -> GraphResult:
    out = await impl.enqueue_graph(tenant, quota=quota, jobs=jobs, links=links, batch=batch)
    assert isinstance(out, GraphResult)
    return out


def link(child: int, *parents: int | UUID, run: bool = False, tolerance: float = 60) -> NewLink:
    policy = OnParentFailure.RUN if run else OnParentFailure.CANCEL
    return NewLink(child, parents, on_parent_failure=policy, tolerance_seconds=tolerance)


async def succeed(impl: JobStore, claimed: list[ClaimedJob], result: object = None) -> None:
    done = await impl.complete_attempts(
        [
            SucceededAttempt(c.id, c.attempt, c.lease_token, result={"from": str(c.id)})
            if result is None
            else SucceededAttempt(c.id, c.attempt, c.lease_token, result=result)
            for c in claimed
        ]
    )
    assert set(done) == {c.id for c in claimed}


async def status(impl: JobStore, job_id: UUID) -> JobStatus:
    job = await impl.get_job(job_id, tenant=None)
    assert job is not None
    return job.status


def job_ids(results: list[EnqueueResult]) -> list[UUID]:
    return [r.job.id for r in results if r.job is not None]


async def test_diamond_runs_parents_first_and_the_child_reads_both(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    jobs = [make_job() for _ in range(4)]
    out = await graph(impl, jobs, [link(1, 0), link(2, 0), link(3, 1, 2)])
    assert out.refused is None
    a, b, c, d = job_ids(out.results)
    assert [r.job.status for r in out.results if r.job] == [
        JobStatus.PENDING,
        JobStatus.WAITING,
        JobStatus.WAITING,
        JobStatus.WAITING,
    ]
    [first] = await claim(impl, leader)
    assert first.id == a  # waiting jobs are never claimed
    clock.advance(100)
    await succeed(impl, [first])
    released = clock.now()
    middle = await claim(impl, leader)
    assert {m.id for m in middle} == {b, c}
    job_b = await impl.get_job(b, tenant=None)
    assert job_b is not None and job_b.run_at == released
    assert job_b.deadline == released + timedelta(seconds=60)  # counted from the release
    await succeed(impl, [middle[0]])
    assert await status(impl, d) is JobStatus.WAITING
    assert await claim(impl, leader) == []
    await succeed(impl, [middle[1]])
    [last] = await claim(impl, leader)
    assert last.id == d
    parents = await impl.get_parents(d, tenant="acme")
    assert [p.id for p in parents] == sorted([b, c])
    assert [p.result for p in parents] == [{"from": str(p.id)} for p in parents]
    assert all(p.status is JobStatus.SUCCEEDED for p in parents)
    assert await impl.get_parents(d, tenant="globex") == []


async def test_two_parents_ending_at_once_release_the_child_once(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    out = await graph(impl, [make_job(), make_job(), make_job()], [link(2, 0, 1)])
    child = job_ids(out.results)[2]
    p1, p2 = await claim(impl, leader)
    await asyncio.gather(succeed(impl, [p1]), succeed(impl, [p2]))
    assert await status(impl, child) is JobStatus.PENDING
    [c] = await claim(impl, leader)
    assert c.id == child


async def test_a_dead_parent_cancels_descendants_and_run_children_run(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    jobs = [make_job(max_attempts=1) for _ in range(5)]
    # 0 -> 1 -> 2 (cancel), 0 -> 3 (run anyway) -> 4 (cancel, but 3 succeeds)
    out = await graph(impl, jobs, [link(1, 0), link(2, 1), link(3, 0, run=True), link(4, 3)])
    root, child, grandchild, runner, after_runner = job_ids(out.results)
    [c] = await claim(impl, leader)
    await impl.fail_attempts([failure(c, next_status=JobStatus.DEAD)], require_expired=False)
    assert await status(impl, child) is JobStatus.CANCELLED
    assert await status(impl, grandchild) is JobStatus.CANCELLED
    cancelled = await impl.get_job(grandchild, tenant=None)
    assert cancelled is not None and cancelled.finished_at is not None
    assert "on_parent_failure cancel" in (cancelled.last_error or "")
    assert await status(impl, runner) is JobStatus.PENDING
    [r] = await claim(impl, leader)
    assert r.id == runner
    [parent] = await impl.get_parents(runner, tenant=None)
    assert parent.id == root and parent.status is JobStatus.DEAD
    await succeed(impl, [r])
    [last] = await claim(impl, leader)
    assert last.id == after_runner


async def test_cancelling_a_waiting_job_cancels_its_children(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    out = await graph(impl, [make_job(), make_job(), make_job()], [link(1, 0), link(2, 1)])
    root, mid, leaf = job_ids(out.results)
    cancelled = await impl.cancel_job(mid, tenant="acme")
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert await status(impl, leaf) is JobStatus.CANCELLED
    assert await status(impl, root) is JobStatus.PENDING


async def test_parents_by_id_already_ended(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    await store_jobs(impl, [make_job(max_attempts=1), make_job(max_attempts=1)])
    good, bad = await claim(impl, leader)
    await succeed(impl, [good])
    await impl.fail_attempts([failure(bad, next_status=JobStatus.DEAD)], require_expired=False)
    running = await store_jobs(impl, [make_job()])
    out = await graph(
        impl,
        [make_job(), make_job(), make_job(), make_job()],
        [
            link(0, good.id),
            link(1, bad.id),
            link(2, bad.id, run=True),
            link(3, job_ids(running)[0]),
        ],
    )
    statuses = [r.job.status for r in out.results if r.job]
    assert statuses == [
        JobStatus.PENDING,
        JobStatus.CANCELLED,
        JobStatus.PENDING,
        JobStatus.WAITING,
    ]


async def test_unknown_and_foreign_parents_store_nothing(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, _ = store
    [foreign] = await store_jobs(impl, [make_job()], tenant="globex")
    assert foreign.job is not None
    unknown = uuid4()
    for parent in (unknown, foreign.job.id):
        jobs = [make_job(), make_job()]
        out = await graph(impl, jobs, [link(1, 0, parent)])
        assert out.refused is GraphRefusal.MISSING_PARENTS
        assert out.missing_parents == (parent,) and out.results == []
        for j in jobs:
            assert await impl.get_job(j.id, tenant=None) is None
    assert await status(impl, foreign.job.id) is JobStatus.PENDING


async def test_a_graph_over_the_quota_stores_nothing_and_waiting_jobs_count(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, _ = store
    jobs = [make_job() for _ in range(3)]
    out = await graph(impl, jobs, [link(1, 0), link(2, 1)], quota=2)
    assert out.refused is GraphRefusal.QUOTA_EXCEEDED and out.results == []
    assert await impl.get_job(jobs[0].id, tenant=None) is None
    out = await graph(impl, jobs, [link(1, 0), link(2, 1)], quota=3)
    assert out.refused is None
    # two of the three are waiting, and still count as active
    [refused] = await store_jobs(impl, [make_job()], quota=3)
    assert refused.job is None


async def test_job_graph_lists_linked_jobs(store: StoreAndClock, make_job: MakeJob) -> None:
    impl, _ = store
    out = await graph(impl, [make_job() for _ in range(4)], [link(1, 0), link(2, 0), link(3, 1, 2)])
    a, b, c, d = job_ids(out.results)
    jobs, links, more = await impl.get_job_graph(b, tenant="acme", limit=10)
    assert jobs[0].id == b and {j.id for j in jobs} == {a, b, c, d} and not more
    assert {(x.parent, x.child) for x in links} == {(a, b), (a, c), (b, d), (c, d)}
    jobs, _, more = await impl.get_job_graph(b, tenant="acme", limit=2)
    assert len(jobs) == 2 and more
    assert await impl.get_job_graph(b, tenant="globex", limit=10) == ([], [], False)


async def test_layered_thousand_node_graph_runs_in_dependency_order(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    width, depth = 100, 10
    jobs = [make_job() for _ in range(width * depth)]
    links = [
        link(layer * width + i, (layer - 1) * width + i, (layer - 1) * width + (i + 1) % width)
        for layer in range(1, depth)
        for i in range(width)
    ]
    out = await graph(impl, jobs, links)
    assert out.refused is None and len(out.results) == 1000
    layer_of = {j.id: n // width for n, j in enumerate(jobs)}
    for layer in range(depth):
        claimed = await claim(impl, leader, capacity=1000, limit=1000)
        assert {layer_of[c.id] for c in claimed} == {layer} and len(claimed) == width
        await succeed(impl, claimed)
    assert await claim(impl, leader, capacity=1000, limit=1000) == []


async def test_batch_counts_its_jobs_and_stores_its_callback_once(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    batch = NewBatch(
        id=uuid4(),
        callback_job_id=uuid4(),
        callback=make_job(job_type="uc.done", payload={"report": "x"}),
        callback_tolerance_seconds=30,
    )
    out = await graph(impl, [make_job(max_attempts=1) for _ in range(3)], [], batch=batch)
    ids = job_ids(out.results)
    made = await impl.get_batch(batch.id, tenant="acme")
    assert made is not None and (made.counts.total, made.counts.unfinished) == (3, 3)
    assert made.callback_job_id is None and made.has_callback
    assert await impl.get_batch(batch.id, tenant="globex") is None
    first, second, third = await claim(impl, leader)
    await succeed(impl, [first])
    await impl.fail_attempts([failure(second, next_status=JobStatus.DEAD)], require_expired=False)
    assert await impl.get_job(batch.callback_job_id, tenant=None) is None
    clock.advance(5)
    await succeed(impl, [third])
    done = await impl.get_batch(batch.id, tenant="acme")
    assert done is not None and done.finished_at == clock.now()
    assert (done.counts.succeeded, done.counts.dead, done.counts.unfinished) == (2, 1, 0)
    assert done.failed_job_ids == [second.id] and done.callback_job_id == batch.callback_job_id
    cb = await impl.get_job(batch.callback_job_id, tenant="acme")
    assert cb is not None and cb.status is JobStatus.PENDING and cb.job_type == "uc.done"
    assert cb.deadline == clock.now() + timedelta(seconds=30)
    assert cb.payload == {
        "report": "x",
        "batch": {
            "id": str(batch.id),
            "counts": {"succeeded": 2, "dead": 1, "cancelled": 0, "expired": 0},
            "failed_job_ids": [str(second.id)],
            "failed_truncated": False,
        },
    }
    # a finished batch takes no more jobs; an unknown one is refused
    more = await graph(impl, [make_job()], [], batch=NewBatch(batch.id, batch.id, create=False))
    assert more.refused is GraphRefusal.BATCH_FINISHED
    other = NewBatch(uuid4(), uuid4(), create=False)
    assert (await graph(impl, [make_job()], [], batch=other)).refused is (
        GraphRefusal.BATCH_NOT_FOUND
    )
    assert set(ids) == {first.id, second.id, third.id}


async def test_jobs_added_to_a_batch_hold_its_callback_back(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    batch = NewBatch(id=uuid4(), callback_job_id=uuid4(), callback=make_job(job_type="uc.done"))
    await graph(impl, [make_job()], [], batch=batch)
    added = await graph(
        impl, [make_job()], [], batch=NewBatch(batch.id, batch.id, create=False), tenant="acme"
    )
    assert added.refused is None
    foreign = await graph(
        impl, [make_job()], [], batch=NewBatch(batch.id, batch.id, create=False), tenant="globex"
    )
    assert foreign.refused is GraphRefusal.BATCH_NOT_FOUND
    first, second = await claim(impl, leader)
    await succeed(impl, [first])
    assert await impl.get_job(batch.callback_job_id, tenant=None) is None
    await succeed(impl, [second])
    assert await impl.get_job(batch.callback_job_id, tenant=None) is not None
    found = await impl.get_batch(batch.id, tenant=None)
    assert found is not None and found.counts.total == 2 and found.counts.succeeded == 2


async def test_bulk_cancel_counts_and_cancels_waiting_jobs(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, _ = store
    out = await graph(impl, [make_job(), make_job()], [link(1, 0)])
    root, child = job_ids(out.results)
    flt = JobFilter(tenant="acme")
    n, _ = await impl.count_jobs(flt, statuses=ACTIONABLE[BulkAction.CANCEL])
    assert n == 2
    done = await impl.cancel_jobs(flt, batch=10, before_id=None)
    assert done.touched == 2
    assert await status(impl, root) is JobStatus.CANCELLED
    assert await status(impl, child) is JobStatus.CANCELLED


async def test_children_released_or_cancelled_by_a_parents_end_are_announced(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    """The services know only the jobs they ended; what a parent's end did to its children
    reaches the event streams (and, for a released child, the scheduler) from the store."""
    impl, _ = store
    events: list[str] = []
    wakeups: list[str] = []
    subs = [
        await impl.listen(EVENTS_CHANNEL, events.append),
        await impl.listen(WAKEUP_CHANNEL, wakeups.append),
    ]
    try:
        jobs = [make_job(max_attempts=1), make_job(), make_job(max_attempts=1), make_job()]
        out = await graph(impl, jobs, [link(1, 0), link(3, 2)])
        ids = job_ids(out.results)
        first, second = await claim(impl, leader)
        ok, doomed = (first, second) if first.id == ids[0] else (second, first)
        await succeed(impl, [ok])
        await impl.fail_attempts(
            [failure(doomed, next_status=JobStatus.DEAD)], require_expired=False
        )
        for _ in range(200):  # NOTIFYs arrive after the commits
            announced = {i for p in events for i in parse_ids(p)}
            if {ids[1], ids[3]} <= announced and wakeups:
                break
            await asyncio.sleep(0.02)
        assert {ids[1], ids[3]} <= announced
        assert wakeups  # the released child's pass
        released, cancelled = [await impl.get_job(i, tenant=None) for i in (ids[1], ids[3])]
        assert released is not None and released.status is JobStatus.PENDING
        assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    finally:
        for sub in subs:
            await sub.close()
