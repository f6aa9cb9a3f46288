"""The scheduler's loop: it decides when each service runs, and runs nothing else itself."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from jobs_server.clock import Clock
from jobs_server.errors import JobsServerError
from jobs_server.stats import SchedulerStats
from jobs_server.store.base import LeaderStore, Subscription
from jobs_server.wakeups import CHANNEL, parse_wakeup

from .dispatcher import Dispatched, PublishFailed
from .elector import Elector

__all__ = ["DispatchService", "Every", "Scheduler", "SchedulerConfig", "Service"]

logger = logging.getLogger(__name__)

_BACKGROUND_GRACE_SECONDS = 5.0

_S = TypeVar("_S")


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    name: str = "default"
    tick_seconds: float = 1.0
    leader_ttl_seconds: float = 10.0
    claim_batch: int = 500
    reap_batch: int = 500
    expire_batch: int = 1000  # jobs the expirer ends a pass, at most
    # how often the expirer runs (claims pass over jobs past expires_at meanwhile)
    expire_every_seconds: float = 0.25
    reap_every_seconds: float = 0.5
    prune_every_seconds: float = 60.0
    prune_batch: int = 1000
    idempotency_retention_seconds: float = 86_400.0
    pause_history_retention_seconds: float = 90 * 86_400.0
    backoff_base_seconds: float = 0.5  # the first wait after a failed pass; doubles
    max_backoff_seconds: float = 5.0
    metrics_refresh_seconds: float = 15.0  # queue-depth gauges
    stats_every_seconds: float = 2.0
    periodic_every_seconds: float = 1.0  # schedules' ticks: a job is at most this late
    # the feasibility summary (jobs_server.feasibility): folded this often; None: not kept
    feasibility_fold_seconds: float | None = 1.0
    feasibility_default_duration_seconds: float = 1.0
    feasibility_scale_out_seconds: float = 0.0  # the lead of jobs_worker_slots_needed


class Service(Protocol):
    """One maintenance job: do it once, as of `now`, and say what was done."""

    async def run_once(self, now: datetime) -> object: ...


class DispatchService(Protocol):
    async def run_once(
        self, now: datetime, *, only: frozenset[str] | None = None
    ) -> Dispatched: ...


@dataclass
class Every:
    """A service and its period. A background one runs as a task of its own (never delaying
    dispatch; at most one run at a time); its failures are logged, not counted."""

    service: Service
    seconds: float
    background: bool = False
    name: str = ""
    last_run: datetime | None = field(default=None, init=False)
    task: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.name = self.name or type(self.service).__name__

    def due(self, now: datetime) -> bool:
        if self.task is not None and not self.task.done():
            return False
        return self.last_run is None or (now - self.last_run).total_seconds() >= self.seconds


class Scheduler:
    """While `elector` holds the lease, each step dispatches, then runs every service whose
    period has passed by the injected clock; between steps it sleeps until a wake-up, the tick
    or the next known run_at. A step is one round trip per use case with due work (the claim
    reads the pauses and announces its jobs itself): nothing else runs on every wake-up."""

    def __init__(
        self,
        elector: Elector,
        dispatcher: DispatchService,
        *,
        listener: LeaderStore,
        clock: Clock,
        config: SchedulerConfig | None = None,
        services: Sequence[Every] = (),
        stats: SchedulerStats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.elector = elector
        self.dispatcher = dispatcher
        self.clock = clock
        self.config = config or SchedulerConfig()
        self.services = list(services)
        self.stats = stats or SchedulerStats()
        self._listener = listener
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        # set when a wake-up names a run_at sooner than the sleep under way ends: the sleep
        # shortens to it (a job stamped by a server whose clock runs a little ahead of this
        # one's is such a run_at: without this it waited for the tick)
        self._rearm = asyncio.Event()
        # what the next pass dispatches: every use case, or only those woken by enqueues
        self._full = True
        self._woken: set[str] = set()
        self._next_due: datetime | None = None
        self._subscription: Subscription | None = None

    def add(self, service: Service, *, every: float, background: bool = False) -> Every:
        """Run `service` every `every` seconds while leading (a new entry of the loop)."""
        entry = Every(service, every, background=background)
        self.services.append(entry)
        return entry

    def service(self, kind: type[_S]) -> _S:
        """The first service of this type (tests and the dashboard reach one by its class)."""
        for service in (entry.service for entry in self.services):
            if isinstance(service, kind):
                return service
        raise LookupError(kind.__name__)

    @property
    def holder(self) -> str:
        return self.elector.holder

    @property
    def is_leader(self) -> bool:
        return self.elector.lease is not None

    @property
    def epoch(self) -> int | None:
        lease = self.elector.lease
        return lease.epoch if lease else None

    # -- one step --------------------------------------------------------------------------

    async def step(self) -> bool:
        """Elect (or renew), then, when leading, dispatch and run the due services. True when a
        full batch went out: more may be due, go again without sleeping."""
        now = self.clock.now()
        if await self.elector.run_once(now) is None:
            return False
        self._wake.clear()
        # narrowed only when woken for some use cases and nothing asked for all of them
        only = frozenset(self._woken) if self._woken and not self._full else None
        self._full, self._woken = False, set()
        dispatched = await self.dispatcher.run_once(now, only=only)
        await self.run_due(now)
        if dispatched.more:
            self._full = True  # a full batch: go again over every use case
        return dispatched.more

    async def run_due(self, now: datetime) -> list[tuple[str, object]]:
        """Run every service whose period has passed at `now`; what the foreground ones did."""
        done: list[tuple[str, object]] = []
        for entry in self.services:
            if not entry.due(now):
                continue
            entry.last_run = now
            if entry.background:
                entry.task = asyncio.create_task(self._run_logged(entry, now))
            else:
                done.append((entry.name, await entry.service.run_once(now)))
        return done

    async def _run_logged(self, entry: Every, now: datetime) -> None:
        try:
            await entry.service.run_once(now)
        except Exception:  # the top of this background run: it must never stop dispatch
            logger.exception("scheduler service failed", extra={"service": entry.name})

    # -- the loop --------------------------------------------------------------------------

    def wake(
        self, earliest_run_at: datetime | None = None, *, use_cases: frozenset[str] = frozenset()
    ) -> None:
        """Run a pass now, or remember a future run_at to wake for. A pass woken only for
        `use_cases` (jobs enqueued there, due now) claims for those alone; anything else
        (slots freed, a timer, the tick, a full batch) makes the next pass go over every use
        case. So at low load a wake-up costs one claim, not one per use case."""
        if earliest_run_at is not None and earliest_run_at > self.clock.now():
            if self._next_due is None or earliest_run_at < self._next_due:
                self._next_due = earliest_run_at
                self._rearm.set()
            return
        if use_cases and earliest_run_at is not None:
            self._woken |= use_cases
        else:
            self._full = True
        self._wake.set()

    def _on_notify(self, payload: str) -> None:
        if not self.is_leader:  # a standby has no pass to run early
            return
        wakeup = parse_wakeup(payload)
        self.wake(wakeup.earliest_run_at, use_cases=wakeup.use_cases)

    async def _keep_listening(self) -> None:
        if self._subscription is not None and self._subscription.alive:
            return
        try:
            self._subscription = await self._listener.listen(CHANNEL, self._on_notify)
        except JobsServerError as exc:
            self._subscription = None
            logger.warning("cannot listen for wake-ups", extra={"error": str(exc)})

    async def run_forever(self, stop: asyncio.Event) -> None:
        failures = 0
        logger.info("scheduler started", extra={"holder": self.holder})
        try:
            while not stop.is_set():
                busy = False
                try:
                    await self._keep_listening()
                    busy = await self.step()
                    failures = 0
                except PublishFailed:
                    failures += 1
                except Exception:  # the loop must outlive any one failure
                    failures += 1
                    logger.exception("scheduler pass failed", extra={"failures": failures})
                    if failures > 2:
                        self.elector.drop()
                if failures:
                    await self._sleep(self.backoff(failures), stop, wakeable=False)
                elif not busy:
                    await self._sleep(self._delay(), stop, wakeable=self.is_leader)
        finally:
            await self._shutdown()

    def backoff(self, failures: int) -> float:
        """The wait after `failures` failed passes in a row: doubling from the base up to the
        cap, each a random value in its upper half (schedulers that failed together spread
        out, and the wait still grows)."""
        cfg = self.config
        ceiling = min(
            cfg.max_backoff_seconds, cfg.backoff_base_seconds * 2.0 ** min(failures - 1, 30)
        )
        return self._rng.uniform(ceiling / 2, ceiling)

    def election_period(self) -> float:
        """How long a standby waits between tries to take the lease: a third of the TTL, less
        up to 10 % so that standbys do not keep step. A dead leader is replaced within the TTL
        plus one period."""
        return self.config.leader_ttl_seconds / 3 * self._rng.uniform(0.9, 1.0)

    def _delay(self) -> float:
        if not self.is_leader:
            return self.election_period()
        delay = self.config.tick_seconds
        if self._next_due is not None:
            until = (self._next_due - self.clock.now()).total_seconds()
            if until <= delay:
                self._next_due = None
            delay = max(0.0, min(delay, until))
        return min(delay, self.config.leader_ttl_seconds / 3)

    async def _sleep(self, seconds: float, stop: asyncio.Event, *, wakeable: bool) -> None:
        ends = time.monotonic() + seconds
        while True:
            self._rearm.clear()
            events = [self._wake, stop, self._rearm] if wakeable else [stop]
            waits = [asyncio.ensure_future(e.wait()) for e in events]
            try:
                await asyncio.wait(
                    waits,
                    timeout=max(0.0, ends - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for w in waits:
                    w.cancel()
            if not (wakeable and self._rearm.is_set()) or self._wake.is_set() or stop.is_set():
                break
            ends = min(ends, time.monotonic() + self._delay())  # a sooner run_at came
        if not self._wake.is_set():
            self._full = True  # the tick or a run_at timer: every use case

    async def _shutdown(self) -> None:
        for entry in self.services:
            await _finish(entry)
        try:
            await self.elector.resign()
        except Exception as exc:
            logger.warning("could not resign leadership", extra={"error": str(exc)})
        if self._subscription is not None:
            await self._subscription.close()
        logger.info("scheduler stopped", extra={"holder": self.holder})


async def _finish(entry: Every) -> None:
    """Let a background run finish (a stats refresh holds dispatch stats), briefly; then let the
    service close what it holds."""
    if entry.task is not None and not entry.task.done():
        try:
            await asyncio.wait_for(asyncio.shield(entry.task), timeout=_BACKGROUND_GRACE_SECONDS)
        except TimeoutError:
            entry.task.cancel()
            await asyncio.gather(entry.task, return_exceptions=True)
    close = getattr(entry.service, "close", None)
    if close is not None:
        await close()
