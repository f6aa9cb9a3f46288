"""The store contract for flow limits: at most K running jobs per concurrency key and at most N
starts per rate key in any interval, enforced by the claim without one key's backlog holding up
the others."""

from __future__ import annotations

from datetime import timedelta

from jobs_schema import JobStatus, RateLimit
from jobs_server.store.base import LeaderLease
from tests.contract.conftest import MakeJob, StoreAndClock, ids
from tests.contract.store_calls import claim, failure, store_jobs


async def test_at_most_k_running_per_concurrency_key(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    a = [make_job(concurrency_key="a", deadline=now + timedelta(seconds=10 + i)) for i in range(4)]
    b = [make_job(concurrency_key="b", deadline=now + timedelta(seconds=20 + i)) for i in range(3)]
    free = make_job(deadline=now + timedelta(seconds=30))
    await store_jobs(impl, [*a, *b, free])
    claimed = await claim(impl, leader, per_key_cap=2)
    assert ids(claimed) == [a[0].id, a[1].id, b[0].id, b[1].id, free.id]
    assert await claim(impl, leader, per_key_cap=2) == []
    # one of a's ends: a's next job takes its place, b stays full
    await impl.fail_attempts(
        [failure(claimed[0], next_status=JobStatus.DEAD)], require_expired=False
    )
    assert ids(await claim(impl, leader, per_key_cap=2)) == [a[2].id]
    assert ids(await claim(impl, leader, per_key_cap=3)) == [a[3].id, b[2].id]


async def test_a_blocked_concurrency_key_does_not_hold_up_the_others(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    # a's backlog comes first in EDF order and is far longer than a batch
    backlog = [
        make_job(concurrency_key="a", deadline=now + timedelta(seconds=i)) for i in range(30)
    ]
    others = [make_job(deadline=now + timedelta(seconds=100 + i)) for i in range(4)]
    keyed = make_job(concurrency_key="b", deadline=now + timedelta(seconds=200))
    await store_jobs(impl, [*backlog, *others, keyed])
    assert ids(await claim(impl, leader, limit=3, per_key_cap=1)) == [
        backlog[0].id,
        others[0].id,
        others[1].id,
    ]
    assert ids(await claim(impl, leader, limit=3, per_key_cap=1)) == [
        others[2].id,
        others[3].id,
        keyed.id,
    ]


async def test_at_most_n_starts_per_rate_key_in_any_interval(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    limit = RateLimit(starts=3, per_seconds=10)
    r = [make_job(rate_key="r", deadline=now + timedelta(seconds=10 + i)) for i in range(5)]
    s = make_job(rate_key="s", deadline=now + timedelta(seconds=20))
    free = make_job(deadline=now + timedelta(seconds=30))
    await store_jobs(impl, [*r, s, free])
    claimed = await claim(impl, leader, limit=2, rate_limit=limit)
    assert ids(claimed) == [r[0].id, r[1].id]
    clock.advance(1)
    assert ids(await claim(impl, leader, rate_limit=limit)) == [r[2].id, s.id, free.id]
    # ending an attempt frees no start: the interval counts starts, not running jobs
    await impl.fail_attempts(
        [failure(claimed[0], next_status=JobStatus.DEAD)], require_expired=False
    )
    clock.advance(8.999)
    assert await claim(impl, leader, rate_limit=limit) == []
    clock.advance(0.001)  # the first two starts leave the interval
    assert ids(await claim(impl, leader, rate_limit=limit)) == [r[3].id, r[4].id]


async def test_jobs_over_the_rate_wait_in_deadline_order(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    limit = RateLimit(starts=1, per_seconds=1)
    late = make_job(rate_key="r", deadline=now + timedelta(seconds=50))
    soon = make_job(rate_key="r", deadline=now + timedelta(seconds=10))
    urgent = make_job(rate_key="r", deadline=now + timedelta(seconds=5))
    await store_jobs(impl, [late, soon, urgent])
    order = []
    for _ in range(3):
        order += ids(await claim(impl, leader, rate_limit=limit))
        assert await claim(impl, leader, rate_limit=limit) == []
        clock.advance(1)
    assert order == [urgent.id, soon.id, late.id]


async def test_rate_and_concurrency_keys_and_tenant_cap_together(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()

    both = [
        make_job(concurrency_key="c", rate_key="r", deadline=now + timedelta(seconds=i))
        for i in range(3)
    ]
    rate_only = [make_job(rate_key="r", deadline=now + timedelta(seconds=10 + i)) for i in range(2)]
    other_tenant = [
        make_job(concurrency_key="c", deadline=now + timedelta(seconds=20 + i)) for i in range(2)
    ]
    await store_jobs(impl, [*both, *rate_only])
    await store_jobs(impl, other_tenant, tenant="globex")
    rate = RateLimit(starts=3, per_seconds=60)
    # c: two running at most (both[0], both[1]); r: three starts (those two and rate_only[0]);
    # globex's jobs wait for c
    assert ids(await claim(impl, leader, per_key_cap=2, rate_limit=rate)) == [
        both[0].id,
        both[1].id,
        rate_only[0].id,
    ]
    assert await claim(impl, leader, per_key_cap=2, rate_limit=rate, per_tenant_cap=5) == []
    # once c has room, a tenant cap of 1 admits one of globex's, and acme's r stays spent
    wider = {"per_key_cap": 5, "rate_limit": rate, "per_tenant_cap": 1}
    assert ids(await claim(impl, leader, **wider)) == [other_tenant[0].id]  # type: ignore[arg-type]
    assert await claim(impl, leader, **wider) == []  # type: ignore[arg-type]


async def test_the_keyed_claim_is_fenced_by_the_leader_lease(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    await store_jobs(impl, [make_job(concurrency_key="a", rate_key="r")])
    stale = LeaderLease(leader.name, leader.holder, leader.epoch + 1)
    limit = RateLimit(starts=5, per_seconds=1)
    assert await claim(impl, stale, per_key_cap=1, rate_limit=limit) == []
    assert len(await claim(impl, leader, per_key_cap=1, rate_limit=limit)) == 1


async def test_rate_buckets_show_each_keys_starts_and_waiting_jobs(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    limit = RateLimit(starts=2, per_seconds=10)
    await store_jobs(impl, [make_job(rate_key="busy") for _ in range(5)])
    await store_jobs(impl, [make_job(rate_key="calm")])
    t0 = clock.now()
    await claim(impl, leader, rate_limit=limit)
    clock.advance(1)
    await store_jobs(impl, [make_job(rate_key="busy")])
    buckets = await impl.list_rate_buckets("uc", per_seconds=10, limit=10)
    assert [(b.rate_key, b.starts, b.waiting) for b in buckets] == [
        ("busy", ((t0, 2),), 4),
        ("calm", ((t0, 1),), 0),
    ]
    assert [b.rate_key for b in await impl.list_rate_buckets("uc", per_seconds=10, limit=1)] == [
        "busy"
    ]
    clock.advance(9)  # the starts leave the interval: calm has nothing left to show
    buckets = await impl.list_rate_buckets("uc", per_seconds=10, limit=10)
    assert [(b.rate_key, b.starts, b.waiting) for b in buckets] == [("busy", (), 4)]
    assert await impl.list_rate_buckets("other", per_seconds=10, limit=10) == []


async def test_with_flow_limits_one_tenants_backlog_does_not_hold_up_another(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    # acme's keyless backlog comes first in EDF order, far longer than a batch
    backlog = [make_job(deadline=now + timedelta(seconds=i)) for i in range(20)]
    theirs = [make_job(deadline=now + timedelta(seconds=100 + i)) for i in range(2)]
    await store_jobs(impl, backlog)
    await store_jobs(impl, theirs, tenant="globex")
    limits = {"per_key_cap": 5, "rate_limit": RateLimit(starts=100, per_seconds=1)}
    claimed = await claim(impl, leader, limit=3, per_tenant_cap=1, **limits)  # type: ignore[arg-type]
    assert ids(claimed) == [backlog[0].id, theirs[0].id]


async def test_a_full_rate_key_is_passed_over_until_its_interval_has_room(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    rate = RateLimit(starts=2, per_seconds=60)
    # r's backlog comes first and is far longer than a claim's window
    backlog = [make_job(rate_key="r", deadline=now + timedelta(seconds=i)) for i in range(40)]
    others = [
        make_job(rate_key=f"o{i}", deadline=now + timedelta(seconds=100 + i)) for i in range(5)
    ]
    await store_jobs(impl, [*backlog, *others])
    assert ids(await claim(impl, leader, limit=3, rate_limit=rate)) == [
        backlog[0].id,
        backlog[1].id,
        others[0].id,
    ]
    clock.advance(59)
    assert ids(await claim(impl, leader, limit=3, rate_limit=rate)) == [
        others[1].id,
        others[2].id,
        others[3].id,
    ]
    clock.advance(1)  # r's two starts leave its interval
    assert ids(await claim(impl, leader, limit=3, rate_limit=rate)) == [
        backlog[2].id,
        backlog[3].id,
        others[4].id,
    ]
