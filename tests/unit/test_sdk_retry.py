"""When the clients resend a request, and how long they wait."""

from __future__ import annotations

import httpx
import pytest

from jobs_sdk import RetryPolicy
from jobs_sdk._retry import retry_delay

POLICY = RetryPolicy(attempts=4, base_delay=0.1, max_delay=1.0)
REQUEST = httpx.Request("POST", "http://jobs/v1/jobs")


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=REQUEST)


@pytest.mark.parametrize("replayable", [True, False])
def test_a_503_and_a_refused_connection_are_always_retried(replayable):
    for outcome in (answer(503), httpx.ConnectError("refused"), httpx.PoolTimeout("busy")):
        assert retry_delay(POLICY, outcome, attempt=1, replayable=replayable) is not None


@pytest.mark.parametrize(
    "outcome",
    [
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.ReadError("reset"),
    ],
)
def test_a_request_that_may_have_arrived_is_resent_only_if_replayable(outcome):
    assert retry_delay(POLICY, outcome, attempt=1, replayable=True) is not None
    assert retry_delay(POLICY, outcome, attempt=1, replayable=False) is None


@pytest.mark.parametrize("status", [200, 400, 404, 409, 429, 500])
def test_other_answers_are_final(status):
    assert retry_delay(POLICY, answer(status), attempt=1, replayable=True) is None


def test_attempts_are_bounded():
    assert retry_delay(POLICY, answer(503), attempt=3, replayable=True) is not None
    assert retry_delay(POLICY, answer(503), attempt=4, replayable=True) is None
    assert retry_delay(RetryPolicy.of(0), answer(503), attempt=1, replayable=True) is None


def test_backoff_grows_with_full_jitter_up_to_the_cap():
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.0), (30, 1.0)]:
        delays = [POLICY.backoff(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2


def test_retry_after_is_honoured_and_capped():
    assert (
        retry_delay(POLICY, answer(503, **{"Retry-After": "0.5"}), attempt=1, replayable=True)
        == 0.5
    )
    assert (
        retry_delay(POLICY, answer(503, **{"Retry-After": "120"}), attempt=1, replayable=True)
        == 1.0
    )
    odd = retry_delay(
        POLICY,
        answer(503, **{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        attempt=1,
        replayable=True,
    )
    assert odd is not None and 0 <= odd <= 0.1


def test_policy_from_a_number_of_retries():
    assert RetryPolicy.of(3).attempts == 4
    assert RetryPolicy.of(POLICY) is POLICY
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
