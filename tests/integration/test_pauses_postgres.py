"""The dispatcher's pause tests of tests/unit/test_pauses.py, run again on PostgresJobStore:
the pause rows and the claim statements' paused tenants, on the injected ManualClock."""

from __future__ import annotations

from tests.integration.on_postgres import clock, store
from tests.unit.test_pauses import (
    pauses,
    rig,
    test_a_paused_tenant_stops_in_every_use_case_the_others_run,
    test_a_paused_use_case_claims_nothing_and_its_running_jobs_finish,
    test_a_resume_claims_again_earliest_deadline_first,
    test_a_tenant_paused_in_one_use_case_runs_in_the_others,
    test_pausing_twice_keeps_the_first_who_and_when,
    test_the_paused_gauge_shows_what_the_last_refresh_read,
    woken,
)

__all__ = [
    "clock",
    "pauses",
    "rig",
    "store",
    "test_a_paused_tenant_stops_in_every_use_case_the_others_run",
    "test_a_paused_use_case_claims_nothing_and_its_running_jobs_finish",
    "test_a_resume_claims_again_earliest_deadline_first",
    "test_a_tenant_paused_in_one_use_case_runs_in_the_others",
    "test_pausing_twice_keeps_the_first_who_and_when",
    "test_the_paused_gauge_shows_what_the_last_refresh_read",
    "woken",
]
