"""The miss-policy tests of tests/unit/test_expiry.py, run again on PostgresJobStore: the
expirer's statement, the enqueue's expires_at and the retry take the ManualClock's time. (The
refusal of a grace and the expirer's batch bound are the service's rules, tested once.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from jobs_server.clock import ManualClock
from jobs_server.store.postgres import PostgresJobStore
from tests.unit.test_expiry import (
    test_a_job_held_past_its_deadline_plus_grace_ends_expired_and_never_runs,
    test_a_job_with_policy_run_late_runs,
    test_an_expired_job_is_retried_like_a_dead_one_and_keeps_its_grace,
    test_at_deadline_plus_grace_exactly_a_job_still_runs_and_just_after_it_expires,
    test_the_jobs_own_policy_wins_over_its_use_cases,
)

__all__ = [
    "test_a_job_held_past_its_deadline_plus_grace_ends_expired_and_never_runs",
    "test_a_job_with_policy_run_late_runs",
    "test_an_expired_job_is_retried_like_a_dead_one_and_keeps_its_grace",
    "test_at_deadline_plus_grace_exactly_a_job_still_runs_and_just_after_it_expires",
    "test_the_jobs_own_policy_wins_over_its_use_cases",
]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
async def store(database_url: str, clock: ManualClock) -> AsyncIterator[PostgresJobStore]:
    impl = await PostgresJobStore.connect(database_url, min_size=1, max_size=4, clock=clock)
    yield impl
    await impl.close()
