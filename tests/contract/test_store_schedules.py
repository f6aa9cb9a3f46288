"""The store contract of periodic jobs: schedules kept, listed and synced from the config
file; a tick's jobs stored with the compare-and-set of its schedule, exactly once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from jobs_schema import MissedTickPolicy, ScheduleDefinition, ScheduleSource
from jobs_server.schedules import stored
from jobs_server.store.base import EnqueueOutcome, NewSchedule, ScheduleTick, StoredSchedule
from tests.contract.conftest import MakeJob, StoreAndClock

LIMIT = 50
DEFINITION = ScheduleDefinition(
    interval_seconds=60,
    use_case="uc",
    job_type="uc.run",
    payload={"report": "daily", "n": [1, 2]},
    priority=3,
    delay_tolerance_seconds=30.0,
    missed=MissedTickPolicy.RUN_ONCE,
    dedup_key="daily-report",
)


def schedule(store: StoreAndClock, name: str = "s", **fields: object) -> StoredSchedule:
    _, clock = store
    row = stored("acme", name, DEFINITION, source=ScheduleSource.API, now=clock.now())
    return replace(row, **fields)  # type: ignore[arg-type]


async def test_a_schedule_is_kept_as_given(store: StoreAndClock) -> None:
    impl, _ = store
    row = schedule(store)
    assert await impl.create_schedule(row, limit=LIMIT) is NewSchedule.CREATED
    again = replace(row, definition=DEFINITION)
    assert await impl.create_schedule(again, limit=LIMIT) is NewSchedule.NAME_TAKEN
    assert await impl.get_schedule("acme", "s") == row
    assert await impl.get_schedule("other", "s") is None
    assert await impl.list_schedules(tenant="acme", limit=100) == [row]
    assert await impl.list_schedules(tenant="other", limit=100) == []
    assert [s.name for s in await impl.list_schedules(tenant=None, limit=100)] == ["s"]


async def test_pause_and_delete(store: StoreAndClock) -> None:
    impl, clock = store
    row = schedule(store)
    await impl.create_schedule(row, limit=LIMIT)
    later = row.next_run_at + timedelta(hours=1)
    paused = await impl.set_schedule_paused("acme", "s", paused=True, next_run_at=later)
    assert paused == replace(row, paused=True, next_run_at=later)
    assert await impl.set_schedule_paused("acme", "x", paused=True, next_run_at=later) is None
    clock.advance(7200)
    assert await impl.due_schedules(limit=10) == []  # paused: never due
    assert await impl.delete_schedule("acme", "s")
    assert not await impl.delete_schedule("acme", "s")
    assert await impl.get_schedule("acme", "s") is None


async def test_due_schedules_earliest_first_within_the_limit(store: StoreAndClock) -> None:
    impl, clock = store
    now = clock.now()
    for i, name in enumerate(["c", "a", "b"]):
        await impl.create_schedule(
            schedule(store, name, next_run_at=now + timedelta(seconds=10 * (i + 1))), limit=LIMIT
        )
    await impl.create_schedule(
        schedule(store, "later", next_run_at=now + timedelta(hours=1)), limit=LIMIT
    )
    clock.advance(30)
    assert [s.name for s in await impl.due_schedules(limit=10)] == ["c", "a", "b"]
    assert [s.name for s in await impl.due_schedules(limit=2)] == ["c", "a"]


async def test_a_tick_is_stored_once(store: StoreAndClock, make_job: MakeJob) -> None:
    impl, clock = store
    row = schedule(store)
    await impl.create_schedule(row, limit=LIMIT)
    clock.advance(60)
    nxt = row.next_run_at + timedelta(seconds=60)
    tick = ScheduleTick("acme", "s", row.next_run_at, nxt, [make_job()], row.next_run_at)
    first = await impl.enqueue_ticks([tick], quotas={"acme": None})
    assert first[0].won
    assert first[0].outcomes == [EnqueueOutcome.CREATED]
    # the same tick again (a second scheduler, a retry after a lost answer): nothing
    again = replace(tick, jobs=[make_job()])
    second = await impl.enqueue_ticks([again], quotas={"acme": None})
    assert not second[0].won and second[0].outcomes == []
    kept = await impl.get_schedule("acme", "s")
    assert kept is not None
    assert (kept.next_run_at, kept.last_run_at) == (nxt, row.next_run_at)
    job = await impl.get_job(tick.jobs[0].id, tenant="acme")
    assert job is not None and job.run_at == tick.jobs[0].run_at
    assert await impl.get_job(again.jobs[0].id, tenant=None) is None


async def test_ticks_of_a_batch_win_or_lose_each_and_keep_their_order(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    impl, clock = store
    a, b, c = schedule(store, "a"), schedule(store, "b"), schedule(store, "c")
    for row in (a, b, replace(c, tenant="beta")):
        await impl.create_schedule(row, limit=LIMIT)
    clock.advance(60)
    nxt = a.next_run_at + timedelta(seconds=60)
    ticks = [
        ScheduleTick("acme", "a", a.next_run_at, nxt, [make_job(), make_job()], a.next_run_at),
        ScheduleTick("acme", "b", b.next_run_at - timedelta(seconds=1), nxt, [make_job()], None),
        ScheduleTick("beta", "c", c.next_run_at, nxt, [], None),  # all skipped: no job
        ScheduleTick("acme", "gone", c.next_run_at, nxt, [make_job()], None),
    ]
    out = await impl.enqueue_ticks(ticks, quotas={"acme": 1, "beta": None})
    assert [(r.tenant, r.name, r.won) for r in out] == [
        ("acme", "a", True),
        ("acme", "b", False),  # expected a tick it is not at
        ("beta", "c", True),
        ("acme", "gone", False),
    ]
    # the quota of 1 keeps the first of a's jobs and refuses the second
    assert out[0].outcomes == [
        EnqueueOutcome.CREATED,
        EnqueueOutcome.QUOTA_EXCEEDED,
    ]
    assert out[2].outcomes == []
    beta = await impl.get_schedule("beta", "c")
    assert beta is not None and (beta.next_run_at, beta.last_run_at) == (nxt, None)
    # the feasibility summary counts the one job stored (not the one over the quota)
    await impl.fold_feasibility()
    assert sum(b.n for b in (await impl.get_feasibility("uc")).pending) == 1


async def test_one_pass_of_many_tenants_keeps_each_tenants_rules(
    store: StoreAndClock, make_job: MakeJob
) -> None:
    """Ticks of tenants in any order: each tenant's quota counts its jobs in tick order, a
    dedup key folds a second job into the first, and each outcome lands on its own tick."""
    impl, clock = store
    names = [("acme", "a"), ("beta", "b"), ("acme", "c"), ("beta", "d")]
    rows = [schedule(store, name, tenant=tenant) for tenant, name in names]
    for row in rows:
        await impl.create_schedule(row, limit=LIMIT)
    clock.advance(60)
    nxt = rows[0].next_run_at + timedelta(seconds=60)
    jobs = {
        "a": [make_job(), make_job()],
        "b": [make_job(dedup_key="k")],
        "c": [make_job()],
        "d": [make_job(dedup_key="k"), make_job()],
    }
    ticks = [
        ScheduleTick(tenant, name, row.next_run_at, nxt, jobs[name], row.next_run_at)
        for (tenant, name), row in zip(names, rows, strict=True)
    ]
    out = await impl.enqueue_ticks(ticks, quotas={"acme": 2})
    created, dedup, quota = (
        EnqueueOutcome.CREATED,
        EnqueueOutcome.DEDUPLICATED,
        EnqueueOutcome.QUOTA_EXCEEDED,
    )
    assert [(r.name, r.won, r.outcomes) for r in out] == [
        ("a", True, [created, created]),
        ("b", True, [created]),
        ("c", True, [quota]),  # acme's third job: past its quota of 2
        ("d", True, [dedup, created]),  # beta has no quota; "k" is b's, active
    ]
    for name, made in (("a", [True, True]), ("c", [False]), ("d", [False, True])):
        stored_ = [await impl.get_job(j.id, tenant=None) is not None for j in jobs[name]]
        assert stored_ == made, name


async def test_config_schedules_sync(store: StoreAndClock) -> None:
    impl, clock = store
    api = schedule(store, "mine")
    await impl.create_schedule(api, limit=LIMIT)
    cfg = schedule(store, "nightly", source=ScheduleSource.CONFIG)
    await impl.sync_config_schedules([cfg, replace(cfg, name="mine")])
    assert await impl.get_schedule("acme", "nightly") == cfg
    assert await impl.get_schedule("acme", "mine") == api  # the API's own is left alone
    # same cadence, new payload: the ticks go on; a new cadence starts them over
    clock.advance(10)
    later = clock.now()
    payload = DEFINITION.model_copy(update={"payload": {"v": 2}})
    moved = replace(cfg, definition=payload, anchor_at=later, next_run_at=later)
    await impl.sync_config_schedules([moved])
    assert await impl.get_schedule("acme", "nightly") == replace(cfg, definition=payload)
    cadence = payload.model_copy(update={"interval_seconds": 5})
    await impl.sync_config_schedules([replace(moved, definition=cadence)])
    got = await impl.get_schedule("acme", "nightly")
    assert got is not None and (got.anchor_at, got.next_run_at) == (later, later)
    await impl.sync_config_schedules([])
    assert [s.name for s in await impl.list_schedules(tenant="acme", limit=100)] == ["mine"]


async def test_a_tenant_has_at_most_limit_api_schedules_even_when_creating_at_once(
    store: StoreAndClock,
) -> None:
    impl, _ = store
    limit = 5
    # the config file's schedules are the operator's: they do not count
    await impl.sync_config_schedules([schedule(store, "nightly", source=ScheduleSource.CONFIG)])
    rows = [schedule(store, f"s{i}") for i in range(12)]
    outcomes = await asyncio.gather(*(impl.create_schedule(r, limit=limit) for r in rows))
    assert outcomes.count(NewSchedule.CREATED) == limit
    assert outcomes.count(NewSchedule.AT_LIMIT) == len(rows) - limit
    mine = [
        s
        for s in await impl.list_schedules(tenant="acme", limit=100)
        if s.source is ScheduleSource.API
    ]
    assert len(mine) == limit
    # another tenant has its own limit
    other = replace(rows[-1], tenant="beta")
    assert await impl.create_schedule(other, limit=limit) is NewSchedule.CREATED
    # a deleted schedule makes room
    assert await impl.delete_schedule("acme", mine[0].name)
    assert await impl.create_schedule(rows[-1], limit=limit) is NewSchedule.CREATED


async def test_schedules_are_listed_by_tenant_and_name_a_page_at_a_time(
    store: StoreAndClock,
) -> None:
    impl, _ = store
    names = [("acme", "a"), ("acme", "b"), ("acme", "c"), ("beta", "a"), ("beta", "z")]
    for tenant, name in reversed(names):
        await impl.create_schedule(replace(schedule(store, name), tenant=tenant), limit=LIMIT)
    seen: list[tuple[str, str]] = []
    after: tuple[str, str] | None = None
    while page := await impl.list_schedules(tenant=None, after=after, limit=2):
        assert len(page) <= 2
        seen += [(s.tenant, s.name) for s in page]
        after = seen[-1]
    assert seen == names
    mine = await impl.list_schedules(tenant="acme", after=("acme", "a"), limit=10)
    assert [s.name for s in mine] == ["b", "c"]
    assert await impl.list_schedules(tenant="beta", after=("beta", "z"), limit=10) == []
