"""`client.pauses` of the SDK, async and sync, against a real jobs-server on loopback (httpx is
never mocked here): pause, resume, list, idempotency and the errors as the SDK raises them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jobs_schema import ErrorCode
from jobs_sdk import Forbidden, JobsClient, SyncJobsClient, ValidationFailed
from tests.conftest import LiveServer


@pytest.fixture
async def admin(live_server: LiveServer) -> AsyncIterator[JobsClient]:
    async with JobsClient(live_server.url, live_server.admin_token) as client:
        yield client


async def test_the_async_client_pauses_lists_and_resumes(admin):
    paused = await admin.pauses.pause(use_case="labeling", tenant="acme", reason="noisy")
    assert (paused.use_case, paused.tenant, paused.paused, paused.changed) == (
        "labeling",
        "acme",
        True,
        True,
    )
    assert paused.changed_by == "admin" and paused.reason == "noisy"
    assert not (await admin.pauses.pause(use_case="labeling", tenant="acme")).changed
    listed = await admin.pauses.list()
    assert [(p.use_case, p.tenant) for p in listed.pauses] == [("labeling", "acme")]
    resumed = await admin.pauses.resume(use_case="labeling", tenant="acme")
    assert (resumed.paused, resumed.changed) == (False, True)
    assert (await admin.pauses.list()).pauses == []


async def test_the_async_client_raises_what_the_server_refuses(live_server, admin):
    with pytest.raises(ValidationFailed) as unknown:
        await admin.pauses.pause(use_case="nope")
    assert unknown.value.code is ErrorCode.UNKNOWN_USE_CASE
    with pytest.raises(ValidationFailed) as nobody:
        await admin.pauses.pause(tenant="nobody")
    assert nobody.value.code is ErrorCode.UNKNOWN_TENANT
    with pytest.raises(ValidationFailed):  # checked before sending
        await admin.pauses.pause(use_case="x" * 201)
    async with JobsClient(live_server.url, live_server.tenant_token("acme")) as acme:
        with pytest.raises(Forbidden):
            await acme.pauses.pause(tenant="globex")
        assert (await acme.pauses.pause()).tenant == "acme"


async def test_the_sync_client_has_the_same_pauses(live_server):
    def operate() -> None:
        with SyncJobsClient(live_server.url, live_server.tenant_token("globex")) as jobs:
            paused = jobs.pauses.pause(use_case="notifications")
            assert (paused.tenant, paused.changed_by) == ("globex", "tenant:globex")
            assert [p.tenant for p in jobs.pauses.list().pauses] == ["globex"]
            assert jobs.pauses.resume(use_case="notifications").changed
            assert not jobs.pauses.resume(use_case="notifications").changed
            with pytest.raises(Forbidden):
                jobs.pauses.pause(tenant="acme")

    await asyncio.to_thread(operate)
