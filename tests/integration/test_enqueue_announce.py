"""A lone enqueue NOTIFYs its jobs in its own statement; concurrent ones leave it to one NOTIFY
after their commits (JobService over PostgresJobStore, heard on a LISTEN connection of the
test's own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import pytest

from jobs_schema import EnqueueRequest, JobsConfig, UseCaseConfig
from jobs_server.clock import Clock, ManualClock
from jobs_server.service import JobService
from jobs_server.store.base import JobStore
from jobs_server.store.channels import EVENTS_CHANNEL, WAKEUP_CHANNEL, parse_ids
from jobs_server.store.memory import InMemoryJobStore
from jobs_server.store.postgres import PostgresJobStore
from jobs_server.wakeups import parse_wakeup

CONFIG = JobsConfig(use_cases={"uc": UseCaseConfig(queue="uc")}, tenants={})
REQUEST = EnqueueRequest(use_case="uc", job_type="uc.run")


class Heard:
    """What arrived on the two channels, in order."""

    def __init__(self) -> None:
        self.payloads: dict[str, asyncio.Queue[str]] = {
            WAKEUP_CHANNEL: asyncio.Queue(),
            EVENTS_CHANNEL: asyncio.Queue(),
        }

    def __call__(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.payloads[channel].put_nowait(payload)

    async def next(self, channel: str) -> str:
        return await asyncio.wait_for(self.payloads[channel].get(), timeout=10)

    def empty(self) -> bool:
        return all(q.empty() for q in self.payloads.values())


@pytest.fixture
async def heard(database_url: str) -> AsyncIterator[Heard]:
    conn = await asyncpg.connect(database_url)
    heard = Heard()
    for channel in heard.payloads:
        await conn.add_listener(channel, heard)
    try:
        yield heard
    finally:
        await conn.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresJobStore]:
    store = await PostgresJobStore.connect(database_url, min_size=1, max_size=4)
    try:
        yield store
    finally:
        await store.close()


class Hooks:
    """The service's after-commit hooks, recorded (the server's send a NOTIFY each)."""

    def __init__(self) -> None:
        self.woken: list[frozenset[str]] = []
        self.changed: list[UUID] = []

    def service(self, store: JobStore, clock: Clock) -> JobService:
        return JobService(
            store,
            CONFIG,
            default_quota=None,
            max_payload_bytes=65_536,
            clock=clock,
            on_enqueued=lambda use_cases, _at: self.woken.append(frozenset(use_cases)),
            on_changed=self.changed.extend,
        )


async def test_a_lone_enqueue_notifies_its_job_in_its_own_statement(
    store: PostgresJobStore, heard: Heard
) -> None:
    hooks = Hooks()
    out = await hooks.service(store, store.clock).enqueue("acme", REQUEST)
    wakeup = parse_wakeup(await heard.next(WAKEUP_CHANNEL))
    assert wakeup.use_cases == {"uc"}
    assert wakeup.earliest_run_at is not None
    assert abs((wakeup.earliest_run_at - out.job.run_at).total_seconds()) < 0.001
    assert parse_ids(await heard.next(EVENTS_CHANNEL)) == [out.job.id]
    assert hooks.woken == [] and hooks.changed == []  # nothing left for after the commit


async def test_concurrent_enqueues_leave_their_notifies_to_after_the_commit(
    store: PostgresJobStore, heard: Heard
) -> None:
    """Two tenants' enqueues at once are two statements: the first announces its job itself,
    the second, started while the first is in flight, leaves its job to the hooks."""
    hooks = Hooks()
    service = hooks.service(store, store.clock)
    first, second = await asyncio.gather(
        service.enqueue("one", REQUEST), service.enqueue("two", REQUEST)
    )
    assert parse_ids(await heard.next(EVENTS_CHANNEL)) == [first.job.id]
    assert parse_wakeup(await heard.next(WAKEUP_CHANNEL)).use_cases == {"uc"}
    assert hooks.changed == [second.job.id] and hooks.woken == [frozenset({"uc"})]
    assert heard.empty()


async def test_a_duplicate_announces_nothing(store: PostgresJobStore, heard: Heard) -> None:
    hooks = Hooks()
    service = hooks.service(store, store.clock)
    first = await service.enqueue("acme", REQUEST.model_copy(update={"dedup_key": "k"}))
    await heard.next(EVENTS_CHANNEL)
    await heard.next(WAKEUP_CHANNEL)
    dup = await service.enqueue("acme", REQUEST.model_copy(update={"dedup_key": "k"}))
    assert dup.deduplicated and dup.job.id == first.job.id
    # a NOTIFY of the second statement would come before this one's
    await store.notify(EVENTS_CHANNEL, "end")
    assert await heard.next(EVENTS_CHANNEL) == "end"
    assert hooks.changed == [] and hooks.woken == []


async def test_a_store_without_notify_leaves_every_announcement_to_the_hooks() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    hooks = Hooks()
    out = await hooks.service(InMemoryJobStore(clock), clock).enqueue("acme", REQUEST)
    assert hooks.changed == [out.job.id] and hooks.woken == [frozenset({"uc"})]
