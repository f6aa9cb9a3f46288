"""The deadline scheduler: one leader claims due jobs earliest-deadline-first within each use
case's capacity and publishes them to SQS; it also reaps expired leases and prunes old jobs.

`run_once()` is one dispatch pass; `run_forever()` is a thin loop around it. The leader keeps
its lease and sleeps until a wake-up (NOTIFY), the next tick or the next known run_at. A standby
only tries to elect itself, once per election period (a third of the leader TTL, jittered), and
ignores wake-ups. A failed pass backs off, with jitter, up to a cap; wake-ups do not cut that
short."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from jobs_schema import MAX_SQS_MESSAGE_BYTES, JobMessage, UseCaseConfig
from jobs_server.clock import Clock, SystemClock
from jobs_server.errors import JobsServerError
from jobs_server.metrics import QueueDepthRefresher, ServerMetrics
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import OutgoingMessage, Publisher
from jobs_server.stats import DispatchRollup, StatsRefresher
from jobs_server.store.base import ClaimedJob, JobStore, LeaderLease, Subscription
from jobs_server.tracing import Tracing
from jobs_server.wakeups import CHANNEL, parse_wakeup

__all__ = ["Scheduler", "SchedulerConfig", "SchedulerStats", "new_holder_id"]

logger = logging.getLogger(__name__)

# Room for the message's own fields around the payload.
_EMBED_LIMIT = MAX_SQS_MESSAGE_BYTES - 4096


def new_holder_id() -> str:
    """Unique per process start, so a restarted scheduler is never mistaken for its old self."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    name: str = "default"
    tick_seconds: float = 1.0
    leader_ttl_seconds: float = 10.0
    claim_batch: int = 500
    reap_batch: int = 500
    reap_every_seconds: float = 0.5
    prune_every_seconds: float = 60.0
    prune_batch: int = 1000
    idempotency_retention_seconds: float = 86_400.0
    backoff_base_seconds: float = 0.5  # the first wait after a failed pass; doubles
    max_backoff_seconds: float = 5.0
    metrics_refresh_seconds: float = 15.0  # queue-depth gauges
    stats_every_seconds: float = 2.0


@dataclass
class SchedulerStats:
    passes: int = 0
    dispatched: int = 0
    deadline_misses: int = 0
    publish_failures: int = 0
    released: int = 0
    reaped: int = 0
    pruned: int = 0
    last_pass_at: datetime | None = None
    last_pass_seconds: float = 0.0
    dispatched_by_use_case: dict[str, int] = field(default_factory=dict)


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        publisher: Publisher,
        use_cases: dict[str, UseCaseConfig],
        *,
        config: SchedulerConfig | None = None,
        holder: str | None = None,
        clock: Clock | None = None,
        metrics: ServerMetrics | None = None,
        tracing: Tracing | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._use_cases = use_cases
        self.config = config or SchedulerConfig()
        self.holder = holder or new_holder_id()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._outcomes = OutcomeService(store, clock=self._clock, metrics=metrics)
        self._metrics = metrics
        self._tracing = tracing or Tracing()
        self.depth = (
            QueueDepthRefresher(
                metrics, store, list(use_cases), every_seconds=self.config.metrics_refresh_seconds
            )
            if metrics is not None
            else None
        )
        self._leader: LeaderLease | None = None
        self._renewed_at = 0.0
        self._pruned_at = 0.0
        self._reaped_at = 0.0
        self._wake = asyncio.Event()
        self._next_due: datetime | None = None
        self._subscription: Subscription | None = None
        self.stats = SchedulerStats()
        self.rollup = DispatchRollup()  # the dashboard's dispatch and slack figures
        self._refresher = StatsRefresher(
            store,
            list(use_cases),
            name=self.config.name,
            every_seconds=self.config.stats_every_seconds,
        )

    @property
    def is_leader(self) -> bool:
        return self._leader is not None

    @property
    def epoch(self) -> int | None:
        return self._leader.epoch if self._leader else None

    # -- leadership ------------------------------------------------------------------------

    async def ensure_leadership(self) -> bool:
        """Take or renew the leader lease (renewed every third of its ttl)."""
        if (
            self._leader
            and time.monotonic() - self._renewed_at < self.config.leader_ttl_seconds / 3
        ):
            return True
        started = time.monotonic()
        epoch = await self._store.acquire_leadership(
            self.config.name, self.holder, ttl=self.config.leader_ttl_seconds
        )
        was = self._leader
        self._leader = LeaderLease(self.config.name, self.holder, epoch) if epoch else None
        self._renewed_at = started
        if self._leader and not was:
            logger.info("became leader", extra={"holder": self.holder, "epoch": epoch})
        elif was and not self._leader:
            logger.warning("lost leadership", extra={"holder": self.holder})
        return self._leader is not None

    async def resign(self) -> None:
        if self._leader:
            await self._store.resign_leadership(self.config.name, self.holder)
            self._leader = None

    # -- one pass --------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Dispatch every use case's due jobs once; return how many were published."""
        if self._leader is None:
            return 0
        started = time.monotonic()
        counts = await asyncio.gather(
            *(self._dispatch(name, uc) for name, uc in self._use_cases.items())
        )
        self.stats.passes += 1
        self.stats.last_pass_at = self._clock.now()
        self.stats.last_pass_seconds = time.monotonic() - started
        if self._metrics is not None:
            self._metrics.observe_pass(self.stats.last_pass_seconds)
        return sum(counts)

    async def _dispatch(self, name: str, uc: UseCaseConfig) -> int:
        """Claim and publish in batches; the next batch is claimed while the last one is being
        published, so the SQS endpoint, not the database round trip, sets the pace."""
        sent = 0
        publishing: asyncio.Task[int] | None = None
        while True:
            claimed = await self._claim(name, uc)
            if publishing is not None:
                try:
                    sent += await publishing
                except BaseException:
                    await self._store.release_leases([c.lease for c in claimed])
                    raise
            if not claimed:
                return sent
            publishing = asyncio.create_task(self._publish(name, uc, claimed))
            if len(claimed) < self.config.claim_batch:
                return sent + await publishing

    async def _claim(self, name: str, uc: UseCaseConfig) -> list[ClaimedJob]:
        assert self._leader is not None
        return await self._store.claim_due_jobs(
            name,
            capacity=uc.capacity,
            limit=self.config.claim_batch,
            lease_seconds=uc.lease_duration_seconds,
            leader=self._leader,
            per_tenant_cap=uc.per_tenant_running_cap,
        )

    async def _publish(self, name: str, uc: UseCaseConfig, claimed: list[ClaimedJob]) -> int:
        claimed_at = self._clock.now()
        by_key = {str(c.id): c for c in claimed}
        spans = self._tracing.start_dispatch(claimed)
        failed = await self._publisher.publish(
            uc.queue,
            [OutgoingMessage(k, message_body(c, spans.carrier(c.id))) for k, c in by_key.items()],
        )
        spans.end(failed={by_key[k].id for k in failed})
        if self._metrics is not None:
            self._metrics.observe_published(name, by_key, failed=failed, now=self._clock.now())
        if failed:
            released = await self._store.release_leases([by_key[k].lease for k in failed])
            self.stats.publish_failures += len(failed)
            self.stats.released += len(released)
            logger.error(
                "publish failed; claims released",
                extra={"use_case": name, "failed": len(failed), "released": len(released)},
            )
            raise PublishFailed(name, len(failed))
        self.rollup.add(claimed, claimed_at)
        misses = sum(c.missed_deadline for c in claimed)
        self.stats.dispatched += len(claimed)
        self.stats.deadline_misses += misses
        self.stats.dispatched_by_use_case[name] = self.stats.dispatched_by_use_case.get(
            name, 0
        ) + len(claimed)
        if misses:
            logger.warning("dispatched after deadline", extra={"use_case": name, "count": misses})
        return len(claimed)

    # -- maintenance -----------------------------------------------------------------------

    async def reap(self) -> int:
        reaped = await self._outcomes.reap_expired(limit=self.config.reap_batch)
        self.stats.reaped += len(reaped)
        return len(reaped)

    async def prune(self) -> int:
        """Delete finished jobs past their use case's retention, in bounded batches."""
        total = 0
        for name, uc in self._use_cases.items():
            while True:
                n = await self._store.prune_finished_jobs(
                    name, older_than_seconds=uc.retention_seconds, limit=self.config.prune_batch
                )
                total += n
                if n < self.config.prune_batch:
                    break
        await self._store.prune_idempotency_keys(
            older_than_seconds=self.config.idempotency_retention_seconds,
            limit=self.config.prune_batch,
        )
        self.stats.pruned += total
        return total

    async def refresh_stats(self) -> None:
        """Bring the dashboard's statistics up to date now (the loop does it every few s)."""
        await self._refresher.refresh(self)

    async def maintain(self) -> None:
        # passes run on every wake-up under load; leases expire on a scale of seconds
        if time.monotonic() - self._reaped_at >= self.config.reap_every_seconds:
            self._reaped_at = time.monotonic()
            await self.reap()
        if time.monotonic() - self._pruned_at >= self.config.prune_every_seconds:
            self._pruned_at = time.monotonic()
            await self.prune()

    # -- the loop --------------------------------------------------------------------------

    def wake(self, earliest_run_at: datetime | None = None) -> None:
        """Run a pass now, or remember a future run_at to wake for."""
        if earliest_run_at is not None and earliest_run_at > self._clock.now():
            if self._next_due is None or earliest_run_at < self._next_due:
                self._next_due = earliest_run_at
            return
        self._wake.set()

    def _on_notify(self, payload: str) -> None:
        if self._leader is None:  # a standby has no pass to run early
            return
        w = parse_wakeup(payload)
        self.wake(w.earliest_run_at)

    async def _keep_listening(self) -> None:
        if self._subscription is not None and self._subscription.alive:
            return
        try:
            self._subscription = await self._store.listen(CHANNEL, self._on_notify)
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
                    if await self.ensure_leadership():
                        busy = await self._leader_pass()
                    failures = 0
                except PublishFailed:
                    failures += 1
                except Exception:  # the loop must outlive any one failure
                    failures += 1
                    logger.exception("scheduler pass failed", extra={"failures": failures})
                    self._leader = None if failures > 2 else self._leader
                if self.depth is not None:
                    self.depth.poke(self.is_leader)
                if failures:
                    await self._sleep(self.backoff(failures), stop, wakeable=False)
                elif not busy:
                    await self._sleep(self._delay(), stop, wakeable=self.is_leader)
        finally:
            await self._shutdown()

    async def _leader_pass(self) -> bool:
        self._wake.clear()
        sent = await self.run_once()
        await self.maintain()
        self._refresher.poke(self)
        # a full batch may mean more is due: go again without sleeping
        return sent >= self.config.claim_batch

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
        if self._leader is None:
            return self.election_period()
        delay = self.config.tick_seconds
        if self._next_due is not None:
            until = (self._next_due - self._clock.now()).total_seconds()
            if until <= delay:
                self._next_due = None
            delay = max(0.0, min(delay, until))
        return min(delay, self.config.leader_ttl_seconds / 3)

    async def _sleep(self, seconds: float, stop: asyncio.Event, *, wakeable: bool) -> None:
        events = [self._wake, stop] if wakeable else [stop]
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _shutdown(self) -> None:
        if self.depth is not None:
            await self.depth.close()
        await self._refresher.close()
        try:
            await self.resign()
        except Exception as exc:
            logger.warning("could not resign leadership", extra={"error": str(exc)})
        if self._subscription is not None:
            await self._subscription.close()
        logger.info("scheduler stopped", extra={"holder": self.holder})


class PublishFailed(JobsServerError):
    def __init__(self, use_case: str, count: int) -> None:
        super().__init__(f"{count} messages of use case {use_case!r} could not be published")


def message_body(job: ClaimedJob, trace_context: dict[str, str] | None = None) -> str:
    """The SQS body; a payload too large to embed is left out for the worker to fetch.
    `trace_context` (the dispatch span's) replaces the one stored on the job."""
    msg = JobMessage(
        job_id=job.id,
        lease_token=job.lease_token,
        attempt=job.attempt,
        tenant=job.tenant,
        use_case=job.use_case,
        job_type=job.job_type,
        payload=job.payload,
        deadline=job.deadline,
        lease_expires_at=job.lease_expires_at,
        max_attempts=job.max_attempts,
        trace_context=trace_context or job.trace_context or {},
        enqueued_at=job.created_at,
    )
    body = msg.model_dump_json()
    if len(body.encode()) > _EMBED_LIMIT:
        body = msg.model_copy(update={"payload": None}).model_dump_json()
    return body
