"""Each scheduler service alone: one `run_once(now)` against the in-memory store, on a
ManualClock that the test moves instead of sleeping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs_schema import BackoffPolicy, JobStatus, RateLimit, UseCaseConfig, jobs_in_body
from jobs_server.clock import ManualClock
from jobs_server.errors import ConfigError
from jobs_server.metrics import QueueDepthRefresher, ServerMetrics
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import InMemoryPublisher
from jobs_server.scheduler import (
    Dispatcher,
    Elector,
    Pruner,
    PublishFailed,
    Reaped,
    Reaper,
    SchedulerStats,
    embed_limit,
)
from jobs_server.service import JobIds
from jobs_server.settings import load_settings
from jobs_server.stats import DispatchRollup, StatsRefresher
from jobs_server.store.base import JobFilter, NewJob, SucceededAttempt
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.wiring import scheduler_config

BACKOFF = BackoffPolicy(kind="constant", base_seconds=1, cap_seconds=1, jitter=0)
TTL = 9.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def store(clock: ManualClock) -> InMemoryJobStore:
    return InMemoryJobStore(clock)


def use_case(queue: str = "q", **overrides: Any) -> UseCaseConfig:
    values: dict[str, Any] = {"queue": queue, "capacity": 100, "lease_seconds": 30}
    return UseCaseConfig.model_validate(values | overrides)


async def enqueue(
    store: InMemoryJobStore, clock: ManualClock, n: int = 1, **fields: Any
) -> list[NewJob]:
    now = clock.now()
    ids = JobIds(clock)
    jobs = [
        NewJob(
            **(
                {
                    "id": ids.new(),
                    "use_case": "uc",
                    "job_type": "uc.run",
                    "payload": {"n": i},
                    "priority": 0,
                    "run_at": now,
                    "deadline": now + timedelta(seconds=60),
                    "max_attempts": 2,
                    "backoff": BACKOFF,
                }
                | fields
            )
        )
        for i in range(n)
    ]
    await store.enqueue_jobs("acme", quota=None, jobs=jobs)
    return jobs


class CountingLeaderStore:
    """The leader port of a store, counting the tries to take the lease."""

    def __init__(self, inner: InMemoryJobStore) -> None:
        self.inner = inner
        self.tries = 0

    async def acquire_leadership(self, name: str, holder: str, *, ttl: float) -> int | None:
        self.tries += 1
        return await self.inner.acquire_leadership(name, holder, ttl=ttl)

    async def resign_leadership(self, name: str, holder: str) -> None:
        await self.inner.resign_leadership(name, holder)

    async def listen(self, channel: str, callback: Any) -> Any:
        return await self.inner.listen(channel, callback)


def elector(store: Any, holder: str, **kw: Any) -> Elector:
    return Elector(store, name="main", ttl_seconds=TTL, holder=holder, **kw)


def dispatcher(
    store: InMemoryJobStore,
    clock: ManualClock,
    lead: Elector,
    publisher: InMemoryPublisher | None = None,
    **uc: Any,
) -> Dispatcher:
    return Dispatcher(
        store,
        publisher or InMemoryPublisher(),
        {"uc": use_case(**uc)},
        elector=lead,
        clock=clock,
        claim_batch=10,
    )


# -- Elector ---------------------------------------------------------------------------------


async def test_the_elector_takes_renews_each_third_of_its_ttl_and_resigns(store, clock):
    counting = CountingLeaderStore(store)
    changes: list[bool] = []
    a = elector(counting, "a", on_change=changes.append)
    lease = await a.run_once(clock.now())
    assert lease is not None and lease.epoch == 1 and a.lease == lease
    clock.advance(TTL / 3 - 0.1)
    assert await a.run_once(clock.now()) == lease
    assert counting.tries == 1  # within a third of the TTL: no store call
    clock.advance(0.1)
    assert await a.run_once(clock.now()) == lease
    assert counting.tries == 2  # renewed, same epoch
    await a.resign()
    assert a.lease is None
    assert changes == [True, False]


async def test_a_second_holder_is_refused_until_the_ttl_has_passed_by_the_clock(store, clock):
    a, b = elector(store, "a"), elector(store, "b")
    assert (await a.run_once(clock.now())).epoch == 1
    assert await b.run_once(clock.now()) is None
    clock.advance(TTL - 0.5)  # a stalls: it renews no more
    assert await b.run_once(clock.now()) is None
    clock.advance(1)
    taken = await b.run_once(clock.now())
    assert taken is not None and taken.epoch == 2
    assert a.lease is not None  # it has not noticed yet...
    assert await a.run_once(clock.now()) is None  # ...until it tries to renew
    assert a.lease is None


async def test_a_resigned_lease_is_taken_at_once(store, clock):
    a, b = elector(store, "a"), elector(store, "b")
    await a.run_once(clock.now())
    await a.resign()
    assert (await b.run_once(clock.now())).epoch == 2


# -- Dispatcher ------------------------------------------------------------------------------


async def test_the_dispatcher_publishes_due_jobs_earliest_deadline_first(store, clock):
    lead = elector(store, "a")
    publisher = InMemoryPublisher()
    d = dispatcher(store, clock, lead, publisher, capacity=2)
    now = clock.now()
    late, soon, future = (
        await enqueue(store, clock, deadline=now + timedelta(seconds=50)),
        await enqueue(store, clock, deadline=now + timedelta(seconds=5)),
        await enqueue(store, clock, run_at=now + timedelta(seconds=30)),
    )
    assert (await d.run_once(clock.now())).sent == 0  # not leading: nothing claimed
    await lead.run_once(clock.now())
    result = await d.run_once(clock.now())
    assert (result.sent, result.more) == (2, False)
    sent = [str(j.job_id) for b in publisher.sent["q"] for j in jobs_in_body(b)]
    assert sent == [str(soon[0].id), str(late[0].id)]
    assert str(future[0].id) not in sent
    assert d.stats.dispatched == 2 and d.stats.passes == 1  # a standby's pass does not count
    assert d.stats.last_pass_at == clock.now()


async def test_a_full_batch_asks_to_go_again(store, clock):
    lead = elector(store, "a")
    await lead.run_once(clock.now())
    await enqueue(store, clock, 25)
    d = dispatcher(store, clock, lead)  # claim_batch 10, pipelined: all 25 in one pass
    result = await d.run_once(clock.now())
    assert (result.sent, result.more) == (25, True)


async def test_a_failed_publish_gives_the_claims_back(store, clock):
    lead = elector(store, "a")
    await lead.run_once(clock.now())
    await enqueue(store, clock, 3)
    publisher = InMemoryPublisher(down=True)
    d = dispatcher(store, clock, lead, publisher)
    with pytest.raises(PublishFailed):
        await d.run_once(clock.now())
    jobs = await store.list_jobs(JobFilter())
    assert {j.status for j in jobs} == {JobStatus.PENDING}
    assert (d.stats.publish_failures, d.stats.released) == (3, 3)
    publisher.down = False
    assert (await d.run_once(clock.now())).sent == 3


async def test_the_embed_limit_comes_from_the_publisher(store, clock):
    lead = elector(store, "a")
    await lead.run_once(clock.now())
    await enqueue(store, clock, payload={"text": "x" * 5000})
    small = InMemoryPublisher(max_message_bytes=8192)
    assert embed_limit(small.max_message_bytes) == 4096
    await dispatcher(store, clock, lead, small).run_once(clock.now())
    (body,) = small.sent["q"]
    assert json.loads(body)["payload"] is None  # the worker fetches it
    roomy = InMemoryPublisher()
    await enqueue(store, clock, payload={"text": "x" * 5000})
    await dispatcher(store, clock, lead, roomy).run_once(clock.now())
    (body,) = roomy.sent["q"]
    assert json.loads(body)["payload"] == {"text": "x" * 5000}


# -- Reaper ----------------------------------------------------------------------------------


async def test_the_reaper_retries_then_kills_expired_leases_and_frees_slots(store, clock):
    lead = elector(store, "a")
    await lead.run_once(clock.now())
    await enqueue(store, clock)  # max_attempts 2
    freed: list[None] = []
    outcomes = OutcomeService(store, clock=clock, on_slots_freed=lambda: freed.append(None))
    stats = SchedulerStats()
    reaper = Reaper(outcomes, batch=10, stats=stats)
    d = dispatcher(store, clock, lead, lease_seconds=5)
    assert (await d.run_once(clock.now())).sent == 1
    assert (await reaper.run_once(clock.now())).count == 0  # the lease still runs
    clock.advance(6)
    assert await reaper.run_once(clock.now()) == Reaped(retried=1, dead=0)
    assert freed == [None]
    clock.advance(1)  # the constant backoff of 1 s
    await lead.run_once(clock.now())
    assert (await d.run_once(clock.now())).sent == 1
    clock.advance(6)
    assert await reaper.run_once(clock.now()) == Reaped(retried=0, dead=1)
    assert stats.reaped == 2 and len(freed) == 2
    (job,) = await store.list_jobs(JobFilter())
    assert job.status is JobStatus.DEAD


# -- Pruner ----------------------------------------------------------------------------------


async def test_the_pruner_deletes_finished_jobs_past_their_use_cases_retention(store, clock):
    lease = await elector(store, "a").run_once(clock.now())
    assert lease is not None
    await enqueue(store, clock, 5)
    await enqueue(store, clock, 2, use_case="other")
    for name in ("uc", "other"):
        claimed = await store.claim_due_jobs(
            name, capacity=10, limit=10, lease_seconds=30, leader=lease, per_tenant_cap=None
        )
        await store.complete_attempts(
            [SucceededAttempt(c.id, c.attempt, c.lease_token, result=None) for c in claimed]
        )
    stats = SchedulerStats()
    pruner = Pruner(
        store,
        {"uc": 3600.0, "other": 7200.0},
        batch=2,
        idempotency_retention_seconds=86_400,
        stats=stats,
    )
    assert (await pruner.run_once(clock.now())).jobs == 0  # nothing is old enough
    clock.advance(3601)
    assert (await pruner.run_once(clock.now())).jobs == 5  # in bounded batches of 2
    assert {j.use_case for j in await store.list_jobs(JobFilter())} == {"other"}
    clock.advance(3600)
    assert (await pruner.run_once(clock.now())).jobs == 2
    assert stats.pruned == 7


async def test_the_pruner_sweeps_rate_buckets_a_bounded_step_at_a_time_and_old_pauses(store, clock):
    lease = await elector(store, "a").run_once(clock.now())
    assert lease is not None
    await enqueue(store, clock, 1, rate_key="r")  # one key under a limit of 10 s
    for k in range(5):  # and five of a use case whose limit is gone
        await enqueue(store, clock, 1, use_case="old", rate_key=f"k{k}")
    limit = RateLimit(starts=10, per_seconds=10)
    for name in ("uc", "old"):
        await store.claim_due_jobs(
            name,
            capacity=10,
            limit=10,
            lease_seconds=30,
            leader=lease,
            per_tenant_cap=None,
            rate_limit=limit,
        )
    await store.pause_queue("uc", "", principal="admin", reason=None)
    pruner = Pruner(
        store,
        {},
        batch=1,
        idempotency_retention_seconds=86_400,
        rate_windows={"uc": 10.0},
        pause_history_retention_seconds=3600,
    )
    clock.advance(10)
    # "uc"'s key is a window old; the others are kept for a day; 1 row a step, 10 steps a pass
    assert (await pruner.run_once(clock.now())).rate_buckets == 1
    clock.advance(86_400)
    first = await pruner.run_once(clock.now())
    assert (first.rate_buckets, first.pause_history) == (5, 1)
    assert await store.list_rate_buckets("old", per_seconds=86_400, limit=10) == []
    assert [p.paused for p in await store.list_pauses()] == [True]


def test_the_pause_history_retention_setting_has_a_range_and_reaches_the_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBS_PAUSE_HISTORY_RETENTION_SECONDS", "7200")
    assert scheduler_config(load_settings()).pause_history_retention_seconds == 7200
    monkeypatch.setenv("JOBS_PAUSE_HISTORY_RETENTION_SECONDS", "60")
    with pytest.raises(ConfigError, match="JOBS_PAUSE_HISTORY_RETENTION_SECONDS"):
        load_settings()


# -- the statistics --------------------------------------------------------------------------


async def test_the_stats_refresher_records_the_leaders_pass_and_dispatches(store, clock):
    lead = elector(store, "a")
    stats, rollup = SchedulerStats(), DispatchRollup()
    d = Dispatcher(
        store,
        InMemoryPublisher(),
        {"uc": use_case()},
        elector=lead,
        clock=clock,
        claim_batch=10,
        stats=stats,
        rollup=rollup,
    )
    refresher = StatsRefresher(store, ["uc"], name="main", lease=lead, stats=stats, rollup=rollup)
    await lead.run_once(clock.now())
    await enqueue(store, clock, 3)
    await d.run_once(clock.now())
    done = await refresher.run_once(clock.now())
    assert done is not None and done.dispatch_rows == 1
    status = await store.get_scheduler_status("main")
    assert (status.holder, status.epoch, status.dispatched, status.passes) == ("a", 1, 3, 1)
    (minute,) = await store.get_minute_stats(since=clock.now() - timedelta(hours=1), tenant=None)
    assert minute.dispatched == 3


async def test_the_queue_depth_refresher_exports_the_leaders_counts(store, clock):
    metrics = ServerMetrics()
    depth = QueueDepthRefresher(metrics, store, ["uc"])
    await enqueue(store, clock, 4)
    depth.leading(True)
    snapshot = await depth.run_once(clock.now())
    assert snapshot is not None
    assert metrics.queue_depth.labels("uc", "pending")._value.get() == 4
    assert metrics.leader._value.get() == 1
    await depth.close()
    assert metrics.leader._value.get() == 0
