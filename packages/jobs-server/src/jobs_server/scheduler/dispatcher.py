"""Dispatch: claim due jobs earliest-deadline-first within each use case's capacity and publish
their messages, the next batch claimed while the last one is being published."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn
from uuid import UUID

from jobs_schema import JobMessage, UseCaseConfig, pack_bodies, packed_size
from jobs_server.clock import Clock
from jobs_server.errors import JobsServerError
from jobs_server.events import JobsChanged
from jobs_server.metrics import ServerMetrics
from jobs_server.publisher.base import OutgoingMessage, Publisher
from jobs_server.stats import DispatchRollup, SchedulerStats
from jobs_server.store.base import ClaimedJob, DispatchStore, LeaderLease
from jobs_server.tracing import Tracing

from .elector import Elector

__all__ = [
    "Dispatched",
    "Dispatcher",
    "Pack",
    "PublishFailed",
    "embed_limit",
    "message_body",
    "pack_messages",
]

logger = logging.getLogger(__name__)

# Room for the message's own fields around the payload.
_ENVELOPE_BYTES = 4096


def embed_limit(max_message_bytes: int) -> int:
    """The largest message body that still embeds its payload."""
    return max_message_bytes - _ENVELOPE_BYTES


@dataclass(frozen=True, slots=True)
class Dispatched:
    sent: int
    more: bool  # a use case filled a whole batch: more may be due already


class PublishFailed(JobsServerError):
    def __init__(self, use_case: str, count: int) -> None:
        super().__init__(f"{count} messages of use case {use_case!r} could not be published")


class Dispatcher:
    """One pass over every use case, while `elector` holds the lease: one claim statement a
    use case with due work, which passes over what is paused itself. A failed publish gives
    the claims back (release_leases) and raises PublishFailed."""

    def __init__(
        self,
        store: DispatchStore,
        publisher: Publisher,
        use_cases: Mapping[str, UseCaseConfig],
        *,
        elector: Elector,
        clock: Clock,
        claim_batch: int,
        stats: SchedulerStats | None = None,
        rollup: DispatchRollup | None = None,
        metrics: ServerMetrics | None = None,
        tracing: Tracing | None = None,
        on_changed: JobsChanged | None = None,
    ) -> None:
        self._on_changed = on_changed
        self._store = store
        self._publisher = publisher
        self._use_cases = dict(use_cases)
        self._elector = elector
        self._clock = clock
        self._batch = claim_batch
        self.stats = stats or SchedulerStats()
        self.rollup = rollup or DispatchRollup()
        self._metrics = metrics
        self._tracing = tracing or Tracing()
        self._embed_limit = embed_limit(publisher.max_message_bytes)

    async def run_once(self, now: datetime, *, only: frozenset[str] | None = None) -> Dispatched:
        """Dispatch every use case's due jobs once (with `only`, those use cases' alone)."""
        lease = self._elector.lease
        if lease is None:
            return Dispatched(0, more=False)
        started = time.monotonic()
        counts = await asyncio.gather(
            *(
                self._dispatch(name, uc, lease)
                for name, uc in self._use_cases.items()
                if only is None or name in only
            )
        )
        self.stats.passes += 1
        self.stats.last_pass_at = now
        self.stats.last_pass_seconds = time.monotonic() - started
        if self._metrics is not None:
            self._metrics.observe_pass(self.stats.last_pass_seconds)
        sent = sum(counts)
        return Dispatched(sent, more=sent >= self._batch)

    async def _dispatch(self, name: str, uc: UseCaseConfig, lease: LeaderLease) -> int:
        """Claim and publish in batches; the next batch is claimed while the last one is being
        published, so the queue's endpoint, not the database round trip, sets the pace."""
        sent = 0
        publishing: asyncio.Task[int] | None = None
        while True:
            claimed = await self._claim(name, uc, lease)
            if publishing is not None:
                try:
                    sent += await publishing
                except BaseException:
                    self._changed(await self._store.release_leases([c.lease for c in claimed]))
                    raise
            if not claimed:
                return sent
            publishing = asyncio.create_task(self._publish(name, uc, claimed))
            if len(claimed) < self._batch:
                return sent + await publishing

    def _changed(self, ids: Iterable[UUID]) -> None:
        if self._on_changed is not None:
            self._on_changed(ids)

    async def _claim(self, name: str, uc: UseCaseConfig, lease: LeaderLease) -> list[ClaimedJob]:
        """The claim leaves paused tenants and use cases alone (it reads the pauses itself),
        and announces its jobs to the event streams itself."""
        return await self._store.claim_due_jobs(
            name,
            capacity=uc.capacity,
            limit=self._batch,
            lease_seconds=uc.lease_duration_seconds,
            leader=lease,
            per_tenant_cap=uc.per_tenant_running_cap,
            per_key_cap=uc.concurrency_limit_per_key,
            rate_limit=uc.rate_limit,
        )

    async def _publish(self, name: str, uc: UseCaseConfig, claimed: list[ClaimedJob]) -> int:
        claimed_at = self._clock.now()
        spans = self._tracing.start_dispatch(claimed)
        packs = pack_messages(
            claimed,
            spans.carrier,
            max_jobs=uc.pack_max_jobs,
            max_bytes=self._publisher.max_message_bytes,
        )
        by_key = {p.key: p for p in packs}
        failed = await self._publisher.publish(
            uc.queue, [OutgoingMessage(p.key, p.body) for p in packs]
        )
        lost = [c for k in failed for c in by_key[k].jobs]
        spans.end(failed={c.id for c in lost})
        if self._metrics is not None:
            self._metrics.observe_published(
                name,
                {str(c.id): c for c in claimed},
                failed={str(c.id) for c in lost},
                now=self._clock.now(),
            )
        if lost:
            await self._release(name, lost)
        self._count(name, claimed, claimed_at)
        return len(claimed)

    async def _release(self, name: str, failed: list[ClaimedJob]) -> NoReturn:
        released = await self._store.release_leases([c.lease for c in failed])
        self._changed(released)
        self.stats.publish_failures += len(failed)
        self.stats.released += len(released)
        logger.error(
            "publish failed; claims released",
            extra={"use_case": name, "failed": len(failed), "released": len(released)},
        )
        raise PublishFailed(name, len(failed))

    def _count(self, name: str, claimed: list[ClaimedJob], claimed_at: datetime) -> None:
        self.rollup.add(claimed, claimed_at)
        misses = sum(c.missed_deadline for c in claimed)
        self.stats.dispatched += len(claimed)
        self.stats.deadline_misses += misses
        by_use_case = self.stats.dispatched_by_use_case
        by_use_case[name] = by_use_case.get(name, 0) + len(claimed)
        if misses:
            logger.warning("dispatched after deadline", extra={"use_case": name, "count": misses})


@dataclass(frozen=True, slots=True)
class Pack:
    """One message's jobs and body; `key` (the first job's id) names it in a publish call."""

    key: str
    body: str
    jobs: list[ClaimedJob]


def pack_messages(
    claimed: list[ClaimedJob],
    carrier: Callable[[UUID], dict[str, str] | None] = lambda _: None,
    *,
    max_jobs: int,
    max_bytes: int,
) -> list[Pack]:
    """The claimed jobs in messages of up to `max_jobs` jobs and `max_bytes` bytes, in claim
    order. Each job's body follows message_body's rule (a payload that would not fit a message
    of its own is left out); a message of one job is a plain JobMessage."""
    limit = embed_limit(max_bytes)
    packs: list[Pack] = []
    jobs: list[ClaimedJob] = []
    bodies: list[str] = []
    sizes: list[int] = []

    def close() -> None:
        body = bodies[0] if len(bodies) == 1 else pack_bodies(bodies)
        packs.append(Pack(str(jobs[0].id), body, list(jobs)))
        jobs.clear()
        bodies.clear()
        sizes.clear()

    for job in claimed:
        body = message_body(job, carrier(job.id), limit=limit)
        size = len(body.encode())
        if jobs and (len(jobs) >= max_jobs or packed_size([*sizes, size]) > max_bytes):
            close()
        jobs.append(job)
        bodies.append(body)
        sizes.append(size)
    if jobs:
        close()
    return packs


def message_body(
    job: ClaimedJob, trace_context: dict[str, str] | None = None, *, limit: int
) -> str:
    """The message body; a payload that would take it past `limit` bytes is left out for the
    worker to fetch. `trace_context` (the dispatch span's) replaces the one stored on the job."""
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
    if len(body.encode()) > limit:
        body = msg.model_copy(update={"payload": None}).model_dump_json()
    return body
