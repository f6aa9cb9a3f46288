"""The miss-policy tests of tests/unit/test_expiry.py, run again on PostgresJobStore: the
expirer's statement, the enqueue's expires_at and the retry take the ManualClock's time. (The
refusal of a grace and the expirer's batch bound are the service's rules, tested once.)"""

from __future__ import annotations

from tests.integration.on_postgres import clock, store
from tests.unit.test_expiry import (
    test_a_job_held_past_its_deadline_plus_grace_ends_expired_and_never_runs,
    test_a_job_with_policy_run_late_runs,
    test_an_expired_job_is_retried_like_a_dead_one_and_keeps_its_grace,
    test_at_deadline_plus_grace_exactly_a_job_still_runs_and_just_after_it_expires,
    test_the_jobs_own_policy_wins_over_its_use_cases,
)

__all__ = [
    "clock",
    "store",
    "test_a_job_held_past_its_deadline_plus_grace_ends_expired_and_never_runs",
    "test_a_job_with_policy_run_late_runs",
    "test_an_expired_job_is_retried_like_a_dead_one_and_keeps_its_grace",
    "test_at_deadline_plus_grace_exactly_a_job_still_runs_and_just_after_it_expires",
    "test_the_jobs_own_policy_wins_over_its_use_cases",
]
