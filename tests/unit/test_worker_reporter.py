"""jobs-worker's HttpWorkerApi on jobs-sdk's WorkerApiClient: the SDK's errors become the
worker's instructions, and every answer's Date header sets the server clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from uuid import uuid4

import httpx
import pytest

from jobs_schema import ErrorBody, ErrorCode, ErrorEnvelope, LeaseRef
from jobs_worker import ConfigError, HttpWorkerApi, WorkerApiError
from jobs_worker.reporter import JobGone, ServerUnavailable


def api(handler, attempts: int = 2) -> HttpWorkerApi:
    return HttpWorkerApi(
        "http://jobs", "wt", attempts=attempts, transport=httpx.MockTransport(handler)
    )


def envelope(status: int, code: ErrorCode, message: str, **headers: str) -> httpx.Response:
    body = ErrorEnvelope(error=ErrorBody(code=code, message=message))
    return httpx.Response(status, content=body.model_dump_json(), headers=headers)


async def test_a_job_no_longer_running_is_job_gone():
    gone = api(lambda _: envelope(404, ErrorCode.NOT_FOUND, "job is not running"))
    with pytest.raises(JobGone, match="job is not running"):
        await gone.payload(uuid4())
    await gone.close()


async def test_no_answer_after_the_retries_is_server_unavailable():
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(502)

    down = api(handler, attempts=2)
    with pytest.raises(ServerUnavailable):
        await down.release("w1", [LeaseRef(job_id=uuid4(), attempt=1, lease_token=uuid4())])
    assert len(sent) == 2
    await down.close()


async def test_a_refused_token_is_a_config_error_and_other_refusals_api_errors():
    refused = api(lambda _: envelope(401, ErrorCode.UNAUTHORIZED, "unknown token"))
    with pytest.raises(ConfigError, match="JOBS_WORKER_TOKEN"):
        await refused.check()
    await refused.close()
    broken = api(lambda _: httpx.Response(500, text="boom"))
    with pytest.raises(WorkerApiError) as err:
        await broken.payload(uuid4())
    assert not isinstance(err.value, JobGone | ServerUnavailable)
    await broken.close()


async def test_every_answer_teaches_the_server_clock():
    ahead = datetime.now(UTC) + timedelta(hours=1)
    date = format_datetime(ahead, usegmt=True)
    clocked = api(lambda _: envelope(404, ErrorCode.NOT_FOUND, "no such job", date=date))
    await clocked.check()
    assert clocked.clock.known
    assert abs((clocked.clock.now() - ahead).total_seconds()) < 2
    await clocked.close()
