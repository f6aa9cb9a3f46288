"""The SDK's miss-policy overrides: the clients' keyword arguments become the request's fields,
checked before sending, and the fakes apply the server's rule for expires_at."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobs_schema import MissPolicy, UseCaseConfig
from jobs_sdk import _http
from jobs_sdk.errors import ValidationFailed
from jobs_sdk.testing import FakeJobsClient, FakeSyncJobsClient

USE_CASES = {
    "expiring": UseCaseConfig(queue="q", miss_policy=MissPolicy.EXPIRE, expire_grace_seconds=30),
    "late": UseCaseConfig(queue="q"),
}


def test_the_options_become_the_requests_fields():
    req = _http.enqueue_request(
        "late", "run", {}, {"miss_policy": "expire", "expire_grace": timedelta(minutes=2)}
    )
    assert (req.miss_policy, req.expire_grace_seconds) == (MissPolicy.EXPIRE, 120.0)
    body = _http.enqueue_call(req, None).content or b""
    assert b'"miss_policy":"expire"' in body and b'"expire_grace_seconds":120.0' in body


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"miss_policy": "sometimes"}, "miss_policy"),
        ({"miss_policy": "expire", "expire_grace": -1}, "expire_grace_seconds"),
        ({"miss_policy": "expire", "expire_grace": 30 * 86_400 + 1}, "expire_grace_seconds"),
        ({"miss_policy": "run_late", "expire_grace": 5}, "expire_grace_seconds"),
    ],
)
def test_bad_overrides_are_refused_before_sending(options, named):
    with pytest.raises(ValidationFailed, match=named):
        _http.enqueue_request("late", "run", {}, options)


async def test_the_fake_applies_the_policy_and_the_jobs_override():
    jobs = FakeJobsClient(use_cases=USE_CASES)
    inherited = (await jobs.enqueue("expiring", "run")).job
    assert inherited.expires_at == inherited.deadline + timedelta(seconds=30)
    runs = (await jobs.enqueue("expiring", "run", miss_policy="run_late")).job
    assert runs.expires_at is None
    short = (await jobs.enqueue("late", "run", miss_policy="expire", expire_grace=5)).job
    assert short.expires_at == short.deadline + timedelta(seconds=5)
    with pytest.raises(ValidationFailed, match="runs late"):
        await jobs.enqueue("late", "run", expire_grace=5)


def test_the_sync_fake_takes_the_overrides_too():
    jobs = FakeSyncJobsClient(use_cases=USE_CASES)
    job = jobs.enqueue("late", "run", miss_policy="expire").job
    assert job.expires_at == job.deadline  # the use case's grace: 0
