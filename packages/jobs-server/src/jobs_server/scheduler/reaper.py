"""Expired leases back to pending (retried) or dead, by the retry rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jobs_schema import JobStatus
from jobs_server.outcomes import OutcomeService
from jobs_server.stats import SchedulerStats

__all__ = ["Reaped", "Reaper"]


@dataclass(frozen=True, slots=True)
class Reaped:
    retried: int
    dead: int

    @property
    def count(self) -> int:
        return self.retried + self.dead


class Reaper:
    """Closes attempts whose lease expired, through the server's one OutcomeService: the same
    rules and the same `on_slots_freed` as a worker's failure report."""

    def __init__(
        self, outcomes: OutcomeService, *, batch: int, stats: SchedulerStats | None = None
    ) -> None:
        self._outcomes = outcomes
        self._batch = batch
        self._stats = stats

    async def run_once(self, now: datetime) -> Reaped:
        applied = await self._outcomes.reap_expired(limit=self._batch, now=now)
        dead = sum(s is JobStatus.DEAD for s in applied.values())
        if self._stats is not None:
            self._stats.reaped += len(applied)
        return Reaped(retried=len(applied) - dead, dead=dead)
