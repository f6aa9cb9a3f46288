"""Testing a producer with jobs_sdk.testing: the example app (examples/producer_app.py) gets a
FakeJobsClient instead of a JobsClient, and the tests assert on what it enqueued. No server,
no network. Run with `uv run python -m pytest examples/tests`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from examples import tasks
from examples.producer_app import create_app
from examples.tasks import SendEmail

from jobs_sdk.testing import FakeJobsClient


@pytest.fixture
async def jobs() -> AsyncIterator[FakeJobsClient]:
    async with FakeJobsClient(tenant="acme") as fake:
        yield fake


@pytest.fixture
async def app(jobs: FakeJobsClient) -> AsyncIterator[httpx.AsyncClient]:
    api = create_app(jobs)
    transport = httpx.ASGITransport(api)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://app") as http,
    ):
        yield http


async def test_signup_enqueues_a_welcome_email(
    app: httpx.AsyncClient, jobs: FakeJobsClient
) -> None:
    answer = await app.post("/signups", json={"email": "ada@example.com"})
    assert answer.status_code == 202
    # the whole payload (a model), or a mapping of the fields you care about
    jobs.assert_enqueued(
        tasks.send_email, payload=SendEmail(to="ada@example.com", subject="Welcome!")
    )
    job = jobs.assert_enqueued(tasks.send_email, payload={"to": "ada@example.com"}, within=30)
    assert job.dedup_key == "welcome:ada@example.com"
    assert jobs.payloads(tasks.send_email) == [SendEmail(to="ada@example.com", subject="Welcome!")]


async def test_a_double_signup_sends_one_email(
    app: httpx.AsyncClient, jobs: FakeJobsClient
) -> None:
    first = (await app.post("/signups", json={"email": "ada@example.com"})).json()
    again = (await app.post("/signups", json={"email": "ada@example.com"})).json()
    assert again == {**first, "deduplicated": True}
    jobs.assert_enqueued(tasks.send_email, count=1)


async def test_a_bad_address_enqueues_nothing(app: httpx.AsyncClient, jobs: FakeJobsClient) -> None:
    assert (await app.post("/signups", json={"email": "not an address"})).status_code == 422
    jobs.assert_not_enqueued(tasks.send_email)


async def test_the_assertion_says_what_was_enqueued(
    app: httpx.AsyncClient, jobs: FakeJobsClient
) -> None:
    await app.post("/signups", json={"email": "ada@example.com"})
    with pytest.raises(AssertionError) as failed:
        jobs.assert_enqueued(tasks.send_email, payload={"to": "bob@example.com"})
    assert "payload.to is 'ada@example.com', expected 'bob@example.com'" in str(failed.value)
    with pytest.raises(AssertionError, match="due 30 s after enqueue, expected within 5 s"):
        jobs.assert_enqueued(tasks.send_email, within=5)
    with pytest.raises(AssertionError, match="none was enqueued \\(enqueued: 1 'notifications"):
        jobs.assert_enqueued(tasks.label_message)


async def test_job_status_reads_the_job_back(app: httpx.AsyncClient, jobs: FakeJobsClient) -> None:
    job_id = (await app.post("/messages", json={"message_id": "m1", "text": "hi"})).json()["job_id"]
    assert (await app.get(f"/jobs/{job_id}")).json() == {
        "status": "pending",
        "result": None,
        "attempts": 0,
    }
    await jobs.cancel(job_id)
    assert (await app.get(f"/jobs/{job_id}")).json()["status"] == "cancelled"
