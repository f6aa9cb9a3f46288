"""The store contract: claims in EDF order within the use case's capacity and the tenant cap,
for the current leader only, and leases given back."""

from __future__ import annotations

from datetime import timedelta

from jobs_schema import JobStatus
from jobs_server.store.base import LeaderLease
from tests.contract.conftest import MakeJob, StoreAndClock, ids
from tests.contract.store_calls import claim, store_jobs


async def test_the_highest_priority_class_first_then_earliest_deadline_then_age(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    # a priority-1000 job due in 45 s runs before priority-0 jobs due in 40 s: a class above
    # is claimed first whatever its deadlines, EDF within a class, then the older id
    urgent_class = make_job(deadline=now + timedelta(seconds=45), priority=1000)
    soon = make_job(deadline=now + timedelta(seconds=40))
    soon_younger = make_job(deadline=now + timedelta(seconds=40))
    sooner = make_job(deadline=now + timedelta(seconds=20))
    below = make_job(deadline=now + timedelta(seconds=1), priority=-1)
    await store_jobs(impl, [soon, below, urgent_class, soon_younger, sooner])
    claimed = await claim(impl, leader, limit=3)
    assert ids(claimed) == [urgent_class.id, sooner.id, soon.id]
    assert ids(await claim(impl, leader)) == [soon_younger.id, below.id]


async def test_only_due_jobs_of_the_use_case(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    due = make_job()
    later = make_job(run_at=now + timedelta(seconds=30), deadline=now + timedelta(seconds=40))
    elsewhere = make_job(use_case="other")
    await store_jobs(impl, [due, later, elsewhere])
    assert ids(await claim(impl, leader)) == [due.id]
    assert ids(await claim(impl, leader, use_case="other")) == [elsewhere.id]


async def test_a_job_past_its_deadline_is_claimed_as_missed(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    now = clock.now()
    missed = make_job(run_at=now - timedelta(seconds=20), deadline=now - timedelta(seconds=10))
    await store_jobs(impl, [missed, make_job()])
    first, second = await claim(impl, leader)
    assert first.id == missed.id and first.missed_deadline and not second.missed_deadline
    job = await impl.get_job(missed.id, tenant=None)
    assert job is not None and job.deadline_missed


async def test_capacity_counts_the_use_cases_running_jobs(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    await store_jobs(impl, [make_job() for _ in range(5)] + [make_job(use_case="other")])
    assert len(await claim(impl, leader, use_case="other", capacity=3)) == 1
    assert len(await claim(impl, leader, capacity=3, limit=2)) == 2
    assert len(await claim(impl, leader, capacity=3)) == 1  # 2 running of 3
    assert await claim(impl, leader, capacity=3) == []
    assert await claim(impl, leader, capacity=0) == []


async def test_per_tenant_cap(store: StoreAndClock, make_job: MakeJob, leader: LeaderLease) -> None:
    impl, clock = store
    now = clock.now()

    def at(s: int) -> dict[str, object]:
        return {"deadline": now + timedelta(seconds=s)}

    acme = [make_job(**at(10)), make_job(**at(20)), make_job(**at(30))]
    globex = [make_job(**at(15)), make_job(**at(25))]
    await store_jobs(impl, acme)
    await store_jobs(impl, globex, tenant="globex")
    # one each: acme's earliest, globex's earliest, in EDF order
    assert ids(await claim(impl, leader, per_tenant_cap=1)) == [acme[0].id, globex[0].id]
    assert await claim(impl, leader, per_tenant_cap=1) == []
    # cap 2: one more of each; the capacity still bounds the whole
    assert ids(await claim(impl, leader, per_tenant_cap=2)) == [acme[1].id, globex[1].id]
    assert await claim(impl, leader, per_tenant_cap=5, capacity=4) == []
    assert ids(await claim(impl, leader, per_tenant_cap=5, capacity=5)) == [acme[2].id]


async def test_only_the_current_leader_claims(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    await store_jobs(impl, [make_job()])
    stale_epoch = LeaderLease(leader.name, leader.holder, leader.epoch + 1)
    other_holder = LeaderLease(leader.name, "scheduler-2", leader.epoch)
    unknown = LeaderLease("elsewhere", leader.holder, leader.epoch)
    for lease in (stale_epoch, other_holder, unknown):
        assert await claim(impl, lease) == []
        assert await claim(impl, lease, per_tenant_cap=3) == []
    await impl.resign_leadership(leader.name, leader.holder)
    assert await claim(impl, leader) == []


async def test_an_expired_leader_lease_claims_nothing(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, clock = store
    epoch = await impl.acquire_leadership("main", "scheduler-1", ttl=10)
    assert epoch is not None
    await store_jobs(impl, [make_job(deadline=clock.now() + timedelta(hours=1))])
    clock.advance(11)
    assert await claim(impl, LeaderLease("main", "scheduler-1", epoch)) == []


async def test_released_leases_are_pending_again_uncounted(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    await store_jobs(impl, [make_job(), make_job()])
    c1, c2 = await claim(impl, leader)
    await impl.cancel_job(c2.id, tenant=None)  # marked while running
    assert sorted(await impl.release_leases([c1.lease, c2.lease])) == sorted([c1.id, c2.id])
    j1 = await impl.get_job(c1.id, tenant=None)
    j2 = await impl.get_job(c2.id, tenant=None)
    assert j1 is not None and j1.status is JobStatus.PENDING and j1.attempts == 0
    assert j2 is not None and j2.status is JobStatus.CANCELLED and j2.finished_at is not None
    assert await impl.get_job_attempts(c1.id) == []
    assert await impl.release_leases([c1.lease]) == []  # fenced: that lease is gone
    assert await impl.release_leases([]) == []
    [again] = await claim(impl, leader)
    assert again.id == c1.id and again.attempt == 1 and again.lease_token != c1.lease_token
