"""WorkerApiClient's resends and answer observer (the transport mocked; the server side is in
tests/integration/test_sdk_worker_api.py)."""

from __future__ import annotations

import json
from uuid import uuid4

import httpx
import pytest

from jobs_schema import LeaseRef
from jobs_sdk import RetryPolicy, ServerError, WorkerApiClient
from jobs_sdk.worker_api import MAX_ITEMS, WORKER_RETRY

QUICK = RetryPolicy(attempts=3, base_delay=0.0, timeout=None, statuses=WORKER_RETRY.statuses)


def client(handler, **options) -> WorkerApiClient:
    options.setdefault("retries", QUICK)
    return WorkerApiClient("http://jobs", "wt", transport=httpx.MockTransport(handler), **options)


def leases(n: int) -> list[LeaseRef]:
    return [LeaseRef(job_id=uuid4(), attempt=1, lease_token=uuid4()) for _ in range(n)]


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_answers_are_resent(status):
    answers = [httpx.Response(status), httpx.Response(200, json={"released": []})]
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers.pop(0)

    async with client(handler) as api:
        assert await api.release("w1", leases(1)) == []
    assert len(sent) == 2
    assert sent[0].headers["authorization"] == "Bearer wt"


async def test_a_500_is_not_resent_and_raises_the_sdk_error():
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500, text="boom")

    async with client(handler) as api:
        with pytest.raises(ServerError):
            await api.release("w1", leases(1))
    assert len(sent) == 1


async def test_large_batches_go_in_requests_of_the_api_limit():
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sizes.append(len(body["leases"]))
        return httpx.Response(200, json={"released": [ref["job_id"] for ref in body["leases"]]})

    refs = leases(MAX_ITEMS + 1)
    async with client(handler) as api:
        released = await api.release("w1", refs)
    assert sizes == [MAX_ITEMS, 1]
    assert released == [ref.job_id for ref in refs]


async def test_the_observer_sees_each_answer_resends_included():
    answers = [httpx.Response(503), httpx.Response(200, json={"released": []})]
    seen: list[int] = []

    def observe(response: httpx.Response, sent: float, received: float) -> None:
        assert sent <= received
        seen.append(response.status_code)

    async with client(lambda _: answers.pop(0), observe=observe) as api:
        await api.release("w1", leases(1))
    assert seen == [503, 200]


def test_the_producer_policy_still_resends_only_503():
    assert RetryPolicy().statuses == frozenset({503})


async def test_cancellations_ask_in_chunks_and_return_the_leases_answered():
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v1/worker/cancellations")
        body = json.loads(request.content)
        bodies.append(body)
        return httpx.Response(200, json={"cancelled": body["leases"][-1:]})

    refs = leases(MAX_ITEMS + 1)
    async with client(handler) as api:
        cancelled = await api.cancellations("w1", refs)
        assert await api.cancellations("w1", []) == []  # nothing to ask: no request
    assert [len(b["leases"]) for b in bodies] == [MAX_ITEMS, 1]  # type: ignore[arg-type]
    assert {b["worker_id"] for b in bodies} == {"w1"}
    assert cancelled == [refs[MAX_ITEMS - 1], refs[MAX_ITEMS]]
