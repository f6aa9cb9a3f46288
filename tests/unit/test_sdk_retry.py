"""When the clients resend a request, and how long they wait."""

from __future__ import annotations

import itertools

import httpx
import pytest

from jobs_sdk import RetryPolicy
from jobs_sdk._retry import DEFAULT_RETRY_TIMEOUT, retry_delay

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
    assert RetryPolicy.of(3).timeout == DEFAULT_RETRY_TIMEOUT
    assert RetryPolicy.of(POLICY) is POLICY
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="need a bound"):
        RetryPolicy(attempts=None, timeout=None)


# -- the time bound: `elapsed` is the clients' clock, moved by hand here ----------------------

TIMED = RetryPolicy(attempts=None, base_delay=1.0, max_delay=4.0, timeout=60.0)


def test_by_default_retries_are_bounded_by_time_not_count():
    policy = RetryPolicy.of(None)
    assert policy.attempts is None and policy.timeout == 60.0
    assert policy.may_resend
    assert retry_delay(policy, answer(503), attempt=1000, replayable=True, elapsed=59.0)
    assert retry_delay(policy, answer(503), attempt=2, replayable=True, elapsed=60.0) is None


def test_the_last_wait_is_cut_to_end_at_the_time_bound():
    for _ in range(100):
        delay = retry_delay(TIMED, answer(503), attempt=10, replayable=True, elapsed=59.5)
        assert delay is not None and 0 <= delay <= 0.5
    ahead = retry_delay(
        TIMED, answer(503, **{"Retry-After": "3"}), attempt=1, replayable=True, elapsed=58.0
    )
    assert ahead == 2.0


def test_sends_over_a_clock_cover_the_whole_timeout_and_stop_after_it():
    """Walk a fake clock through one request's sends: the sends keep coming until the time
    bound, however many there are, and none is made after it."""
    clock, sends = 0.0, [0.0]
    while (
        delay := retry_delay(TIMED, answer(503), attempt=len(sends), replayable=True, elapsed=clock)
    ) is not None:
        clock += delay
        sends.append(clock)
    assert sends[-1] <= 60.0
    assert len(sends) > 10  # well past the old four tries
    assert max(b - a for a, b in itertools.pairwise(sends)) <= 4.0  # no gap beyond the cap


def test_the_count_bound_still_holds_when_both_are_set():
    both = RetryPolicy(attempts=3, base_delay=0, max_delay=0, timeout=60.0)
    assert retry_delay(both, answer(503), attempt=2, replayable=True, elapsed=1.0) is not None
    assert retry_delay(both, answer(503), attempt=3, replayable=True, elapsed=1.0) is None
