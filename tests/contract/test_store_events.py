"""The store contract of the event streams: the heads of notified jobs in one read, and the
ids a bulk action touched (what it announces)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from uuid import UUID

from jobs_schema import JobStatus
from jobs_server.store.base import (
    ClaimedJob,
    JobFilter,
    JobStore,
    LeaderLease,
    RetryRules,
    SucceededAttempt,
)
from jobs_server.store.channels import EVENTS_CHANNEL, parse_ids
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.store.postgres import PostgresJobStore
from tests.contract.conftest import MakeJob, StoreAndClock
from tests.contract.store_calls import claim, store_jobs


async def test_job_heads_follow_each_change(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    a, b = make_job(job_type="uc.a"), make_job(use_case="uc2")
    await store_jobs(impl, [a])
    await store_jobs(impl, [b], tenant="globex")

    heads = {h.id: h for h in await impl.get_job_heads([a.id, b.id, uuid.uuid4(), a.id])}
    assert set(heads) == {a.id, b.id}
    head = heads[a.id]
    assert (head.tenant, head.use_case, head.job_type) == ("acme", "uc", "uc.a")
    assert (head.status, head.attempts, head.max_attempts) == (JobStatus.PENDING, 0, 3)
    assert (head.run_at, head.deadline) == (a.run_at, a.deadline)
    assert not head.deadline_missed and not head.cancel_requested and head.finished_at is None
    assert heads[b.id].tenant == "globex"

    clock.advance(1)
    [running] = await claim(impl, leader)
    [head] = await impl.get_job_heads([running.id])
    assert (head.status, head.attempts) == (JobStatus.RUNNING, 1)
    assert head.updated_at > heads[running.id].updated_at

    clock.advance(1)
    await impl.complete_attempts([SucceededAttempt(running.id, 1, running.lease_token, None)])
    [head] = await impl.get_job_heads([running.id])
    assert head.status is JobStatus.SUCCEEDED and head.finished_at is not None
    assert await impl.get_job_heads([]) == []


async def test_bulk_actions_name_the_jobs_they_touched(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, _ = store
    jobs = [make_job(), make_job(), make_job()]
    await store_jobs(impl, jobs)
    first = await impl.cancel_jobs(JobFilter(tenant="acme"), batch=2, before_id=None)
    assert first.ids == frozenset({jobs[2].id, jobs[1].id})
    rest = await impl.cancel_jobs(JobFilter(tenant="acme"), batch=5, before_id=first.last_id)
    assert rest.ids == frozenset({jobs[0].id})
    rules = RetryRules(tolerances={"uc": 60.0}, quotas={}, default_quota=None)
    retried = await impl.retry_jobs(
        JobFilter(job_id=jobs[1].id), batch=5, before_id=None, rules=rules
    )
    assert retried.ids == frozenset({jobs[1].id})
    none = await impl.cancel_jobs(JobFilter(tenant="nobody"), batch=5, before_id=None)
    assert none.ids == frozenset()


async def test_notify_all_sends_every_note_in_one_call(store: StoreAndClock) -> None:
    impl, _ = store
    got: list[tuple[str, str]] = []
    subs = [
        await impl.listen("jobs_test_a", lambda p: got.append(("a", p))),
        await impl.listen("jobs_test_b", lambda p: got.append(("b", p))),
    ]
    try:
        await impl.notify_all([("jobs_test_a", "1"), ("jobs_test_b", "2"), ("jobs_test_a", "3")])
        for _ in range(200):
            if len(got) == 3:
                break
            await asyncio.sleep(0.02)
        # in order on each channel (each listener here is a connection of its own)
        assert [p for c, p in got if c == "a"] == ["1", "3"]
        assert [p for c, p in got if c == "b"] == ["2"]
    finally:
        for sub in subs:
            await sub.close()


async def _heard_until_marker(impl: JobStore, act: Callable[[], Awaitable[object]]) -> list[UUID]:
    """The ids announced on the events channel by `act`: a marker sent after it arrives after
    whatever it announced (NOTIFYs reach a listener in commit order)."""
    heard: list[str] = []
    marker = asyncio.Event()

    def on(payload: str) -> None:
        if payload == "marker":
            marker.set()
        else:
            heard.append(payload)

    sub = await impl.listen(EVENTS_CHANNEL, on)
    try:
        await act()
        await impl.notify(EVENTS_CHANNEL, "marker")
        await asyncio.wait_for(marker.wait(), timeout=10)
    finally:
        await sub.close()
    return [i for p in heard for i in parse_ids(p)]


async def test_a_claim_announces_the_jobs_it_claimed(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    """The claim's own transaction NOTIFYs its jobs' ids (queries.sql: announce_claimed), so a
    pass needs no statement after it for the event streams."""
    impl, _ = store
    jobs = [make_job() for _ in range(3)]
    await store_jobs(impl, jobs)
    claimed: list[ClaimedJob] = []

    async def claim_all() -> None:
        claimed.extend(await claim(impl, leader, limit=2))

    announced = await _heard_until_marker(impl, claim_all)
    assert len(claimed) == 2
    assert sorted(announced) == sorted(c.id for c in claimed)
    assert await _heard_until_marker(impl, lambda: claim(impl, leader, limit=0)) == []


async def test_with_events_off_a_claim_announces_nothing(
    store: StoreAndClock, store_backend: str | None, make_job: MakeJob, leader: LeaderLease
) -> None:
    """JOBS_EVENTS_NOTIFY=false: the store's statements send no events (jobs.events off)."""
    impl, clock = store
    quiet: JobStore
    if store_backend is None:
        quiet = InMemoryJobStore(clock, events=False)
        epoch = await quiet.acquire_leadership("main", "scheduler-1", ttl=3600)
        assert epoch is not None
        leader = LeaderLease("main", "scheduler-1", epoch)
        listener = quiet
    else:
        quiet = await PostgresJobStore.connect(store_backend, max_size=2, clock=clock, events=False)
        listener = impl
    try:
        await store_jobs(quiet, [make_job(), make_job()])
        claimed: list[ClaimedJob] = []

        async def claim_all() -> None:
            claimed.extend(await claim(quiet, leader))

        assert await _heard_until_marker(listener, claim_all) == []
        assert len(claimed) == 2
    finally:
        if quiet is not impl:
            await quiet.close()
