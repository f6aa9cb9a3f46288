"""The retry rules' backoff: properties every kind must hold, and what max attempts leads to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from jobs_schema import BackoffKind, BackoffPolicy, FailureInfo, JobStatus
from jobs_server.retries import backoff_delay, decide_failure
from jobs_server.store.base import RunningLease

policies = st.builds(
    BackoffPolicy,
    kind=st.sampled_from(list(BackoffKind)),
    base_seconds=st.floats(min_value=0, max_value=3600, allow_nan=False),
    cap_seconds=st.floats(min_value=0, max_value=604_800, allow_nan=False),
    jitter=st.floats(min_value=0, max_value=1, allow_nan=False),
)
retries = st.integers(min_value=1, max_value=10_000)
draws = st.floats(min_value=0, max_value=1, exclude_max=True)


def undelayed(policy: BackoffPolicy) -> BackoffPolicy:
    return policy.model_copy(update={"jitter": 0.0})


@given(policies, retries, draws)
def test_the_delay_never_exceeds_the_cap_nor_falls_below_the_jitter_bound(
    policy: BackoffPolicy, retry: int, draw: float
) -> None:
    delay = backoff_delay(policy, retry, rng=lambda: draw)
    nominal = backoff_delay(undelayed(policy), retry)
    assert 0 <= delay <= policy.cap_seconds
    assert delay <= nominal
    assert delay >= nominal * (1 - policy.jitter) - 1e-9


@given(policies, retries)
def test_the_nominal_delay_is_monotone_up_to_the_cap(policy: BackoffPolicy, retry: int) -> None:
    policy = undelayed(policy)
    this, following = backoff_delay(policy, retry), backoff_delay(policy, retry + 1)
    assert this <= following <= policy.cap_seconds


@given(st.floats(min_value=0.001, max_value=0.5), st.integers(min_value=1, max_value=20))
def test_each_kind_follows_its_formula_below_the_cap(base: float, retry: int) -> None:
    cap = 604_800  # the largest the schema allows; base * 2**19 stays below it
    expected = {
        BackoffKind.EXPONENTIAL: base * 2.0 ** (retry - 1),
        BackoffKind.LINEAR: base * retry,
        BackoffKind.CONSTANT: base,
    }
    for kind, value in expected.items():
        policy = BackoffPolicy(kind=kind, base_seconds=base, cap_seconds=cap, jitter=0)
        assert backoff_delay(policy, retry) == min(value, cap)


def test_jitter_at_the_cap_still_spreads_retries() -> None:
    policy = BackoffPolicy(
        kind=BackoffKind.EXPONENTIAL, base_seconds=1, cap_seconds=30, jitter=0.25
    )
    lowest, highest = (backoff_delay(policy, 50, rng=lambda d=d: d) for d in (0.999, 0.0))
    assert highest == 30
    assert 22.5 <= lowest < 22.6


def _lease(attempt: int, max_attempts: int) -> RunningLease:
    return RunningLease(
        id=uuid.uuid4(),
        attempt=attempt,
        lease_token=uuid.uuid4(),
        max_attempts=max_attempts,
        backoff=BackoffPolicy(kind=BackoffKind.CONSTANT, base_seconds=2, cap_seconds=2, jitter=0),
    )


NOW = datetime(2030, 1, 1, tzinfo=UTC)
BOOM = FailureInfo(type="Boom", message="failed")


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=50))
def test_a_failure_retries_while_attempts_remain_then_ends_dead(
    max_attempts: int, before_last: int
) -> None:
    attempt = max(1, max_attempts - before_last)
    decided = decide_failure(_lease(attempt, max_attempts), BOOM, now=NOW)
    if attempt < max_attempts:
        assert decided.next_status is JobStatus.PENDING
        assert decided.run_at == NOW + timedelta(seconds=2)
    else:
        assert decided.next_status is JobStatus.DEAD
        assert decided.run_at is None


def test_a_permanent_failure_ends_dead_with_attempts_left() -> None:
    permanent = FailureInfo(type="Bad", message="no", retryable=False)
    decided = decide_failure(_lease(1, 5), permanent, now=NOW)
    assert decided.next_status is JobStatus.DEAD
    assert decided.error_type == "Bad"


def test_a_handler_chosen_delay_overrides_the_backoff() -> None:
    chosen = FailureInfo(type="Later", message="later", retry_delay_seconds=90)
    decided = decide_failure(_lease(1, 5), chosen, now=NOW)
    assert decided.run_at == NOW + timedelta(seconds=90)
