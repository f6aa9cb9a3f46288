"""Uniqueness rules in the SDK: the enqueue options of both clients and of a Task, checked
before sending, and honoured by the fake clients as by the server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from jobs_schema import JobStatus, UniqueRule, UniqueWindow
from jobs_sdk import Task, ValidationFailed
from jobs_sdk.testing import FakeJobsClient, FakeSyncJobsClient

HOUR = {"key": "report-7", "window": "enqueued", "seconds": 3600}


class Report(BaseModel):
    n: int


report = Task("reports", "reports.build", Report)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def test_the_fake_keeps_a_period_after_enqueue_whatever_the_state():
    clock = Clock()
    jobs = FakeJobsClient(clock=clock)
    first = await jobs.enqueue("reports", "reports.build", {"n": 1}, unique=HOUR)
    assert first.job.unique == UniqueRule.model_validate(HOUR)
    assert first.job.dedup_key == "report-7"
    await jobs.cancel(first.job.id)
    clock.advance(3599)
    dup = await jobs.enqueue("reports", "reports.build", {"n": 2}, unique=HOUR)
    assert dup.deduplicated and dup.job.id == first.job.id
    clock.advance(1)
    fresh = await jobs.enqueue("reports", "reports.build", {"n": 3}, unique=HOUR)
    assert not fresh.deduplicated and fresh.job.id != first.job.id


def test_the_sync_fake_keeps_a_period_after_finishing():
    clock = Clock()
    jobs = FakeSyncJobsClient(clock=clock)
    rule = UniqueRule(key="k", window=UniqueWindow.FINISHED, seconds=60)
    first = jobs.enqueue("reports", "reports.build", {}, unique=rule)
    clock.advance(3600)  # pending long after its enqueue: still held
    assert jobs.enqueue("reports", "reports.build", {}, unique=rule).deduplicated
    jobs.cancel(first.job.id)
    clock.advance(59)
    assert jobs.enqueue("reports", "reports.build", {}, unique=rule).job.id == first.job.id
    clock.advance(1)
    assert not jobs.enqueue("reports", "reports.build", {}, unique=rule).deduplicated


async def test_a_task_takes_a_rule_over_named_states():
    clock = Clock()
    jobs = FakeJobsClient(clock=clock)
    states = {"key": "s", "window": "states", "states": ["pending", "running", "cancelled"]}
    first = await report.enqueue(jobs, Report(n=1), unique=states)
    await jobs.cancel(first.job.id)
    clock.advance(86_400)
    dup = await report.enqueue(jobs, Report(n=2), unique=states)
    assert dup.deduplicated and dup.job.status is JobStatus.CANCELLED
    # over states that leave cancelled out, the key is free again
    free = {**states, "states": ["pending", "running", "succeeded"]}
    assert not (await report.enqueue(jobs, Report(n=3), unique=free)).deduplicated


async def test_dedup_key_alone_is_unique_while_active_only():
    jobs = FakeJobsClient()
    first = await jobs.enqueue("reports", "reports.build", {}, dedup_key="k")
    assert first.job.unique is None
    await jobs.cancel(first.job.id)
    assert not (await jobs.enqueue("reports", "reports.build", {}, dedup_key="k")).deduplicated


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"dedup_key": "k", "unique": {"key": "k"}}, "not both"),
        ({"unique": {"key": "k", "window": "enqueued"}}, "unique.seconds is required"),
        ({"unique": {"key": "k", "seconds": 5}}, "unique.seconds is taken"),
        ({"unique": {"key": "k", "window": "states", "states": ["pending"]}}, "'running'"),
    ],
)
def test_a_bad_rule_fails_before_sending(options, says):
    with pytest.raises(ValidationFailed, match=says):
        report.request(Report(n=1), **options)
