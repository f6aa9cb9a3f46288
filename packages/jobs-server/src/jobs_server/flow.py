"""The flow limits' state: each rate key's starts in its interval, next slot and waiting jobs,
for the API and the dashboard. The limits themselves are the claim's (claim_due_jobs_keyed)."""

from __future__ import annotations

from datetime import datetime, timedelta

from jobs_schema import JobsConfig, RateKeyList, RateKeyState, RateLimit
from jobs_server.auth import Principal
from jobs_server.clock import Clock
from jobs_server.errors import Forbidden, UnknownUseCase
from jobs_server.store.base import FlowStore, RateBucket

__all__ = ["FlowService", "rate_key_state"]


class FlowService:
    def __init__(self, store: FlowStore, config: JobsConfig, *, clock: Clock) -> None:
        self._store = store
        self._config = config
        self._clock = clock

    async def rate_keys(self, who: Principal, use_case: str, *, limit: int) -> RateKeyList:
        """The busiest rate keys of `use_case` (admins only: a key spans tenants)."""
        if who.tenant_scope is not None:
            raise Forbidden("rate keys span tenants: an admin token is needed")
        uc = self._config.use_cases.get(use_case)
        if uc is None:
            raise UnknownUseCase(use_case, sorted(self._config.use_cases))
        rate = uc.rate_limit
        if rate is None:
            return RateKeyList(use_case=use_case, starts=None, per_seconds=None, keys=[])
        buckets = await self._store.list_rate_buckets(
            use_case, per_seconds=rate.per_seconds, limit=limit
        )
        now = self._clock.now()
        return RateKeyList(
            use_case=use_case,
            starts=rate.starts,
            per_seconds=rate.per_seconds,
            keys=[rate_key_state(b, rate, now) for b in buckets],
        )


def rate_key_state(bucket: RateBucket, rate: RateLimit, now: datetime) -> RateKeyState:
    started = sum(n for _, n in bucket.starts)
    free = max(0, rate.starts - started)
    return RateKeyState(
        rate_key=bucket.rate_key,
        started=started,
        next_slot=now if free else _next_slot(bucket.starts, rate),
        waiting=bucket.waiting,
        throttled=max(0, bucket.waiting - free),
    )


def _next_slot(starts: tuple[tuple[datetime, int], ...], rate: RateLimit) -> datetime:
    """When enough of the interval's starts (oldest first) have left it for one more."""
    left = sum(n for _, n in starts)
    for at, n in starts:
        left -= n
        if left < rate.starts:
            return at + timedelta(seconds=rate.per_seconds)
    raise AssertionError("a full interval has starts")  # pragma: no cover
