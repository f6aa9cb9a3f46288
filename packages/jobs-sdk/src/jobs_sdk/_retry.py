"""When to resend a request, and how long to wait first. Pure: the clients do the waiting."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

__all__ = ["DEFAULT_RETRY_TIMEOUT", "RetryPolicy", "retry_delay"]

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


# Long enough to ride out a PostgreSQL restart or a failover (typically 10-30 s).
DEFAULT_RETRY_TIMEOUT = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """When to give up on one request, and how long to wait between its sends.

    Sends stop at whichever bound comes first: `attempts` sends (None: no count bound), or
    `timeout` seconds since the first send (None: no time bound); a wait that would run past
    `timeout` is cut to end there, for one last send. Between sends, full-jitter exponential
    backoff: a random wait in [0, min(max_delay, base_delay * 2**(n-1))] before resend n.
    A 503's Retry-After is honoured, capped at `max_delay`. `statuses`: the answers resent
    (connection failures aside); 502 and 504 only where a proxy in front may drop requests."""

    attempts: int | None = None
    base_delay: float = 0.2
    max_delay: float = 5.0
    timeout: float | None = DEFAULT_RETRY_TIMEOUT
    statuses: frozenset[int] = frozenset({503})

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be at least 1 (or None for no count bound)")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.timeout is not None and self.timeout < 0:
            raise ValueError("timeout must not be negative (or None for no time bound)")
        if self.attempts is None and self.timeout is None:
            raise ValueError("set attempts or timeout: retries need a bound")

    @classmethod
    def of(
        cls, retries: int | RetryPolicy | None, *, timeout: float | None = DEFAULT_RETRY_TIMEOUT
    ) -> RetryPolicy:
        """The clients' `retries=` (resends after the first send; None: as many as `timeout`
        allows) and `retry_timeout=`; a RetryPolicy is taken as it is."""
        if isinstance(retries, RetryPolicy):
            return retries
        return cls(attempts=None if retries is None else retries + 1, timeout=timeout)

    @property
    def may_resend(self) -> bool:
        return self.attempts is None or self.attempts > 1

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed attempt `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(attempt - 1, 60))
        return random.uniform(0, ceiling)


def retry_delay(
    policy: RetryPolicy,
    outcome: httpx.Response | Exception,
    *,
    attempt: int,
    replayable: bool,
    elapsed: float = 0.0,
) -> float | None:
    """How long to wait before resending after `outcome`, or None to stop here. `elapsed`:
    seconds since the first send of this request."""
    if policy.attempts is not None and attempt >= policy.attempts:
        return None
    if not _retryable(policy, outcome, replayable=replayable):
        return None
    retry_after = _retry_after(outcome) if isinstance(outcome, httpx.Response) else None
    delay = policy.backoff(attempt, retry_after)
    if policy.timeout is None:
        return delay
    remaining = policy.timeout - elapsed
    return min(delay, remaining) if remaining > 0 else None


def _retryable(
    policy: RetryPolicy, outcome: httpx.Response | Exception, *, replayable: bool
) -> bool:
    if isinstance(outcome, httpx.Response):
        return outcome.status_code in policy.statuses
    if isinstance(outcome, _NOT_SENT):
        return True
    return replayable and isinstance(outcome, _MAYBE_SENT)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None  # absent, or an HTTP date: fall back to our own backoff
