"""When to resend a request, and how long to wait first. Pure: the clients do the waiting."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

__all__ = ["RetryPolicy", "retry_delay"]

# Failures where the request never reached the server: resending is always safe.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# Failures after the request may have been processed: resend only what is safe to replay.
_MAYBE_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `attempts` sends of one request, with full-jitter exponential backoff between
    them: a random wait in [0, min(max_delay, base_delay * 2**(n-1))] before resend n.
    A 503's Retry-After is honoured, capped at `max_delay`."""

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    @classmethod
    def of(cls, retries: int | RetryPolicy) -> RetryPolicy:
        return retries if isinstance(retries, RetryPolicy) else cls(attempts=retries + 1)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed attempt `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


def retry_delay(
    policy: RetryPolicy,
    outcome: httpx.Response | Exception,
    *,
    attempt: int,
    replayable: bool,
) -> float | None:
    """How long to wait before resending after `outcome`, or None to stop here."""
    if attempt >= policy.attempts or not _retryable(outcome, replayable=replayable):
        return None
    retry_after = _retry_after(outcome) if isinstance(outcome, httpx.Response) else None
    return policy.backoff(attempt, retry_after)


def _retryable(outcome: httpx.Response | Exception, *, replayable: bool) -> bool:
    if isinstance(outcome, httpx.Response):
        return outcome.status_code == 503
    if isinstance(outcome, _NOT_SENT):
        return True
    return replayable and isinstance(outcome, _MAYBE_SENT)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None  # absent, or an HTTP date: fall back to our own backoff
