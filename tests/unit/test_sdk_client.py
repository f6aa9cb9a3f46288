"""Client behaviour against httpx's MockTransport: what goes on the wire, and what comes back.
(The integration tests run the same clients against a real server.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from jobs_sdk import (
    Conflict,
    JobsClient,
    JobsTimeout,
    RetryPolicy,
    SyncJobsClient,
    Unavailable,
    ValidationFailed,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC).isoformat()
FAST = RetryPolicy(attempts=3, base_delay=0, max_delay=0)
Handler = Callable[[httpx.Request], httpx.Response]


def job_json(status: str = "pending", **overrides: object) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "tenant": "acme",
        "use_case": "labeling",
        "job_type": "t",
        "payload": {},
        "status": status,
        "priority": 0,
        "run_at": NOW,
        "deadline": NOW,
        "attempts": 0,
        "max_attempts": 3,
        "created_at": NOW,
        "updated_at": NOW,
    } | overrides


def error(http_status: int, code: str, **details: object) -> httpx.Response:
    return httpx.Response(
        http_status, json={"error": {"code": code, "message": code, "details": details}}
    )


class Recorder:
    """Answers with `answers` in turn (the last one repeats) and keeps every request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer


def async_client(recorder: Recorder, **options: object) -> JobsClient:
    transport = httpx.MockTransport(recorder)
    options.setdefault("retries", FAST)
    return JobsClient("http://jobs", "tok", transport=transport, **options)


def sync_client(recorder: Recorder) -> SyncJobsClient:
    transport = httpx.MockTransport(recorder)
    return SyncJobsClient("http://jobs", "tok", transport=transport, retries=FAST)


def created() -> httpx.Response:
    return httpx.Response(201, json={"job": job_json(), "deduplicated": False})


async def test_a_503_is_resent_with_the_same_key_and_bytes():
    recorder = Recorder(error(503, "unavailable"), httpx.ReadTimeout("slow"), created())
    async with async_client(recorder, coalesce=False) as client:
        await client.enqueue("labeling", "t", {"a": 1})
    keys = {r.headers["Idempotency-Key"] for r in recorder.requests}
    bodies = {r.content for r in recorder.requests}
    assert len(recorder.requests) == 3
    assert len(keys) == 1 and len(bodies) == 1
    assert recorder.requests[0].headers["Authorization"] == "Bearer tok"


def test_the_sync_client_resends_the_same_way():
    recorder = Recorder(httpx.ConnectError("refused"), error(503, "unavailable"), created())
    with sync_client(recorder) as client:
        client.enqueue("labeling", "t")
    assert len({r.headers["Idempotency-Key"] for r in recorder.requests}) == 1
    assert len(recorder.requests) == 3


async def test_without_retries_no_key_is_sent_and_a_timeout_is_final():
    recorder = Recorder(httpx.ReadTimeout("slow"))
    transport = httpx.MockTransport(recorder)
    async with JobsClient("http://jobs", "t", transport=transport, retries=0) as client:
        with pytest.raises(JobsTimeout) as info:
            await client.enqueue("labeling", "t")
    assert "Idempotency-Key" not in recorder.requests[0].headers
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


async def test_a_resent_cancel_that_finds_the_job_cancelled_returns_it():
    cancelled = job_json("cancelled")
    recorder = Recorder(
        httpx.ReadTimeout("slow"),
        error(409, "conflict", status="cancelled"),
        httpx.Response(200, json=cancelled),
    )
    async with async_client(recorder) as client:
        job = await client.cancel(str(cancelled["id"]))
    assert job.status == "cancelled"
    assert [r.method for r in recorder.requests] == ["POST", "POST", "GET"]


async def test_a_first_time_conflict_on_cancel_is_raised():
    recorder = Recorder(error(409, "conflict", status="cancelled"))
    async with async_client(recorder) as client:
        with pytest.raises(Conflict):
            await client.cancel(uuid.uuid4())


async def test_a_batch_refused_without_an_index_is_bisected():
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs":
            body = json.loads(request.content)
            if body["job_type"] == "bad":
                return error(422, "unknown_job_type")
            return httpx.Response(201, json={"job": job_json(payload=body["payload"])})
        jobs = json.loads(request.content)["jobs"]
        if any(j["job_type"] == "bad" for j in jobs):
            return error(422, "validation_error")
        results = [{"index": i, "job": job_json(payload=j["payload"])} for i, j in enumerate(jobs)]
        return httpx.Response(200, json={"results": results})

    recorder = Recorder(server)
    async with async_client(recorder) as client:
        calls = [client.enqueue("labeling", "bad" if i == 5 else "ok", {"i": i}) for i in range(8)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[5], ValidationFailed)
    assert [o.job.payload["i"] for i, o in enumerate(outcomes) if i != 5] == [0, 1, 2, 3, 4, 6, 7]
    # 8 -> 4 + [4..7] -> [4, 5] + [6, 7] -> 4 alone + 5 alone
    assert len(recorder.requests) == 7


async def test_wait_polls_until_the_job_finishes():
    pending, done = job_json("running"), job_json("succeeded")
    recorder = Recorder(httpx.Response(200, json=pending), httpx.Response(200, json=done))
    async with async_client(recorder) as client:
        job = await client.wait(uuid.uuid4(), timeout=5, poll_interval=0.01, stream=False)
    assert job.status == "succeeded"
    assert len(recorder.requests) == 2


async def test_wait_polls_where_the_answer_is_no_event_stream():
    """A proxy's page (or an older server's JSON) in place of the stream: poll at once."""
    recorder = Recorder(
        httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, json=job_json("succeeded")),
    )
    async with async_client(recorder) as client:
        job = await client.wait(uuid.uuid4(), timeout=5, poll_interval=0.01)
    assert job.status == "succeeded"
    assert [r.url.path.endswith("/events") for r in recorder.requests] == [True, False]


def test_from_env(monkeypatch):
    monkeypatch.setenv("JOBS_URL", "http://jobs.internal")
    monkeypatch.setenv("JOBS_TOKEN", "secret")
    with SyncJobsClient.from_env(timeout=3) as client:
        assert client._http.base_url == "http://jobs.internal"
    monkeypatch.delenv("JOBS_TOKEN")
    with pytest.raises(ValueError, match="JOBS_TOKEN"):
        JobsClient.from_env()


async def test_a_client_keeps_resending_with_one_key_until_its_retry_timeout():
    recorder = Recorder(error(503, "unavailable"))
    policy = RetryPolicy(attempts=None, base_delay=0.001, max_delay=0.01, timeout=0.3)
    async with async_client(recorder, coalesce=False, retries=policy) as client:
        with pytest.raises(Unavailable):
            await client.enqueue("labeling", "t")
    assert len(recorder.requests) > 4  # the count the client used to stop at
    assert len({r.headers["Idempotency-Key"] for r in recorder.requests}) == 1


def test_the_sync_client_takes_retry_timeout_and_keeps_one_key():
    recorder = Recorder(httpx.ConnectError("refused"))
    transport = httpx.MockTransport(recorder)
    client = SyncJobsClient("http://jobs", "t", transport=transport, retry_timeout=0.3)
    with client, pytest.raises(Unavailable):
        client.enqueue("labeling", "t")
    assert len(recorder.requests) > 1
    assert len({r.headers["Idempotency-Key"] for r in recorder.requests}) == 1
