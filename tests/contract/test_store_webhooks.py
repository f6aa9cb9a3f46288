"""The store contract of webhooks: a job's change into a watched state writes an outbox event
for tenants with a subscription wanting it (and for no one else), the fan-out makes one
delivery job per (event, subscription), exactly once even when two leaders race, and the
delivery log is read from those jobs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import uuid4

from jobs_schema import BackoffPolicy, JobStatus
from jobs_schema.webhooks import WEBHOOK_JOB_TYPE, WEBHOOKS_USE_CASE
from jobs_server.service import JobIds
from jobs_server.store.base import (
    GraphResult,
    JobFilter,
    JobStore,
    LeaderLease,
    NewBatch,
    SucceededAttempt,
)
from jobs_server.store.webhook_port import FanOutRules, StoredWebhook
from tests.contract.conftest import MakeJob, StoreAndClock
from tests.contract.store_calls import claim, failure, store_jobs

RULES = FanOutRules(
    use_case=WEBHOOKS_USE_CASE,
    job_type=WEBHOOK_JOB_TYPE,
    tolerance_seconds=60,
    max_attempts=4,
    backoff=BackoffPolicy(base_seconds=2, cap_seconds=10),
)
ALL = ["cancelled", "dead", "deadline_missed", "expired", "succeeded"]


async def subscribe(
    impl: JobStore,
    store: StoreAndClock,
    *,
    tenant: str = "acme",
    events: list[str] | None = None,
    use_case: str | None = None,
    limit: int = 25,
) -> StoredWebhook:
    _, clock = store
    hook = StoredWebhook(
        id=JobIds(clock).new(),
        tenant=tenant,
        url="https://example.com/hook",
        event_types=events or ALL,
        use_case=use_case,
        description="",
        paused=False,
        created_at=clock.now(),
    )
    made = await impl.create_webhook(hook, secret="s3cret", limit=limit)
    assert made == hook
    return hook


async def deliveries(impl: JobStore) -> list[dict[str, Any]]:
    jobs = await impl.list_jobs(JobFilter(use_case=WEBHOOKS_USE_CASE, limit=1000))
    out = []
    for j in jobs:
        assert isinstance(j.payload, dict)
        out.append(j.payload)
    return out


async def test_events_of_each_finished_state_reach_the_subscribed_tenant_only(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, clock = store
    hook = await subscribe(impl, store)
    now = clock.now()
    ok, bad, late = make_job(), make_job(max_attempts=1), make_job(deadline=now)
    gone = make_job()
    expiring = make_job(deadline=now, expires_at=now + timedelta(seconds=1))
    await store_jobs(impl, [ok, bad, gone, expiring])
    other = make_job()
    await store_jobs(impl, [other], tenant="globex")  # no subscription: no events
    clock.advance(2)  # `late` is claimed past its deadline; `expiring` expires first
    assert [e.id for e in await impl.expire_jobs(["uc"], limit=10)] == [expiring.id]
    await impl.cancel_job(gone.id, tenant="acme")
    claimed = {c.id: c for c in await claim(impl, leader)}
    await store_jobs(impl, [late])
    claimed |= {c.id: c for c in await claim(impl, leader)}
    assert set(claimed) == {ok.id, bad.id, other.id, late.id}
    await impl.complete_attempts(
        [
            SucceededAttempt(c.id, c.attempt, c.lease_token, {"r": 1})
            for c in claimed.values()
            if c.id in (ok.id, other.id)
        ]
    )
    await impl.fail_attempts(
        [failure(claimed[bad.id], next_status=JobStatus.DEAD)], require_expired=False
    )

    done = await impl.fan_out_webhook_events(RULES, limit=100)
    assert (done.events, done.deliveries) == (5, 5)
    sent = await deliveries(impl)
    got = sorted((p["event"]["type"], p["event"]["job_id"]) for p in sent)
    assert got == sorted(
        [
            ("succeeded", str(ok.id)),
            ("dead", str(bad.id)),
            ("cancelled", str(gone.id)),
            ("expired", str(expiring.id)),
            ("deadline_missed", str(late.id)),
        ]
    )
    assert {p["subscription_id"] for p in sent} == {str(hook.id)}
    assert len({p["event"]["id"] for p in sent}) == 5
    one = next(p["event"] for p in sent if p["event"]["type"] == "succeeded")
    assert (one["tenant"], one["use_case"], one["status"], one["attempts"]) == (
        "acme",
        "uc",
        "succeeded",
        1,
    )
    jobs = await impl.list_jobs(JobFilter(use_case=WEBHOOKS_USE_CASE, limit=10))
    assert {(j.tenant, j.job_type, j.status, j.max_attempts) for j in jobs} == {
        ("acme", WEBHOOK_JOB_TYPE, JobStatus.PENDING, 4)
    }
    assert await impl.fan_out_webhook_events(RULES, limit=100) == type(done)(0, 0)


async def test_filters_pauses_and_the_deliveries_own_changes_make_no_events(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    await subscribe(impl, store, events=["dead"])
    await subscribe(impl, store, events=["succeeded"], use_case="uc2")
    paused = await subscribe(impl, store, events=["succeeded"])
    assert await impl.set_webhook_paused(paused.id, tenant="acme", paused=True) is not None
    job = make_job()
    await store_jobs(impl, [job])
    [c] = await claim(impl, leader)
    await impl.complete_attempts([SucceededAttempt(c.id, c.attempt, c.lease_token, None)])
    # succeeded in uc: wanted only by a paused subscription and one of uc2
    assert (await impl.fan_out_webhook_events(RULES, limit=10)).deliveries == 0

    await impl.set_webhook_paused(paused.id, tenant="acme", paused=False)
    again = make_job()
    await store_jobs(impl, [again])
    [c] = await claim(impl, leader)
    await impl.complete_attempts([SucceededAttempt(c.id, c.attempt, c.lease_token, None)])
    assert (await impl.fan_out_webhook_events(RULES, limit=10)).deliveries == 1
    # the delivery job itself succeeds: no event about it
    [d] = await claim(impl, leader, use_case=WEBHOOKS_USE_CASE)
    await impl.complete_attempts(
        [SucceededAttempt(d.id, d.attempt, d.lease_token, {"status_code": 204})]
    )
    assert (await impl.fan_out_webhook_events(RULES, limit=10)).events == 0
    [log] = await impl.list_webhook_deliveries(paused.id, before=None, limit=10)
    assert (log.job_id, log.status, log.attempts, log.result) == (
        d.id,
        "succeeded",
        1,
        {"status_code": 204},
    )
    assert log.event_type == "succeeded"
    assert await impl.list_webhook_deliveries(paused.id, before=d.id, limit=10) == []


async def test_two_leaders_fanning_out_at_once_make_each_delivery_once(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    hooks = [await subscribe(impl, store, events=["cancelled"]) for _ in range(2)]
    jobs = [make_job() for _ in range(40)]
    await store_jobs(impl, jobs)
    for j in jobs:
        await impl.cancel_job(j.id, tenant="acme")
    results = await asyncio.gather(
        *(impl.fan_out_webhook_events(RULES, limit=7) for _ in range(12))
    )
    assert sum(r.events for r in results) == 40
    assert sum(r.deliveries for r in results) == 80
    sent = await deliveries(impl)
    pairs = {(p["event"]["job_id"], p["subscription_id"]) for p in sent}
    assert len(sent) == len(pairs) == 80
    assert {s for _, s in pairs} == {str(h.id) for h in hooks}


async def test_subscriptions_are_a_tenants_own_and_limited(store: StoreAndClock) -> None:
    impl, clock = store
    a = await subscribe(impl, store, limit=2)
    await subscribe(impl, store, limit=2)
    late = StoredWebhook(
        id=JobIds(clock).new(),
        tenant="acme",
        url="https://example.com/3",
        event_types=["dead"],
        use_case=None,
        description="",
        paused=False,
        created_at=clock.now(),
    )
    assert await impl.create_webhook(late, secret="x", limit=2) is None
    await subscribe(impl, store, tenant="globex", limit=2)
    assert len(await impl.list_webhooks(tenant="acme", limit=10)) == 2
    assert len(await impl.list_webhooks(tenant=None, limit=10)) == 3
    assert await impl.get_webhook(a.id, tenant="globex") is None
    assert await impl.get_webhook(a.id, tenant="acme") == a
    target = await impl.get_webhook_target(a.id)
    assert target is not None and (target.url, target.secret) == (a.url, "s3cret")
    assert not await impl.delete_webhook(a.id, tenant="globex")
    assert await impl.delete_webhook(a.id, tenant="acme")
    assert await impl.get_webhook_target(a.id) is None
    assert await impl.create_webhook(late, secret="x", limit=2) == late


async def test_an_emitted_event_reaches_the_subscriptions_that_want_it(
    store: StoreAndClock,
) -> None:
    impl, _ = store
    hook = await subscribe(impl, store, events=["batch_finished"])
    await subscribe(impl, store, events=["batch_finished"], use_case="uc2")
    data = {"batch_id": "b1", "counts": {"succeeded": 2, "dead": 1}}
    assert await impl.emit_webhook_event("acme", "batch_finished", use_case="uc", data=data)
    assert not await impl.emit_webhook_event("acme", "dead", use_case="uc", data={})
    assert not await impl.emit_webhook_event("globex", "batch_finished", use_case=None, data={})
    done = await impl.fan_out_webhook_events(RULES, limit=10)
    assert (done.events, done.deliveries) == (1, 1)
    [sent] = await deliveries(impl)
    assert sent["subscription_id"] == str(hook.id)
    event = sent["event"]
    assert (event["type"], event["tenant"], event["use_case"], event["data"]) == (
        "batch_finished",
        "acme",
        "uc",
        data,
    )


async def test_a_batch_whose_last_job_ends_sends_batch_finished_once(
    store: StoreAndClock, make_job: MakeJob, leader: LeaderLease
) -> None:
    impl, _ = store
    hook = await subscribe(impl, store, events=["batch_finished"])
    batch = NewBatch(id=uuid4(), callback_job_id=uuid4(), callback=make_job(job_type="t.done"))
    out = await impl.enqueue_graph(
        "acme",
        quota=None,
        jobs=[make_job(max_attempts=1) for _ in range(2)],
        links=[],
        batch=batch,
    )
    assert isinstance(out, GraphResult)
    first, second = await claim(impl, leader)
    await impl.complete_attempts(
        [SucceededAttempt(first.id, first.attempt, first.lease_token, None)]
    )
    assert (await impl.fan_out_webhook_events(RULES, limit=10)).events == 0  # not yet finished
    await impl.fail_attempts([failure(second, next_status=JobStatus.DEAD)], require_expired=False)
    done = await impl.fan_out_webhook_events(RULES, limit=10)
    assert (done.events, done.deliveries) == (1, 1)
    [sent] = await deliveries(impl)
    assert sent["subscription_id"] == str(hook.id)
    event = sent["event"]
    assert (event["type"], event["tenant"], event["use_case"]) == ("batch_finished", "acme", None)
    assert event["data"] == {
        "batch_id": str(batch.id),
        "counts": {"succeeded": 1, "dead": 1, "cancelled": 0, "expired": 0},
        "failed_job_ids": [str(second.id)],
        "callback_job_id": str(batch.callback_job_id),
    }
    assert (await impl.fan_out_webhook_events(RULES, limit=10)).events == 0  # once
