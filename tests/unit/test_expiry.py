"""Miss policies at the scheduler's level: jobs enqueued through JobService's rules, held
(their queue paused) while a ManualClock moves past their deadline, then one scheduler step
(expirer, then dispatch) on the in-memory store; tests/integration/test_expiry_postgres.py
runs the same tests on PostgresJobStore."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs_schema import (
    EnqueueRequest,
    JobsConfig,
    JobStatus,
    MissPolicy,
    UseCaseConfig,
    jobs_in_body,
)
from jobs_server.actions import ActionService
from jobs_server.auth import Principal, Role
from jobs_server.clock import ManualClock
from jobs_server.errors import BadRequest
from jobs_server.metrics import ServerMetrics
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import InMemoryPublisher
from jobs_server.scheduler import Expirer, Scheduler, SchedulerConfig
from jobs_server.service import JobService
from jobs_server.store.base import JobStore
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.wiring import build_scheduler

ADMIN = Principal(role=Role.ADMIN, tenant=None)
GRACE = 30.0
TOLERANCE = 60.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def store(clock: ManualClock) -> JobStore:
    return InMemoryJobStore(clock)


def use_case(**overrides: Any) -> UseCaseConfig:
    values: dict[str, Any] = {
        "queue": "q",
        "capacity": 100,
        "default_delay_tolerance_seconds": TOLERANCE,
    }
    return UseCaseConfig.model_validate(values | overrides)


@dataclass
class Stack:
    store: JobStore
    clock: ManualClock
    jobs: JobService
    scheduler: Scheduler
    publisher: InMemoryPublisher
    metrics: ServerMetrics

    async def enqueue(self, use_case: str = "late", **fields: Any) -> Any:
        req = EnqueueRequest(use_case=use_case, job_type="run", **fields)
        return (await self.jobs.enqueue("acme", req)).job

    async def hold(self) -> None:
        """Pause every use case: the jobs stay pending past their deadlines."""
        for name in self.jobs.config.use_cases:
            await self.store.pause_queue(name, "", principal="test", reason=None)

    async def release_and_step(self) -> list[str]:
        """Resume, run one scheduler step; the ids it published."""
        for name in self.jobs.config.use_cases:
            await self.store.resume_queue(name, "", principal="test", reason=None)
        await self.scheduler.step()
        return [str(j.job_id) for b in self.publisher.sent.get("q", []) for j in jobs_in_body(b)]

    def expired_count(self, use_case: str) -> float:
        value = self.metrics.registry.get_sample_value("jobs_expired_total", {"use_case": use_case})
        return value or 0.0


def make_stack(store: JobStore, clock: ManualClock) -> Stack:
    config = JobsConfig(
        use_cases={
            "late": use_case(),  # run_late, the default
            "expiring": use_case(miss_policy="expire", expire_grace_seconds=GRACE),
        }
    )
    jobs = JobService(store, config, default_quota=None, max_payload_bytes=65536, clock=clock)
    publisher = InMemoryPublisher()
    metrics = ServerMetrics()
    scheduler = build_scheduler(
        store,
        publisher,
        config.use_cases,
        outcomes=OutcomeService(store, clock=clock),
        clock=clock,
        config=SchedulerConfig(name="main"),
        metrics=metrics,
        jobs=jobs,
    )
    return Stack(store, clock, jobs, scheduler, publisher, metrics)


async def test_a_job_held_past_its_deadline_plus_grace_ends_expired_and_never_runs(store, clock):
    s = make_stack(store, clock)
    job = await s.enqueue("expiring")
    assert job.expires_at == job.deadline + timedelta(seconds=GRACE)
    await s.hold()
    clock.advance(TOLERANCE + GRACE + 1)
    assert await s.release_and_step() == []  # expired right before the claim
    got = await store.get_job(job.id, tenant=None)
    assert got is not None
    assert got.status is JobStatus.EXPIRED and got.attempts == 0
    assert got.finished_at == clock.now()
    assert got.last_error is not None
    assert "deadline" in got.last_error and f"grace of {GRACE:g} s" in got.last_error
    assert s.expired_count("expiring") == 1
    clock.advance(10)
    assert await s.release_and_step() == []  # and stays so
    assert (await store.get_job_attempts(job.id)) == []


async def test_a_job_with_policy_run_late_runs(store, clock):
    s = make_stack(store, clock)
    job = await s.enqueue("late")
    assert job.expires_at is None
    await s.hold()
    clock.advance(TOLERANCE + GRACE + 3600)
    assert await s.release_and_step() == [str(job.id)]
    got = await store.get_job(job.id, tenant=None)
    assert got is not None
    assert got.status is JobStatus.RUNNING and got.deadline_missed
    assert s.expired_count("late") == 0


async def test_the_jobs_own_policy_wins_over_its_use_cases(store, clock):
    s = make_stack(store, clock)
    runs = await s.enqueue("expiring", miss_policy="run_late")
    expires = await s.enqueue("late", miss_policy="expire", expire_grace_seconds=5)
    inherits_grace = await s.enqueue("expiring", miss_policy="expire")
    shorter = await s.enqueue("expiring", expire_grace_seconds=1)
    assert runs.expires_at is None
    assert expires.expires_at == expires.deadline + timedelta(seconds=5)
    assert inherits_grace.expires_at == inherits_grace.deadline + timedelta(seconds=GRACE)
    assert shorter.expires_at == shorter.deadline + timedelta(seconds=1)
    await s.hold()
    clock.advance(TOLERANCE + 6)  # past 5 s and 1 s of grace, within 30 s
    assert sorted(await s.release_and_step()) == sorted([str(runs.id), str(inherits_grace.id)])
    statuses = {j.id: j.status for j in await store.get_jobs([expires.id, shorter.id])}
    assert statuses == {expires.id: JobStatus.EXPIRED, shorter.id: JobStatus.EXPIRED}


async def test_a_grace_for_a_job_that_runs_late_is_refused(store, clock):
    s = make_stack(store, clock)
    with pytest.raises(BadRequest, match="expire_grace_seconds applies to miss_policy 'expire'"):
        await s.enqueue("late", expire_grace_seconds=5)


async def test_at_deadline_plus_grace_exactly_a_job_still_runs_and_just_after_it_expires(
    store, clock
):
    """The boundary: a job expires only once now is past deadline + grace, as a dispatch at
    the deadline exactly is not a miss."""
    s = make_stack(store, clock)
    deadline = clock.now() + timedelta(seconds=10)
    on_time = await s.enqueue("expiring", deadline=deadline)
    a_microsecond_early = await s.enqueue("expiring", deadline=deadline - timedelta(microseconds=1))
    await s.hold()
    clock.set(deadline + timedelta(seconds=GRACE))
    assert await s.release_and_step() == [str(on_time.id)]
    got = await store.get_job(a_microsecond_early.id, tenant=None)
    assert got is not None and got.status is JobStatus.EXPIRED


async def test_an_expired_job_is_retried_like_a_dead_one_and_keeps_its_grace(store, clock):
    s = make_stack(store, clock)
    job = await s.enqueue("expiring")
    await s.hold()
    clock.advance(TOLERANCE + GRACE + 1)
    await s.scheduler.step()
    actions = ActionService(store, s.jobs.config, default_quota=None, clock=clock)
    retried = await actions.retry(ADMIN, job.id)
    assert retried.status is JobStatus.PENDING
    assert retried.deadline == clock.now() + timedelta(seconds=TOLERANCE)
    assert retried.expires_at == retried.deadline + timedelta(seconds=GRACE)
    assert retried.finished_at is None
    assert await s.release_and_step() == [str(job.id)]


async def test_the_expirer_ends_a_bounded_batch_a_pass(store, clock):
    s = make_stack(store, clock)
    for _ in range(3):
        await s.enqueue("expiring")
    clock.advance(TOLERANCE + GRACE + 1)
    expirer = Expirer(store, ["expiring", "late"], batch=2)
    assert (await expirer.run_once(clock.now())).count == 2
    assert (await expirer.run_once(clock.now())).count == 1
    assert (await expirer.run_once(clock.now())).count == 0
    assert s.scheduler.service(Expirer) is s.scheduler.services[0].service


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ('miss_policy = "never"', "use_cases.uc.miss_policy"),
        ("expire_grace_seconds = -1", "use_cases.uc.expire_grace_seconds"),
        ("expire_grace_seconds = 2592001", "use_cases.uc.expire_grace_seconds"),
    ],
)
def test_a_bad_policy_in_the_config_file_names_its_field(line, named):
    with pytest.raises(ValueError, match=named):
        JobsConfig.from_toml(f'[use_cases.uc]\nqueue = "q"\n{line}\n', source="jobs.toml")


def test_the_config_files_policy_and_grace_are_read():
    text = '[use_cases.uc]\nqueue = "q"\nmiss_policy = "expire"\nexpire_grace_seconds = 90\n'
    uc = JobsConfig.from_toml(text, source="jobs.toml").use_cases["uc"]
    assert (uc.miss_policy, uc.expire_grace_seconds) == (MissPolicy.EXPIRE, 90)
    assert UseCaseConfig(queue="q").miss_policy is MissPolicy.RUN_LATE
