"""Pause and resume through PauseService and the Dispatcher, on the in-memory store and a
ManualClock: what is paused is not claimed, what runs finishes, a resume claims EDF again.
tests/integration/test_pauses_postgres.py runs the dispatcher's tests again on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from jobs_schema import (
    BackoffPolicy,
    JobsConfig,
    JobStatus,
    OutcomeAck,
    OutcomeKind,
    OutcomeReport,
    PauseRequest,
    UseCaseConfig,
    jobs_in_body,
)
from jobs_server.auth import Principal, Role
from jobs_server.clock import ManualClock
from jobs_server.errors import BadRequest, Forbidden, UnknownTenant, UnknownUseCase
from jobs_server.metrics import QueueDepthRefresher, ServerMetrics
from jobs_server.outcomes import OutcomeService
from jobs_server.pauses import PauseService
from jobs_server.publisher.base import InMemoryPublisher
from jobs_server.scheduler import Dispatcher, Elector
from jobs_server.service import JobIds
from jobs_server.store.base import JobStore, NewJob
from jobs_server.store.memory import InMemoryJobStore

BACKOFF = BackoffPolicy(kind="constant", base_seconds=1, cap_seconds=1, jitter=0)
ADMIN = Principal(Role.ADMIN)
ACME = Principal(Role.TENANT, "acme")
# "ux" caps each tenant's running jobs: its claims take the fair statement
CONFIG = JobsConfig.model_validate(
    {
        "use_cases": {
            "uc": {"queue": "uc", "capacity": 100, "lease_seconds": 30},
            "ux": {
                "queue": "ux",
                "capacity": 100,
                "lease_seconds": 30,
                "per_tenant_running_cap": 5,
            },
        },
        "tenants": {"acme": {}, "beta": {}},
    }
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def store(clock: ManualClock) -> InMemoryJobStore:
    return InMemoryJobStore(clock)


@pytest.fixture
def woken() -> list[None]:
    return []


@pytest.fixture
def pauses(store: JobStore, woken: list[None]) -> PauseService:
    return PauseService(store, CONFIG, on_resumed=lambda: woken.append(None))


class Rig:
    def __init__(self, store: JobStore, clock: ManualClock) -> None:
        self.store, self.clock = store, clock
        self.publisher = InMemoryPublisher()
        self.metrics = ServerMetrics()
        self.elector = Elector(store, name="main", ttl_seconds=60, holder="a")
        use_cases: dict[str, UseCaseConfig] = dict(CONFIG.use_cases)
        self.dispatcher = Dispatcher(
            store,
            self.publisher,
            use_cases,
            elector=self.elector,
            clock=clock,
            claim_batch=10,
            metrics=self.metrics,
        )
        self._ids = JobIds(clock)

    async def enqueue(self, tenant: str, *deadlines: float, use_case: str = "uc") -> list[NewJob]:
        now = self.clock.now()
        jobs = [
            NewJob(
                id=self._ids.new(),
                use_case=use_case,
                job_type="run",
                payload={},
                priority=0,
                run_at=now,
                deadline=now + timedelta(seconds=d),
                max_attempts=2,
                backoff=BACKOFF,
            )
            for d in deadlines
        ]
        await self.store.enqueue_jobs(tenant, quota=None, jobs=jobs)
        return jobs

    async def dispatch(self) -> list[str]:
        """The job ids one pass published, in order, across queues."""
        await self.elector.run_once(self.clock.now())
        before = {q: len(b) for q, b in self.publisher.sent.items()}
        await self.dispatcher.run_once(self.clock.now())
        return [
            str(job.job_id)
            for q, bodies in self.publisher.sent.items()
            for body in bodies[before.get(q, 0) :]
            for job in jobs_in_body(body)
        ]


def ids(jobs: list[NewJob]) -> list[str]:
    return [str(j.id) for j in jobs]


@pytest.fixture
def rig(store: JobStore, clock: ManualClock) -> Rig:
    return Rig(store, clock)


async def succeed(store: JobStore, clock: ManualClock, job_ids: list[str]) -> list[OutcomeAck]:
    """Report each running job's attempt as succeeded, as a worker would."""
    outcomes = OutcomeService(store, clock=clock)
    leases = await store.get_leases([UUID(j) for j in job_ids])
    reports = [
        OutcomeReport(
            job_id=lease.id,
            attempt=lease.attempt,
            lease_token=lease.lease_token,
            worker_id="w",
            outcome=OutcomeKind.SUCCEEDED,
            result=None,
        )
        for lease in leases
    ]
    return await outcomes.report(reports)


async def test_a_paused_use_case_claims_nothing_and_its_running_jobs_finish(
    rig: Rig, pauses: PauseService
) -> None:
    first = await rig.enqueue("acme", 10, 20)
    assert await rig.dispatch() == ids(first)
    state = await pauses.pause(ADMIN, PauseRequest(use_case="uc", reason="deploy"))
    assert state.paused and state.changed and state.changed_by == "admin"
    assert state.changed_at == rig.clock.now()
    later = await rig.enqueue("acme", 5)
    rig.clock.advance(1)
    assert await rig.dispatch() == []
    acks = await succeed(rig.store, rig.clock, ids(first))
    assert [a.applied for a in acks] == [True, True]
    assert {a.status for a in acks} == {JobStatus.SUCCEEDED}
    job = await rig.store.get_job(later[0].id, tenant=None)
    assert job is not None and job.status is JobStatus.PENDING
    assert await rig.dispatch() == []  # slots are free, still paused


async def test_a_resume_claims_again_earliest_deadline_first(
    rig: Rig, pauses: PauseService, woken: list[None]
) -> None:
    await pauses.pause(ADMIN, PauseRequest(use_case="uc"))
    late, soon, middle = (
        await rig.enqueue("acme", 50),
        await rig.enqueue("beta", 5),
        await rig.enqueue("acme", 20),
    )
    assert await rig.dispatch() == []
    rig.clock.advance(1)
    state = await pauses.resume(ADMIN, PauseRequest(use_case="uc"))
    assert not state.paused and state.changed and woken == [None]
    assert await rig.dispatch() == ids(soon + middle + late)


async def test_a_paused_tenant_stops_in_every_use_case_the_others_run(
    rig: Rig, pauses: PauseService
) -> None:
    await pauses.pause(ACME, PauseRequest())  # a tenant token: its own tenant
    acme = await rig.enqueue("acme", 5) + await rig.enqueue("acme", 5, use_case="ux")
    beta = await rig.enqueue("beta", 10) + await rig.enqueue("beta", 10, use_case="ux")
    assert sorted(await rig.dispatch()) == sorted(ids(beta))
    await pauses.resume(ACME, PauseRequest())
    assert sorted(await rig.dispatch()) == sorted(ids(acme))


async def test_a_tenant_paused_in_one_use_case_runs_in_the_others(
    rig: Rig, pauses: PauseService
) -> None:
    await pauses.pause(ADMIN, PauseRequest(use_case="uc", tenant="acme"))
    stopped = await rig.enqueue("acme", 5)
    running = await rig.enqueue("acme", 5, use_case="ux") + await rig.enqueue("beta", 10)
    assert sorted(await rig.dispatch()) == sorted(ids(running))
    job = await rig.store.get_job(stopped[0].id, tenant=None)
    assert job is not None and job.status is JobStatus.PENDING


async def test_the_paused_gauge_shows_what_the_last_refresh_read(
    rig: Rig, pauses: PauseService
) -> None:
    """The leader's metrics refresh reads the pauses (the claims read them themselves)."""
    refresher = QueueDepthRefresher(rig.metrics, rig.store, ["uc", "ux"])
    refresher.leading(True)
    await pauses.pause(ADMIN, PauseRequest(use_case="uc"))
    await pauses.pause(ADMIN, PauseRequest(use_case="ux", tenant="beta"))
    await refresher.run_once(rig.clock.now())
    assert paused_series(rig.metrics) == {
        'jobs_paused{tenant="*",use_case="uc"} 1.0',
        'jobs_paused{tenant="beta",use_case="ux"} 1.0',
    }
    await pauses.resume(ADMIN, PauseRequest(use_case="uc"))
    rig.clock.advance(60)
    await refresher.run_once(rig.clock.now())
    assert paused_series(rig.metrics) == {'jobs_paused{tenant="beta",use_case="ux"} 1.0'}


def paused_series(metrics: ServerMetrics) -> set[str]:
    lines = metrics.render().decode().splitlines()
    return {line for line in lines if line.startswith("jobs_paused{")}


# -- the rules -------------------------------------------------------------------------------


async def test_pausing_twice_keeps_the_first_who_and_when(
    pauses: PauseService, clock: ManualClock
) -> None:
    first = await pauses.pause(ACME, PauseRequest(use_case="uc", reason="first"))
    clock.advance(10)
    again = await pauses.pause(ADMIN, PauseRequest(use_case="uc", tenant="acme", reason="x"))
    assert not again.changed
    assert (again.changed_by, again.changed_at, again.reason) == (
        "tenant:acme",
        first.changed_at,
        "first",
    )


async def test_resuming_what_is_not_paused_changes_nothing(
    pauses: PauseService, woken: list[None]
) -> None:
    state = await pauses.resume(ADMIN, PauseRequest(tenant="beta"))
    assert (state.paused, state.changed, state.changed_by) == (False, False, None)
    assert woken == []


@pytest.mark.parametrize(
    ("who", "req", "error"),
    [
        (ADMIN, PauseRequest(), BadRequest),
        (ADMIN, PauseRequest(use_case="nope"), UnknownUseCase),
        (ADMIN, PauseRequest(tenant="nobody"), UnknownTenant),
        (ACME, PauseRequest(tenant="beta"), Forbidden),
        (Principal(Role.READONLY_ADMIN), PauseRequest(use_case="uc"), Forbidden),
        (Principal(Role.WORKER), PauseRequest(use_case="uc"), Forbidden),
    ],
)
async def test_what_is_refused(
    pauses: PauseService, who: Principal, req: PauseRequest, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await pauses.pause(who, req)
    with pytest.raises(error):
        await pauses.resume(who, req)


async def test_a_tenant_lists_the_pauses_that_stop_it(pauses: PauseService) -> None:
    await pauses.pause(ADMIN, PauseRequest(use_case="uc"))
    await pauses.pause(ADMIN, PauseRequest(tenant="beta"))
    await pauses.pause(ACME, PauseRequest(use_case="ux"))
    mine = await pauses.list(ACME)
    assert [(p.use_case, p.tenant) for p in mine.pauses] == [("uc", None), ("ux", "acme")]
    everything = await pauses.list(ADMIN)
    assert len(everything.pauses) == 3 and len(everything.history) == 3
    assert everything.history[0].tenant == "acme"  # the latest first
