"""Live job events as server-sent events: one LISTEN connection per API process, fanned out to
every open stream through bounded queues.

- `EventHub` LISTENs on jobs_server.events.CHANNEL on one connection of its own, opened with
  the first stream. A NOTIFY names changed jobs; the hub reads their heads in one store query
  (only of jobs some stream could want) and offers each head to the streams it matches. A
  stream holds no database connection: 1,000 idle streams cost 1,000 small queues.
- A stream whose queue is full is not waited for: it gets `lagged` and ends (its client
  reconnects and re-reads), and the others go on.
- The LISTEN connection is checked every `recheck_seconds`; a lost one is opened again and every
  stream gets `reconnected` (events of the gap are lost: re-read), a job's stream also its
  job's current state.
- `end_all()` ends every stream with `shutdown` (the server is stopping; uvicorn waits for open
  responses before it stops).
- `JobStreams` holds the rules of the two endpoints: scoping, the first event, the end after a
  terminal state, heartbeats and the order of what a stream sends (never an older state after
  a newer one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Protocol
from uuid import UUID

from jobs_schema import EventKind, EventQuery, JobHead, StreamNotice
from jobs_schema.events import sse_frame
from jobs_server.auth import Principal
from jobs_server.errors import Forbidden, StreamsFull, TooManyStreams
from jobs_server.events import CHANNEL, parse_ids
from jobs_server.service import JobService
from jobs_server.store.base import Subscription

__all__ = ["EventHub", "JobStreams", "StreamStore", "Subscriber"]

logger = logging.getLogger(__name__)

Item = JobHead | EventKind

_FETCH_BATCH = 1000
_SEEN = 4096  # job heads a stream remembers, to send no state twice or out of order
_HEARTBEAT = b": keepalive\n\n"
_NOTICES = {
    EventKind.LAGGED: "this stream fell behind and ends; reconnect and re-read the jobs",
    EventKind.RECONNECTED: "the server's event feed was reconnected: events may have been "
    "missed, re-read the jobs you follow",
    EventKind.SHUTDOWN: "the server is stopping; reconnect (to another server) and re-read",
}


class StreamStore(Protocol):
    """What the hub needs of the store: the LISTEN connection and the one read of heads."""

    async def listen(self, channel: str, callback: Callable[[str], None]) -> Subscription: ...

    async def get_job_heads(self, job_ids: list[UUID]) -> list[JobHead]: ...


class Subscriber:
    """One open stream's queue. `scope`: the tenant it may see (None: every tenant)."""

    def __init__(
        self,
        hub: EventHub,
        *,
        key: str,
        scope: str | None,
        job_id: UUID | None,
        query: EventQuery,
        size: int,
    ) -> None:
        self._hub = hub
        self.key, self.scope, self.job_id, self.query = key, scope, job_id, query
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=size)
        self.ended = False

    def wants(self, head: JobHead) -> bool:
        return (
            (self.scope is None or head.tenant == self.scope)
            and (self.job_id is None or head.id == self.job_id)
            and self.query.matches(head)
        )

    def offer(self, item: Item) -> None:
        """Queue `item`; a full queue ends the stream with `lagged` instead of waiting."""
        if self.ended:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.end(EventKind.LAGGED)

    def end(self, kind: EventKind) -> None:
        """What is queued is dropped; the stream's next item is `kind`, its last."""
        self.ended = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(kind)
        self._hub.remove(self)

    async def next(self, timeout: float) -> Item | None:  # noqa: ASYNC109 - the heartbeat
        """The next item, or None after `timeout` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self._hub.remove(self)


class EventHub:
    """The process's one LISTEN connection and the streams it feeds."""

    def __init__(
        self,
        store: StreamStore,
        *,
        queue_size: int,
        max_streams: int,
        max_per_tenant: int,
        recheck_seconds: float = 1.0,
        channel: str = CHANNEL,
    ) -> None:
        self._store = store
        self._queue_size = queue_size
        self._max_streams = max_streams
        self._max_per_tenant = max_per_tenant
        self._recheck = recheck_seconds
        self._channel = channel
        self._by_job: dict[UUID, set[Subscriber]] = {}
        self._wide: set[Subscriber] = set()  # streams of many jobs (GET /v1/events)
        self._per_key: dict[str, int] = {}
        self._count = 0
        self._pending: dict[UUID, None] = {}
        self._fetching: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._starting = asyncio.Lock()
        self._closing = False
        self.fetches = 0  # head reads, for tests and the bench

    @property
    def open_streams(self) -> int:
        return self._count

    # -- subscribing -----------------------------------------------------------------------

    async def subscribe(
        self, who: Principal, *, job_id: UUID | None = None, query: EventQuery | None = None
    ) -> Subscriber:
        """A new stream of one job (`job_id`) or of the jobs `query` matches, within what
        `who` may see. TooManyStreams (429) past the per-tenant limit, StreamsFull (503) past
        the process's, StoreUnavailable when the LISTEN connection cannot be opened."""
        key = who.tenant_scope or ""
        if self._closing or self._count >= self._max_streams:
            raise StreamsFull(self._max_streams)
        if self._per_key.get(key, 0) >= self._max_per_tenant:
            raise TooManyStreams(key or "admin", self._max_per_tenant)
        await self._listening()
        sub = Subscriber(
            self,
            key=key,
            scope=who.tenant_scope,
            job_id=job_id,
            query=query or EventQuery(),
            size=self._queue_size,
        )
        if job_id is not None:
            self._by_job.setdefault(job_id, set()).add(sub)
        else:
            self._wide.add(sub)
        self._per_key[key] = self._per_key.get(key, 0) + 1
        self._count += 1
        return sub

    def remove(self, sub: Subscriber) -> None:
        if sub.job_id is not None:
            subs = self._by_job.get(sub.job_id)
            if subs is None or sub not in subs:
                return
            subs.discard(sub)
            if not subs:
                del self._by_job[sub.job_id]
        elif sub in self._wide:
            self._wide.discard(sub)
        else:
            return
        self._per_key[sub.key] -= 1
        if not self._per_key[sub.key]:
            del self._per_key[sub.key]
        self._count -= 1

    def _all(self) -> list[Subscriber]:
        return [*self._wide, *(s for subs in self._by_job.values() for s in subs)]

    # -- the LISTEN connection -------------------------------------------------------------

    async def _listening(self) -> None:
        if self._subscription is not None:
            return
        async with self._starting:
            if self._subscription is None:
                self._subscription = await self._store.listen(self._channel, self._on_notify)
                self._supervisor = asyncio.create_task(self._supervise(), name="jobs-events")

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self._recheck)
            if self._subscription is not None and self._subscription.alive:
                continue
            try:
                self._subscription = await self._store.listen(self._channel, self._on_notify)
            except Exception as exc:  # the top of this loop: try again on the next round
                logger.warning("event feed not reconnected", extra={"error": str(exc)})
                continue
            logger.info("event feed reconnected", extra={"streams": self._count})
            self._resync()

    def _resync(self) -> None:
        """After events may have been lost: every stream hears it, job streams get their
        job's state again."""
        for sub in self._all():
            sub.offer(EventKind.RECONNECTED)
        self._want(list(self._by_job))

    # -- fan-out ---------------------------------------------------------------------------

    def _on_notify(self, payload: str) -> None:
        self._want(parse_ids(payload))

    def _want(self, ids: list[UUID]) -> None:
        if not self._wide:  # only job streams: read only their jobs
            ids = [i for i in ids if i in self._by_job]
        if not ids:
            return
        self._pending.update(dict.fromkeys(ids))
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.get_running_loop().create_task(self._fetch())

    async def _fetch(self) -> None:
        """Read the pending heads, a batch at a time, and deliver them; one read in flight, so
        each stream sees a job's states in the order they were read."""
        while self._pending:
            ids = list(self._pending)[:_FETCH_BATCH]
            for i in ids:
                del self._pending[i]
            try:
                heads = await self._store.get_job_heads(ids)
            except Exception as exc:  # these events are lost: say so
                logger.warning("job heads not read", extra={"error": str(exc)})
                for sub in self._all():
                    sub.offer(EventKind.RECONNECTED)
                continue
            self.fetches += 1
            self._deliver(heads)

    def _deliver(self, heads: list[JobHead]) -> None:
        for head in heads:
            for sub in [*self._by_job.get(head.id, ()), *self._wide]:
                if sub.wants(head):
                    sub.offer(head)

    # -- stopping --------------------------------------------------------------------------

    def end_all(self) -> None:
        """End every stream with `shutdown` and take no new one."""
        self._closing = True
        for sub in self._all():
            sub.end(EventKind.SHUTDOWN)

    async def close(self) -> None:
        self.end_all()
        for task in (self._supervisor, self._fetching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()
            self._subscription = None


class _Seen:
    """The last head sent of each job (the most recent `_SEEN` jobs)."""

    def __init__(self) -> None:
        self._last: OrderedDict[UUID, JobHead] = OrderedDict()

    def fresh(self, head: JobHead) -> bool:
        """False for a head sent already, or older than the one sent (a read that raced the
        stream's first read of its job)."""
        last = self._last.get(head.id)
        if last is not None and (head == last or head.updated_at < last.updated_at):
            return False
        self._last[head.id] = head
        self._last.move_to_end(head.id)
        if len(self._last) > _SEEN:
            self._last.popitem(last=False)
        return True


def _head(job: object) -> JobHead:
    return JobHead.model_validate(job, from_attributes=True)


def _notice(kind: EventKind) -> bytes:
    return sse_frame(kind, StreamNotice(message=_NOTICES[kind]))


class JobStreams:
    """The rules of `GET /v1/jobs/{id}/events` and `GET /v1/events`."""

    def __init__(self, hub: EventHub, jobs: JobService, *, heartbeat_seconds: float) -> None:
        self.hub = hub
        self._jobs = jobs
        self._heartbeat = heartbeat_seconds

    async def job_events(self, who: Principal, job_id: UUID) -> AsyncIterator[bytes]:
        """One job's stream: its current state first, then each change, ending after a
        terminal state. JobNotFound (404) for another tenant's job, as GET /v1/jobs/{id}."""
        # subscribed before the read: no change after the read can be missed
        sub = await self.hub.subscribe(who, job_id=job_id)
        try:
            job = await self._jobs.get(who, job_id)
        except BaseException:
            sub.close()
            raise
        return self._frames(sub, first=_head(job), until_finished=True)

    async def tenant_events(self, who: Principal, query: EventQuery) -> AsyncIterator[bytes]:
        """The stream of every job `query` matches within what `who` may see."""
        scope = who.tenant_scope
        if scope is not None and query.tenant not in (None, scope):
            raise Forbidden(
                "a tenant token streams its own jobs only: leave out `tenant`",
                tenant=query.tenant,
            )
        sub = await self.hub.subscribe(who, query=query)
        return self._frames(sub, first=None, until_finished=False)

    async def _frames(
        self, sub: Subscriber, *, first: JobHead | None, until_finished: bool
    ) -> AsyncIterator[bytes]:
        seen = _Seen()
        try:
            if first is not None:
                seen.fresh(first)
                yield sse_frame(EventKind.JOB, first)
                if until_finished and first.finished:
                    return
            while True:
                item = await sub.next(self._heartbeat)
                if item is None:
                    yield _HEARTBEAT
                elif isinstance(item, EventKind):
                    yield _notice(item)
                    if item is not EventKind.RECONNECTED:
                        return
                elif seen.fresh(item):
                    yield sse_frame(EventKind.JOB, item)
                    if until_finished and item.finished:
                        return
        finally:
            sub.close()
