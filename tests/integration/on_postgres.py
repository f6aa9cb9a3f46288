"""Fixtures that run a module of unit tests again on PostgreSQL: a module imports its tests and
these two fixtures, which replace the unit module's in-memory `store` (and its `clock`) with a
PostgresJobStore on the test database under the same ManualClock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from jobs_server.clock import ManualClock
from jobs_server.store.postgres import PostgresJobStore

__all__ = ["clock", "store"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
async def store(database_url: str, clock: ManualClock) -> AsyncIterator[PostgresJobStore]:
    impl = await PostgresJobStore.connect(database_url, min_size=1, max_size=4, clock=clock)
    yield impl
    await impl.close()
