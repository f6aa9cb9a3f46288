"""The contract suites: each port's real adapter and its fake, one suite run against both, so
the fake cannot drift from what production does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from jobs_schema import BackoffPolicy
from jobs_server.clock import ManualClock
from jobs_server.service import new_job_id
from jobs_server.store.base import JobStore, LeaderLease, NewJob
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.store.postgres import PostgresJobStore

StoreAndClock = tuple[JobStore, ManualClock]
MakeJob = Callable[..., NewJob]

BACKOFF = BackoffPolicy(kind="constant", base_seconds=1, cap_seconds=1, jitter=0)


@pytest.fixture(params=["memory", "postgres"])
def store_backend(request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory store, else the URL of a database of this test's own."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("database_url")
    return url


@pytest.fixture
async def store(store_backend: str | None) -> AsyncIterator[StoreAndClock]:
    clock = ManualClock(datetime.now(UTC))
    impl: JobStore
    if store_backend is None:
        impl = InMemoryJobStore(clock)
    else:
        impl = await PostgresJobStore.connect(store_backend, min_size=1, max_size=4, clock=clock)
    yield impl, clock
    await impl.close()


@pytest.fixture
def make_job(store: StoreAndClock) -> MakeJob:
    """Factory: a NewJob due now by the store's clock, a minute's tolerance, overrides applied."""
    _, clock = store

    def make(**overrides: Any) -> NewJob:
        now = clock.now()
        values: dict[str, Any] = {
            "id": new_job_id(),
            "use_case": "uc",
            "job_type": "uc.run",
            "payload": {"n": 1},
            "priority": 0,
            "run_at": now,
            "deadline": now + timedelta(seconds=60),
            "max_attempts": 3,
            "backoff": BACKOFF,
        }
        values.update(overrides)
        return NewJob(**values)

    return make


@pytest.fixture
async def leader(store: StoreAndClock) -> LeaderLease:
    """This test's scheduler holding the leader lease for an hour of its clock."""
    impl, _ = store
    epoch = await impl.acquire_leadership("main", "scheduler-1", ttl=3600)
    assert epoch is not None
    return LeaderLease("main", "scheduler-1", epoch)


def ids(items: list[Any]) -> list[UUID]:
    return [i.id for i in items]
