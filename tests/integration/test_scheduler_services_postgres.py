"""The scheduler services' tests of tests/unit/test_scheduler_services.py, run again on
PostgresJobStore: its statements take the time from the injected ManualClock, so a lease
runs out, a backoff ends and a retention passes when the test moves the clock."""

from __future__ import annotations

from tests.integration.on_postgres import clock, store
from tests.unit.test_scheduler_services import (
    test_a_failed_publish_gives_the_claims_back,
    test_a_full_batch_asks_to_go_again,
    test_a_resigned_lease_is_taken_at_once,
    test_a_second_holder_is_refused_until_the_ttl_has_passed_by_the_clock,
    test_the_dispatcher_publishes_due_jobs_earliest_deadline_first,
    test_the_elector_takes_renews_each_third_of_its_ttl_and_resigns,
    test_the_embed_limit_comes_from_the_publisher,
    test_the_pruner_deletes_finished_jobs_past_their_use_cases_retention,
    test_the_queue_depth_refresher_exports_the_leaders_counts,
    test_the_reaper_retries_then_kills_expired_leases_and_frees_slots,
    test_the_stats_refresher_records_the_leaders_pass_and_dispatches,
)

__all__ = [
    "clock",
    "store",
    "test_a_failed_publish_gives_the_claims_back",
    "test_a_full_batch_asks_to_go_again",
    "test_a_resigned_lease_is_taken_at_once",
    "test_a_second_holder_is_refused_until_the_ttl_has_passed_by_the_clock",
    "test_the_dispatcher_publishes_due_jobs_earliest_deadline_first",
    "test_the_elector_takes_renews_each_third_of_its_ttl_and_resigns",
    "test_the_embed_limit_comes_from_the_publisher",
    "test_the_pruner_deletes_finished_jobs_past_their_use_cases_retention",
    "test_the_queue_depth_refresher_exports_the_leaders_counts",
    "test_the_reaper_retries_then_kills_expired_leases_and_frees_slots",
    "test_the_stats_refresher_records_the_leaders_pass_and_dispatches",
]
