"""The one clock every rule reads: run_at defaults, deadlines from tolerance, due checks, lease
expiry, backoff and miss detection.

In production it is PostgreSQL's clock (`DatabaseClock`): read once, then carried forward on
this host's monotonic clock, and read again every minute, so a host whose wall clock is off
decides nothing. Tests inject a `ManualClock` and move it instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "DatabaseClock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    """This host's wall clock: for tools that have no database to ask."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float | timedelta) -> datetime:
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("a clock does not go back; use set() for a jump")
        self._now += step
        return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("the clock holds aware datetimes")
        self._now = when


class DatabaseClock:
    """PostgreSQL's clock, carried forward on `time.monotonic()` between readings.

    `read` returns the database's `clock_timestamp()`; the reading is taken as the midpoint of
    the round trip, so the error is at most half of it. A sync reads SAMPLES times and keeps
    the reading of the shortest round trip: the first of a sync may wait for a connection to
    open, or the loop may be busy when its answer lands, and half of such a round trip (tens of
    milliseconds at a process's start) would set one process's clock that far from another's;
    a scheduler whose clock ran behind the API's would take a wake-up's due job for a future
    one and sleep that long before claiming it. Until the first `sync()` the clock falls back to
    this host's wall clock."""

    RESYNC_SECONDS = 60.0
    SAMPLES = 3

    def __init__(
        self,
        read: Callable[[], Awaitable[datetime]] | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._monotonic = monotonic
        self._base: datetime | None = None
        self._base_mono = 0.0

    def bind(self, read: Callable[[], Awaitable[datetime]]) -> None:
        """Name the database reading (the store does, once it has a pool)."""
        self._read = read

    @property
    def synced(self) -> bool:
        return self._base is not None

    @property
    def stale(self) -> bool:
        return self._base is None or self._monotonic() - self._base_mono >= self.RESYNC_SECONDS

    async def sync(self) -> None:
        if self._read is None:
            raise RuntimeError("DatabaseClock.sync() before bind(): no database to read")
        best: tuple[float, datetime, float] | None = None  # (round trip, reading, midpoint)
        for _ in range(self.SAMPLES):
            sent = self._monotonic()
            db_now = await self._read()
            received = self._monotonic()
            if best is None or received - sent < best[0]:
                best = (received - sent, db_now, (sent + received) / 2)
        assert best is not None
        _, self._base, self._base_mono = best

    def now(self) -> datetime:
        if self._base is None:
            return datetime.now(UTC)
        return self._base + timedelta(seconds=self._monotonic() - self._base_mono)
