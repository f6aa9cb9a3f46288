"""The store contract of pauses: a scope's state with who changed it and when (the store's
clock), idempotent changes, the history, and claims that leave paused tenants' jobs pending."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobs_schema import JobStatus
from jobs_server.store.base import LeaderLease, QueuePause
from tests.contract.conftest import MakeJob, StoreAndClock, ids
from tests.contract.store_calls import claim, store_jobs


async def test_a_pause_records_who_when_and_why(store: StoreAndClock) -> None:
    impl, clock = store
    change = await impl.pause_queue("uc", "", principal="admin", reason="deploy")
    assert change.changed
    assert change.pause == QueuePause("uc", "", True, "admin", clock.now(), "deploy")
    assert await impl.list_pauses() == [change.pause]


async def test_pausing_twice_keeps_the_first_pause(store: StoreAndClock) -> None:
    impl, clock = store
    first = await impl.pause_queue("", "acme", principal="tenant:acme", reason=None)
    clock.advance(5)
    again = await impl.pause_queue("", "acme", principal="admin", reason="again")
    assert not again.changed and again.pause == first.pause
    assert await impl.list_pause_history(limit=10) == [first.pause]


async def test_resume_records_its_change_and_is_idempotent(store: StoreAndClock) -> None:
    impl, clock = store
    assert await impl.resume_queue("uc", "acme", principal="admin", reason=None) is None
    paused = await impl.pause_queue("uc", "acme", principal="admin", reason="noisy")
    clock.advance(60)
    resumed = await impl.resume_queue("uc", "acme", principal="tenant:acme", reason="fixed")
    assert resumed is not None and resumed.changed
    assert resumed.pause == QueuePause("uc", "acme", False, "tenant:acme", clock.now(), "fixed")
    again = await impl.resume_queue("uc", "acme", principal="admin", reason=None)
    assert again is not None and not again.changed and again.pause == resumed.pause
    assert await impl.list_pauses() == []
    assert await impl.list_pause_history(limit=10) == [resumed.pause, paused.pause]
    assert await impl.list_pause_history(limit=1) == [resumed.pause]


async def test_pauses_are_listed_by_use_case_then_tenant(store: StoreAndClock) -> None:
    impl, _ = store
    for use_case, tenant in [("uc", "b"), ("", "z"), ("uc", ""), ("other", "a"), ("uc", "a")]:
        await impl.pause_queue(use_case, tenant, principal="admin", reason=None)
    await impl.resume_queue("other", "a", principal="admin", reason=None)
    scopes = [(p.use_case, p.tenant) for p in await impl.list_pauses()]
    assert scopes == [("", "z"), ("uc", ""), ("uc", "a"), ("uc", "b")]


@pytest.mark.parametrize("per_tenant_cap", [None, 5])
async def test_a_claim_leaves_paused_tenants_jobs_pending(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease, per_tenant_cap: int | None
) -> None:
    impl, clock = store
    now = clock.now()
    acme = [make_job(deadline=now + timedelta(seconds=10 + i)) for i in range(2)]
    beta = [make_job(deadline=now + timedelta(seconds=20 + i)) for i in range(2)]
    await store_jobs(impl, acme, tenant="acme")
    await store_jobs(impl, beta, tenant="beta")
    await impl.pause_queue("", "acme", principal="admin", reason=None)  # acme everywhere
    claimed = await claim(impl, leader, per_tenant_cap=per_tenant_cap)
    assert ids(claimed) == [j.id for j in beta]
    for j in acme:
        job = await impl.get_job(j.id, tenant=None)
        assert job is not None and job.status is JobStatus.PENDING
    # no longer paused: acme's jobs are claimed, earliest deadline first
    await impl.resume_queue("", "acme", principal="admin", reason=None)
    assert ids(await claim(impl, leader, per_tenant_cap=per_tenant_cap)) == [j.id for j in acme]


@pytest.mark.parametrize("limits", [{}, {"per_tenant_cap": 5}, {"per_key_cap": 5}])
async def test_every_claim_statement_reads_the_pauses_itself(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease, limits: dict[str, int]
) -> None:
    """Plain, fair and keyed claims: a whole use case paused claims nothing, a tenant paused
    within it leaves that tenant's jobs, and a pause elsewhere changes nothing."""
    impl, clock = store
    now = clock.now()
    acme = [make_job(deadline=now + timedelta(seconds=10 + i)) for i in range(2)]
    beta = [make_job(deadline=now + timedelta(seconds=20 + i)) for i in range(2)]
    await store_jobs(impl, acme, tenant="acme")
    await store_jobs(impl, beta, tenant="beta")
    await impl.pause_queue("uc", "", principal="admin", reason=None)
    assert await claim(impl, leader, **limits) == []  # type: ignore[arg-type]
    await impl.resume_queue("uc", "", principal="admin", reason=None)
    await impl.pause_queue("uc", "acme", principal="admin", reason=None)
    await impl.pause_queue("other", "beta", principal="admin", reason=None)
    claimed = await claim(impl, leader, **limits)  # type: ignore[arg-type]
    assert ids(claimed) == [j.id for j in beta]
