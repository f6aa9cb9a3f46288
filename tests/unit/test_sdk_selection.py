"""The operator actions' requests and resends, against httpx's MockTransport (the integration
tests run them against a real server)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from jobs_schema import BulkAction
from jobs_sdk import JobsClient, JobsTimeout, RetryPolicy, SyncJobsClient, Unavailable
from tests.unit.test_sdk_client import FAST, error, job_json


async def test_a_resent_retry_that_finds_the_job_pending_returns_it():
    job_id = str(uuid.uuid4())
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if len(seen) == 1:
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if request.method == "POST":
            return error(409, "conflict", status="pending")
        return httpx.Response(200, json=job_json("pending", id=job_id))

    transport = httpx.MockTransport(answer)
    async with JobsClient("http://jobs", "tok", retries=FAST, transport=transport) as jobs:
        job = await jobs.retry(job_id)
    assert str(job.id) == job_id
    assert seen == [f"POST /v1/jobs/{job_id}/retry"] * 2 + [f"GET /v1/jobs/{job_id}"]


def test_a_bulk_action_is_not_resent_once_it_may_have_reached_the_server():
    sent: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        raise httpx.ReadTimeout("the answer was lost", request=request)

    policy = RetryPolicy(attempts=3, base_delay=0, max_delay=0)
    transport = httpx.MockTransport(answer)
    with (
        SyncJobsClient("http://jobs", "tok", retries=policy, transport=transport) as jobs,
        pytest.raises(JobsTimeout),
    ):
        jobs.cancel_where(use_case="labeling", limit=5)
    assert [json.loads(body) for body in sent] == [{"use_case": "labeling", "limit": 5}]


def test_a_bulk_action_that_never_left_is_resent():
    attempts: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("refused", request=request)

    policy = RetryPolicy(attempts=2, base_delay=0, max_delay=0)
    transport = httpx.MockTransport(answer)
    with (
        SyncJobsClient("http://jobs", "tok", retries=policy, transport=transport) as jobs,
        pytest.raises(Unavailable),
    ):
        jobs.retry_where(status="dead")
    assert attempts == ["/v1/jobs/retry"] * 2


def test_count_sends_its_filters_as_query_parameters():
    params: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        params.append(dict(request.url.params))
        return httpx.Response(200, json={"count": 0, "max_id": None})

    with SyncJobsClient("http://jobs", "tok", transport=httpx.MockTransport(answer)) as jobs:
        assert jobs.count(status="dead", dedup_key="k", action=BulkAction.RETRY).count == 0
    assert params == [{"status": "dead", "dedup_key": "k", "action": "retry"}]
