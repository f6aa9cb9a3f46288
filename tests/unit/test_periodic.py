"""PeriodicJobs and Cadence alone: the in-memory store on a ManualClock that the test moves,
one `run_once(now)` at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from jobs_schema import JobFilter, JobsConfig, ScheduleDefinition, ScheduleSource
from jobs_schema.schedules import MAX_SCHEDULES_PER_TENANT as LIMIT
from jobs_server.clock import ManualClock
from jobs_server.errors import BadRequest, ConfigError
from jobs_server.publisher.base import InMemoryPublisher
from jobs_server.scheduler import PeriodicJobs
from jobs_server.schedules import Cadence, config_schedules, stored
from jobs_server.service import JobService
from jobs_server.settings import ServerSettings
from jobs_server.store.base import JobFilter as StoreFilter
from jobs_server.store.base import NewSchedule
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.wiring import _standalone

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NY = ZoneInfo("America/New_York")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def store(clock: ManualClock) -> InMemoryJobStore:
    return InMemoryJobStore(clock)


def config(**schedules: dict[str, Any]) -> JobsConfig:
    return JobsConfig.model_validate(
        {
            "use_cases": {"reports": {"queue": "q", "job_types": ["reports.build"]}},
            "tenants": {"acme": {"max_active_jobs": 1000}},
            "schedules": {
                name: {"tenant": "acme", "use_case": "reports", "job_type": "reports.build"} | s
                for name, s in schedules.items()
            },
        }
    )


def service(store: InMemoryJobStore, clock: ManualClock, cfg: JobsConfig) -> JobService:
    return JobService(store, cfg, default_quota=None, max_payload_bytes=65536, clock=clock)


def periodic(store: InMemoryJobStore, clock: ManualClock, cfg: JobsConfig) -> PeriodicJobs:
    return PeriodicJobs(store, service(store, clock, cfg), config=cfg)


async def run_at(clock: ManualClock, p: PeriodicJobs, at: datetime) -> int:
    clock.set(at)
    return (await p.run_once(at)).created


async def jobs_of(store: InMemoryJobStore) -> list[datetime]:
    rows = await store.list_jobs(StoreFilter.of(JobFilter(), limit=1000))
    return sorted(j.run_at for j in rows)


async def test_an_interval_schedule_makes_one_job_per_tick(
    store: InMemoryJobStore, clock: ManualClock
) -> None:
    p = periodic(store, clock, config(every={"interval_seconds": 60}))
    assert await run_at(clock, p, START) == 0  # the first tick is a minute after creation
    assert await run_at(clock, p, START + timedelta(seconds=59)) == 0
    assert await run_at(clock, p, START + timedelta(seconds=60.5)) == 1
    assert await run_at(clock, p, START + timedelta(seconds=61)) == 0
    assert await run_at(clock, p, START + timedelta(seconds=120)) == 1
    assert await jobs_of(store) == [START + timedelta(seconds=60), START + timedelta(seconds=120)]
    row = await store.get_schedule("acme", "every")
    assert row is not None
    assert row.next_run_at == START + timedelta(seconds=180)
    assert row.last_run_at == START + timedelta(seconds=120)


async def test_two_instances_racing_make_one_job_per_tick(
    store: InMemoryJobStore, clock: ManualClock
) -> None:
    cfg = config(every={"interval_seconds": 10})
    a, b = periodic(store, clock, cfg), periodic(store, clock, cfg)
    await run_at(clock, a, START)
    await run_at(clock, b, START)
    for step in range(1, 6):
        at = START + timedelta(seconds=10 * step)
        clock.set(at)
        ticks_a, ticks_b = await a.run_once(at), await b.run_once(at)
        assert ticks_a.created + ticks_b.created == 1
    assert len(await jobs_of(store)) == 5


async def test_a_dedup_key_makes_no_job_while_the_last_is_active(
    store: InMemoryJobStore, clock: ManualClock
) -> None:
    p = periodic(store, clock, config(every={"interval_seconds": 60, "dedup_key": "every"}))
    await run_at(clock, p, START)
    assert await run_at(clock, p, START + timedelta(seconds=60)) == 1
    clock.set(START + timedelta(seconds=120))
    ticked = await p.run_once(clock.now())
    assert (ticked.schedules, ticked.created, ticked.refused) == (1, 0, 1)
    [job] = await store.list_jobs(StoreFilter.of(JobFilter(), limit=10))
    assert job.dedup_key == "every"
    await store.cancel_job(job.id, tenant=None)
    assert await run_at(clock, p, START + timedelta(seconds=180)) == 1  # the last one ended


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # the last tick (12:11) is on time; the nine before it were missed
        ("skip", [datetime(2030, 1, 1, 12, 11, tzinfo=UTC)]),
        (
            "run_once",
            [
                datetime(2030, 1, 1, 12, 11, tzinfo=UTC),
                datetime(2030, 1, 1, 12, 11, 30, tzinfo=UTC),
            ],
        ),
    ],
)
async def test_a_ten_minute_outage_follows_the_missed_tick_policy(
    store: InMemoryJobStore, clock: ManualClock, policy: str, expected: list[datetime]
) -> None:
    p = periodic(store, clock, config(minutely={"cron": "* * * * *", "missed": policy}))
    await run_at(clock, p, START)
    assert await run_at(clock, p, START + timedelta(minutes=1, seconds=0.5)) == 1
    outage_end = START + timedelta(minutes=11, seconds=30)
    await run_at(clock, p, outage_end)
    assert (await jobs_of(store))[1:] == expected
    row = await store.get_schedule("acme", "minutely")
    assert row is not None and row.next_run_at == START + timedelta(minutes=12)
    assert await run_at(clock, p, outage_end + timedelta(seconds=1)) == 0  # no flood after


@pytest.mark.parametrize(("policy", "jobs"), [("skip", 0), ("run_once", 1)])
async def test_a_missed_daily_tick_is_skipped_or_run_once(
    store: InMemoryJobStore, clock: ManualClock, policy: str, jobs: int
) -> None:
    p = periodic(store, clock, config(daily={"cron": "0 3 * * *", "missed": policy}))
    await run_at(clock, p, START)
    # down from before 03:00 to 03:10 of the next day: the tick is ten minutes late
    assert await run_at(clock, p, datetime(2030, 1, 2, 3, 10, tzinfo=UTC)) == jobs
    row = await store.get_schedule("acme", "daily")
    assert row is not None and row.next_run_at == datetime(2030, 1, 3, 3, 0, tzinfo=UTC)


def daily_ticks(expr: str, start: datetime, n: int) -> list[datetime]:
    definition = ScheduleDefinition(
        cron=expr, timezone="America/New_York", use_case="u", job_type="j"
    )
    cadence, at, out = Cadence(definition, anchor=start), start, []
    for _ in range(n):
        at = cadence.next_after(at)
        out.append(at.astimezone(NY))
    return out


def test_cron_spring_forward_runs_the_skipped_time_right_after_the_jump() -> None:
    ticks = daily_ticks("30 2 * * *", datetime(2026, 3, 7, 5, 0, tzinfo=UTC), 3)
    assert ticks == [
        datetime(2026, 3, 7, 2, 30, tzinfo=NY),
        datetime(2026, 3, 8, 3, 0, tzinfo=NY),  # 02:30 does not exist that day
        datetime(2026, 3, 9, 2, 30, tzinfo=NY),
    ]
    assert [t.utcoffset() for t in ticks] == [timedelta(hours=-5), *[timedelta(hours=-4)] * 2]


def test_cron_fall_back_runs_the_repeated_time_once() -> None:
    ticks = daily_ticks("30 1 * * *", datetime(2026, 10, 31, 4, 0, tzinfo=UTC), 3)
    assert [t.astimezone(UTC) for t in ticks] == [
        datetime(2026, 10, 31, 5, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT, not again at 01:30 EST
        datetime(2026, 11, 2, 6, 30, tzinfo=UTC),
    ]
    # and a 02:30 schedule keeps its wall time across the change
    later = daily_ticks("30 2 * * *", datetime(2026, 10, 31, 4, 0, tzinfo=UTC), 2)
    assert [t.hour for t in later] == [2, 2]


async def test_a_dst_day_through_periodic_jobs(store: InMemoryJobStore, clock: ManualClock) -> None:
    cfg = config(nightly={"cron": "30 2 * * *", "timezone": "America/New_York"})
    p = periodic(store, clock, cfg)
    await run_at(clock, p, datetime(2026, 3, 7, 12, 0, tzinfo=UTC))
    jump = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert await run_at(clock, p, jump - timedelta(seconds=1)) == 0
    assert await run_at(clock, p, jump) == 1
    assert await jobs_of(store) == [jump]


async def test_a_paused_schedule_does_not_tick(store: InMemoryJobStore, clock: ManualClock) -> None:
    cfg = config()
    jobs = service(store, clock, cfg)
    definition = ScheduleDefinition(
        interval_seconds=60, use_case="reports", job_type="reports.build"
    )
    row = stored("acme", "paused", definition, source=ScheduleSource.API, now=START)
    assert await store.create_schedule(row, limit=LIMIT) is NewSchedule.CREATED
    await store.set_schedule_paused("acme", "paused", paused=True, next_run_at=row.next_run_at)
    p = PeriodicJobs(store, jobs)
    assert await run_at(clock, p, START + timedelta(minutes=5)) == 0


async def test_a_tick_the_config_no_longer_allows_passes_without_a_job(
    store: InMemoryJobStore, clock: ManualClock
) -> None:
    definition = ScheduleDefinition(interval_seconds=60, use_case="gone", job_type="x")
    orphan = stored("acme", "orphan", definition, source=ScheduleSource.API, now=START)
    assert await store.create_schedule(orphan, limit=LIMIT) is NewSchedule.CREATED
    p = PeriodicJobs(store, service(store, clock, config()))
    clock.set(START + timedelta(seconds=60))
    ticked = await p.run_once(clock.now())
    assert (ticked.schedules, ticked.created) == (1, 0)


def test_a_bad_cron_expression_names_the_field() -> None:
    definition = ScheduleDefinition(cron="61 * * * *", use_case="u", job_type="j")
    with pytest.raises(BadRequest) as err:
        Cadence.check(definition)
    assert err.value.details["field"] == "cron"
    assert err.value.message.startswith("cron: ")


def test_a_bad_cron_expression_in_the_config_file_names_the_schedule() -> None:
    cfg = config(broken={"cron": "* * *"})
    with pytest.raises(ConfigError, match=r"^schedules\.broken\.cron: "):
        config_schedules(cfg, now=START)


def test_an_unknown_timezone_in_the_config_file_names_the_schedule() -> None:
    cfg = config(tz={"cron": "0 * * * *", "timezone": "Nowhere/Land"})
    with pytest.raises(ConfigError, match=r"^schedules\.tz\.timezone: unknown timezone"):
        config_schedules(cfg, now=START)


async def test_the_standalone_scheduler_enqueues_the_config_files_schedules(
    tmp_path: Path, store: InMemoryJobStore, clock: ManualClock
) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(
        '[use_cases.reports]\nqueue = "q"\n'
        '[schedules.every]\ntenant = "acme"\ninterval_seconds = 30\n'
        'use_case = "reports"\njob_type = "reports.build"\n'
    )
    settings = ServerSettings(config_file=str(path))
    sched = _standalone(settings, store, InMemoryPublisher(), clock, None, None)
    assert isinstance(sched.service(PeriodicJobs), PeriodicJobs)
    await sched.step()  # leads; the config's schedule is in, first tick in 30 s
    clock.advance(30)
    await sched.step()
    assert await jobs_of(store) == [START + timedelta(seconds=30)]


async def test_a_changed_definition_makes_its_next_job_anew(
    store: InMemoryJobStore, clock: ManualClock
) -> None:
    """A schedule's job is checked once and kept while its definition stays (PeriodicJobs'
    templates); a new payload reaches the very next tick."""
    p = periodic(store, clock, config(every={"interval_seconds": 60, "payload": {"v": 1}}))
    await run_at(clock, p, START)
    assert await run_at(clock, p, START + timedelta(seconds=60)) == 1
    changed = config(every={"interval_seconds": 60, "payload": {"v": 2}})
    await store.sync_config_schedules(config_schedules(changed, now=START))
    assert await run_at(clock, p, START + timedelta(seconds=120)) == 1
    rows = await store.list_jobs(StoreFilter.of(JobFilter(), limit=10))
    assert sorted((j.run_at, j.payload["v"]) for j in rows) == [
        (START + timedelta(seconds=60), 1),
        (START + timedelta(seconds=120), 2),
    ]
