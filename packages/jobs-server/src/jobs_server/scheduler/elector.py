"""The leader lease: one scheduler among all running copies dispatches and maintains."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime

from jobs_server.store.base import LeaderLease, LeaderStore

__all__ = ["Elector", "new_holder_id"]

logger = logging.getLogger(__name__)


def new_holder_id() -> str:
    """Unique per process start, so a restarted scheduler is never mistaken for its old self."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Elector:
    """Takes the lease, renews it every third of its TTL (by the `now` it is given) and resigns
    it; `lease` is the one currently held, if any. `on_change(leading)` hears of every change."""

    def __init__(
        self,
        store: LeaderStore,
        *,
        name: str,
        ttl_seconds: float,
        holder: str | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._store = store
        self.name = name
        self.holder = holder or new_holder_id()
        self.ttl_seconds = ttl_seconds
        self._on_change = on_change
        self._lease: LeaderLease | None = None
        self._renewed_at: datetime | None = None

    @property
    def lease(self) -> LeaderLease | None:
        return self._lease

    async def run_once(self, now: datetime) -> LeaderLease | None:
        """Take or renew the lease when a third of its TTL has passed since the last try."""
        if self._lease is not None and not self._renewal_due(now):
            return self._lease
        epoch = await self._store.acquire_leadership(self.name, self.holder, ttl=self.ttl_seconds)
        self._renewed_at = now
        self._set(LeaderLease(self.name, self.holder, epoch) if epoch else None)
        return self._lease

    def _renewal_due(self, now: datetime) -> bool:
        last = self._renewed_at
        return last is None or (now - last).total_seconds() >= self.ttl_seconds / 3

    def drop(self) -> None:
        """Stop counting on the lease (the loop does after repeated failures); no store call."""
        self._set(None)

    async def resign(self) -> None:
        if self._lease is not None:
            await self._store.resign_leadership(self.name, self.holder)
            self._set(None, resigned=True)

    def _set(self, lease: LeaderLease | None, *, resigned: bool = False) -> None:
        was, self._lease = self._lease, lease
        if lease and not was:
            logger.info("became leader", extra={"holder": self.holder, "epoch": lease.epoch})
        elif was and not lease and resigned:
            logger.info("resigned leadership", extra={"holder": self.holder})
        elif was and not lease:
            logger.warning("lost leadership", extra={"holder": self.holder})
        if (was is None) != (lease is None) and self._on_change is not None:
            self._on_change(lease is not None)
