"""The store contract: the leader lease, pruning by retention, dashboard sessions, wake-ups,
the statistics the dashboard and the metrics read, and health."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from jobs_schema import JobStatus
from jobs_server.auth import Principal, Role
from jobs_server.store.base import (
    DispatchStat,
    JobFilter,
    LeaderLease,
    QueueDepth,
    SchedulerPass,
    SucceededAttempt,
)
from tests.contract.conftest import MakeJob, StoreAndClock
from tests.contract.store_calls import claim, failure, store_jobs


async def test_leader_lease(store: StoreAndClock) -> None:
    impl, clock = store
    taken = clock.now()
    assert await impl.acquire_leadership("main", "a", ttl=10) == 1
    assert await impl.acquire_leadership("main", "b", ttl=10) is None  # held by a
    clock.advance(1)
    assert await impl.acquire_leadership("main", "a", ttl=10) == 1  # renewal keeps the epoch
    assert (await impl.get_scheduler_status("main")).leader_since == taken  # ...and the start
    assert await impl.acquire_leadership("other", "b", ttl=10) == 1  # one lease per name
    clock.advance(5)
    assert await impl.acquire_leadership("main", "b", ttl=10) is None  # renewed at 1, lives to 11
    clock.advance(6)
    assert await impl.acquire_leadership("main", "b", ttl=10) == 2  # a takeover bumps it
    assert await impl.acquire_leadership("main", "a", ttl=10) is None
    status = await impl.get_scheduler_status("main")
    assert (status.holder, status.epoch, status.live) == ("b", 2, True)
    assert status.leader_since == clock.now()  # the takeover's time
    assert status.now == clock.now()
    await impl.resign_leadership("main", "a")  # not the holder: nothing happens
    assert await impl.acquire_leadership("main", "a", ttl=10) is None
    await impl.resign_leadership("main", "b")
    assert not (await impl.get_scheduler_status("main")).live
    assert await impl.acquire_leadership("main", "a", ttl=10) == 3  # no wait after a resignation


async def test_prune_finished_jobs_past_retention(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    far = clock.now() + timedelta(days=1)
    jobs = [make_job(deadline=far) for _ in range(4)] + [make_job(use_case="uc2", deadline=far)]
    await store_jobs(impl, jobs)
    await impl.cancel_job(jobs[0].id, tenant=None)
    await impl.cancel_job(jobs[4].id, tenant=None)  # another use case's
    ok, bad = await claim(impl, leader, limit=2)
    await impl.complete_attempts([SucceededAttempt(ok.id, 1, ok.lease_token, None)])
    await impl.fail_attempts([failure(bad, next_status=JobStatus.DEAD)], require_expired=False)
    # jobs[3] stays pending, however old

    assert await impl.prune_finished_jobs("uc", older_than_seconds=3600, limit=10) == 0
    clock.advance(3601)
    assert await impl.prune_finished_jobs("uc", older_than_seconds=3600, limit=2) == 2
    assert await impl.prune_finished_jobs("uc", older_than_seconds=3600, limit=2) == 1
    assert await impl.prune_finished_jobs("uc", older_than_seconds=3600, limit=2) == 0
    left = {j.id for j in await impl.list_jobs(JobFilter())}
    assert left == {jobs[3].id, jobs[4].id}
    # a pruned job's attempts go with it (both had one)
    assert await impl.get_job_attempts(ok.id) == []
    assert await impl.get_job_attempts(bad.id) == []


async def test_dashboard_sessions_expire_by_the_clock(store: StoreAndClock) -> None:
    impl, clock = store
    who = Principal(Role.TENANT, "acme")
    await impl.create_dashboard_session(b"s1", principal=who, token_check=b"c1", ttl_seconds=60)
    await impl.create_dashboard_session(
        b"s2", principal=Principal(Role.ADMIN), token_check=b"c2", ttl_seconds=600
    )
    session = await impl.get_dashboard_session(b"s1")
    assert session is not None
    assert (session.principal, session.token_check) == (who, b"c1")
    assert session.expires_at == clock.now() + timedelta(seconds=60)
    assert await impl.get_dashboard_session(b"nope") is None
    clock.advance(61)
    assert await impl.get_dashboard_session(b"s1") is None
    admin = await impl.get_dashboard_session(b"s2")
    assert admin is not None and admin.principal == Principal(Role.ADMIN, None)
    await impl.delete_dashboard_session(b"s2")
    assert await impl.get_dashboard_session(b"s2") is None
    await impl.create_dashboard_session(b"s3", principal=who, token_check=b"c3", ttl_seconds=60)
    again = await impl.get_dashboard_session(b"s3")
    assert again is not None and again.token_check == b"c3"


async def test_listen_and_notify(store: StoreAndClock) -> None:
    impl, _ = store
    got: list[str] = []
    arrived = asyncio.Event()

    def heard(payload: str) -> None:
        got.append(payload)
        arrived.set()

    sub = await impl.listen("wake", heard)
    assert sub.alive
    await impl.notify("other", "not for us")
    await impl.notify("wake", '{"u": ["uc"]}')
    await asyncio.wait_for(arrived.wait(), timeout=5)
    assert got == ['{"u": ["uc"]}']
    await sub.close()
    assert not sub.alive
    await impl.notify("wake", "after close")
    await asyncio.sleep(0.05)
    assert got == ['{"u": ["uc"]}']


async def test_job_counts_and_queue_depths(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    overdue = make_job(run_at=now - timedelta(seconds=30), deadline=now - timedelta(seconds=10))
    later = make_job(run_at=now + timedelta(hours=1), deadline=now + timedelta(hours=2))
    await store_jobs(impl, [overdue, make_job(), later, make_job(deadline=now + timedelta(days=1))])
    await store_jobs(impl, [make_job()], tenant="globex")
    await claim(impl, leader, limit=1)  # the overdue one
    clock.advance(1)

    await impl.record_scheduler_pass(
        "main", SchedulerPass("scheduler-1", leader.epoch, clock.now(), 0.25, 7, 3)
    )
    await impl.refresh_job_counts("main")
    [acme, globex] = await impl.get_job_counts(tenant=None)
    assert (acme.tenant, acme.use_case) == ("acme", "uc")
    assert (acme.pending, acme.due, acme.overdue, acme.running) == (3, 2, 0, 1)
    assert acme.oldest_due_run_at == now and acme.earliest_due_deadline == now + timedelta(
        seconds=60
    )
    assert (globex.tenant, globex.pending, globex.due, globex.running) == ("globex", 1, 1, 0)
    assert [c.tenant for c in await impl.get_job_counts(tenant="globex")] == ["globex"]
    status = await impl.get_scheduler_status("main")
    assert (status.passes, status.dispatched, status.last_pass_seconds) == (7, 3, 0.25)
    assert status.counts_at == clock.now()

    snapshot = await impl.count_active_jobs(tenants=["acme"])
    assert snapshot.measured_at == clock.now()
    assert sorted(snapshot.rows, key=lambda r: r.tenant) == [
        QueueDepth("uc", "", 1, 1, 0, now),
        QueueDepth("uc", "acme", 3, 2, 1, now),
    ]


async def test_minute_stats_roll_up(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    minute = clock.now().replace(second=0, microsecond=0) - timedelta(minutes=5)
    await impl.add_dispatch_stats(
        [
            DispatchStat(minute, "uc", "acme", 2, 1, 10.0, 2.0, 8.0),
            DispatchStat(minute, "uc", "globex", 1, 0, 5.0, 5.0, 5.0),
        ]
    )
    await impl.add_dispatch_stats([DispatchStat(minute, "uc", "acme", 1, 0, 1.0, 1.0, 1.0)])
    [row] = await impl.get_minute_stats(since=minute, tenant=None)
    assert (row.minute, row.use_case, row.dispatched, row.missed) == (minute, "uc", 4, 1)
    assert (row.slack_sum, row.slack_min, row.slack_max) == (16.0, 1.0, 8.0)
    [mine] = await impl.get_minute_stats(since=minute, tenant="globex")
    assert (mine.dispatched, mine.slack_min) == (1, 5.0)
    assert await impl.get_minute_stats(since=minute + timedelta(minutes=1), tenant=None) == []

    await store_jobs(impl, [make_job(), make_job()])
    await store_jobs(impl, [make_job()])
    ok, bad = await claim(impl, leader, limit=2)
    await impl.complete_attempts([SucceededAttempt(ok.id, 1, ok.lease_token, None)])
    await impl.fail_attempts([failure(bad, next_status=JobStatus.DEAD)], require_expired=False)
    await impl.cancel_jobs(JobFilter(), batch=10, before_id=None)
    finished_minute = clock.now().replace(second=0, microsecond=0)
    # finished within the lag: not counted yet
    assert (
        await impl.roll_up_finished(
            "main", use_cases=["uc"], lag_seconds=5, max_window_seconds=7200
        )
        == 0
    )
    clock.advance(6)
    assert (
        await impl.roll_up_finished(
            "main", use_cases=["uc"], lag_seconds=5, max_window_seconds=7200
        )
        == 1
    )
    assert (
        await impl.roll_up_finished(
            "main", use_cases=["uc"], lag_seconds=5, max_window_seconds=7200
        )
        == 0
    )
    rows = await impl.get_minute_stats(since=finished_minute, tenant="acme")
    assert [(r.succeeded, r.dead, r.cancelled, r.dispatched) for r in rows] == [(1, 1, 1, 0)]
    assert rows[0].slack_min is None

    clock.advance(3600)
    assert await impl.prune_job_stats(older_than_seconds=1800) == 3
    assert await impl.get_minute_stats(since=minute, tenant=None) == []


async def test_health(store: StoreAndClock) -> None:
    impl, clock = store
    await impl.ping()
    assert await impl.pending_migrations() == []
    status = await impl.get_scheduler_status("never-ran")
    assert (status.holder, status.epoch, status.lease_expires_at, status.live) == (
        None,
        None,
        None,
        False,
    )
    assert (status.passes, status.dispatched, status.last_pass_at, status.counts_at) == (
        0,
        0,
        None,
        None,
    )
    assert status.now == clock.now()
    snapshot = await impl.count_active_jobs(tenants=[])
    assert snapshot.rows == [] and snapshot.measured_at == clock.now()
