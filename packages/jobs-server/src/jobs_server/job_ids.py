"""Job ids: UUIDv7 stamped by the one clock, so that ids sort by creation and a created-at range
is an id range (the store's list indexes seek by it)."""

from __future__ import annotations

import os
from datetime import datetime
from uuid import UUID

from jobs_server.clock import Clock

__all__ = ["JobIds"]


class JobIds:
    """UUIDv7 (RFC 9562) job ids, the time taken from the server's clock, with a 12-bit counter
    in rand_a: ids sort by creation, also within one millisecond of one process, and index
    inserts stay local. One per server object; a forked child draws random bytes of its own
    (the pid is checked on use), so it never repeats its parent's ids."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._pid = os.getpid()
        self._last_ms = 0
        self._counter = 0
        self._random = b""  # bytes from os.urandom, used up 8 at a time
        self._random_at = 0

    def new(self, now: datetime | None = None) -> UUID:
        """The next id; `now`, the clock's reading the caller already holds (a batch reads
        it once for all its jobs), else the clock is read."""
        if self._pid != os.getpid():
            self._pid, self._random = os.getpid(), b""
        ms = int((now or self._clock.now()).timestamp() * 1000)
        if ms <= self._last_ms:
            ms, self._counter = self._last_ms, self._counter + 1
            if self._counter > 0xFFF:  # 4,096 ids in one millisecond: borrow the next one
                ms, self._counter = ms + 1, 0
        else:
            self._counter = 0
        self._last_ms = ms
        if self._random_at >= len(self._random):  # one system call for 512 ids, not one each
            self._random, self._random_at = os.urandom(8 * 512), 0
        rand = int.from_bytes(self._random[self._random_at : self._random_at + 8], "big")
        self._random_at += 8
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | self._counter << 64
        value |= 0b10 << 62 | (rand & ((1 << 62) - 1))
        return UUID(int=value)
