"""jobs-sdk's WorkerApiClient against a real jobs-server: auth, envelopes, fencing answers."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from uuid import uuid4

import httpx
import pytest

from jobs_schema import FailureInfo, HeartbeatItem, LeaseRef, LeaseState, OutcomeKind, OutcomeReport
from jobs_sdk import NotFound, RetryPolicy, Unauthorized, Unavailable, WorkerApiClient
from tests.conftest import LiveServer, free_port


def lease() -> LeaseRef:
    return LeaseRef(job_id=uuid4(), attempt=1, lease_token=uuid4())


async def test_check_accepts_the_worker_token_and_refuses_others(live_server: LiveServer):
    async with WorkerApiClient(live_server.url, live_server.worker_token) as api:
        await api.check()
    async with WorkerApiClient(live_server.url, "not-a-token") as api:
        with pytest.raises(Unauthorized):
            await api.check()


async def test_an_unreachable_server_is_unavailable_after_the_retries():
    url = f"http://127.0.0.1:{free_port()}"
    quick = RetryPolicy(attempts=2, base_delay=0.01, timeout=None)
    async with WorkerApiClient(url, "token", retries=quick) as api:
        with pytest.raises(Unavailable):
            await api.check()


async def test_stale_leases_are_answered_not_applied(live_server: LiveServer):
    ref = lease()
    report = OutcomeReport(
        **ref.model_dump(),
        outcome=OutcomeKind.FAILED,
        worker_id="w1",
        failure=FailureInfo(type="E", message="boom", retryable=True),
    )
    async with WorkerApiClient(live_server.url, live_server.worker_token) as api:
        [ack] = await api.report([report])
        [beat] = await api.heartbeat("w1", [HeartbeatItem(**ref.model_dump(), extend_seconds=30)])
        cancelled = await api.cancellations("w1", [ref])
        released = await api.release("w1", [ref])
        with pytest.raises(NotFound):
            await api.payload(ref.job_id)
    assert (ack.job_id, ack.applied) == (ref.job_id, False)
    assert (beat.job_id, beat.state) == (ref.job_id, LeaseState.LOST)
    assert released == [] and cancelled == []


async def test_the_observer_sees_every_answer_and_its_date(live_server: LiveServer):
    seen: list[tuple[int, str, float, float]] = []

    def observe(response: httpx.Response, sent: float, received: float) -> None:
        seen.append((response.status_code, response.headers["date"], sent, received))

    async with WorkerApiClient(live_server.url, live_server.worker_token, observe=observe) as api:
        await api.check()
    [(status, date, sent, received)] = seen
    assert status == 404
    assert sent <= received
    assert abs(parsedate_to_datetime(date).timestamp() - received) < 5
