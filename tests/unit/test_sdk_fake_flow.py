"""The SDK's fake clients' `pauses` and `schedules`: the real clients' methods, the schema's
validation (the same errors the real client raises before sending), and the server's rules
for a tenant token."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs_schema import ErrorCode, ScheduleSource, UseCaseConfig
from jobs_schema.schedules import MAX_SCHEDULES_PER_TENANT, schedule_limit_reached
from jobs_sdk.errors import Conflict, Forbidden, NotFound, ValidationFailed
from jobs_sdk.pauses import AsyncPauses, SyncPauses, pause_call
from jobs_sdk.schedules import Schedules, SyncSchedules, create_call
from jobs_sdk.testing import (
    FakeJobsClient,
    FakePauses,
    FakeSchedules,
    FakeSyncJobsClient,
    FakeSyncPauses,
    FakeSyncSchedules,
)

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
USE_CASES = {"reports": UseCaseConfig(queue="q", job_types=["reports.build"])}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize(
    ("real", "fake"),
    [
        (AsyncPauses, FakePauses),
        (SyncPauses, FakeSyncPauses),
        (Schedules, FakeSchedules),
        (SyncSchedules, FakeSyncSchedules),
    ],
)
def test_the_fakes_have_the_real_clients_methods(real: type, fake: type) -> None:
    def methods(cls: type) -> dict[str, Any]:
        return {n: f for n, f in vars(cls).items() if callable(f) and not n.startswith("_")}

    assert methods(fake).keys() == methods(real).keys()
    for name, method in methods(real).items():
        ours = methods(fake)[name]
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(method), name
        theirs = inspect.signature(method).parameters
        assert list(inspect.signature(ours).parameters.values()) == list(theirs.values()), name


def test_the_fake_clients_offer_both_namespaces() -> None:
    assert isinstance(FakeJobsClient().pauses, FakePauses)
    assert isinstance(FakeJobsClient().schedules, FakeSchedules)
    assert isinstance(FakeSyncJobsClient().pauses, FakeSyncPauses)
    assert isinstance(FakeSyncJobsClient().schedules, FakeSyncSchedules)


async def test_pauses_of_the_fakes_tenant_as_a_tenant_token() -> None:
    clock = Clock()
    jobs = FakeJobsClient(tenant="acme", use_cases=USE_CASES, clock=clock)
    first = await jobs.pauses.pause(use_case="reports", reason="deploy")
    assert (first.use_case, first.tenant, first.paused, first.changed) == (
        "reports",
        "acme",
        True,
        True,
    )
    assert (first.changed_by, first.changed_at, first.reason) == ("tenant:acme", START, "deploy")
    clock.now += timedelta(seconds=5)
    again = await jobs.pauses.pause(use_case="reports", tenant="acme", reason="again")
    assert not again.changed and again.changed_at == START and again.reason == "deploy"
    everywhere = await jobs.pauses.pause()  # omitted: the token's tenant, every use case
    assert (everywhere.use_case, everywhere.tenant) == (None, "acme")
    listed = await jobs.pauses.list()
    assert [(p.use_case, p.paused) for p in listed.pauses] == [(None, True), ("reports", True)]
    resumed = await jobs.pauses.resume(use_case="reports")
    assert (resumed.paused, resumed.changed, resumed.changed_at) == (False, True, clock.now)
    never = await jobs.pauses.resume(use_case="reports", tenant="acme")
    assert (never.paused, never.changed) == (False, False)
    listed = await jobs.pauses.list()
    assert [p.use_case for p in listed.pauses] == [None]
    assert [(p.use_case, p.paused) for p in listed.history] == [
        ("reports", False),
        (None, True),
        ("reports", True),
    ]


async def test_pauses_refuse_what_the_server_refuses() -> None:
    jobs = FakeJobsClient(tenant="acme", use_cases=USE_CASES)
    with pytest.raises(Forbidden) as forbidden:
        await jobs.pauses.pause(tenant="globex")
    assert forbidden.value.status == 403
    with pytest.raises(ValidationFailed) as unknown:
        await jobs.pauses.pause(use_case="nope")
    assert unknown.value.code is ErrorCode.UNKNOWN_USE_CASE
    # the schema's rules, with the real client's message (it checks before sending)
    with pytest.raises(ValidationFailed) as real:
        pause_call("reports", None, "x" * 10_000)
    with pytest.raises(ValidationFailed) as fake:
        await jobs.pauses.pause(use_case="reports", reason="x" * 10_000)
    assert fake.value.message == real.value.message
    assert (await jobs.pauses.list()).history == []


async def test_schedules_are_kept_paused_resumed_and_deleted() -> None:
    clock = Clock()
    jobs = FakeJobsClient(tenant="acme", use_cases=USE_CASES, clock=clock)
    made = await jobs.schedules.create(
        "hourly",
        use_case="reports",
        job_type="reports.build",
        interval_seconds=3600,
        payload={"kind": "sales"},
    )
    assert (made.tenant, made.source, made.paused) == ("acme", ScheduleSource.API, False)
    assert made.next_run_at == START + timedelta(hours=1)
    cron = await jobs.schedules.create(
        "nightly", use_case="reports", job_type="reports.build", cron="0 3 * * *"
    )
    assert cron.next_run_at is None  # the fake parses no cron expression
    assert [s.name for s in await jobs.schedules.list()] == ["hourly", "nightly"]
    assert await jobs.schedules.list(tenant="globex") == []
    paused = await jobs.schedules.pause("hourly")
    assert (paused.paused, paused.next_run_at) == (True, None)
    clock.now = START + timedelta(hours=2, minutes=30)
    resumed = await jobs.schedules.resume("hourly", tenant="acme")
    # ticks missed while paused are not made up: the next one after now, on the hour grid
    assert (resumed.paused, resumed.next_run_at) == (False, START + timedelta(hours=3))
    assert await jobs.schedules.get("hourly") == resumed
    await jobs.schedules.delete("hourly")
    with pytest.raises(NotFound):
        await jobs.schedules.get("hourly")
    with pytest.raises(NotFound):
        await jobs.schedules.get("nightly", tenant="globex")


@pytest.mark.parametrize(
    "options",
    [
        {"interval_seconds": 60, "cron": "* * * * *"},  # both
        {},  # neither
        {"interval_seconds": 0},
        {"interval_seconds": 60, "priority": 5000},
        {"interval_seconds": 60, "missed": "later"},
    ],
)
async def test_schedules_validate_as_the_real_client_does(options: dict[str, Any]) -> None:
    jobs = FakeJobsClient(use_cases=USE_CASES)
    with pytest.raises(ValidationFailed) as real:
        create_call("s", "reports", "reports.build", options)  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed) as fake:
        await jobs.schedules.create("s", use_case="reports", job_type="reports.build", **options)
    assert fake.value.message == real.value.message
    assert await jobs.schedules.list() == []


def test_sync_schedules_refuse_what_the_server_refuses() -> None:
    jobs = FakeSyncJobsClient(use_cases=USE_CASES)
    jobs.schedules.create("s", use_case="reports", job_type="reports.build", interval_seconds=60)
    with pytest.raises(Conflict):
        jobs.schedules.create("s", use_case="reports", job_type="reports.build", cron="* * * * *")
    with pytest.raises(ValidationFailed) as zone:
        jobs.schedules.create(
            "t", use_case="reports", job_type="reports.build", cron="0 * * * *", timezone="Mars/X"
        )
    assert (zone.value.status, zone.value.details["field"]) == (400, "timezone")
    with pytest.raises(ValidationFailed) as kind:
        jobs.schedules.create("t", use_case="reports", job_type="other", interval_seconds=60)
    assert kind.value.code is ErrorCode.UNKNOWN_JOB_TYPE
    assert jobs.pauses.pause(use_case="reports").paused
    assert [s.name for s in jobs.schedules.list()] == ["s"]


def test_the_fake_refuses_a_schedule_past_the_tenants_limit_as_the_server_does() -> None:
    jobs = FakeSyncJobsClient(use_cases=USE_CASES)
    for n in range(MAX_SCHEDULES_PER_TENANT):
        jobs.schedules.create(
            f"s{n}", use_case="reports", job_type="reports.build", cron="0 * * * *"
        )
    with pytest.raises(Conflict) as refused:
        jobs.schedules.create(
            "one-more", use_case="reports", job_type="reports.build", cron="0 * * * *"
        )
    assert refused.value.message == schedule_limit_reached("test")
    assert refused.value.details == {"limit": MAX_SCHEDULES_PER_TENANT}
    assert len(jobs.schedules.list()) == MAX_SCHEDULES_PER_TENANT
