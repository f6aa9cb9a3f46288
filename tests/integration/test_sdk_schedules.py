"""jobs-sdk's `client.schedules`, async and sync, against a real jobs-server on loopback."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from jobs_schema.schedules import MAX_SCHEDULE_PAGE
from jobs_sdk import Conflict, JobsClient, NotFound, SyncJobsClient, ValidationFailed
from tests.conftest import LiveServer


async def test_async_schedules(live_server: LiveServer) -> None:
    token = live_server.tenant_token("acme")
    async with JobsClient(live_server.url, token) as jobs:
        created = await jobs.schedules.create(
            "every-minute",
            use_case="notifications",
            job_type="notifications.send_email",
            interval_seconds=60,
            payload={"to": "a@example.com"},
            missed="run_once",
        )
        assert (created.tenant, created.interval_seconds, created.missed) == (
            "acme",
            60,
            "run_once",
        )
        with pytest.raises(Conflict):
            await jobs.schedules.create(
                "every-minute",
                use_case="notifications",
                job_type="notifications.send_push",
                interval_seconds=5,
            )
        assert [s.name for s in await jobs.schedules.list()] == ["every-minute"]
        assert (await jobs.schedules.pause("every-minute")).paused
        assert not (await jobs.schedules.resume("every-minute")).paused
        await jobs.schedules.delete("every-minute")
        with pytest.raises(NotFound):
            await jobs.schedules.get("every-minute")
        with pytest.raises(ValidationFailed, match="exactly one of cron"):
            await jobs.schedules.create("both", use_case="n", job_type="j")


def _sync_round(url: str, token: str) -> None:
    with SyncJobsClient(url, token) as jobs:
        created = jobs.schedules.create(
            "nightly",
            use_case="notifications",
            job_type="notifications.send_email",
            cron="30 2 * * *",
            timezone="Europe/Paris",
        )
        assert created.next_run_at is not None
        assert jobs.schedules.get("nightly") == created
        assert jobs.schedules.pause("nightly").next_run_at is None
        jobs.schedules.delete("nightly")
        assert jobs.schedules.list() == []
        with pytest.raises(NotFound):
            jobs.schedules.delete("nightly")


async def test_sync_schedules(live_server: LiveServer) -> None:
    await asyncio.to_thread(_sync_round, live_server.url, live_server.tenant_token("acme"))


async def test_the_sdk_lists_every_schedule_across_pages(live_server: LiveServer) -> None:
    """More schedules than a page holds (an admin's list of every tenant's): list() follows
    next_cursor to the end, async and sync."""
    conn = await asyncpg.connect(live_server.database_url)
    try:
        await conn.execute(
            "INSERT INTO schedules (tenant, name, source, interval_seconds, timezone, use_case, "
            "job_type, payload, priority, missed, paused, anchor_at, next_run_at, created_at) "
            "SELECT t, 'fill-' || g, 'api', 60, 'UTC', 'notifications', "
            "'notifications.send_email', '{}', 0, 'skip', false, now(), now() + interval '1 h', "
            "now() FROM unnest(ARRAY['acme', 'globex']) t, generate_series(1, $1) g",
            MAX_SCHEDULE_PAGE // 2 + 100,
        )
    finally:
        await conn.close()
    expected = 2 * (MAX_SCHEDULE_PAGE // 2 + 100)
    async with JobsClient(live_server.url, live_server.admin_token) as jobs:
        found = await jobs.schedules.list()
    assert len(found) == expected > MAX_SCHEDULE_PAGE
    assert len({(s.tenant, s.name) for s in found}) == expected
    with SyncJobsClient(live_server.url, live_server.admin_token) as sync_jobs:
        assert await asyncio.to_thread(sync_jobs.schedules.list) == found
