"""FlowService: each rate key's starts in its interval, next slot, waiting and throttled jobs,
read off the InMemoryJobStore (the contract suite holds PostgreSQL to the same)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobs_schema import BackoffPolicy, JobsConfig, RateLimit
from jobs_server.auth import Principal, Role
from jobs_server.clock import ManualClock
from jobs_server.errors import Forbidden, UnknownUseCase
from jobs_server.flow import FlowService
from jobs_server.metrics import RateKeysRefresher, ServerMetrics
from jobs_server.service import JobIds
from jobs_server.store.base import LeaderLease, NewJob
from jobs_server.store.memory import InMemoryJobStore

ADMIN = Principal(role=Role.ADMIN, tenant=None)
RATE = RateLimit(starts=3, per_seconds=10)
CONFIG = JobsConfig.model_validate(
    {"use_cases": {"uc": {"queue": "q", "rate_limit": RATE.model_dump()}, "plain": {"queue": "p"}}}
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, tzinfo=UTC))


async def enqueue(
    store: InMemoryJobStore, clock: ManualClock, n: int, key: str, *, within: float = 60
) -> None:
    ids = JobIds(clock)
    now = clock.now()
    jobs = [
        NewJob(
            id=ids.new(),
            use_case="uc",
            job_type="t",
            payload={},
            priority=0,
            run_at=now,
            deadline=now + timedelta(seconds=within),
            max_attempts=1,
            backoff=BackoffPolicy(),
            rate_key=key,
        )
        for _ in range(n)
    ]
    await store.enqueue_jobs("acme", quota=None, jobs=jobs)


async def test_rate_keys_show_starts_next_slot_and_throttled(clock: ManualClock) -> None:
    store = InMemoryJobStore(clock)
    epoch = await store.acquire_leadership("main", "s", ttl=3600)
    assert epoch is not None
    leader = LeaderLease("main", "s", epoch)
    await enqueue(store, clock, 5, "busy")
    await enqueue(store, clock, 1, "calm", within=120)
    t0 = clock.now()
    claim = {"capacity": 100, "lease_seconds": 30, "leader": leader, "per_tenant_cap": None}
    assert len(await store.claim_due_jobs("uc", limit=2, rate_limit=RATE, **claim)) == 2
    clock.advance(4)
    assert len(await store.claim_due_jobs("uc", limit=100, rate_limit=RATE, **claim)) == 2
    flow = FlowService(store, CONFIG, clock=clock)
    listed = await flow.rate_keys(ADMIN, "uc", limit=10)
    assert (listed.starts, listed.per_seconds) == (3, 10)
    busy, calm = listed.keys
    # busy: 2 at t0, 1 at t0+4, full; one more may start when t0's two leave the interval
    assert (busy.rate_key, busy.started, busy.waiting, busy.throttled) == ("busy", 3, 2, 2)
    assert busy.next_slot == t0 + timedelta(seconds=10)
    assert (calm.rate_key, calm.started, calm.waiting, calm.throttled) == ("calm", 1, 0, 0)
    assert calm.next_slot == clock.now()
    clock.advance(6)
    busy, _ = (await flow.rate_keys(ADMIN, "uc", limit=10)).keys  # calm started at t0+4
    assert (busy.started, busy.throttled, busy.next_slot) == (1, 0, clock.now())


async def test_rate_keys_are_for_admins_of_known_use_cases(clock: ManualClock) -> None:
    flow = FlowService(InMemoryJobStore(clock), CONFIG, clock=clock)
    with pytest.raises(Forbidden):
        await flow.rate_keys(Principal(role=Role.TENANT, tenant="acme"), "uc", limit=10)
    with pytest.raises(UnknownUseCase):
        await flow.rate_keys(ADMIN, "nope", limit=10)
    plain = await flow.rate_keys(ADMIN, "plain", limit=10)
    assert (plain.starts, plain.keys) == (None, [])


async def test_the_rate_keys_refresher_exports_the_leaders_throttled_jobs(
    clock: ManualClock,
) -> None:
    store = InMemoryJobStore(clock)
    epoch = await store.acquire_leadership("main", "s", ttl=3600)
    assert epoch is not None
    leader = LeaderLease("main", "s", epoch)
    await enqueue(store, clock, 5, "busy")
    await enqueue(store, clock, 1, "calm", within=120)
    t0 = clock.now()
    claim = {"capacity": 100, "lease_seconds": 30, "leader": leader, "per_tenant_cap": None}
    await store.claim_due_jobs("uc", limit=100, rate_limit=RATE, **claim)  # busy 3, calm 1
    metrics = ServerMetrics()
    leading = [False]
    refresher = RateKeysRefresher(metrics, store, CONFIG.use_cases, leading=lambda: leading[0])
    assert await refresher.run_once(clock.now()) == 0  # a standby exports nothing
    assert "jobs_rate_throttled{" not in metrics.render().decode()
    leading[0] = True
    clock.advance(4)
    assert await refresher.run_once(clock.now()) == 2
    assert metrics.rate_throttled.labels("uc")._value.get() == 2
    assert metrics.rate_throttled_keys.labels("uc")._value.get() == 1
    assert metrics.rate_next_slot.labels("uc")._value.get() == 6  # t0 + 10 - (t0 + 4)
    clock.set(t0 + timedelta(seconds=10))
    assert await refresher.run_once(clock.now()) == 0
    assert metrics.rate_next_slot.labels("uc")._value.get() == 0


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("rate_limit = { starts = 0, per_seconds = 1 }", "use_cases.uc.rate_limit.starts"),
        ("rate_limit = { starts = -3, per_seconds = 1 }", "use_cases.uc.rate_limit.starts"),
        ("rate_limit = { starts = 10001, per_seconds = 1 }", "use_cases.uc.rate_limit.starts"),
        ("rate_limit = { starts = 5, per_seconds = 0 }", "use_cases.uc.rate_limit.per_seconds"),
        ("rate_limit = { starts = 5, per_seconds = -1 }", "use_cases.uc.rate_limit.per_seconds"),
        ("rate_limit = { starts = 5 }", "use_cases.uc.rate_limit.per_seconds"),
        ("rate_limit = { starts = 1.5, per_seconds = 1 }", "use_cases.uc.rate_limit.starts"),
        (
            "rate_limit = { starts = 5, per_seconds = 1, burst = 2 }",
            "use_cases.uc.rate_limit.burst",
        ),
        ("concurrency_limit_per_key = 0", "use_cases.uc.concurrency_limit_per_key"),
        ("concurrency_limit_per_key = -1", "use_cases.uc.concurrency_limit_per_key"),
        ('concurrency_limit_per_key = "2"', "use_cases.uc.concurrency_limit_per_key"),
    ],
)
def test_a_bad_limit_fails_at_load_naming_the_field(toml: str, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        JobsConfig.from_toml(f'[use_cases.uc]\nqueue = "q"\n{toml}\n', source="jobs.toml")


def test_a_limit_on_an_unconfigured_use_case_fails_at_load() -> None:
    text = (
        '[use_cases.uc]\nqueue = "q"\n\n[use_cases.ghost.rate_limit]\nstarts = 1\nper_seconds = 1\n'
    )
    with pytest.raises(ValueError, match=r"jobs\.toml: use_cases\.ghost\.queue: Field required"):
        JobsConfig.from_toml(text, source="jobs.toml")
    with pytest.raises(ValueError, match=r"rate_limits"):  # no table of limits beside use cases
        JobsConfig.from_toml(
            '[use_cases.uc]\nqueue = "q"\n[rate_limits.uc]\nstarts = 1\n', source="jobs.toml"
        )
    good = JobsConfig.from_toml(
        '[use_cases.uc]\nqueue = "q"\nconcurrency_limit_per_key = 2\n'
        "rate_limit = { starts = 10, per_seconds = 1 }\n",
        source="jobs.toml",
    )
    uc = good.use_cases["uc"]
    assert (uc.concurrency_limit_per_key, uc.rate_limit) == (2, RateLimit(starts=10, per_seconds=1))
