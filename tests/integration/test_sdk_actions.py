"""The SDK's operator actions (retry, count, cancel_where, retry_where) and its newer filters,
against a real jobs-server on loopback, async and sync (httpx is never mocked here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jobs_schema import BulkAction, ErrorCode, JobSelection, JobStatus
from jobs_sdk import Conflict, Forbidden, JobsClient, NotFound, SyncJobsClient, ValidationFailed
from tests.conftest import LiveServer


@pytest.fixture
async def acme(live_server: LiveServer) -> AsyncIterator[JobsClient]:
    async with JobsClient(live_server.url, live_server.tenant_token("acme")) as client:
        yield client


async def _enqueue(jobs: JobsClient, n: int, job_type: str = "tag") -> list[str]:
    created = [await jobs.enqueue("labeling", job_type, {"i": i}) for i in range(n)]
    return [str(c.job.id) for c in created]


async def test_retry_makes_a_cancelled_job_pending_again(acme):
    (job_id,) = await _enqueue(acme, 1)
    with pytest.raises(Conflict) as info:
        await acme.retry(job_id)
    assert (info.value.status, info.value.details["status"]) == (409, "pending")
    await acme.cancel(job_id)
    retried = await acme.retry(job_id)
    assert retried.status is JobStatus.PENDING
    assert (await acme.get(job_id)).status is JobStatus.PENDING


async def test_retry_of_another_tenants_job_is_not_found(live_server, acme):
    (job_id,) = await _enqueue(acme, 1)
    await acme.cancel(job_id)
    async with JobsClient(live_server.url, live_server.tenant_token("globex")) as globex:
        with pytest.raises(NotFound):
            await globex.retry(job_id)
    assert (await acme.get(job_id)).status is JobStatus.CANCELLED


async def test_count_then_cancel_and_retry_where(acme):
    ids = await _enqueue(acme, 3)
    await _enqueue(acme, 2, job_type="other")
    counted = await acme.count(use_case="labeling", job_type="tag")
    assert counted.count == 3
    assert str(counted.max_id) == max(ids)
    later = await _enqueue(acme, 1)  # created after the count: max_id leaves it alone
    cancelled = await acme.cancel_where(job_type="tag", max_id=counted.max_id)
    assert (cancelled.action, cancelled.touched, cancelled.more) == (BulkAction.CANCEL, 3, False)
    assert (await acme.get(later[0])).status is JobStatus.PENDING
    assert (await acme.count(status=JobStatus.CANCELLED)).count == 3
    assert (await acme.count(job_type="tag", action=BulkAction.RETRY)).count == 3
    retried = await acme.retry_where(JobSelection(status=JobStatus.CANCELLED, limit=2))
    assert (retried.touched, retried.more) == (2, True)
    assert (await acme.count(status="cancelled")).count == 1
    assert (await acme.count(status="pending", job_type="other")).count == 2


async def test_counts_and_bulk_actions_see_only_the_tokens_tenant(live_server, acme):
    await _enqueue(acme, 2)
    async with JobsClient(live_server.url, live_server.tenant_token("globex")) as globex:
        assert (await globex.count()).count == 0
        assert (await globex.cancel_where(use_case="labeling")).touched == 0
    assert (await acme.count(status="pending")).count == 2


async def test_filters_are_checked_before_sending(acme):
    with pytest.raises(ValidationFailed, match="status"):
        await acme.count(status="finished")
    with pytest.raises(ValidationFailed, match="limit"):
        await acme.cancel_where(limit=0)
    with pytest.raises(TypeError, match="either a JobSelection"):
        await acme.retry_where(JobSelection(), use_case="labeling")


async def test_list_and_count_filter_on_the_dedup_key(acme):
    await acme.enqueue("labeling", "tag", {}, dedup_key="img-7")
    await _enqueue(acme, 2)
    assert [j.dedup_key async for j in acme.list(dedup_key="img-7")] == ["img-7"]
    assert (await acme.count(dedup_key="img-7")).count == 1


async def test_read_only_token_counts_but_cannot_act(live_server):
    async with JobsClient(live_server.url, live_server.readonly_token) as readonly:
        assert (await readonly.count()).count == 0
        with pytest.raises(Forbidden) as info:
            await readonly.cancel_where(use_case="labeling")
    assert info.value.code is ErrorCode.FORBIDDEN


async def test_sync_client_has_the_same_actions(live_server):
    def operate() -> None:
        with SyncJobsClient(live_server.url, live_server.tenant_token("globex")) as jobs:
            job = jobs.enqueue("labeling", "sync", {}).job
            jobs.enqueue("labeling", "sync", {})
            assert jobs.count(job_type="sync").count == 2
            assert jobs.cancel_where(job_type="sync").touched == 2
            assert jobs.retry(job.id).status is JobStatus.PENDING
            assert jobs.count(action=BulkAction.RETRY).count == 1
            assert jobs.retry_where(job_type="sync").touched == 1
            with pytest.raises(Conflict):
                jobs.retry(job.id)

    await asyncio.to_thread(operate)
